"""On-disk format of a knowledge index, written so a crash never leaves it half-updated.

An index folder holds:

* ``index.json`` - the manifest: format version, model id and dimension,
  chunking settings, per-article content hashes and chunk metadata, and the
  name and sha256 of the vectors file it goes with;
* ``vectors-<sha256 prefix>.faiss`` - the chunk vectors as a FAISS index,
  row ``i`` belonging to the ``i``-th chunk in manifest order, followed by
  one row per article: the vector of its title alone (how well a question
  matches an article's title is strong evidence for the answer decision).

Each write puts the vectors under a new content-addressed name and then
swaps in the manifest with one ``os.replace``. Until that swap the old
manifest still names the old, untouched vectors file, so a crash at any
point leaves the previous index loadable. The vectors file of the previous
generation is kept, so a process that read the old manifest a moment
before the swap can still open the file it names.

Writers take an exclusive lock on ``<index_dir>/.lock`` (``index_write_lock``)
for the whole read-embed-write cycle: two replicas starting at once on a shared
index volume, or a replica and ``tierzero kb index``, then write one after the
other instead of deleting each other's new vectors file. Readers never take it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from kb_index.chunking import Chunk
from kb_index.embedding import file_sha256

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
MANIFEST_NAME = "index.json"
LOCK_NAME = ".lock"
_VECTORS_PREFIX = "vectors-"
_VECTORS_SUFFIX = ".faiss"
_TEMP_SUFFIX = ".tmp"
# Temp files this old are leftovers of a crashed write, not one in progress.
_STALE_TEMP_SECONDS = 3600
_REBUILD_HINT = "Run `tierzero kb index` to rebuild it."


class IndexNotFoundError(Exception):
    """No knowledge index has been built in the folder yet."""


class CorruptIndexError(Exception):
    """The knowledge index exists but cannot be used as it is."""


@dataclass(frozen=True)
class IndexSettings:
    """Everything besides article content that decides what the chunks and vectors are."""

    model_id: str
    dimension: int
    max_chunk_chars: int
    chunker_version: int
    passage_version: int


@dataclass(frozen=True)
class StoredArticle:
    article_id: str
    title: str
    url: str | None
    source_path: str
    tags: tuple[str, ...]
    content_hash: str
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True)
class StoredIndex:
    settings: IndexSettings
    built_at: str
    articles: tuple[StoredArticle, ...]
    # Row-aligned with the chunks of ``articles``, in order.
    vectors: np.ndarray
    # Row-aligned with ``articles``.
    title_vectors: np.ndarray
    size_bytes: int


@contextlib.contextmanager
def index_write_lock(index_dir: Path) -> Iterator[None]:
    """Hold the index folder's writer lock (blocks while another process holds it).

    ``flock`` on a lock file: the kernel releases it when the holder exits, even
    by SIGKILL, so a crashed indexer never leaves the index locked. It works
    across containers sharing a local volume; not on every network file system.
    """
    index_dir.mkdir(parents=True, exist_ok=True)
    with open(index_dir / LOCK_NAME, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("Waiting for another process to finish writing the knowledge index in %s", index_dir)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def write_index(
    index_dir: Path,
    *,
    settings: IndexSettings,
    built_at: str,
    articles: tuple[StoredArticle, ...],
    vectors: np.ndarray,
    title_vectors: np.ndarray,
) -> int:
    """Persist an index atomically; returns its size on disk in bytes."""
    index_dir.mkdir(parents=True, exist_ok=True)
    previous_vectors = _referenced_vectors_file(index_dir)

    all_rows = np.concatenate([vectors, title_vectors]).astype(np.float32, copy=False)
    vectors_name, vectors_sha256, vectors_size = _write_vectors(index_dir, all_rows)
    manifest = {
        "format_version": FORMAT_VERSION,
        "model_id": settings.model_id,
        "dimension": settings.dimension,
        "chunking": {
            "max_chunk_chars": settings.max_chunk_chars,
            "chunker_version": settings.chunker_version,
            "passage_version": settings.passage_version,
        },
        "built_at": built_at,
        "vectors_file": vectors_name,
        "vectors_sha256": vectors_sha256,
        "articles": [_article_to_json(article) for article in articles],
    }
    manifest_bytes = json.dumps(manifest, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    _atomic_write(index_dir / MANIFEST_NAME, lambda path: path.write_bytes(manifest_bytes))
    _fsync_dir(index_dir)

    _remove_unreferenced(index_dir, keep={vectors_name, previous_vectors})
    return vectors_size + len(manifest_bytes)


def read_index(index_dir: Path) -> StoredIndex:
    """Read and fully validate a persisted index."""
    manifest_path = index_dir / MANIFEST_NAME
    try:
        manifest_bytes = manifest_path.read_bytes()
    except FileNotFoundError as exc:
        raise IndexNotFoundError(f"No knowledge index in {index_dir}. Run `tierzero kb index` to build it.") from exc
    except OSError as exc:
        raise _corrupt(index_dir, f"cannot read {MANIFEST_NAME}: {exc.strerror or exc}") from exc

    try:
        manifest = json.loads(manifest_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(index_dir, f"{MANIFEST_NAME} is not valid JSON") from exc
    if not isinstance(manifest, dict):
        raise _corrupt(index_dir, f"{MANIFEST_NAME} is not a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise _corrupt(index_dir, f"it uses index format {version!r}, this version of tierzero reads {FORMAT_VERSION}")

    try:
        settings = _settings_from_json(manifest)
        built_at = _expect(manifest["built_at"], str)
        articles = tuple(_article_from_json(item) for item in _expect(manifest["articles"], list))
        vectors_name = _expect(manifest["vectors_file"], str)
        vectors_sha256 = _expect(manifest["vectors_sha256"], str)
    except (KeyError, TypeError, ValueError) as exc:
        raise _corrupt(index_dir, f"{MANIFEST_NAME} is malformed ({_describe(exc)})") from exc
    if Path(vectors_name).name != vectors_name:
        raise _corrupt(index_dir, f"{MANIFEST_NAME} names an invalid vectors file {vectors_name!r}")

    vectors, vectors_size = _read_vectors(index_dir, vectors_name, expected_sha256=vectors_sha256)
    chunk_count = sum(len(article.chunks) for article in articles)
    if vectors.shape[0] != chunk_count + len(articles):
        raise _corrupt(
            index_dir, f"it has {vectors.shape[0]} vectors for {chunk_count} chunks and {len(articles)} titles"
        )
    if vectors.shape[1] != settings.dimension:
        raise _corrupt(
            index_dir, f"its vectors have {vectors.shape[1]} dimensions, the manifest says {settings.dimension}"
        )
    return StoredIndex(
        settings=settings,
        built_at=built_at,
        articles=articles,
        vectors=vectors[:chunk_count],
        title_vectors=vectors[chunk_count:],
        size_bytes=vectors_size + len(manifest_bytes),
    )


def build_faiss_index(vectors: np.ndarray) -> faiss.Index:
    """Exact inner-product search; on unit vectors that is cosine similarity.

    A flat index needs no training, gives exact results, and searches tens of
    thousands of chunks in milliseconds, which covers any help-desk knowledge
    base. It is rebuilt from the stored vectors on every sync instead of
    being patched with remove_ids/add_with_ids: that keeps row i == chunk i
    without id bookkeeping, and copying the vectors costs less than
    embedding a single changed article.
    """
    index = faiss.IndexFlatIP(vectors.shape[1])
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def _write_vectors(index_dir: Path, vectors: np.ndarray) -> tuple[str, str, int]:
    index = build_faiss_index(vectors)
    handle, temp_name = tempfile.mkstemp(prefix=f".{_VECTORS_PREFIX}", suffix=_TEMP_SUFFIX, dir=index_dir)
    os.close(handle)
    temp_path = Path(temp_name)
    try:
        faiss.write_index(index, str(temp_path))
        _fsync_file(temp_path)
        sha256 = file_sha256(temp_path)
        name = f"{_VECTORS_PREFIX}{sha256[:16]}{_VECTORS_SUFFIX}"
        size = temp_path.stat().st_size
        os.replace(temp_path, index_dir / name)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    return name, sha256, size


def _read_vectors(index_dir: Path, name: str, *, expected_sha256: str) -> tuple[np.ndarray, int]:
    path = index_dir / name
    try:
        actual_sha256 = file_sha256(path)
        size = path.stat().st_size
    except OSError as exc:
        raise _corrupt(index_dir, f"cannot read {name}: {exc.strerror or exc}") from exc
    if actual_sha256 != expected_sha256:
        raise _corrupt(index_dir, f"{name} does not match its checksum (truncated or modified)")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise _corrupt(index_dir, f"FAISS cannot read {name}") from exc
    if not isinstance(index, faiss.IndexFlat) or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise _corrupt(index_dir, f"{name} is not a flat inner-product index")
    vectors = index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, index.d), dtype=np.float32)
    return np.ascontiguousarray(vectors, dtype=np.float32), size


def _atomic_write(target: Path, write: Any) -> None:
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=_TEMP_SUFFIX, dir=target.parent)
    os.close(handle)
    temp_path = Path(temp_name)
    try:
        write(temp_path)
        _fsync_file(temp_path)
        os.replace(temp_path, target)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


def _fsync_file(path: Path) -> None:
    with path.open("rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    # Makes the renames themselves durable; not supported on every platform.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _referenced_vectors_file(index_dir: Path) -> str | None:
    try:
        manifest = json.loads((index_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
        name = manifest["vectors_file"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return name if isinstance(name, str) else None


def _remove_unreferenced(index_dir: Path, *, keep: set[str | None]) -> None:
    now = time.time()
    for path in index_dir.iterdir():
        name = path.name
        is_old_vectors = name.startswith(_VECTORS_PREFIX) and name.endswith(_VECTORS_SUFFIX) and name not in keep
        is_stale_temp = name.startswith(".") and name.endswith(_TEMP_SUFFIX) and _older_than(path, now)
        if is_old_vectors or is_stale_temp:
            try:
                path.unlink()
            except OSError as exc:
                logger.warning("Could not remove old index file %s: %s", path, exc)


def _older_than(path: Path, now: float) -> bool:
    try:
        return now - path.stat().st_mtime > _STALE_TEMP_SECONDS
    except OSError:
        return False


def _article_to_json(article: StoredArticle) -> dict[str, Any]:
    return {
        "article_id": article.article_id,
        "title": article.title,
        "url": article.url,
        "source_path": article.source_path,
        "tags": list(article.tags),
        "content_hash": article.content_hash,
        "chunks": [{"heading_path": list(chunk.heading_path), "text": chunk.text} for chunk in article.chunks],
    }


def _article_from_json(item: Mapping[str, Any]) -> StoredArticle:
    article_id = _expect(item["article_id"], str)
    title = _expect(item["title"], str)
    url = item["url"]
    if url is not None:
        url = _expect(url, str)
    source_path = _expect(item["source_path"], str)
    chunks = tuple(
        Chunk(
            chunk_id=f"{article_id}#{n}",
            article_id=article_id,
            title=title,
            heading_path=tuple(_expect(name, str) for name in _expect(chunk["heading_path"], list)),
            text=_expect(chunk["text"], str),
            url=url,
            source_path=source_path,
        )
        for n, chunk in enumerate(_expect(item["chunks"], list))
    )
    return StoredArticle(
        article_id=article_id,
        title=title,
        url=url,
        source_path=source_path,
        tags=tuple(_expect(tag, str) for tag in _expect(item["tags"], list)),
        content_hash=_expect(item["content_hash"], str),
        chunks=chunks,
    )


def _settings_from_json(manifest: Mapping[str, Any]) -> IndexSettings:
    chunking = _expect(manifest["chunking"], dict)
    return IndexSettings(
        model_id=_expect(manifest["model_id"], str),
        dimension=_expect(manifest["dimension"], int),
        max_chunk_chars=_expect(chunking["max_chunk_chars"], int),
        chunker_version=_expect(chunking["chunker_version"], int),
        passage_version=_expect(chunking["passage_version"], int),
    )


def _expect(value: Any, kind: type) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"expected {kind.__name__}, found {type(value).__name__}")
    return value


def _describe(exc: Exception) -> str:
    return f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)


def _corrupt(index_dir: Path, problem: str) -> CorruptIndexError:
    return CorruptIndexError(f"The knowledge index in {index_dir} is unusable: {problem}. {_REBUILD_HINT}")
