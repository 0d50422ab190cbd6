"""How dense and keyword relevance are combined into one ranking score.

A convex combination of the dense cosine and max-normalised BM25, plus an
exact-identifier rule: a chunk that contains an identifier from the question
(an error code, model number or ticket id: ``0x80070005``, ``AADSTS50053``,
``TZ-1042``) ranks above every chunk that does not. Dense models cannot read
identifiers, and the small keyword share that is right for natural-language
questions is far too small for them; a user who pastes an error code means
exactly that code.

Measured with ``python -m benchmarks.retrieval --sweep`` (MRR@10):

    collection                         dense   BM25   convex 0.9   + identifier rule
    StackFAQ (1249 questions)          0.963   0.795  0.966        0.966
    kb/ manual-style, all (298)        0.456   0.453  0.532        0.553
    kb/ manual-style, identifiers (35) 0.379   1.000  0.807        1.000
    kb/ manual-style, headings (263)   0.464   0.379  0.493        0.491

(``python -m benchmarks.manual_collection`` builds the manual-style set.)
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


def fuse(
    dense: np.ndarray,
    lexical: np.ndarray,
    *,
    dense_weight: float = DENSE_WEIGHT,
    identifier_matches: np.ndarray | None = None,
) -> np.ndarray:
    """Hybrid relevance of candidates from their dense cosine and max-normalised BM25 score.

    ``identifier_matches`` is, per candidate, the share (0..1) of the
    question's identifiers it contains; each full match outweighs any
    difference in the convex score (which spans at most -1..1 plus 0..1).
    """
    scores = dense_weight * dense + (1.0 - dense_weight) * lexical
    if identifier_matches is not None:
        scores = scores + IDENTIFIER_BONUS * identifier_matches
    return scores.astype(np.float32)


# Larger than the whole range of the convex score, so an exact identifier match always ranks first.
IDENTIFIER_BONUS = 2.0


def is_identifier(token: str) -> bool:
    """A search token that names one thing exactly: letters or joiners mixed with digits, 4+ characters.

    Plain numbers ("2024", "15") are quantities and years, not identifiers.
    """
    return len(token) >= 4 and any(ch.isdigit() for ch in token) and any(ch.isalpha() or ch in "-_." for ch in token)
