from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import kb_index.store
from kb_index.index import CorruptIndexError, IndexNotFoundError, KnowledgeIndex
from kb_index.store import MANIFEST_NAME


@pytest.fixture
def built(sample_kb: Path, index_dir: Path, embedder) -> KnowledgeIndex:
    index = KnowledgeIndex(index_dir=index_dir, embedder=embedder)
    index.sync(sample_kb)
    return index


def vectors_files(index_dir: Path) -> list[Path]:
    return sorted(index_dir.glob("vectors-*.faiss"))


def manifest(index_dir: Path) -> dict:
    return json.loads((index_dir / MANIFEST_NAME).read_text())


def rewrite_manifest(index_dir: Path, change) -> None:
    data = manifest(index_dir)
    change(data)
    (index_dir / MANIFEST_NAME).write_text(json.dumps(data))


def test_round_trip_preserves_chunks_metadata_and_results(built: KnowledgeIndex, index_dir: Path, embedder) -> None:
    loaded = KnowledgeIndex.load(index_dir=index_dir, embedder=embedder)

    assert len(loaded) == len(built)
    assert loaded.stats() == built.stats()
    for query in ("vpn drops on wifi", "forgot password", "printer offline"):
        for mode in ("hybrid", "dense", "lexical"):
            assert loaded.search(query, k=3, mode=mode) == built.search(query, k=3, mode=mode)
    [hit] = loaded.search("GlobalProtect tunnel", k=1)
    assert (hit.article_id, hit.title, hit.url, hit.source_path) == (
        "vpn-keeps-disconnecting",
        "VPN keeps disconnecting",
        "https://help.example.com/vpn",
        "vpn-keeps-disconnecting.md",
    )


def test_manifest_records_model_settings_and_hashes(built: KnowledgeIndex, index_dir: Path, embedder) -> None:
    data = manifest(index_dir)

    assert data["format_version"] == kb_index.store.FORMAT_VERSION
    assert (data["model_id"], data["dimension"]) == (embedder.model_id, embedder.dimension)
    assert data["chunking"]["max_chunk_chars"] == 1200
    assert [article["article_id"] for article in data["articles"]] == [
        "account/reset-password",
        "printer-offline",
        "vpn-keeps-disconnecting",
    ]
    assert all(len(article["content_hash"]) == 64 for article in data["articles"])
    assert [path.name for path in vectors_files(index_dir)] == [data["vectors_file"]]


def test_missing_index_is_not_found(index_dir: Path, embedder) -> None:
    with pytest.raises(IndexNotFoundError, match="tierzero kb index"):
        KnowledgeIndex.load(index_dir=index_dir, embedder=embedder)


def test_open_or_create_loads_or_starts_empty(built: KnowledgeIndex, index_dir: Path, tmp_path: Path, embedder) -> None:
    assert len(KnowledgeIndex.open_or_create(index_dir=index_dir, embedder=embedder)) == len(built)
    assert len(KnowledgeIndex.open_or_create(index_dir=tmp_path / "fresh", embedder=embedder)) == 0


def test_open_or_create_still_refuses_a_corrupt_index(built: KnowledgeIndex, index_dir: Path, embedder) -> None:
    (index_dir / MANIFEST_NAME).write_text("{not json")

    with pytest.raises(CorruptIndexError):
        KnowledgeIndex.open_or_create(index_dir=index_dir, embedder=embedder)


def test_truncated_vectors_file_is_corrupt(built: KnowledgeIndex, index_dir: Path, embedder) -> None:
    [vectors] = vectors_files(index_dir)
    vectors.write_bytes(vectors.read_bytes()[:100])

    with pytest.raises(CorruptIndexError, match="checksum.*tierzero kb index"):
        KnowledgeIndex.load(index_dir=index_dir, embedder=embedder)


def test_unreadable_faiss_data_is_corrupt(built: KnowledgeIndex, index_dir: Path, embedder) -> None:
    # Garbage whose checksum matches gets past the checksum; FAISS must still refuse it.
    [vectors] = vectors_files(index_dir)
    vectors.write_bytes(b"not a faiss index")
    rewrite_manifest(index_dir, lambda data: data.update(vectors_sha256=kb_index.store.file_sha256(vectors)))

    with pytest.raises(CorruptIndexError, match="FAISS cannot read"):
        KnowledgeIndex.load(index_dir=index_dir, embedder=embedder)


