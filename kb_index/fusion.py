"""How dense and keyword relevance are combined into one ranking score.

Kept in one place on purpose: the convex combination below is a first,
measured baseline that a later change is expected to replace.
"""

from __future__ import annotations

import numpy as np

# Chosen by measurement on the StackFAQ dev set (benchmarks/retrieval.py
# --sweep); see the module docstring of benchmarks.retrieval for the numbers.
DENSE_WEIGHT = 0.7


def normalise_by_max(scores: np.ndarray) -> np.ndarray:
    """Scale non-negative scores (BM25) to 0..1 by the best one; all zeros stay zeros."""
    top = float(scores.max(initial=0.0))
    if top <= 0.0:
        return np.zeros_like(scores, dtype=np.float32)
    return (scores / top).astype(np.float32)


def fuse(dense: np.ndarray, lexical: np.ndarray, *, dense_weight: float = DENSE_WEIGHT) -> np.ndarray:
    """Hybrid relevance of candidates from their dense cosine and max-normalised BM25 score."""
    return (dense_weight * dense + (1.0 - dense_weight) * lexical).astype(np.float32)
