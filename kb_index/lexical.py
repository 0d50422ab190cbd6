"""Keyword (BM25) matching, tuned to keep error codes and ticket ids exact."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_EN

# Runs of letters/digits, optionally joined by - _ or . ("tz-1042", "0x80070005",
# "v2.3.1", "outlook.exe"). Unicode letters count, so "département" stays whole.
_COMPOUND = re.compile(r"[^\W_]+(?:[-_.][^\W_]+)*")
_JOINERS = re.compile(r"[-_.]")
_STOPWORDS = frozenset(STOPWORDS_EN)

# bm25s pins its logger to DEBUG on import, which overrides the application's
# logging configuration and prints a line per index build; NOTSET hands the
# decision back to the application.
logging.getLogger("bm25s").setLevel(logging.NOTSET)


def tokenize(text: str) -> list[str]:
    """Lowercased search tokens.

    A joined word that contains a digit ("tz-1042", "kb5034441", "192.168.1.1")
    is an identifier a user will paste verbatim, so it is kept whole *and*
    split, letting "TZ-1042" match exactly while "ticket 1042" still matches.
    Joined words without digits ("wi-fi", "outlook.exe") are only split.
    """
    tokens: list[str] = []
    for match in _COMPOUND.finditer(text.lower()):
        word = match.group()
        parts = [part for part in _JOINERS.split(word) if part]
        if len(parts) > 1 and any(ch.isdigit() for ch in word):
            tokens.append(word)
        tokens.extend(part for part in parts if part not in _STOPWORDS)
    return tokens


class LexicalIndex:
    """BM25 over pre-tokenised documents; scores every document for a query."""

    def __init__(self, documents: Sequence[Sequence[str]]) -> None:
        self._size = len(documents)
        self._bm25: bm25s.BM25 | None = None
        if self._size == 0:
            return
        bm25 = bm25s.BM25()
        bm25.index([list(tokens) for tokens in documents], show_progress=False)
        self._bm25 = bm25

    def __len__(self) -> int:
        return self._size

    def scores(self, query_tokens: Sequence[str]) -> np.ndarray:
        """BM25 score of each document, in document order (zeros when nothing matches)."""
        if self._bm25 is None:
            return np.zeros(self._size, dtype=np.float32)
        # Repeating a term in a question should not multiply its weight.
        token_ids = self._bm25.get_tokens_ids(list(dict.fromkeys(query_tokens)))
        if not token_ids:
            return np.zeros(self._size, dtype=np.float32)
        return np.asarray(self._bm25.get_scores_from_ids(token_ids), dtype=np.float32)

    def match_share(self, terms: Sequence[str]) -> np.ndarray:
        """Per document, the share of ``terms`` it contains (terms no document contains are ignored)."""
        counts = np.zeros(self._size, dtype=np.float32)
        if self._bm25 is None:
            return counts
        known = 0
        for term in dict.fromkeys(terms):
            token_ids = self._bm25.get_tokens_ids([term])
            if not token_ids:
                continue
            known += 1
            counts += np.asarray(self._bm25.get_scores_from_ids(token_ids), dtype=np.float32) > 0
        return counts / known if known else counts
