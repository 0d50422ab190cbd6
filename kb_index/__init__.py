"""Knowledge-base indexing and retrieval for tierzero.

Articles are read from a folder (:mod:`kb_index.documents`: Markdown, text,
HTML, PDF and FAQ files of question-answer pairs), split into
heading-aware chunks (:mod:`kb_index.chunking`), embedded
(:mod:`kb_index.embedding`) and kept in a FAISS index next to a BM25 keyword
index (:mod:`kb_index.index`), which answers hybrid searches.
"""

from kb_index.chunking import Chunk, chunk_article
from kb_index.documents import Article, KnowledgeBaseError, SkippedFile, load_articles
from kb_index.embedding import (
    BUNDLED_MODEL,
    BUNDLED_MODEL_SHA256,
    Embedder,
    ModelLoadError,
    SentenceTransformerEmbedder,
    load_embedder,
)
from kb_index.index import (
    SEARCH_MODES,
    CorruptIndexError,
    IndexNotFoundError,
    IndexReport,
    IndexStats,
    KnowledgeIndex,
    SearchHit,
)
from kb_index.lexical import tokenize

__all__ = [
    "BUNDLED_MODEL",
    "BUNDLED_MODEL_SHA256",
    "SEARCH_MODES",
    "Article",
    "Chunk",
    "CorruptIndexError",
    "Embedder",
    "IndexNotFoundError",
    "IndexReport",
    "IndexStats",
    "KnowledgeBaseError",
    "KnowledgeIndex",
    "ModelLoadError",
    "SearchHit",
    "SentenceTransformerEmbedder",
    "SkippedFile",
    "chunk_article",
    "load_articles",
    "load_embedder",
    "tokenize",
]
