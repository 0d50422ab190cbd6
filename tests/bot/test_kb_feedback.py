"""Per-article outcomes and article suggestions, computed from stored conversations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from bot import kb_feedback
from kb_index.documents import load_articles
from ticketing.db import Database
from ticketing.models import Conversation, Direction, Message, Requester, Ticket


class Chat:
    """Writes a conversation's messages the way the pipeline stores them."""

    def __init__(self, db: Database, name: str, *, resolved_by: str | None = None) -> None:
        self.db = db
        with db.transaction() as session:
            requester = Requester(channel="test", platform_id=name, display_name=name)
            session.add(requester)
            session.flush()
            conversation = Conversation(
                channel="test", channel_conversation_id=name, requester_id=requester.id, resolved_by=resolved_by
            )
            session.add(conversation)
            session.flush()
            self.conversation_id, self.requester_id = conversation.id, requester.id

    def _add(self, direction: str, author_kind: str, text: str, parts: dict) -> None:
        with self.db.transaction() as session:
            session.add(
                Message(
                    conversation_id=self.conversation_id,
                    direction=direction,
                    channel="test",
                    author_kind=author_kind,
                    text=text,
                    parts=parts,
                    attachments=[],
                )
            )

    def ask(self, text: str, action: str | None = None) -> Chat:
        self._add(Direction.INBOUND, "requester", text, {"action": action} if action else {})
        return self

    def answer(self, article_id: str) -> Chat:
        citation = {"title": article_id.title(), "article_id": article_id, "url": None, "source_path": ""}
        self._add(Direction.OUTBOUND, "bot", "passage", {"kind": "answer", "citations": [citation]})
        return self

    def escalate(self, subject: str, *, resolved: bool = False) -> Chat:
        self._add(Direction.OUTBOUND, "bot", "ticket opened", {"kind": "escalation", "citations": []})
        with self.db.transaction() as session:
            number = f"TZ-{1000 + self.conversation_id}"
            session.add(
                Ticket(
                    number=number,
                    conversation_id=self.conversation_id,
                    requester_id=self.requester_id,
                    subject=subject,
                    status="resolved" if resolved else "open",
                )
            )
        return self

    def agent_says(self, text: str) -> Chat:
        self._add(Direction.OUTBOUND, "agent", text, {"kind": "agent", "citations": []})
        return self


def test_article_stats_count_shown_solved_unhelpful_and_escalated(db: Database) -> None:
    db.migrate()
    Chat(db, "a").ask("vpn drops").answer("vpn").ask("", action="solved")
    Chat(db, "b").ask("vpn drops").answer("vpn").ask("", action="not_solved").escalate("vpn drops")
    Chat(db, "c", resolved_by="bot").ask("printer").answer("printer").ask("thanks, that fixed it")
    Chat(db, "d").ask("printer jammed").answer("printer")  # no outcome yet

    with db.transaction() as session:
        stats = {s.article_id: s for s in kb_feedback.article_stats(session)}

    vpn, printer = stats["vpn"], stats["printer"]
    assert (vpn.shown, vpn.solved, vpn.not_helpful, vpn.escalated) == (2, 1, 1, 1)
    assert (printer.shown, printer.solved, printer.escalated) == (2, 1, 0)
    best, worst = kb_feedback.best_and_worst(list(stats.values()), min_shown=2, count=1)
    assert [s.article_id for s in best] == ["printer"] and [s.article_id for s in worst] == ["vpn"]


def fake_encode(texts: Sequence[str]) -> np.ndarray:
    """Questions mentioning the same key word are similar (1.0), others orthogonal."""
    keys = ["badge", "parking", "other"]
    rows = np.zeros((len(texts), len(keys)))
    for row, text in enumerate(texts):
        rows[row, next((i for i, k in enumerate(keys) if k in text.lower()), 2)] = 1.0
    return rows


def test_suggest_groups_agent_answered_questions_into_reviewable_drafts(db: Database, tmp_path: Path) -> None:
    db.migrate()
    Chat(db, "a").ask("my badge does not open the door").escalate("Badge does not open the door", resolved=True)
    Chat(db, "b").ask("badge stopped working").escalate("Badge stopped working", resolved=True).agent_says(
        "Re-register the badge at reception; it syncs within 10 minutes."
    )
    Chat(db, "c").ask("where do I park").escalate("Where do I park?", resolved=True).agent_says("Level -2, bay 40+.")
    Chat(db, "d").ask("vpn").escalate("VPN broken")  # still open: not a suggestion yet

    with db.transaction() as session:
        questions = kb_feedback.resolved_questions(session)
    # The first badge ticket got no agent reply (resolved as a duplicate): nothing to learn from it.
    assert {q.question for q in questions} == {"Badge stopped working", "Where do I park?"}
    Chat(db, "e").ask("badge broken").escalate("My badge is broken", resolved=True).agent_says("Ask reception.")
    with db.transaction() as session:
        questions = kb_feedback.resolved_questions(session)

    suggestions = kb_feedback.group_similar(questions, fake_encode)
    assert [len(s.questions) for s in suggestions] == [2, 1]  # the two badge questions share a draft
    paths = kb_feedback.write_drafts(suggestions, tmp_path / "drafts")
    text = paths[0].read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert front["title"] == "Badge stopped working" and front["tags"] == ["suggested"]
    assert "- My badge is broken" in text
    assert "Re-register the badge at reception" in text and "Ask reception." in text

    # A published draft is an ordinary KB article.
    kb = tmp_path / "kb"
    kb.mkdir()
    for path in paths:
        (kb / path.name).write_text(path.read_text())
    articles, skipped = load_articles(kb)
    assert not skipped and {a.title for a in articles} == {"Badge stopped working", "Where do I park?"}
    assert all(a.body.startswith("# ") for a in articles)
