"""Loaders for the formats IT teams keep: HTML pages, PDFs and FAQ files (CSV / JSONL)."""

from __future__ import annotations

from pathlib import Path

from kb_index.chunking import chunk_article
from kb_index.documents import load_articles

HTML_PAGE = """<html><head><title>Intranet | VPN</title>
<link rel="canonical" href="https://intranet.example.com/it/vpn"></head>
<body><nav>Home | News | Canteen menu</nav>
<main><h1>VPN keeps disconnecting</h1>
<h2>Fix</h2><p>Switch the GlobalProtect gateway to the nearest region.</p>
<h3>Error 0x80070005</h3><p>Reinstall the client.</p></main>
<footer>Copyright</footer><script>track()</script></body></html>
"""


def test_html_keeps_main_content_headings_and_canonical_url(kb_dir: Path) -> None:
    (kb_dir / "vpn.html").write_text(HTML_PAGE, encoding="utf-8")
    [article], skipped = load_articles(kb_dir)
    assert not skipped
    assert (article.article_id, article.title, article.url) == (
        "vpn",
        "VPN keeps disconnecting",
        "https://intranet.example.com/it/vpn",
    )
    assert "Canteen" not in article.body and "track()" not in article.body and "Copyright" not in article.body
    chunks = chunk_article(article, max_chars=100)
    assert ("Fix", "Error 0x80070005") in [chunk.heading_path for chunk in chunks]
    assert all(chunk.url == "https://intranet.example.com/it/vpn" for chunk in chunks)


def minimal_pdf(pages: list[str]) -> bytes:
    """A valid PDF with one line of Helvetica text per page, written by hand (no PDF writer needed)."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", ""]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET"
        content_id = len(objects) + 2
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
        kids.append(len(objects) + 1)
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content_id - 1} 0 R "
            "/Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> >>"
        )
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>"
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def test_pdf_pages_become_sections(kb_dir: Path) -> None:
    (kb_dir / "printer-manual.pdf").write_bytes(minimal_pdf(["Printer manual", "Error E-204 means a paper jam"]))
    [article], skipped = load_articles(kb_dir)
    assert not skipped
    assert article.title == "Printer manual"
    chunks = chunk_article(article, max_chars=100)
    page_two = next(chunk for chunk in chunks if "E-204" in chunk.text)
    # Small pages are merged into one chunk; the page heading then stays in the text.
    assert "Page 2" in (*page_two.heading_path, page_two.text) or "## Page 2" in page_two.text
    assert page_two.source_path == "printer-manual.pdf"


def test_a_damaged_pdf_is_skipped_with_a_reason(kb_dir: Path) -> None:
    (kb_dir / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    articles, skipped = load_articles(kb_dir)
    assert articles == [] and skipped[0].path == "broken.pdf" and "PDF" in skipped[0].reason


def test_faq_csv_and_jsonl_give_one_article_per_pair(kb_dir: Path) -> None:
    (kb_dir / "faq.csv").write_text(
        "id,Question,Answer,url\nwifi,How do I join guest Wi-Fi?,Ask reception for a voucher.,https://x/wifi\n"
        ',"Where is the printer?","Third floor, by the kitchen.",\n',
        encoding="utf-8",
    )
    (kb_dir / "more.jsonl").write_text('{"question": "Who approves software?", "answer": "Your manager."}\n')
    articles, skipped = load_articles(kb_dir)
    assert not skipped
    by_id = {article.article_id: article for article in articles}
    assert set(by_id) == {"faq#wifi", "faq#3", "more#1"}
    assert by_id["faq#wifi"].title == "How do I join guest Wi-Fi?" and by_id["faq#wifi"].url == "https://x/wifi"
    assert by_id["faq#3"].body == "Third floor, by the kitchen."


def test_a_faq_row_without_an_answer_is_reported(kb_dir: Path) -> None:
    (kb_dir / "faq.csv").write_text("question,answer\nWhat is the VPN?,\n", encoding="utf-8")
    articles, skipped = load_articles(kb_dir)
    assert articles == [] and "row 2 needs a question and an answer" in skipped[0].reason
