import io
import json
import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.app import TierZero
from bot.channel import TemporaryDeliveryError
from bot.config import Settings
from bot.logs import RedactingFilter, build_handler, log_context, redact
from bot.model import ConversationRef, InboundMessage, Participant
from bot.server import create_app
from tests.channels.test_http_api import serving
from tests.fixtures.fakes import RecordingChannel, it_retriever


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


# -- request ids and JSON lines ----------------------------------------------------------------


@pytest.fixture
def json_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Everything logged (INFO and up) while the test runs, as parsed JSON lines."""
    stream = io.StringIO()
    handler = build_handler("json", stream=stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_json_lines_carry_the_context_and_stay_redacted(json_lines: Callable[[], list[dict[str, Any]]]) -> None:
    log = logging.getLogger("tierzero.test")
    with log_context(request_id="req-42", channel="slack", message_id=7):
        log.warning("relay said %s", "password=hunter2 for bob.jones@example.com\nERROR forged")
    log.info("outside")
    inside, outside = json_lines()
    assert inside["level"] == "WARNING" and inside["logger"] == "tierzero.test"
    assert (inside["request_id"], inside["channel"], inside["message_id"]) == ("req-42", "slack", 7)
    assert datetime.fromisoformat(inside["time"]).utcoffset() == timedelta(0)
    assert "hunter2" not in inside["message"] and "bob.jones@" not in inside["message"]
    assert "b***@example.com" in inside["message"]
    assert "request_id" not in outside and outside["message"] == "outside"


def test_a_traceback_stays_inside_one_json_line(json_lines: Callable[[], list[dict[str, Any]]]) -> None:
    try:
        raise ValueError("bad value")
    except ValueError:
        logging.getLogger("tierzero.test").exception("it failed for token=abc123")
    [line] = json_lines()
    assert "ValueError: bad value" in line["exc_info"]
    assert "abc123" not in line["message"]


def test_text_lines_end_with_the_request_id() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("tierzero.text-test")
    logger.addHandler(build_handler("text", stream=stream))
    logger.propagate = False
    try:
        with log_context(request_id="msg-5"):
            logger.warning("with an id")
        logger.warning("without")
    finally:
        logger.handlers.clear()
        logger.propagate = True
    first, second = stream.getvalue().splitlines()
    assert first.endswith("WARNING tierzero.text-test: with an id [msg-5]")
    assert second.endswith("WARNING tierzero.text-test: without")


async def test_a_message_and_its_reply_log_under_the_messages_request_id(
    settings: Settings, json_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    """The pipeline works on a message as msg-<id>; the outbox logs its reply's delivery under the same id."""
    app = TierZero(settings, retriever=it_retriever())
    channel = RecordingChannel()
    channel.failures.append(TemporaryDeliveryError("gateway busy; api_key=k-123 for carol@example.com"))
    runtime = app.runtime([channel])
    try:
        async with runtime:
            receipt = await channel.on_message(
                InboundMessage(
                    channel_message_id="m1",
                    conversation=ConversationRef("test", "c1"),
                    sender=Participant("test", "U1"),
                    text="my vpn drops",
                )
            )
            await channel.wait_for(1)
    finally:
        app.db.dispose()
    [retry] = [line for line in json_lines() if "retrying" in line["message"]]
    assert retry["request_id"] == f"msg-{receipt.message_id}"
    assert retry["channel"] == "test" and retry["logger"] == "bot.outbox_worker"
    assert "k-123" not in retry["message"] and "carol@" not in retry["message"]


async def test_an_unhandled_error_is_logged_and_answered_with_the_request_id(
    settings: Settings, json_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    class BrokenChannel(RecordingChannel):
        def routes(self) -> list[object]:
            async def broken(_: Request) -> Response:
                raise RuntimeError("broken handler")

            return [Route("/broken", broken)]

    app = TierZero(settings, retriever=it_retriever())
    try:
        async with (
            serving(create_app(app.runtime([BrokenChannel()]))) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            response = await client.get("/broken", headers={"X-Request-ID": "edge-1"})
    finally:
        app.db.dispose()
    assert (response.status_code, response.headers["x-request-id"]) == (500, "edge-1")
    [line] = [line for line in json_lines() if line["message"].startswith("unhandled error")]
    assert line["request_id"] == "edge-1" and "broken handler" in line["exc_info"]
