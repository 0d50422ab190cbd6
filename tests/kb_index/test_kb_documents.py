from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from kb_index.documents import KnowledgeBaseError, load_articles


def test_front_matter_gives_title_url_and_tags(write_article, kb_dir: Path) -> None:
    raw = (
        "---\ntitle: VPN drops\nurl: https://help.example.com/vpn\ntags: [network, vpn]\n---\n# Heading\n\nBody text.\n"
    )
    write_article("network/vpn.md", raw)

    articles, skipped = load_articles(kb_dir)

    assert skipped == []
    [article] = articles
    assert article.article_id == "network/vpn"
    assert article.source_path == "network/vpn.md"
    assert article.title == "VPN drops"
    assert article.url == "https://help.example.com/vpn"
    assert article.tags == ("network", "vpn")
    assert article.body == "# Heading\n\nBody text."
    assert "title:" not in article.body
    assert article.content_hash == hashlib.sha256(raw.encode()).hexdigest()


def test_title_falls_back_to_first_heading_then_to_file_name(write_article, kb_dir: Path) -> None:
    write_article("with-heading.md", "Intro line.\n\n# Printer offline\n\nText.\n")
    write_article("outlook_search-broken.txt", "Search in Outlook returns nothing.\n")

    articles = {article.article_id: article for article in load_articles(kb_dir)[0]}

    assert articles["with-heading"].title == "Printer offline"
    assert articles["outlook_search-broken"].title == "Outlook search broken"
    assert articles["outlook_search-broken"].url is None
    assert articles["outlook_search-broken"].tags == ()


def test_comma_separated_tags_and_non_string_title(write_article, kb_dir: Path) -> None:
    write_article("codes.md", "---\ntitle: 404\ntags: 'web, errors ,'\n---\nPage not found.\n")

    [article] = load_articles(kb_dir)[0]

    assert article.title == "404"
    assert article.tags == ("web", "errors")


def test_reads_supported_extensions_recursively_in_sorted_order(write_article, kb_dir: Path) -> None:
    write_article("b.markdown", "B")
    write_article("a/z.txt", "Z")
    write_article("a/y.md", "Y")
    write_article("notes.docx", "ignored")
    write_article("image.png", "ignored")
    write_article(".hidden.md", "ignored")
    write_article(".drafts/draft.md", "ignored")

    articles, skipped = load_articles(kb_dir)

    assert [article.source_path for article in articles] == ["a/y.md", "a/z.txt", "b.markdown"]
    assert skipped == []


def test_bad_files_are_skipped_with_a_reason_and_a_warning(
    write_article, kb_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_article("good.md", "# Good\n\nFine.")
    (kb_dir / "binary.md").write_bytes(b"PK\x03\x04\x00\x00binary")
    (kb_dir / "latin1.md").write_bytes("caf\xe9".encode("latin-1"))
    write_article("empty.md", "")
    write_article("blank.txt", "  \n\n \t\n")
    write_article("broken-yaml.md", "---\ntitle: [unclosed\n---\nBody")
    write_article("unterminated.md", "---\ntitle: Never closed\nBody text")
    write_article("only-front-matter.md", "---\ntitle: Nothing else\n---\n")
    # Running as root, permissions cannot make a file unreadable; a dangling
    # symlink fails to open just like an unreadable file does.
    (kb_dir / "dangling.md").symlink_to(kb_dir / "does-not-exist.md")

    with caplog.at_level(logging.WARNING, logger="kb_index.documents"):
        articles, skipped = load_articles(kb_dir)

    assert [article.article_id for article in articles] == ["good"]
    reasons = {item.path: item.reason for item in skipped}
    assert set(reasons) == {
        "binary.md",
        "latin1.md",
        "empty.md",
        "blank.txt",
        "broken-yaml.md",
        "unterminated.md",
        "only-front-matter.md",
        "dangling.md",
    }
    assert "binary" in reasons["binary.md"]
    assert "UTF-8" in reasons["latin1.md"]
    assert "empty" in reasons["empty.md"]
    assert "empty" in reasons["blank.txt"]
    assert "front matter" in reasons["broken-yaml.md"]
    assert "front matter" in reasons["unterminated.md"]
    assert "cannot read" in reasons["dangling.md"]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == len(skipped)


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_skipped_instead_of_blocking(write_article, kb_dir: Path) -> None:
    import os

    os.mkfifo(kb_dir / "pipe.md")

    articles, skipped = load_articles(kb_dir)

    assert articles == []
    assert [(item.path, item.reason) for item in skipped] == [("pipe.md", "not a regular file")]


def test_same_article_id_from_two_files_keeps_the_first(write_article, kb_dir: Path) -> None:
    write_article("faq.md", "Markdown FAQ")
    write_article("faq.txt", "Text FAQ")

    articles, skipped = load_articles(kb_dir)

    assert [article.source_path for article in articles] == ["faq.md"]
    assert [item.path for item in skipped] == ["faq.txt"]
    assert "faq.md" in skipped[0].reason


def test_crlf_and_byte_order_mark_are_normalised(kb_dir: Path) -> None:
    (kb_dir / "windows.md").write_bytes(
        "\ufeff---\r\ntitle: From Windows\r\n---\r\nLine one.\r\nLine two.\r\n".encode()
    )

    [article] = load_articles(kb_dir)[0]

    assert article.title == "From Windows"
    assert article.body == "Line one.\nLine two."


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeBaseError, match="not found: .*nowhere"):
        load_articles(tmp_path / "nowhere")


def test_a_file_instead_of_a_folder_is_a_clear_error(tmp_path: Path) -> None:
    file = tmp_path / "kb.md"
    file.write_text("x")
    with pytest.raises(KnowledgeBaseError, match="not a folder"):
        load_articles(file)
