"""Retrieval quality and speed of the production knowledge index on a labelled corpus.

    python -m benchmarks.retrieval --corpus C.jsonl --queries Q.jsonl --json
    python -m benchmarks.retrieval --stackfaq [DIR] --json [--sweep]
    python -m benchmarks.retrieval ... --synthetic-chunks 10000   # query speed at that index size

Corpus lines are ``{"doc_id", "title", "text"}``; query lines are
``{"query_id", "text", "doc_ids": [...]}`` with the relevant doc ids. With
``--stackfaq`` the StackFAQ evaluation set is read in its own format (each
document's title and answers become one article). The corpus is indexed by
the production code path - ``KnowledgeIndex.sync_articles`` with the bundled
model, in a temporary folder - and every query is searched in hybrid,
dense-only and BM25-only mode. ``--sweep`` also scores the hybrid ranking
for a range of dense weights, reusing the index and the query vectors.
``--synthetic-chunks N`` pads the index with distractor articles (sentences
of the corpus recombined at random, deterministically) until it holds at
least N chunks, to measure query latency at that size; the quality numbers
are then measured against the distractors too.

Measured on StackFAQ (125 articles -> 374 chunks, 1249 queries, chunks of
at most 1200 characters, dense weight 0.9):

    mode     R@1     R@5     MRR@10
    hybrid   0.9400  0.9984  0.9664
    dense    0.9359  0.9984  0.9633
    bm25     0.7014  0.9271  0.7948

(For comparison, whole articles as single texts: BM25 0.773, dense 0.942,
plain RRF 0.880.) Queries are timed on one thread (``--query-threads 1``,
encoder included): p50 8.8 ms / p95 12 ms on StackFAQ, and p50 12.8 ms /
p95 14.8 ms with ``--synthetic-chunks 10000`` (10,249 chunks), nearly all of
it in the embedding model (the search itself takes ~2 ms at that size).
Timings depend heavily on what else the 2-core machine is doing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.jsonl import DataError, read_jsonl
from kb_index import Article, Embedder, KnowledgeIndex, ModelLoadError, load_embedder
from kb_index.fusion import DENSE_WEIGHT

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STACKFAQ_DIR = REPO_ROOT.parent / "shared" / "eval" / "retrieval" / "stackfaq"
CUTOFF = 10
SWEEP_WEIGHTS = tuple(round(0.05 * step, 2) for step in range(21))
MODES = {"hybrid": "hybrid", "dense": "dense", "bm25": "lexical"}


class BenchmarkError(DataError):
    """Bad input data or options; reported as one line, without a traceback."""


@dataclass(frozen=True)
class Query:
    query_id: str
    text: str
    relevant: frozenset[str]


@dataclass(frozen=True)
class Quality:
    recall_at_1: float
    recall_at_5: float
    mrr_at_10: float

    def as_json(self) -> dict[str, float]:
        return {
            "recall@1": round(self.recall_at_1, 4),
            "recall@5": round(self.recall_at_5, 4),
            "mrr@10": round(self.mrr_at_10, 4),
        }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        articles, queries, corpus_name = _load_dataset(args)
        if args.synthetic_chunks:
            articles = [*articles, *synthetic_articles(articles, args.synthetic_chunks)]
        result = run(
            articles=articles,
            queries=queries,
            max_chunk_chars=args.max_chunk_chars,
            sweep=args.sweep,
            progress=sys.stderr.isatty(),
            query_threads=args.query_threads,
        )
    except (DataError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = {"corpus": corpus_name, **result}
    if args.json:
        print(json.dumps(result))
    else:
        _print_table(result)
    return 0


def run(
    *,
    articles: Sequence[Article],
    queries: Sequence[Query],
    max_chunk_chars: int = 1200,
    sweep: bool = False,
    progress: bool = False,
    embedder: Embedder | None = None,
    query_threads: int = 0,
) -> dict[str, Any]:
    """Index ``articles`` and score ``queries``; ``embedder`` defaults to the bundled model."""
    started = time.perf_counter()
    embedder = _QueryCachingEmbedder(embedder or load_embedder())
    model_load_seconds = time.perf_counter() - started

    with tempfile.TemporaryDirectory(prefix="tierzero-bench-") as temp:
        index_dir = Path(temp)
        index = KnowledgeIndex(index_dir=index_dir, embedder=embedder, max_chunk_chars=max_chunk_chars)
        started = time.perf_counter()
        index.sync_articles(articles, progress=progress)
        index_seconds = time.perf_counter() - started
        if query_threads:
            limit_threads(query_threads)

        quality: dict[str, Quality] = {}
        latencies_ms: list[float] = []
        for name, mode in MODES.items():
            # Only hybrid is timed; it is what the bot runs. It goes first, so
            # its query embeddings are computed (not cached) inside the timing.
            timings = latencies_ms if name == "hybrid" else None
            quality[name] = _evaluate(index, queries, mode=mode, latencies_ms=timings)

        result: dict[str, Any] = {
            **quality["hybrid"].as_json(),
            "n_queries": len(queries),
            "n_articles": len(articles),
            "n_chunks": len(index),
            "index_seconds": round(index_seconds, 3),
            "query_ms_p50": round(float(np.percentile(latencies_ms, 50)), 2),
            "query_ms_p95": round(float(np.percentile(latencies_ms, 95)), 2),
            "model_load_seconds": round(model_load_seconds, 3),
            "model_id": embedder.model_id,
            "dense_weight": DENSE_WEIGHT,
            "max_chunk_chars": max_chunk_chars,
            "query_threads": query_threads or "all",
            "dense": quality["dense"].as_json(),
            "bm25": quality["bm25"].as_json(),
        }
        if sweep:
            result["sweep"] = _sweep(index_dir, embedder, queries, max_chunk_chars=max_chunk_chars)
    return result


def limit_threads(threads: int) -> None:
    """Run queries on ``threads`` CPU threads (indexing before it may use every core)."""
    import faiss
    import torch

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def synthetic_articles(articles: Sequence[Article], chunks: int, *, seed: int = 7) -> list[Article]:
    """Short distractor articles (one chunk each) made of the corpus's own sentences, for speed tests."""
    sentences = [s.strip() for a in articles for s in a.body.replace("\n", " ").split(". ") if len(s.strip()) > 20]
    if not sentences:
        raise BenchmarkError("the corpus has no sentences to build synthetic chunks from")
    rng = np.random.default_rng(seed)
    padded = []
    for number in range(max(0, chunks - len(articles))):
        picked = rng.choice(len(sentences), size=int(rng.integers(2, 6)))
        body = ". ".join(sentences[i] for i in picked)[:900]
        title = " ".join(body.split()[:6])
        padded.append(_article(doc_id=f"synthetic-{number:05d}", title=title, text=body))
    return padded


