"""The Postgres backend against a real Postgres primary and streaming standby (the pg_cluster fixture).

Each test gets its own database, so versions, pointers and analytics never leak between tests. Plumbing
tests use the hash encoder; the ranking test uses the real model and compares with the FAISS backend.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import write_article

from kb.embedder import HashEncoder
from kb.index import BundleError
from kb.pg import Cluster, Unavailable
from kb.pglocal import free_port

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parent.parent


def _database(cluster, name: str) -> tuple[str, str]:
    """A fresh database on the primary, already replayed on the standby: (primary DSN, standby DSN)."""
    import psycopg

    with psycopg.connect(cluster.primary.dsn, autocommit=True) as c:
        c.execute("SET synchronous_commit = remote_apply")
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {name}")
    return cluster.primary.dsn_for(name), cluster.standby.dsn_for(name)


@pytest.fixture()
def pg_db(pg_cluster, request) -> tuple[str, str]:
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    return _database(pg_cluster, name)


def _articles(root: Path, n: int = 4, tag: str = "") -> Path:
    topics = ["customs", "claims", "packaging", "delivery"]
    for i in range(n):
        write_article(root, f"pg-article-{i}", f"Rules {i}{tag}",
                      f"Marker{i} word. Shipping perfume and lithium batteries through customs, case {i}{tag}.",
                      topic=topics[i % 4])
    return root


def _query(dsn: str, sql: str, args: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as c:
        return c.execute(sql, args or None).fetchall()


# ---------------------------------------------------------------------------- index: versions and pointer


def test_build_pointer_incremental_and_prune(pg_db, tmp_path):
    from kb.pgindex import PgIndex
    from kb.pgindex import build as pg_build

    primary, standby = pg_db
    enc = HashEncoder()
    arts = _articles(tmp_path / "articles")
    index = PgIndex(Cluster(primary, [standby]), "kb", keep=3)
    with pytest.raises(BundleError, match="kb build --backend postgres"):
        index.current()

    first = pg_build(arts, index, enc)
    assert first.computed > 0 and first.reused == 0
    assert index.current() == first.bundle  # read from the standby: the build waited for it to apply
    b1 = index.open(model_checksum=enc.checksum)
    assert (b1.name, len(b1.passages), b1.store.count) == (first.bundle, first.passages, first.passages)
    assert np.allclose(np.linalg.norm(b1.store.vectors(), axis=1), 1.0, atol=1e-5)
    with pytest.raises(BundleError, match="model checksum"):
        index.open(model_checksum="another-model")

    again = pg_build(arts, index, enc)  # nothing changed: every embedding comes from the database's cache
    assert again.computed == 0 and again.reused == first.computed + first.reused

    write_article(arts, "pg-article-1", "Rules 1", "Marker1 word. A rewritten paragraph about customs forms.",
                  topic="claims")
    edited = pg_build(arts, index, enc)
    # the one changed passage (both prefixes; its heading text unchanged) and its snippet sentence only
    assert 0 < edited.computed <= 3
    assert index.current() == edited.bundle != again.bundle

    # a reader pinned to the first version still searches it while newer ones are current
    assert b1.lexical.search("marker1")[0][0] == next(i for i, p in enumerate(b1.passages)
                                                      if p["article_id"] == "pg-article-1")
    last = pg_build(arts, index, enc)
    versions = [v["version"] for v in index.versions()]
    assert versions == [last.bundle, edited.bundle, again.bundle]  # keep=3: the first one is gone
    assert _query(primary, "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s",
                  (first.bundle,)) == [(0,)]
    with pytest.raises(Unavailable):
        index.open(first.bundle)


def test_a_version_carries_its_domain_probe(pg_db, tmp_path):
    """`kb build --backend postgres` fits the confidence domain probe and stores it with the version (its
    manifest row, in the build's transaction): the searcher reads it from the standby, the same weights as
    the file backend's build of the same articles; a changed example list gives the next version a new fit
    and leaves the previous version's alone."""
    from kb.domain import fit_domain_probe, split_questions
    from kb.index import Bundle
    from kb.index import build as file_build
    from kb.pgindex import PgIndex
    from kb.pgindex import build as pg_build
    from kb.search import Searcher

    primary, standby = pg_db
    enc = HashEncoder()
    arts = _articles(tmp_path / "articles", n=12)
    for page in sorted(arts.rglob("pg-article-*.en.md")):
        aid = page.name.split(".")[0]
        page.write_text(page.read_text().replace(
            "audience: public\n", f'audience: public\nquestions:\n  en: ["what are the rules of {aid}"]\n'))
    oos = arts / "out-of-scope.yaml"
    oos.write_text("en:\n" + "".join(f'  - "stock price of company {i}"\n' for i in range(12)))
    index = PgIndex(Cluster(primary, [standby]), "kb")
    first = pg_build(arts, index, enc)
    b = index.open(model_checksum=enc.checksum)
    entry = b.manifest["domain_probe"]
    assert (entry["questions"], entry["examples"]) == (12, 12) and len(entry["weights"]) == enc.dim
    stored = _query(standby, "SELECT manifest->'domain_probe' FROM kb_versions WHERE version = %s", (first.bundle,))
    assert stored[0][0] == entry
    s = Searcher(b, enc)
    w, bias = fit_domain_probe(*split_questions(b.questions, b.question_vectors, enc.dim))
    np.testing.assert_array_equal(s.domain[0], w)  # float32 weights and the bias survive jsonb exactly
    assert s.domain[1] == bias
    file_build(arts, tmp_path / "index", enc)
    files = Searcher(Bundle.open(tmp_path / "index"), enc)
    np.testing.assert_array_equal(files.domain[0], s.domain[0])
    assert files.domain[1] == s.domain[1]

    oos.write_text(oos.read_text() + '  - "football scores tonight"\n')
    second = pg_build(arts, index, enc)
    s2 = Searcher(index.open(model_checksum=enc.checksum), enc)
    assert s2.bundle.manifest["domain_probe"]["examples"] == 13 and not np.array_equal(s2.domain[0], w)
    np.testing.assert_array_equal(
        s2.domain[0], fit_domain_probe(*split_questions(s2.bundle.questions, s2.bundle.question_vectors,
                                                        enc.dim))[0])
    assert second.bundle != first.bundle
    np.testing.assert_array_equal(Searcher(index.open(first.bundle), enc).domain[0], w)


def test_failed_build_changes_nothing(pg_db, tmp_path, monkeypatch):
    import kb.pgindex as pgindex

    primary, standby = pg_db
    enc = HashEncoder()
    arts = _articles(tmp_path / "articles")
    index = pgindex.PgIndex(Cluster(primary, [standby]))
    good = pgindex.build(arts, index, enc)
    schemas = _query(primary, "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'kbv_%'")
    calls = {"n": 0}
    real = pgindex.vector_bytes

    def failing(v):
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("disk full (simulated) half way through the passages")
        return real(v)

    monkeypatch.setattr(pgindex, "vector_bytes", failing)
    _articles(arts, n=6, tag=" new")
    with pytest.raises(RuntimeError, match="simulated"):
        pgindex.build(arts, index, enc)
    assert index.current() == good.bundle
    assert _query(primary, "SELECT schema_name FROM information_schema.schemata "
                           "WHERE schema_name LIKE 'kbv_%'") == schemas  # no half-built version left
    assert len(index.open().passages) == good.passages


# ---------------------------------------------------------------------------- connections


def test_reads_skip_a_failed_replica_then_use_the_primary(pg_db):
    primary, standby = pg_db
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"

    def in_recovery(conn) -> bool:
        return conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]

    cluster = Cluster(primary, [dead, standby], connect_timeout=2, retry_after_s=60)
    assert all(cluster.read(in_recovery) for _ in range(4))  # always answered by the standby
    assert dead in cluster._down and standby not in cluster._down
    assert cluster.read_order()[-1] == dead  # skipped until retry_after_s passes

    assert Cluster(primary, [dead], connect_timeout=2).read(in_recovery) is False  # no replica left: primary
    assert Cluster(primary, [standby]).write(in_recovery) is False  # writes go to the primary only

    nothing = Cluster(dead, [dead], connect_timeout=2)
    with pytest.raises(Unavailable, match="every server"):
        nothing.read(in_recovery)
    with pytest.raises(Unavailable, match="primary"):
        nothing.write(in_recovery)


