from __future__ import annotations

import pytest

from kb_index.lexical import LexicalIndex, tokenize


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Error 0x80070005 when updating", ["error", "0x80070005", "when", "updating"]),
        ("Sign-in fails with AADSTS50076.", ["sign", "fails", "aadsts50076"]),
        ("See ticket TZ-1042!", ["see", "ticket", "tz-1042", "tz", "1042"]),
        ("Install KB5034441 on 192.168.1.10", ["install", "kb5034441", "192.168.1.10", "192", "168", "1", "10"]),
        ("Wi-Fi and outlook.exe", ["wi", "fi", "outlook", "exe"]),
        ("The printer is OFFLINE", ["printer", "offline"]),
        ("Café Zürich", ["café", "zürich"]),
        ("   --- ...   ", []),
    ],
)
def test_tokenize_keeps_identifiers_exact(text: str, expected: list[str]) -> None:
    assert tokenize(text) == expected


def test_bm25_scores_exact_identifier_matches() -> None:
    index = LexicalIndex(
        [
            tokenize("Windows Update fails with 0x80070005 access denied"),
            tokenize("Windows Update fails with 0x800f0922 not enough space"),
            tokenize("Printer offline"),
        ]
    )

    scores = index.scores(tokenize("0x800f0922"))

    assert scores.shape == (3,)
    assert scores[1] > 0
    assert scores[0] == scores[2] == 0


def test_unknown_or_empty_queries_score_zero() -> None:
    index = LexicalIndex([tokenize("printer offline")])

    assert index.scores(tokenize("vpn")).tolist() == [0.0]
    assert index.scores([]).tolist() == [0.0]
    assert LexicalIndex([]).scores(tokenize("printer")).tolist() == []


def test_identifiers_are_codes_not_words_or_plain_numbers() -> None:
    from kb_index.fusion import is_identifier

    assert all(is_identifier(t) for t in ("0x80070005", "aadsts50053", "tz-1042", "mk295", "192.168.1.1"))
    assert not any(is_identifier(t) for t in ("2024", "vpn", "outlook", "a1"))
