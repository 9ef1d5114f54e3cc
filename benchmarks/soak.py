"""Soak (not a test): bounded mixed load on `kb serve` for --minutes, RSS of each worker every 10 s.

The real model and index (built as benchmarks/reindex.py does), 2 gunicorn gthread workers x 4 threads.
--clients threads share a budget of --rate requests/s: searches (the labelled queries in six languages, and
as many never-seen variants, so the query cache and analytics keep filling), feedback and clicks citing those
searches, article pages and agent assists. Every 10 s each worker's VmRSS is read from /proc. Growth is the
mean of the last 3 samples over the sample at the end of --warmup; it must stay under 5% for every worker,
with 0 failed requests and the same worker pids throughout (no worker restarted).

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--rate 8] [--clients 4] [--warmup 60]
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from reindex import Server, kb, labelled_queries, site

SAMPLE_S = 10
LIMIT = 0.05


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate", type=float, default=8, help="requests per second, all clients together")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--warmup", type=float, default=60, help="seconds before the baseline sample")
    ap.add_argument("--seed-cache", type=Path, default=Path.home() / ".cache" / "kb" / "test-embcache.sqlite")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kb-soak-"))
    try:
        return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    _articles, index = site(work, args.seed_cache)
    db = work / "kb.sqlite3"
    agent = kb("keys", "create", "--role", "agent", "--db", str(db)).stdout.strip()
    server = Server(index, db, 2, 4)
    queries = labelled_queries()
    counts = {"requests": 0, "failed": 0}
    failures: list[str] = []
    lock = threading.Lock()
    done = threading.Event()
    tick = iter(range(10**9))
    t_start = time.time()
    interval = 1.0 / args.rate

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        seen = "shipment-held-at-customs"
        while not done.is_set():
            with lock:
                n = next(tick)
            time.sleep(max(0.0, t_start + n * interval - time.time()))  # the shared rate budget
            if done.is_set():
                break
            q = queries[n % len(queries)] + ("" if n % 2 else f" {n}")
            kind = n % 10
            try:
                if kind < 6:
                    status, out = server.request("GET", "/api/v1/search?" + urllib.parse.urlencode({"q": q}), conn=conn)
                    if status == 200 and out.get("results"):
                        seen = out["results"][0]["article_id"]
                    if status == 200 and out.get("results") and kind == 0:
                        r = out["results"][0]
                        status, out = server.request("POST", "/api/v1/feedback", {
                            "search_id": out["search_id"], "article_id": r["article_id"], "helpful": n % 3 > 0,
                            "comment": f"soak {n}"}, conn=conn)
                        if status == 201:
                            status = 200
                    elif status == 200 and out.get("results") and kind == 1:
                        status, out = server.request("POST", "/api/v1/events/click", {
                            "search_id": out["search_id"], "article_id": out["results"][0]["article_id"], "rank": 1},
                            conn=conn)
                        if status == 201:
                            status = 200
                elif kind < 8:  # the article a search found: the page, then the API
                    status, out = server.request("GET", f"/articles/{seen}" if kind == 6 else f"/api/v1/articles/{seen}",
                                                 conn=conn)
                else:
                    status, out = server.request("POST", "/api/v1/assist", {"text": q}, key=agent, conn=conn)
            except (OSError, http.client.HTTPException) as e:
                status, out = 0, {"error": repr(e)}
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            with lock:
                counts["requests"] += 1
                if status != 200:
                    counts["failed"] += 1
                    if len(failures) < 5:
                        failures.append(f"{status} {str(out)[:200]}")

    pids = server.workers()
    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(args.clients)]
    for t in threads:
        t.start()
    samples: list[tuple[float, list[float]]] = []
    restarted = False
    print(f"{len(pids)} workers {pids}; {args.clients} clients, {args.rate:g} req/s budget, {args.minutes:g} min, "
          f"RSS every {SAMPLE_S} s")
    print(f"{'t s':>6} {'requests':>8} {'failed':>6}  RSS MB per worker")
    try:
        end = t_start + args.minutes * 60
        while time.time() < end:
            time.sleep(max(0.0, min(SAMPLE_S - (time.time() - t_start) % SAMPLE_S, end - time.time())))
            now = server.workers()
            if now != pids:
                restarted = True
            rss = [rss_mb(p) for p in pids if p in now]
            samples.append((time.time() - t_start, rss))
            print(f"{samples[-1][0]:6.0f} {counts['requests']:8} {counts['failed']:6}  "
                  + "  ".join(f"{x:7.1f}" for x in rss), flush=True)
    finally:
        done.set()
        for t in threads:
            t.join(timeout=60)
        server.stop()
    base = next((s for s in samples if s[0] >= args.warmup), samples[0])
    tail = samples[-3:]
    ok = counts["failed"] == 0 and not restarted
    print(f"requests {counts['requests']} ({counts['requests'] / (args.minutes * 60):.1f}/s), failed {counts['failed']}, "
          f"workers restarted: {'yes' if restarted else 'no'}")
    for w, pid in enumerate(pids):
        if w >= len(base[1]) or any(w >= len(s[1]) for s in tail):
            print(f"worker {pid}: gone")
            ok = False
            continue
        final = sum(s[1][w] for s in tail) / len(tail)
        growth = (final - base[1][w]) / base[1][w]
        ok &= growth < LIMIT
        half = next(s for s in samples if s[0] >= samples[-1][0] / 2)
        print(f"worker {pid}: {base[1][w]:.1f} MB at {base[0]:.0f} s -> {final:.1f} MB (mean of the last "
              f"{len(tail)} samples): growth {growth * 100:+.2f}% (limit {LIMIT * 100:.0f}%); second half only "
              f"({half[0]:.0f} s on): {(final - half[1][w]) / half[1][w] * 100:+.2f}%")
    for f in failures:
        print("  failure:", f)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
