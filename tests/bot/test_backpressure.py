"""Backpressure: a bounded inbound queue, refusals before anything is stored, and each channel's answer.

The pipeline is made to fall behind on demand by holding every knowledge-base search
(the fake retriever's) until the test lets go; ``pipeline.max_pending`` is set small.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP
from sqlalchemy import func, select

from bot.agent import Retriever
from bot.app import Runtime, TierZero
from bot.backpressure import MAX_RETRY_SECONDS, InboundLimit
from bot.channel import Acceptance, Overloaded, Receipt
from bot.config import ConfigError, PipelineSettings, Settings, settings_from_mapping
from bot.model import Action, ConversationRef, InboundMessage, Participant
from channels.slack import messages as slack_messages
from channels.slack.blocks import REPLY_ACTION
from channels.web import texts as web_texts
from tests.channels.email.test_email_channel import (
    Sink,
    close_mailroom,
    email_settings,
    mail,
    open_mailroom,
    until,
)
from tests.channels.slack.conftest import ALICE, ALICE_DM, button_press, dm, event_body, next_ts, running_slack
from tests.channels.slack.fake_slack import FakeSlack
from tests.channels.slack.test_slack_requesters import command
from tests.channels.teams.conftest import activity, running_teams
from tests.channels.teams.fakes import FakeBotFramework, SigningKey
from tests.channels.test_http_api import running_api, serving
from tests.channels.web.conftest import running_web, web_settings
from tests.fixtures.fakes import RecordingChannel, it_retriever
from ticketing.db import Database
from ticketing.models import Direction, Message

WAIT = 15.0


def small_queue(settings: Settings, max_pending: int = 1) -> Settings:
    """One worker and room for ``max_pending`` waiting messages."""
    return settings.model_copy(update={"pipeline": PipelineSettings(workers=1, max_pending=max_pending)})


@contextmanager
def answers_held(retriever: Retriever) -> Iterator[threading.Event]:
    """Every search waits until the yielded event is set (at the latest on exit): answering stalls."""
    release = threading.Event()
    search = retriever.search

    def held(query: str, *, k: int = 5) -> Any:
        release.wait(WAIT)
        return search(query, k=k)

    setattr(retriever, "search", held)  # noqa: B010 (mypy refuses assigning to a method; this instance only)
    try:
        yield release
    finally:
        release.set()
        delattr(retriever, "search")


def inbound_count(db: Database) -> int:
    with db.transaction() as session:
        count = select(func.count()).select_from(Message).where(Message.direction == Direction.INBOUND)
        return session.scalar(count) or 0


def inbound(number: int, text: str = "my vpn keeps disconnecting") -> InboundMessage:
    return InboundMessage(
        channel_message_id=f"m-{number}",
        conversation=ConversationRef("test", f"c-{number}"),
        sender=Participant("test", f"U{number}", display_name="Alice"),
        text=text,
    )


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[TierZero, Runtime, RecordingChannel]]:
    app = TierZero(settings, retriever=it_retriever())
    channel = RecordingChannel()
    runtime = app.runtime([channel])
    await runtime.start()
    try:
        yield app, runtime, channel
    finally:
        await runtime.stop(timeout=5)
        app.db.dispose()


async def handled(receipt: Receipt) -> int:
    assert receipt.handled is not None
    return await asyncio.wait_for(receipt.handled, WAIT)


# -- the pipeline -------------------------------------------------------------------------------------


async def test_a_full_queue_refuses_before_storing_and_accepts_again_once_drained(settings: Settings) -> None:
    async with running(small_queue(settings, max_pending=2)) as (app, runtime, channel):
        with answers_held(app.retriever) as release:
            first = await runtime.pipeline.accept(inbound(1))
            second = await runtime.pipeline.accept(inbound(2))
            with pytest.raises(Overloaded) as refused:
                await runtime.pipeline.accept(inbound(3))
            assert 1 <= refused.value.retry_after <= MAX_RETRY_SECONDS
            assert "try again" in str(refused.value)
            assert inbound_count(app.db) == 2  # the refused message was not stored
            release.set()
            assert [await handled(first), await handled(second)] == [1, 1]
        third = await runtime.pipeline.accept(inbound(3))
        assert third.status is Acceptance.ACCEPTED
        assert await handled(third) == 1
        await channel.wait_for(3)


async def test_a_burst_of_concurrent_accepts_does_not_overshoot_the_bound(settings: Settings) -> None:
    async with running(small_queue(settings, max_pending=3)) as (app, runtime, _):
        with answers_held(app.retriever):
            results = await asyncio.gather(
                *(runtime.pipeline.accept(inbound(n)) for n in range(12)), return_exceptions=True
            )
            accepted = [r for r in results if isinstance(r, Receipt)]
            refused = [r for r in results if isinstance(r, Overloaded)]
            assert (len(accepted), len(refused)) == (3, 9), results
            assert inbound_count(app.db) == 3


async def test_a_redelivery_under_overload_is_refused_then_recognised_as_a_duplicate(settings: Settings) -> None:
    """Decided: no database lookup per refusal, so a redelivery is refused like anything else while full.
    It was stored already, so nothing is lost: once there is room it is answered as a duplicate."""
    async with running(small_queue(settings)) as (app, runtime, channel):
        with answers_held(app.retriever) as release:
            first = await runtime.pipeline.accept(inbound(1))
            with pytest.raises(Overloaded):
                await runtime.pipeline.accept(inbound(1))
            release.set()
            await handled(first)
        again = await runtime.pipeline.accept(inbound(1))
        assert again.status is Acceptance.DUPLICATE
        await channel.wait_for(1)
        await asyncio.sleep(0.1)
        assert len(channel.sent) == 1 and inbound_count(app.db) == 1


async def test_messages_left_by_a_previous_run_count_against_the_same_bound(settings: Settings) -> None:
    # A previous run stored five messages and stopped before answering any.
    previous = TierZero(settings, retriever=it_retriever())
    earlier = previous.runtime([RecordingChannel()])
    for number in range(5):
        await earlier.pipeline.accept(inbound(number))
    previous.db.dispose()

    async with running(small_queue(settings, max_pending=2)) as (app, runtime, channel):
        with answers_held(app.retriever) as release:
            # Sweeps (at start-up and this one) queue two of them; that fills the queue.
            await runtime.pipeline.sweep()
            assert await runtime.pipeline.sweep() == 0
            with pytest.raises(Overloaded):
                await runtime.pipeline.accept(inbound(9))
            assert inbound_count(app.db) == 5
            release.set()

            async def all_answered() -> None:
                while len(channel.sent) < 5:
                    await runtime.pipeline.sweep()  # instead of waiting for the sweeper's interval
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(all_answered(), WAIT)
        assert (await runtime.pipeline.accept(inbound(9))).status is Acceptance.ACCEPTED


# -- the bound itself ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_retry_after_is_the_time_to_answer_what_waits_at_the_recent_rate() -> None:
    clock = Clock()
    limit = InboundLimit(50, clock=clock)
    assert limit.retry_after(50) == MAX_RETRY_SECONDS  # nothing answered yet: the workers may be stuck
    for _ in range(100):  # 10 answers a second for 10 s
        clock.now += 0.1
        limit.answered()
    assert limit.retry_after(50) == 5
    assert limit.retry_after(1) == 1  # never below one second
    clock.now += 25  # nothing answered for a while
    assert limit.retry_after(50) == MAX_RETRY_SECONDS


def test_overload_is_logged_once_a_minute_with_the_number_refused(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limit = InboundLimit(1, clock=clock)
    caplog.set_level(logging.WARNING, logger="bot.backpressure")
    for _ in range(500):
        clock.now += 0.1
        with pytest.raises(Overloaded), limit.slot(1):
            pass
    warnings = [r.getMessage() for r in caplog.records if r.name == "bot.backpressure"]
    assert len(warnings) == 1 and "refused 1 message" in warnings[0]
    clock.now += 15
    with pytest.raises(Overloaded), limit.slot(1):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.name == "bot.backpressure"]
    assert len(warnings) == 2 and "refused 500 message(s)" in warnings[1]
    assert limit.refused == 501


def test_max_pending_is_validated() -> None:
    assert Settings().pipeline.max_pending == 1000
    with pytest.raises(ConfigError, match="pipeline.max_pending"):
        settings_from_mapping({"pipeline": {"max_pending": 0}})


# -- each channel's answer -----------------------------------------------------------------------------


async def test_http_api_answers_503_with_retry_after(settings: Settings) -> None:
    async with running_api(small_queue(settings)) as api:
        with answers_held(api.app.retriever) as release:
            first = await api.post({"requester_id": "alice", "text": "my vpn drops", "message_id": "a-1"})
            assert first.status_code == 202
            busy = await api.post({"requester_id": "bob", "text": "my vpn drops", "message_id": "b-1"})
            assert busy.status_code == 503
            assert 1 <= int(busy.headers["Retry-After"]) <= MAX_RETRY_SECONDS
            assert "try again" in busy.json()["error"]
            assert inbound_count(api.app.db) == 1
            release.set()
            await api.replies("alice", count=1)
        retried = await api.post({"requester_id": "bob", "text": "my vpn drops", "message_id": "b-1"})
        assert retried.status_code == 202
        await api.replies("bob", count=1)


async def test_slack_event_gets_503_and_its_retry_is_taken(tmp_path: Path, database_url: str) -> None:
    fake = FakeSlack(users={ALICE: "Alice Example"})
    async with running_slack(tmp_path, database_url, fake, pipeline={"workers": 1, "max_pending": 1}) as slack:
        with answers_held(slack.app.retriever) as release:
            first_ts, second_ts = next_ts(), next_ts()
            assert (await slack.post(event_body(dm("my vpn drops", ts=first_ts)))).status_code == 200
            second = event_body(dm("my vpn drops again", ts=second_ts))
            busy = await slack.post(second)
            assert busy.status_code == 503
            assert 1 <= int(busy.headers["Retry-After"]) <= MAX_RETRY_SECONDS
            # A slash command is not retried by Slack: the person is told instead.
            busy_text = slack_messages.BUSY.split("{")[0]
            answer = await slack.post_form(command("my printer is broken"))
            assert answer.status_code == 200
            assert answer.json()["text"].startswith(busy_text)
            # Nor is a button press: acknowledged, and the person told privately.
            press = button_press(
                value=Action.HUMAN, action_id=f"{REPLY_ACTION}_human", channel=ALICE_DM, message_ts=first_ts
            )
            assert (await slack.press(press)).status_code == 200
            [told] = await slack.api.wait_for("chat.postEphemeral", channel=ALICE_DM, user=ALICE)
            assert told.args["text"].startswith(busy_text)
            release.set()
            await slack.api.wait_for("chat.postMessage", channel=ALICE_DM, thread_ts=first_ts)
        assert (await slack.post(second, retry=1)).status_code == 200
        await slack.api.wait_for("chat.postMessage", channel=ALICE_DM, thread_ts=second_ts)
        assert inbound_count(slack.app.db) == 2


async def test_teams_answers_503_with_retry_after_and_logs_no_error(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    key = SigningKey(kid="bp-key")
    fake = FakeBotFramework(keys=[key])
    async with serving(fake.app()) as url:
        fake.base_url = url
        async with running_teams(small_queue(settings), fake, key) as teams:
            with answers_held(teams.app.retriever) as release:
                assert (await teams.post(activity(fake, text="my vpn drops"))).status_code == 202
                second = activity(fake, text="my vpn drops again", conversation="a:personal-chat-with-bob")
                busy = await teams.post(second)
                assert busy.status_code == 503
                assert 1 <= int(busy.headers["Retry-After"]) <= MAX_RETRY_SECONDS
                assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
                release.set()
                await teams.outbox_settled(1)
            assert (await teams.post(second)).status_code == 202  # Teams redelivers
            await teams.outbox_settled(2)
            assert teams.inbound_count() == 2


async def test_smtp_answers_451_at_data_and_the_resent_mail_is_taken(tmp_path: Path, database_url: str) -> None:
    sink = Sink()  # the outbound relay
    relay = await asyncio.get_running_loop().create_server(lambda: SMTP(sink, hostname="relay.test"), "127.0.0.1", 0)
    sink.port = relay.sockets[0].getsockname()[1]
    settings = small_queue(email_settings(tmp_path, database_url, sink.port))
    room = await open_mailroom(settings, sink)
    try:
        with answers_held(room.app.retriever) as release:
            await room.asend(mail("VPN", "my vpn keeps dropping", message_id="first@example.org"))
            second = mail("VPN again", "my vpn keeps dropping", message_id="second@example.org")
            with pytest.raises(smtplib.SMTPDataError) as refused:
                await room.asend(second)
            assert refused.value.smtp_code == 451
            assert refused.value.smtp_error.decode().startswith("4.3.2 System busy")
            assert inbound_count(room.app.db) == 1
            release.set()
            await until(lambda: len(sink.mails) == 1, "the first answer at the relay")
        await room.asend(second)  # the sender's MTA retries
        assert inbound_count(room.app.db) == 2
        await until(lambda: len(sink.mails) == 2, "the second answer at the relay")
    finally:
        await close_mailroom(room)
        relay.close()
        await relay.wait_closed()


async def test_portal_answers_503_and_a_friendly_page(tmp_path: Path, database_url: str) -> None:
    async with running_web(small_queue(web_settings(tmp_path, database_url))) as web:
        erin = await web.person(name="Erin")
        with answers_held(web.app.retriever):
            sent = await erin.api("POST", "/portal/messages", json={"text": "my vpn drops", "client_id": "c-1"})
            assert sent.status_code == 202
            busy = await erin.api("POST", "/portal/messages", json={"text": "and wifi", "client_id": "c-2"})
            assert busy.status_code == 503
            assert busy.json()["error"] == web_texts.CHAT_BUSY
            assert 1 <= int(busy.headers["Retry-After"]) <= MAX_RETRY_SECONDS
            # Without JavaScript the form posts: a page that says what happened.
            page = await erin.client.post(
                "/portal/messages", data={"csrf": erin.csrf, "text": "and wifi", "client_id": "c-3"}
            )
            assert page.status_code == 503
            assert web_texts.CHAT_BUSY in page.text
            assert "Retry-After" in page.headers
            assert inbound_count(web.app.db) == 1
