"""The portal, console and dashboard in a real browser (Chromium from the OS, driven by Playwright).

A requester asks in the portal and escalates; an agent takes the ticket in the
console and replies; the requester sees the reply arrive live, marks the ticket
solved and rates it. Screenshots of the three pages are saved under
$TIERZERO_TEST_ARTIFACTS (default: the test's tmp_path).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.channels.web.conftest import serve_in_thread, web_app, web_settings
from ticketing.db import Database
from ticketing.models import Ticket, TicketEvent

CHROMIUM = os.environ.get("TIERZERO_CHROMIUM", "/usr/bin/chromium")
TIMEOUT_MS = 20_000

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("TIERZERO_TEST_ARTIFACTS") or tmp_path) / "web-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nweb screenshots: {folder}")
    return folder


def test_requester_and_agent_in_a_real_browser(tmp_path: Path, artifacts: Path) -> None:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"Chromium not found at {CHROMIUM} (Debian package `chromium`; .ci/run installs it)")
    url = f"sqlite:///{tmp_path / 'web.db'}"
    database = Database(url)
    database.migrate()
    database.dispose()
    app, asgi = web_app(web_settings(tmp_path, url))
    try:
        with serve_in_thread(asgi) as base_url, playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
            try:
                run_scenario(browser, base_url, artifacts)
            finally:
                browser.close()
        with app.db.transaction() as session:
            ticket = session.scalar(select(Ticket))
            assert ticket is not None
            assert (ticket.status, ticket.csat_score, ticket.assignee) == ("resolved", 5, "web:carol@example.com")
            resolved = session.scalar(select(TicketEvent).where(TicketEvent.kind == "resolved"))
            assert resolved is not None and resolved.actor == "requester:web:erin.example@demo.local"
            kinds = [e.kind for e in session.scalars(select(TicketEvent).order_by(TicketEvent.id))]
            assert kinds[:1] == ["opened"] and {"taken", "agent_reply", "resolved", "csat"} <= set(kinds)
    finally:
        app.db.dispose()
    for name in ("portal.png", "console.png", "dashboard.png"):
        assert (artifacts / name).stat().st_size > 1000


def run_scenario(browser: object, base_url: str, artifacts: Path) -> None:
    requester = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    agent = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    requester.set_default_timeout(TIMEOUT_MS)
    agent.set_default_timeout(TIMEOUT_MS)
    expect = playwright_api.expect
    expect.set_options(timeout=TIMEOUT_MS)

    # The requester signs in (demo mode), asks, gets a knowledge-base answer, asks for a person.
    portal = requester.new_page()
    portal.on("pageerror", lambda error: print(f"portal page error: {error}"))
    portal.goto("/")
    expect(portal.locator(".demo-banner")).to_contain_text("LOCAL DEMO MODE")
    portal.fill("#signin-requester input[name=name]", "Erin Example")
    portal.click("#signin-requester button")
    portal.wait_for_selector("#chat-form[data-ready]")
    portal.fill("#chat-text", "My VPN keeps dropping every few minutes")
    portal.press("#chat-text", "Enter")
    expect(portal.locator("#messages .message.bot").last).to_contain_text("Wi-Fi power saving")
    expect(portal.locator("#messages .citations a").first).to_have_attribute("href", "/kb/vpn-drops")
    portal.locator("#messages button[data-action=human]").last.click()
    expect(portal.locator("#messages")).to_contain_text("I've opened ticket TZ-1001")
    expect(portal.locator("#open-tickets a")).to_have_text("TZ-1001")
    portal.screenshot(path=str(artifacts / "portal.png"), full_page=True)

    # An agent finds it in the console queue, takes it and replies.
    console = agent.new_page()
    console.goto("/signin")
    console.click("button[data-agent='carol@example.com']")
    console.goto("/console?queue=unassigned")
    console.click("text=TZ-1001")
    expect(console.locator("#timeline")).to_contain_text("My VPN keeps dropping every few minutes")
    console.click("#take")
    expect(console.locator("#ticket-assignee")).to_have_text("web:carol@example.com")
    console.fill("#note-text", "Checked the gateway logs: nothing unusual.")
    console.click("#note-form button")
    console.fill("#reply-text", "Hi Erin, please try a network cable and tell me if it still drops.")
    console.click("#reply-send")
    expect(console.locator(".flash.notice")).to_contain_text("Reply sent")
    expect(console.locator("#timeline")).to_contain_text("internal note")

    # The requester's open page shows the reply without reloading (server-sent events); never the note.
    expect(portal.locator("#messages")).to_contain_text("please try a network cable")
    assert "gateway logs" not in portal.content()

    # The requester answers; the agent's open ticket page updates live.
    portal.fill("#chat-text", "Cable works, thanks!")
    portal.press("#chat-text", "Enter")
    expect(console.locator("#timeline")).to_contain_text("Cable works, thanks!")
    console.screenshot(path=str(artifacts / "console.png"), full_page=True)

    # The requester says it is solved on their ticket page; the agent's open page follows live.
    tickets = requester.new_page()
    tickets.goto("/tickets/TZ-1001")
    expect(tickets.locator("#ticket-status")).to_have_text("open")
    tickets.click("#solved")
    expect(tickets.locator("#ticket-status")).to_have_text("resolved")
    expect(console.locator("#ticket-status")).to_have_text("resolved")
    # Asked for a rating in the chat and on the ticket page; the requester rates 5 in the chat.
    with portal.expect_response("**/portal/messages") as rating:
        portal.locator("#messages button[data-action='rate:5']").last.click()
    assert rating.value.status == 202
    # The rating is recorded by the pipeline a moment later: look until it shows.
    for _ in range(100):
        tickets.reload()
        if tickets.locator("#csat-score").count():
            break
        tickets.wait_for_timeout(200)
    expect(tickets.locator("#csat-score")).to_have_text("5/5")

    dashboard = agent.new_page()
    dashboard.goto("/dashboard")
    expect(dashboard.locator("svg.chart").first).to_be_visible()
    dashboard.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)
    requester.close()
    agent.close()
