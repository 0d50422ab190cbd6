"""Every recorded Teams activity in the shared eval set is normalised correctly or ignored on purpose.

The files are read from ``EVAL_DIR`` (never copied here): Teams activities from the
botbuilder and Teams docs test data, and the Teams webhooks of the replay set.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from channels.teams.normalise import (
    BotAdded,
    Ignored,
    MessageDeleted,
    MessageEdited,
    TeamsMessage,
    normalise,
    tenant_of,
    to_inbound,
)
from tests.channels.teams.conftest import running_teams
from tests.channels.teams.fakes import FakeBotFramework, SigningKey
from tests.conftest import EVAL_DIR

TEAMS_DIR = EVAL_DIR / "channels" / "teams"
REPLAY_DIR = EVAL_DIR / "channels" / "replay"


def eval_files() -> list[Path]:
    if not TEAMS_DIR.is_dir() or not REPLAY_DIR.is_dir():
        pytest.skip(f"shared eval data not found at {EVAL_DIR} (set TIERZERO_EVAL_DIR)")
    replay = sorted(p for p in REPLAY_DIR.rglob("*.json") if "teams" in p.name.lower())
    return sorted(TEAMS_DIR.rglob("*.json")) + replay


def recorded(path: Path) -> Iterator[tuple[str, Any]]:
    """Each payload a file holds: the file itself, or, for replay fixtures, each named webhook body."""
    data = json.loads(path.read_text(encoding="utf-8-sig"))  # some botbuilder files start with a BOM
    if path.is_relative_to(REPLAY_DIR):
        for name, value in data.items():
            if isinstance(value, dict):
                yield f"{path.relative_to(EVAL_DIR)}#{name}", value
    else:
        yield str(path.relative_to(EVAL_DIR)), data


def all_payloads() -> list[tuple[str, Any]]:
    return [payload for path in eval_files() for payload in recorded(path)]


def test_every_recorded_activity_is_normalised_or_ignored_on_purpose() -> None:
    outcomes: Counter[str] = Counter()
    for where, payload in all_payloads():
        event = normalise(payload)
        outcomes[type(event).__name__] += 1
        match event:
            case TeamsMessage():
                check_message(where, payload, event)
            case MessageEdited() | MessageDeleted():
                assert event.conversation_id == payload["conversation"]["id"], where
            case BotAdded():
                assert event.reference["conversation"]["id"] == payload["conversation"]["id"], where
                assert event.reference["serviceUrl"] == payload["serviceUrl"], where
            case Ignored(reason=reason):
                assert reason, where
                assert not _is_a_person_writing_to_the_bot(payload), f"{where}: a message was ignored: {reason}"
    print(json.dumps(dict(outcomes)))
    assert outcomes["TeamsMessage"] >= 10 and outcomes["Ignored"] >= 10, outcomes


def check_message(where: str, payload: dict[str, Any], event: TeamsMessage) -> None:
    assert event.conversation_id == payload["conversation"]["id"], where
    assert event.activity_id == payload["id"], where
    assert event.sender_id == payload["from"]["id"], where
    assert event.aad_object_id == payload["from"].get("aadObjectId"), where
    assert event.tenant_id == tenant_of(payload), where
    assert "<at>" not in event.text and "</at>" not in event.text, where
    bot = payload["recipient"]
    if event.mentions_bot and any(e.get("text") == f"<at>{bot.get('name')}</at>" for e in payload.get("entities", [])):
        assert bot["name"] not in event.text, f"{where}: the bot's mention was not stripped: {event.text!r}"
    inbound = to_inbound(event)
    assert inbound.channel_message_id.endswith(payload["id"]), where
    assert inbound.channel_data is not None and inbound.channel_data["reference"]["serviceUrl"] == payload["serviceUrl"]


def _is_a_person_writing_to_the_bot(payload: Any) -> bool:
    """A personal-chat or @mention message from a person, with text: must never be ignored."""
    if not isinstance(payload, dict) or payload.get("type") != "message" or not payload.get("text"):
        return False
    if str(payload.get("from", {}).get("id", "")).startswith("28:") or "value" in payload:
        return False
    return True


def test_mentions_are_stripped_from_recorded_channel_messages() -> None:
    texts = {where: normalise(p) for where, p in all_payloads() if "#mention" in where or "AtMention" in where}
    stripped = {where: e.text for where, e in texts.items() if isinstance(e, TeamsMessage)}
    assert stripped, "no recorded mentions found"
    for where, text in stripped.items():
        assert not text.startswith("Chat SDK Demo"), where


async def test_every_recorded_activity_gets_a_4xx_or_2xx_answer_from_the_server(
    settings: Settings, bot_framework: FakeBotFramework, signing_key: SigningKey
) -> None:
    """Replayed through the real endpoint (local-development mode: the recordings' tokens are gone,
    and their serviceUrl is pointed at the fake connector): never a 500."""
    bot_framework.require_auth = False
    statuses: Counter[int] = Counter()
    async with running_teams(
        settings, bot_framework, signing_key, app_id=None, app_password=None, local_development=True, tenants=[]
    ) as teams:
        for where, payload in all_payloads():
            if isinstance(payload, dict) and "serviceUrl" in payload:
                payload = {**payload, "serviceUrl": bot_framework.service_url}
            response = await teams.client.post("/api/messages", json=payload)
            statuses[response.status_code] += 1
            assert response.status_code in (200, 202, 400), f"{where}: {response.status_code} {response.text}"
        await teams.runtime.outbox.deliver_due()
    print(json.dumps({str(status): count for status, count in sorted(statuses.items())}))
    assert statuses[202] >= 5, statuses
