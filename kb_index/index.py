"""The searchable knowledge index: incremental sync from articles, persistence, hybrid search."""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np
from tqdm import tqdm

from kb_index.chunking import CHUNKER_VERSION, MIN_MAX_CHARS, Chunk, chunk_article
from kb_index.documents import Article, SkippedFile, load_articles
from kb_index.embedding import Embedder
from kb_index.fusion import DENSE_WEIGHT, fuse, is_identifier, normalise_by_max
from kb_index.lexical import LexicalIndex, tokenize
from kb_index.store import (
    MANIFEST_NAME,
    CorruptIndexError,
    IndexNotFoundError,
    IndexSettings,
    StoredArticle,
    build_faiss_index,
    index_write_lock,
    read_index,
    write_index,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CorruptIndexError",
    "IndexNotFoundError",
    "IndexReport",
    "IndexStats",
    "KnowledgeIndex",
    "SearchHit",
    "SEARCH_MODES",
]

SEARCH_MODES = ("hybrid", "dense", "lexical")
EMBED_BATCH_SIZE = 32
# Bump when passage_text() or lexical_tokens() change, so stored vectors and
# the rebuilt keyword index never disagree with how queries are handled.
PASSAGE_VERSION = 1
# How many chunks each retriever proposes per requested article. Several
# chunks of one article often crowd the top of a list, so ask for more.
_CANDIDATES_PER_RESULT = 10
_MIN_CANDIDATES = 50
# The title is the best summary of a support article; counting its words
# twice lets a question that names the topic beat one passing mention.
_TITLE_REPEATS = 2
_CONTINUATION_CHUNKS = 3


@dataclass(frozen=True)
class SearchHit:
    """One article in a result list, represented by its best-matching chunk.

    ``score`` orders the results (higher is better; in hybrid mode the fused
    relevance). ``dense_score`` is the cosine between the question and the
    passage (-1..1); ``lexical_score`` is its BM25 score divided by the best
    BM25 score among the candidates considered (0..1).
    """

    article_id: str
    title: str
    url: str | None
    source_path: str
    heading_path: tuple[str, ...]
    passage: str
    score: float
    dense_score: float
    lexical_score: float
    # What follows the passage in the article (the next few chunks, with their
    # section headings), so an answer can quote on into the steps.
    continuation: str = ""
    # Evidence for the answer decision (bot.confidence): the cosine between
    # the question and the article's title alone, and the share of the
    # question's words (weighted by rarity, IDF) that occur in the article.
    title_score: float = 0.0
    term_coverage: float = 0.0
    # Share (0..1) of the question's identifiers (error codes, ticket ids...) the passage contains exactly.
    identifier_match: float = 0.0


@dataclass(frozen=True)
class IndexReport:
    """What a sync did. Articles re-chunked because the chunking settings changed count as updated."""

    added: int
    updated: int
    removed: int
    unchanged: int
    chunks: int
    skipped: tuple[SkippedFile, ...]


@dataclass(frozen=True)
class IndexStats:
    articles: int
    chunks: int
    model_id: str
    dimension: int
    built_at: str
    index_dir: str
    size_bytes: int


