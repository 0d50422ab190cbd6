"""How well the email channel separates the new text of a reply from quoted history and signatures.

    python -m benchmarks.email_reply --json [--expectations PATH] [--parser NAME]

Reads the checks in ``email/reply/expectations.jsonl`` of the shared evaluation
data (fixtures and expectations taken from the test suites of talon, zapier's
email_reply_parser, github's email_reply_parser and willdurand's
EmailReplyParser) and prints the pass rate per suite and overall.

Check kinds: ``reply_equals`` / ``reply_equals_trimmed`` / ``reply_contains`` /
``reply_not_contains`` on the visible new text; ``reply_html_equals`` on an
HTML body with the quotation removed; ``fragment_count`` / ``fragment_contains``
/ ``fragment_matches_regex`` on the fragments (consecutive blocks of new text,
quoted text and signature, in order). The suites disagree on one point:
talon keeps signatures in the reply, the others drop them; each check is run
with its suite's convention (``keep_signature``), never with per-check tuning.

``--parser`` compares against maintained libraries when they are installed
(``mail-parser-reply``, ``email-reply-parser``, ``talon``, ``quotequail``); the
default is ours, ``channels.email.reply_text``.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EVAL_DIR = REPO_ROOT.parent / "shared" / "eval"
DEFAULT_EXPECTATIONS = DEFAULT_EVAL_DIR / "email" / "reply" / "expectations.jsonl"
# Suites whose expected replies keep the signature (talon strips quotations only).
KEEPS_SIGNATURE = {"mailgun/talon"}


class BenchmarkError(Exception):
    """Missing or malformed input; reported as one line."""


class ReplyParser(Protocol):
    def reply(self, text: str, *, keep_signature: bool) -> str: ...

    def fragments(self, text: str) -> list[str]: ...

    def reply_html(self, html: str) -> str: ...


class OurParser:
    def reply(self, text: str, *, keep_signature: bool) -> str:
        from channels.email.reply_text import visible_reply

        return visible_reply(text, keep_signature=keep_signature)

    def fragments(self, text: str) -> list[str]:
        from channels.email.reply_text import split_fragments

        return [f.content for f in split_fragments(text)]

    def reply_html(self, html: str) -> str:
        from channels.email.reply_text import strip_html_quotation

        return strip_html_quotation(html)


class MailParserReply:
    """mail-parser-reply (maintained, multi-language); it has no fragment model of its own."""

    def __init__(self) -> None:
        from mailparser_reply import EmailReplyParser  # type: ignore[import-not-found]

        self._parser = EmailReplyParser(languages=["en", "de", "fr", "it", "ja", "nl", "pl", "sv", "cs", "es"])

    def reply(self, text: str, *, keep_signature: bool) -> str:
        mail = self._parser.read(text)
        if not mail.replies:
            return ""
        first = mail.replies[0]
        return str(first.content if keep_signature else first.body)

    def fragments(self, text: str) -> list[str]:
        return [str(r.full_body) for r in self._parser.read(text).replies]

    def reply_html(self, html: str) -> str:
        return html


class ZapierEmailReplyParser:
    def reply(self, text: str, *, keep_signature: bool) -> str:
        from email_reply_parser import EmailReplyParser  # type: ignore[import-not-found]

        return str(EmailReplyParser.parse_reply(text))

    def fragments(self, text: str) -> list[str]:
        from email_reply_parser import EmailReplyParser

        return [f.content for f in EmailReplyParser.read(text).fragments]

    def reply_html(self, html: str) -> str:
        return html


class Talon:
    def reply(self, text: str, *, keep_signature: bool) -> str:
        from talon import quotations  # type: ignore[import-not-found]

        reply = str(quotations.extract_from_plain(text))
        if not keep_signature:
            from talon.signature.bruteforce import extract_signature  # type: ignore[import-not-found]

            reply = extract_signature(reply)[0]
        return reply

    def fragments(self, text: str) -> list[str]:
        return [self.reply(text, keep_signature=True)]

    def reply_html(self, html: str) -> str:
        from talon import quotations

        return str(quotations.extract_from_html(html))


class Quotequail:
    def reply(self, text: str, *, keep_signature: bool) -> str:
        import quotequail  # type: ignore[import-not-found]

        parts = quotequail.quote(text)
        return "\n".join(part for is_new, part in parts if is_new)

    def fragments(self, text: str) -> list[str]:
        import quotequail

        return [part for _, part in quotequail.quote(text)]

    def reply_html(self, html: str) -> str:
        import quotequail

        return "".join(part for is_new, part in quotequail.quote_html(html) if is_new)


PARSERS: dict[str, Callable[[], ReplyParser]] = {
    "tierzero": OurParser,
    "mail-parser-reply": MailParserReply,
    "email-reply-parser": ZapierEmailReplyParser,
    "talon": Talon,
    "quotequail": Quotequail,
}


@dataclass(frozen=True)
class Outcome:
    suite: str
    test: str
    check: str
    passed: bool
    detail: str = ""


def load_checks(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise BenchmarkError(f"{path}: not found (the shared evaluation data is expected at ../shared/eval)")
    checks = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                checks.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise BenchmarkError(f"{path}:{number}: not JSON: {exc.msg}") from None
    return checks


def input_of(check: dict[str, Any], eval_dir: Path) -> str:
    """The body text the check is about; an .eml input contributes its text/plain part."""
    if "input_text" in check:
        return str(check["input_text"])
    raw = (eval_dir / check["input_file"]).read_bytes()
    if str(check.get("content_type", "")).startswith("message/rfc822"):
        message = email.message_from_bytes(raw, policy=email.policy.default)
        part = message.get_body(preferencelist=("plain",))
        return part.get_content() if part is not None else ""  # type: ignore[attr-defined]
    return raw.decode("utf-8", errors="replace")


def run_check(parser: ReplyParser, check: dict[str, Any], eval_dir: Path) -> Outcome:
    suite, kind, expected = check["suite"], check["check"], check.get("expected")
    text = input_of(check, eval_dir)
    keep = suite in KEEPS_SIGNATURE
    try:
        passed, got = _evaluate(parser, kind, text, expected, check.get("index"), keep)
    except Exception as exc:  # a crashing parser fails the check, it does not stop the benchmark
        passed, got = False, f"raised {type(exc).__name__}: {exc}"
    return Outcome(suite, check.get("test", ""), kind, passed, "" if passed else f"got {got!r}"[:300])


def _evaluate(
    parser: ReplyParser, kind: str, text: str, expected: Any, index: int | None, keep: bool
) -> tuple[bool, Any]:
    if kind in ("reply_equals", "reply_equals_trimmed"):
        got = parser.reply(text, keep_signature=keep).strip()
        return got == str(expected).strip(), got
    if kind == "reply_contains":
        got = parser.reply(text, keep_signature=keep)
        return str(expected) in got, got
    if kind == "reply_not_contains":
        got = parser.reply(text, keep_signature=keep)
        return str(expected) not in got, got
    if kind == "reply_html_equals":
        got = parser.reply_html(text).strip()
        return got == str(expected).strip(), got
    fragments = parser.fragments(text)
    if kind == "fragment_count":
        return len(fragments) == expected, len(fragments)
    if index is None or index >= len(fragments):
        return False, f"{len(fragments)} fragments"
    fragment = fragments[index]
    if kind == "fragment_contains":
        return str(expected) in fragment, fragment
    if kind == "fragment_matches_regex":
        return re.search(str(expected), fragment) is not None, fragment
    raise BenchmarkError(f"unknown check kind {kind!r}")


def summarise(outcomes: list[Outcome]) -> dict[str, Any]:
    by_suite: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        by_suite[outcome.suite].append(outcome)
    suites = {
        suite: {"checks": len(items), "passed": sum(o.passed for o in items), "pass_rate": _rate(items)}
        for suite, items in sorted(by_suite.items())
    }
    return {
        "suites": suites,
        "overall": {"checks": len(outcomes), "passed": sum(o.passed for o in outcomes), "pass_rate": _rate(outcomes)},
        "failures": [o.__dict__ for o in outcomes if not o.passed],
    }


def _rate(items: list[Outcome]) -> float:
    return round(sum(o.passed for o in items) / len(items), 4) if items else 0.0


def run(expectations: Path, parser_name: str = "tierzero") -> dict[str, Any]:
    parser = PARSERS[parser_name]()
    eval_dir = expectations.parents[2]  # input_file paths are relative to the eval/ folder
    outcomes = [run_check(parser, check, eval_dir) for check in load_checks(expectations)]
    return {"parser": parser_name, "expectations": str(expectations), **summarise(outcomes)}


def _lines(report: dict[str, Any]) -> Iterator[str]:
    yield f"parser: {report['parser']}"
    for suite, stats in report["suites"].items():
        yield f"{suite:32} {stats['passed']:3}/{stats['checks']:<3} {stats['pass_rate']:.1%}"
    overall = report["overall"]
    yield f"{'overall':32} {overall['passed']:3}/{overall['checks']:<3} {overall['pass_rate']:.1%}"
    for failure in report["failures"]:
        yield f"FAIL {failure['suite']} {failure['test']} [{failure['check']}]: {failure['detail']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expectations", type=Path, default=DEFAULT_EXPECTATIONS)
    parser.add_argument("--parser", choices=sorted(PARSERS), default="tierzero")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = run(args.expectations, args.parser)
    except (BenchmarkError, ImportError) as exc:
        print(f"email_reply: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else "\n".join(_lines(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
