"""Convert the answer-or-escalate development set into the benchmark's format.

    python -m benchmarks.convert_answer_or_escalate [--source DIR] --out DIR

Writes ``kb.jsonl`` (``{"doc_id", "title", "text"}``) and ``queries.jsonl``
(``{"id", "text", "label": "answer"|"escalate", "doc_id", "split"}``).

The source has only development queries, so they are split in two: half
calibrates (``split: "dev"``), the other half reports (``split: "test"``).
The split is deterministic, by *topic* and stratified by kind: every
question about the same thread (its gold ``doc_id``, or for an in-domain
escalation the held-out thread it paraphrases) lands in the same half, so
the report half asks about articles and missing topics the calibration never
saw; within each kind (answerable, in-domain and out-of-domain escalation)
the topics, ordered by a hash of their id, alternate between the halves, so
both halves have the same mix of easy and hard questions.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.convert_stackfaq import REPO_ROOT, thread_to_doc
from benchmarks.jsonl import DataError, read_jsonl, write_jsonl

DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "eval" / "answer_or_escalate"


def topic_of(row: dict[str, Any]) -> str:
    return str(row.get("doc_id") or row.get("heldout_doc_id") or row["id"])


def assign_splits(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Topic -> "dev" | "test", alternating within each kind in hash order."""
    topics_by_kind: dict[str, set[str]] = {}
    for row in rows:
        topics_by_kind.setdefault(str(row["label"]), set()).add(topic_of(row))
    splits: dict[str, str] = {}
    for topics in topics_by_kind.values():
        ordered = sorted(topics, key=lambda topic: hashlib.sha256(topic.encode()).hexdigest())
        for position, topic in enumerate(ordered):
            splits.setdefault(topic, "dev" if position % 2 == 0 else "test")
    return splits


def convert_query(row: dict[str, Any], split: str) -> dict[str, Any]:
    label = str(row["label"])
    answerable = label == "answer"
    return {
        "id": str(row["id"]),
        "text": str(row["text"]),
        "label": "answer" if answerable else "escalate",
        "doc_id": str(row["doc_id"]) if answerable else None,
        "split": split,
        # Kept for per-kind escalation recall; the benchmark ignores unknown keys.
        "kind": label,
    }


def convert(source: Path, out: Path) -> tuple[int, int]:
    kb = [thread_to_doc(row) for row in read_jsonl(source / "kb.jsonl")]
    rows = list(read_jsonl(source / "dev_queries.jsonl"))
    splits = assign_splits(rows)
    queries = [convert_query(row, splits[topic_of(row)]) for row in rows]
    write_jsonl(out / "kb.jsonl", kb)
    write_jsonl(out / "queries.jsonl", queries)
    return len(kb), len(queries)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.convert_answer_or_escalate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help=f"default {DEFAULT_SOURCE}")
    parser.add_argument("--out", type=Path, required=True, help="folder for kb.jsonl and queries.jsonl")
    args = parser.parse_args(argv)
    try:
        docs, queries = convert(args.source, args.out)
    except (DataError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {docs} articles and {queries} queries to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
