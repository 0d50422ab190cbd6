"""Reading knowledge-base articles from a folder.

Markdown (with YAML front matter), plain text, HTML (the main content,
converted to Markdown so headings survive), PDF (text per page, each page a
section) and FAQ files (CSV or JSONL of question-answer pairs, each pair an
article titled by its question).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
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
HTML_SUFFIXES = frozenset({".html", ".htm"})
PDF_SUFFIXES = frozenset({".pdf"})
FAQ_SUFFIXES = frozenset({".csv", ".jsonl"})
# Formats whose text reaches the chunker as Markdown (headings mark sections).
_CHUNKED_AS_MARKDOWN = MARKDOWN_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES
ARTICLE_SUFFIXES = MARKDOWN_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES | FAQ_SUFFIXES | {".txt"}
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
            found = _read_articles(folder / relative, source_path=source_path)
            for article in found:
                earlier = sources_by_id.get(article.article_id)
                if earlier is not None:
                    raise _Unusable(f"same article id {article.article_id!r} as {earlier}")
        except _Unusable as exc:
            logger.warning("Skipping knowledge-base file %s: %s", source_path, exc)
            skipped.append(SkippedFile(path=source_path, reason=str(exc)))
            continue
        for article in found:
            sources_by_id[article.article_id] = source_path
            articles.append(article)
    return articles, skipped


def is_markdown(source_path: str) -> bool:
    """Whether the article's body is Markdown (true for converted HTML and PDF too)."""
    return PurePosixPath(source_path).suffix.lower() in _CHUNKED_AS_MARKDOWN


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


def _read_articles(path: Path, *, source_path: str) -> list[Article]:
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES:
        return [_read_pdf(path, source_path=source_path)]
    if suffix in HTML_SUFFIXES:
        return [_read_html(path, source_path=source_path)]
    if suffix in FAQ_SUFFIXES:
        return _read_faq(path, source_path=source_path)
    return [_read_article(path, source_path=source_path)]


def _read_text(path: Path) -> tuple[bytes, str]:
    raw = _read_bytes(path)
    if b"\x00" in raw:
        raise _Unusable("binary file (contains NUL bytes)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Unusable(f"not valid UTF-8 (byte {exc.start})") from exc
    return raw, text.replace("\r\n", "\n").replace("\r", "\n")


def _read_html(path: Path, *, source_path: str) -> Article:
    import html2text
    from bs4 import BeautifulSoup

    raw, text = _read_text(path)
    soup = BeautifulSoup(text, "html.parser")
    canonical = soup.find("link", rel="canonical")
    url = canonical.get("href") if canonical is not None else None
    page_title = soup.title.get_text(" ", strip=True) if soup.title else ""
    # Navigation, headers, footers and scripts repeat on every page: only the main content is an answer.
    for noise in soup.find_all(["script", "style", "nav", "header", "footer", "aside", "form", "noscript"]):
        noise.decompose()
    main = soup.find("main") or soup.find("article") or soup.find(True, attrs={"role": "main"}) or soup.body or soup
    converter = html2text.HTML2Text()
    converter.body_width = 0  # no hard wrapping: chunking splits by headings and sentences
    converter.ignore_images = True
    body = converter.handle(str(main)).strip()
    if not body:
        raise _Unusable("no text in the page's main content")
    heading = _H1.search(body)
    title = heading.group(1).strip() if heading else page_title or _humanised(PurePosixPath(source_path).stem)
    return _article(source_path, title=title, url=str(url) if url else None, body=body, raw=raw)


def _read_pdf(path: Path, *, source_path: str) -> Article:
    import pypdf

    raw = _read_bytes(path)
    try:
        reader = pypdf.PdfReader(io.BytesIO(raw))
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        metadata_title = (reader.metadata.title if reader.metadata else None) or ""
    except Exception as exc:  # noqa: BLE001 - pypdf raises many types for damaged files
        raise _Unusable(f"cannot read PDF: {' '.join(str(exc).split()) or type(exc).__name__}") from exc
    if not any(pages):
        raise _Unusable("no extractable text in the PDF (scanned pages need OCR first)")
    # Each page becomes a section, so a citation can say which page answers.
    body = "\n\n".join(f"## Page {number}\n\n{text}" for number, text in enumerate(pages, 1) if text)
    first_line = next((line.strip() for text in pages for line in text.splitlines() if line.strip()), "")
    title = str(metadata_title).strip() or first_line[:120] or _humanised(PurePosixPath(source_path).stem)
    return _article(source_path, title=title, url=None, body=body, raw=raw)


_QUESTION_KEYS = ("question", "q", "title")
_ANSWER_KEYS = ("answer", "a", "text")


def _read_faq(path: Path, *, source_path: str) -> list[Article]:
    """One article per question-answer pair; its id is the file's plus the row's ``id`` or number."""
    _, text = _read_text(path)
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        rows: list[tuple[int, dict[str, object]]] = [(n, dict(row)) for n, row in enumerate(reader, 2)]
        where = "row"
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _Unusable(f"line {number} is not valid JSON ({exc.msg})") from exc
            if not isinstance(item, dict):
                raise _Unusable(f"line {number} is not a JSON object")
            rows.append((number, item))
        where = "line"
    stem = PurePosixPath(source_path).with_suffix("").as_posix()
    articles = []
    for number, row in rows:
        fields = {str(key).strip().lower(): value for key, value in row.items() if key is not None}
        question = _first_text(fields, _QUESTION_KEYS)
        answer = _first_text(fields, _ANSWER_KEYS)
        if not question or not answer:
            raise _Unusable(f"{where} {number} needs a question and an answer (columns 'question' and 'answer')")
        key = _optional_text(fields.get("id")) or str(number)
        content = json.dumps([question, answer, fields.get("url")], ensure_ascii=False).encode()
        articles.append(
            Article(
                article_id=f"{stem}#{key}",
                title=question,
                url=_optional_text(fields.get("url")),
                source_path=source_path,
                tags=_tags(fields.get("tags")),
                body=answer,
                content_hash=hashlib.sha256(content).hexdigest(),
            )
        )
    if not articles:
        raise _Unusable("no question-answer pairs")
    return articles


def _first_text(fields: dict[str, object], keys: tuple[str, ...]) -> str | None:
    return next((text for key in keys if (text := _optional_text(fields.get(key)))), None)


def _article(source_path: str, *, title: str, url: str | None, body: str, raw: bytes) -> Article:
    return Article(
        article_id=PurePosixPath(source_path).with_suffix("").as_posix(),
        title=title,
        url=url,
        source_path=source_path,
        tags=(),
        body=body,
        content_hash=hashlib.sha256(raw).hexdigest(),
    )


def _humanised(stem: str) -> str:
    text = re.sub(r"[-_]+", " ", stem).strip()
    return text[:1].upper() + text[1:] if text else stem


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
