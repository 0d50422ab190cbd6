"""Knowledge-base articles for the portal: keyword search and article pages.

The portal reads the same article folder the bot answers from. Search is BM25
over titles, tags and text (``kb_index.lexical``), so it needs no embedding
model and answers instantly; the chat box is where the semantic search lives.
Markdown is rendered with raw HTML disabled, so an article cannot inject script.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from markdown_it import MarkdownIt

from kb_index import Article, KnowledgeBaseError, load_articles, tokenize
from kb_index.lexical import LexicalIndex

log = logging.getLogger(__name__)
SNIPPET_CHARS = 220


@dataclass(frozen=True)
class ArticleHit:
    article_id: str
    title: str
    snippet: str
    score: float
    tags: tuple[str, ...]


class ArticleCatalog:
    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._lock = threading.Lock()
        self._articles: list[Article] | None = None
        self._index: LexicalIndex | None = None
        self._markdown = MarkdownIt("commonmark", {"html": False}).enable("table")

    def _load(self) -> list[Article]:
        with self._lock:
            if self._articles is None:
                try:
                    articles, skipped = load_articles(self._folder)
                except KnowledgeBaseError as exc:
                    log.warning("portal knowledge base unavailable: %s", exc)
                    articles, skipped = [], []
                for item in skipped:
                    log.info("portal skipped %s: %s", item.path, item.reason)
                self._index = LexicalIndex(
                    [tokenize(" ".join((a.title, a.title, " ".join(a.tags), a.body))) for a in articles]
                )
                self._articles = articles
            return self._articles

    def search(self, query: str, *, limit: int = 10) -> list[ArticleHit]:
        articles = self._load()
        tokens = tokenize(query[:500])
        if not articles or not tokens or self._index is None:
            return []
        scores = self._index.scores(tokens)
        order = np.argsort(-scores)[:limit]
        return [
            ArticleHit(
                article_id=articles[i].article_id,
                title=articles[i].title,
                snippet=_snippet(articles[i].body),
                score=float(scores[i]),
                tags=articles[i].tags,
            )
            for i in order
            if scores[i] > 0
        ]

    def all(self) -> list[ArticleHit]:
        return [
            ArticleHit(a.article_id, a.title, _snippet(a.body), 0.0, a.tags)
            for a in sorted(self._load(), key=lambda a: a.title.casefold())
        ]

    def get(self, article_id: str) -> Article | None:
        return next((a for a in self._load() if a.article_id == article_id), None)

    def render(self, article: Article) -> str:
        """The article as HTML (raw HTML in the source is escaped, not passed through)."""
        return self._markdown.render(article.body)


def _snippet(body: str) -> str:
    lines = [line.strip() for line in body.splitlines()]
    text = " ".join(line for line in lines if line and not line.startswith("#"))
    text = text.replace("**", "").replace("`", "")
    return text[:SNIPPET_CHARS] + ("…" if len(text) > SNIPPET_CHARS else "")