def test_missing_vectors_file_is_corrupt(built: KnowledgeIndex, index_dir: Path, embedder) -> None:
    for path in vectors_files(index_dir):
        path.unlink()

    with pytest.raises(CorruptIndexError, match="cannot read"):
        KnowledgeIndex.load(index_dir=index_dir, embedder=embedder)


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe", b"[]", b'{"format_version": 1}', b""],
    ids=["bad-json", "not-utf8", "not-an-object", "missing-fields", "empty"],
)
def test_bad_manifest_is_corrupt(built: KnowledgeIndex, index_dir: Path, embedder, content: bytes) -> None:
    (index_dir / MANIFEST_NAME).write_bytes(content)

    with pytest.raises(CorruptIndexError, match="tierzero kb index"):
        KnowledgeIndex.load(index_dir=index_dir, embedder=embedder)


def test_wrong_field_types_are_corrupt(built: KnowledgeIndex, index_dir: Path, embedder) -> None:
    rewrite_manifest(index_dir, lambda data: data["articles"][0].update(chunks="oops"))

    with pytest.raises(CorruptIndexError, match="malformed"):
        KnowledgeIndex.load(index_dir=index_dir, embedder=embedder)


def test_vector_count_must_match_chunk_count(built: KnowledgeIndex, index_dir: Path, embedder) -> None:
    rewrite_manifest(index_dir, lambda data: data["articles"][0]["chunks"].append({"heading_path": [], "text": "x"}))

    with pytest.raises(CorruptIndexError, match=r"\d+ vectors for \d+ chunks"):
        KnowledgeIndex.load(index_dir=index_dir, embedder=embedder)


def test_unknown_format_version_is_corrupt(built: KnowledgeIndex, index_dir: Path, embedder) -> None:
    rewrite_manifest(index_dir, lambda data: data.update(format_version=99))

    with pytest.raises(CorruptIndexError, match="format 99"):
        KnowledgeIndex.load(index_dir=index_dir, embedder=embedder)


def test_index_from_a_different_model_is_refused(built: KnowledgeIndex, index_dir: Path, make_embedder) -> None:
    other = make_embedder(model_id="another-model")

    with pytest.raises(CorruptIndexError, match="another-model.*tierzero kb index"):
        KnowledgeIndex.load(index_dir=index_dir, embedder=other)


def test_index_with_a_different_dimension_is_refused(built: KnowledgeIndex, index_dir: Path, make_embedder) -> None:
    other = make_embedder(dimension=64)

    with pytest.raises(CorruptIndexError, match="64 dimensions"):
        KnowledgeIndex.load(index_dir=index_dir, embedder=other)


def test_a_fresh_index_overwrites_a_corrupt_one(
    built: KnowledgeIndex, sample_kb: Path, index_dir: Path, embedder
) -> None:
    # How `tierzero kb index` recovers: start empty, sync, which replaces the files.
    (index_dir / MANIFEST_NAME).write_text("{not json")

    KnowledgeIndex(index_dir=index_dir, embedder=embedder).sync(sample_kb)

    assert len(KnowledgeIndex.load(index_dir=index_dir, embedder=embedder)) == len(built)


@pytest.mark.parametrize("failing_step", ["vectors", "manifest"])
def test_crash_while_writing_leaves_the_previous_index_loadable(
    built: KnowledgeIndex,
    sample_kb: Path,
    index_dir: Path,
    embedder,
    write_article,
    monkeypatch: pytest.MonkeyPatch,
    failing_step: str,
) -> None:
    before = KnowledgeIndex.load(index_dir=index_dir, embedder=embedder).search("printer offline", k=3)
    write_article("printer-offline.md", "# Printer is offline\n\nCompletely rewritten: call the service desk.")
    real_replace = os.replace

    def crash(source, target):
        is_manifest = Path(target).name == MANIFEST_NAME
        if is_manifest == (failing_step == "manifest"):
            raise OSError(28, "No space left on device")
        return real_replace(source, target)

    monkeypatch.setattr(kb_index.store.os, "replace", crash)
    with pytest.raises(OSError, match="No space"):
        built.sync(sample_kb)
    monkeypatch.undo()

    reloaded = KnowledgeIndex.load(index_dir=index_dir, embedder=embedder)
    assert reloaded.search("printer offline", k=3) == before
    # The in-memory index did not move ahead of the disk either.
    assert built.search("printer offline", k=3) == before
    assert not list(index_dir.glob(".*.tmp"))


def test_old_vector_generations_are_cleaned_up(
    built: KnowledgeIndex, sample_kb: Path, index_dir: Path, write_article
) -> None:
    for n in range(3):
        write_article("printer-offline.md", f"# Printer is offline\n\nRevision {n} of the fix.")
        built.sync(sample_kb)

    # The current file plus the previous one, for readers that opened the old manifest.
    assert len(vectors_files(index_dir)) == 2
    assert manifest(index_dir)["vectors_file"] in {path.name for path in vectors_files(index_dir)}
