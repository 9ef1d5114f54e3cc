"""Serving figures (not a test): p50/p99 latency and requests/s for /api/v1/search.

Starts `kb serve` (gunicorn, gthread) on 127.0.0.1 with the current index, drives it with a bounded load
generator (count- and time-limited) using the labelled queries in all six languages, for 1 and 8 concurrent
clients, with the query-embedding cache on and off, and reads each worker's peak RSS (VmHWM).

    .venv/bin/python benchmarks/serve.py [--index index] [--requests 600] [--seconds 30] [--workers 2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(index: str, cache: int, workers: int, threads: int, port: int = 0) -> tuple[subprocess.Popen, int]:
    port = port or free_port()
    env = dict(os.environ, KB_QUERY_CACHE=str(cache), KB_RATE_LIMIT="100000000/minute", HF_HUB_OFFLINE="1")
    db = Path(tempfile.mkdtemp(prefix="kb-bench-db-")) / "kb.sqlite3"
    proc = subprocess.Popen([sys.executable, "-m", "kb.cli", "serve", "--index", index, "--db", str(db),
                             "--port", str(port), "--workers", str(workers), "--threads", str(threads)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not become ready")


def worker_rss_mb(proc: subprocess.Popen) -> list[float]:
    out = []
    for child in Path("/proc").iterdir():
        if not child.name.isdigit():
            continue
        try:
            status = (child / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("PPid", "").strip() == str(proc.pid):
            out.append(int(fields.get("VmHWM", "0 kB").split()[0]) / 1024)
    return out


def drive(port: int, queries: list[str], clients: int, total: int, seconds: float) -> dict:
    lat: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(total))
    stop = time.time() + seconds

    def client(offset: int) -> None:
        nonlocal errors
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.time() < stop:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            q = queries[(i + offset) % len(queries)]
            t0 = time.perf_counter()
            try:
                conn.request("GET", "/api/v1/search?" + urllib.parse.urlencode({"q": q, "limit": 10}))
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except OSError:
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            dt = (time.perf_counter() - t0) * 1000
            with lock:
                lat.append(dt)
                errors += 0 if ok else 1

    t0 = time.perf_counter()
    ts = [threading.Thread(target=client, args=(k * 37,)) for k in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    return {"requests": len(lat), "errors": errors, "p50_ms": statistics.median(lat),
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))], "rps": len(lat) / wall,
            "latencies": lat, "seconds": wall}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default=str(ROOT / "index"))
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--port", type=int, default=0, help="listen here (default: any free port)")
    args = ap.parse_args()
    rows = [json.loads(line) for line in (ROOT / "tests/data/queries.jsonl").read_text().splitlines() if line]
    queries = [r["text"] for r in rows if r["lang"] in ("en", "ml", "bn", "ta", "am", "hi")]
    print(f"{len(queries)} labelled queries (en ml bn ta am hi); {os.cpu_count()} cores; "
          f"{args.workers} gunicorn gthread workers x {args.threads} threads; "
          f"query encoder {os.environ.get('KB_ENCODER', 'onnx-int8 (service default)')}")
    print(f"{'cache':6} {'clients':>7} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    for cache in (2048, 0):
        proc, port = start(args.index, cache, args.workers, args.threads, args.port)
        try:
            if cache:  # warm the cache with one pass over the queries
                drive(port, queries, 4, len(queries), args.seconds)
            for clients in (1, 8):
                r = drive(port, queries, clients, args.requests, args.seconds)
                print(f"{'on' if cache else 'off':6} {clients:7} {r['requests']:8} {r['errors']:6} "
                      f"{r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['rps']:8.1f}")
            rss = worker_rss_mb(proc)
            print(f"       peak RSS per worker (VmHWM): {', '.join(f'{x:.0f} MB' for x in rss)}")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
