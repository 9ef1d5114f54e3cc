"""Build figures (not a test): full-build passages/s, incremental rebuild after a one-article edit, peak RSS.

Runs on the bundled articles and on a synthetic KB of about 2,000 passages made from them. Each run uses a
fresh index directory and embedding cache, so the full build really embeds everything.

    .venv/bin/python benchmarks/build.py [--synthetic-passages 2000] [--skip-bundled]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from kb.articles import load_articles  # noqa: E402
from kb.embedder import load_encoder  # noqa: E402
from kb.index import build  # noqa: E402
from kb.passages import split_article  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_tree(dest: Path, passages: int) -> Path:
    """Articles assembled from shuffled real sections, each with a unique id and marker words."""
    rng = random.Random(7)
    sections = []
    for a in load_articles(ROOT / "articles"):
        for part in a.body.split("\n## ")[1:]:
            sections.append(re.sub(r"\]\(/articles/[^)]*\)", "]", part))  # no links into the real KB
    per_article = 5
    folder = dest / "articles" / "customs"
    folder.mkdir(parents=True)
    for i in range(passages // per_article):
        body = "\n\n".join(f"## {s.strip()}\n\nReference SYN{i}x{j}." for j, s in
                           enumerate(rng.sample(sections, per_article)))
        (folder / f"synthetic-{i:04d}.en.md").write_text(
            f"---\nid: synthetic-{i:04d}\ntitle: \"Synthetic article {i}\"\nlang: en\ntopics: [customs]\n"
            f"countries: [\"*\"]\naudience: public\nupdated: 2026-11-01\n---\n{body}\n")
    return dest / "articles"


def run(label: str, articles: Path, encoder) -> None:
    index = Path(tempfile.mkdtemp(prefix="kb-bench-index-"))
    n_passages = sum(len(split_article(a)) for a in load_articles(articles))
    t0 = time.perf_counter()
    full = build(articles, index, encoder)
    full_s = time.perf_counter() - t0
    victim = sorted(articles.rglob("*.en.md"))[len(list(articles.rglob("*.en.md"))) // 2]
    victim.write_text(victim.read_text() + "\nOne more sentence added by the benchmark edit.\n")
    t0 = time.perf_counter()
    inc = build(articles, index, encoder)
    warm_s = time.perf_counter() - t0
    victim.write_text(victim.read_text() + "\nAnd a second edit for the cold run.\n")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kb.cli", "build", "--quiet", "--articles", str(articles),
                    "--index", str(index)], check=True, capture_output=True)
    cold_s = time.perf_counter() - t0
    print(f"{label}: {full.articles} articles, {n_passages} passages")
    print(f"  full build            {full_s:7.1f} s   {n_passages / full_s:6.1f} passages/s  (computed {full.computed})")
    print(f"  one-article edit      {warm_s:7.2f} s   (in-process, model loaded; computed {inc.computed}, "
          f"reused {inc.reused})")
    print(f"  one-article edit      {cold_s:7.2f} s   (`kb build` CLI, includes interpreter start + model load)")
    print(f"  peak RSS so far       {peak_rss_mb():7.0f} MB")
    shutil.rmtree(index, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--synthetic-passages", type=int, default=2000)
    ap.add_argument("--skip-bundled", action="store_true")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}   python {sys.version.split()[0]}")
    t0 = time.perf_counter()
    encoder = load_encoder("st")
    print(f"model load: {time.perf_counter() - t0:.1f} s")
    work = Path(tempfile.mkdtemp(prefix="kb-bench-"))
    try:
        if not args.skip_bundled:
            shutil.copytree(ROOT / "articles", work / "bundled" / "articles")
            run("bundled KB", work / "bundled" / "articles", encoder)
        run(f"synthetic KB (~{args.synthetic_passages} passages)",
            synthetic_tree(work / "synthetic", args.synthetic_passages), encoder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
