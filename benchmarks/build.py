"""Build figures (not a test): full-build texts/s per kind of text, incremental rebuild after a one-article edit,
peak RSS.

Runs on the bundled articles (``--every N``: every Nth article of them, for a shorter run) and on a synthetic KB
of about 2,000 passages made from them. Each build uses a fresh index directory and embedding cache, so the full
build really embeds everything: each passage twice (``passage:`` and ``query:``), its heading, its snippet
sentences (``passage:``), every question.
``--encoders st,onnx`` builds the same articles with each encoder back to back (the load average is printed
before and after each), so their texts/s compare as a ratio on a shared machine; the encoders get all cores
(as ``kb build`` gives them).

    nice .venv/bin/python benchmarks/build.py [--encoders st,onnx] [--every 1] [--synthetic-passages 2000]
                                              [--skip-bundled] [--skip-synthetic] [--skip-edit]
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


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def run(label: str, articles: Path, encoder, edit: bool = True) -> None:
    index = Path(tempfile.mkdtemp(prefix="kb-bench-index-"))
    n_passages = sum(len(split_article(a)) for a in load_articles(articles))
    before = load()
    t0 = time.perf_counter()
    full = build(articles, index, encoder)
    full_s = time.perf_counter() - t0
    print(f"{label}, encoder {encoder.kind}: {full.articles} articles, {n_passages} passages ({before}; after: {load()})")
    print(f"  full build            {full_s:7.1f} s   {n_passages / full_s:6.1f} passages/s  (computed {full.computed})")
    for kind, (n, sec) in full.timings.items():
        print(f"    {kind:20} {int(n):6d} texts {sec:7.1f} s {n / sec if sec else 0:7.1f} texts/s")
    texts, sec = sum(n for n, _ in full.timings.values()), sum(s for _, s in full.timings.values())
    print(f"    {'all embedded':20} {int(texts):6d} texts {sec:7.1f} s {texts / sec if sec else 0:7.1f} texts/s "
          f"(whole build {texts / full_s:.1f} texts/s)")
    if not edit:
        print(f"  peak RSS so far       {peak_rss_mb():7.0f} MB")
        shutil.rmtree(index, ignore_errors=True)
        return
    victim = sorted(articles.rglob("*.en.md"))[len(list(articles.rglob("*.en.md"))) // 2]
    victim.write_text(victim.read_text() + "\nOne more sentence added by the benchmark edit.\n")
    t0 = time.perf_counter()
    inc = build(articles, index, encoder)
    warm_s = time.perf_counter() - t0
    victim.write_text(victim.read_text() + "\nAnd a second edit for the cold run.\n")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kb.cli", "build", "--quiet", "--articles", str(articles),
                    "--index", str(index), "--encoder", encoder.kind], check=True, capture_output=True)
    cold_s = time.perf_counter() - t0
    print(f"  one-article edit      {warm_s:7.2f} s   (in-process, model loaded; computed {inc.computed}, "
          f"reused {inc.reused})")
    print(f"  one-article edit      {cold_s:7.2f} s   (`kb build` CLI, includes interpreter start + model load)")
    print(f"  peak RSS so far       {peak_rss_mb():7.0f} MB")
    shutil.rmtree(index, ignore_errors=True)


def bundled_subset(dest: Path, every: int) -> Path:
    """The bundled articles, or every Nth translation group of them (all its languages) with links between
    articles removed (they would point at ones left out), plus the tree's other files (out-of-scope list)."""
    src = ROOT / "articles"
    if every == 1:
        shutil.copytree(src, dest)
        return dest
    shutil.copytree(src, dest, ignore=lambda d, names: [n for n in names if n.endswith(".md") and Path(d) != src])
    files = [f for f in sorted(src.rglob("*.md")) if f.parent != src]

    def group(f: Path) -> str:
        head = f.read_text(encoding="utf-8").split("\n---", 1)[0]
        m = re.search(r"^translation_of:\s*(\S+)", head, re.M) or re.search(r"^id:\s*(\S+)", head, re.M)
        return m.group(1) if m else f.name

    groups = sorted({group(f) for f in files})
    keep = set(groups[::every])
    for f in files:
        if group(f) in keep:
            text = re.sub(r"\]\(/articles/[^)]*\)", "]", f.read_text(encoding="utf-8"))
            (dest / f.relative_to(src)).write_text(text, encoding="utf-8")
    return dest


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoders", default="onnx", help="comma-separated, built back to back: st,onnx")
    ap.add_argument("--every", type=int, default=1, help="bundled KB: every Nth article only")
    ap.add_argument("--synthetic-passages", type=int, default=2000)
    ap.add_argument("--skip-bundled", action="store_true")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--skip-edit", action="store_true", help="full builds only (no one-article edits)")
    args = ap.parse_args()
    threads = len(os.sched_getaffinity(0))
    print(f"cores: {os.cpu_count()} (threads {threads})   python {sys.version.split()[0]}   {load()}")
    encoders = {}
    for kind in args.encoders.split(","):
        t0 = time.perf_counter()
        encoders[kind] = load_encoder(kind, threads=threads)
        print(f"model load {kind}: {time.perf_counter() - t0:.1f} s")
    work = Path(tempfile.mkdtemp(prefix="kb-bench-"))
    try:
        if not args.skip_bundled:
            articles = bundled_subset(work / "bundled" / "articles", args.every)
            for encoder in encoders.values():
                run("bundled KB" + (f" (every {args.every}th translation group)" if args.every > 1 else ""),
                    articles, encoder, edit=not args.skip_edit)
        if not args.skip_synthetic:
            tree = synthetic_tree(work / "synthetic", args.synthetic_passages)
            for encoder in encoders.values():
                run(f"synthetic KB (~{args.synthetic_passages} passages)", tree, encoder, edit=not args.skip_edit)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
