"""Categorisation by nearest labelled past tickets, with the bundled embedding model.

    python -m benchmarks.routing [--stackfaq DIR] [--past-limit N] --json

StackFAQ's paraphrased questions stand in for tickets and their thread for the
category (125 fine-grained categories, no keyword rules): for every thread,
every other question is a labelled past ticket and the rest are new tickets
routed by the production ``Router`` (SQLite, the bundled all-MiniLM-L6-v2).
Prints accuracy (right category), abstentions (nothing similar enough: the
default category) and the median routing time. The split is by position, not
tuned; the set is a development set, so treat the number as indicative.

Measured here (625 labelled past tickets, 624 new, 125 categories): accuracy
0.978, no abstentions, median 243 ms per routing on the shared 2-core machine
(the question's embedding dominates; past tickets are embedded once per
process). With only the 500 most recent past tickets considered, the oldest
125 (all examples of 25 threads) fall out and accuracy drops to 0.787, which
is why the router looks at the last 1,000.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from kb_index import load_embedder
from ticketing import routing as routing_module
from ticketing.db import Database
from ticketing.models import Conversation, Requester, Ticket
from ticketing.routing import CategoryRule, Router, RoutingRules

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "eval" / "retrieval" / "stackfaq"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stackfaq", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--past-limit", type=int, default=routing_module.MAX_PAST_TICKETS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    queries_path = args.stackfaq / "eval_queries.jsonl"
    if not queries_path.exists():
        print(f"skipped: {queries_path} not found", file=sys.stderr)
        return 0
    by_thread: dict[str, list[str]] = defaultdict(list)
    for line in queries_path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        by_thread[row["doc_id"]].append(row["text"])
    past = [(text, doc) for doc, texts in by_thread.items() for text in texts[0::2]]
    new = [(text, doc) for doc, texts in by_thread.items() for text in texts[1::2]]

    routing_module.MAX_PAST_TICKETS = args.past_limit
    embedder = load_embedder()
    rules = RoutingRules(categories=tuple(CategoryRule(name=doc) for doc in sorted(by_thread)), default_category="none")
    router = Router(rules=rules, embed=embedder.encode)
    with tempfile.TemporaryDirectory() as folder:
        db = Database(f"sqlite:///{folder}/routing.db")
        db.migrate()
        with db.transaction() as session:
            requester = Requester(channel="bench", platform_id="u")
            session.add(requester)
            session.flush()
            for n, (text, doc) in enumerate(past):
                conversation = Conversation(channel="bench", channel_conversation_id=str(n), requester_id=requester.id)
                session.add(conversation)
                session.flush()
                session.add(
                    Ticket(conversation_id=conversation.id, requester_id=requester.id, subject=text, category=doc)
                )
        right = abstained = 0
        timings = []
        with db.transaction() as session:
            router.route(session, text="warm-up", channel="bench")  # embeds the past tickets once
            for text, doc in new:
                started = time.perf_counter()
                predicted = router.route(session, text=text, channel="bench")
                timings.append(time.perf_counter() - started)
                right += predicted.category == doc
                abstained += predicted.category == "none"
        db.dispose()
    result = {
        "past_tickets": len(past),
        "past_tickets_used": min(len(past), args.past_limit),
        "new_tickets": len(new),
        "categories": len(by_thread),
        "accuracy": round(right / len(new), 4),
        "abstained": round(abstained / len(new), 4),
        "accuracy_when_predicted": round(right / max(1, len(new) - abstained), 4),
        "median_route_ms": round(statistics.median(timings) * 1000, 1),
    }
    print(json.dumps(result, indent=2) if args.json else result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
