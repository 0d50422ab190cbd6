from __future__ import annotations

from pathlib import Path

from kb_index.index import KnowledgeIndex


def new_index(index_dir: Path, embedder, **options) -> KnowledgeIndex:
    return KnowledgeIndex(index_dir=index_dir, embedder=embedder, **options)


def test_first_sync_adds_everything_and_reports_skipped_files(sample_kb: Path, index_dir: Path, embedder) -> None:
    (sample_kb / "broken.md").write_bytes(b"\x00\x01")
    index = new_index(index_dir, embedder)

    report = index.sync(sample_kb)

    assert (report.added, report.updated, report.removed, report.unchanged) == (3, 0, 0, 0)
    assert report.chunks == len(index) >= 3
    assert [item.path for item in report.skipped] == ["broken.md"]
    assert len(embedder.encoded) == len(index) + index.stats().articles  # every chunk, and every title
    stats = index.stats()
    assert (stats.articles, stats.chunks, stats.model_id, stats.dimension) == (3, len(index), embedder.model_id, 256)
    assert stats.index_dir == str(index_dir)
    assert stats.size_bytes == sum(path.stat().st_size for path in index_dir.iterdir())
    assert stats.built_at.endswith("+00:00")


def test_unchanged_articles_are_not_re_embedded(sample_kb: Path, index_dir: Path, embedder) -> None:
    index = new_index(index_dir, embedder)
    index.sync(sample_kb)
    embedder.reset_counts()

    report = index.sync(sample_kb)

    assert (report.added, report.updated, report.removed, report.unchanged) == (0, 0, 0, 3)
    assert embedder.calls == 0


def test_only_changed_articles_are_re_embedded(sample_kb: Path, index_dir: Path, embedder, write_article) -> None:
    index = new_index(index_dir, embedder)
    index.sync(sample_kb)
    embedder.reset_counts()

    printer = sample_kb / "printer-offline.md"
    write_article(
        "printer-offline.md", printer.read_text() + "\nIf it is still offline, restart the spooler service.\n"
    )
    report = index.sync(sample_kb)

    assert (report.added, report.updated, report.removed, report.unchanged) == (0, 1, 0, 2)
    assert embedder.encoded and all(text.startswith("Printer is offline") for text in embedder.encoded)
    [hit] = index.search("restart spooler service", k=1, mode="lexical")
    assert hit.article_id == "printer-offline"


def test_deleted_articles_disappear_and_new_ones_appear(
    sample_kb: Path, index_dir: Path, embedder, write_article
) -> None:
    index = new_index(index_dir, embedder)
    index.sync(sample_kb)
    (sample_kb / "printer-offline.md").unlink()
    write_article("mfa/new-phone.md", "# New phone\n\nMove the authenticator app to a new phone with the QR code.")
    embedder.reset_counts()

    report = index.sync(sample_kb)

    assert (report.added, report.updated, report.removed, report.unchanged) == (1, 0, 1, 2)
    assert embedder.encoded and all(text.startswith("New phone") for text in embedder.encoded)
    for mode in ("hybrid", "dense", "lexical"):
        found = {hit.article_id for hit in index.search("printer offline TZ-1042", k=10, mode=mode)}
        assert "printer-offline" not in found
    assert index.stats().articles == 3
    # The deletion is persisted too.
    reloaded = KnowledgeIndex.load(index_dir=index_dir, embedder=embedder)
    assert reloaded.stats().articles == 3
    assert "printer-offline" not in {hit.article_id for hit in reloaded.search("printer", k=10, mode="dense")}


def test_sync_after_reload_keeps_stored_vectors(sample_kb: Path, index_dir: Path, embedder) -> None:
    new_index(index_dir, embedder).sync(sample_kb)
    embedder.reset_counts()

    reloaded = KnowledgeIndex.load(index_dir=index_dir, embedder=embedder)
    report = reloaded.sync(sample_kb)

    assert report.unchanged == 3
    assert embedder.calls == 0


def test_changing_chunk_size_re_chunks_everything(sample_kb: Path, index_dir: Path, embedder) -> None:
    new_index(index_dir, embedder).sync(sample_kb)
    smaller = KnowledgeIndex.load(index_dir=index_dir, embedder=embedder, max_chunk_chars=150)

    assert smaller.is_stale(sample_kb)
    report = smaller.sync(sample_kb)

    assert (report.updated, report.unchanged) == (3, 0)
    assert not smaller.is_stale(sample_kb)


def test_is_stale_tracks_additions_edits_and_deletions(
    sample_kb: Path, index_dir: Path, embedder, write_article
) -> None:
    index = new_index(index_dir, embedder)
    assert index.is_stale(sample_kb)
    index.sync(sample_kb)
    embedder.reset_counts()
    assert not index.is_stale(sample_kb)

    write_article("new.md", "# New\n\nA new article.")
    assert index.is_stale(sample_kb)
    index.sync(sample_kb)
    assert not index.is_stale(sample_kb)

    write_article("new.md", "# New\n\nAn edited article.")
    assert index.is_stale(sample_kb)
    index.sync(sample_kb)

    (sample_kb / "new.md").unlink()
    assert index.is_stale(sample_kb)
    index.sync(sample_kb)
    assert not index.is_stale(sample_kb)
    embedder.reset_counts()
    index.is_stale(sample_kb)
    assert embedder.calls == 0


def test_empty_folder_gives_a_persisted_empty_index(kb_dir: Path, index_dir: Path, embedder) -> None:
    index = new_index(index_dir, embedder)

    report = index.sync(kb_dir)

    assert (report.added, report.chunks, len(index)) == (0, 0, 0)
    assert index.search("anything") == []
    assert len(KnowledgeIndex.load(index_dir=index_dir, embedder=embedder)) == 0


def test_progress_bar_goes_to_stderr(sample_kb: Path, index_dir: Path, embedder, capsys) -> None:
    new_index(index_dir, embedder).sync(sample_kb, progress=True)

    captured = capsys.readouterr()
    assert "Embedding" in captured.err
    assert captured.out == ""
