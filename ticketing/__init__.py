"""Ticket store: SQLAlchemy models, the ticket service and Alembic migrations.

Callers own the transaction: service functions take a ``Session`` and never
commit, so a state change and the outbox row describing it land together.
"""