def _evaluate(
    index: KnowledgeIndex, queries: Sequence[Query], *, mode: str, latencies_ms: list[float] | None = None
) -> Quality:
    recall_1 = recall_5 = reciprocal_ranks = 0.0
    for query in queries:
        started = time.perf_counter()
        hits = index.search(query.text, k=CUTOFF, mode=mode)
        if latencies_ms is not None:
            latencies_ms.append((time.perf_counter() - started) * 1000)
        ranked = [hit.article_id for hit in hits]
        recall_1 += len(query.relevant.intersection(ranked[:1])) / len(query.relevant)
        recall_5 += len(query.relevant.intersection(ranked[:5])) / len(query.relevant)
        reciprocal_ranks += next((1 / rank for rank, doc in enumerate(ranked, 1) if doc in query.relevant), 0.0)
    count = max(len(queries), 1)
    return Quality(recall_1 / count, recall_5 / count, reciprocal_ranks / count)


def _sweep(
    index_dir: Path, embedder: Embedder, queries: Sequence[Query], *, max_chunk_chars: int
) -> list[dict[str, Any]]:
    """Hybrid quality per dense weight, also on the even and odd halves of the queries.

    The halves show whether a weight picked on one half holds on the other,
    i.e. whether the choice is a trend or noise.
    """
    halves = {"even": queries[0::2], "odd": queries[1::2]}
    rows = []
    for weight in SWEEP_WEIGHTS:
        index = KnowledgeIndex.load(
            index_dir=index_dir, embedder=embedder, max_chunk_chars=max_chunk_chars, dense_weight=weight
        )
        row: dict[str, Any] = {"dense_weight": weight, **_evaluate(index, queries, mode="hybrid").as_json()}
        for name, half in halves.items():
            row[f"mrr@10_{name}"] = round(_evaluate(index, half, mode="hybrid").mrr_at_10, 4)
        rows.append(row)
    return rows


class _QueryCachingEmbedder:
    """Remembers single-text (query) encodings, so re-searching the same queries costs no model time."""

    def __init__(self, inner: Embedder) -> None:
        self._inner = inner
        self._encode_one = lru_cache(maxsize=None)(self._encode_uncached)

    @property
    def dimension(self) -> int:
        return self._inner.dimension

    @property
    def model_id(self) -> str:
        return self._inner.model_id

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        if len(texts) == 1:
            return self._encode_one(texts[0]).copy()
        return self._inner.encode(texts, batch_size=batch_size)

    def _encode_uncached(self, text: str) -> np.ndarray:
        return self._inner.encode([text])


