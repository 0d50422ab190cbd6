"""The answer-or-escalate benchmark and the converters, on tiny data with the hashing embedder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import answer_or_escalate, convert_answer_or_escalate
from kb_index.documents import Article

TOPICS = ["vpn gateway", "printer toner", "password reset", "laptop battery", "wifi guest", "teams audio"]


def kb() -> list[Article]:
    from benchmarks.retrieval import _article

    return [
        _article(doc_id=f"d{n}", title=topic, text=f"How to fix {topic} problems.") for n, topic in enumerate(TOPICS)
    ]


def queries() -> list[answer_or_escalate.LabelledQuery]:
    rows = []
    for repeat in range(8):
        split = "dev" if repeat < 5 else "test"
        for n, topic in enumerate(TOPICS):
            rows.append(
                answer_or_escalate.LabelledQuery(f"a{repeat}{n}", f"{topic} help", True, f"d{n}", split, "answer")
            )
        rows.append(answer_or_escalate.LabelledQuery(f"e{repeat}", f"order pizza {repeat}", False, None, split, "ood"))
    return rows


def test_benchmark_calibrates_on_dev_and_reports_test_with_the_baseline(embedder) -> None:
    result, calibration = answer_or_escalate.run(kb=kb(), queries=queries(), max_wrong=0.2, embedder=embedder)
    for key in ("coverage", "wrong_rate", "escalation_recall", "auroc", "threshold", "query_ms_p50"):
        assert isinstance(result[key], float)
    assert set(result["baseline"]) >= {"coverage", "wrong_rate", "escalation_recall", "auroc"}
    assert result["n_dev"] == 35 and result["n_test"] == 21
    assert "escalation_recall_ood" in result
    assert calibration["model"]["features"] and 0 <= calibration["threshold"] <= 1


def test_queries_without_both_splits_are_refused(embedder) -> None:
    only_dev = [q for q in queries() if q.split == "dev"]
    with pytest.raises(answer_or_escalate.BenchmarkError, match="split"):
        answer_or_escalate.run(kb=kb(), queries=only_dev, max_wrong=0.05, embedder=embedder)


def test_converter_splits_by_topic_and_keeps_the_mix(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "kb.jsonl").write_text(
        "\n".join(json.dumps({"doc_id": f"d{n}", "title": f"T{n}", "answers": [f"A{n}", "B"]}) for n in range(8))
    )
    rows = [{"id": f"q{n}{r}", "text": "x", "label": "answer", "doc_id": f"d{n}"} for n in range(8) for r in range(3)]
    rows += [{"id": f"o{n}", "text": "y", "label": "escalate_out_of_domain", "doc_id": None} for n in range(10)]
    (source / "dev_queries.jsonl").write_text("\n".join(json.dumps(row) for row in rows))

    convert_answer_or_escalate.convert(source, tmp_path / "out")
    converted = [json.loads(line) for line in (tmp_path / "out" / "queries.jsonl").read_text().splitlines()]
    splits_per_doc: dict[str, set[str]] = {}
    for row in converted:
        if row["doc_id"]:
            splits_per_doc.setdefault(row["doc_id"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in splits_per_doc.values())  # a topic never straddles the halves
    escalations = [row for row in converted if row["label"] == "escalate"]
    assert sum(row["split"] == "dev" for row in escalations) == 5  # kinds alternate between halves
    article = json.loads((tmp_path / "out" / "kb.jsonl").read_text().splitlines()[0])
    assert article == {"doc_id": "d0", "title": "T0", "text": "A0\n\nB"}
