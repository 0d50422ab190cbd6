"""The tier-0 virtual agent: answer from the knowledge base, ask, or hand over.

The agent is a pure decision function over (message, conversation memory); it
never touches the database. Retrieval is the only slow step and runs on the
caller's worker thread.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from bot import intents
from bot.confidence import ConfidenceModel, features, load_model
from bot.config import AgentSettings
from bot.model import Action, Citation

# Enough of a long message to find the topic; the encoder reads ~256 tokens anyway.
MAX_QUERY_CHARS = 2000


class Hit(Protocol):
    """One retrieved article (``kb_index.SearchHit`` satisfies this)."""

    @property
    def article_id(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def url(self) -> str | None: ...
    @property
    def source_path(self) -> str: ...
    @property
    def passage(self) -> str: ...
    @property
    def continuation(self) -> str: ...
    @property
    def dense_score(self) -> float: ...


class Retriever(Protocol):
    def search(self, query: str, *, k: int = 5) -> Sequence[Hit]: ...


@dataclass(frozen=True)
class Answer:
    text: str  # the quoted passage of the cited article
    citations: tuple[Citation, ...]
    confidence: float
    retry: bool = False  # a second attempt after "that didn't help"


@dataclass(frozen=True)
class Option:
    article_id: str
    title: str


@dataclass(frozen=True)
class Clarify:
    question: str
    options: tuple[Option, ...]


@dataclass(frozen=True)
class Escalate:
    reason: str  # requested | low_confidence | unhelpful
    summary: str
    subject: str


@dataclass(frozen=True)
class Greet:
    pass


@dataclass(frozen=True)
class OfferClose:
    pass


@dataclass(frozen=True)
class AskForQuestion:
    """A bare "yes"/"ok" with nothing pending: ask what the problem is rather than search."""


@dataclass(frozen=True)
class KeepOpen:
    pass


@dataclass(frozen=True)
class Close:
    solved_by_bot: bool


Decision = Answer | Clarify | Escalate | Greet | AskForQuestion | OfferClose | KeepOpen | Close


@dataclass(frozen=True)
class AgentState:
    """What the agent remembers between turns (stored as JSON on the conversation)."""

    awaiting: str | None = None  # feedback | clarify | close_confirmation
    question: str | None = None  # the question the last answer or options addressed
    offered: tuple[str, ...] = ()  # article ids already shown for that question
    options: tuple[Option, ...] = ()
    unhelpful_turns: int = 0
    # Messages up to this id belong to an earlier, closed round of the conversation.
    round_start: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "awaiting": self.awaiting,
            "question": self.question,
            "offered": list(self.offered),
            "options": [[o.article_id, o.title] for o in self.options],
            "unhelpful_turns": self.unhelpful_turns,
            "round_start": self.round_start,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> AgentState:
        data = data or {}
        return cls(
            awaiting=data.get("awaiting"),
            question=data.get("question"),
            offered=tuple(data.get("offered", ())),
            options=tuple(Option(a, t) for a, t in data.get("options", ())),
            unhelpful_turns=int(data.get("unhelpful_turns", 0)),
            round_start=int(data.get("round_start", 0)),
        )


@dataclass(frozen=True)
class Turn:
    text: str
    action: str | None = None
    state: AgentState = field(default_factory=AgentState)
    # The requester's earlier messages in this conversation, oldest first.
    history: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    state: AgentState


# How many articles the decision looks at: the candidate and its competitors.
SEARCH_DEPTH = 5


class Tier0Agent:
    def __init__(
        self, *, retriever: Retriever, settings: AgentSettings, confidence: ConfidenceModel | None = None
    ) -> None:
        self._retriever = retriever
        self._settings = settings
        self._confidence = confidence or load_model(settings.confidence_model)

    @property
    def retriever(self) -> Retriever:
        return self._retriever

    @retriever.setter
    def retriever(self, retriever: Retriever) -> None:
        # Swapped as one reference: a decision in progress keeps the one it read.
        self._retriever = retriever

    def confidence(self, hits: Sequence[Hit], *, merged: int = 1) -> float:
        """Calibrated probability that the first ``merged`` hits hold the answer."""
        return self._confidence.probability(features(hits, merged=merged))

    def decide(self, turn: Turn) -> Outcome:
        state, text, action = turn.state, turn.text.strip(), turn.action

        if action == Action.HUMAN or (action is None and intents.asks_for_human(text)):
            return self._escalate("requested", turn)
        if action == Action.SOLVED:
            return Outcome(Close(solved_by_bot=True), AgentState())
        if action == Action.CLOSE or (state.awaiting == "close_confirmation" and intents.is_yes(text)):
            return Outcome(Close(solved_by_bot=state.question is not None), AgentState())
        if state.awaiting == "close_confirmation" and (action == Action.NOT_SOLVED or intents.is_no(text)):
            return Outcome(KeepOpen(), replace(state, awaiting=None))
        if state.awaiting == "clarify":
            chosen = self._chosen_option(text, action, state)
            if chosen is not None:
                return self._answer_article(chosen, state)
        if state.awaiting == "feedback" and (action == Action.NOT_SOLVED or intents.is_negative_feedback(text)):
            return self._try_again(turn)
        if action is None and intents.is_thanks(text):
            return Outcome(OfferClose(), replace(state, awaiting="close_confirmation"))
        if action is None and intents.is_greeting(text):
            return Outcome(Greet(), state)
        if action is None and (intents.is_yes(text) or intents.is_no(text)):
            return Outcome(AskForQuestion(), replace(state, awaiting=None))
        return self._answer_question(text, turn)

    def _answer_question(self, text: str, turn: Turn) -> Outcome:
        query = text[:MAX_QUERY_CHARS]
        hits = list(self._retriever.search(query, k=SEARCH_DEPTH))
        if not hits:
            return self._escalate("low_confidence", turn)
        threshold = self._settings.answer_threshold
        best = hits[0]
        confidence = self.confidence(hits)
        runner_up = hits[1] if len(hits) > 1 else None
        if only_exact_identifier_match(hits):
            # A pasted error code or ticket id found in exactly one article is stronger
            # evidence than any similarity, and the model never saw enough of them to know.
            state = AgentState(
                awaiting="feedback",
                question=query,
                offered=(best.article_id,),
                unhelpful_turns=turn.state.unhelpful_turns,
            )
            return Outcome(self._answer_from(best, max(confidence, threshold)), state)
        # Ask rather than guess when the evidence says "one of these two" but not
        # which, or when a confident best article has a near-tie competitor.
        ask = runner_up is not None and (
            (confidence < threshold and self.confidence(hits, merged=2) >= threshold)
            or (confidence >= threshold and best.dense_score - runner_up.dense_score < self._settings.clarify_margin)
        )
        if not ask and confidence < threshold:
            return self._escalate("low_confidence", turn)
        if ask and runner_up is not None:
            options = (Option(best.article_id, best.title), Option(runner_up.article_id, runner_up.title))
            state = AgentState(
                awaiting="clarify", question=query, options=options, unhelpful_turns=turn.state.unhelpful_turns
            )
            return Outcome(Clarify(question=query, options=options), state)
        state = AgentState(
            awaiting="feedback", question=query, offered=(best.article_id,), unhelpful_turns=turn.state.unhelpful_turns
        )
        return Outcome(self._answer_from(best, confidence), state)

    def _try_again(self, turn: Turn) -> Outcome:
        state = turn.state
        unhelpful = state.unhelpful_turns + 1
        if unhelpful >= self._settings.max_unhelpful_turns or not state.question:
            return self._escalate("unhelpful", turn)
        # The offered article did not help: judge the rest as if it were not in the KB.
        hits = [h for h in self._retriever.search(state.question, k=10) if h.article_id not in state.offered]
        if hits:
            confidence = self.confidence(hits[:SEARCH_DEPTH])
            if confidence >= self._settings.answer_threshold:
                new_state = replace(state, offered=(*state.offered, hits[0].article_id), unhelpful_turns=unhelpful)
                return Outcome(replace(self._answer_from(hits[0], confidence), retry=True), new_state)
        return self._escalate("unhelpful", turn)

    def _answer_article(self, article_id: str, state: AgentState) -> Outcome:
        question = state.question or ""
        hits = list(self._retriever.search(question, k=10))
        hit = next((h for h in hits if h.article_id == article_id), None)
        if hit is None:  # the index changed under the options; ask afresh
            return self._answer_question(question, Turn(text=question, state=AgentState()))
        new_state = AgentState(
            awaiting="feedback", question=question, offered=(article_id,), unhelpful_turns=state.unhelpful_turns
        )
        # The requester picked it: confidence is that of the pair it came from.
        return Outcome(self._answer_from(hit, self.confidence(hits[:SEARCH_DEPTH], merged=2)), new_state)

    def _chosen_option(self, text: str, action: str | None, state: AgentState) -> str | None:
        if action and action.startswith(f"{Action.CHOOSE}:"):
            article_id = action.split(":", 1)[1]
            return article_id if any(o.article_id == article_id for o in state.options) else None
        typed = intents.normalise(text)
        if typed.isdigit() and 1 <= int(typed) <= len(state.options):
            return state.options[int(typed) - 1].article_id
        for option in state.options:
            if typed and typed == intents.normalise(option.title):
                return option.article_id
        return None

    def _answer_from(self, hit: Hit, confidence: float) -> Answer:
        citation = Citation(title=hit.title, article_id=hit.article_id, url=hit.url, source_path=hit.source_path)
        # Quote on into what follows (often the steps after a symptom description).
        text = f"{hit.passage}\n\n{hit.continuation}" if hit.continuation else hit.passage
        passage = trim_passage(text, self._settings.max_passage_chars)
        return Answer(text=passage, citations=(citation,), confidence=round(confidence, 4))

    def _escalate(self, reason: str, turn: Turn) -> Outcome:
        escalation = Escalate(reason=reason, summary=summarise(turn), subject=subject_of(turn, reason))
        return Outcome(escalation, AgentState())


def only_exact_identifier_match(hits: Sequence[Hit]) -> bool:
    """The question names identifiers, the best article contains them all, and no other candidate does."""

    def match(hit: Hit) -> float:
        return float(getattr(hit, "identifier_match", 0.0))

    return bool(hits) and match(hits[0]) >= 1.0 and all(match(hit) < 1.0 for hit in hits[1:])


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")


def trim_passage(passage: str, limit: int) -> str:
    """The passage cut at a sentence or paragraph boundary within ``limit`` characters."""
    passage = passage.strip()
    if len(passage) <= limit:
        return passage
    cut = 0
    for match in _SENTENCE_END.finditer(passage):
        if match.start() > limit:
            break
        cut = match.start()
    if cut < limit // 3:  # no usable boundary: cut at a word
        cut = passage.rfind(" ", 0, limit) if " " in passage[:limit] else limit
    return passage[:cut].rstrip() + " …"


def summarise(turn: Turn) -> str:
    """What the requester said, oldest first: the agent reads this instead of asking again."""
    lines = [f"- {line.strip()[:500]}" for line in (*turn.history, turn.text) if line.strip()]
    return "Requester wrote:\n" + "\n".join(lines[-20:])


def subject_of(turn: Turn, reason: str) -> str:
    """The question being escalated, as a ticket subject.

    For an unanswerable question that is the message itself; when the requester
    asks for a person or gives up, it is the question the bot was working on,
    else their latest real question (not "hi" or "talk to a person").
    """
    candidates: tuple[str, ...]
    if reason == "low_confidence":
        candidates = (turn.text,)
    else:
        candidates = (turn.state.question or "", *reversed((*turn.history, turn.text)))
    for line in candidates:
        line = " ".join(line.split())
        if line and not (
            intents.is_greeting(line)
            or intents.asks_for_human(line)
            or intents.is_thanks(line)
            or intents.is_negative_feedback(line)
        ):
            return line[:120]
    return "Support request"
