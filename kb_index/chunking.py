"""Splitting articles into passages small enough to embed and to quote back to a user."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kb_index.documents import Article, is_markdown

# Bump whenever the splitting rules change, so that existing indexes are
# re-chunked (the version is stored with the index and checked by is_stale).
CHUNKER_VERSION = 2
MIN_MAX_CHARS = 100

_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_BLANK_LINES = re.compile(r"\n[ \t]*\n")
# A sentence ends at . ! or ? followed by whitespace; good enough for support
# prose, and it leaves "0x8007.0005"-like tokens and URLs intact.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    article_id: str
    title: str
    heading_path: tuple[str, ...]
    text: str
    url: str | None
    source_path: str


@dataclass(frozen=True)
class _Block:
    heading_path: tuple[str, ...]
    heading_line: str
    body: str


@dataclass(frozen=True)
class _Section:
    """One or more consecutive blocks that will be chunked together."""

    heading_path: tuple[str, ...]
    blocks: tuple[_Block, ...]

    @classmethod
    def of(cls, block: _Block) -> _Section:
        return cls(heading_path=block.heading_path, blocks=(block,))

    def merged_with(self, other: _Section) -> _Section:
        return _Section(
            heading_path=_common_prefix(self.heading_path, other.heading_path),
            blocks=self.blocks + other.blocks,
        )

    @property
    def text(self) -> str:
        # Once sections are merged the chunk's heading path is only their common
        # ancestor, so each block whose own heading is no longer in that path
        # keeps its heading line in the text for context.
        parts: list[str] = []
        for block in self.blocks:
            if block.heading_path != self.heading_path and block.heading_line:
                parts.append(block.heading_line)
            parts.append(block.body)
        return "\n\n".join(parts)


def chunk_article(article: Article, *, max_chars: int = 1200) -> list[Chunk]:
    """Split an article into passages of at most ``max_chars`` characters, following its headings."""
    if max_chars < MIN_MAX_CHARS:
        raise ValueError(f"max_chars must be at least {MIN_MAX_CHARS}, got {max_chars}")

    if is_markdown(article.source_path):
        blocks = _markdown_blocks(article.body, title=article.title)
    else:
        blocks = [_Block(heading_path=(), heading_line="", body=article.body.strip())]
    if not blocks:
        # Headings only, no prose: still index it so the title can be found.
        blocks = [_Block(heading_path=(), heading_line="", body=article.body.strip())]

    sections = _merge_tiny([_Section.of(block) for block in blocks], max_chars=max_chars)
    chunks: list[Chunk] = []
    for section in sections:
        for piece in _split_long(section.text, max_chars=max_chars):
            chunks.append(
                Chunk(
                    chunk_id=f"{article.article_id}#{len(chunks)}",
                    article_id=article.article_id,
                    title=article.title,
                    heading_path=section.heading_path,
                    text=piece,
                    url=article.url,
                    source_path=article.source_path,
                )
            )
    return chunks


def _markdown_blocks(body: str, *, title: str) -> list[_Block]:
    blocks: list[_Block] = []
    stack: list[tuple[int, str]] = []
    heading_line = ""
    lines: list[str] = []
    fence: str | None = None

    def flush() -> None:
        text = "\n".join(lines).strip()
        # A heading with nothing under it is already carried in the heading
        # path of its subsections; on its own it is not worth a passage.
        if text:
            blocks.append(_Block(heading_path=tuple(name for _, name in stack), heading_line=heading_line, body=text))
        lines.clear()

    for line in body.split("\n"):
        fence_match = _FENCE.match(line)
        if fence_match:
            marker = fence_match.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
            lines.append(line)
            continue
        heading = None if fence else _ATX_HEADING.match(line)
        if heading is None:
            lines.append(line)
            continue
        flush()
        level, name = len(heading.group(1)), heading.group(2).strip()
        if level == 1 and not stack and name.casefold() == title.casefold():
            # The article's own title heading: the title travels with every chunk already.
            heading_line = ""
            continue
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, name or "(untitled)"))
        heading_line = line.strip()
    flush()
    return blocks


def _merge_tiny(sections: list[_Section], *, max_chars: int) -> list[_Section]:
    """Fold sections too short to stand alone ("See below.", a one-line note) into the next one."""
    min_chars = max_chars // 6
    merged: list[_Section] = []
    pending: _Section | None = None
    for section in sections:
        if pending is not None:
            combined = pending.merged_with(section)
            if len(combined.text) <= max_chars:
                section = combined
            else:
                merged.append(pending)
            pending = None
        if len(section.text) < min_chars:
            pending = section
        else:
            merged.append(section)
    if pending is not None:
        if merged and len(merged[-1].merged_with(pending).text) <= max_chars:
            merged[-1] = merged[-1].merged_with(pending)
        else:
            merged.append(pending)
    return merged


def _split_long(text: str, *, max_chars: int) -> list[str]:
    text = text.strip()
    if not text:
        return []
    if len(text) <= max_chars:
        return [text]
    pieces: list[str] = []
    for paragraph in _pack(_paragraphs(text), separator="\n\n", max_chars=max_chars):
        if len(paragraph) <= max_chars:
            pieces.append(paragraph)
            continue
        # A long list keeps one item per line: split between lines before sentences.
        for line_group in _pack(paragraph.split("\n"), separator="\n", max_chars=max_chars):
            if len(line_group) <= max_chars:
                pieces.append(line_group)
                continue
            for sentence_group in _pack(_SENTENCE_END.split(line_group), separator=" ", max_chars=max_chars):
                if len(sentence_group) <= max_chars:
                    pieces.append(sentence_group)
                else:
                    pieces.extend(_hard_wrap(sentence_group, max_chars=max_chars))
    return [piece for piece in (p.strip() for p in pieces) if piece]


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, keeping each fenced code block in one piece."""
    paragraphs: list[str] = []
    current: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        fence_match = _FENCE.match(line)
        if fence_match:
            marker = fence_match.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
        if fence is None and not line.strip():
            if current:
                paragraphs.append("\n".join(current))
                current = []
            continue
        current.append(line)
    if current:
        paragraphs.append("\n".join(current))
    return paragraphs


def _pack(units: list[str], *, separator: str, max_chars: int) -> list[str]:
    """Greedily join consecutive units while the result fits; oversize units pass through alone."""
    packed: list[str] = []
    current = ""
    for unit in (u.strip() for u in units):
        if not unit:
            continue
        candidate = f"{current}{separator}{unit}" if current else unit
        if len(candidate) <= max_chars:
            current = candidate
            continue
        if current:
            packed.append(current)
        current = unit
    if current:
        packed.append(current)
    return packed


def _hard_wrap(text: str, *, max_chars: int) -> list[str]:
    """Last resort for a run-on "sentence" (a log dump, a long code line): cut at whitespace when possible."""
    pieces: list[str] = []
    while len(text) > max_chars:
        cut = max(text.rfind("\n", 0, max_chars + 1), text.rfind(" ", 0, max_chars + 1))
        if cut <= max_chars // 2:
            cut = max_chars
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        pieces.append(text)
    return pieces


def _common_prefix(left: tuple[str, ...], right: tuple[str, ...]) -> tuple[str, ...]:
    prefix: list[str] = []
    for a, b in zip(left, right, strict=False):
        if a != b:
            break
        prefix.append(a)
    return tuple(prefix)
