"""The tier-0 agent's decisions, over a fake retriever (no model, no database)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bot.agent import (
    AgentState,
    Answer,
    AskForQuestion,
    Clarify,
    Close,
    Escalate,
    Greet,
    KeepOpen,
    OfferClose,
    Tier0Agent,
    Turn,
    trim_passage,
)
from bot.config import AgentSettings
from bot.model import Action
from tests.fixtures.fakes import FakeHit, FakeRetriever, it_retriever


@pytest.fixture
def agent() -> Tier0Agent:
    return Tier0Agent(retriever=it_retriever(), settings=AgentSettings())


def test_answers_a_confident_match_and_cites_it(agent: Tier0Agent) -> None:
    outcome = agent.decide(Turn("my VPN keeps disconnecting"))
    assert isinstance(outcome.decision, Answer)
    assert outcome.decision.citations[0].article_id == "vpn-drops"
    # A calibrated probability from the evidence, not the raw cosine (0.78).
    hits = it_retriever().search("vpn")
    assert outcome.decision.confidence == pytest.approx(agent.confidence(hits), abs=1e-4)
    assert AgentSettings().answer_threshold <= outcome.decision.confidence <= 1.0
    assert outcome.state.awaiting == "feedback" and outcome.state.offered == ("vpn-drops",)


def test_escalates_below_the_threshold_instead_of_guessing(agent: Tier0Agent) -> None:
    outcome = agent.decide(Turn("can you order pizza for the team"))
    assert isinstance(outcome.decision, Escalate)
    assert outcome.decision.reason == "low_confidence"
    assert outcome.decision.subject == "can you order pizza for the team"


def test_threshold_is_configurable() -> None:
    strict = Tier0Agent(retriever=it_retriever(), settings=AgentSettings(answer_threshold=0.999))
    assert not isinstance(strict.decide(Turn("vpn drops")).decision, Answer)


@pytest.mark.parametrize("text", ["talk to a person", "Can I speak to someone in IT?", "agent", "real person please"])
def test_escalates_when_asked_for_a_human(agent: Tier0Agent, text: str) -> None:
    outcome = agent.decide(Turn(text, history=("my vpn drops",)))
    assert isinstance(outcome.decision, Escalate) and outcome.decision.reason == "requested"
    assert outcome.decision.subject == "my vpn drops"
    assert "my vpn drops" in outcome.decision.summary


def test_a_question_mentioning_an_agent_is_still_a_question(agent: Tier0Agent) -> None:
    assert isinstance(agent.decide(Turn("the vpn agent keeps crashing")).decision, Answer)


def test_close_articles_get_a_clarifying_question(agent: Tier0Agent) -> None:
    outcome = agent.decide(Turn("printer problem"))
    assert isinstance(outcome.decision, Clarify)
    assert [o.article_id for o in outcome.decision.options] == ["printer-add", "printer-stuck"]
    chosen = agent.decide(Turn("2", state=outcome.state))
    assert isinstance(chosen.decision, Answer)
    assert chosen.decision.citations[0].article_id == "printer-stuck"
    by_button = agent.decide(Turn("Add a printer", action=f"{Action.CHOOSE}:printer-add", state=outcome.state))
    assert by_button.decision.citations[0].article_id == "printer-add"  # type: ignore[union-attr]


def test_unhelpful_answer_tries_the_next_article_then_hands_over(agent: Tier0Agent) -> None:
    first = agent.decide(Turn("vpn drops"))
    second = agent.decide(Turn("that didn't help", state=first.state))
    assert isinstance(second.decision, Answer) and second.decision.retry
    assert second.decision.citations[0].article_id == "vpn-install"
    third = agent.decide(Turn("still not working", state=second.state))
    assert isinstance(third.decision, Escalate) and third.decision.reason == "unhelpful"


def test_max_unhelpful_turns_is_configurable() -> None:
    agent = Tier0Agent(retriever=it_retriever(), settings=AgentSettings(max_unhelpful_turns=1))
    first = agent.decide(Turn("vpn drops"))
    assert isinstance(agent.decide(Turn("no", state=first.state)).decision, Escalate)


def test_thanks_offers_to_close_and_yes_closes(agent: Tier0Agent) -> None:
    answered = agent.decide(Turn("vpn drops"))
    offer = agent.decide(Turn("that fixed it, thanks!", state=answered.state))
    assert isinstance(offer.decision, OfferClose)
    closed = agent.decide(Turn("yes", state=offer.state))
    assert closed.decision == Close(solved_by_bot=True)
    kept = agent.decide(Turn("no", state=offer.state))
    assert isinstance(kept.decision, KeepOpen)


def test_solved_button_closes_as_a_deflection(agent: Tier0Agent) -> None:
    answered = agent.decide(Turn("vpn drops"))
    outcome = agent.decide(Turn("That solved it", action=Action.SOLVED, state=answered.state))
    assert outcome.decision == Close(solved_by_bot=True)


def test_greetings_and_bare_yes_do_not_search(agent: Tier0Agent) -> None:
    retriever = it_retriever()
    agent = Tier0Agent(retriever=retriever, settings=AgentSettings())
    assert isinstance(agent.decide(Turn("Hello!")).decision, Greet)
    assert isinstance(agent.decide(Turn("ok")).decision, AskForQuestion)
    assert retriever.queries == []


def test_state_round_trips_through_json() -> None:
    outcome = Tier0Agent(retriever=it_retriever(), settings=AgentSettings()).decide(Turn("printer"))
    assert AgentState.from_json(outcome.state.to_json()) == outcome.state


def test_long_passages_are_cut_at_a_sentence() -> None:
    passage = "First sentence here. " * 100
    trimmed = trim_passage(passage, 200)
    assert len(trimmed) <= 202
    assert trimmed.endswith("here. …")


def test_a_new_unanswerable_question_is_the_ticket_subject(agent: Tier0Agent) -> None:
    answered = agent.decide(Turn("vpn drops"))
    outcome = agent.decide(Turn("can you order pizza", state=answered.state, history=("vpn drops",)))
    assert isinstance(outcome.decision, Escalate) and outcome.decision.subject == "can you order pizza"


def test_answers_quote_on_into_what_follows_the_passage() -> None:
    hit = FakeHit(
        "vpn-drops",
        "VPN keeps disconnecting",
        0.8,
        "Symptoms: the VPN drops.",
        continuation="Steps:\n\n1. Use a cable.\n2. Pick the nearest gateway.",
    )
    agent = Tier0Agent(retriever=FakeRetriever({"vpn": [hit]}), settings=AgentSettings())
    answer = agent.decide(Turn("vpn drops")).decision
    assert isinstance(answer, Answer)
    assert answer.text.startswith("Symptoms: the VPN drops.") and "2. Pick the nearest gateway." in answer.text


@dataclass(frozen=True)
class CodeHit(FakeHit):
    identifier_match: float = 0.0  # as kb_index.SearchHit: share of the question's codes in the passage


def test_an_error_code_found_in_exactly_one_article_is_answered_from_it() -> None:
    locked = CodeHit("account-locked", "Account locked out", 0.28, identifier_match=1.0)  # contains AADSTS50053
    others = [FakeHit("password", "Reset your password", 0.27), FakeHit("mfa", "Set up MFA", 0.25)]
    agent = Tier0Agent(retriever=FakeRetriever({"aadsts": [locked, *others]}), settings=AgentSettings())
    outcome = agent.decide(Turn("AADSTS50053"))
    assert isinstance(outcome.decision, Answer) and outcome.decision.citations[0].article_id == "account-locked"

    # The same code in two articles: no shortcut, the evidence decides (here: too weak to answer).
    also = CodeHit("password", "Reset your password", 0.27, identifier_match=1.0)
    agent = Tier0Agent(retriever=FakeRetriever({"aadsts": [locked, also, others[1]]}), settings=AgentSettings())
    assert not isinstance(agent.decide(Turn("AADSTS50053")).decision, Answer)
