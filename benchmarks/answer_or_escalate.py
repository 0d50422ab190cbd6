"""Should the bot answer or hand over? Coverage at a target wrong-answer rate.

    python -m benchmarks.answer_or_escalate --kb KB.jsonl --queries Q.jsonl --max-wrong 0.05 --json

KB lines are ``{"doc_id", "title", "text"}``; query lines are
``{"id", "text", "label": "answer"|"escalate", "doc_id", "split": "dev"|"test"}``.
The KB is indexed by the production code path (``KnowledgeIndex`` with the
bundled model) and every question is searched as the agent searches it. The
confidence model and its threshold are calibrated on ``split == "dev"`` only
(``bot.confidence.calibrate``, exactly what ``tierzero kb calibrate`` runs) and
reported on ``split == "test"``:

* ``coverage`` - answerable test questions answered with the right article / answerable test questions;
* ``wrong_rate`` - wrong answers (wrong article, or any answer to an escalate question) / all answers;
* ``escalation_recall`` - escalate test questions not answered / escalate test questions
  (also per ``kind`` when the query lines carry one);
* ``auroc`` - of the confidence score for "the answer would be right".

``baseline`` holds the same numbers for the plain top-1 cosine of dense-only
search as the confidence, with its threshold chosen on the dev split by the
same rule, measured in the same run. ``--model-out FILE`` saves the
calibration (the format ``agent.confidence_model`` reads).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.jsonl import DataError, read_jsonl
from benchmarks.retrieval import BenchmarkError, _article, _field, limit_threads
from bot.confidence import CalibrationError, auroc, calibrate, choose_threshold, features
from kb_index import Embedder, KnowledgeIndex, ModelLoadError, load_embedder

logger = logging.getLogger(__name__)

SEARCH_DEPTH = 5  # what the agent asks the retriever for


@dataclass(frozen=True)
class LabelledQuery:
    query_id: str
    text: str
    answerable: bool
    doc_id: str | None
    split: str
    kind: str


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        kb = [
            _article(
                doc_id=_field(row, "doc_id", args.kb),
                title=_field(row, "title", args.kb),
                text=_field(row, "text", args.kb),
            )
            for row in read_jsonl(args.kb)
        ]
        queries = [_query(row, args.queries) for row in read_jsonl(args.queries)]
        result, calibration = run(kb=kb, queries=queries, max_wrong=args.max_wrong, query_threads=1)
    except (DataError, ModelLoadError, CalibrationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.model_out:
        args.model_out.write_text(json.dumps(calibration, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(result))
    else:
        _print_table(result)
    return 0


def run(
    *,
    kb: Sequence[Any],
    queries: Sequence[LabelledQuery],
    max_wrong: float,
    embedder: Embedder | None = None,
    query_threads: int = 0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Index ``kb``, calibrate on the dev queries, report on the test queries."""
    dev = [q for q in queries if q.split == "dev"]
    test = [q for q in queries if q.split == "test"]
    if not dev or not test:
        raise BenchmarkError("the queries need both split 'dev' (to calibrate) and split 'test' (to report)")
    embedder = embedder or load_embedder()
    with tempfile.TemporaryDirectory(prefix="tierzero-aoe-") as temp:
        index = KnowledgeIndex(index_dir=Path(temp), embedder=embedder)
        started = time.perf_counter()
        index.sync_articles(kb)
        index_seconds = time.perf_counter() - started
        if query_threads:
            limit_threads(query_threads)  # the timed searches run on one core, like one bot worker
        latencies: list[float] = []
        dev_rows, dev_correct = _evidence(index, dev, latencies)
        test_rows, test_correct = _evidence(index, test, latencies)
        dev_cos, dev_cos_correct = _baseline(index, dev)
        test_cos, test_cos_correct = _baseline(index, test)

    dev_answerable = np.array([q.answerable for q in dev])
    calibration = calibrate(dev_rows, dev_correct, answerable=dev_answerable, max_wrong=max_wrong)
    probabilities = calibration.model.probabilities(test_rows)
    result: dict[str, Any] = {
        **_report(test, probabilities, test_correct, calibration.threshold),
        "threshold": round(calibration.threshold, 4),
        "max_wrong": max_wrong,
        "n_dev": len(dev),
        "n_test": len(test),
        "n_articles": len(kb),
        "index_seconds": round(index_seconds, 3),
        "query_ms_p50": round(float(np.percentile(latencies, 50)), 2),
        "query_ms_p95": round(float(np.percentile(latencies, 95)), 2),
        "dev_expected_coverage": round(calibration.expected_coverage, 4),
        "dev_expected_wrong_rate": round(calibration.expected_wrong_rate, 4),
    }
    baseline_threshold = choose_threshold(dev_cos, dev_cos_correct, max_wrong=max_wrong)
    result["baseline"] = {
        **_report(test, test_cos, test_cos_correct, baseline_threshold),
        "threshold": round(baseline_threshold, 4),
    }
    return result, calibration.to_json()


