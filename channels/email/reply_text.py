"""The new text of an email reply, without the quoted history and (optionally) the signature.

Why our own: measured with ``python -m benchmarks.email_reply`` on the shared
checks, no maintained library came near the 95% target - mail-parser-reply
54%, zapier's email-reply-parser 66% (2020), talon 79% (2017, needs
scikit-learn), quotequail 20%. They fail on the same things: quote headers in
other languages or wrapped over several lines, Outlook header blocks, replies
interleaved with the quote. This module classifies every line, then cuts:

1. Lines are ``e`` (empty), ``m`` (quoted with ``>``), ``s`` (a splitter: "On
   ... wrote:" in many languages and over up to five lines, an Outlook
   "From:/Sent:/To:" block, "-----Original Message-----", a date-and-address
   line) or ``t`` (text).
2. A reply interleaved with the quote (new sentences between quoted blocks)
   is kept whole: cutting would lose the answers.
3. Otherwise the quotation - from the first splitter (or two quoted lines) to
   the last quoted line - is removed; text after it (a sign-off under the
   quote) stays. A splitter not followed by quoted lines (Outlook, phones)
   cuts to the end. A forwarded message is never cut.
4. ``keep_signature=False`` also drops a trailing signature ("-- ", "Sent from
   my iPhone"...).

``split_fragments`` gives the same text as ordered blocks (new text, quoted,
header, signature), as github's email_reply_parser defines them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bs4 import BeautifulSoup

# "On <date>, <name> wrote:" opens with one of these ...
_ON = r"(?:on|am|le|op|el|il|em|den|på|dne|w dniu|vào|dnia)"
# ... and says one of these.
_WROTE = (
    r"(?:wrote|writes|sent|schrieb|a écrit|écrit|schreef|geschreven|napisał|napisała|skrev|skriver|kirjoitti|"
    r"escribió|escreveu|scrisse|ha scritto|написал|написала|написа|đã viết|napsal|napsala|yazdı|έγραψε|"
    r"írta|kirjutas|rašė|rakstīja)"
)
# After the verb: nothing, or more words up to a colon ("Op <date> schreef <name> <address>:").
_ON_WROTE = re.compile(rf"^(?:.*-{{2,}}\s*)?{_ON}\b.*\b{_WROTE}(?:\s*:?|\b.*:)\s*-*$", re.IGNORECASE)
_ON_START = re.compile(rf"^(?:.*-{{2,}}\s*)?{_ON}\b", re.IGNORECASE)
# "<name> <address> wrote:" without the date ("Sent from Samsung Mobile<name> wrote:").
_NAME_WROTE = re.compile(rf"^.*@.*\b{_WROTE}\s*:$", re.IGNORECASE)
# Android: "---- John Smith wrote ----".
_DASHED_WROTE = re.compile(rf"^-{{2,}}.*\b{_WROTE}\b\s*:?\s*-{{2,}}$", re.IGNORECASE)
# Gmail in some locales: "2014-10-17 11:28 GMT+03:00 Name <address>:".
_DATE_ADDRESS = re.compile(r"^(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})\b.*@.*[>:]$")
_ORIGINAL_MESSAGE = re.compile(
    r"^\s*[-_=]*\s*(?:original message|reply message|ursprüngliche nachricht|originalnachricht|"
    r"message d'origine|message original|oorspronkelijk bericht|mensaje original|mensagem original|"
    r"messaggio originale|originalmeddelande|original meddelelse|opprinnelig melding|alkuperäinen viesti|"
    r"исходное сообщение|wiadomość oryginalna|původní zpráva)\s*[-_=]*\s*$",
    re.IGNORECASE,
)
_FORWARDED = re.compile(
    r"^\s*-{2,}\s*(?:forwarded message|weitergeleitete nachricht|message transféré|doorgestuurd bericht|"
    r"mensaje reenviado|mensagem encaminhada|messaggio inoltrato|vidarebefordrat meddelande)|"
    r"^\s*begin forwarded message:",
    re.IGNORECASE,
)
# Outlook-style header blocks: "From:", "Sent:", "To:", "Subject:" and their translations.
_HEADER_FROM = r"(?:from|von|de|fra|från|van|od|da|от|kimden|lähettäjä|feladó)"
_HEADER_OTHER = (
    r"(?:sent|date|to|cc|subject|gesendet|datum|an|betreff|envoyé|date d'envoi|à|objet|sendt|til|emne|"
    r"skickat|till|ämne|verzonden|aan|onderwerp|enviado|fecha|para|asunto|inviato|data|a|oggetto|wysłano|"
    r"do|temat|отправлено|кому|тема|lähetetty|vastaanottaja|aihe)"
)
_HEADER_LINE = re.compile(rf"^\s*\*?(?:{_HEADER_FROM}|{_HEADER_OTHER})\s*:\*?\s*(?:\S.*)?$", re.IGNORECASE)
_HEADER_START = re.compile(rf"^\s*\*?(?:{_HEADER_FROM}|date|datum|fecha|data)\s*:\*?\s*\S", re.IGNORECASE)
_SEPARATOR = re.compile(r"^\s*[-_=]{7,}\s*$")
_QUOTED = re.compile(r"^\s*>")
_SIGNATURE_DELIMITER = re.compile(r"^(?:-- ?|--|__+|—)$")
_MOBILE_SIGNATURE = re.compile(
    r"^(?:sent from (?:my )?\S.{0,40}|sent with \S.{0,60}|get outlook for \S.{0,20}|"
    r"envoyé de mon \S.{0,30}|von meinem \S.{0,30} gesendet|enviado desde mi \S.{0,30}|"
    r"verzonden vanaf mijn \S.{0,30}|inviato da \S.{0,30}|skickat från min \S.{0,30})$",
    re.IGNORECASE,
)
_MAX_HEADER_LINES = 5  # a wrapped "On ... wrote:" spans at most this many lines
_MAX_SIGNATURE_LINES = 8
# Quote headers are short; longer lines are never tested (and never feed a slow regex).
_MAX_HEADER_CHARS = 400


def _normalise(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _splitter_end(lines: list[str], start: int) -> int | None:
    """If a quote header starts at ``start``, the index after its last line."""
    first = lines[start].strip()
    if not first or len(first) > _MAX_HEADER_CHARS:
        return None
    if _ORIGINAL_MESSAGE.match(first) or _DASHED_WROTE.match(first):
        return start + 1
    if _HEADER_START.match(lines[start]) and _followed_by_header(lines, start):
        return start + 1
    if _SEPARATOR.match(first):
        following = next((i for i in range(start + 1, len(lines)) if lines[i].strip()), None)
        if following is not None and _HEADER_START.match(lines[following]) and _followed_by_header(lines, following):
            return start + 1
        return None
    joined = ""
    for end in range(start, min(start + _MAX_HEADER_LINES, len(lines))):
        part = lines[end].strip().lstrip(">").strip() if end > start else first
        if not part:
            continue
        joined = f"{joined} {part}".strip()
        if len(joined) > _MAX_HEADER_CHARS:
            return None
        single = end == start
        if (
            (_ON_START.match(first) and _ON_WROTE.match(joined))
            or (single and _NAME_WROTE.match(joined))
            or (_DATE_ADDRESS.match(joined) and end - start < 3)
        ):
            return end + 1
    return None


def _followed_by_header(lines: list[str], start: int) -> bool:
    """An Outlook block has at least two header lines close together."""
    return any(_HEADER_LINE.match(line) for line in lines[start + 1 : start + 4])


def classify(lines: list[str]) -> str:
    """One marker per line: e(mpty), m (quoted), s(plitter), t(ext)."""
    markers: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        end = _splitter_end(lines, index)
        if end is not None:
            markers.extend("s" * (end - index))
            index = end
            continue
        if not line.strip():
            markers.append("e")
        elif _QUOTED.match(line) and not _closes_link(lines, index):
            markers.append("m")
        else:
            markers.append("t")
        index += 1
    return "".join(markers)


def _closes_link(lines: list[str], index: int) -> bool:
    """A ">" that ends a "<http://..." wrapped from the line above is not a quote marker."""
    above = lines[index - 1] if index else ""
    return above.rfind("<") > above.rfind(">")


# Where the quotation starts: a splitter, or a quoted line followed (past blank lines) by another.
_QUOTATION_START = re.compile(r"s|me*m")


def _is_interleaved(lines: list[str], markers: str) -> bool:
    """New sentences between quoted blocks: an inline answer, not a wrapped link or a stray line."""
    for match in re.finditer(r"m(e*)(t[te]*?)(?=e*m)", markers):
        start = match.start(2)
        block = lines[start : start + len(match.group(2))]
        if any(len(line.split()) >= 2 for line in block):
            return True
    return False


def _cut_quotation(lines: list[str]) -> list[str]:
    """Linear in the number of lines: long threads quote thousands of lines."""
    markers = classify(lines)
    first_quote = _QUOTATION_START.search(markers)
    if first_quote is None:
        return lines
    start = first_quote.start()
    # A forwarded message is content, unless it sits inside an older quote.
    if any(_FORWARDED.match(line) for line in lines[:start]):
        return lines
    if _is_interleaved(lines, markers):
        return lines
    last_quoted = markers.rfind("m")
    if last_quoted <= start or "s" in markers[last_quoted:]:
        return lines[:start]  # a splitter over unquoted history (Outlook, phones): the rest is history
    end = last_quoted + 1
    while end < len(markers) and markers[end] == "e":
        end += 1
    # What follows the last quoted line is new again (a sign-off under the quote).
    return lines[:start] + lines[end:]


def _cut_signature(lines: list[str]) -> list[str]:
    """Drop a trailing signature: a "-- " block or a "Sent from my phone" line near the end."""
    content = [i for i, line in enumerate(lines) if line.strip()]
    if len(content) < 2:
        return lines
    for index in content[-_MAX_SIGNATURE_LINES:]:
        if index == content[0]:
            continue
        stripped = lines[index].strip()
        if _SIGNATURE_DELIMITER.match(lines[index].rstrip("\n")) or _SIGNATURE_DELIMITER.match(stripped):
            return lines[:index]
        if _MOBILE_SIGNATURE.match(stripped) and index >= content[-2]:
            return lines[:index]
    return lines


def visible_reply(text: str, *, keep_signature: bool = False) -> str:
    """The new text of a plain-text reply (quoted history removed), stripped."""
    lines = _cut_quotation(_normalise(text))
    if not keep_signature:
        lines = _cut_signature(lines)
    return "\n".join(lines).strip()


# -- HTML -----------------------------------------------------------------------------

# Containers mail clients put the quoted history in.
_HTML_QUOTE_SELECTORS = (
    "blockquote[type=cite]",
    "div.gmail_quote",
    "div.gmail_extra",
    "blockquote.gmail_quote",
    "div.moz-cite-prefix",
    "div#appendonsend",
    "div#divRplyFwdMsg",
    "div.yahoo_quoted",
    "div#mail-editor-reference-message-container",
    "div.OutlookMessageHeader",
)


def strip_html_quotation(html: str) -> str:
    """The HTML body with the quoted history removed; unchanged when none is recognised."""
    if not html.strip():
        return html
    soup = BeautifulSoup(html, "html.parser")
    removed = False
    for selector in _HTML_QUOTE_SELECTORS:
        for node in soup.select(selector):
            node.decompose()
            removed = True
    # Outlook desktop: everything after the border-top div that opens the quoted header.
    for node in soup.find_all("div", style=re.compile(r"border-top:\s*solid", re.IGNORECASE)):
        for sibling in list(node.find_all_next()):
            sibling.decompose()
        node.decompose()
        removed = True
        break
    return str(soup) if removed else html


# -- fragments --------------------------------------------------------------------------


@dataclass
class Fragment:
    content: str
    quoted: bool = False
    signature: bool = False
    headers: bool = False
    hidden: bool = False


_FRAGMENT_SIGNATURE = re.compile(r"^(?:--|__|-\w)|^sent from my (?:\w+\s*){1,3}", re.IGNORECASE)


def _joined_quote_headers(text: str) -> str:
    """Quote headers wrapped over several lines, put back on one line (before scanning)."""
    lines = _normalise(text)
    out: list[str] = []
    index = 0
    while index < len(lines):
        end = _splitter_end(lines, index)
        if end is not None and end - index > 1 and _ON_START.match(lines[index].strip()):
            out.append(" ".join(line.strip() for line in lines[index:end] if line.strip()))
            index = end
            continue
        out.append(lines[index])
        index += 1
    return "\n".join(out)


def split_fragments(text: str) -> list[Fragment]:
    """The text as ordered blocks of new text, quoted text, quote headers and signatures.

    Scanned bottom-up, as github's email_reply_parser defines fragments: a
    blank line above a signature-looking line closes a signature; a quote
    header joins the quoted block below it; trailing quoted, header, signature
    and empty blocks are hidden.
    """
    lines = _joined_quote_headers(text).split("\n")
    fragments: list[Fragment] = []
    current: list[str] | None = None
    flags = {"quoted": False, "headers": False, "signature": False}
    state = {"found_visible": False}

    def finish() -> None:
        nonlocal current
        if current is None:
            return
        fragment = Fragment("\n".join(reversed(current)).strip(), **flags)
        if fragment.headers:
            # Everything below a header block is older mail.
            state["found_visible"] = False
            for earlier in fragments:
                earlier.hidden = True
        if not state["found_visible"]:
            if fragment.quoted or fragment.headers or fragment.signature or not fragment.content:
                fragment.hidden = True
            else:
                state["found_visible"] = True
        fragments.append(fragment)
        current = None

    for line in reversed(lines):
        stripped = line.strip()
        short = len(stripped) <= _MAX_HEADER_CHARS
        is_quote_header = short and bool(_ON_START.match(stripped) and _ON_WROTE.match(stripped))
        is_quoted = bool(_QUOTED.match(line))
        is_header = is_quote_header or bool(short and stripped and _HEADER_LINE.match(line))
        if current is not None and not stripped and _FRAGMENT_SIGNATURE.match(current[-1].strip()):
            flags["signature"] = True
            finish()
        if current is not None and (
            (flags["headers"] == is_header and flags["quoted"] == is_quoted)
            or (flags["quoted"] and (is_quote_header or not stripped))
        ):
            current.append(line)
        else:
            finish()
            current = [line]
            flags = {"quoted": is_quoted, "headers": is_header, "signature": False}
    finish()
    fragments.reverse()
    return fragments
