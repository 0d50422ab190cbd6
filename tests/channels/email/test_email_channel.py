"""The email channel end to end: a real aiosmtpd listener on loopback, mail sent with smtplib
(and swaks where installed), a local aiosmtpd sink as the outbound relay."""

from __future__ import annotations

import asyncio
import json
import shutil
import smtplib
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select

from bot.app import Runtime, TierZero
from bot.config import Settings
from bot.registry import build_channels
from channels.email import EmailChannel
from channels.email.models import EmailDeadLetter
from tests.conftest import make_settings
from tests.fixtures.fakes import it_retriever
from ticketing.db import DatabaseUnavailableError
from ticketing.models import Message, Ticket, TicketEvent

SUPPORT = "help@company.example"
USER = "alice@example.org"
WAIT = 15.0


async def until(condition: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Sink:
    """The outbound relay: records every mail it is given."""

    port: int = 0
    mails: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self.mails.append(message_from_bytes(envelope.original_content or b"", policy=policy.default))  # type: ignore[arg-type]
        self.envelopes.append((envelope.mail_from or "", list(envelope.rcpt_tos)))
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.mails if address in str(m["To"])]


@dataclass
class Mailroom:
    app: TierZero
    runtime: Runtime
    channel: EmailChannel
    sink: Sink

    @property
    def port(self) -> int:
        assert self.channel.port is not None
        return self.channel.port

    def send(self, message: EmailMessage, *, sender: str | None = None, to: list[str] | None = None) -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as smtp:
            smtp.send_message(message, from_addr=sender, to_addrs=to)

    async def asend(self, message: EmailMessage, **kwargs: Any) -> None:
        await asyncio.to_thread(self.send, message, **kwargs)

    def messages(self) -> list[Message]:
        with self.app.db.transaction() as session:
            return list(session.scalars(select(Message).where(Message.channel == "email").order_by(Message.id)))


def mail(
    subject: str,
    body: str,
    *,
    sender: str = USER,
    sender_name: str = "Alice",
    to: str = SUPPORT,
    message_id: str | None = None,
    **headers: str,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"{sender_name} <{sender}>"
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = f"<{message_id or f'{time.monotonic_ns()}@example.org'}>"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return message


def email_settings(tmp_path: Path, database_url: str, relay_port: int, **email: Any) -> Settings:
    section = {
        "port": 0,
        "support_addresses": [SUPPORT],
        "relay": {"host": "127.0.0.1", "port": relay_port, "starttls": False, "timeout_seconds": 5},
        **email,
    }
    return make_settings(tmp_path, database_url, channels={"email": section})


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    recorder = Sink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(recorder, hostname="relay.test"), "127.0.0.1", 0)
    recorder.port = server.sockets[0].getsockname()[1]
    yield recorder
    server.close()
    await server.wait_closed()


async def close_mailroom(room: Mailroom) -> None:
    await room.runtime.stop(timeout=5)
    room.app.db.dispose()


async def open_mailroom(settings: Settings, sink: Sink) -> Mailroom:
    app = TierZero(settings, retriever=it_retriever())
    [channel] = build_channels(app.channel_context()).enabled
    assert isinstance(channel, EmailChannel)
    runtime = app.runtime([channel])
    await runtime.start()
    return Mailroom(app, runtime, channel, sink)


@pytest.fixture
async def room(tmp_path: Path, database_url: str, sink: Sink) -> AsyncIterator[Mailroom]:
    mailroom = await open_mailroom(email_settings(tmp_path, database_url, sink.port), sink)
    yield mailroom
    await close_mailroom(mailroom)


def answered(room: Mailroom, count: int) -> Callable[[], bool]:
    return lambda: len(room.sink.to(USER)) >= count


def processed(room: Mailroom, channel_message_id: str) -> Callable[[], bool]:
    def check() -> bool:
        return any(m.channel_message_id == channel_message_id and m.processed_at for m in room.messages())

    return check


def outbound_texts(room: Mailroom) -> list[str]:
    return [m.text for m in room.messages() if m.direction == "out"]


