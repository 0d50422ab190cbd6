"""How dense and keyword relevance are combined into one ranking score.

Kept in one place on purpose: the convex combination below is a first,
measured baseline that a later change is expected to replace.
"""

from __future__ import annotations

import numpy as np

# Chosen by measurement on the StackFAQ dev set (python -m benchmarks.retrieval
# --stackfaq --sweep, 1249 queries). MRR@10 by dense weight: 0.0 (BM25 only)
# 0.795, 0.5 0.902, 0.7 0.940, 0.8 0.955, 0.85 0.965, 0.9 0.966, 0.95 0.966,
# 1.0 (dense only) 0.963. 0.9 is the best or within 0.001 of it on both the
# even and the odd half of the queries, so the choice is not noise-fitted to
# one half. Dense cosines spread over roughly 0.1..0.8 while normalised BM25
# spans 0..1, which is why the keyword share that helps is this small.
DENSE_WEIGHT = 0.9


def normalise_by_max(scores: np.ndarray) -> np.ndarray:
    """Scale non-negative scores (BM25) to 0..1 by the best one; all zeros stay zeros."""
    top = float(scores.max(initial=0.0))
    if top <= 0.0:
        return np.zeros_like(scores, dtype=np.float32)
    return (scores / top).astype(np.float32)


def fuse(dense: np.ndarray, lexical: np.ndarray, *, dense_weight: float = DENSE_WEIGHT) -> np.ndarray:
    """Hybrid relevance of candidates from their dense cosine and max-normalised BM25 score."""
    return (dense_weight * dense + (1.0 - dense_weight) * lexical).astype(np.float32)
