"""Hot reload: a running index picks up a generation another process wrote, atomically."""

from __future__ import annotations

from pathlib import Path

from kb_index.index import KnowledgeIndex
from kb_index.store import MANIFEST_NAME


def test_a_running_index_picks_up_what_kb_index_wrote(
    sample_kb: Path, index_dir: Path, embedder, write_article
) -> None:
    KnowledgeIndex(index_dir=index_dir, embedder=embedder).sync(sample_kb)
    running = KnowledgeIndex.load(index_dir=index_dir, embedder=embedder)
    assert running.reload_if_changed() is False  # nothing new yet
    assert not any(hit.article_id == "wifi-guest" for hit in running.search("guest wifi voucher", k=5))

    write_article("wifi-guest.md", "# Guest Wi-Fi\n\nAsk reception for a guest wifi voucher code.\n")
    KnowledgeIndex.load(index_dir=index_dir, embedder=embedder).sync(sample_kb)  # `tierzero kb index`

    assert running.reload_if_changed() is True
    assert running.search("guest wifi voucher", k=1)[0].article_id == "wifi-guest"
    assert running.reload_if_changed() is False


def test_a_broken_new_manifest_keeps_the_current_index(sample_kb: Path, index_dir: Path, embedder) -> None:
    KnowledgeIndex(index_dir=index_dir, embedder=embedder).sync(sample_kb)
    running = KnowledgeIndex.load(index_dir=index_dir, embedder=embedder)
    before = running.search("printer offline", k=1)

    (index_dir / MANIFEST_NAME).write_text("{not json", encoding="utf-8")

    assert running.reload_if_changed() is False
    assert running.search("printer offline", k=1) == before


def test_hits_carry_title_and_coverage_evidence(sample_kb: Path, index_dir: Path, embedder) -> None:
    index = KnowledgeIndex(index_dir=index_dir, embedder=embedder)
    index.sync(sample_kb)
    best, *rest = index.search("printer is offline", k=3)
    assert best.article_id == "printer-offline"
    assert best.title_score > max(hit.title_score for hit in rest)
    assert best.term_coverage == 1.0  # every word of the question is in the article
    # A word the knowledge base never mentions lowers the coverage.
    assert index.search("printer offline zanzibar", k=1)[0].term_coverage < 1.0
