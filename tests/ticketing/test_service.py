"""Ticket store on both databases: schema migrations, numbering, lifecycle, audit trail."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select

from ticketing import service
from ticketing.conversations import (
    get_or_create_conversation,
    get_or_create_requester,
    record_inbound_message,
)
from ticketing.db import MIGRATIONS_DIR, Database, DatabaseUnavailableError, redact_url
from ticketing.models import Base, Conversation, Owner, Ticket, TicketStatus


def new_conversation(session, conversation_id: str = "c1") -> Conversation:  # type: ignore[no-untyped-def]
    requester = get_or_create_requester(session, channel="test", platform_id="U1", display_name="Alice")
    return get_or_create_conversation(
        session, channel="test", channel_conversation_id=conversation_id, thread_id=None, requester=requester
    )


def open_ticket(session, conversation: Conversation, subject: str = "Printer on fire") -> Ticket:  # type: ignore[no-untyped-def]
    return service.open_ticket(
        session,
        conversation=conversation,
        subject=subject,
        description="It is on fire.",
        actor="bot",
        channel="test",
        number_prefix="TZ",
        first_number=1001,
        reason="requested",
    )


def test_migrations_create_every_model_table(db: Database) -> None:
    tables = set(inspect(db.engine).get_table_names())
    assert {t.name for t in Base.metadata.sorted_tables} <= tables
    db.migrate()  # idempotent


def test_migrations_downgrade_and_upgrade_again(db: Database) -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert "ticket" not in inspect(db.engine).get_table_names()
    db.migrate()
    assert "ticket" in inspect(db.engine).get_table_names()


def test_tickets_are_numbered_from_the_configured_start(db: Database) -> None:
    with db.transaction() as session:
        first = open_ticket(session, new_conversation(session, "a"))
        second = open_ticket(session, new_conversation(session, "b"))
        assert (first.number, second.number) == ("TZ-1001", "TZ-1002")
        assert first.status == TicketStatus.NEW
    with db.transaction() as session:
        assert service.get_ticket(session, number="tz-1002").subject == "Printer on fire"  # type: ignore[union-attr]


def test_lifecycle_writes_an_audit_trail(db: Database) -> None:
    with db.transaction() as session:
        conversation = new_conversation(session)
        ticket = open_ticket(session, conversation)
        assert conversation.owner == Owner.QUEUE
        service.take_ticket(session, ticket=ticket, conversation=conversation, agent="bob", channel="cli")
        assert conversation.owner == Owner.AGENT and ticket.assignee == "bob"
        service.record_agent_reply(session, ticket=ticket, agent="bob", channel="cli")
        assert ticket.first_response_at is not None
        service.hand_back_to_bot(session, ticket=ticket, conversation=conversation, agent="bob", channel="cli")
        assert conversation.owner == Owner.BOT and ticket.assignee is None
        service.resolve_ticket(session, ticket=ticket, conversation=conversation, actor="bob", channel="cli")
        assert ticket.status == TicketStatus.RESOLVED and conversation.owner == Owner.CLOSED
        number = ticket.number
    with db.transaction() as session:
        ticket = service.get_ticket(session, number=number)  # type: ignore[arg-type]
        assert [(e.kind, e.actor, e.channel) for e in ticket.events] == [  # type: ignore[union-attr]
            ("opened", "bot", "test"),
            ("taken", "bob", "cli"),
            ("agent_reply", "bob", "cli"),
            ("handed_back", "bob", "cli"),
            ("resolved", "bob", "cli"),
        ]
        assert ticket.created_at.tzinfo is not None  # type: ignore[union-attr]


def test_taking_another_agents_ticket_is_refused(db: Database) -> None:
    with db.transaction() as session:
        conversation = new_conversation(session)
        ticket = open_ticket(session, conversation)
        service.take_ticket(session, ticket=ticket, conversation=conversation, agent="bob", channel="cli")
        with pytest.raises(service.TicketError, match="already taken by bob"):
            service.take_ticket(session, ticket=ticket, conversation=conversation, agent="eve", channel="cli")


def test_resolved_tickets_cannot_be_taken(db: Database) -> None:
    with db.transaction() as session:
        conversation = new_conversation(session)
        ticket = open_ticket(session, conversation)
        service.resolve_ticket(session, ticket=ticket, conversation=conversation, actor="bob", channel="cli")
        with pytest.raises(service.TicketError, match="resolved"):
            service.take_ticket(session, ticket=ticket, conversation=conversation, agent="bob", channel="cli")


def test_list_filters_by_status(db: Database) -> None:
    with db.transaction() as session:
        conversation = new_conversation(session)
        ticket = open_ticket(session, conversation)
        open_ticket(session, new_conversation(session, "other"))
        service.resolve_ticket(session, ticket=ticket, conversation=conversation, actor="bob", channel="cli")
    with db.transaction() as session:
        assert len(service.list_tickets(session)) == 2
        assert [t.number for t in service.list_tickets(session, statuses=("new",))] == ["TZ-1002"]


def test_inbound_messages_are_deduplicated_by_channel_id(db: Database) -> None:
    received = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with db.transaction() as session:
        conversation = new_conversation(session)
        kwargs = dict(
            conversation=conversation,
            channel="test",
            channel_message_id="m1",
            author_id="U1",
            text="hi",
            attachments=[],
            raw={"x": 1},
            received_at=received,
        )
        assert record_inbound_message(session, **kwargs) is not None
        assert record_inbound_message(session, **kwargs) is None
    with db.transaction() as session:
        from ticketing.models import Message

        [message] = session.scalars(select(Message)).all()
        assert message.received_at == received and message.raw == {"x": 1}


def test_unreachable_database_is_a_clear_error() -> None:
    database = Database("postgresql+psycopg://tz:s3cret@127.0.0.1:1/none")
    with pytest.raises(DatabaseUnavailableError) as caught:
        database.migrate()
    assert "cannot reach the database" in str(caught.value)
    assert "s3cret" not in str(caught.value)
    assert "s3cret" not in redact_url(database.url)


def test_migrations_match_every_model(db: Database) -> None:
    # Every module that declares tables; a migration that drifts from its model fails here.
    import channels.email.models  # noqa: F401
    import ticketing.access  # noqa: F401
    import ticketing.service_desk_models  # noqa: F401

    with db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
