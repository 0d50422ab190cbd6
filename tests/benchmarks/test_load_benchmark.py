"""The load benchmark: its pure parts, and a short real run against a real server subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.load import parse_args, parse_overrides
from benchmarks.load_traffic import OFF_TOPIC, Ledger, Phase, iter_mix, percentiles, question_pool, summarise
from tests.conftest import REPO_ROOT


def test_mix_is_parsed_and_bad_mixes_are_named() -> None:
    assert dict(iter_mix("slack=60, teams=25,email=15")) == {"slack": 60.0, "teams": 25.0, "email": 15.0}
    with pytest.raises(ValueError, match="'fax=3'"):
        list(iter_mix("slack=1,fax=3"))
    with pytest.raises(ValueError, match="weight of teams is not a number"):
        list(iter_mix("teams=many"))
    with pytest.raises(SystemExit):
        parse_args(["--mix", "slack=0"])


def test_config_overrides_nest_and_take_yaml_values() -> None:
    assert parse_overrides(["pipeline.workers=8", "pipeline.max_pending=16", "log_level=WARNING"]) == {
        "pipeline": {"workers": 8, "max_pending": 16},
        "log_level": "WARNING",
    }
    with pytest.raises(SystemExit):
        parse_overrides(["pipeline.workers"])


def test_questions_are_distinct_and_about_a_sixth_off_topic() -> None:
    pool = question_pool(REPO_ROOT / "kb", off_topic_share=0.15, seed=3)
    assert len(pool) == len(set(pool)) == 4096
    off_topic = sum(1 for q in pool if any(topic in q for topic in OFF_TOPIC))
    assert 0.13 < off_topic / len(pool) < 0.17
    assert any("VPN" in q for q in pool)
    assert question_pool(REPO_ROOT / "kb", off_topic_share=0.15, seed=3) == pool  # deterministic


def test_percentiles_use_nearest_rank() -> None:
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert percentiles(values) == {"n": 100, "p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert percentiles([])["p50"] is None


def test_summary_counts_lost_duplicate_and_unexpected_replies() -> None:
    ledger = Ledger()
    phase = Phase(warmup=0.0, duration=10.0, start=0.0)
    answered, lost, twice, refused = (ledger.new("slack", lambda n: f"slack:D{n}", measured=True) for _ in range(4))
    for record, outcome in ((answered, "acked"), (lost, "acked"), (twice, "acked"), (refused, "rejected")):
        record.outcome, record.sent_at, record.ack_seconds = outcome, 1.0, 0.01
    ledger.on_reply(answered.key, "Here is how to fix it")
    ledger.on_reply(twice.key, "I opened TZ-1001 for you")
    ledger.on_reply(twice.key, "I opened TZ-1001 for you")
    ledger.on_reply("teams:a:someone-else", "hello")

    counts = summarise(ledger, phase)["counts"]

    assert counts["acked"] == 3 and counts["replied"] == 2 and counts["lost"] == 1
    assert counts["duplicate_replies"] == 1 and counts["rejected"] == 1 and counts["unexpected_replies"] == 1
    assert twice.ticket and not answered.ticket


@pytest.mark.slow
def test_a_short_run_answers_every_acknowledged_message_once(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TIERZERO_DATABASE_URL"} | {"HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "benchmarks.load",
        "--json",
        "--duration",
        "4",
        "--warmup",
        "1",
        "--concurrency",
        "3",
        "--ceiling-seconds",
        "1",
        "--grace",
        "120",
        "--reply-timeout",
        "60",
        "--data-dir",
        str(tmp_path),
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)

    assert report["embedding_ceiling"]["questions_per_s"] > 0
    assert report["index"]["chunks"] > 0
    run = report["phases"]["load"]
    counts = run["counts"]
    assert counts["sent"] > 0
    assert counts["acked"] == counts["replied"], counts
    assert counts["lost"] == counts["duplicate_replies"] == counts["unexpected_replies"] == 0, counts
    assert counts["replies_to_unacked"] == 0, counts
    # The first message per channel is sent before measuring: every channel was exercised.
    assert all(run["counts_by_channel"][channel]["replied"] >= 1 for channel in ("slack", "teams", "email"))
    for key in ("accepted_per_s", "answered_per_s"):
        assert isinstance(run[key], float | int)
    assert set(run["ack_latency_ms"]) == {"slack", "teams", "email"}
    assert set(run["reply_latency_ms"]["all"]) == {"n", "p50", "p95", "p99", "max"}
    assert run["server_memory_cpu"]["peak_rss_mib"] > 0 and run["server_memory_cpu"]["rss_samples_mib"]
    assert run["server_stop"]["exit_code"] == 0  # SIGTERM is a graceful stop
    assert "zero_lost" in report["targets"]
