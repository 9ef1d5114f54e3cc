"""Scale curve of the file backend (not a test): index build time, size on disk, memory and search p50 at
growing passage counts, exact (flat) search below kb.ann.EXACT_LIMIT and FAISS HNSW above it, with HNSW's
recall against exact.

Passages: the bundled KB as `kb build` embeds it, grown with the ``pairs`` synthetic corpus of
benchmarks/postgres.py (the shared sets' documents embedded by the model, then normalised sums of two of them
of one language): vectors for a million passages without a million model calls. So the build time here is the
index's own (FAISS store, lexical FTS5 index, files); embedding the passages is extra, and the line printed
first says how long that would take at the embedding rate measured by benchmarks/build.py (given with
--texts-per-second, each passage being embedded twice: `passage: ` and `query: ` style).

Each size is measured in a fresh process (`--measure DIR`): open the bundle, make a Searcher, run the
labelled queries with their vectors given (no query encoding), report p50/p99 of Searcher.search, the
process's peak RSS (VmHWM: the bundle, the searcher and the server's onnx query encoder) and, for HNSW, recall@10 of the searcher's top 10 articles against exact scoring
of every passage, and the store's top-10 passages against exact inner product.

    .venv/bin/python benchmarks/scale.py [--sizes 1000,10000,100000,1000000] [--per-lang 20] [--store auto]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from postgres import BENCH, PRODUCT_LANGS, grow, kb_prep, pct  # noqa: E402

from kb.embedder import load_encoder  # noqa: E402
from kb.index import Prepared, set_current, write_bundle  # noqa: E402


def labelled_queries(per_lang: int) -> list[str]:
    rows = [json.loads(line) for line in (ROOT / "tests/data/queries.jsonl").read_text().splitlines() if line]
    out: list[str] = []
    for lang in PRODUCT_LANGS:
        out += [r["text"] for r in rows if r["lang"] == lang and r.get("relevant")][:per_lang]
    return out


def sized(prep: Prepared, n: int) -> Prepared:
    """``prep`` cut or grown to n passages (articles without passages dropped with them)."""
    if n > len(prep.passages):
        return grow(prep, n, "pairs", load_encoder("onnx-int8"))
    keep = prep.passages[:n]
    ids = {p.article_id for p in keep}
    return Prepared([a for a in prep.articles if a.id in ids], keep, prep.vectors[:n], prep.headings[:n],
                    prep.questions, prep.question_vectors, 0, 0, None if prep.query_style is None else prep.query_style[:n])


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def vm_hwm_mb() -> float:
    """This process's peak RSS (ru_maxrss would carry the parent's across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(directory: Path, qfile: Path) -> dict:
    """Run in a fresh process: load, search, report (JSON on stdout)."""
    import faiss

    faiss.omp_set_num_threads(1)
    from kb.index import Bundle
    from kb.search import Filters, SearchConfig, Searcher

    encoder = load_encoder("onnx")  # the server's, so the peak RSS is a serving process's; every search is given its vector
    queries = json.loads(qfile.with_suffix(".json").read_text())
    qvecs = np.load(qfile)
    t0 = time.perf_counter()
    bundle = Bundle.open(directory, model_checksum=encoder.checksum)
    searcher = Searcher(bundle, encoder)
    load_s = time.perf_counter() - t0
    for q, v in zip(queries, qvecs, strict=True):  # warm
        searcher.search(q, Filters(), limit=10, qvec=v, snippets=False)
    lat = []
    for _ in range(3):
        for q, v in zip(queries, qvecs, strict=True):
            t = time.perf_counter()
            searcher.search(q, Filters(), limit=10, qvec=v, snippets=False)
            lat.append((time.perf_counter() - t) * 1000)
    out = {"load_s": load_s, "p50": statistics.median(lat), "p99": pct(lat, 0.99),
           "hwm_mb": vm_hwm_mb(), "store": bundle.manifest["store"]}
    if bundle.manifest["store"] != "flat":
        vectors = bundle.store.vectors()
        exact = np.argsort(-(qvecs @ vectors.T), axis=1)[:, :10]
        approx = [bundle.store.search(v, 10)[1] for v in qvecs]
        out["store_recall"] = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approx, strict=True)]))
        ex = Searcher(bundle, encoder, SearchConfig(exact_limit=10**9))
        hits = total = 0
        for q, v in zip(queries, qvecs, strict=True):
            a = [r["group"] for r in ex.search(q, Filters(), limit=10, qvec=v, snippets=False)["results"]]
            b = {r["group"] for r in searcher.search(q, Filters(), limit=10, qvec=v, snippets=False)["results"]}
            hits, total = hits + len(set(a) & b), total + len(a)
        out["searcher_recall"] = hits / max(total, 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,100000,1000000", help="passages per index, comma-separated")
    ap.add_argument("--per-lang", type=int, default=20, help="labelled queries per product language")
    ap.add_argument("--store", default="auto", choices=["auto", "flat", "hnsw"], help="as `kb build --store`")
    ap.add_argument("--texts-per-second", type=float, default=0.0,
                    help="embedding rate from benchmarks/build.py, to print what embedding each size would add")
    ap.add_argument("--dir", default=str(BENCH / "scale"), help="where the indexes are written (replaced)")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--qfile", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:  # one search thread, as a served request; the build uses every core
        print(json.dumps(measure(Path(args.measure), Path(args.qfile))))
        return 0

    encoder = load_encoder("onnx")
    queries = labelled_queries(args.per_lang)
    BENCH.mkdir(parents=True, exist_ok=True)
    qfile = BENCH / "scale-queries.npy"
    np.save(qfile, encoder.encode_queries(queries))
    qfile.with_suffix(".json").write_text(json.dumps(queries, ensure_ascii=False))
    base = kb_prep(load_encoder("st"))
    print(f"{len(queries)} labelled queries; bundled KB {len(base.passages)} passages; {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'passages':>9} {'store':>5} {'build s':>8} {'disk MB':>8} {'load s':>7} {'peak RSS MB':>11} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'recall store':>12} {'recall top10':>12} {'embed s (est.)':>14}")
    for n in (int(x) for x in args.sizes.split(",") if x):
        prep = sized(base, n)
        directory = Path(args.dir) / f"n{n}"
        shutil.rmtree(directory, ignore_errors=True)
        (directory / "bundles" / "b").mkdir(parents=True)
        t0 = time.perf_counter()
        manifest = write_bundle(directory / "bundles" / "b", prep.articles, prep.passages, prep.vectors, prep.headings,
                                prep.query_style, encoder, args.store, questions=prep.questions,
                                question_vectors=prep.question_vectors)
        build_s = time.perf_counter() - t0
        set_current(directory, "b")
        del prep
        got = json.loads(subprocess.run([sys.executable, __file__, "--measure", str(directory), "--qfile", str(qfile)],
                                        check=True, capture_output=True, text=True,
                                        env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.splitlines()[-1])
        embed = f"{2 * n / args.texts_per_second:.0f}" if args.texts_per_second else "-"
        rs, rt = got.get("store_recall"), got.get("searcher_recall")
        print(f"{n:>9} {manifest['store']:>5} {build_s:>8.1f} {du(directory) / 2**20:>8.1f} {got['load_s']:>7.2f} "
              f"{got['hwm_mb']:>11.0f} {got['p50']:>7.1f} {got['p99']:>7.1f} "
              f"{'-' if rs is None else f'{rs:.4f}':>12} {'-' if rt is None else f'{rt:.4f}':>12} {embed:>14}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
