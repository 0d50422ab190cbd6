import logging

import pytest

from bot.logs import RedactingFilter, redact


@pytest.mark.parametrize(
    ("raw", "hidden"),
    [
        ("Authorization: Bearer xoxb-123-secret", "xoxb-123-secret"),
        ("connect password=hunter2 host=db", "hunter2"),
        ("token: abc.def.ghi failed", "abc.def.ghi"),
        ("mail from alice.smith@example.com bounced", "alice.smith@"),
    ],
)
def test_secrets_and_addresses_are_redacted(raw: str, hidden: str) -> None:
    assert hidden not in redact(raw)


def test_line_breaks_in_logged_input_cannot_forge_lines() -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "user said %s", ("hi\nERROR fake line",), None)
    RedactingFilter().filter(record)
    assert "\n" not in record.getMessage()