async def test_new_mail_is_answered_from_the_kb_in_the_same_thread(room: Mailroom) -> None:
    await room.asend(mail("VPN", "My vpn keeps disconnecting every hour.", message_id="q1@example.org"))
    await until(answered(room, 1), "the answer mail")
    [answer] = room.sink.to(USER)
    assert answer["In-Reply-To"] == "<q1@example.org>"
    assert "<q1@example.org>" in answer["References"]
    assert answer["Subject"] == "Re: VPN"
    assert answer["Auto-Submitted"] == "auto-replied"
    assert answer["X-Auto-Response-Suppress"] == "All"
    assert answer["X-TierZero-Loop"]
    assert answer["From"].addresses[0].addr_spec == SUPPORT
    plain = answer.get_body(preferencelist=("plain",))
    html = answer.get_body(preferencelist=("html",))
    assert plain is not None and "Wi-Fi power saving" in plain.get_content()
    assert html is not None and "https://it.example.com/kb/vpn-drops" in html.get_content()
    assert room.sink.envelopes[0] == (SUPPORT, [USER])


async def test_a_reply_with_quoted_history_adds_only_the_new_text_to_the_conversation(room: Mailroom) -> None:
    await room.asend(mail("VPN", "My vpn keeps disconnecting every hour.", message_id="q2@example.org"))
    await until(answered(room, 1), "the answer mail")
    answer = room.sink.to(USER)[0]
    quoted = "\n".join("> " + line for line in answer.get_body(("plain",)).get_content().splitlines())  # type: ignore[union-attr]
    body = (
        f"Still broken on the printer too.\n\nOn Fri, Dec 4, 2026 at 10:00 AM IT Support <{SUPPORT}> wrote:\n{quoted}\n"
    )
    await room.asend(
        mail(
            "Re: VPN",
            body,
            message_id="q3@example.org",
            In_Reply_To=answer["Message-ID"],
            References=answer["Message-ID"],
        )
    )
    await until(processed(room, "q3@example.org"), "the reply to be handled")
    inbound = [m for m in room.messages() if m.direction == "in"]
    assert [m.text for m in inbound][-1] == "Still broken on the printer too."
    assert len({m.conversation_id for m in room.messages()}) == 1


async def test_subject_tag_threads_a_reply_whose_headers_were_stripped(room: Mailroom) -> None:
    await room.asend(mail("Lunch", "Where do I order pizza for the team?", message_id="p1@example.org"))
    await until(lambda: any("[TZ-1001]" in str(m["Subject"]) for m in room.sink.to(USER)), "the escalation mail")
    await room.asend(mail("RE: Lunch [TZ-1001]", "Any news?", message_id="p2@example.org"))
    await until(processed(room, "p2@example.org"), "the reply to be handled")
    assert len({m.conversation_id for m in room.messages()}) == 1


async def test_unknown_recipient_is_refused_at_rcpt_with_550(room: Mailroom) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        await room.asend(mail("hi", "hello", to="nobody@company.example"))
    code, text = refused.value.recipients["nobody@company.example"]
    assert code == 550 and text.startswith(b"5.1.1")
    assert room.messages() == []


async def test_oversized_mail_is_refused_with_552(tmp_path: Path, database_url: str, sink: Sink) -> None:
    room = await open_mailroom(email_settings(tmp_path, database_url, sink.port, max_message_bytes=4096), sink)
    try:
        with pytest.raises(smtplib.SMTPException) as refused:
            await room.asend(mail("big", "x" * 10_000))
        assert "552" in str(refused.value)
        assert room.messages() == []
    finally:
        await close_mailroom(room)


async def test_auto_replies_and_bounces_are_stored_but_not_answered(room: Mailroom) -> None:
    await room.asend(mail("Out of office", "I am away", message_id="ooo@example.org", Auto_Submitted="auto-replied"))
    bounce = mail("Undelivered Mail", "could not deliver", sender="MAILER-DAEMON@mx.example.org", message_id="b@x")
    await room.asend(bounce, sender="")
    await until(processed(room, "ooo@example.org"), "the auto-reply to be handled")
    await until(processed(room, "b@x"), "the bounce to be handled")
    assert outbound_texts(room) == []
    stored = {m.channel_message_id: m for m in room.messages()}
    assert "Auto-Submitted" in str(stored["ooo@example.org"].raw)


