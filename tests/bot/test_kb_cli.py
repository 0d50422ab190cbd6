"""`tierzero kb calibrate | stats | suggest | publish` end to end, with a hashing embedder instead of the model."""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner, Result

from bot import confidence
from bot.cli import main
from kb_index.lexical import tokenize

TOPICS = {
    "vpn-drops": ("VPN keeps disconnecting", "The GlobalProtect tunnel drops; switch gateway region."),
    "printer-offline": ("Printer is offline", "Turn the printer on, then add it again from the print server."),
    "password-reset": ("Reset your password", "Use the account portal and choose forgot password."),
    "guest-wifi": ("Guest Wi-Fi for visitors", "Reception hands out a guest voucher code."),
}


class Hashing:
    """Each word lights one dimension: texts sharing words are similar. Instant, deterministic."""

    dimension = 128
    model_id = "test-hashing"

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        rows = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in tokenize(text):
                rows[row, zlib.crc32(token.encode()) % self.dimension] += 1.0
            rows[row, 0] += 1e-3
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr("bot.app.load_embedder", lambda *args, **kwargs: Hashing())
    monkeypatch.setattr("bot.cli.load_embedder", lambda *args, **kwargs: Hashing())
    kb = tmp_path / "kb"
    kb.mkdir()
    for article_id, (title, body) in TOPICS.items():
        (kb / f"{article_id}.md").write_text(f"# {title}\n\n{body}\n", encoding="utf-8")
    path = tmp_path / "config.yaml"
    path.write_text(
        f"data_dir: {tmp_path / 'data'}\nkb:\n  path: {kb}\n  auto_index: false\n"
        "agent:\n  # how sure the bot must be\n  answer_threshold: 0.70   # keep this comment\n",
        encoding="utf-8",
    )
    return path


def tierzero(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *args])


def labelled_questions(path: Path) -> Path:
    rows = []
    for repeat in range(25):
        for article_id, (title, _) in TOPICS.items():
            rows.append({"text": f"{title.lower()} {repeat}", "label": "answer", "doc_id": article_id})
        rows.append({"text": f"order lunch for the team {repeat}", "label": "escalate"})
        rows.append({"text": f"vpn printer {repeat}", "label": "escalate"})
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    return path


def test_calibrate_writes_the_model_and_edits_the_threshold_line(config: Path, tmp_path: Path) -> None:
    assert tierzero(config, "kb", "index").exit_code == 0
    result = tierzero(config, "kb", "calibrate", "--queries", str(labelled_questions(tmp_path / "l.jsonl")))
    assert result.exit_code == 0, result.output
    assert "labelled questions: threshold" in result.output

    text = config.read_text()
    assert "# how sure the bot must be" in text and "# keep this comment" in text
    agent = yaml.safe_load(text)["agent"]
    assert 0.0 < agent["answer_threshold"] <= 1.0
    model = confidence.load_model(Path(agent["confidence_model"]))
    assert model.weights and json.loads(Path(agent["confidence_model"]).read_text())["max_wrong"] == 0.05


def test_calibrate_refuses_unknown_articles_without_touching_the_config(config: Path, tmp_path: Path) -> None:
    assert tierzero(config, "kb", "index").exit_code == 0
    labelled = tmp_path / "l.jsonl"
    labelled.write_text('{"text": "vpn", "label": "answer", "doc_id": "no-such-article"}\n', encoding="utf-8")
    before = config.read_text()
    result = tierzero(config, "kb", "calibrate", "--queries", str(labelled))
    assert result.exit_code == 1 and "'no-such-article'" in result.output and "Traceback" not in result.output
    assert config.read_text() == before


def test_stats_suggest_and_publish_on_an_empty_history(config: Path, tmp_path: Path) -> None:
    assert tierzero(config, "kb", "index").exit_code == 0
    stats = tierzero(config, "kb", "stats")
    assert stats.exit_code == 0 and "articles: 4" in stats.output and "no answers shown yet" in stats.output
    suggest = tierzero(config, "kb", "suggest")
    assert suggest.exit_code == 0 and "nothing to suggest" in suggest.output

    draft = tmp_path / "parking.md"
    draft.write_text("---\ntitle: Where to park\ntags: [suggested]\n---\n# Where to park\n\nLevel -2.\n")
    published = tierzero(config, "kb", "publish", str(draft))
    assert published.exit_code == 0, published.output
    assert "1 added" in published.output
    assert tierzero(config, "kb", "publish", str(draft)).exit_code == 1  # never overwrites an article
