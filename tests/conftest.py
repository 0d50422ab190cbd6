"""Shared fixtures: a migrated database on SQLite and PostgreSQL, settings, fakes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bot.config import Settings, settings_from_mapping
from ticketing.db import Database, private_schema
from ticketing.models import Base

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

POSTGRES_URL_ENV = "TIERZERO_TEST_POSTGRES_URL"
REPO_ROOT = Path(__file__).resolve().parent.parent
EVAL_DIR = Path(os.environ.get("TIERZERO_EVAL_DIR", REPO_ROOT.parent / "shared" / "eval"))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private schema on the test PostgreSQL server, migrated once per run."""
    base = os.environ.get(POSTGRES_URL_ENV)
    if not base:
        pytest.skip(f"PostgreSQL variant skipped: set {POSTGRES_URL_ENV} (CI sets it)")
    with private_schema(base, prefix="tz_test") as url:
        database = Database(url)
        database.migrate()
        database.dispose()
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database; every database test runs on both backends."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'tierzero.db'}"
        database = Database(url)
        database.migrate()
        database.dispose()
        return url
    url = request.getfixturevalue("postgres_url")
    database = Database(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with database.engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    database.dispose()
    return url


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def make_settings(tmp_path: Path, database_url: str | None = None, **overrides: Any) -> Settings:
    raw: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "kb": {"path": str(REPO_ROOT / "kb"), "auto_index": False},
        "pipeline": {"workers": 2},
        "outbox": {"poll_interval_seconds": 0.05, "initial_backoff_seconds": 0.01, "max_backoff_seconds": 0.1},
        "channels": {},
    }
    if database_url:
        raw["database"] = {"url": database_url}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return settings_from_mapping(raw)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url)


@pytest.fixture(autouse=True)
def _no_database_override(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's TIERZERO_DATABASE_URL must not redirect tests to their database.
    monkeypatch.delenv("TIERZERO_DATABASE_URL", raising=False)