def _load_dataset(args: argparse.Namespace) -> tuple[list[Article], list[Query], str]:
    if args.stackfaq is not None:
        folder = Path(args.stackfaq)
        corpus_path, queries_path = folder / "eval_corpus.jsonl", folder / "eval_queries.jsonl"
        if not corpus_path.is_file() or not queries_path.is_file():
            raise BenchmarkError(
                f"StackFAQ data not found in {folder} (expected eval_corpus.jsonl and eval_queries.jsonl); "
                "pass its folder with --stackfaq DIR"
            )
        articles = [
            _article(
                doc_id=_field(row, "doc_id", corpus_path),
                title=_field(row, "title", corpus_path),
                text="\n\n".join(str(answer).strip() for answer in row.get("answers", [])),
            )
            for row in read_jsonl(corpus_path)
        ]
        queries = [
            Query(
                query_id=_field(row, "query_id", queries_path),
                text=_field(row, "text", queries_path),
                relevant=frozenset({_field(row, "doc_id", queries_path)}),
            )
            for row in read_jsonl(queries_path)
        ]
        name = "stackfaq"
    else:
        if args.corpus is None or args.queries is None:
            raise BenchmarkError("pass --corpus and --queries, or --stackfaq")
        articles = [
            _article(
                doc_id=_field(row, "doc_id", args.corpus),
                title=_field(row, "title", args.corpus),
                text=_field(row, "text", args.corpus),
            )
            for row in read_jsonl(args.corpus)
        ]
        queries = [
            Query(
                query_id=_field(row, "query_id", args.queries),
                text=_field(row, "text", args.queries),
                relevant=frozenset(str(doc_id) for doc_id in row.get("doc_ids", [])),
            )
            for row in read_jsonl(args.queries)
        ]
        name = str(args.corpus)

    unjudged = [query.query_id for query in queries if not query.relevant]
    if unjudged:
        logger.warning("Ignoring %s queries without relevant doc_ids, e.g. %s", len(unjudged), unjudged[0])
        queries = [query for query in queries if query.relevant]
    if not articles or not queries:
        raise BenchmarkError("the corpus and the queries must each have at least one entry")
    return articles, queries, name


def _article(*, doc_id: str, title: str, text: str) -> Article:
    # Indexed as Markdown, like the articles of a real knowledge base.
    return Article(
        article_id=doc_id,
        title=title,
        url=None,
        source_path=f"{doc_id}.md",
        tags=(),
        body=text,
        content_hash=hashlib.sha256(f"{title}\n{text}".encode()).hexdigest(),
    )


def _field(row: dict[str, Any], name: str, path: Path) -> str:
    value = row.get(name)
    if value is None:
        raise BenchmarkError(f"{path}: an entry has no {name!r} field")
    return str(value)


def _print_table(result: dict[str, Any]) -> None:
    print(
        f"corpus {result['corpus']}: {result['n_articles']} articles, {result['n_chunks']} chunks, "
        f"{result['n_queries']} queries; indexed in {result['index_seconds']} s"
    )
    print(f"{'mode':<8} {'R@1':>7} {'R@5':>7} {'MRR@10':>7}")
    for name, metrics in (("hybrid", result), ("dense", result["dense"]), ("bm25", result["bm25"])):
        print(f"{name:<8} {metrics['recall@1']:>7.4f} {metrics['recall@5']:>7.4f} {metrics['mrr@10']:>7.4f}")
    print(f"hybrid query latency: p50 {result['query_ms_p50']} ms, p95 {result['query_ms_p95']} ms")
    for row in result.get("sweep", []):
        print(
            f"  dense_weight {row['dense_weight']:.2f}: MRR@10 {row['mrr@10']:.4f} "
            f"(even {row['mrr@10_even']:.4f}, odd {row['mrr@10_odd']:.4f})"
        )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.retrieval", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, help="JSONL of {doc_id, title, text}")
    parser.add_argument("--queries", type=Path, help="JSONL of {query_id, text, doc_ids}")
    parser.add_argument(
        "--stackfaq",
        nargs="?",
        const=DEFAULT_STACKFAQ_DIR,
        type=Path,
        metavar="DIR",
        help=f"use the StackFAQ eval set (default folder {DEFAULT_STACKFAQ_DIR})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--sweep", action="store_true", help="also score hybrid ranking for dense weights 0..1")
    parser.add_argument("--max-chunk-chars", type=int, default=1200)
    parser.add_argument(
        "--query-threads",
        type=int,
        default=1,
        metavar="N",
        help="CPU threads for the timed queries (default 1: one core; 0: all); indexing uses every core",
    )
    parser.add_argument(
        "--synthetic-chunks", type=int, default=0, metavar="N", help="pad the index to at least N chunks (speed)"
    )
    args = parser.parse_args(argv)
    if args.stackfaq is not None and (args.corpus or args.queries):
        parser.error("--stackfaq replaces --corpus/--queries; pass one or the other")
    return args


if __name__ == "__main__":
    sys.exit(main())