def _evidence(
    index: KnowledgeIndex, queries: Sequence[LabelledQuery], latencies: list[float]
) -> tuple[np.ndarray, np.ndarray]:
    rows, correct = [], []
    for query in queries:
        started = time.perf_counter()
        hits = index.search(query.text, k=SEARCH_DEPTH)
        row = features(hits) if hits else np.zeros(6)
        latencies.append((time.perf_counter() - started) * 1000)
        rows.append(row)
        correct.append(bool(hits) and query.answerable and hits[0].article_id == query.doc_id)
    return np.array(rows), np.array(correct)


def _baseline(index: KnowledgeIndex, queries: Sequence[LabelledQuery]) -> tuple[np.ndarray, np.ndarray]:
    scores, correct = [], []
    for query in queries:
        hits = index.search(query.text, k=1, mode="dense")
        scores.append(hits[0].dense_score if hits else -1.0)
        correct.append(bool(hits) and query.answerable and hits[0].article_id == query.doc_id)
    return np.array(scores), np.array(correct)


def _report(
    queries: Sequence[LabelledQuery], confidence: np.ndarray, correct: np.ndarray, threshold: float
) -> dict[str, Any]:
    answerable = np.array([q.answerable for q in queries])
    answered = confidence >= threshold
    escalate = ~answerable
    report: dict[str, Any] = {
        "coverage": _ratio((answered & correct).sum(), answerable.sum()),
        "wrong_rate": _ratio((answered & ~correct).sum(), answered.sum()),
        "escalation_recall": _ratio((escalate & ~answered).sum(), escalate.sum()),
        "auroc": round(auroc(confidence, correct), 4),
        "answered": int(answered.sum()),
    }
    kinds = sorted({q.kind for q in queries if not q.answerable and q.kind != "escalate"})
    for kind in kinds:
        of_kind = np.array([q.kind == kind for q in queries])
        report[f"escalation_recall_{kind}"] = _ratio((of_kind & ~answered).sum(), of_kind.sum())
    return report


def _ratio(numerator: Any, denominator: Any) -> float:
    return round(float(numerator) / float(denominator), 4) if denominator else 0.0


def _query(row: dict[str, Any], path: Path) -> LabelledQuery:
    label = _field(row, "label", path)
    if label not in ("answer", "escalate"):
        raise BenchmarkError(f"{path}: label must be 'answer' or 'escalate', got {label!r}")
    split = _field(row, "split", path)
    if split not in ("dev", "test"):
        raise BenchmarkError(f"{path}: split must be 'dev' or 'test', got {split!r}")
    doc_id = row.get("doc_id")
    if label == "answer" and not doc_id:
        raise BenchmarkError(f"{path}: question {row.get('id')!r} is labelled answer but has no doc_id")
    return LabelledQuery(
        query_id=_field(row, "id", path),
        text=_field(row, "text", path),
        answerable=label == "answer",
        doc_id=str(doc_id) if doc_id else None,
        split=split,
        kind=str(row.get("kind") or label),
    )


def _print_table(result: dict[str, Any]) -> None:
    print(f"{result['n_dev']} dev / {result['n_test']} test questions, {result['n_articles']} articles")
    print(f"{'':<10} {'coverage':>9} {'wrong':>7} {'esc.rec':>8} {'AUROC':>7} {'thresh':>7}")
    for name, row in (("evidence", result), ("cosine", result["baseline"])):
        print(
            f"{name:<10} {row['coverage']:>9.3f} {row['wrong_rate']:>7.3f} {row['escalation_recall']:>8.3f} "
            f"{row['auroc']:>7.3f} {row['threshold']:>7.3f}"
        )
    print(f"query latency: p50 {result['query_ms_p50']} ms, p95 {result['query_ms_p95']} ms")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.answer_or_escalate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--kb", type=Path, required=True, help="JSONL of {doc_id, title, text}")
    parser.add_argument("--queries", type=Path, required=True, help="JSONL of {id, text, label, doc_id, split}")
    parser.add_argument("--max-wrong", type=float, default=0.05, help="target wrong-answer rate (default 0.05)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--model-out", type=Path, help="also save the fitted calibration as JSON")
    args = parser.parse_args(argv)
    if not 0.0 < args.max_wrong < 1.0:
        parser.error("--max-wrong must be between 0 and 1")
    return args


if __name__ == "__main__":
    sys.exit(main())
