from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import retrieval

CORPUS = [
    {
        "doc_id": "vpn",
        "title": "VPN keeps disconnecting",
        "text": "Switch the GlobalProtect gateway to the nearest region.",
    },
    {"doc_id": "password", "title": "Reset your password", "text": "Use the portal and choose Forgot password."},
    {"doc_id": "printer", "title": "Printer is offline", "text": "Remove the printer and add it again."},
]
QUERIES = [
    {"query_id": "q1", "text": "vpn gateway region", "doc_ids": ["vpn"]},
    {"query_id": "q2", "text": "forgot password portal", "doc_ids": ["password"]},
    {"query_id": "q3", "text": "printer offline", "doc_ids": ["printer"]},
    {"query_id": "q4", "text": "vpn and printer", "doc_ids": ["vpn", "printer"]},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> list[str]:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", CORPUS)
    queries = write_jsonl(tmp_path / "queries.jsonl", QUERIES)
    return ["--corpus", str(corpus), "--queries", str(queries)]


def test_run_reports_quality_for_each_mode_and_latency(embedder) -> None:
    articles = [retrieval._article(doc_id=row["doc_id"], title=row["title"], text=row["text"]) for row in CORPUS]
    queries = [
        retrieval.Query(query_id=row["query_id"], text=row["text"], relevant=frozenset(row["doc_ids"]))
        for row in QUERIES
    ]

    result = retrieval.run(articles=articles, queries=queries, embedder=embedder, sweep=True)

    assert result["n_queries"] == 4 and result["n_articles"] == 3
    # q1-q3 are found first; q4 has two relevant docs, so one top hit is half its recall.
    assert result["bm25"] == {"recall@1": pytest.approx((3 + 0.5) / 4), "recall@5": 1.0, "mrr@10": 1.0}
    for key in ("recall@1", "recall@5", "mrr@10", "index_seconds", "query_ms_p50", "query_ms_p95"):
        assert isinstance(result[key], float)
    assert set(result["dense"]) == {"recall@1", "recall@5", "mrr@10"}
    assert [row["dense_weight"] for row in result["sweep"]] == list(retrieval.SWEEP_WEIGHTS)


def test_missing_stackfaq_folder_is_a_clear_error(tmp_path: Path, capsys) -> None:
    code = retrieval.main(["--stackfaq", str(tmp_path / "absent"), "--json"])

    assert code == 2
    captured = capsys.readouterr()
    assert "StackFAQ data not found" in captured.err
    assert captured.out == ""


def test_malformed_corpus_is_a_clear_error(tmp_path: Path, capsys) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"doc_id": "a", "title": "A", "text": "x"}\nnot json\n')
    queries = write_jsonl(tmp_path / "queries.jsonl", QUERIES)

    code = retrieval.main(["--corpus", str(corpus), "--queries", str(queries)])

    assert code == 2
    assert "corpus.jsonl:2: not valid JSON" in capsys.readouterr().err


def test_default_stackfaq_folder_is_beside_the_repository() -> None:
    assert (
        retrieval.DEFAULT_STACKFAQ_DIR
        == Path(retrieval.__file__).resolve().parents[2] / "shared/eval/retrieval/stackfaq"
    )


@pytest.mark.slow
def test_command_line_prints_one_json_object(dataset: list[str], capsys) -> None:
    code = retrieval.main([*dataset, "--json"])

    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_queries"] == 4
    assert result["recall@5"] == 1.0
    assert result["model_id"].startswith("all-MiniLM-L6-v2")
