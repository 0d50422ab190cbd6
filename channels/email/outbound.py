"""Composing a reply mail and handing it to the SMTP relay.

Every mail we send carries ``Auto-Submitted: auto-replied`` (RFC 3834),
``X-Auto-Response-Suppress: All`` (Exchange: no out-of-office answers) and our
loop header, so auto-responders stay silent and our own mail is recognised if
it comes back. The Message-ID is derived from the outbox item's idempotency
key: a retried send carries the same Message-ID, so the receiving side can
drop the duplicate.

Relay failures map to the outbox's delivery errors: 4xx answers and
connection problems before DATA is accepted are temporary, 5xx permanent; a
timeout or disconnect after the message data was sent is an unknown outcome
(the relay may have queued it) and is never resent blindly.
"""

from __future__ import annotations

import email.policy
import hashlib
import html
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from pathlib import Path

from bot.channel import DeliveryOutcomeUnknown, PermanentDeliveryError, TemporaryDeliveryError
from channels.email.config import RelaySettings
from channels.email.threading import ticket_tag_pattern

MAX_REFERENCES = 20


@dataclass(frozen=True)
class OutgoingMail:
    message_id: str  # without angle brackets
    recipient: str
    message: EmailMessage


def message_id_for(idempotency_key: str, domain: str) -> str:
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]
    return f"{idempotency_key}.{digest}@{domain}"


def reply_subject(subject: str, *, ticket_number: str | None, ticket_prefix: str) -> str:
    """ "Re: <subject> [TZ-1042]": one "Re:", the ticket tag once."""
    subject = " ".join(subject.split()) or "Your request"
    while subject[:3].lower() in ("re:", "aw:", "sv:") or subject[:4].lower() == "fwd:":
        subject = subject.split(":", 1)[1].strip()
    if ticket_number and not ticket_tag_pattern(ticket_prefix).search(subject):
        subject = f"{subject} [{ticket_number}]"
    return f"Re: {subject}"


def compose(
    *,
    text: str,
    links: list[tuple[str, str]],
    options: list[str],
    sender: str,
    sender_name: str,
    recipient: str,
    subject: str,
    message_id: str,
    in_reply_to: str | None,
    references: list[str],
    loop_header: str,
    loop_value: str,
) -> OutgoingMail:
    message = EmailMessage()
    message["From"] = formataddr((sender_name, sender))
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        message["In-Reply-To"] = f"<{in_reply_to}>"
    chain = list(dict.fromkeys([*references, *([in_reply_to] if in_reply_to else [])]))
    if len(chain) > MAX_REFERENCES:  # RFC 5322: keep the first and the most recent ones
        chain = [chain[0], *chain[-(MAX_REFERENCES - 1) :]]
    if chain:
        message["References"] = " ".join(f"<{m}>" for m in chain)
    message["Auto-Submitted"] = "auto-replied"
    message["X-Auto-Response-Suppress"] = "All"
    message[loop_header] = loop_value
    plain = text
    if options:
        plain += "\n\n" + "Reply with one of: " + ", ".join(f'"{o}"' for o in options)
    message.set_content(plain)
    message.add_alternative(_html(text, links, options), subtype="html")
    return OutgoingMail(message_id, recipient, message)


def _html(text: str, links: list[tuple[str, str]], options: list[str]) -> str:
    paragraphs = "".join(
        "<p>" + html.escape(block).replace("\n", "<br>\n") + "</p>\n" for block in text.split("\n\n") if block.strip()
    )
    sources = ""
    if links:
        items = "".join(
            f'<li><a href="{html.escape(url, quote=True)}">{html.escape(title)}</a></li>'
            if url.startswith(("http://", "https://"))
            else f"<li>{html.escape(title)}</li>"
            for title, url in links
        )
        sources = f"<ul>{items}</ul>\n"
    choices = ""
    if options:
        choices = "<p>Reply with one of: " + ", ".join(f"<b>{html.escape(o)}</b>" for o in options) + "</p>\n"
    body = f"{paragraphs}{sources}{choices}"
    return f'<!DOCTYPE html>\n<html><body style="font-family: sans-serif">\n{body}</body></html>\n'


class Relay:
    """Sends through the configured SMTP relay, or writes .eml files when none is configured."""

    def __init__(self, settings: RelaySettings, *, pickup_dir: Path, envelope_sender: str) -> None:
        self._settings = settings
        self._pickup_dir = pickup_dir
        self._envelope_sender = envelope_sender

    @property
    def configured(self) -> bool:
        return bool(self._settings.host)

    def describe(self) -> str:
        s = self._settings
        if not s.host:
            return f"replies written to {self._pickup_dir} (no relay configured)"
        return f"replies via {s.host}:{s.port}{' STARTTLS' if s.starttls else ''}"

    def send(self, mail: OutgoingMail) -> None:
        """Blocking: run in a worker thread."""
        if not self.configured:
            self._write_pickup(mail)
            return
        s = self._settings
        data_sent = False
        try:
            with smtplib.SMTP(s.host or "", s.port, timeout=s.timeout_seconds) as smtp:
                smtp.ehlo()
                if s.starttls:
                    if not smtp.has_extn("starttls"):
                        raise PermanentDeliveryError(f"relay {s.host} does not offer STARTTLS")
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                if s.username and s.password is not None:
                    smtp.login(s.username, s.password.get_secret_value())
                code, answer = smtp.mail(self._envelope_sender)
                _check(code, answer, "MAIL FROM")
                code, answer = smtp.rcpt(mail.recipient)
                _check(code, answer, "RCPT TO")
                data_sent = True
                # smtplib sends bytes as they are: the SMTP policy gives the CRLF line ends the protocol needs.
                code, answer = smtp.data(mail.message.as_bytes(policy=email.policy.SMTP))
                _check(code, answer, "DATA")
        except (PermanentDeliveryError, TemporaryDeliveryError):
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentDeliveryError(f"relay refused our credentials ({exc.smtp_code})") from None
        except smtplib.SMTPResponseException as exc:
            _check(exc.smtp_code, exc.smtp_error, "relay")
            raise TemporaryDeliveryError(f"relay answered {exc.smtp_code}") from None
        except (TimeoutError, smtplib.SMTPServerDisconnected, ConnectionError, OSError) as exc:
            if data_sent:
                raise DeliveryOutcomeUnknown(f"relay connection lost after DATA ({type(exc).__name__})") from None
            raise TemporaryDeliveryError(f"relay unreachable ({type(exc).__name__})") from None

    def _write_pickup(self, mail: OutgoingMail) -> None:
        self._pickup_dir.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(mail.message_id.encode()).hexdigest()[:24] + ".eml"
        target = self._pickup_dir / name
        partial = target.with_suffix(".tmp")
        partial.write_bytes(mail.message.as_bytes())
        partial.replace(target)  # atomic: a reader never sees half a mail


def _check(code: int, answer: bytes | str, step: str) -> None:
    text = answer.decode("utf-8", "replace") if isinstance(answer, bytes) else str(answer)
    text = " ".join(text.split())[:200]
    if 200 <= code < 400:
        return
    if 400 <= code < 500:
        raise TemporaryDeliveryError(f"relay {step}: {code} {text}")
    raise PermanentDeliveryError(f"relay {step}: {code} {text}")