# ---------------------------------------------------------------------------- ranking: same as FAISS


@pytest.mark.slow
def test_same_ranking_as_the_faiss_backend(pg_cluster, built_index, st_encoder, query_encoder):
    """The bundled KB with the real model: every labelled query gets the same cards, scores and
    confidences from both backends; with HNSW candidates forced (exact_limit 0) recall@10 stays >= 0.99."""
    from kb.index import Bundle, EmbeddingCache, prepare
    from kb.pgindex import PgIndex
    from kb.search import Filters, SearchConfig, Searcher

    primary, standby = _database(pg_cluster, "t_same_ranking")
    cache = EmbeddingCache(built_index / "embcache.sqlite")
    try:
        prep = prepare(ROOT / "articles", st_encoder, cache)
    finally:
        cache.close()
    assert prep.computed == 0
    index = PgIndex(Cluster(primary, [standby]))
    version, _ = index.publish(prep, st_encoder)
    files = Searcher(Bundle.open(built_index, model_checksum=query_encoder.checksum), query_encoder)
    pg = Searcher(index.open(version, model_checksum=query_encoder.checksum), query_encoder)
    ann = Searcher(pg.bundle, query_encoder, SearchConfig(exact_limit=0))
    queries = [json.loads(line) for line in (ROOT / "tests/data/queries.jsonl").read_text().splitlines() if line]
    queries = queries[::3]
    qvecs = query_encoder.encode_queries([q["text"] for q in queries])
    f = Filters(audience="internal")
    hits = total = 0
    for q, qv in zip(queries, qvecs, strict=True):
        for mode in ("hybrid", "lexical"):
            a = files.search(q["text"], f, mode=mode, qvec=qv, snippets=False)
            b = pg.search(q["text"], f, mode=mode, qvec=qv, snippets=False)
            key = [(r["article_id"], r["score"], r["confidence"], r["passage"]["id"]) for r in a["results"]]
            assert key == [(r["article_id"], r["score"], r["confidence"], r["passage"]["id"])
                           for r in b["results"]], (mode, q["text"])
        exact = {r["group"] for r in files.search(q["text"], f, qvec=qv, snippets=False)["results"]}
        approx = {r["group"] for r in ann.search(q["text"], f, qvec=qv, snippets=False)["results"]}
        hits, total = hits + len(exact & approx), total + len(exact)
    assert total and hits / total >= 0.99, (hits, total)
    # the snippet sentences and their vectors travel with the version: the same cross-lingual snippets
    assert np.array_equal(pg.bundle.sentence_vectors, files.bundle.sentence_vectors)
    for text in ("¿Cómo envío un paquete con una batería de litio?", "என் பார்சல் எங்கே?"):
        a, b = (s.search(text, f, limit=5)["results"] for s in (files, pg))
        assert [r["snippet"] for r in a] == [r["snippet"] for r in b] and a, text


