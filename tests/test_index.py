"""Index bundles: round trip, verification, atomic publish under a crash, incremental rebuilds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kb.embedder import HashEncoder
from kb.index import Bundle, BundleError, build, current_name

ARTICLE = """---
id: {id}
title: "{title}"
lang: en
topics: [customs]
countries: ["*"]
audience: public
updated: 2026-11-01
---
## What it is

{body}

## Steps

{steps}
"""


def make_tree(root: Path, n: int, tag: str = "") -> Path:
    d = root / "articles" / "customs"
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        body = f"Article {i} {tag} explains topic number {i}. " + " ".join(f"w{i}x{j}" for j in range(70))
        steps = f"Step list for {i}. " + " ".join(f"s{i}y{j}" for j in range(70))
        (d / f"art-{i:03d}.en.md").write_text(ARTICLE.format(id=f"art-{i:03d}", title=f"Topic {i} {tag}",
                                                            body=body, steps=steps))
    return root / "articles"


class CountingEncoder(HashEncoder):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def _encode(self, texts, is_query):
        if not is_query:
            self.calls += len(texts)
        return super()._encode(texts, is_query)


def test_round_trip(tmp_path):
    arts = make_tree(tmp_path, 5)
    enc = HashEncoder()
    report = build(arts, tmp_path / "index", enc)
    # 10 passage vectors + 10 title/heading vectors + 10 query-style passage vectors + 10 snippet sentences
    assert (report.articles, report.passages, report.computed, report.reused) == (5, 10, 40, 0)
    b = Bundle.open(tmp_path / "index", model_checksum=enc.checksum)
    assert b.manifest["counts"] == {"articles": 5, "passages": 10, "questions": 0, "languages": {"en": 5}}
    assert b.manifest["model"]["checksum"] == enc.checksum and b.manifest["dim"] == enc.dim
    assert set(b.manifest["articles"]) == {f"art-{i:03d}.en" for i in range(5)}
    assert b.store.count == 10 and len(b.passages) == 10 and b.query_style.shape == (10, enc.dim)
    # each passage's short opening sentence joins the next one: one snippet sentence per passage
    assert [len(p["sentences"]) for p in b.passages] == [1] * 10 and b.sentence_vectors.shape == (10, enc.dim)
    np.testing.assert_allclose(b.sentence_vectors[3].astype(np.float32),
                               enc.encode_passages([b.passages[3]["sentences"][0]])[0], atol=2e-3)
    target = next(p for p in b.passages if p["article_id"] == "art-003")
    _s, ids = b.store.search(enc.encode_query(target["text"]), 1)
    assert b.passages[int(ids[0])]["id"] == target["id"]


def test_questions_are_stored_embedded_as_queries_and_searched(tmp_path):
    arts = make_tree(tmp_path, 4)
    asked = {0: "harbour lantern", 1: "copper kettle", 2: "zebra crossing quokka", 3: "violin bow"}
    for i, text in asked.items():
        page = arts / "customs" / f"art-{i:03d}.en.md"
        extra = f'questions:\n  ta: ["{text}"]\n' + ('  en: ["velvet"]\n' if i == 2 else "")
        page.write_text(page.read_text().replace("updated: 2026-11-01\n", "updated: 2026-11-01\n" + extra))
    enc = HashEncoder()
    report = build(arts, tmp_path / "index", enc)
    b = Bundle.open(tmp_path / "index", model_checksum=enc.checksum)
    # 8 passages, 8 headings, 8 passages as queries, 5 questions, 8 snippet sentences
    assert b.manifest["counts"]["questions"] == 5 and report.computed == 24 + 5 + 8
    assert [(q["group"], q["lang"], q["text"]) for q in b.questions if q["group"] == "art-002"] == [
        ("art-002", "en", "velvet"), ("art-002", "ta", "zebra crossing quokka")]
    row = next(i for i, q in enumerate(b.questions) if q["text"] == "zebra crossing quokka")
    np.testing.assert_allclose(b.question_vectors[row], enc.encode_query("zebra crossing quokka"), atol=1e-6)
    from kb.search import Filters, Searcher

    s = Searcher(b, enc)
    res = s.search("zebra crossing quokka", Filters(), mode="dense")
    assert res["results"][0]["group"] == "art-002"
    assert s.search("zebra crossing quokka", Filters(), mode="lexical")["results"][0]["group"] == "art-002"
    s.config.question_weight = 0.0  # the question leg is what found it: the text shares nothing with it
    assert s.search("zebra crossing quokka", Filters(), mode="dense")["results"][0]["group"] != "art-002"
    (tmp_path / "index" / "bundles" / current_name(tmp_path / "index") / "questions.npy").write_bytes(b"junk")
    with pytest.raises(BundleError, match="questions.npy"):
        Bundle.open(tmp_path / "index")


def test_reader_refuses_corrupt_or_foreign_bundles(tmp_path):
    arts = make_tree(tmp_path, 3)
    build(arts, tmp_path / "index", HashEncoder())
    with pytest.raises(BundleError, match="model checksum"):
        Bundle.open(tmp_path / "index", model_checksum="another-model")
    path = tmp_path / "index" / "bundles" / current_name(tmp_path / "index")
    with open(path / "passages.jsonl", "a") as f:
        f.write("{}\n")
    with pytest.raises(BundleError, match="checksum mismatch"):
        Bundle.open(tmp_path / "index")
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="unreadable manifest"):
        Bundle.open(tmp_path / "index")
    with pytest.raises(BundleError, match="run `kb build` first"):
        Bundle.open(tmp_path / "nowhere")


def test_incremental_rebuild_embeds_only_changed_passages(tmp_path):
    arts = make_tree(tmp_path, 20)
    enc = CountingEncoder()
    first = build(arts, tmp_path / "index", enc)
    # passages + headings + passages embedded as queries + snippet sentences (encoded as passages: counted)
    assert enc.calls == 80 and first.computed == 160
    page = arts / "customs" / "art-007.en.md"
    page.write_text(page.read_text().replace("Step list for 7.", "Step list for 7, now revised."))
    enc.calls = 0
    second = build(arts, tmp_path / "index", enc)
    assert (second.computed, second.reused, enc.calls) == (3, 157, 2)  # its passage (both prefixes), its sentence
    b = Bundle.open(tmp_path / "index")
    assert any("now revised" in p["text"] for p in b.passages)
    assert b.manifest["articles"]["art-007.en"] != json.loads(
        (tmp_path / "index" / "bundles" / first.bundle / "manifest.json").read_text())["articles"]["art-007.en"]


def _with_questions(arts: Path, n: int, examples: list[str]) -> None:
    """Give art-000..art-<n-1> one editor-written question each, and write the out-of-scope examples."""
    for i in range(n):
        page = arts / "customs" / f"art-{i:03d}.en.md"
        page.write_text(page.read_text().replace(
            "updated: 2026-11-01\n", f'updated: 2026-11-01\nquestions:\n  en: ["how does topic {i} work"]\n'))
    (arts / "out-of-scope.yaml").write_text("en:\n" + "".join(f'  - "{t}"\n' for t in examples))


def test_build_stores_the_domain_probe_and_refits_it_when_questions_or_examples_change(tmp_path, caplog):
    """Each build fits the confidence domain probe (kb.domain) over its questions and out-of-scope examples
    and stores it in the manifest; the searcher takes it from there. An edited question or example list gives
    a new fit; too few examples store "no probe"; a bundle without the entry is fitted when it loads."""
    import logging

    from kb.domain import fit_domain_probe, split_questions
    from kb.search import Filters, Searcher

    arts = make_tree(tmp_path, 12)
    _with_questions(arts, 12, [f"weather forecast for city {i}" for i in range(12)])
    enc, index = HashEncoder(), tmp_path / "index"

    def load() -> tuple[Bundle, Searcher, tuple]:
        b = Bundle.open(index)
        q, oos = split_questions(b.questions, b.question_vectors, enc.dim)
        return b, Searcher(b, enc), fit_domain_probe(q, oos) if len(oos) else None

    build(arts, index, enc)
    b, s, fit = load()
    entry = b.manifest["domain_probe"]
    assert (entry["questions"], entry["examples"], len(entry["weights"])) == (12, 12, enc.dim)
    assert s.domain[0].dtype == np.float32
    np.testing.assert_array_equal(s.domain[0], fit[0])  # JSON keeps float32 weights and the bias exactly
    assert s.domain[1] == fit[1]
    first = s.domain

    (arts / "out-of-scope.yaml").write_text((arts / "out-of-scope.yaml").read_text() + '  - "lottery results"\n')
    build(arts, index, enc)
    b, s, fit = load()
    assert b.manifest["domain_probe"]["examples"] == 13 and not np.array_equal(s.domain[0], first[0])
    np.testing.assert_array_equal(s.domain[0], fit[0])
    second = s.domain

    page = arts / "customs" / "art-003.en.md"
    page.write_text(page.read_text().replace("how does topic 3 work", "what is the copper kettle rule"))
    build(arts, index, enc)
    b, s, fit = load()
    assert not np.array_equal(s.domain[0], second[0])
    np.testing.assert_array_equal(s.domain[0], fit[0])
    assert "domain" in s.search("copper kettle rule", Filters(), mode="dense", features=True)["results"][0]["features"]

    # a bundle built before the probe was stored: fitted in process when it loads, same weights
    mpath = b.path / "manifest.json"
    manifest = json.loads(mpath.read_text())
    mpath.write_text(json.dumps({k: v for k, v in manifest.items() if k != "domain_probe"}))
    with caplog.at_level(logging.WARNING, logger="kb.search"):
        old = Searcher(Bundle.open(index), enc)
    assert "no stored domain probe" in caplog.text
    np.testing.assert_array_equal(old.domain[0], fit[0])
    # an entry that does not match the bundle is refused, not used
    for bad in ({**manifest["domain_probe"], "examples": 5}, {**manifest["domain_probe"], "weights": [0.5] * 3},
                {**manifest["domain_probe"], "bias": "x"}):
        mpath.write_text(json.dumps({**manifest, "domain_probe": bad}))
        with pytest.raises(BundleError, match="domain probe"):
            Searcher(Bundle.open(index), enc)

    (arts / "out-of-scope.yaml").write_text('en:\n  - "weather today"\n')  # under fit_domain_probe's 10
    build(arts, index, enc)
    b, s, _fit = load()
    assert b.manifest["domain_probe"] == {"questions": 12, "examples": 1, "weights": None, "bias": None}
    assert s.domain is None


def test_crash_mid_build_leaves_previous_bundle_current(tmp_path):
    """SIGKILL a real `kb build` while it embeds: the old bundle stays current and loads."""
    arts = make_tree(tmp_path, 4, tag="old")
    index = tmp_path / "index"
    build(arts, index, HashEncoder())
    before = current_name(index)
    make_tree(tmp_path, 400, tag="new")
    script = (
        "import sys, time\n"
        "from kb.embedder import HashEncoder\n"
        "from kb.index import build\n"
        "class Slow(HashEncoder):\n"
        "    def _encode(self, t, q):\n"
        "        print('embedding', flush=True); time.sleep(0.2); return super()._encode(t, q)\n"
        f"build({str(arts)!r}, {str(index)!r}, Slow())\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "embedding"
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert current_name(index) == before
    b = Bundle.open(index)
    assert b.manifest["counts"]["articles"] == 4
    assert all("old" in a["title"] for a in b.articles)


def test_hnsw_store_selectable(tmp_path):
    arts = make_tree(tmp_path, 6)
    enc = HashEncoder()
    build(arts, tmp_path / "index", enc, store_kind="hnsw")
    b = Bundle.open(tmp_path / "index")
    assert b.manifest["store"] == "hnsw"
    scores, ids = b.store.search(enc.encode_query("Topic 2 explains topic number 2"), 3)
    assert len(ids) == 3 and np.all(np.diff(scores) <= 1e-6)


def test_auto_store_is_exact_up_to_the_limit_and_hnsw_above(tmp_path, monkeypatch):
    import kb.ann

    arts = make_tree(tmp_path, 6)
    enc = HashEncoder()
    build(arts, tmp_path / "small", enc)  # the default: auto
    small = Bundle.open(tmp_path / "small")
    assert small.manifest["store"] == "flat"
    monkeypatch.setattr(kb.ann, "EXACT_LIMIT", small.manifest["counts"]["passages"] - 1)
    build(arts, tmp_path / "large", enc)
    large = Bundle.open(tmp_path / "large")
    assert large.manifest["store"] == "hnsw" and type(large.store).__name__ == "HNSWStore"
    q = enc.encode_query("Topic 2 explains topic number 2")
    assert list(large.store.search(q, 3)[1]) == list(small.store.search(q, 3)[1])


def test_hnsw_candidates_widen_the_beam_to_k():
    """Asking the HNSW store for k candidates searches with efSearch >= k: the exact top 10 are then nearly all
    among them, where a beam of efSearch alone misses more (at 100k FAISS kept efSearch 128 for k 800)."""
    from kb.ann import HNSWStore

    rng = np.random.default_rng(7)
    x = rng.standard_normal((4000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:60] + 0.3 * rng.standard_normal((60, 32)).astype(np.float32)
    store = HNSWStore(32, m=4, ef_search=10)
    store.add(x)
    exact = np.argsort(-(q @ x.T), axis=1)[:, :10]

    def recall(k: int) -> float:
        return float(np.mean([len(set(exact[i]) & set(store.search(q[i], k)[1][:10].tolist())) / 10
                              for i in range(len(q))]))

    narrow, wide = recall(10), recall(400)
    assert wide >= 0.98, wide
    assert wide > narrow + 0.05, (narrow, wide)
