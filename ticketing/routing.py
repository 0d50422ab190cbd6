"""Categorisation and routing of a new ticket: category, priority and group.

Category, in order:
1. an agent's earlier correction of (almost) the same question;
2. keyword rules from config (a word or phrase in the question);
3. channel rules (every ticket from a channel, e.g. a hardware kiosk);
4. the nearest labelled neighbours by embedding: past tickets with a category,
   agents' corrections and KB articles labelled by the keyword rules; a
   similarity-weighted vote among the ``neighbours`` closest above ``min_similarity``;
5. the default category.

Priority: the requester's own choice wins; else an agent's correction of a
near-duplicate; else impact/urgency cues ("outage", "everyone" -> urgent;
"can't work" -> high; "when you have time" -> low); else normal.

Group: a correction, else the category's group, else the default group.

The embedding function is injected (``embed(texts) -> (n, d) array``) so tests
use a fake and the server shares the knowledge index's model.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from ticketing.models import Priority, Ticket
from ticketing.service_desk_models import RoutingCorrection

Embed = Callable[[Sequence[str]], np.ndarray]

# A correction counts for a new question this similar to the corrected one (cosine).
NEAR_DUPLICATE = 0.9
# A correction is worth this many ordinary neighbours in the vote: an agent said so.
CORRECTION_WEIGHT = 2.0
# Past tickets considered as neighbours (the most recent ones).
MAX_PAST_TICKETS = 1000
# Vectors kept in memory: the past tickets a prediction compares with, the KB articles, and
# the texts of tickets being opened. Least recently used ones go first, so a long-running
# server's cache stays a few MB instead of growing with every ticket ever opened.
MAX_CACHED_VECTORS = 4 * MAX_PAST_TICKETS
ROUTED_FIELDS = ("category", "priority", "group")


@dataclass(frozen=True)
class CategoryRule:
    name: str
    keywords: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    group: str | None = None


@dataclass(frozen=True)
class PriorityCues:
    urgent: tuple[str, ...] = ()
    high: tuple[str, ...] = ()
    low: tuple[str, ...] = ()


@dataclass(frozen=True)
class RoutingRules:
    categories: tuple[CategoryRule, ...] = ()
    default_category: str = "general"
    default_group: str = "service-desk"
    cues: PriorityCues = PriorityCues()
    neighbours: int = 5
    min_similarity: float = 0.45

    def group_for(self, category: str) -> str:
        for rule in self.categories:
            if rule.name == category and rule.group:
                return rule.group
        return self.default_group

    def known_category(self, category: str) -> bool:
        return category == self.default_category or any(rule.name == category for rule in self.categories)


@dataclass(frozen=True)
class Routing:
    category: str
    priority: str
    group: str
    # Why, for the audit trail: "keyword:vpn", "channel:email", "neighbours:0.71", "correction", "default"...
    category_reason: str = "default"
    priority_reason: str = "default"
    group_reason: str = "category"

    def as_detail(self) -> dict[str, str]:
        return {
            "category": self.category,
            "category_reason": self.category_reason,
            "priority": self.priority,
            "priority_reason": self.priority_reason,
            "group": self.group,
            "group_reason": self.group_reason,
        }


@dataclass(frozen=True)
class LabelledText:
    text: str
    label: str


def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    # Whole words only ("vpn" must not match "vpns-unrelated"); apostrophes and spaces as written.
    return re.compile(r"(?<!\w)" + re.escape(phrase.lower()) + r"(?!\w)")


def _normalise(text: str) -> str:
    return " ".join(text.lower().replace("\u2019", "'").split())


def find_phrase(text: str, phrases: Sequence[str]) -> str | None:
    """The first of ``phrases`` found in ``text`` as whole words, case-insensitively."""
    normal = _normalise(text)
    for phrase in phrases:
        if phrase.strip() and _phrase_pattern(_normalise(phrase)).search(normal):
            return phrase
    return None


def keyword_category(text: str, rules: RoutingRules) -> tuple[str, str] | None:
    """(category, matched keyword) of the first category with a keyword in the text."""
    for rule in rules.categories:
        found = find_phrase(text, rule.keywords)
        if found:
            return rule.name, found
    return None


def channel_category(channel: str, rules: RoutingRules) -> str | None:
    for rule in rules.categories:
        if channel in rule.channels:
            return rule.name
    return None


def priority_from_cues(text: str, cues: PriorityCues) -> tuple[str, str]:
    """(priority, reason) from impact and urgency words; urgent cues outrank the others."""
    for priority, phrases in ((Priority.URGENT, cues.urgent), (Priority.HIGH, cues.high), (Priority.LOW, cues.low)):
        found = find_phrase(text, phrases)
        if found:
            return str(priority), f"cue:{found}"
    return str(Priority.NORMAL), "default"


def label_articles(articles: Sequence[tuple[str, str]], rules: RoutingRules) -> list[LabelledText]:
    """KB articles (title, text) labelled by the keyword rules; articles no rule matches are left out."""
    labelled = []
    for title, text in articles:
        found = keyword_category(f"{title}\n{text}", rules)
        if found:
            labelled.append(LabelledText(text=f"{title}\n{text}"[:2000], label=found[0]))
    return labelled


def nearest_label(
    query: np.ndarray,
    vectors: np.ndarray,
    labels: Sequence[str],
    weights: Sequence[float],
    *,
    k: int,
    min_similarity: float,
) -> tuple[str, float] | None:
    """Similarity-weighted vote of the ``k`` nearest examples at least ``min_similarity`` close.

    Returns (label, best similarity among that label's voters) or None when no example is close enough.
    """
    if len(labels) == 0:
        return None
    similarities = _unit(vectors) @ _unit(query.reshape(1, -1))[0]
    order = np.argsort(-similarities)[:k]
    votes: dict[str, float] = defaultdict(float)
    best: dict[str, float] = defaultdict(float)
    for row in order:
        similarity = float(similarities[row])
        if similarity < min_similarity:
            break
        votes[labels[row]] += similarity * weights[row]
        best[labels[row]] = max(best[labels[row]], similarity)
    if not votes:
        return None
    label = max(votes, key=lambda name: (votes[name], best[name]))
    return label, best[label]


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


@dataclass
class Router:
    """Predicts category, priority and group of a new ticket; learns from agents' corrections."""

    rules: RoutingRules
    embed: Embed | None = None
    articles: Sequence[LabelledText] = ()
    _cache: OrderedDict[str, np.ndarray] = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def prepare(self, text: str) -> None:
        """Embed ``text`` now, so that routing it later (inside a write transaction) does not wait for the model."""
        self._vector(text)

    def route(self, session: Session, *, text: str, channel: str, requested_priority: str | None = None) -> Routing:
        query = self._vector(text)
        corrections = self._corrections(session, text=text, query=query)

        category, category_reason = self._category(session, text=text, channel=channel, query=query, corr=corrections)

        if requested_priority in {str(p) for p in Priority}:
            priority, priority_reason = str(requested_priority), "requester"
        elif "priority" in corrections:
            priority, priority_reason = corrections["priority"], "correction"
        else:
            priority, priority_reason = priority_from_cues(text, self.rules.cues)

        if "group" in corrections:
            group, group_reason = corrections["group"], "correction"
        else:
            group, group_reason = self.rules.group_for(category), f"category:{category}"
        return Routing(category, priority, group, category_reason, priority_reason, group_reason)

    def _category(
        self, session: Session, *, text: str, channel: str, query: np.ndarray | None, corr: dict[str, str]
    ) -> tuple[str, str]:
        if "category" in corr:
            return corr["category"], "correction"
        by_keyword = keyword_category(text, self.rules)
        if by_keyword:
            return by_keyword[0], f"keyword:{by_keyword[1]}"
        by_channel = channel_category(channel, self.rules)
        if by_channel:
            return by_channel, f"channel:{channel}"
        if query is not None:
            found = self._nearest(session, query)
            if found:
                return found[0], f"neighbours:{found[1]:.2f}"
        return self.rules.default_category, "default"

    def warm_up(self, session: Session) -> int:
        """Embed the labelled past tickets and KB articles now (e.g. at start, outside any write
        transaction) rather than inside the first routing; returns how many texts are cached."""
        if self.embed is None:
            return 0
        self._vectors([e.text for e in self._labelled_examples(session)] or ["warm-up"])
        return len(self._cache)

    def _labelled_examples(self, session: Session) -> list[LabelledText]:
        """Past tickets with a category (most recent first) and KB articles, in known categories."""
        past = session.execute(
            select(Ticket.subject, Ticket.description, Ticket.category)
            .where(Ticket.category.is_not(None))
            .order_by(Ticket.id.desc())
            .limit(MAX_PAST_TICKETS)
        ).all()
        examples = [LabelledText(ticket_text(r.subject, r.description), r.category) for r in past]
        examples += list(self.articles)
        return [e for e in examples if self.rules.known_category(e.label)]

    def _nearest(self, session: Session, query: np.ndarray) -> tuple[str, float] | None:
        examples: list[LabelledText] = []
        weights: list[float] = []
        vectors: list[np.ndarray] = []
        for row in session.execute(
            select(RoutingCorrection.text, RoutingCorrection.corrected, RoutingCorrection.embedding)
            .where(RoutingCorrection.field == "category")
            .order_by(RoutingCorrection.id)
        ):
            if row.embedding is not None and self.rules.known_category(row.corrected):
                examples.append(LabelledText(row.text, row.corrected))
                vectors.append(np.asarray(row.embedding, dtype=np.float32))
                weights.append(CORRECTION_WEIGHT)
        others = self._labelled_examples(session)
        if others:
            vectors.extend(self._vectors([e.text for e in others]))
            examples.extend(others)
            weights.extend([1.0] * len(others))
        if not examples:
            return None
        return nearest_label(
            query,
            np.vstack(vectors),
            [e.label for e in examples],
            weights,
            k=self.rules.neighbours,
            min_similarity=self.rules.min_similarity,
        )

    def _corrections(self, session: Session, *, text: str, query: np.ndarray | None) -> dict[str, str]:
        """Field -> corrected value from the latest correction of the same (or a near-duplicate) question."""
        normal = _normalise(text)
        found: dict[str, str] = {}
        rows = session.execute(
            select(
                RoutingCorrection.field,
                RoutingCorrection.corrected,
                RoutingCorrection.text,
                RoutingCorrection.embedding,
            ).order_by(RoutingCorrection.id)
        ).all()
        for row in rows:  # later corrections overwrite earlier ones
            same = _normalise(row.text) == normal
            if not same and query is not None and row.embedding is not None:
                vector = np.asarray(row.embedding, dtype=np.float32).reshape(1, -1)
                if vector.shape[1] == query.shape[0]:
                    same = float((_unit(vector) @ _unit(query.reshape(1, -1))[0])[0]) >= NEAR_DUPLICATE
            if same:
                found[row.field] = row.corrected
        return found

    def _vector(self, text: str) -> np.ndarray | None:
        if self.embed is None:
            return None
        return self._vectors([text])[0]

    def _vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Embeddings, cached by text: past tickets are embedded once per process, not per prediction."""
        assert self.embed is not None
        keys = [hashlib.sha256(t.encode("utf-8", "replace")).hexdigest() for t in texts]
        with self._lock:
            found = {k: self._cache[k] for k in keys if k in self._cache}
            for key in found:
                self._cache.move_to_end(key)
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in found}.items())
        if missing:
            # Outside the lock: other threads keep reading the cache while the model runs.
            computed = np.asarray(self.embed([t for _, t in missing]), dtype=np.float32)
            with self._lock:
                for (key, _), vector in zip(missing, computed, strict=True):
                    found[key] = self._cache[key] = vector
                while len(self._cache) > MAX_CACHED_VECTORS:
                    self._cache.popitem(last=False)
        return [found[k] for k in keys]

    def record_correction(
        self, session: Session, *, ticket: Ticket, field_name: str, predicted: str | None, corrected: str, actor: str
    ) -> RoutingCorrection:
        """Store an agent's change of category, priority or group, with the ticket's text embedded."""
        if field_name not in ROUTED_FIELDS:
            raise ValueError(f"not a routed field: {field_name!r}")
        text = ticket_text(ticket.subject, ticket.description)
        vector = self._vector(text)
        correction = RoutingCorrection(
            ticket_id=ticket.id,
            field=field_name,
            predicted=predicted,
            corrected=corrected,
            text=text,
            embedding=None if vector is None else [round(float(x), 6) for x in vector],
            actor=actor,
        )
        session.add(correction)
        return correction


def ticket_text(subject: str, description: str | None) -> str:
    """The text a ticket is routed on: its subject and the start of its description."""
    return f"{subject}\n{(description or '')[:1000]}".strip()