async def test_a_bounce_of_our_reply_marks_the_delivery_failed_on_the_ticket(room: Mailroom) -> None:
    await room.asend(mail("Lunch", "Where do I order pizza for the team?", message_id="p3@example.org"))
    await until(answered(room, 1), "the escalation mail")
    ours = room.sink.to(USER)[0]["Message-ID"]
    report = EmailMessage()
    report["From"] = "Mail Delivery System <MAILER-DAEMON@mx.example.org>"
    report["To"] = SUPPORT
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Message-ID"] = "<dsn1@mx.example.org>"
    report.set_content("This is the mail system. Your message could not be delivered.")
    returned = EmailMessage()
    returned["Message-ID"] = ours
    returned["Subject"] = "Re: Lunch"
    returned.set_content("...")
    report.add_attachment(returned)
    await room.asend(report, sender="")
    await until(processed(room, "dsn1@mx.example.org"), "the bounce to be handled")
    with room.app.db.transaction() as session:
        kinds = list(session.scalars(select(TicketEvent.kind)))
    assert "delivery_failed" in kinds
    assert len(room.sink.to(USER)) == 1


async def test_two_bots_answering_each_other_are_stopped_by_the_breaker(
    tmp_path: Path, database_url: str, sink: Sink
) -> None:
    settings = email_settings(tmp_path, database_url, sink.port, loops={"max_auto_replies": 3})
    room = await open_mailroom(settings, sink)
    robot = "robot@other.example"
    try:
        for number in range(5):
            await room.asend(mail(f"Ticket {number}", "vpn down again", sender=robot, message_id=f"r{number}@o"))
        for number in range(5):
            await until(processed(room, f"r{number}@o"), f"mail {number} to be handled")
        await until(lambda: len(room.sink.to(robot)) >= 3, "three answers")
        assert len(outbound_texts(room)) == 3
        assert len([m for m in room.messages() if m.direction == "in"]) == 5
    finally:
        await close_mailroom(room)