@dataclass(frozen=True)
class _Snapshot:
    """An immutable generation of the index; searches read one while a sync builds the next."""

    settings: IndexSettings
    articles: dict[str, StoredArticle]
    chunks: tuple[Chunk, ...]
    vectors: np.ndarray
    # One row per article, in ``articles`` order.
    title_vectors: np.ndarray
    article_rows: dict[str, int]
    dense: faiss.Index
    lexical: LexicalIndex
    # Per article, the set of its search tokens; and each token's IDF over articles.
    article_terms: dict[str, frozenset[str]]
    idf: dict[str, float]
    built_at: str
    size_bytes: int

    @classmethod
    def build(
        cls,
        *,
        settings: IndexSettings,
        articles: Sequence[StoredArticle],
        vectors: np.ndarray,
        title_vectors: np.ndarray,
        built_at: str,
        size_bytes: int,
    ) -> _Snapshot:
        chunks = tuple(chunk for article in articles for chunk in article.chunks)
        # The keyword index is rebuilt from the stored chunk texts rather than
        # persisted: it takes well under a second for thousands of chunks, and a
        # second copy of the corpus on disk could drift from the manifest.
        chunk_tokens = [lexical_tokens(chunk) for chunk in chunks]
        terms: dict[str, set[str]] = {}
        for chunk, tokens in zip(chunks, chunk_tokens, strict=True):
            terms.setdefault(chunk.article_id, set()).update(tokens)
        return cls(
            settings=settings,
            articles={article.article_id: article for article in articles},
            chunks=chunks,
            vectors=vectors,
            title_vectors=title_vectors,
            article_rows={article.article_id: row for row, article in enumerate(articles)},
            dense=build_faiss_index(vectors),
            lexical=LexicalIndex(chunk_tokens),
            article_terms={article_id: frozenset(tokens) for article_id, tokens in terms.items()},
            idf=_idf(terms.values()),
            built_at=built_at,
            size_bytes=size_bytes,
        )

    def term_coverage(self, query_terms: Sequence[str], article_id: str) -> float:
        """IDF-weighted share of the question's words that occur in the article (0..1).

        A word that occurs nowhere in the knowledge base gets the highest
        weight: a question about something the KB never mentions is covered badly.
        """
        if not query_terms:
            return 0.0
        unseen = _unseen_idf(len(self.articles))
        present = self.article_terms.get(article_id, frozenset())
        total = covered = 0.0
        for term in query_terms:
            weight = self.idf.get(term, unseen)
            total += weight
            if term in present:
                covered += weight
        return covered / total if total > 0 else 0.0


def _idf(article_terms: Iterable[set[str]]) -> dict[str, float]:
    counts: dict[str, int] = {}
    total = 0
    for terms in article_terms:
        total += 1
        for term in terms:
            counts[term] = counts.get(term, 0) + 1
    return {term: math.log(1.0 + (total - count + 0.5) / (count + 0.5)) for term, count in counts.items()}


def _unseen_idf(articles: int) -> float:
    return math.log(1.0 + (articles + 0.5) / 0.5)


def passage_text(chunk: Chunk) -> str:
    """What gets embedded for a chunk: its place in the article, then its text."""
    return "\n\n".join((" > ".join((chunk.title, *chunk.heading_path)), chunk.text))


def lexical_tokens(chunk: Chunk) -> list[str]:
    return tokenize(chunk.title) * _TITLE_REPEATS + tokenize(" ".join(chunk.heading_path)) + tokenize(chunk.text)


