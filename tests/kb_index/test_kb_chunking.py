from __future__ import annotations

import pytest

from kb_index.chunking import chunk_article
from kb_index.documents import Article


def make_article(body: str, *, source_path: str = "guide.md", title: str = "Guide") -> Article:
    return Article(
        article_id=source_path.rsplit(".", 1)[0],
        title=title,
        url="https://help.example.com/guide",
        source_path=source_path,
        tags=(),
        body=body,
        content_hash="0" * 64,
    )


def paragraph(words: int, word: str = "lorem") -> str:
    return " ".join([word] * (words - 1)) + "."


def test_sections_carry_their_heading_path() -> None:
    body = "\n".join(
        [
            "# Guide",
            "",
            paragraph(40, "intro"),
            "",
            "## Windows",
            "",
            paragraph(40, "windows"),
            "",
            "### Windows 11",
            "",
            paragraph(40, "eleven"),
            "",
            "## macOS",
            "",
            paragraph(40, "mac"),
        ]
    )

    chunks = chunk_article(make_article(body), max_chars=400)

    assert [chunk.heading_path for chunk in chunks] == [
        (),
        ("Windows",),
        ("Windows", "Windows 11"),
        ("macOS",),
    ]
    assert chunks[2].text.startswith("eleven")
    assert [chunk.chunk_id for chunk in chunks] == ["guide#0", "guide#1", "guide#2", "guide#3"]
    assert all(chunk.title == "Guide" and chunk.url == "https://help.example.com/guide" for chunk in chunks)
    assert all(chunk.source_path == "guide.md" and chunk.article_id == "guide" for chunk in chunks)


def test_headings_inside_code_fences_are_not_sections() -> None:
    body = "## Script\n\n" + paragraph(30, "run") + "\n\n```bash\n# not a heading\necho hi\n```\n"

    [chunk] = chunk_article(make_article(body), max_chars=400)

    assert chunk.heading_path == ("Script",)
    assert "# not a heading" in chunk.text


def test_long_section_splits_at_paragraphs_then_sentences() -> None:
    paragraphs = [paragraph(30, f"p{n}") for n in range(6)]  # about 100 chars each
    long_paragraph = " ".join(f"Sentence number {n} explains one more step of the fix." for n in range(20))
    body = "## Steps\n\n" + "\n\n".join(paragraphs) + "\n\n" + long_paragraph

    chunks = chunk_article(make_article(body), max_chars=250)

    assert all(len(chunk.text) <= 250 for chunk in chunks)
    assert all(chunk.heading_path == ("Steps",) for chunk in chunks)
    # Paragraphs are never cut in the middle ...
    for text in paragraphs:
        assert any(text in chunk.text for chunk in chunks)
    # ... and the over-long paragraph is cut only between sentences.
    long_pieces = [chunk.text for chunk in chunks if "Sentence number" in chunk.text]
    assert len(long_pieces) > 1
    assert all(piece.startswith("Sentence number") and piece.endswith("fix.") for piece in long_pieces)
    # Nothing is lost.
    assert " ".join(long_pieces) == long_paragraph


def test_tiny_sections_merge_into_the_next_one() -> None:
    body = "\n".join(
        [
            "## Before you start",
            "",
            "See below.",
            "",
            "## Install",
            "",
            paragraph(60, "install"),
        ]
    )

    [chunk] = chunk_article(make_article(body), max_chars=1200)

    # The merged chunk spans two sibling sections: the path is their common
    # ancestor, so both headings stay in the text for context.
    assert chunk.heading_path == ()
    assert chunk.text.startswith("## Before you start\n\nSee below.\n\n## Install\n\ninstall")


def test_heading_without_body_is_carried_by_its_subsections() -> None:
    body = "## Troubleshooting\n\n### Wi-Fi\n\n" + paragraph(60, "wifi")

    [chunk] = chunk_article(make_article(body), max_chars=1200)

    assert chunk.heading_path == ("Troubleshooting", "Wi-Fi")
    assert chunk.text.startswith("wifi")


def test_plain_text_is_split_by_paragraphs_without_headings() -> None:
    body = "\n\n".join(paragraph(30, f"line{n}") for n in range(8)) + "\n\n# not a heading in a txt file"

    chunks = chunk_article(make_article(body, source_path="notes.txt"), max_chars=300)

    assert len(chunks) > 1
    assert all(chunk.heading_path == () for chunk in chunks)
    assert all(0 < len(chunk.text) <= 300 for chunk in chunks)
    assert "# not a heading" in chunks[-1].text


def test_unbreakable_text_is_hard_wrapped() -> None:
    body = "x" * 950

    chunks = chunk_article(make_article(body, source_path="dump.txt"), max_chars=400)

    assert [len(chunk.text) for chunk in chunks] == [400, 400, 150]


def test_no_empty_chunks_and_headings_only_article_still_indexed() -> None:
    chunks = chunk_article(make_article("# Guide\n\n## Empty section\n\n## Another\n"), max_chars=1200)

    assert len(chunks) == 1
    assert chunks[0].text.strip()


def test_every_character_of_prose_survives_chunking() -> None:
    sections = [f"## Part {n}\n\n" + "\n\n".join(paragraph(25, f"w{n}x{m}") for m in range(5)) for n in range(5)]
    body = "\n\n".join(sections)

    chunks = chunk_article(make_article(body), max_chars=300)

    joined = "\n".join(chunk.text for chunk in chunks)
    for n in range(5):
        for m in range(5):
            assert paragraph(25, f"w{n}x{m}") in joined
    assert all(chunk.text and len(chunk.text) <= 300 for chunk in chunks)


def test_rejects_a_uselessly_small_limit() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        chunk_article(make_article("text"), max_chars=10)