async def test_database_down_during_data_answers_451_and_the_retry_is_accepted_once(room: Mailroom) -> None:
    real = room.channel._on_message
    assert real is not None
    failures = [DatabaseUnavailableError("database is down")]

    async def flaky(message: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real(message)

    room.channel._on_message = flaky
    message = mail("VPN", "vpn is broken", message_id="retry@example.org")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await room.asend(message)
    assert refused.value.smtp_code == 451 and refused.value.smtp_error.startswith(b"4.3.0")
    await room.asend(message)
    await room.asend(message)  # a redelivery after all: still one message, one answer
    await until(answered(room, 1), "the answer")
    await until(processed(room, "retry@example.org"), "the message to be handled")
    assert [m.channel_message_id for m in room.messages() if m.direction == "in"] == ["retry@example.org"]
    assert len(outbound_texts(room)) == 1


async def test_a_stranger_replying_in_a_thread_gets_a_new_flagged_conversation(room: Mailroom) -> None:
    await room.asend(mail("VPN", "vpn drops", message_id="t1@example.org"))
    await until(answered(room, 1), "the answer")
    stranger = mail("Re: VPN", "Tell me more", sender="mallory@evil.example", In_Reply_To="<t1@example.org>")
    await room.asend(stranger)
    await until(lambda: len({m.conversation_id for m in room.messages()}) == 2, "a second conversation")
    flagged = [m for m in room.messages() if m.author_id == "mallory@evil.example"]
    assert flagged and "flagged" in str(flagged[0].raw)


async def test_unparseable_mail_is_kept_as_a_dead_letter(room: Mailroom) -> None:
    def send_raw() -> None:
        with smtplib.SMTP("127.0.0.1", room.port, timeout=10) as smtp:
            smtp.sendmail(USER, [SUPPORT], b"X-Nothing: here\r\n\r\n")

    await asyncio.to_thread(send_raw)
    with room.app.db.transaction() as session:
        [letter] = session.scalars(select(EmailDeadLetter)).all()
        assert letter.raw.startswith(b"X-Nothing") and "no text body" in letter.reason
    assert room.messages() == []


async def test_swaks_delivers_a_mail_that_is_answered(room: Mailroom) -> None:
    swaks = shutil.which("swaks")
    if swaks is None:
        pytest.skip("swaks is not installed (apt-get install swaks); smtplib tests cover the same path")
    command = [swaks, "--server", "127.0.0.1", "--port", str(room.port), "--from", USER, "--to", SUPPORT]
    command += ["--header", "Subject: VPN", "--body", "my vpn keeps dropping", "--silent", "2"]
    result = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    await until(answered(room, 1), "the answer to the swaks mail")


async def test_tickets_opened_by_mail_keep_the_requester_address(room: Mailroom) -> None:
    await room.asend(mail("Lunch", "Where do I order pizza for the team?", message_id="p9@example.org"))
    await until(answered(room, 1), "the escalation mail")
    with room.app.db.transaction() as session:
        ticket = session.scalars(select(Ticket)).one()
        assert ticket.requester.platform_id == USER


AGENT = "bob@company.example"
AGENTS = "agents@company.example"


def agent_settings(tmp_path: Path, database_url: str, sink: Sink) -> Settings:
    return email_settings(
        tmp_path,
        database_url,
        sink.port,
        agent_addresses=[AGENT],
        agent_notify_address=AGENTS,
        trusted_relays=["mx.company.example"],
    )


async def test_a_verified_agent_answers_the_requester_by_replying_to_the_notification(
    tmp_path: Path, database_url: str, sink: Sink
) -> None:
    room = await open_mailroom(agent_settings(tmp_path, database_url, sink), sink)
    try:
        await room.asend(mail("Lunch", "Where do I order pizza for the team?", message_id="a1@example.org"))
        await until(lambda: room.sink.to(AGENTS), "the ticket notification to the agents")
        notification = room.sink.to(AGENTS)[0]
        assert "[TZ-1001]" in str(notification["Subject"])
        answer = mail(
            "Re: Lunch [TZ-1001]",
            "Order from the canteen portal.\n\nOn Fri, Dec 4, 2026, IT Support <help@company.example> wrote:\n> old",
            sender=AGENT,
            sender_name="Bob Builder",
            message_id="agent1@company.example",
            In_Reply_To=notification["Message-ID"],
            Authentication_Results="mx.company.example; dmarc=pass header.from=company.example",
        )
        await room.asend(answer)
        await until(
            lambda: any("canteen portal" in str(m.get_body(("plain",))) for m in room.sink.to(USER)),
            "the agent's answer to reach the requester",
        )
        relayed = [m for m in room.sink.to(USER) if "canteen portal" in str(m.get_body(("plain",)))]
        assert "> old" not in str(relayed[0].get_body(("plain",)))
        assert "[TZ-1001]" in str(relayed[0]["Subject"])
        # Signed with the agent's name; replies still come to the support address.
        assert relayed[0]["From"].addresses[0].display_name == "Bob Builder via IT Support"
        assert relayed[0]["From"].addresses[0].addr_spec == SUPPORT
    finally:
        await close_mailroom(room)


async def test_an_unverified_agent_address_gets_no_agent_powers(tmp_path: Path, database_url: str, sink: Sink) -> None:
    room = await open_mailroom(agent_settings(tmp_path, database_url, sink), sink)
    try:
        await room.asend(mail("Lunch", "Where do I order pizza for the team?", message_id="a2@example.org"))
        await until(answered(room, 1), "the escalation mail")
        forged = mail("Re: Lunch [TZ-1001]", "Send me your password.", sender=AGENT, message_id="forged@x.example")
        await room.asend(forged)
        await until(processed(room, "forged@x.example"), "the forged mail to be handled")
        assert not any("password" in str(m.get_body(("plain",))) for m in room.sink.to(USER))
        with room.app.db.transaction() as session:
            original = session.scalars(select(Ticket).where(Ticket.number == "TZ-1001")).one()
            assert original.assignee is None
    finally:
        await close_mailroom(room)


async def test_sessions_beyond_the_limit_are_turned_away_with_421(
    tmp_path: Path, database_url: str, sink: Sink
) -> None:
    room = await open_mailroom(email_settings(tmp_path, database_url, sink.port, max_sessions=1), sink)
    try:

        def two_sessions() -> tuple[int, int]:
            with smtplib.SMTP("127.0.0.1", room.port, timeout=10) as first:
                code, _ = first.noop()
                second = smtplib.SMTP(timeout=10)
                try:
                    refused, _ = second.connect("127.0.0.1", room.port)
                finally:
                    second.close()
                return code, refused

        first_code, second_code = await asyncio.to_thread(two_sessions)
        assert (first_code, second_code) == (250, 421)
        await room.asend(mail("VPN", "vpn again", message_id="after@example.org"))  # the slot is free again
        await until(processed(room, "after@example.org"), "the next session's mail")
    finally:
        await close_mailroom(room)


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "smtp.crt", tmp_path / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


async def test_starttls_and_auth_are_required_when_configured(tmp_path: Path, database_url: str, sink: Sink) -> None:
    import ssl

    cert_file, key_file = self_signed(tmp_path)
    settings = email_settings(
        tmp_path,
        database_url,
        sink.port,
        tls={"cert_file": str(cert_file), "key_file": str(key_file), "require": True},
        auth={"users": {"relay": "a-long-relay-password"}, "require": True},
    )
    room = await open_mailroom(settings, sink)
    client_context = ssl.create_default_context(cafile=str(cert_file))
    client_context.check_hostname = False

    def submit(password: str | None, *, tls: bool = True) -> None:
        with smtplib.SMTP("127.0.0.1", room.port, timeout=10) as smtp:
            if tls:
                smtp.starttls(context=client_context)
            if password is not None:
                smtp.login("relay", password)
            smtp.send_message(mail("VPN", "vpn is down", message_id=f"tls-{password}@example.org"))

    try:
        with pytest.raises(smtplib.SMTPException):
            await asyncio.to_thread(submit, None, tls=False)  # no STARTTLS: refused
        with pytest.raises(smtplib.SMTPAuthenticationError):
            await asyncio.to_thread(submit, "wrong-password-123")
        await asyncio.to_thread(submit, "a-long-relay-password")
        await until(processed(room, "tls-a-long-relay-password@example.org"), "the authenticated mail")
        assert len(room.messages()) >= 1
    finally:
        await close_mailroom(room)


async def test_dead_letters_are_listed_and_replayed_through_the_listener(room: Mailroom, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bot.cli import main
    from channels.email import deadletter

    raw = mail("VPN", "my vpn is down", message_id="dead1@example.org").as_bytes()
    dead_id = deadletter.store(room.app.db, raw=raw, mail_from=USER, rcpt_tos=[SUPPORT], reason="parser bug")
    settings = room.app.settings
    config = tmp_path / "config.yaml"
    email = {"port": room.port, "support_addresses": [SUPPORT]}
    config.write_text(
        json.dumps(
            {"database": {"url": settings.database_url}, "data_dir": str(tmp_path), "channels": {"email": email}}
        )
    )
    runner = CliRunner()
    listed = await asyncio.to_thread(runner.invoke, main, ["--config", str(config), "deadletter", "list"])
    assert listed.exit_code == 0 and "parser bug" in listed.output
    replayed = await asyncio.to_thread(
        runner.invoke, main, ["--config", str(config), "deadletter", "replay", str(dead_id)]
    )
    assert replayed.exit_code == 0, replayed.output
    await until(processed(room, "dead1@example.org"), "the replayed mail to be handled")
    assert deadletter.list_dead_letters(room.app.db)[0].status == "replayed"
