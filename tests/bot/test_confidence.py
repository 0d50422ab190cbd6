"""Evidence features, the logistic calibration, threshold choice and the config edit of `kb calibrate`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from bot import confidence
from bot.confidence import CalibrationError, ConfidenceModel, calibrate, choose_threshold, features, fit
from tests.fixtures.fakes import FakeHit


def test_features_compare_the_candidate_with_its_competitors() -> None:
    hits = [FakeHit("a", "A", 0.8), FakeHit("b", "B", 0.5), FakeHit("c", "C", 0.3)]
    single = features(hits)
    pair = features(hits, merged=2)
    assert single[0] == pytest.approx(0.8) and single[1] == pytest.approx(0.3)  # best, margin to runner-up
    assert pair[1] == pytest.approx(0.5)  # the pair against the third


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Questions whose first feature separates right from wrong answers, with noise."""
    rng = np.random.default_rng(seed)
    correct = rng.random(n) < 0.7
    rows = rng.normal(size=(n, len(confidence.FEATURES)))
    rows[:, 0] += np.where(correct, 1.5, -1.5)
    return rows, correct


def test_fit_learns_the_informative_feature_and_round_trips() -> None:
    rows, correct = synthetic(400, seed=1)
    model = fit(rows, correct)
    assert model.weights[0] > 1.0 and max(abs(w) for w in model.weights[1:]) < 0.5
    assert ConfidenceModel.from_json(json.loads(json.dumps(model.to_json()))) == model
    assert confidence.auroc(model.probabilities(rows), correct) > 0.9


def test_threshold_keeps_wrong_answers_under_the_target_on_new_questions() -> None:
    rows, correct = synthetic(600, seed=2)
    result = calibrate(rows, correct, answerable=np.ones(len(rows), bool), max_wrong=0.05)
    new_rows, new_correct = synthetic(2000, seed=3)
    answered = result.model.probabilities(new_rows) >= result.threshold
    assert answered.sum() > 0.3 * len(new_rows)
    assert (answered & ~new_correct).sum() / answered.sum() <= 0.05


def test_threshold_is_never_answer_when_nothing_is_safe() -> None:
    assert choose_threshold(np.array([0.9, 0.8]), np.array([False, False]), max_wrong=0.05) == 1.0


def test_calibration_refuses_one_sided_labels() -> None:
    rows, _ = synthetic(50, seed=4)
    with pytest.raises(CalibrationError, match="right and ones it gets wrong"):
        calibrate(rows, np.ones(50, bool), answerable=np.ones(50, bool), max_wrong=0.05)


def test_labelled_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "labelled.jsonl"
    path.write_text('{"text": "vpn drops", "label": "answer", "doc_id": "vpn"}\n{"text": "x", "label": "answer"}\n')
    with pytest.raises(CalibrationError, match=r"labelled.jsonl:2: .*doc_id"):
        confidence.read_labelled(path)
    path.write_text('{"text": "order pizza", "label": "escalate", "split": "dev"}\n')
    assert confidence.read_labelled(path) == [confidence.LabelledQuestion("order pizza", None)]


def test_set_agent_keys_edits_lines_and_keeps_comments(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "# top comment\nagent:\n  # why\n  answer_threshold: 0.70   # keep me\n  max_unhelpful_turns: 2\n"
        "\ntickets:\n  first_number: 1001\n"
    )
    confidence.set_agent_keys(config, {"answer_threshold": "0.6123", "confidence_model": "/data/model.json"})
    text = config.read_text()
    assert "answer_threshold: 0.6123   # keep me" in text and "# top comment" in text and "  # why" in text
    loaded = yaml.safe_load(text)
    assert loaded["agent"]["confidence_model"] == "/data/model.json"
    assert loaded["agent"]["max_unhelpful_turns"] == 2 and loaded["tickets"] == {"first_number": 1001}


def test_set_agent_keys_adds_a_missing_section(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("data_dir: data\n")
    confidence.set_agent_keys(config, {"answer_threshold": "0.5"})
    assert yaml.safe_load(config.read_text()) == {"data_dir": "data", "agent": {"answer_threshold": 0.5}}


def test_calibrate_questions_searches_like_the_agent_and_the_agent_loads_the_result(tmp_path: Path) -> None:
    from bot.agent import Answer, Escalate, Tier0Agent, Turn
    from bot.config import AgentSettings
    from tests.fixtures.fakes import FakeRetriever

    retriever = FakeRetriever({})
    labelled = []
    # Right answers come with a clear lead over the runner-up; wrong ones (and unanswerable questions) do not.
    for n in range(90):
        right = n % 3 != 0
        lead = 0.3 if right else 0.01
        retriever.results[f"q{n:02d}x"] = [
            FakeHit(f"a{n}", f"A{n}", 0.5 + lead + 0.001 * n),
            FakeHit(f"b{n}", f"B{n}", 0.5),
            FakeHit(f"c{n}", f"C{n}", 0.2),
        ]
        labelled.append(confidence.LabelledQuestion(f"q{n:02d}x", f"a{n}" if right else None))
    result = confidence.calibrate_questions(retriever, labelled, max_wrong=0.05)
    assert 0.0 < result.threshold < 1.0 and result.expected_wrong_rate <= 0.05

    model_path = tmp_path / "confidence-model.json"
    model_path.write_text(json.dumps(result.to_json()))
    settings = AgentSettings(answer_threshold=result.threshold, confidence_model=model_path, clarify_margin=0.0)
    agent = Tier0Agent(retriever=retriever, settings=settings)
    assert isinstance(agent.decide(Turn("q01x")).decision, Answer)  # clear lead
    assert not isinstance(agent.decide(Turn("q03x")).decision, Answer)  # near tie: ask or escalate
    assert isinstance(agent.decide(Turn("nothing matches")).decision, Escalate)


def test_a_broken_model_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    path.write_text('{"features": ["dense_score"], "mean": [0], "scale": [1], "weights": [1], "bias": 0}')
    with pytest.raises(CalibrationError, match="uses features"):
        confidence.load_model(path)
