from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kb_index.documents import Article
from kb_index.index import KnowledgeIndex


@pytest.fixture
def index(sample_kb: Path, index_dir: Path, embedder) -> KnowledgeIndex:
    built = KnowledgeIndex(index_dir=index_dir, embedder=embedder, max_chunk_chars=150)
    built.sync(sample_kb)
    return built


def article(article_id: str, title: str, body: str) -> Article:
    return Article(
        article_id=article_id,
        title=title,
        url=None,
        source_path=f"{article_id}.md",
        tags=(),
        body=body,
        content_hash=str(hash((title, body))),
    )


@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
def test_every_mode_finds_the_obvious_article(index: KnowledgeIndex, mode: str) -> None:
    hits = index.search("password locked out after failed sign-in attempts", k=3, mode=mode)

    assert hits[0].article_id == "account/reset-password"
    assert hits[0].heading_path == ("Locked out",)
    assert "locked for thirty minutes" in hits[0].passage


def test_results_are_distinct_articles_best_first(index: KnowledgeIndex) -> None:
    hits = index.search("VPN tunnel drops, error 0x80070005", k=10)

    assert [hit.article_id for hit in hits][0] == "vpn-keeps-disconnecting"
    assert len({hit.article_id for hit in hits}) == len(hits) == 3
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert len(index) > 3  # several chunks per article, yet one hit each


def test_scores_are_in_their_documented_ranges(index: KnowledgeIndex) -> None:
    for mode in ("hybrid", "dense", "lexical"):
        for hit in index.search("printer offline spooler", k=3, mode=mode):
            assert -1.0 <= hit.dense_score <= 1.0
            assert 0.0 <= hit.lexical_score <= 1.0
    [top] = index.search("printer offline spooler", k=1, mode="lexical")
    assert top.lexical_score == pytest.approx(1.0)
    assert top.score == pytest.approx(top.lexical_score)
    [top] = index.search("printer offline spooler", k=1, mode="dense")
    assert top.score == pytest.approx(top.dense_score)


def test_exact_error_code_wins_over_similar_wording(index_dir: Path, embedder) -> None:
    # Two near-identical articles that differ only in the error code: the
    # words carry no signal, the exact token must.
    index = KnowledgeIndex(index_dir=index_dir, embedder=embedder)
    index.sync_articles(
        [
            article(
                "update-denied", "Windows Update fails", "Windows Update stops with error 0x80070005 during install."
            ),
            article(
                "update-space", "Windows Update fails", "Windows Update stops with error 0x800f0922 during install."
            ),
            article("ticket", "Ticket status", "Ask about ticket TZ-1042 or any other ticket in the portal."),
        ]
    )

    assert index.search("0x800f0922", k=1, mode="lexical")[0].article_id == "update-space"
    assert index.search("windows update error 0x800f0922", k=1)[0].article_id == "update-space"
    assert index.search("windows update error 0x80070005", k=1)[0].article_id == "update-denied"
    assert index.search("what's up with tz-1042?", k=1)[0].article_id == "ticket"


def test_title_words_count_for_keyword_search(index_dir: Path, embedder) -> None:
    index = KnowledgeIndex(index_dir=index_dir, embedder=embedder)
    index.sync_articles(
        [
            article("teams", "Microsoft Teams camera not working", "Close other apps and check privacy settings."),
            article("zoom", "Zoom audio", "If Teams or the camera app holds the device, close it."),
        ]
    )

    assert index.search("teams camera", k=1, mode="lexical")[0].article_id == "teams"


def test_lexical_mode_returns_only_keyword_matches(index: KnowledgeIndex) -> None:
    assert index.search("zzzunknownword", mode="lexical") == []
    hits = index.search("GlobalProtect", k=5, mode="lexical")
    assert [hit.article_id for hit in hits] == ["vpn-keeps-disconnecting"]


