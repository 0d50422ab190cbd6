"""The whole product with the bundled model, the real FAISS index and the demo KB.

These run the installed ``tierzero`` command as a newcomer would: ``tierzero chat``
in a terminal and ``tierzero run`` serving HTTP, then ``tierzero tickets list``.
The demo index is built once per test run and copied for each test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

TIERZERO = str(Path(sys.executable).parent / "tierzero")


@pytest.fixture(scope="session")
def demo_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo KB indexed with the bundled model, through the CLI."""
    home = tmp_path_factory.mktemp("demo-index")
    config = write_config(home)
    result = run_cli(config, "kb", "index", timeout=900)
    assert result.returncode == 0, result.stderr
    assert "0 skipped" in result.stdout
    return home / "data" / "index"


def write_config(home: Path, **overrides: object) -> Path:
    settings = {
        "data_dir": str(home / "data"),
        "log_level": "WARNING",
        "kb": {"path": str(REPO_ROOT / "kb")},
        "channels": {"http_api": {}},
        **overrides,
    }
    path = home / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def run_cli(config: Path, *args: str, stdin: str = "", timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TIERZERO_DATABASE_URL"}
    return subprocess.run(
        [TIERZERO, "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture
def home(tmp_path: Path, demo_index: Path) -> Path:
    shutil.copytree(demo_index, tmp_path / "data" / "index")
    return tmp_path


def test_chat_answers_from_the_vpn_article_and_escalates_pizza(home: Path) -> None:
    config = write_config(home)
    chat = run_cli(
        config, "chat", "--user", "alice", stdin="my VPN keeps disconnecting\ncan you order pizza for the team\n/quit\n"
    )
    assert chat.returncode == 0, chat.stderr
    answer, _, escalation = chat.stdout.partition("Did that solve it?")
    assert "Source: VPN keeps disconnecting (https://it.example.com/kb/vpn-keeps-disconnecting)" in answer
    assert "TZ-1001" in escalation and "Traceback" not in chat.stderr

    listed = run_cli(config, "tickets", "list")
    assert listed.returncode == 0, listed.stderr
    assert "TZ-1001" in listed.stdout and "pizza" in listed.stdout

    shown = run_cli(config, "tickets", "show", "TZ-1001")
    assert "opened" in shown.stdout and "can you order pizza for the team" in shown.stdout


def test_kb_search_and_stats(home: Path) -> None:
    config = write_config(home)
    search = run_cli(config, "kb", "search", "locked out of my account after too many attempts")
    assert search.returncode == 0, search.stderr
    assert (
        search.stdout.splitlines()[0].startswith("1. ") and "[account-locked-out.md]" in search.stdout.splitlines()[0]
    )
    stats = run_cli(config, "kb", "stats")
    assert "articles: " in stats.stdout and "all-MiniLM-L6-v2" in stats.stdout


def test_corrupt_index_is_a_clear_error_and_reindexing_repairs_it(tmp_path: Path) -> None:
    # A two-article KB keeps the rebuild short; the code path is the same as for the demo KB.
    kb = tmp_path / "kb"
    kb.mkdir()
    for name in ("vpn-keeps-disconnecting.md", "account-locked-out.md"):
        shutil.copy(REPO_ROOT / "kb" / name, kb / name)
    config = write_config(tmp_path, kb={"path": str(kb)})
    assert run_cli(config, "kb", "index").returncode == 0
    index_dir = tmp_path / "data" / "index"
    for name in os.listdir(index_dir):
        (index_dir / name).write_bytes(b"\x00garbage")

    search = run_cli(config, "kb", "search", "vpn")
    assert search.returncode == 1
    assert "tierzero kb index" in search.stderr and "Traceback" not in search.stderr
    repaired = run_cli(config, "kb", "index")
    assert repaired.returncode == 0, repaired.stderr
    assert "2 added" in repaired.stdout
    fixed = run_cli(config, "kb", "search", "vpn keeps dropping")
    assert fixed.returncode == 0 and "[vpn-keeps-disconnecting.md]" in fixed.stdout.splitlines()[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_server_serves_the_demo_kb_over_http_and_stops_gracefully(home: Path) -> None:
    port = free_port()
    config = write_config(
        home, server={"host": "127.0.0.1", "port": port}, channels={"http_api": {}, "terminal": {"enabled": False}}
    )
    env = {k: v for k, v in os.environ.items() if k != "TIERZERO_DATABASE_URL"}
    server = subprocess.Popen(
        [TIERZERO, "--config", str(config), "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, server)
        with httpx.Client(base_url=base, timeout=10) as client:
            posted = client.post(
                "/api/v1/messages",
                json={"requester_id": "alice", "message_id": "m1", "text": "My VPN keeps disconnecting"},
            )
            assert posted.status_code == 202, posted.text
            replies = poll_replies(client, posted.json()["replies_url"])
            assert replies[0]["kind"] == "answer"
            assert "VPN" in replies[0]["text"]
            assert replies[0]["citations"][0]["title"]
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    assert f"http_api: POST {base}/api/v1/messages" in out
    assert "terminal: disabled (turned off in config.yaml)" in out


def wait_until_ready(base: str, server: subprocess.Popen[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"server exited early: {server.stderr.read() if server.stderr else ''}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    pytest.fail("server did not become ready")


def poll_replies(client: httpx.Client, url: str, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = client.get(url).json()["replies"]
        if replies:
            return replies
        time.sleep(0.2)
    pytest.fail("no reply arrived")
