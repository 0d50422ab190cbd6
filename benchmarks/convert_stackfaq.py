"""Convert the StackFAQ development set into the retrieval benchmark's format.

    python -m benchmarks.convert_stackfaq [--source DIR] --out DIR

Writes ``corpus.jsonl`` (``{"doc_id", "title", "text"}``: each thread's title
with its answers as the article text) and ``queries.jsonl``
(``{"query_id", "text", "doc_ids"}``), the format of
``python -m benchmarks.retrieval --corpus --queries``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.jsonl import DataError, read_jsonl, write_jsonl

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "eval" / "retrieval" / "stackfaq"


def thread_to_doc(row: dict[str, Any]) -> dict[str, str]:
    """A StackFAQ thread as a KB article: the title, and every answer as a paragraph."""
    answers = row.get("answers") or []
    return {
        "doc_id": str(row["doc_id"]),
        "title": str(row["title"]),
        "text": "\n\n".join(str(answer).strip() for answer in answers),
    }


def convert(source: Path, out: Path) -> tuple[int, int]:
    corpus = [thread_to_doc(row) for row in read_jsonl(source / "eval_corpus.jsonl")]
    queries = [
        {"query_id": str(row["query_id"]), "text": str(row["text"]), "doc_ids": [str(row["doc_id"])]}
        for row in read_jsonl(source / "eval_queries.jsonl")
    ]
    write_jsonl(out / "corpus.jsonl", corpus)
    write_jsonl(out / "queries.jsonl", queries)
    return len(corpus), len(queries)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.convert_stackfaq", description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help=f"default {DEFAULT_SOURCE}")
    parser.add_argument("--out", type=Path, required=True, help="folder for corpus.jsonl and queries.jsonl")
    args = parser.parse_args(argv)
    try:
        docs, queries = convert(args.source, args.out)
    except (DataError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {docs} documents and {queries} queries to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