def test_empty_query_and_empty_index_give_no_hits(index: KnowledgeIndex, tmp_path: Path, embedder) -> None:
    assert index.search("") == []
    assert index.search("   \n\t") == []
    assert index.search("printer", k=0) == []
    empty = KnowledgeIndex(index_dir=tmp_path / "empty", embedder=embedder)
    assert empty.search("printer") == []


def test_unknown_mode_is_rejected(index: KnowledgeIndex) -> None:
    with pytest.raises(ValueError, match="Unknown search mode 'semantic'"):
        index.search("printer", mode="semantic")


def test_k_larger_than_the_candidate_pool_still_returns_every_article(index_dir: Path, embedder) -> None:
    # One article with many chunks would fill a shallow candidate list on its own.
    long_body = "\n\n".join(f"## Step {n}\n\nRestart the printer spooler, step {n} of many." * 3 for n in range(80))
    articles = [article("big", "Printer spooler", long_body)]
    articles += [article(f"other-{n}", f"Printer note {n}", f"Printer tip {n}.") for n in range(5)]
    index = KnowledgeIndex(index_dir=index_dir, embedder=embedder, max_chunk_chars=100)
    index.sync_articles(articles)

    hits = index.search("printer spooler restart", k=6, mode="dense")

    assert len(index) > 60
    assert sorted(hit.article_id for hit in hits) == sorted(a.article_id for a in articles)


def test_duplicate_article_ids_are_rejected(index_dir: Path, embedder) -> None:
    index = KnowledgeIndex(index_dir=index_dir, embedder=embedder)

    with pytest.raises(ValueError, match="'same'"):
        index.sync_articles([article("same", "A", "a"), article("same", "B", "b")])


def test_concurrent_searches_match_sequential_results(index: KnowledgeIndex) -> None:
    queries = ["vpn drops", "reset password", "printer offline", "AADSTS50053", "TZ-1042", "wifi power saving"] * 10
    expected = {query: index.search(query, k=3) for query in set(queries)}

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda query: (query, index.search(query, k=3)), queries))

    for query, hits in results:
        assert hits == expected[query]


def test_searches_keep_working_while_a_sync_swaps_the_index(
    index: KnowledgeIndex, sample_kb: Path, write_article
) -> None:
    errors: list[BaseException] = []
    stop = threading.Event()

    def search_until_stopped() -> None:
        while not stop.is_set():
            try:
                hits = index.search("printer offline", k=3)
                assert hits and hits[0].article_id == "printer-offline"
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=search_until_stopped) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for n in range(15):
            write_article("printer-offline.md", f"# Printer is offline\n\nThe printer is offline: fix number {n}.")
            index.sync(sample_kb)
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    assert errors == []


def test_a_hit_carries_what_follows_it_in_the_same_article(index: KnowledgeIndex) -> None:
    [hit] = index.search("GlobalProtect drops the tunnel on home Wi-Fi", k=1, mode="lexical")
    assert hit.article_id == "vpn-keeps-disconnecting"
    assert hit.heading_path == ("Symptoms",)
    # The fix that follows the symptoms, under its heading; never another article's text.
    assert hit.continuation.startswith("Fix:\n\nOpen the GlobalProtect settings")
    assert "password" not in hit.continuation.lower()
    [last] = index.search("disable power saving on the wireless adapter reconnect", k=1, mode="lexical")
    assert last.continuation == ""


def test_an_error_code_in_the_question_ranks_the_article_that_contains_it_first(index_dir: Path, embedder) -> None:
    index = KnowledgeIndex(index_dir=index_dir, embedder=embedder)
    index.sync_articles(
        [
            article("vpn-denied", "VPN error access denied", "VPN error: access denied when the VPN connects."),
            article("updates", "Windows updates fail", "Updates stop with 0x80070005; run the update troubleshooter."),
        ]
    )
    question = "VPN error access denied 0x80070005"
    # Most of the words point at the VPN article; the pasted code decides.
    assert index.search(question, k=2, mode="dense")[0].article_id == "vpn-denied"
    assert index.search(question, k=2)[0].article_id == "updates"
    assert index.search("VPN error access denied", k=2)[0].article_id == "vpn-denied"
