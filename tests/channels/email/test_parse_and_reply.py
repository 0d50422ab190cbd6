"""Pure parts of the email channel: MIME parsing over the shared corpus, reply stripping, loops, relay errors."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from benchmarks import email_reply
from bot.channel import PermanentDeliveryError, TemporaryDeliveryError
from channels.email import auth, loops, outbound
from channels.email.attachments import allowed
from channels.email.config import AttachmentSettings, RelaySettings
from channels.email.parse import ParsedMail, UnparseableMail, parse_mail
from channels.email.reply_text import split_fragments, visible_reply
from tests.conftest import EVAL_DIR

MIME_DIR = EVAL_DIR / "email" / "mime"
EXPECTATIONS = EVAL_DIR / "email" / "reply" / "expectations.jsonl"
NOT_MAIL = {"LICENSE", "PROVENANCE.jsonl", "README.md", "README.rst"}


def test_every_message_in_the_mime_corpus_is_parsed_or_dead_lettered() -> None:
    if not MIME_DIR.exists():
        pytest.skip(f"shared MIME corpus not found at {MIME_DIR}")
    counts: Counter[str] = Counter()
    for path in sorted(p for p in MIME_DIR.rglob("*") if p.is_file() and p.name not in NOT_MAIL):
        try:
            mail = parse_mail(path.read_bytes())
        except UnparseableMail:
            counts["dead-lettered (no text, subject or attachment)"] += 1
            continue
        if mail.text.strip():
            counts["text body extracted"] += 1
        elif mail.attachments:
            counts["attachments only"] += 1
        else:
            counts["subject only"] += 1
    print("\nMIME corpus:", json.dumps(dict(counts), indent=1))  # reported with -s
    assert sum(counts.values()) > 300
    assert counts["text body extracted"] > 0.8 * sum(counts.values())


def test_reply_stripping_meets_the_target_on_the_shared_checks() -> None:
    if not EXPECTATIONS.exists():
        pytest.skip(f"shared reply checks not found at {EXPECTATIONS}")
    report = email_reply.run(EXPECTATIONS)
    assert report["overall"]["pass_rate"] >= 0.95, report["failures"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("Thanks!\n\nOn Mon, 1 Jan 2024 at 10:00, Bob <bob@x.org> wrote:\n> old\n> text", "Thanks!"),
        ("Danke\n\nAm 01.01.2024 um 10:00 schrieb Bob <bob@x.org>:\n> alt", "Danke"),
        ("Merci\n\nDe : Bob\nEnvoyé : lundi\nÀ : Alice\nObjet : test\n\nancien", "Merci"),
        ("Fixed now\n\n-----Original Message-----\nFrom: a\nold", "Fixed now"),
        ("Yes\n\nSent from my iPhone\n\nOn 1 Jan 2024, at 10:00, Bob <b@x.org> wrote:\n> q", "Yes"),
        ("No quote here.\nOn Monday the printer broke.", "No quote here.\nOn Monday the printer broke."),
    ],
)
def test_visible_reply(body: str, expected: str) -> None:
    assert visible_reply(body) == expected


def test_fragments_separate_new_text_quote_and_signature() -> None:
    fragments = split_fragments("Hi\n\nOn Mon, Bob wrote:\n> old\n\n-- \nAlice")
    assert fragments[0].content.startswith("Hi") and not fragments[0].hidden
    assert any(f.quoted for f in fragments) and fragments[-1].signature


def auto(**headers: str) -> loops.LoopVerdict:
    message = EmailMessage()
    message["From"] = headers.pop("From", "alice@example.org")
    message["Subject"] = "x"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("body")
    return loops.classify(
        parse_mail(message.as_bytes()),
        envelope_from=message["From"],
        loop_header="X-TierZero-Loop",
        our_addresses=frozenset({"help@company.example"}),
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"Auto_Submitted": "auto-replied"},
        {"Precedence": "bulk"},
        {"X_Autoreply": "yes"},
        {"X_Loop": "x"},
        {"List_Id": "<list.example.org>"},
        {"X_TierZero_Loop": "company.example"},
        {"From": "noreply@vendor.example"},
        {"From": "postmaster@example.org"},
        {"From": "help@company.example"},
    ],
)
def test_automatic_mail_is_never_auto_answered(headers: dict[str, str]) -> None:
    assert auto(**headers).auto_reply is False


def test_ordinary_mail_may_be_answered() -> None:
    assert auto(Auto_Submitted="no").auto_reply is True


def test_attachments_are_checked_by_extension_and_content() -> None:
    settings = AttachmentSettings(max_bytes=1000)
    assert allowed("report.pdf", b"%PDF-1.7 ...", settings) is None
    assert allowed("invoice.pdf", b"MZ\x90\x00", settings) == "content is a program"
    assert allowed("tool.exe", b"%PDF-", settings) == "type .exe not allowed"
    assert allowed("big.txt", b"a" * 2000, settings) == "larger than 0 KiB"


class Refusing:
    def __init__(self, answer: str) -> None:
        self.answer = answer

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:  # noqa: N802,E501
        return self.answer


@pytest.mark.parametrize(
    ("answer", "error"),
    [("451 4.3.0 try later", TemporaryDeliveryError), ("550 5.1.1 no such user", PermanentDeliveryError)],
)
async def test_relay_answers_map_to_delivery_errors(answer: str, error: type[Exception], tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Refusing(answer)), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    relay = outbound.Relay(
        RelaySettings(host="127.0.0.1", port=port, starttls=False, timeout_seconds=5),
        pickup_dir=tmp_path,
        envelope_sender="help@company.example",
    )
    composed = outbound.compose(
        text="hi", links=[], options=[], sender="help@company.example", sender_name="IT", recipient="a@example.org",
        subject="Re: x", message_id="m1@company.example", in_reply_to=None, references=[],
        loop_header="X-TierZero-Loop", loop_value="company.example",
    )  # fmt: skip
    try:
        with pytest.raises(error):
            await asyncio.to_thread(relay.send, composed)
    finally:
        server.close()
        await server.wait_closed()


async def test_an_unreachable_relay_is_a_temporary_error(tmp_path: Path) -> None:
    relay = outbound.Relay(
        RelaySettings(host="127.0.0.1", port=1, starttls=False, timeout_seconds=2),
        pickup_dir=tmp_path,
        envelope_sender="help@company.example",
    )
    composed = outbound.compose(
        text="hi", links=[], options=[], sender="help@company.example", sender_name="IT", recipient="a@example.org",
        subject="Re: x", message_id="m2@company.example", in_reply_to=None, references=[],
        loop_header="X-TierZero-Loop", loop_value="company.example",
    )  # fmt: skip
    with pytest.raises(TemporaryDeliveryError):
        await asyncio.to_thread(relay.send, composed)


def test_without_a_relay_replies_are_written_as_eml_files(tmp_path: Path) -> None:
    relay = outbound.Relay(RelaySettings(), pickup_dir=tmp_path / "out", envelope_sender="help@company.example")
    composed = outbound.compose(
        text="hi", links=[], options=[], sender="help@company.example", sender_name="IT", recipient="a@example.org",
        subject="Re: x", message_id="m3@company.example", in_reply_to=None, references=[],
        loop_header="X-TierZero-Loop", loop_value="company.example",
    )  # fmt: skip
    relay.send(composed)
    [written] = list((tmp_path / "out").glob("*.eml"))
    assert b"Auto-Submitted: auto-replied" in written.read_bytes()


def authenticated(header: str, sender: str = "bob@company.example") -> ParsedMail:
    message = EmailMessage()
    message["From"] = sender
    message["Subject"] = "x"
    message["Authentication-Results"] = header
    message.set_content("body")
    return parse_mail(message.as_bytes())


@pytest.mark.parametrize(
    ("header", "verified"),
    [
        ("mx.company.example; dmarc=pass header.from=company.example", True),
        ("mx.company.example; dkim=pass header.d=company.example; spf=fail", True),
        ("mx.company.example; dkim=pass header.d=evil.example", False),
        ("mx.company.example; dmarc=fail header.from=company.example", False),
        ("attacker.example; dmarc=pass header.from=company.example", False),
    ],
)
def test_only_passing_results_from_trusted_relays_verify_a_sender(header: str, verified: bool) -> None:
    check = auth.check_authentication_results(authenticated(header), trusted_relays=["mx.company.example"])
    assert check.verified is verified


def test_an_unsigned_mail_fails_dkim_verification_without_an_error() -> None:
    mail = authenticated("none")
    assert auth.verify_sender(b"From: a@b.c\r\n\r\nhi", mail, trusted_relays=[], verify_dkim=True).verified is False


def test_a_long_thread_is_cut_to_the_new_text() -> None:
    history = "".join(f"> line {n} of an old message\n" for n in range(5000))
    body = f"Works now, thanks.\n\nOn Mon, 1 Jan 2024 at 10:00, Bob <bob@x.org> wrote:\n{history}"
    assert visible_reply(body) == "Works now, thanks."


def test_hostile_but_common_mime_is_decoded() -> None:
    raw = (
        b"From: =?utf-8?q?J=C3=BCrgen?= <jurgen@example.de>\r\n"
        b"To: help@company.example\r\n"
        b"Subject: =?iso-8859-1?q?Drucker_kaputt_=E4=F6=FC?=\r\n"
        b"Message-ID: <m1@example.de>\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"--b1\r\n"
        b'Content-Type: text/html; charset="x-unknown-charset"\r\n\r\n'
        b"<p>Der <b>Drucker</b> druckt nicht \xe4</p>\r\n"
        b"--b1\r\n"
        b"Content-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename*=utf-8''Rechnung%20M%C3%A4rz.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        b"JVBERi0xLjcK\r\n"
        b"--b1--\r\n"
    )
    mail = parse_mail(raw)
    assert mail.from_name == "Jürgen" and mail.from_address == "jurgen@example.de"
    assert mail.subject == "Drucker kaputt äöü"
    assert "**Drucker** druckt nicht ä" in mail.text
    [attachment] = mail.attachments
    assert attachment.filename == "Rechnung März.pdf" and attachment.data.startswith(b"%PDF")


def test_attachment_names_cannot_escape_the_store() -> None:
    from channels.email.parse import safe_filename

    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("..\\..\\boot.ini") == "boot.ini"
    assert safe_filename("a\x00b.txt") == "a_b.txt"
    assert safe_filename("..") == "attachment"
