"""A manual-style retrieval collection built mechanically from a Markdown knowledge base.

    python -m benchmarks.manual_collection [--kb kb] --out DIR

StackFAQ is question-to-thread matching, where dense search shines. Manuals
are looked up differently: by the section a reader wants ("Job is stuck on
your laptop (macOS)") and by exact identifiers pasted from a screen (error
codes, product and model names), where keyword search wins. This turns a
Markdown KB into such a collection, with no hand-picked queries:

* every ``###`` section (or ``##`` section without sub-sections) is a
  document: ``title`` = the article title, ``text`` = the section body
  *without* its heading;
* every heading that occurs once in the whole KB is a query for its section;
* every identifier (a token mixing letters and digits, at least 5
  characters, e.g. ``0x80070005``, ``AADSTS50053``, ``MK295``) that occurs in
  exactly one section is a query ``"<identifier>"`` for that section.

Writes ``corpus.jsonl`` and ``queries.jsonl`` in the retrieval benchmark's format.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from benchmarks.convert_stackfaq import REPO_ROOT
from benchmarks.jsonl import write_jsonl
from kb_index.documents import load_articles

_HEADING = re.compile(r"^(#{2,3})[ \t]+(.+?)[ \t#]*$")
_IDENTIFIER = re.compile(r"\b(?=[A-Za-z0-9_-]*[0-9])(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9][A-Za-z0-9_-]{4,}\b")


def sections(body: str) -> list[tuple[str, str]]:
    """(heading, text) of each leaf section: a ### section, or a ## section that has none."""
    found: list[tuple[int, str, list[str]]] = []
    for line in body.splitlines():
        match = _HEADING.match(line)
        if match:
            found.append((len(match.group(1)), match.group(2).strip(), []))
        elif found:
            found[-1][2].append(line)
    leaves = []
    for position, (level, heading, lines) in enumerate(found):
        has_children = level == 2 and position + 1 < len(found) and found[position + 1][0] == 3
        text = "\n".join(lines).strip()
        if not has_children and text:
            leaves.append((heading, text))
    return leaves


def build(kb: Path) -> tuple[list[dict[str, str]], list[dict[str, object]]]:
    articles, _ = load_articles(kb)
    docs: list[dict[str, str]] = []
    headings: list[tuple[str, str]] = []
    for article in articles:
        for number, (heading, text) in enumerate(sections(article.body)):
            doc_id = f"{article.article_id}#{number}"
            docs.append({"doc_id": doc_id, "title": article.title, "text": text})
            headings.append((heading, doc_id))
    heading_counts = Counter(heading.lower() for heading, _ in headings)
    queries: list[dict[str, object]] = [
        {"query_id": f"h{n:04d}", "text": heading, "doc_ids": [doc_id]}
        for n, (heading, doc_id) in enumerate(headings)
        if heading_counts[heading.lower()] == 1
    ]
    owners: dict[str, set[str]] = {}
    for doc in docs:
        for token in _IDENTIFIER.findall(doc["text"]):
            owners.setdefault(token, set()).add(doc["doc_id"])
    for n, (token, doc_ids) in enumerate(sorted(owners.items())):
        if len(doc_ids) == 1:
            queries.append({"query_id": f"id{n:04d}", "text": token, "doc_ids": sorted(doc_ids)})
    return docs, queries


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.manual_collection", description=__doc__.splitlines()[0])
    parser.add_argument("--kb", type=Path, default=REPO_ROOT / "kb", help="Markdown knowledge base (default: kb/)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    docs, queries = build(args.kb)
    write_jsonl(args.out / "corpus.jsonl", docs)
    write_jsonl(args.out / "queries.jsonl", queries)
    print(f"wrote {len(docs)} documents and {len(queries)} queries to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
