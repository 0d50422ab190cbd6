"""Shared fakes for the kb_index tests.

Shared only through fixtures: with no __init__.py in tests/, "import conftest"
could pick up another folder's conftest.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from kb_index.lexical import tokenize


class HashingEmbedder:
    """Deterministic bag-of-words embedder: each token lights up one hashed dimension.

    Texts sharing words get a positive cosine, so ranking behaves like a crude
    dense retriever; it is instant and needs no model. It records every text it
    is asked to encode, so tests can tell what was (re-)embedded.
    """

    def __init__(self, *, dimension: int = 256, model_id: str = "test-hashing-embedder") -> None:
        self._dimension = dimension
        self._model_id = model_id
        self._lock = threading.Lock()
        self.encoded: list[str] = []
        self.calls = 0

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def model_id(self) -> str:
        return self._model_id

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        with self._lock:
            self.calls += 1
            self.encoded.extend(texts)
        vectors = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in tokenize(text):
                vectors[row, zlib.crc32(token.encode()) % self._dimension] += 1.0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors[:, 0:1] += norms == 0  # a text without words still gets a unit vector
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def reset_counts(self) -> None:
        self.encoded.clear()
        self.calls = 0


@pytest.fixture
def embedder() -> HashingEmbedder:
    return HashingEmbedder()


@pytest.fixture
def make_embedder() -> Callable[..., HashingEmbedder]:
    """For tests that need a second, different model."""
    return HashingEmbedder


@pytest.fixture
def kb_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "kb"
    folder.mkdir()
    return folder


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    return tmp_path / "index"


WriteArticle = Callable[[str, str], Path]


@pytest.fixture
def write_article(kb_dir: Path) -> WriteArticle:
    def write(relative: str, text: str) -> Path:
        path = kb_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return write


VPN_ARTICLE = """---
title: VPN keeps disconnecting
url: https://help.example.com/vpn
tags: [network, vpn]
---
# VPN keeps disconnecting

## Symptoms

The GlobalProtect VPN client drops the tunnel every few minutes while on home Wi-Fi.
Users see the error code 0x80070005 in the client log.

## Fix

Open the GlobalProtect settings, switch the gateway to the nearest region and
disable power saving on the wireless adapter. Reconnect and the tunnel stays up.
"""

PASSWORD_ARTICLE = """---
title: Reset your password
url: https://help.example.com/password
tags: account
---
## Self-service reset

Go to the account portal, choose Forgot password, and confirm with the
authenticator app. The new password must have at least fourteen characters.

## Locked out

After five failed sign-in attempts the account is locked for thirty minutes.
Azure sign-in shows AADSTS50053 while the lock lasts.
"""

PRINTER_ARTICLE = """# Printer is offline

Check that the printer is switched on and has paper. Remove the printer from
Settings, add it again from the print server, and print a test page. Ticket
TZ-1042 tracks the broken third-floor printer.
"""


@pytest.fixture
def sample_kb(write_article: WriteArticle, kb_dir: Path) -> Path:
    write_article("vpn-keeps-disconnecting.md", VPN_ARTICLE)
    write_article("account/reset-password.md", PASSWORD_ARTICLE)
    write_article("printer-offline.md", PRINTER_ARTICLE)
    return kb_dir