def _random_index(primary: str, standby: str, n: int = 4000, dim: int = 64, hnsw=None, seed: int = 0):
    """A version of n model-free passages: vectors from 40 random clusters (real embeddings cluster by topic
    and language), 10 passages an article. Returns (PgIndex, vectors, rng)."""
    import datetime as dt

    from kb.articles import Article
    from kb.passages import Passage
    from kb.pgindex import PgIndex, prepared_from

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim))
    vecs = centres[rng.integers(0, 40, n)] + rng.normal(scale=0.6, size=(n, dim))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    arts = [Article(id=f"r-{a:04d}", lang="en", title="", topics=["customs"], countries=["*"], audience="public",
                    updated=dt.date(2026, 1, 1), body="x", path=f"r-{a:04d}") for a in range(n // 10)]
    passages = [Passage(id=f"r-{i // 10:04d}#{i % 10}", article_id=f"r-{i // 10:04d}", lang="en",
                        group=f"r-{i // 10:04d}", title="", heading_path=[], anchor="", text=f"passage {i}")
                for i in range(n)]
    index = PgIndex(Cluster(primary, [standby]), hnsw=hnsw)
    index.publish(prepared_from(arts, passages, vecs, np.zeros_like(vecs)), HashEncoder(dim))
    return index, vecs, rng, centres


def test_hnsw_recall_on_random_vectors_with_the_default_settings(pg_db):
    """pgvector HNSW with the shipped HnswConfig (build and search) finds the exact top 10 by inner product
    for >= 99% of queries' rows, on 4,000 model-free clustered vectors: as a LIMIT 10 query and as the
    searcher's candidate query (LIMIT 800, its 10 nearest)."""
    primary, standby = pg_db
    index, vecs, rng, centres = _random_index(primary, standby)
    bundle = index.open()
    assert bundle.manifest["hnsw"]["m"] == index.hnsw.m
    queries = centres[rng.integers(0, 40, 100)] + rng.normal(scale=0.6, size=(100, vecs.shape[1]))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    for k in (10, 800):
        hits = 0
        for q in queries:
            exact = set(np.argsort(-(vecs @ q), kind="stable")[:10].tolist())
            scores, rows = bundle.store.search(q, k)
            assert len(rows) == k and np.all(np.diff(scores) <= 1e-6)  # k rows, best first
            hits += len(exact & set(rows[:10].tolist()))
        assert hits / (10 * len(queries)) >= 0.99, (k, hits)


def test_hnsw_settings_reach_the_build_and_the_reading_session(pg_db):
    """m / ef_construction reach CREATE INDEX; ef_search (a multiple of k, capped at pgvector's 1000) and the
    iterative scan reach the session of the connection the search ran on; bad settings name their variable."""
    from kb.pgindex import HnswConfig

    primary, standby = pg_db
    cfg = HnswConfig(m=12, ef_construction=64, ef_search_factor=4, iterative_scan="relaxed_order",
                     max_scan_tuples=5000)
    index, vecs, _rng, _c = _random_index(primary, standby, n=600, hnsw=cfg)
    version = index.current()
    opts = _query(primary, "SELECT c.reloptions FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                  "JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'hnsw' AND c.relnamespace = %s::regnamespace",
                  (version,))
    assert opts and all(sorted(o[0]) == ["ef_construction=64", "m=12"] for o in opts), opts
    bundle = index.open()

    def session(conn) -> tuple:
        return tuple(conn.execute(f"SHOW {name}").fetchone()[0]
                     for name in ("hnsw.ef_search", "hnsw.iterative_scan", "hnsw.max_scan_tuples"))

    _scores, rows = bundle.store.search(vecs[0], 30)
    assert rows[0] == 0 and index.cluster.read(session) == ("120", "relaxed_order", "5000")
    ids, _ = bundle.first_stage("", vecs[1], 400, [])
    assert 1 in ids and index.cluster.read(session)[0] == "1000"  # 4 x 400 capped
    assert HnswConfig.from_env({"KB_PG_HNSW_EF_SEARCH_FACTOR": "2.5"}).ef_search(100) == 250
    # iterative scan off: only ef_search is set (pgvector before 0.8 has no hnsw.iterative_scan)
    assert HnswConfig(ef_search_factor=2, ef_search_min=40).settings(10) == (("hnsw.ef_search", "40"),)
    with pytest.raises(ValueError, match="KB_PG_HNSW_ITERATIVE_SCAN"):
        HnswConfig.from_env({"KB_PG_HNSW_ITERATIVE_SCAN": "sideways"})
    with pytest.raises(ValueError, match="KB_PG_HNSW_M"):
        HnswConfig.from_env({"KB_PG_HNSW_M": "many"})
    with pytest.raises(ValueError, match="KB_PG_HNSW_EF_CONSTRUCTION"):
        HnswConfig(m=32, ef_construction=40)


def test_a_search_is_one_statement_and_its_log_one_insert(pg_db, tmp_path, monkeypatch):
    """Round trips per search: the ANN candidates and both lexical legs in ONE statement on a replica, the
    search log ONE autocommit INSERT on the primary (committed when it returns: the row is there)."""
    import psycopg

    from kb.pgindex import PgIndex
    from kb.pgindex import build as pg_build
    from kb.search import Filters, SearchConfig, Searcher

    primary, standby = pg_db
    enc = HashEncoder()
    pg_build(_articles(tmp_path / "articles"), PgIndex(Cluster(primary)), enc)
    searcher = Searcher(PgIndex(Cluster(primary, [standby])).open(), enc, SearchConfig(exact_limit=0))
    calls: list[str] = []
    real, real_tx = psycopg.Connection.execute, psycopg.Connection.transaction

    def counted(self, query, *a, **kw):
        if threading.current_thread() is me:  # not the service's pointer watcher
            calls.append(str(query))
        return real(self, query, *a, **kw)

    def counted_tx(self, *a, **kw):
        if threading.current_thread() is me:
            calls.append("BEGIN ... COMMIT")
        return real_tx(self, *a, **kw)

    me = threading.current_thread()

    searcher.search("perfume customs marker2", Filters(), snippets=False)  # connect, register vector, settings
    monkeypatch.setattr(psycopg.Connection, "execute", counted)
    monkeypatch.setattr(psycopg.Connection, "transaction", counted_tx)
    res = searcher.search("perfume customs marker3", Filters(), snippets=False)
    assert res["results"][0]["article_id"] == "pg-article-3"
    assert len(calls) == 1 and "<#>" in calls[0] and "postings" in calls[0], calls

    app = _pg_app(primary, standby, tmp_path, enc)
    client = app.test_client()
    assert client.get("/api/v1/search?q=perfume%20marker1").status_code == 200  # warm
    calls.clear()
    body = client.get("/api/v1/search?q=perfume%20customs%20marker2").get_json()
    inserts = [c for c in calls if c.startswith("INSERT INTO searches")]
    assert len(calls) == 2 and len(inserts) == 1, calls  # the lexical legs' statement + the log line
    assert _query(primary, "SELECT count(*) FROM searches WHERE id = %s", (body["search_id"],)) == [(1,)]


# ---------------------------------------------------------------------------- analytics: same reports


def _events(store, base) -> None:
    import datetime as dt

    def ts(minutes: int):
        return base + dt.timedelta(minutes=minutes)

    s1 = store.record_search("customs hold on my parcel", lang="en", session_id="s1", result_ids=["a", "b"],
                             top_confidence=0.9, ts=ts(0))
    s2 = store.record_search("பார்சல் தாமதம்", lang="ta", session_id="s2", result_ids=["b"],
                             lang_fallback_only=True, no_confident_answer=True, top_confidence=0.2, ts=ts(1))
    s3 = store.record_search("zzz nothing", lang="en", session_id="s3", result_ids=[], ts=ts(2), channel="api",
                             key_id="key-1")
    store.record_search("call me on +1 415 555 0100", lang="en", session_id="s4", result_ids=["a"], ts=ts(3))
    store.record_click(s1, "a", 1, session_id="s1", ts=ts(4))
    store.record_click(s2, "b", 3, session_id="s2", ts=ts(5))
    store.record_feedback("a", True, search_id=s1, session_id="s1", comment="great, mail me a@b.example",
                          ts=ts(6))
    store.record_feedback("b", False, search_id=s2, session_id="s2", ts=ts(7))
    store.record_feedback("b", True, session_id="s5", ts=ts(8))
    store.record_contact(session_id="s2", search_id=s2, ts=ts(9))
    store.record_contact(session_id="s3", search_id=s3, ts=ts(10))
    aid = store.record_assist("ticket text +44 20 7946 0000", {"tracking": ["1Z999"]}, ["a", "b"], ts=ts(11))
    assert store.mark_assist_used(aid, ["a"])
    assert not store.mark_assist_used("no-such-assist", ["a"])
    store.record_search("old", lang="en", ts=ts(-60 * 24 * 400))


def test_postgres_analytics_gives_the_same_reports_as_sqlite(pg_db, tmp_path):
    import datetime as dt

    from kb.analytics import REPORTS, SQLiteStore, run_report
    from kb.pganalytics import PostgresStore

    primary, standby = pg_db
    base = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
    enc = HashEncoder()
    with SQLiteStore(tmp_path / "kb.sqlite3") as lite, PostgresStore(Cluster(primary, [standby])) as pg:
        assert pg.schema_version() == len(pg.migrations) == len(lite.migrations)
        _events(lite, base)
        _events(pg, base)
        for report in REPORTS:
            for lang, channel, key in ((None, None, None), ("en", None, None), ("ta", None, None),
                                       (None, "api", None), (None, None, "key-1")):
                a = run_report(lite, report, "2026-02-01", "2026-03-31", lang, embed=enc.encode_queries,
                               channel=channel, key=key)
                b = run_report(pg, report, "2026-02-01", "2026-03-31", lang, embed=enc.encode_queries,
                               channel=channel, key=key)
                assert a == b, (report, lang, channel, key)
        assert run_report(pg, "summary", "2026-02-01", "2026-03-31")["searches"] == 4
        stored = _query(primary, "SELECT query_redacted FROM searches ORDER BY ts")
        assert all("555" not in q for (q,) in stored)  # redacted by the base class before it reaches Postgres
        # search-as-you-type refinement within one session: one row, same id
        first = pg.record_search("cust", session_id="typing", result_ids=["a"])
        assert pg.record_search("customs", session_id="typing", result_ids=["a"]) == first
        assert _query(primary, "SELECT count(*) FROM searches WHERE session_id = 'typing'") == [(1,)]
        with pytest.raises(ValueError, match="channel"):
            pg.record_search("x", channel="fax")
        now = base + dt.timedelta(days=30)
        assert lite.purge(365, now=now) == pg.purge(365, now=now) == {
            "searches": 1, "clicks": 0, "feedback": 0, "assist": 0, "contacts": 0}


# ---------------------------------------------------------------------------- HTTP: errors are JSON, never 500


_SERVICES: list = []


@pytest.fixture(autouse=True)
def _stop_watchers():
    """Apps on the Postgres backend follow the pointer row (every 5 s by default): stop them after each test."""
    yield
    while _SERVICES:
        _SERVICES.pop().stop()


def _pg_app(primary: str, standby: str, tmp_path: Path, encoder, **extra):
    from kb.pgindex import PgIndex
    from kb.search import SearchConfig
    from kb.service import KBService
    from search_api import create_app

    # tiny hash-encoded KBs: every ranked card listed (the relevance floor is calibrated for the real model)
    service = KBService(tmp_path / "unused-index", encoder=encoder, source=PgIndex(Cluster(primary, [standby])),
                        config=SearchConfig(relevance_floor=0.0))
    _SERVICES.append(service)
    cfg = {"BACKEND": "postgres", "PG_DSN": primary, "PG_REPLICAS": [standby], "DB_PATH": str(tmp_path / "keys.db"),
           "RATE_LIMIT": "100000/minute"}
    cfg.update(extra)
    return create_app(cfg, service=service)


def test_api_on_postgres_and_clear_errors_when_it_is_down(pg_db, tmp_path):
    from kb.pgindex import PgIndex
    from kb.pgindex import build as pg_build

    primary, standby = pg_db
    enc = HashEncoder()
    pg_build(_articles(tmp_path / "articles"), PgIndex(Cluster(primary)), enc)
    app = _pg_app(primary, standby, tmp_path, enc)
    client = app.test_client()
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "ready" and ready["bundle"].startswith("kbv_")
    res = client.get("/api/v1/search?q=perfume%20customs%20marker2")
    assert res.status_code == 200
    body = res.get_json()
    assert body["results"] and body["search_id"] and body["bundle"] == ready["bundle"]
    fb = client.post("/api/v1/feedback", json={"search_id": body["search_id"], "article_id": "pg-article-2",
                                               "helpful": True})
    assert fb.status_code == 201
    assert _query(primary, "SELECT article_id, helpful FROM feedback WHERE id = %s",
                  (fb.get_json()["id"],)) == [("pg-article-2", 1)]
    admin = {"X-API-Key": app.extensions["kb_keys"].create("admin", "test")}
    summary = client.get("/api/v1/analytics/summary", headers=admin).get_json()["data"]
    assert summary["searches"] == 1 and summary["feedback"] == 1

    # every server gone: the loaded index still answers from memory what needs no database; what does
    # (lexical leg, writes) is a 503 with a JSON body
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    for cluster in (app.extensions["kb_analytics"].cluster, app.extensions["kb_service"].source.cluster):
        cluster.close()
        cluster.primary, cluster.replicas, cluster.connect_timeout = dead, [dead], 1
    res = client.get("/api/v1/search?q=perfume%20customs%20marker2")
    assert res.status_code == 503 and res.get_json()["error"]["code"] == "unavailable"
    assert "127.0.0.1" not in res.get_data(as_text=True)  # server addresses go to the log only
    fb = client.post("/api/v1/feedback", json={"search_id": "x", "article_id": "pg-article-2", "helpful": False})
    assert fb.status_code == 503 and fb.get_json()["error"]["code"] == "unavailable"
    assert fb.headers["Retry-After"]


def test_search_is_served_when_only_analytics_is_down(pg_db, tmp_path):
    from kb.pgindex import PgIndex
    from kb.pgindex import build as pg_build

    primary, standby = pg_db
    enc = HashEncoder()
    pg_build(_articles(tmp_path / "articles"), PgIndex(Cluster(primary)), enc)
    app = _pg_app(primary, standby, tmp_path, enc)
    analytics = app.extensions["kb_analytics"].cluster
    analytics.close()
    analytics.primary = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    res = app.test_client().get("/api/v1/search?q=perfume%20customs")
    assert res.status_code == 200
    assert res.get_json()["search_id"] is None and res.get_json()["results"]


def test_cli_build_and_search_on_postgres(pg_db, tmp_path, capsys):
    from kb.cli import main

    primary, standby = pg_db
    arts = _articles(tmp_path / "articles")
    assert main(["build", "--backend", "postgres", "--dsn", primary, "--articles", str(arts), "--encoder", "hash",
                 "--quiet"]) == 0
    assert "built kbv_" in capsys.readouterr().out
    assert main(["search", "marker3 perfume", "--backend", "postgres", "--dsn", primary, "--replica", standby,
                 "--encoder", "hash", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["bundle"].startswith("kbv_") and res["results"][0]["article_id"] == "pg-article-3"
    assert main(["build", "--backend", "postgres", "--articles", str(arts), "--encoder", "hash"]) == 1
    assert "--dsn" in capsys.readouterr().err
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    assert main(["build", "--backend", "postgres", "--dsn", dead, "--articles", str(arts), "--encoder", "hash"]) == 1
    assert "failed on the primary" in capsys.readouterr().err


# ---------------------------------------------------------------------------- reindex under load


class _Server:
    """The app on a real HTTP server in a thread (werkzeug, threaded)."""

    def __init__(self, app):
        from werkzeug.serving import make_server

        self.httpd = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.httpd.server_port
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def get(self, path: str, timeout: float = 30) -> tuple[int, dict]:
        import http.client

        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        c.request("GET", path)
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"{}")

    def post(self, path: str, body: dict, timeout: float = 30) -> tuple[int, dict]:
        import http.client

        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"{}")

    def stop(self) -> None:
        self.httpd.shutdown()
        self.thread.join(timeout=10)


def _signature(res: dict) -> list:
    return [(r["article_id"], r["title"], r["passage"]["id"], r["score"], r["snippet"]) for r in res["results"]]


def test_reindex_with_8_clients_no_failures_no_mixed_versions(pg_db, tmp_path):
    """A new version is built and swapped in while 8 clients search: every request succeeds and every
    response is exactly what one version's searcher answers (a response mixing the two would differ)."""
    from urllib.parse import quote

    from kb.pgindex import PgIndex
    from kb.pgindex import build as pg_build
    from kb.search import Filters, Searcher

    primary, standby = pg_db
    enc = HashEncoder()
    arts = _articles(tmp_path / "v1", n=6)
    index = PgIndex(Cluster(primary, [standby]))
    v1 = pg_build(arts, index, enc).bundle
    # version 2: other titles and texts, and a new article that sorts first, so every position moves
    arts2 = _articles(tmp_path / "v2", n=6, tag=" (revised)")
    write_article(arts2, "aa-first", "A new first article", "Marker1 perfume duty-free allowance and customs.",
                  topic="customs")
    app = _pg_app(primary, standby, tmp_path, enc, WATCH_INTERVAL=0.2)
    server = _Server(app)
    queries = ["perfume customs marker1", "lithium batteries marker4", "shipping case 3", "customs marker0 rules"]
    stop = threading.Event()
    seen: list[tuple[int, str | None, str, list]] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        i = k
        while not stop.is_set():
            q = queries[i % len(queries)]
            i += 1
            try:
                status, body = server.get(f"/api/v1/search?q={quote(q)}&limit=5")
            except OSError as e:
                status, body = 0, {"error": str(e)}
            with lock:
                seen.append((status, body.get("bundle"), q, _signature(body) if status == 200 else body))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.5)
        v2 = pg_build(arts2, index, enc).bundle
        deadline = time.time() + 30
        while app.extensions["kb_service"].searcher.bundle.name != v2 and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        server.stop()
    failed = [s for s in seen if s[0] != 200]
    assert not failed, failed[:3]
    by_version = {v: sum(1 for s in seen if s[1] == v) for v in (v1, v2)}
    assert by_version[v1] > 0 and by_version[v2] > 0 and sum(by_version.values()) == len(seen), by_version
    expected = {}
    for v in (v1, v2):
        searcher = Searcher(index.open(v), enc)
        for q in queries:
            expected[(v, q)] = _signature(searcher.search(q, Filters(), limit=5))
    assert expected[(v1, queries[0])] != expected[(v2, queries[0])]
    mixed = [s for s in seen if s[3] != expected[(s[1], s[2])]]
    assert not mixed, mixed[:2]
    print(f"reindex: {len(seen)} searches by 8 clients ({by_version[v1]} on {v1}, {by_version[v2]} on {v2}), "
          f"{len(failed)} failed, {len(mixed)} mixed")


# ---------------------------------------------------------------------------- failover


@pytest.mark.slow
def test_failover_loses_no_acknowledged_feedback_and_search_keeps_answering(tmp_path):
    """Synchronous replication: a 201 means the standby has the row on disk. The primary is killed
    (immediate stop, no checkpoint), the standby promoted; every acknowledged row is on it, and searches,
    read from the standby, answer throughout."""
    pytest.importorskip("psycopg")
    from kb.pgindex import PgIndex
    from kb.pgindex import build as pg_build
    from kb.pglocal import LocalCluster

    with LocalCluster(synchronous=True) as cluster:
        primary, standby = cluster.primary, cluster.standby
        assert ("kb_standby", "streaming", "sync") in _query(
            primary.dsn, "SELECT application_name, state, sync_state FROM pg_stat_replication")
        enc = HashEncoder()
        pg_build(_articles(tmp_path / "articles"), PgIndex(Cluster(primary.dsn)), enc)
        # writes: whichever of the two is read-write (libpq tries both); reads: the standby
        writer = (f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/postgres"
                  "?target_session_attrs=read-write&connect_timeout=2")
        app = _pg_app(writer, standby.dsn, tmp_path, enc)
        server = _Server(app)
        stop = threading.Event()
        searches: list[tuple[float, int]] = []

        def search_loop() -> None:
            while not stop.is_set():
                try:
                    status, _body = server.get("/api/v1/search?q=perfume%20customs%20marker1")
                except OSError:
                    status = 0
                searches.append((time.time(), status))

        acked: list[str] = []
        refused: list[tuple[int, dict]] = []

        _status, first = server.get("/api/v1/search?q=perfume%20customs%20marker1")
        sid = first["search_id"]  # feedback must cite a search the service issued

        def feedback(n: int) -> None:
            status, body = server.post("/api/v1/feedback", {"search_id": sid, "article_id": "pg-article-1",
                                                            "helpful": n % 2 == 0, "comment": f"write {n}"})
            if status == 201:
                acked.append(body["id"])
            else:
                refused.append((status, body))

        reader = threading.Thread(target=search_loop)
        reader.start()
        try:
            for n in range(30):
                feedback(n)
            assert len(acked) == 30, refused[:3]
            primary.stop("immediate")  # like a crash: no shutdown checkpoint
            down_at = time.time()
            for n in range(30, 36):
                feedback(n)
            standby.promote()
            promoted_at = time.time()
            deadline = time.time() + 60
            n = 36
            while len(acked) < 36 and time.time() < deadline:
                feedback(n)
                n += 1
                time.sleep(0.2)
            time.sleep(1.0)
        finally:
            stop.set()
            reader.join(timeout=30)
            server.stop()
        assert all(status == 503 and body["error"]["code"] == "unavailable" for status, body in refused), refused
        rows = {r[0] for r in _query(standby.dsn, "SELECT id FROM feedback")}
        assert set(acked) <= rows and len(acked) >= 36  # written after the promotion too
        assert all(status == 200 for _t, status in searches), [s for s in searches if s[1] != 200][:3]
        assert any(down_at <= t <= promoted_at for t, _s in searches) or promoted_at - down_at < 0.5
        assert any(t > promoted_at for t, _s in searches)
        during = sum(1 for t, _s in searches if down_at <= t <= promoted_at)
        print(f"failover: {len(acked)} feedback acknowledged, {len(set(acked) - rows)} lost, {len(refused)} refused "
              f"with 503 while no primary; {len(searches)} searches all 200 ({during} while the primary was down)")

