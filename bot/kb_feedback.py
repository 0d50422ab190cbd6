"""Closing the knowledge-base loop: how each article performs, and drafts for what the KB is missing.

Everything is read from the conversation history in the database; nothing
extra is recorded while chatting:

* an article is *shown* when the bot sends an answer (a message of kind
  ``answer``) citing it;
* it *solved* the problem when the requester then pressed "That solved it"
  (an inbound ``solved`` action), or, lacking explicit feedback, when the
  conversation was closed as resolved by the bot with this as its last answer;
* it was *not helpful* when the requester said so (``not_solved``), and it was
  *followed by an escalation* when a ticket was opened after it in the same
  round (an ``escalation`` message before the next answer).

``suggest`` collects questions that were escalated and then answered by a
human agent, groups similar ones, and drafts one Markdown article per group
for an admin to review, edit and publish into the KB folder.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from ticketing.models import Conversation, Direction, Message, Ticket, TicketStatus

SOLVED_ACTION = "solved"
NOT_SOLVED_ACTION = "not_solved"


@dataclass
class ArticleStats:
    article_id: str
    title: str
    shown: int = 0
    solved: int = 0
    not_helpful: int = 0
    escalated: int = 0

    @property
    def solve_rate(self) -> float:
        return self.solved / self.shown if self.shown else 0.0

    @property
    def escalation_rate(self) -> float:
        return self.escalated / self.shown if self.shown else 0.0


def article_stats(session: Session) -> list[ArticleStats]:
    """Per cited article, what happened after it was shown; most shown first."""
    stats: dict[str, ArticleStats] = {}
    conversations = {c.id: c for c in session.scalars(select(Conversation))}
    messages = session.scalars(select(Message).order_by(Message.conversation_id, Message.id))
    pending: dict[int, ArticleStats] = {}  # conversation id -> article of its latest answer awaiting an outcome
    last_answer: dict[int, ArticleStats] = {}
    for message in messages:
        parts = message.parts or {}
        conversation_id = message.conversation_id
        if message.direction == Direction.OUTBOUND and parts.get("kind") == "answer":
            citations = parts.get("citations") or []
            if not citations or not isinstance(citations[0], dict) or not citations[0].get("article_id"):
                continue
            cited = citations[0]
            entry = stats.setdefault(
                str(cited["article_id"]),
                ArticleStats(article_id=str(cited["article_id"]), title=str(cited.get("title") or "")),
            )
            entry.shown += 1
            pending[conversation_id] = last_answer[conversation_id] = entry
            continue
        entry_or_none = pending.get(conversation_id)
        if entry_or_none is None:
            continue
        if message.direction == Direction.INBOUND and parts.get("action") == SOLVED_ACTION:
            entry_or_none.solved += 1
            del pending[conversation_id]
        elif message.direction == Direction.INBOUND and parts.get("action") == NOT_SOLVED_ACTION:
            entry_or_none.not_helpful += 1
        elif message.direction == Direction.OUTBOUND and parts.get("kind") == "escalation":
            entry_or_none.escalated += 1
            del pending[conversation_id]
    # Closed as solved by the bot without pressing the button ("thanks, that fixed it").
    for conversation_id, entry in pending.items():
        conversation = conversations.get(conversation_id)
        if conversation is not None and conversation.resolved_by == "bot" and last_answer.get(conversation_id) is entry:
            entry.solved += 1
    return sorted(stats.values(), key=lambda s: (-s.shown, s.article_id))


def best_and_worst(
    stats: Sequence[ArticleStats], *, min_shown: int = 3, count: int = 5
) -> tuple[list[ArticleStats], list[ArticleStats]]:
    """Articles shown at least ``min_shown`` times, ranked by solve rate (ties: fewer escalations)."""
    rated = [s for s in stats if s.shown >= min_shown]
    ranked = sorted(rated, key=lambda s: (-s.solve_rate, s.escalation_rate, -s.shown, s.article_id))
    best = ranked[:count]
    worst = [s for s in reversed(ranked) if s not in best][:count]
    return best, worst


# -- suggestions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedQuestion:
    ticket_number: str
    question: str
    answers: tuple[str, ...]  # what the agents replied, in order
    resolved_at: datetime | None


@dataclass
class Suggestion:
    questions: list[ResolvedQuestion] = field(default_factory=list)
    # An existing article the questions land on, when there is one: update it rather than add another.
    update_article: str | None = None

    @property
    def title(self) -> str:
        return " ".join(self.questions[0].question.split())[:100]


def resolved_questions(session: Session) -> list[ResolvedQuestion]:
    """Escalated questions that a human agent answered and resolved, oldest first."""
    tickets = session.scalars(
        select(Ticket).where(Ticket.status.in_([TicketStatus.RESOLVED, TicketStatus.CLOSED])).order_by(Ticket.id)
    )
    found = []
    for ticket in tickets:
        replies = session.scalars(
            select(Message.text)
            .where(
                Message.conversation_id == ticket.conversation_id,
                Message.direction == Direction.OUTBOUND,
                Message.author_kind == "agent",
            )
            .order_by(Message.id)
        ).all()
        answers = tuple(text.strip() for text in replies if text and text.strip())
        if answers and ticket.subject.strip():
            found.append(
                ResolvedQuestion(
                    ticket_number=ticket.number or str(ticket.id),
                    question=ticket.subject.strip(),
                    answers=answers,
                    resolved_at=ticket.resolved_at,
                )
            )
    return found


def group_similar(
    questions: Sequence[ResolvedQuestion], encode: Callable[[Sequence[str]], np.ndarray], *, min_similarity: float = 0.7
) -> list[Suggestion]:
    """Greedy single-pass grouping: each question joins the first group whose first question is similar enough."""
    if not questions:
        return []
    vectors = encode([q.question for q in questions])
    groups: list[tuple[np.ndarray, Suggestion]] = []
    for question, vector in zip(questions, vectors, strict=True):
        for centre, suggestion in groups:
            if float(centre @ vector) >= min_similarity:
                suggestion.questions.append(question)
                break
        else:
            groups.append((vector, Suggestion(questions=[question])))
    # Most asked first: that is where a new article saves the most tickets.
    return sorted((s for _, s in groups), key=lambda s: -len(s.questions))


def draft_markdown(suggestion: Suggestion) -> str:
    """A reviewable article: front matter marks it as a draft and names its source tickets."""
    tickets = ", ".join(q.ticket_number for q in suggestion.questions)
    lines = [
        "---",
        f"title: {_yaml_text(suggestion.title)}",
        "tags: [suggested]",
        f"# Drafted by `tierzero kb suggest` from tickets {tickets}.",
    ]
    if suggestion.update_article:
        lines.append(f"# Similar to the existing article {suggestion.update_article!r}: consider updating it instead.")
    lines += ["---", f"# {suggestion.title}", "", "People ask this as:", ""]
    lines += [f"- {' '.join(q.question.split())}" for q in suggestion.questions]
    lines += ["", "## Steps", "", "<!-- Edit the agents' replies below into clear steps, then publish. -->", ""]
    seen: set[str] = set()
    for question in suggestion.questions:
        for answer in question.answers:
            if answer not in seen:
                seen.add(answer)
                lines += [answer, ""]
    return "\n".join(lines).rstrip() + "\n"


def write_drafts(suggestions: Sequence[Suggestion], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for suggestion in suggestions:
        path = folder / f"{_slug(suggestion.title)}.md"
        number = 2
        while path.exists():
            path = folder / f"{_slug(suggestion.title)}-{number}.md"
            number += 1
        path.write_text(draft_markdown(suggestion), encoding="utf-8")
        written.append(path)
    return written


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:60].rstrip("-") or "suggested-article"


def _yaml_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
