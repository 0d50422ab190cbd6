"""The crash benchmark as a test: SIGKILL the loaded server three times, then account for every message.

The real server process, channels, pipeline, outbox and database; only the knowledge is the
tests' fake retriever (``--fake-knowledge``), so each restart takes seconds, not a model load.
The benchmark's own checks decide (see ``benchmarks.crash``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks import crash
from tests.conftest import POSTGRES_URL_ENV

pytestmark = pytest.mark.slow


def run_crash(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, Any]]:
    code = crash.main(
        [
            "--json",
            "--fake-knowledge",
            "--kills", "3",
            "--min-uptime", "2", "--max-uptime", "4", "--tail-seconds", "1",
            "--rate", "15", "--concurrency", "6",
            "--seed", "8",
            "--data-dir", str(tmp_path),
            *extra,
        ]
    )  # fmt: skip
    return code, json.loads(capsys.readouterr().out)


def assert_nothing_lost_or_doubled(report: dict[str, Any]) -> None:
    assert report["kills"] == 3
    assert report["acked"] > 0
    assert report["retried"] > 0, "no request was cut by a kill: the test did not test anything"
    assert report["lost"] == 0
    assert report["duplicates"] == 0 and report["unexpected_stored"] == 0
    assert report["stored_exactly_once"] == report["acked"]
    assert report["unanswered"] == 0 and report["no_reply"] == 0 and report["several_replies_queued"] == 0
    assert report["duplicate_replies"] == 0
    assert report["duplicate_tickets"] == 0
    # Every answered question's reply reached the fake once, or is accounted for in the outbox.
    assert report["replied_once"] + sum(report["still_in_outbox"].values()) == report["stored"]
    assert report["sigterm_exit_code"] == 0
    assert report["problems"] == []


def test_sigkill_under_load_loses_and_doubles_nothing_on_sqlite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = run_crash(tmp_path, capsys)
    assert_nothing_lost_or_doubled(report)
    assert report["database"] == "sqlite"
    assert code == 0 and report["ok"]


def test_sigkill_under_load_loses_and_doubles_nothing_on_postgresql(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = os.environ.get(POSTGRES_URL_ENV)
    if not base:
        pytest.skip(f"PostgreSQL variant skipped: set {POSTGRES_URL_ENV} (CI sets it)")
    # The benchmark creates a private schema on that server and drops it afterwards.
    code, report = run_crash(tmp_path, capsys, "--database-url", base)
    assert_nothing_lost_or_doubled(report)
    assert report["database"] == "postgresql"
    assert code == 0 and report["ok"]