class KnowledgeIndex:
    """Chunks of knowledge-base articles with their vectors and keyword index, kept in ``index_dir``.

    Searches may run from any number of threads, also while a sync runs: a
    sync builds a new immutable snapshot and swaps it in once it is on disk.
    """

    def __init__(
        self,
        *,
        index_dir: Path,
        embedder: Embedder,
        max_chunk_chars: int = 1200,
        dense_weight: float = DENSE_WEIGHT,
        reuse_stored: bool = True,
    ) -> None:
        """``reuse_stored=False`` (a forced rebuild) re-embeds every article even when
        another process's index on disk already has vectors for it."""
        if not 0.0 <= dense_weight <= 1.0:
            raise ValueError(f"dense_weight must be between 0 and 1, got {dense_weight}")
        if max_chunk_chars < MIN_MAX_CHARS:
            raise ValueError(f"max_chunk_chars must be at least {MIN_MAX_CHARS}, got {max_chunk_chars}")
        self._index_dir = Path(index_dir)
        self._embedder = embedder
        self._dense_weight = dense_weight
        self._settings = IndexSettings(
            model_id=embedder.model_id,
            dimension=embedder.dimension,
            max_chunk_chars=max_chunk_chars,
            chunker_version=CHUNKER_VERSION,
            passage_version=PASSAGE_VERSION,
        )
        self._snapshot = _Snapshot.build(
            settings=self._settings,
            articles=(),
            vectors=np.zeros((0, embedder.dimension), dtype=np.float32),
            title_vectors=np.zeros((0, embedder.dimension), dtype=np.float32),
            built_at="",
            size_bytes=0,
        )
        self._persisted = False
        # Identity of the manifest the snapshot was read from or written as,
        # so reload_if_changed() notices another process's `kb index`.
        self._manifest_stamp: tuple[int, int, int] | None = None
        # Serialises writers only; searches never wait for a sync.
        self._sync_lock = threading.Lock()
        self._reuse_stored = reuse_stored

    @classmethod
    def load(
        cls,
        *,
        index_dir: Path,
        embedder: Embedder,
        max_chunk_chars: int = 1200,
        dense_weight: float = DENSE_WEIGHT,
    ) -> KnowledgeIndex:
        """Open a persisted index, refusing one built with a different embedding model."""
        index = cls(index_dir=index_dir, embedder=embedder, max_chunk_chars=max_chunk_chars, dense_weight=dense_weight)
        index._snapshot, index._manifest_stamp = index._read_snapshot()
        index._persisted = True
        logger.info(
            "Loaded knowledge index %s: %s articles, %s chunks", index_dir, len(index._snapshot.articles), len(index)
        )
        return index

    def reload_if_changed(self) -> bool:
        """Pick up an index another process (``tierzero kb index``) wrote since this one was read.

        The new generation is read and fully built aside, then swapped in with
        one reference assignment: a search running meanwhile finishes on the
        old snapshot, and no search ever sees a half-built index. A manifest
        that cannot be read is logged and the current snapshot stays.
        """
        stamp = self._current_stamp()
        if stamp is None or stamp == self._manifest_stamp:
            return False
        with self._sync_lock:
            if self._current_stamp() == self._manifest_stamp:
                return False
            try:
                snapshot, stamp = self._read_snapshot()
            except (CorruptIndexError, IndexNotFoundError) as exc:
                logger.warning("Keeping the current knowledge index; the new one cannot be used: %s", exc)
                self._manifest_stamp = stamp  # do not retry the same broken write every poll
                return False
            self._snapshot, self._manifest_stamp = snapshot, stamp
        logger.info("Reloaded knowledge index %s: %s chunks", self._index_dir, len(snapshot.chunks))
        return True

    def _read_snapshot(self) -> tuple[_Snapshot, tuple[int, int, int] | None]:
        stamp = self._current_stamp()
        stored = read_index(self._index_dir)
        embedder = self._embedder
        if (stored.settings.model_id, stored.settings.dimension) != (embedder.model_id, embedder.dimension):
            raise CorruptIndexError(
                f"The knowledge index in {self._index_dir} was built with embedding model "
                f"{stored.settings.model_id!r} ({stored.settings.dimension} dimensions), but the configured "
                f"model is {embedder.model_id!r} ({embedder.dimension} dimensions). "
                "Run `tierzero kb index` to rebuild it."
            )
        snapshot = _Snapshot.build(
            settings=stored.settings,
            articles=stored.articles,
            vectors=stored.vectors,
            title_vectors=stored.title_vectors,
            built_at=stored.built_at,
            size_bytes=stored.size_bytes,
        )
        return snapshot, stamp

    def _current_stamp(self) -> tuple[int, int, int] | None:
        # The manifest is replaced (os.replace), never rewritten in place, so a
        # new write always shows as a new inode or mtime.
        try:
            info = os.stat(self._index_dir / MANIFEST_NAME)
        except OSError:
            return None
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    @classmethod
    def open_or_create(
        cls,
        *,
        index_dir: Path,
        embedder: Embedder,
        max_chunk_chars: int = 1200,
        dense_weight: float = DENSE_WEIGHT,
    ) -> KnowledgeIndex:
        """Load the index, or start an empty one if none was built yet (a damaged one still raises)."""
        try:
            return cls.load(
                index_dir=index_dir, embedder=embedder, max_chunk_chars=max_chunk_chars, dense_weight=dense_weight
            )
        except IndexNotFoundError:
            return cls(
                index_dir=index_dir, embedder=embedder, max_chunk_chars=max_chunk_chars, dense_weight=dense_weight
            )

    def __len__(self) -> int:
        return len(self._snapshot.chunks)

    def sync(self, folder: Path, *, progress: bool = False) -> IndexReport:
        """Bring the index in line with the articles in ``folder`` and persist it."""
        articles, skipped = load_articles(folder)
        report = self.sync_articles(articles, progress=progress)
        return IndexReport(
            added=report.added,
            updated=report.updated,
            removed=report.removed,
            unchanged=report.unchanged,
            chunks=report.chunks,
            skipped=tuple(skipped),
        )

    def sync_articles(self, articles: Sequence[Article], *, progress: bool = False) -> IndexReport:
        """Index exactly ``articles``: embed only new or changed ones, drop the rest, persist."""
        _reject_duplicate_ids(articles)
        # The file lock keeps other processes (replicas, `tierzero kb index`) from writing meanwhile.
        with self._sync_lock, index_write_lock(self._index_dir):
            self._adopt_newer_generation()
            old = self._snapshot
            rechunk_all = old.settings != self._settings
            kept: dict[str, tuple[StoredArticle, np.ndarray, np.ndarray]] = {}
            pending: list[StoredArticle] = []
            added = updated = unchanged = 0
            old_rows = _rows_by_article(old)
            for article in articles:
                previous = old.articles.get(article.article_id)
                if previous is not None and previous.content_hash == article.content_hash and not rechunk_all:
                    kept[article.article_id] = (
                        previous,
                        old.vectors[old_rows[article.article_id]],
                        old.title_vectors[old.article_rows[article.article_id]],
                    )
                    unchanged += 1
                    continue
                if previous is None:
                    added += 1
                else:
                    updated += 1
                pending.append(
                    _stored(article, chunks=chunk_article(article, max_chars=self._settings.max_chunk_chars))
                )
            wanted = {article.article_id for article in articles}
            removed = sum(1 for article_id in old.articles if article_id not in wanted)

            embedded = self._embed_articles(pending, progress=progress)
            for stored, (vectors, title_vector) in zip(pending, embedded, strict=True):
                kept[stored.article_id] = (stored, vectors, title_vector)

            changed = bool(added or updated or removed or rechunk_all)
            if changed or not self._persisted:
                self._commit([kept[article_id] for article_id in sorted(kept)])
            report = IndexReport(
                added=added,
                updated=updated,
                removed=removed,
                unchanged=unchanged,
                chunks=len(self._snapshot.chunks),
                skipped=(),
            )
        logger.info(
            "Knowledge index synced: %s added, %s updated, %s removed, %s unchanged, %s chunks",
            report.added,
            report.updated,
            report.removed,
            report.unchanged,
            report.chunks,
        )
        return report

    def _adopt_newer_generation(self) -> None:
        """Start from what another process wrote since this index was read (called under the writer lock).

        Two replicas starting at once both find the index stale; the second to get
        the lock then sees the first one's generation and has nothing left to embed.
        """
        stamp = self._current_stamp()
        if not self._reuse_stored or stamp is None or stamp == self._manifest_stamp:
            return
        try:
            self._snapshot, self._manifest_stamp = self._read_snapshot()
        except (CorruptIndexError, IndexNotFoundError) as exc:
            logger.info("Not reusing the knowledge index on disk: %s", exc)
            return
        self._persisted = True

    def is_stale(self, folder: Path) -> bool:
        """Whether a sync would change anything; reads and hashes files but embeds nothing."""
        articles, _ = load_articles(folder)
        snapshot = self._snapshot
        if snapshot.settings != self._settings:
            return True
        current = {article.article_id: article.content_hash for article in articles}
        indexed = {article_id: stored.content_hash for article_id, stored in snapshot.articles.items()}
        return current != indexed

    def search(self, query: str, *, k: int = 5, mode: str = "hybrid") -> list[SearchHit]:
        """The ``k`` most relevant articles for ``query``, each represented by its best passage."""
        if mode not in SEARCH_MODES:
            raise ValueError(f"Unknown search mode {mode!r}; expected one of {', '.join(SEARCH_MODES)}")
        snapshot = self._snapshot
        if k <= 0 or not query.strip() or not snapshot.chunks:
            return []

        query_vector = self._embedder.encode([query])[0]
        query_tokens = tokenize(query)
        bm25 = snapshot.lexical.scores(query_tokens)
        identifiers = [token for token in query_tokens if is_identifier(token)]
        identifier_matches = snapshot.lexical.match_share(identifiers) if identifiers else None
        total = len(snapshot.chunks)
        depth = min(total, max(_MIN_CANDIDATES, k * _CANDIDATES_PER_RESULT))
        while True:
            hits = _rank(
                snapshot,
                query_vector=query_vector,
                query_tokens=query_tokens,
                bm25=bm25,
                identifier_matches=identifier_matches,
                depth=depth,
                mode=mode,
                dense_weight=self._dense_weight,
                limit=k,
            )
            if len(hits) >= k or depth >= total:
                return hits
            # Too few distinct articles among the candidates: look deeper.
            depth = min(total, depth * 4)

    def article_ids(self) -> list[str]:
        return list(self._snapshot.articles)

    @property
    def embedder(self) -> Embedder:
        """The model this index encodes with (routing reuses it to compare ticket texts)."""
        return self._embedder

    def stats(self) -> IndexStats:
        snapshot = self._snapshot
        return IndexStats(
            articles=len(snapshot.articles),
            chunks=len(snapshot.chunks),
            model_id=snapshot.settings.model_id,
            dimension=snapshot.settings.dimension,
            built_at=snapshot.built_at,
            index_dir=str(self._index_dir),
            size_bytes=snapshot.size_bytes,
        )

    def _embed_articles(
        self, articles: Sequence[StoredArticle], *, progress: bool
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per article: its chunk vectors and its title vector."""
        texts = [passage_text(chunk) for article in articles for chunk in article.chunks]
        texts += [article.title for article in articles]
        vectors = np.zeros((len(texts), self._settings.dimension), dtype=np.float32)
        with tqdm(total=len(texts), desc="Embedding", unit="chunk", disable=not progress or not texts) as bar:
            for start in range(0, len(texts), EMBED_BATCH_SIZE):
                batch = texts[start : start + EMBED_BATCH_SIZE]
                vectors[start : start + len(batch)] = self._embedder.encode(batch, batch_size=EMBED_BATCH_SIZE)
                bar.update(len(batch))
        per_article: list[tuple[np.ndarray, np.ndarray]] = []
        offset = 0
        titles_start = len(texts) - len(articles)
        for number, article in enumerate(articles):
            per_article.append((vectors[offset : offset + len(article.chunks)], vectors[titles_start + number]))
            offset += len(article.chunks)
        return per_article

    def _commit(self, entries: list[tuple[StoredArticle, np.ndarray, np.ndarray]]) -> None:
        articles = tuple(stored for stored, _, _ in entries)
        dimension = self._settings.dimension
        empty = np.zeros((0, dimension), dtype=np.float32)
        vectors = np.concatenate([vectors for _, vectors, _ in entries]).astype(np.float32) if entries else empty
        title_vectors = np.stack([title for _, _, title in entries]).astype(np.float32) if entries else empty
        built_at = datetime.now(UTC).isoformat(timespec="seconds")
        # Persist first: if the disk write fails, memory keeps matching the disk.
        size_bytes = write_index(
            self._index_dir,
            settings=self._settings,
            built_at=built_at,
            articles=articles,
            vectors=vectors,
            title_vectors=title_vectors,
        )
        self._snapshot = _Snapshot.build(
            settings=self._settings,
            articles=articles,
            vectors=vectors,
            title_vectors=title_vectors,
            built_at=built_at,
            size_bytes=size_bytes,
        )
        self._manifest_stamp = self._current_stamp()
        self._persisted = True


def _rank(
    snapshot: _Snapshot,
    *,
    query_vector: np.ndarray,
    query_tokens: Sequence[str],
    bm25: np.ndarray,
    identifier_matches: np.ndarray | None,
    depth: int,
    mode: str,
    dense_weight: float,
    limit: int,
) -> list[SearchHit]:
    candidates: set[int] = set()
    if mode in ("dense", "hybrid"):
        _, rows = snapshot.dense.search(query_vector.reshape(1, -1), depth)
        candidates.update(int(row) for row in rows[0] if row >= 0)
    if mode in ("lexical", "hybrid"):
        matching = np.flatnonzero(bm25 > 0)
        if len(matching) > depth:
            matching = matching[np.argpartition(-bm25[matching], depth - 1)[:depth]]
        candidates.update(int(row) for row in matching)
    if not candidates:
        return []

    rows = np.fromiter(sorted(candidates), dtype=np.int64)
    # Exact cosines for every candidate, including keyword-only ones the
    # dense search did not return (same numbers FAISS would compute).
    dense = snapshot.vectors[rows] @ query_vector
    lexical = normalise_by_max(bm25[rows])
    if mode == "dense":
        scores = dense
    elif mode == "lexical":
        scores = lexical
    else:
        matches = identifier_matches[rows] if identifier_matches is not None else None
        scores = fuse(dense, lexical, dense_weight=dense_weight, identifier_matches=matches)

    # An article is as relevant as its best chunk.
    best: dict[str, int] = {}
    for position in np.argsort(-scores, kind="stable"):
        chunk = snapshot.chunks[rows[position]]
        best.setdefault(chunk.article_id, int(position))
        if len(best) == limit:
            break
    hits = []
    query_terms = list(dict.fromkeys(query_tokens))
    for article_id, position in best.items():
        row = int(rows[position])
        chunk = snapshot.chunks[row]
        title_vector = snapshot.title_vectors[snapshot.article_rows[article_id]]
        hits.append(
            SearchHit(
                article_id=article_id,
                title=chunk.title,
                url=chunk.url,
                source_path=chunk.source_path,
                heading_path=chunk.heading_path,
                passage=chunk.text,
                score=float(scores[position]),
                dense_score=float(dense[position]),
                lexical_score=float(lexical[position]),
                continuation=_continuation(snapshot.chunks, row),
                title_score=float(title_vector @ query_vector),
                term_coverage=snapshot.term_coverage(query_terms, article_id),
                identifier_match=float(identifier_matches[row]) if identifier_matches is not None else 0.0,
            )
        )
    return hits


def _continuation(chunks: Sequence[Chunk], row: int) -> str:
    """The chunks after ``row`` in the same article (articles are stored contiguously)."""
    parts: list[str] = []
    heading = chunks[row].heading_path
    for chunk in itertools.takewhile(
        lambda c: c.article_id == chunks[row].article_id, chunks[row + 1 : row + 1 + _CONTINUATION_CHUNKS]
    ):
        if chunk.heading_path != heading and chunk.heading_path:
            parts.append(f"{chunk.heading_path[-1]}:")
        heading = chunk.heading_path
        parts.append(chunk.text)
    return "\n\n".join(parts)


def _rows_by_article(snapshot: _Snapshot) -> dict[str, slice]:
    rows: dict[str, slice] = {}
    start = 0
    for article_id, stored in snapshot.articles.items():
        rows[article_id] = slice(start, start + len(stored.chunks))
        start += len(stored.chunks)
    return rows


def _stored(article: Article, *, chunks: list[Chunk]) -> StoredArticle:
    return StoredArticle(
        article_id=article.article_id,
        title=article.title,
        url=article.url,
        source_path=article.source_path,
        tags=article.tags,
        content_hash=article.content_hash,
        chunks=tuple(chunks),
    )


def _reject_duplicate_ids(articles: Sequence[Article]) -> None:
    seen: set[str] = set()
    for article in articles:
        if article.article_id in seen:
            raise ValueError(f"Two articles share the id {article.article_id!r}; article ids must be unique")
        seen.add(article.article_id)
