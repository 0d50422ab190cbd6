"""The agent console over HTTP: queues, the ticket page, actions, internal notes, live updates, tokens CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from bot import handoff
from bot.cli import main
from tests.channels.web.conftest import Web
from ticketing.access import ApiToken, token_digest
from ticketing.db import Database
from ticketing.models import Message, Ticket


async def test_queues_show_what_each_agent_works(web: Web) -> None:
    network = web.ticket(group="network")
    hardware = web.ticket(group="hardware", requester="gail@demo.local", subject="Laptop dead")
    alice = await web.person(agent="alice@example.com")
    unassigned = await alice.client.get("/console?queue=unassigned")
    assert unassigned.status_code == 200
    assert network in unassigned.text and hardware not in unassigned.text
    assert (await alice.client.get(f"/console/tickets/{hardware}")).status_code == 403

    taken = await alice.client.post(f"/console/tickets/{network}/take", data={"csrf": alice.csrf})
    assert "notice=" in taken.headers["location"]
    mine = await alice.client.get("/console?queue=mine")
    assert network in mine.text
    assert network not in (await alice.client.get("/console?queue=unassigned")).text
    fragment = await alice.client.get("/console/queue?queue=mine")
    assert fragment.status_code == 200 and "<html" not in fragment.text and network in fragment.text

    erin = await web.person(name="Erin")
    assert (await erin.client.get("/console")).status_code == 403
    assert (await erin.client.get("/dashboard")).status_code == 403
    assert (await web.client().get("/console")).status_code == 303


async def test_notes_stay_internal_and_replies_reach_the_requester(web: Web) -> None:
    number = web.ticket(group="network")
    dana = await web.person(agent="dana@example.com")
    for action, form in (
        ("take", {}),
        ("note", {"text": "Suspect the home router; do not tell the user yet"}),
        ("reply", {"text": "Could you restart your router?", "source_id": "form-1"}),
        ("reply", {"text": "Could you restart your router?", "source_id": "form-1"}),  # a double-submitted form
        ("update", {"priority": "high", "tier": "2", "category": "network", "group": "network"}),
    ):
        done = await dana.client.post(f"/console/tickets/{number}/{action}", data={"csrf": dana.csrf, **form})
        assert "notice=" in done.headers["location"], (action, done.headers["location"])
    bad = await dana.client.post(f"/console/tickets/{number}/update", data={"csrf": dana.csrf, "tier": "seven"})
    assert "error=tier" in bad.headers["location"]

    page = await dana.client.get(f"/console/tickets/{number}")
    assert "Suspect the home router" in page.text and "internal note" in page.text
    assert "changed priority normal → high" in page.text

    erin = await web.person(name="Erin")
    chat = (await erin.client.get("/portal/messages")).json()["messages"]
    assert [(m["author"], m["text"]) for m in chat if m["kind"] == "agent"] == [
        ("Dana", "Could you restart your router?")
    ]
    assert "Suspect" not in (await erin.client.get(f"/tickets/{number}")).text
    assert "Suspect" not in (await erin.api("GET", f"/api/v1/tickets/{number}")).text
    with web.db.transaction() as session:
        texts = [m.text for m in session.scalars(select(Message))]
        assert not any("Suspect" in text for text in texts)

    handed = await dana.client.post(f"/console/tickets/{number}/handback", data={"csrf": dana.csrf})
    assert "notice=" in handed.headers["location"]
    with web.db.transaction() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.number == number))
        assert ticket is not None and ticket.assignee is None and (ticket.priority, ticket.tier) == ("high", 2)


async def test_replies_from_agents_on_other_channels_show_their_names(web: Web) -> None:
    number = web.ticket()
    handoff.take(web.db, number=number, agent="slack:T1:U9", channel="slack")
    handoff.reply(
        web.db, number=number, agent="slack:T1:U9", text="Try again now.", channel="slack", agent_name="Sam Slack"
    )
    erin = await web.person(name="Erin")
    chat = (await erin.client.get("/portal/messages")).json()["messages"]
    assert [(m["author"], m["text"]) for m in chat if m["kind"] == "agent"] == [("Sam Slack", "Try again now.")]
    dana = await web.person(agent="dana@example.com")
    page = await dana.client.get(f"/console/tickets/{number}")
    assert page.status_code == 200 and "Sam Slack" in page.text


async def test_ticket_page_updates_live_when_the_requester_writes(web: Web) -> None:
    erin = await web.person(name="Erin")
    sent = await erin.api(
        "POST", "/portal/messages", json={"text": "Talk to a person", "action": "human", "client_id": "h1"}
    )
    assert sent.status_code == 202
    carol = await web.person(agent="carol@example.com")
    number = ""
    for _ in range(300):
        with web.db.transaction() as session:
            number = session.scalar(select(Ticket.number)) or ""
        if number:
            break
        await asyncio.sleep(0.05)
    assert number, "the escalation did not open a ticket"
    async with carol.client.stream("GET", f"/console/tickets/{number}/stream") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        markers = []
        async for line in stream.aiter_lines():
            if not line.startswith("data: "):
                continue
            markers.append(json.loads(line[6:])["marker"])
            if len(markers) == 1:  # the state as the page opened it; now the requester writes
                follow_up = await erin.api("POST", "/portal/messages", json={"text": "It is urgent", "client_id": "h2"})
                assert follow_up.status_code == 202
            else:
                break
        assert len(markers) == 2 and markers[0] != markers[1]
    timeline = await carol.client.get(f"/console/tickets/{number}/timeline")
    assert "It is urgent" in timeline.text


def test_tokens_command_creates_lists_and_revokes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    config = tmp_path / "config.yaml"
    config.write_text(f"data_dir: {tmp_path}\ndatabase:\n  url: {url}\nchannels: {{}}\n", encoding="utf-8")
    runner = CliRunner()
    created = runner.invoke(
        main, ["--config", str(config), "tokens", "create", "--agent", "alice@example.com", "--role", "admin"]
    )
    assert created.exit_code == 0, created.output
    token = created.output.strip().splitlines()[-1]
    assert token.startswith("tzk_")
    database = Database(url)
    try:
        with database.transaction() as session:
            row = session.scalar(select(ApiToken))
            assert row is not None and row.token_sha256 == token_digest(token) and token not in row.hint + row.agent
            assert (row.agent, row.role) == ("alice@example.com", "admin")
    finally:
        database.dispose()
    listed = runner.invoke(main, ["--config", str(config), "tokens", "list"])
    assert "alice@example.com" in listed.output and token not in listed.output
    assert runner.invoke(main, ["--config", str(config), "tokens", "revoke", "1"]).exit_code == 0
    assert "revoked" in runner.invoke(main, ["--config", str(config), "tokens", "list"]).output
    refused = runner.invoke(main, ["--config", str(config), "tokens", "create", "--agent", "x", "--role", "requester"])
    assert refused.exit_code != 0
