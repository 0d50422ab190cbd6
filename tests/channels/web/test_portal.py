"""The self-service portal over HTTP: sign-in modes, the chat (web-chat channel), KB pages, my tickets, rating."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.app import TierZero
from bot.config import ConfigError
from bot.registry import build_channels
from tests.channels.web.conftest import WAIT_SECONDS, Person, Web, running_web, web_app, web_settings
from tests.conftest import make_settings
from ticketing.models import Message, Ticket


async def chat_until(person: Person, done: Callable[[list[dict[str, Any]]], bool], what: str) -> list[dict[str, Any]]:
    """The portal conversation, polled until ``done(messages)``."""
    chat: list[dict[str, Any]] = []

    async def fetch() -> bool:
        response = await person.client.get("/portal/messages")
        assert response.status_code == 200
        chat[:] = response.json()["messages"]
        return done(chat)

    deadline = time.monotonic() + WAIT_SECONDS
    while not await fetch():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; chat: {chat}")
        await asyncio.sleep(0.05)
    return chat


async def test_chat_goes_through_the_pipeline_once_per_message(web: Web) -> None:
    erin = await web.person(name="Erin Example")
    sent = await erin.api("POST", "/portal/messages", json={"text": "my vpn keeps dropping", "client_id": "c-1"})
    assert sent.status_code == 202 and sent.json()["status"] == "accepted"
    chat = await chat_until(erin, lambda c: len(c) >= 2, "the answer")
    assert [m["mine"] for m in chat] == [True, False]
    answer = chat[1]
    assert answer["kind"] == "answer" and "Wi-Fi power saving" in str(answer["text"])
    assert [c["article_id"] for c in answer["citations"]] == ["vpn-drops"]  # type: ignore[union-attr]
    assert {"label": "Talk to a person", "action": "human"} in answer["buttons"]  # type: ignore[operator]

    # The browser retries with the same client id: stored once, answered once.
    again = await erin.api("POST", "/portal/messages", json={"text": "my vpn keeps dropping", "client_id": "c-1"})
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    with web.db.transaction() as session:
        assert session.scalar(select(func.count(Message.id)).where(Message.direction == "in")) == 1

    escalated = await erin.api(
        "POST", "/portal/messages", json={"text": "Talk to a person", "action": "human", "client_id": "c-2"}
    )
    assert escalated.status_code == 202
    chat = await chat_until(erin, lambda c: bool(c[-1].get("ticket_number")), "the ticket")
    number = str(chat[-1]["ticket_number"])
    with web.db.transaction() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.number == number))
        assert ticket is not None and ticket.requester.platform_id == "erin.example@demo.local"
    mine = await erin.client.get("/tickets")
    assert number in mine.text
    assert "my vpn keeps dropping" in (await erin.client.get(f"/tickets/{number}")).text


async def test_chat_refuses_bad_input_clearly(web: Web) -> None:
    erin = await web.person(name="Erin")
    anonymous = web.client()
    assert (await anonymous.post("/portal/messages", json={"text": "hi", "client_id": "x"})).status_code == 401
    no_csrf = await erin.client.post("/portal/messages", json={"text": "hi", "client_id": "x"})
    assert no_csrf.status_code == 403
    empty = await erin.api("POST", "/portal/messages", json={"text": "   ", "client_id": "x"})
    assert empty.status_code == 422 and empty.json()["field"] == "text"
    too_long = await erin.api("POST", "/portal/messages", json={"text": "a" * 20_001, "client_id": "y"})
    assert too_long.status_code == 422 and "limit" in too_long.json()["error"]
    for body, field in (({"text": "hi"}, "client_id"), ({"text": 5, "client_id": "z"}, "text")):
        response = await erin.api("POST", "/portal/messages", json=body)
        assert response.status_code == 422 and response.json()["field"] == field
    broken = await erin.api(
        "POST", "/portal/messages", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 422 and broken.json()["field"] == "body"


async def test_live_stream_pushes_new_messages(web: Web) -> None:
    erin = await web.person(name="Erin")
    async with erin.client.stream("GET", "/portal/stream?after=0") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        sent = await erin.api("POST", "/portal/messages", json={"text": "printer", "client_id": "s-1"})
        assert sent.status_code == 202
        seen: list[str] = []
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                seen.extend(str(m["text"]) for m in json.loads(line[6:])["messages"])
            if any("more than one article" in text for text in seen):
                break
    assert seen[0] == "printer"


async def test_kb_search_and_article_pages(web: Web) -> None:
    erin = await web.person(name="Erin")
    results = await erin.client.get("/kb", params={"q": "vpn keeps dropping"})
    assert results.status_code == 200 and "/kb/vpn-keeps-disconnecting" in results.text
    assert "default-src 'self'" in results.headers["content-security-policy"]
    article = await erin.client.get("/kb/vpn-keeps-disconnecting")
    assert article.status_code == 200 and "<h1>VPN keeps disconnecting</h1>" in article.text
    assert (await erin.client.get("/kb/no-such-article")).status_code == 404
    # Markup in a query is shown as text, never run.
    echoed = await erin.client.get("/kb", params={"q": "<script>alert(1)</script>"})
    assert "<script>alert(1)</script>" not in echoed.text and "&lt;script&gt;" in echoed.text
    api = await erin.client.get("/api/v1/kb/search", params={"q": "printer"})
    assert api.status_code == 200 and api.json()["articles"][0]["url"].startswith("/kb/")


async def test_my_tickets_are_mine_only_and_can_be_rated_after_resolution(web: Web) -> None:
    mine = web.ticket(requester="erin@demo.local")
    theirs = web.ticket(requester="frank@demo.local", subject="Printer jammed")
    erin = await web.person(name="Erin")
    listing = await erin.client.get("/tickets")
    assert mine in listing.text and theirs not in listing.text
    assert (await erin.client.get(f"/tickets/{theirs}")).status_code == 404
    refused = await erin.client.post(f"/tickets/{theirs}/solved", data={"csrf": erin.csrf})
    assert refused.status_code == 404
    with web.db.transaction() as session:
        assert session.scalar(select(Ticket.status).where(Ticket.number == theirs)) == "new"
    early = await erin.client.post(f"/tickets/{mine}/rating", data={"csrf": erin.csrf, "score": "4"})
    assert "resolved" in early.headers["location"]

    carol = await web.person(agent="carol@example.com")
    for action in ("take", "resolve"):
        done = await carol.client.post(f"/console/tickets/{mine}/{action}", data={"csrf": carol.csrf})
        assert "notice=" in done.headers["location"], done.headers["location"]
    page = await erin.client.get(f"/tickets/{mine}")
    assert 'id="csat-form"' in page.text
    forged = await erin.client.post(f"/tickets/{mine}/rating", data={"csrf": "forged", "score": "1"})
    assert forged.status_code == 403
    rated = await erin.client.post(
        f"/tickets/{mine}/rating", data={"csrf": erin.csrf, "score": "5", "comment": "Quick!"}
    )
    assert "notice=" in rated.headers["location"]
    with web.db.transaction() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.number == mine))
        assert ticket is not None and (ticket.csat_score, ticket.csat_comment) == (5, "Quick!")
    assert (
        await erin.client.post(f"/tickets/{theirs}/rating", data={"csrf": erin.csrf, "score": "1"})
    ).status_code == 404


async def test_sign_in_redirects_only_to_local_paths(web: Web) -> None:
    client = web.client()
    assert (await client.get("/")).headers["location"] == "/signin?next=%2F"
    for target, expected in (("//evil.example/x", "/"), ("https://evil.example", "/"), ("/kb", "/kb")):
        response = await client.post("/signin", data={"name": "Erin", "next": target})
        assert response.headers["location"] == expected


async def test_proxy_sign_in_trusts_the_header_only_from_the_proxy(tmp_path: Path, database_url: str) -> None:
    settings = web_settings(
        tmp_path, database_url, sign_in="proxy", proxy={"header": "X-Remote-User", "trusted_proxies": ["127.0.0.1/32"]}
    )
    async with running_web(settings) as web:
        client = web.client()
        assert (await client.get("/", headers={"X-Remote-User": "erin@example.com"})).status_code == 200
        assert (await client.get("/")).status_code == 303
        console = await client.get("/console", headers={"X-Remote-User": "alice@example.com"})
        assert console.status_code == 200
    untrusted = web_settings(tmp_path, database_url, sign_in="proxy", proxy={"trusted_proxies": ["10.9.9.9"]})
    async with running_web(untrusted) as web:
        response = await web.client().get("/tickets", headers={"X-Forwarded-Email": "erin@example.com"})
        assert response.status_code == 303  # the header is ignored: not from the proxy


async def test_email_link_sign_in(tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    settings = web_settings(
        tmp_path,
        database_url,
        sign_in="email_link",
        secret_key="k" * 40,
        email_link={"allowed_domains": ["example.com"]},
    )
    async with running_web(settings) as web:
        client = web.client()
        refused = await client.post("/signin", data={"email": "erin@elsewhere.org"})
        assert "error=" in refused.headers["location"]
        sent = await client.post("/signin", data={"email": "Erin@Example.com"})
        assert "notice=" in sent.headers["location"]
        link = next(line.rsplit(" ", 1)[1] for line in capsys.readouterr().err.splitlines() if "/signin/link?" in line)
        path = link.split("127.0.0.1", 1)[1].split(":", 1)[1].split("/", 1)[1]
        signed_in = await client.get("/" + path)
        assert signed_in.status_code == 303 and "tierzero_session" in signed_in.headers["set-cookie"]
        assert (await client.get("/tickets")).status_code == 200
        tampered = await web.client().get("/" + path[:-3] + "abc")
        assert tampered.status_code == 401


def test_config_refuses_unsafe_set_ups(tmp_path: Path) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"server": {"host": "0.0.0.0"}, "channels": {"web": {}}}, "loopback"),
        ({"channels": {"web": {"sign_in": "email_link"}}}, "secret_key"),
        ({"channels": {"web": {"sign_in": "proxy"}}}, "trusted_proxies"),
        ({"channels": {"web": {"secret_key": "short"}}}, "at least 32"),
        ({"channels": {"web": {"proxy": {"trusted_proxies": ["not-an-ip"]}}}}, "not an IP"),
    ]
    for overrides, message in cases:
        settings = make_settings(tmp_path, None, **overrides)
        tierzero = TierZero(settings)
        try:
            with pytest.raises(ConfigError, match=message):
                build_channels(tierzero.channel_context())
        finally:
            tierzero.db.dispose()


def test_the_web_channel_is_registered_and_describes_its_mode(tmp_path: Path) -> None:
    app, _ = web_app(web_settings(tmp_path, f"sqlite:///{tmp_path / 'x.db'}"))
    try:
        channels = build_channels(app.channel_context())
        assert "LOCAL DEMO MODE" in channels.enabled[0].describe()
    finally:
        app.db.dispose()
