"""Role checks on every REST endpoint: 401 without credentials, 403 when not allowed, 422 naming the field."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.channels.web.conftest import Web
from ticketing.access import Role, revoke_api_token
from ticketing.models import TicketEvent
from ticketing.service_desk_models import RoutingCorrection

NUMBER = "TZ-1001"
ENDPOINTS = [
    ("GET", "/api/v1/tickets", None),
    ("GET", f"/api/v1/tickets/{NUMBER}", None),
    ("PATCH", f"/api/v1/tickets/{NUMBER}", {"priority": "high"}),
    ("POST", f"/api/v1/tickets/{NUMBER}/reply", {"text": "hello"}),
    ("POST", f"/api/v1/tickets/{NUMBER}/notes", {"text": "internal"}),
    ("POST", f"/api/v1/tickets/{NUMBER}/take", None),
    ("POST", f"/api/v1/tickets/{NUMBER}/hand-back", None),
    ("POST", f"/api/v1/tickets/{NUMBER}/pending", None),
    ("POST", f"/api/v1/tickets/{NUMBER}/resolve", {}),
    ("GET", "/api/v1/conversations", None),
    ("GET", "/api/v1/conversations/1", None),
    ("GET", "/api/v1/kb/search?q=vpn", None),
    ("GET", "/api/v1/metrics", None),
]
AGENT_ONLY = [e for e in ENDPOINTS if e[0] != "GET" or e[1] == "/api/v1/metrics"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_every_endpoint_needs_credentials(web: Web) -> None:
    web.ticket()
    erin = await web.person(name="Erin")
    revoked = web.token("alice@example.com")
    with web.db.transaction() as session:
        revoke_api_token(session, token_id=1)
    for method, path, body in ENDPOINTS:
        for headers in ({}, bearer("tzk_not-a-real-token"), bearer(revoked), {"Authorization": "Basic abc"}):
            response = await web.client().request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
        if method != "GET":
            # A browser session changes nothing without the CSRF header (a cross-site form cannot send it).
            response = await erin.client.request(method, path, json=body)
            assert response.status_code == 401, (method, path, response.text)


async def test_requesters_see_only_their_own_tickets_and_never_act_as_agents(web: Web) -> None:
    mine = web.ticket(requester="erin@demo.local")
    theirs = web.ticket(requester="frank@demo.local", subject="Printer jammed")
    carol = bearer(web.token("carol@example.com", Role.ADMIN))
    note = await (await web.person(name="Erin")).client.get("/")  # session created before the note
    assert note.status_code == 200
    response = await web.client().post(f"/api/v1/tickets/{mine}/notes", json={"text": "SECRET note"}, headers=carol)
    assert response.status_code == 201, response.text
    erin = await web.person(name="Erin")

    listing = (await erin.api("GET", "/api/v1/tickets")).json()["tickets"]
    assert [t["number"] for t in listing] == [mine]
    own = await erin.api("GET", f"/api/v1/tickets/{mine}")
    assert own.status_code == 200
    assert "SECRET" not in own.text and not any(item["internal"] for item in own.json()["timeline"])
    assert (await erin.api("GET", f"/api/v1/tickets/{theirs}")).status_code == 403
    assert (await erin.api("GET", "/api/v1/tickets?queue=unassigned")).status_code == 403
    for method, path, body in AGENT_ONLY:
        response = await erin.api(method, path.replace(NUMBER, mine), json=body)
        assert response.status_code == 403, (method, path, response.text)
    conversations = (await erin.api("GET", "/api/v1/conversations")).json()["conversations"]
    assert [c["requester"]["id"] for c in conversations] == ["erin@demo.local"]
    other = next(
        c
        for c in (await web.client().get("/api/v1/conversations", headers=carol)).json()["conversations"]
        if c["requester"]["id"] == "frank@demo.local"
    )
    assert (await erin.api("GET", f"/api/v1/conversations/{other['id']}")).status_code == 403


async def test_agents_work_only_their_groups_and_take_over_is_a_separate_right(web: Web) -> None:
    network = web.ticket(group="network")
    hardware = web.ticket(group="hardware", subject="Laptop dead", requester="gail@demo.local")
    client = web.client()
    alice = bearer(web.token("alice@example.com"))
    dana = bearer(web.token("dana@example.com"))
    carol = bearer(web.token("carol@example.com", Role.ADMIN))
    carol_as_agent = bearer(web.token("carol@example.com", Role.AGENT))

    listed = (await client.get("/api/v1/tickets", headers=alice)).json()["tickets"]
    assert [t["number"] for t in listed] == [network]
    for method, suffix, body in [
        ("GET", "", None),
        ("PATCH", "", {"tier": 2}),
        ("POST", "/take", None),
        ("POST", "/notes", {"text": "x"}),
    ]:
        response = await client.request(method, f"/api/v1/tickets/{hardware}{suffix}", json=body, headers=alice)
        assert response.status_code == 403, (method, suffix, response.text)
    # A token's role caps the account: an admin's agent-role token sees no more than an agent.
    assert (await client.get(f"/api/v1/tickets/{hardware}", headers=carol_as_agent)).status_code == 403
    assert (await client.get(f"/api/v1/tickets/{hardware}", headers=carol)).status_code == 200

    # Replying needs holding the ticket.
    response = await client.post(f"/api/v1/tickets/{network}/reply", json={"text": "hi"}, headers=alice)
    assert response.status_code == 403 and "take" in response.json()["error"]
    assert (await client.post(f"/api/v1/tickets/{network}/take", headers=carol)).json()[
        "assignee"
    ] == "web:carol@example.com"
    refused = await client.post(f"/api/v1/tickets/{network}/take", headers=alice)
    assert refused.status_code == 403 and "take-over" in refused.json()["error"]
    taken = await client.post(f"/api/v1/tickets/{network}/take", headers=dana)
    assert taken.status_code == 200 and taken.json()["assignee"] == "web:dana@example.com"
    replied = await client.post(
        f"/api/v1/tickets/{network}/reply", json={"text": "On it", "source_id": "r1"}, headers=dana
    )
    assert replied.status_code == 202
    # Waiting on the requester pauses the SLA clock; only those who work the ticket may say so.
    assert (await client.post(f"/api/v1/tickets/{hardware}/pending", headers=alice)).status_code == 403
    pending = await client.post(f"/api/v1/tickets/{network}/pending", headers=dana)
    assert pending.status_code == 200 and pending.json()["status"] == "pending"
    assert (await client.get(f"/api/v1/tickets/{network}", headers=dana)).json()["sla_state"] == "paused"
    again = await client.post(
        f"/api/v1/tickets/{network}/reply", json={"text": "On it", "source_id": "r1"}, headers=dana
    )
    assert again.status_code == 200 and again.json()["duplicate"] is True
    resolved = await client.post(f"/api/v1/tickets/{network}/resolve", json={"resolution": "cable"}, headers=dana)
    assert resolved.json()["status"] == "resolved"
    assert (await client.post(f"/api/v1/tickets/{network}/take", headers=dana)).status_code == 409

    with web.db.transaction() as session:
        events = [(e.kind, e.actor, e.channel) for e in session.scalars(select(TicketEvent).order_by(TicketEvent.id))]
    assert ("taken_over", "web:dana@example.com", "web") in events
    assert ("agent_reply", "web:dana@example.com", "web") in events
    assert ("resolved", "web:dana@example.com", "web") in events
    assert ("sla_paused", "web:dana@example.com", "web") in events
    assert sum(kind == "agent_reply" for kind, _, _ in events) == 1


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("PATCH", f"/api/v1/tickets/{NUMBER}", {"priority": "bogus"}, "priority"),
        ("PATCH", f"/api/v1/tickets/{NUMBER}", {"tier": 9}, "tier"),
        ("PATCH", f"/api/v1/tickets/{NUMBER}", {"colour": "red"}, "colour"),
        ("PATCH", f"/api/v1/tickets/{NUMBER}", [1, 2], "body"),
        ("POST", f"/api/v1/tickets/{NUMBER}/reply", {"text": ""}, "text"),
        ("POST", f"/api/v1/tickets/{NUMBER}/notes", {"text": "a\u0000b"}, "text"),
        ("GET", "/api/v1/tickets?limit=0", None, "limit"),
        ("GET", "/api/v1/tickets?status=lost", None, "status"),
        ("GET", "/api/v1/tickets?queue=elsewhere", None, "queue"),
        ("GET", "/api/v1/conversations?offset=-1", None, "offset"),
        ("GET", "/api/v1/kb/search", None, "q"),
        ("GET", "/api/v1/metrics?since=yesterday", None, "since"),
    ],
)
async def test_invalid_input_is_422_naming_the_field(
    web: Web, method: str, path: str, body: object, field: str
) -> None:
    web.ticket(group="network")
    alice = bearer(web.token("alice@example.com"))
    response = await web.client().request(method, path, json=body, headers=alice)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert response.json()["error"].startswith(field)


async def test_changes_are_audited_with_who_and_channel(web: Web) -> None:
    number = web.ticket(group="network")
    alice = bearer(web.token("alice@example.com"))
    client = web.client()
    changed = await client.patch(f"/api/v1/tickets/{number}", json={"priority": "urgent", "tier": 2}, headers=alice)
    assert changed.status_code == 200 and changed.json()["changed"] == ["priority", "tier"]
    assert (await client.patch(f"/api/v1/tickets/{number}", json={"priority": "urgent"}, headers=alice)).json()[
        "changed"
    ] == []
    noted = await client.post(f"/api/v1/tickets/{number}/notes", json={"text": "called the user"}, headers=alice)
    assert noted.status_code == 201
    with web.db.transaction() as session:
        events = list(session.scalars(select(TicketEvent).where(TicketEvent.kind.in_(["updated", "note"]))))
        assert [(e.kind, e.actor, e.channel) for e in events] == [
            ("updated", "web:alice@example.com", "web"),
            ("note", "web:alice@example.com", "web"),
        ]
        assert events[0].detail == {"changes": {"priority": ["normal", "urgent"], "tier": [1, 2]}}
        assert events[0].at is not None
        # The priority change is an agent's correction that later routing learns from (tier is not routed).
        corrections = [(c.field, c.predicted, c.corrected, c.actor) for c in session.scalars(select(RoutingCorrection))]
        assert corrections == [("priority", "normal", "urgent", "web:alice@example.com")]
