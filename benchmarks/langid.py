"""Language detection cost (not a test): kb.langs' restricted identifiers vs py3langid restricted per call.

Before 2026-12-06 every Latin or Devanagari query called py3langid's ``set_languages`` under a lock, which copies
the model's column block for the listed languages on each call. Each variant runs in a fresh interpreter over
the same texts (every query file in tests/data plus the Latin- and Devanagari-script FLORES-200 rows of
``$KB_EVAL_DIR``, default ../shared/eval): the model's resident memory, time per ``detect``, and whether both give
the same language and certainty for every text.

    .venv/bin/python benchmarks/langid.py [--flores 4000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUERY_FILES = ("queries.jsonl", "queries_heldout_xling.jsonl", "tracking_queries.jsonl", "no_answer_heldout.jsonl")


def _rss_mb() -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def texts(flores: int) -> list[str]:
    out = [json.loads(line)["text"] for f in QUERY_FILES for line in (ROOT / "tests/data" / f).open()]
    path = Path(os.environ.get("KB_EVAL_DIR", ROOT.parent / "shared/eval")) / "flores200/queries.jsonl"
    if path.exists():
        rows = (json.loads(line) for line in path.open())
        out += [q["text"] for q in rows if q["id"].split(":")[0].endswith(("_Latn", "_Deva"))][:flores]
    return out


def child(variant: str, flores: int) -> dict:
    """One variant in this process: load, then detect every text."""
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from kb import langs

    if variant == "per-call":  # the old way: one identifier, restricted on every call
        import threading

        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        lock, full = threading.Lock(), []

        def classify(text: str, wanted: list[str]) -> tuple[str, float]:
            with lock:
                if not full:
                    full.append(LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True))
                full[0].set_languages(wanted)
                lang, prob = full[0].classify(text)
            return lang, float(prob)

        langs._classify = classify
    items = texts(flores)
    before = _rss_mb()
    langs.detect("where is my parcel now, please tell me")
    langs.detect("मेरा पार्सल अभी कहाँ है, कृपया मुझे बताइए")
    loaded = _rss_mb()
    times, guesses = [], []
    for t in items:
        t0 = time.perf_counter()
        g = langs.detect(t)
        times.append(time.perf_counter() - t0)
        guesses.append([g.lang, g.certain])
    return {"texts": len(items), "model_mb": loaded - before, "after_mb": _rss_mb() - before,
            "mean_ms": float(np.mean(times)) * 1e3, "p50_ms": float(np.median(times)) * 1e3,
            "p99_ms": float(np.percentile(times, 99)) * 1e3, "guesses": guesses}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flores", type=int, default=4000, help="Latin/Devanagari FLORES rows (0: none)")
    ap.add_argument("--runs", type=int, default=2, help="fresh processes per variant, alternating")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.flores)))
        return
    results: dict[str, list[dict]] = {"per-call": [], "kb": []}
    for _ in range(args.runs):
        for variant in results:
            out = subprocess.run([sys.executable, __file__, "--child", variant, "--flores", str(args.flores)],
                                 check=True, capture_output=True, text=True).stdout
            results[variant].append(json.loads(out.strip().splitlines()[-1]))
    same = all(r["guesses"] == results["per-call"][0]["guesses"] for rs in results.values() for r in rs)
    print(f"{results['kb'][0]['texts']} texts; same language and certainty for every text: {same}")
    print("| variant | run | model MB | after all texts MB | detect mean ms | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for variant, rs in results.items():
        for i, r in enumerate(rs):
            print(f"| {variant} | {i} | {r['model_mb']:.1f} | {r['after_mb']:.1f} | {r['mean_ms']:.3f} | "
                  f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} |")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
