"""Categorisation, priority and group of new tickets on a small labelled set; agents' corrections are learnt."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from bot.config import settings_from_mapping
from bot.service_rules import ServiceRules, for_runtime
from tests.fixtures.service_desk import CountingEmbed, fake_embed, make_ticket
from ticketing.db import Database
from ticketing.models import Conversation, TicketEvent
from ticketing.routing import (
    MAX_CACHED_VECTORS,
    LabelledText,
    Router,
    RoutingRules,
    label_articles,
    nearest_label,
    priority_from_cues,
    ticket_text,
)
from ticketing.service_desk_models import RoutingCorrection

SERVICE_DESK = {
    "calendar": {"time_zone": "Europe/Berlin", "hours": "09:00-17:00"},
    "routing": {
        "categories": {
            "access": {"keywords": ["password", "locked out", "mfa"], "group": "identity-team"},
            "network": {"keywords": ["vpn", "wifi", "wi-fi"], "group": "network-team"},
            "hardware": {"keywords": ["printer", "laptop"], "channels": ["kiosk"], "group": "hardware-team"},
            "software": {"keywords": ["install"]},
            "facilities": {"keywords": ["desk booking"], "group": "facilities"},
        },
    },
}


def rules() -> RoutingRules:
    return settings_from_mapping({"service_desk": SERVICE_DESK}).service_desk.routing.rules()


# (question, channel, expected category, why)
LABELLED_CATEGORIES = [
    ("My password expired and I can't sign in", "slack", "access", "keyword:password"),
    ("I'm LOCKED OUT of my laptop account", "email", "access", "keyword:locked out"),
    ("VPN keeps dropping every 10 minutes", "teams", "network", "keyword:vpn"),
    ("Wi-Fi is very slow in room 4", "slack", "network", "keyword:wi-fi"),
    ("The printer on floor 3 shows a paper jam", "email", "hardware", "keyword:printer"),
    ("Please install Visio for me", "web", "software", "keyword:install"),
    ("Desk booking page shows an error", "web", "facilities", "keyword:desk booking"),
    ("The screen is blank", "kiosk", "hardware", "channel:kiosk"),
    ("Where do I find the canteen menu?", "slack", "general", "default"),
]


@pytest.mark.parametrize(("text", "channel", "category", "why"), LABELLED_CATEGORIES)
def test_keyword_and_channel_rules_on_labelled_examples(
    db: Database, text: str, channel: str, category: str, why: str
) -> None:
    router = Router(rules=rules(), embed=fake_embed)
    with db.transaction() as session:
        routing = router.route(session, text=text, channel=channel)
    assert (routing.category, routing.category_reason) == (category, why)


def test_keywords_match_whole_words_only(db: Database) -> None:
    with db.transaction() as session:
        routing = Router(rules=rules()).route(session, text="mfaxyz and vpnfoo are product names", channel="web")
    assert routing.category == "general"


# (question, expected priority)
LABELLED_PRIORITIES = [
    ("The whole office is offline, outage since 9", "urgent"),
    ("Everyone on the 2nd floor lost email", "urgent"),
    ("I can't work, my laptop won't boot", "high"),
    ("I can\u2019t work since the update", "high"),  # a typographic apostrophe
    ("Blocked by a certificate error, need it ASAP", "high"),
    ("When you have time, could you install Visio?", "low"),
    ("No rush, the mouse is a bit sticky", "low"),
    ("Printer jam on floor 3", "normal"),
    ("Outage for everyone - reply when you have time", "urgent"),  # impact outranks the polite tone
]


@pytest.mark.parametrize(("text", "priority"), LABELLED_PRIORITIES)
def test_priority_from_impact_and_urgency_cues(text: str, priority: str) -> None:
    assert priority_from_cues(text, rules().cues)[0] == priority


def test_the_requester_can_override_the_priority(db: Database) -> None:
    router = Router(rules=rules())
    with db.transaction() as session:
        chosen = router.route(session, text="No rush, the mouse is sticky", channel="web", requested_priority="high")
        unknown = router.route(session, text="No rush, the mouse is sticky", channel="web", requested_priority="asap!")
    assert (chosen.priority, chosen.priority_reason) == ("high", "requester")
    assert (unknown.priority, unknown.priority_reason) == ("low", "cue:no rush")


def test_group_follows_the_category(db: Database) -> None:
    router = Router(rules=rules())
    with db.transaction() as session:
        assert router.route(session, text="vpn down", channel="web").group == "network-team"
        assert router.route(session, text="please install it", channel="web").group == "service-desk"  # no group set
        assert router.route(session, text="the canteen menu", channel="web").group == "service-desk"


def test_nearest_labelled_past_tickets_decide_when_no_rule_matches(db: Database) -> None:
    router = Router(rules=rules(), embed=fake_embed)
    with db.transaction() as session:
        make_ticket(session, subject="Cannot log in to my account", category="access")
        make_ticket(session, subject="Monitor flickers when docked", category="hardware")
        routing = router.route(session, text="can't get into my account since Monday", channel="slack")
        display = router.route(session, text="external screen keeps flickering", channel="slack")
        unrelated = router.route(session, text="who approves travel expenses", channel="slack")
    assert routing.category == "access" and routing.category_reason.startswith("neighbours:")
    assert routing.group == "identity-team"
    assert display.category == "hardware"
    assert (unrelated.category, unrelated.category_reason) == ("general", "default")


def test_kb_articles_labelled_by_the_rules_are_neighbours_too(db: Database) -> None:
    articles = label_articles(
        [
            ("Set up the VPN client", "How to connect to the internet from home."),
            ("Canteen opening hours", "Lunch is served from 12:00."),  # no rule matches: left out
        ],
        rules(),
    )
    assert [a.label for a in articles] == ["network"]
    router = Router(rules=rules(), embed=fake_embed, articles=articles)
    with db.transaction() as session:
        routing = router.route(session, text="my internet connection is offline at home", channel="web")
    assert routing.category == "network"


def test_an_agents_correction_is_used_by_later_predictions(db: Database) -> None:
    router = Router(rules=rules(), embed=fake_embed)
    with db.transaction() as session:
        first = make_ticket(session, subject="Printer says toner low", category="hardware")
        assert router.route(session, text=ticket_text(first.subject, ""), channel="web").category == "hardware"
        router.record_correction(
            session, ticket=first, field_name="category", predicted="hardware", corrected="facilities", actor="agent:a"
        )
        router.record_correction(
            session, ticket=first, field_name="group", predicted="hardware-team", corrected="office", actor="agent:a"
        )
    with db.transaction() as session:
        same = router.route(session, text="Printer says toner low", channel="web")
        near = router.route(session, text="printer says TONER low!", channel="email")  # near-duplicate by embedding
        other = router.route(session, text="printer jammed", channel="web")
    assert (same.category, same.category_reason, same.group) == ("facilities", "correction", "office")
    assert (near.category, near.category_reason) == ("facilities", "correction")
    assert other.category == "hardware"


def test_corrections_work_without_an_embedding_model_for_the_same_text(db: Database) -> None:
    router = Router(rules=rules())
    with db.transaction() as session:
        ticket = make_ticket(session, subject="Screen is dim", description="")
        router.record_correction(
            session, ticket=ticket, field_name="priority", predicted="normal", corrected="low", actor="agent:a"
        )
    with db.transaction() as session:
        assert session.query(RoutingCorrection).one().embedding is None
        routing = router.route(session, text="screen is  DIM", channel="web")
    assert (routing.priority, routing.priority_reason) == ("low", "correction")


def test_corrected_neighbours_outvote_ordinary_ones(db: Database) -> None:
    router = Router(rules=rules(), embed=fake_embed)
    with db.transaction() as session:
        make_ticket(session, subject="account app crashes", category="software")
        wrong = make_ticket(session, subject="account app freezes")
        router.record_correction(
            session, ticket=wrong, field_name="category", predicted="software", corrected="access", actor="agent:a"
        )
        routing = router.route(session, text="the account app hangs", channel="web")
    assert routing.category == "access"


def test_past_tickets_are_embedded_once(db: Database) -> None:
    embed = CountingEmbed()
    router = Router(rules=rules(), embed=embed)
    with db.transaction() as session:
        for n in range(5):
            make_ticket(session, subject=f"old question number {n}", category="software")
        router.route(session, text="first new question", channel="web")
        embedded = len(embed.texts)
        router.route(session, text="second new question", channel="web")
    assert embedded == 6  # five past tickets and the question
    assert len(embed.texts) == embedded + 1  # only the new question


def test_a_prepared_text_is_routed_without_calling_the_model(db: Database) -> None:
    # The pipeline prepares before its write transaction, so routing inside it does not wait for the model.
    embed = CountingEmbed()
    router = Router(rules=rules(), embed=embed)
    with db.transaction() as session:
        make_ticket(session, subject="old question", category="software")
        router.warm_up(session)
    router.prepare("the printer on floor 3 is jammed")
    before = len(embed.texts)
    with db.transaction() as session:
        router.route(session, text="the printer on floor 3 is jammed", channel="web")
    assert len(embed.texts) == before


def test_unknown_fields_are_refused(db: Database) -> None:
    with db.transaction() as session:
        ticket = make_ticket(session)
        with pytest.raises(ValueError, match="not a routed field"):
            Router(rules=rules()).record_correction(
                session, ticket=ticket, field_name="status", predicted="new", corrected="open", actor="a"
            )


def test_nearest_label_votes_by_similarity() -> None:
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32)
    assert nearest_label(
        np.array([1, 0.05]), vectors, ["a", "a", "b"], [1, 1, 1], k=3, min_similarity=0.5
    ) == pytest.approx(("a", 0.9988), abs=1e-3)
    assert nearest_label(np.array([-1, 0]), vectors, ["a", "a", "b"], [1, 1, 1], k=3, min_similarity=0.5) is None
    assert nearest_label(np.array([1, 0]), np.zeros((0, 2)), [], [], k=3, min_similarity=0.5) is None


def test_labelled_texts_are_plain_values() -> None:
    assert LabelledText("a", "b") == LabelledText("a", "b")


# -- the pipeline's view: a new ticket routed, due in business hours, corrections audited ------------


def test_a_new_ticket_is_routed_and_due_in_business_hours(db: Database) -> None:
    settings = settings_from_mapping({"service_desk": SERVICE_DESK}).service_desk
    rules_ = ServiceRules(settings, embed=fake_embed)
    friday_evening = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)  # 19:00 in Berlin: after hours
    with db.transaction() as session:
        ticket = make_ticket(
            session, subject="Everyone lost the VPN - outage", channel="slack", created_at=friday_evening
        )
        conversation = session.get(Conversation, ticket.conversation_id)
        assert conversation is not None
        routing = rules_.ticket_opened(session, ticket=ticket, conversation=conversation)
        assert (ticket.category, ticket.priority, ticket.group) == ("network", "urgent", "network-team")
        assert routing.priority_reason == "cue:outage"
        # Urgent: 1 business hour -> Monday 10:00 Berlin = 09:00 UTC.
        assert ticket.first_response_due == datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
        event = session.query(TicketEvent).filter_by(ticket_id=ticket.id, kind="routed").one()
        assert event.detail["category_reason"] == "keyword:vpn"

        rules_.correct(session, ticket=ticket, field_name="priority", value="low", actor="agent:a", channel="slack")
        assert ticket.priority == "low"
        assert ticket.first_response_due == datetime(2026, 12, 7, 16, 0, tzinfo=UTC)  # 8 business hours
        assert session.query(RoutingCorrection).one().corrected == "low"
        assert session.query(TicketEvent).filter_by(ticket_id=ticket.id, kind="priority_changed").count() == 1


def test_warm_up_embeds_past_tickets_before_the_first_routing(db: Database) -> None:
    embed = CountingEmbed()
    router = Router(rules=rules(), embed=embed)
    with db.transaction() as session:
        for n in range(3):
            make_ticket(session, subject=f"old question number {n}", category="software")
        assert router.warm_up(session) == 3
        embedded = len(embed.texts)
        router.route(session, text="a new question", channel="web")
    assert len(embed.texts) == embedded + 1  # only the question
    assert Router(rules=rules()).warm_up(session) == 0  # no embedding model: nothing to do


def test_the_runtime_uses_the_index_embedder_when_it_has_one(db: Database, tmp_path: Path) -> None:
    (tmp_path / "vpn.md").write_text("---\ntitle: Set up the VPN client\n---\nConnect to the internet.\n")
    (tmp_path / "menu.md").write_text("---\ntitle: Canteen\n---\nLunch at noon.\n")
    settings = settings_from_mapping({"service_desk": SERVICE_DESK}).service_desk

    class Index:
        class embedder:  # noqa: N801 - mimics an attribute holding an object with encode()
            encode = staticmethod(fake_embed)

    with_model = for_runtime(settings, retriever=Index(), kb_path=tmp_path)
    assert with_model.router.embed is not None
    assert [a.label for a in with_model.router.articles] == ["network"]
    without = for_runtime(settings, retriever=object(), kb_path=tmp_path)
    assert without.router.embed is None


def test_the_vector_cache_keeps_recent_texts_and_stays_bounded() -> None:
    """A server that opens tickets for months must not keep every ticket's vector forever."""
    embed = CountingEmbed()
    router = Router(rules=rules(), embed=embed)
    router.prepare("the first ticket")
    for number in range(MAX_CACHED_VECTORS):
        router.prepare(f"ticket {number}")
    assert len(router._cache) == MAX_CACHED_VECTORS
    router.prepare(f"ticket {MAX_CACHED_VECTORS - 1}")  # recent: still cached
    assert embed.texts.count(f"ticket {MAX_CACHED_VECTORS - 1}") == 1
    router.prepare("the first ticket")  # the oldest was evicted: embedded again
    assert embed.texts.count("the first ticket") == 2
