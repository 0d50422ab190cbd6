import pytest

from bot import intents


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("talk to a person", True),
        ("Can I speak with a technician?", True),
        ("HUMAN!", True),
        ("please open a ticket", True),
        ("the GlobalProtect agent won't install", False),
        ("my VPN keeps disconnecting", False),
    ],
)
def test_asks_for_human(text: str, expected: bool) -> None:
    assert intents.asks_for_human(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("thanks!", True),
        ("That fixed it, thank you", True),
        ("it\u2019s working now", True),
        ("thanks but it is still broken", False),
        ("thanks, how do I map a drive?", False),
    ],
)
def test_is_thanks(text: str, expected: bool) -> None:
    assert intents.is_thanks(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"), [("hi", True), ("Good morning team", True), ("hi, my mouse is dead", False)]
)
def test_is_greeting(text: str, expected: bool) -> None:
    assert intents.is_greeting(text) is expected
