"""Reindex under load (not a test): clients search while `kb build` publishes new bundles and the workers reload.

`kb serve` (gunicorn gthread, 2 workers x 4 threads, the real model) runs on a private copy of the articles
and index. 8 clients search for --seconds (and until the last build is served) with the labelled queries in six languages; every 4th request
asks for a canary article whose title and section heading carry the bundle's version ("v3"). Meanwhile 3
real `kb build` runs each bump the canary's version; after each, POST /api/v1/admin/reload is sent and the
workers also follow CURRENT (KB_WATCH_INTERVAL=1). Reported: requests, failed requests (not 200, or no
answer: must be 0), responses mixing versions (a canary whose title and heading come from two bundles:
must be 0), and responses older than one the same client saw before (one worker reloaded before the other).

    .venv/bin/python benchmarks/reindex.py [--seconds 60] [--clients 8] [--builds 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers import free_port  # noqa: E402  (the test suite's port picker: 9300-9399)

CANARY = "reindex-canary"
CANARY_WORD = "zqcanary"


def kb(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kb.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), **(env or {})))


def write_canary(articles: Path, version: int) -> None:
    folder = articles / "delivery"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{CANARY}.en.md").write_text(
        f'---\nid: {CANARY}\ntitle: "Reindex {CANARY_WORD} v{version}"\nlang: en\ntopics: [delivery]\n'
        f'countries: ["*"]\naudience: public\nupdated: 2026-10-01\n---\n\n## Section {CANARY_WORD} v{version}\n\n'
        + f"This {CANARY_WORD} article is version v{version} of the reindex benchmark. " * 4 + "\n",
        encoding="utf-8")


def site(workdir: Path, seed_cache: Path | None) -> tuple[Path, Path]:
    """(articles, index) copies in workdir, built once with the real model (seeded embedding cache)."""
    articles, index = workdir / "articles", workdir / "index"
    shutil.copytree(ROOT / "articles", articles)
    index.mkdir()
    if seed_cache and seed_cache.is_file():
        shutil.copy(seed_cache, index / "embcache.sqlite")
    write_canary(articles, 0)
    r = kb("build", "--articles", str(articles), "--index", str(index), "--quiet")
    if r.returncode:
        raise SystemExit(f"initial build failed:\n{r.stderr[-3000:]}")
    return articles, index


class Server:
    """`kb serve` in its own process group on a 9300-9399 port."""

    def __init__(self, index: Path, db: Path, workers: int, threads: int, **env: str):
        self.port = free_port()
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), KB_RATE_LIMIT="100000000/minute",
                   KB_RELEVANCE_FLOOR="0", **env)  # the canary word ranks below the floor
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kb.cli", "serve", "--index", str(index), "--db", str(db), "--port", str(self.port),
             "--workers", str(workers), "--threads", str(threads)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if self.request("GET", "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise SystemExit("server did not become ready")

    def request(self, method: str, path: str, body: dict | None = None, key: str | None = None,
                conn: http.client.HTTPConnection | None = None) -> tuple[int, dict]:
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if key:
            headers["X-API-Key"] = key
        try:
            conn.request(method, path, json.dumps(body) if body is not None else None, headers)
            r = conn.getresponse()
            raw = r.read()
        finally:
            if own:
                conn.close()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, {}

    def workers(self) -> list[int]:
        """Pids of the gunicorn workers (children of the master)."""
        out = []
        for child in Path("/proc").iterdir():
            if child.name.isdigit():
                try:
                    stat = (child / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    out.append(int(child.name))
        return sorted(out)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def labelled_queries() -> list[str]:
    rows = [json.loads(line) for line in (ROOT / "tests/data/queries.jsonl").read_text().splitlines() if line]
    return [r["text"] for r in rows if r["lang"] in ("en", "ml", "bn", "ta", "am", "hi")]


VERSION = re.compile(rf"{CANARY_WORD} v(\d+)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--builds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--seed-cache", type=Path, default=Path.home() / ".cache" / "kb" / "test-embcache.sqlite",
                    help="an embedding cache to start from (the test suite's, when present)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kb-reindex-"))
    try:
        return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    t0 = time.time()
    articles, index = site(work, args.seed_cache)
    db = work / "kb.sqlite3"
    admin = kb("keys", "create", "--role", "admin", "--db", str(db)).stdout.strip()
    print(f"initial build {time.time() - t0:.0f} s; {os.cpu_count()} cores; {args.workers} workers x "
          f"{args.threads} threads; {args.clients} clients for {args.seconds:.0f} s; {args.builds} builds + reloads")
    server = Server(index, db, args.workers, args.threads, KB_WATCH_INTERVAL="1")
    queries = labelled_queries()
    stats = {"requests": 0, "failed": 0, "mixed": 0, "older": 0, "canary": 0}
    failures: list[str] = []
    versions_seen: set[int] = set()
    lock = threading.Lock()
    done = threading.Event()  # set once --seconds have passed and every build is published and served

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        newest = -1
        i = k * 37
        while not done.is_set():
            i += 1
            canary = i % 4 == 0
            q = CANARY_WORD if canary else queries[i % len(queries)]
            try:
                status, out = server.request("GET", "/api/v1/search?" + urllib.parse.urlencode({"q": q}), conn=conn)
            except (OSError, http.client.HTTPException) as e:
                status, out = 0, {"error": repr(e)}
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            mixed = older = False
            version = None
            if status == 200 and canary:
                hits = [r for r in out.get("results", []) if r["article_id"] == CANARY]
                if hits:
                    tv = VERSION.search(hits[0]["title"])
                    hv = VERSION.search(hits[0]["passage"]["heading"])
                    mixed = not tv or not hv or tv.group(1) != hv.group(1) or len(hits) > 1
                    if tv:
                        version = int(tv.group(1))
                        older = version < newest
                        newest = max(newest, version)
                else:
                    mixed = True  # the canary vanished: a bundle without it never existed
            with lock:
                stats["requests"] += 1
                stats["canary"] += canary
                stats["failed"] += status != 200
                stats["mixed"] += mixed
                stats["older"] += older
                if version is not None:
                    versions_seen.add(version)
                if status != 200 and len(failures) < 5:
                    failures.append(f"{status} {str(out)[:200]}")

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(args.clients)]
    start = time.time()
    for t in threads:
        t.start()
    builds = []
    try:
        for n in range(1, args.builds + 1):
            # spread the builds over the run: each starts at n/(builds+1) of it
            time.sleep(max(0.0, start + args.seconds * n / (args.builds + 1) - time.time()))
            write_canary(articles, n)
            b0 = time.time()
            r = kb("build", "--articles", str(articles), "--index", str(index), "--quiet")
            reload_status = server.request("POST", "/api/v1/admin/reload", {}, key=admin)[0]
            builds.append((n, r.returncode, time.time() - b0, reload_status, r.stdout.strip() or r.stderr[-300:]))
        current = (index / "CURRENT").read_text().strip()
        settle = time.time() + 30  # the watchers poll CURRENT every second
        while time.time() < settle and {server.request("GET", "/readyz")[1].get("bundle") for _ in range(8)} != {current}:
            time.sleep(0.5)
        time.sleep(max(0.0, start + args.seconds - time.time()))
        time.sleep(3)  # a few more requests on the last bundle
        done.set()
        for t in threads:
            t.join()
        final = {server.request("GET", "/readyz")[1].get("bundle") for _ in range(8)}
    finally:
        server.stop()
    wall = time.time() - start
    for n, rc, secs, rs, summary in builds:
        print(f"build {n}: exit {rc}, {secs:.1f} s, reload {rs}: {summary[:160]}")
    print(f"requests {stats['requests']} in {wall:.0f} s ({stats['requests'] / wall:.1f}/s), canary {stats['canary']}, "
          f"failed {stats['failed']}, mixed-version responses {stats['mixed']}, "
          f"older than the client's previous {stats['older']}; canary versions seen {sorted(versions_seen)}; "
          f"bundles served at the end {sorted(final)}; current {(index / 'CURRENT').read_text().strip()}")
    for f in failures:
        print("  failure:", f)
    ok = stats["failed"] == 0 and stats["mixed"] == 0 and all(b[1] == 0 for b in builds)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
