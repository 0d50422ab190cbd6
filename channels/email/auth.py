"""Is the From address really the sender? (reliability guide, "Inbound authenticity")

From and Reply-To prove nothing. A sender counts as verified only on:
- an ``Authentication-Results`` header stamped by a relay we trust (its
  authserv-id is in ``trusted_relays``) saying dmarc=pass, or dkim=pass /
  spf=pass for a domain aligned with the From domain; or
- (``verify_dkim``) a valid DKIM signature, checked here with dkimpy, whose
  d= domain is aligned with the From domain.
Unverified senders may still be answered from the knowledge base, but never
act as agents, and replies always go to the thread's requester, not to them.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import dkim

from channels.email.parse import ParsedMail

log = logging.getLogger(__name__)

_RESULT = re.compile(r"\b(dmarc|dkim|spf)\s*=\s*(\w+)([^;]*)", re.IGNORECASE)
_PROPERTY = re.compile(r"\b(header\.from|header\.d|header\.i|smtp\.mailfrom)\s*=\s*\"?([^\s;\"]+)", re.IGNORECASE)


@dataclass(frozen=True)
class SenderCheck:
    verified: bool
    how: str  # what proved it, or why not


def _aligned(domain: str, from_domain: str) -> bool:
    """Relaxed alignment (DMARC): the same organisational domain, approximated by suffix match."""
    domain, from_domain = domain.lower().lstrip("@").split("@")[-1], from_domain.lower()
    if not domain:
        return False
    return domain == from_domain or from_domain.endswith("." + domain) or domain.endswith("." + from_domain)


def check_authentication_results(mail: ParsedMail, *, trusted_relays: list[str]) -> SenderCheck:
    from_domain = mail.from_address.rsplit("@", 1)[-1] if "@" in mail.from_address else ""
    trusted = {r.lower() for r in trusted_relays}
    for header in mail.headers.get("authentication-results", ()):
        authserv_id = header.split(";", 1)[0].strip().split()[0].lower() if header.strip() else ""
        if authserv_id not in trusted:
            continue
        for method, result, rest in _RESULT.findall(header):
            if result.lower() != "pass":
                continue
            properties = {k.lower(): v for k, v in _PROPERTY.findall(rest)}
            if method.lower() == "dmarc":
                return SenderCheck(True, f"dmarc=pass from {authserv_id}")
            domain = properties.get("header.d") or properties.get("header.i") or properties.get("smtp.mailfrom", "")
            if domain and from_domain and _aligned(domain, from_domain):
                return SenderCheck(True, f"{method.lower()}=pass ({domain}) from {authserv_id}")
    return SenderCheck(False, "no passing Authentication-Results from a trusted relay")


def check_dkim(raw: bytes, mail: ParsedMail) -> SenderCheck:
    from_domain = mail.from_address.rsplit("@", 1)[-1] if "@" in mail.from_address else ""
    try:
        verifier = dkim.DKIM(raw)
        if not verifier.verify():
            return SenderCheck(False, "DKIM signature missing or invalid")
        domain = (verifier.domain or b"").decode("ascii", "replace")
    except Exception as exc:  # malformed signature, DNS failure: unverified, never an error
        return SenderCheck(False, f"DKIM not verifiable ({type(exc).__name__})")
    if _aligned(domain, from_domain):
        return SenderCheck(True, f"dkim=pass ({domain})")
    return SenderCheck(False, f"DKIM domain {domain} not aligned with {from_domain}")


def verify_sender(raw: bytes, mail: ParsedMail, *, trusted_relays: list[str], verify_dkim: bool) -> SenderCheck:
    result = check_authentication_results(mail, trusted_relays=trusted_relays)
    if result.verified or not verify_dkim:
        return result
    return check_dkim(raw, mail)
