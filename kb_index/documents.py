"""Reading knowledge-base articles (Markdown or plain text) from a folder."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import frontmatter
import yaml

logger = logging.getLogger(__name__)

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
ARTICLE_SUFFIXES = MARKDOWN_SUFFIXES | {".txt"}
# A support article is a few KB; anything this large is almost certainly an
# export or a log someone dropped in the folder, and would swamp the index.
MAX_ARTICLE_BYTES = 5 * 1024 * 1024

_H1 = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_FRONT_MATTER_OPENING = re.compile(r"\A---[ \t]*\n")


class KnowledgeBaseError(Exception):
    """The knowledge-base folder itself cannot be used (missing, not a folder)."""


@dataclass(frozen=True)
class Article:
    article_id: str
    title: str
    url: str | None
    source_path: str
    tags: tuple[str, ...]
    body: str
    content_hash: str


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


class _Unusable(Exception):
    """A file that cannot become an article; the message is the reason shown to the user."""


def load_articles(folder: Path) -> tuple[list[Article], list[SkippedFile]]:
    """Read every article under ``folder``; files that cannot be used are reported, never fatal."""
    folder = Path(folder)
    if not folder.exists():
        raise KnowledgeBaseError(f"Knowledge-base folder not found: {folder}")
    if not folder.is_dir():
        raise KnowledgeBaseError(f"Knowledge-base path is not a folder: {folder}")

    articles: list[Article] = []
    skipped: list[SkippedFile] = []
    sources_by_id: dict[str, str] = {}
    for relative in _article_paths(folder):
        source_path = relative.as_posix()
        try:
            article = _read_article(folder / relative, source_path=source_path)
            earlier = sources_by_id.get(article.article_id)
            if earlier is not None:
                raise _Unusable(f"same article id {article.article_id!r} as {earlier}")
        except _Unusable as exc:
            logger.warning("Skipping knowledge-base file %s: %s", source_path, exc)
            skipped.append(SkippedFile(path=source_path, reason=str(exc)))
            continue
        sources_by_id[article.article_id] = source_path
        articles.append(article)
    return articles, skipped


def is_markdown(source_path: str) -> bool:
    return PurePosixPath(source_path).suffix.lower() in MARKDOWN_SUFFIXES


def _article_paths(folder: Path) -> list[PurePosixPath]:
    found: list[PurePosixPath] = []
    # os.walk does not follow symlinked folders, so a link loop cannot hang indexing.
    for root, dirs, files in os.walk(folder):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        root_relative = PurePosixPath(Path(root).relative_to(folder).as_posix())
        for name in files:
            if name.startswith(".") or PurePosixPath(name).suffix.lower() not in ARTICLE_SUFFIXES:
                continue
            found.append(root_relative / name)
    return sorted(found)


def _read_article(path: Path, *, source_path: str) -> Article:
    raw = _read_bytes(path)
    if b"\x00" in raw:
        raise _Unusable("binary file (contains NUL bytes)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Unusable(f"not valid UTF-8 (byte {exc.start})") from exc
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise _Unusable("empty file")

    metadata, body = _split_front_matter(text)
    body = body.strip("\n")
    if not body.strip():
        raise _Unusable("no content after the front matter")

    relative = PurePosixPath(source_path)
    return Article(
        article_id=relative.with_suffix("").as_posix(),
        title=_title(metadata, body, stem=relative.stem),
        url=_optional_text(metadata.get("url")),
        source_path=source_path,
        tags=_tags(metadata.get("tags")),
        body=body,
        content_hash=hashlib.sha256(raw).hexdigest(),
    )


def _read_bytes(path: Path) -> bytes:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            # Reading a FIFO or device would block or never end.
            raise _Unusable("not a regular file")
        if info.st_size > MAX_ARTICLE_BYTES:
            raise _Unusable(f"too large ({info.st_size} bytes, limit {MAX_ARTICLE_BYTES})")
        return path.read_bytes()
    except OSError as exc:
        raise _Unusable(f"cannot read file: {exc.strerror or exc}") from exc


def _split_front_matter(text: str) -> tuple[dict[str, object], str]:
    try:
        post = frontmatter.loads(text)
    except yaml.YAMLError as exc:
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise _Unusable(f"broken front matter: {problem}") from exc
    if _FRONT_MATTER_OPENING.match(text) and post.content == text:
        # python-frontmatter treats an unterminated block as body text, which
        # would index the YAML as prose; the author meant front matter.
        raise _Unusable("broken front matter: no closing '---' line")
    metadata = post.metadata
    if not isinstance(metadata, dict):
        raise _Unusable("broken front matter: expected 'key: value' pairs")
    return metadata, post.content


def _title(metadata: dict[str, object], body: str, *, stem: str) -> str:
    title = _optional_text(metadata.get("title"))
    if title:
        return title
    heading = _H1.search(body)
    if heading:
        return heading.group(1).strip()
    humanised = re.sub(r"[-_]+", " ", stem).strip()
    return humanised[:1].upper() + humanised[1:] if humanised else stem


def _optional_text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _tags(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list | tuple) else [value]
    return tuple(tag for tag in (str(item).strip() for item in items) if tag)
