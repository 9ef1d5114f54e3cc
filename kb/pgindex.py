"""The Postgres backend's index: versioned tables of articles, passages and questions (pgvector + BM25).

Layout, in one database:

- ``kb_index(name, version, switched_at)``: the pointer row per index name (``kb``; `kb eval` writes
  shared evaluation sets under their own names, so evaluating never replaces what is served);
- ``kb_versions(version, index_name, manifest, created_at)``;
- ``kb_embcache(model, hash, vec)``: the embedding cache builds share (incremental builds re-embed only
  changed texts, as with the file backend's embcache.sqlite);
- one schema per version (``kbv_000042``) with ``articles``, ``passages``, ``questions``, ``postings``
  and ``lexstats``, never changed after its commit.

A build creates the version schema, fills it, indexes it (HNSW ``vector_ip_ops`` over passage, heading and
question vectors; a btree over the postings), moves the pointer row and drops old versions, all in ONE
transaction: a reader sees the old version or the new one, never part of one. A loaded searcher queries
only its own version's schema (readers pin the version), so a swap cannot mix two versions in a response.

Dense scoring stays kb.search's: the searcher loads the version's vectors like a bundle's, and above its
exact limit the HNSW indexes propose the candidates that it then scores exactly.

The lexical leg is SQLite FTS5's design and ranking in Postgres: an inverted index (``postings``: term,
row, term frequency, row length) over the project's own tokens (:func:`kb.lexical.tokenize`, one
definition), queried with :func:`kb.lexical.query_terms` (prefix terms become btree range scans in the "C"
collation) and ranked in SQL by FTS5's bm25() (k1 1.2, b 0.75, the same IDF), so both backends give the
same lexical ranks, score for score. A tsvector column ranked by ts_rank gives different ranks (ts_rank is
not BM25), and computing BM25 from tsvectors in SQL (unnest every matched row's lexemes) took 17-27 ms a
query on the bundled KB, several times the postings' cost.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .ann import VectorStore
from .articles import Article
from .domain import MANIFEST_KEY, probe_manifest_entry
from .embedder import Encoder
from .index import (
    FORMAT_VERSION,
    KEEP_BUNDLES,
    BuildReport,
    Bundle,
    BundleError,
    Prepared,
    check_sentences,
    passage_docs,
    prepare,
    sentence_starts,
)
from .lexical import pool_size, query_terms, restrict, tokenize
from .passages import Passage
from .pg import Cluster, with_vector

VERSION_RE = re.compile(r"^kbv_[0-9]{6,}$")
INDEX_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,62}$")
BM25_K1, BM25_B = 1.2, 0.75  # FTS5's bm25() constants
LEX_TABLES = {"fts": 0, "questions": 1}  # kb.lexical.LexicalIndex's table names -> postings.tbl

SHARED_DDL = """
CREATE TABLE IF NOT EXISTS kb_index (
    name text PRIMARY KEY, version text NOT NULL, switched_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS kb_versions (
    version text PRIMARY KEY, index_name text NOT NULL, manifest jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE SEQUENCE IF NOT EXISTS kb_version_seq;
CREATE TABLE IF NOT EXISTS kb_embcache (
    model text NOT NULL, hash text NOT NULL, vec bytea NOT NULL, PRIMARY KEY (model, hash));
"""


# --------------------------------------------------------------------------- binary COPY fields


def vector_bytes(v: np.ndarray) -> bytes:
    """pgvector's binary format (int16 dim, int16 unused, float4 big-endian)."""
    return struct.pack(">hh", len(v), 0) + np.asarray(v, dtype=">f4").tobytes()


def vectors_from_bytes(blobs: Sequence[bytes | None], dim: int) -> np.ndarray:
    """Rows of ``vector_send`` output back into one float32 matrix (NULL: a zero row)."""
    out = np.zeros((len(blobs), dim), dtype=np.float32)
    rows = [i for i, b in enumerate(blobs) if b is not None]
    if rows:
        raw = np.frombuffer(b"".join(blobs[i] for i in rows), dtype=">f4").reshape(len(rows), dim + 1)
        out[rows] = raw[:, 1:]  # the 4-byte header (dim, unused) is one float's width
    return out


def jsonb_bytes(value) -> bytes:
    return b"\x01" + json.dumps(value, ensure_ascii=False).encode()


def postings(tokens_per_row: list[list[str]]) -> list[tuple[str, int, int, int]]:
    """(term, row, term frequency, row length) for each distinct term of each row."""
    out = []
    for row, tokens in enumerate(tokens_per_row):
        counts: dict[str, int] = {}
        for tok in tokens:
            counts[tok] = counts.get(tok, 0) + 1
        out.extend((term, row, tf, len(tokens)) for term, tf in counts.items())
    return out


def query_lexemes(text: str) -> tuple[list[str], list[bool]]:
    """kb.lexical.query_terms as (terms, is_prefix): `"stem"*` -> ("stem", True), `"ab"` -> ("ab", False)."""
    terms, prefix = [], []
    for t in query_terms(text):
        terms.append(t.strip('"*'))
        prefix.append(t.endswith("*"))
    return terms, prefix


# --------------------------------------------------------------------------- HNSW settings

EF_SEARCH_MAX = 1000  # pgvector's upper bound for hnsw.ef_search
ITERATIVE_SCANS = ("off", "relaxed_order", "strict_order")


@dataclass(frozen=True)
class HnswConfig:
    """How a build makes the pgvector HNSW indexes (``m``, ``ef_construction``) and how a search walks them.

    A search asking for k rows runs with ``hnsw.ef_search`` = ``ef_search_factor`` x k, at least
    ``ef_search_min`` and at most 1000 (pgvector's bound; without an iterative scan HNSW returns at most
    ef_search rows). ``iterative_scan`` (pgvector >= 0.8: ``relaxed_order`` / ``strict_order``) lets a scan
    go on past ef_search, up to ``max_scan_tuples`` visited tuples. The defaults are what benchmarks/postgres.py
    measured (README); ``KB_PG_HNSW_*`` environment variables override them (:meth:`from_env`).
    """

    # m 24 / ef_construction 200 (was 16 / 128): recall@10 of the searcher's query at 100k (pairs) 0.983 ->
    # 0.992, the build 1.5x as long (README, benchmarks/postgres.py)
    m: int = 24
    ef_construction: int = 200
    ef_search_factor: float = 1.0
    ef_search_min: int = 100
    iterative_scan: str = "off"
    max_scan_tuples: int = 20_000

    ENV = {"m": "KB_PG_HNSW_M", "ef_construction": "KB_PG_HNSW_EF_CONSTRUCTION",
           "ef_search_factor": "KB_PG_HNSW_EF_SEARCH_FACTOR", "ef_search_min": "KB_PG_HNSW_EF_SEARCH_MIN",
           "iterative_scan": "KB_PG_HNSW_ITERATIVE_SCAN", "max_scan_tuples": "KB_PG_HNSW_MAX_SCAN_TUPLES"}

    def __post_init__(self) -> None:
        if not 2 <= self.m <= 100:
            raise ValueError(f"{self.ENV['m']}: m must be 2..100 (pgvector), not {self.m}")
        if not 2 * self.m <= self.ef_construction <= 1000:
            raise ValueError(f"{self.ENV['ef_construction']}: ef_construction must be {2 * self.m}..1000 "
                             f"(at least 2 x m), not {self.ef_construction}")
        if not self.ef_search_factor > 0:
            raise ValueError(f"{self.ENV['ef_search_factor']}: must be > 0, not {self.ef_search_factor}")
        if not 1 <= self.ef_search_min <= EF_SEARCH_MAX:
            raise ValueError(f"{self.ENV['ef_search_min']}: must be 1..{EF_SEARCH_MAX}, not {self.ef_search_min}")
        if self.iterative_scan not in ITERATIVE_SCANS:
            raise ValueError(f"{self.ENV['iterative_scan']}: one of {', '.join(ITERATIVE_SCANS)}, "
                             f"not {self.iterative_scan!r}")
        if self.max_scan_tuples < 1:
            raise ValueError(f"{self.ENV['max_scan_tuples']}: must be >= 1, not {self.max_scan_tuples}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HnswConfig:
        env = os.environ if env is None else env
        kw: dict = {}
        for f in fields(cls):
            raw = env.get(cls.ENV[f.name], "").strip()
            if raw:
                kind = type(getattr(cls, f.name))
                try:
                    kw[f.name] = kind(raw)
                except ValueError:
                    raise ValueError(f"{cls.ENV[f.name]}={raw!r}: not a {kind.__name__}") from None
        return cls(**kw)

    def ef_search(self, k: int) -> int:
        return max(self.ef_search_min, min(EF_SEARCH_MAX, math.ceil(self.ef_search_factor * int(k))))

    def settings(self, k: int) -> tuple[tuple[str, str], ...]:
        """The session settings a search for k rows runs under (iterative-scan ones only when it is on, so
        a pgvector before 0.8 still serves the default)."""
        out = [("hnsw.ef_search", str(self.ef_search(k)))]
        if self.iterative_scan != "off":
            out += [("hnsw.iterative_scan", self.iterative_scan), ("hnsw.max_scan_tuples", str(self.max_scan_tuples))]
        return tuple(out)


_SESSION: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # connection -> the settings last SET on it
_SESSION_LOCK = threading.Lock()


def apply_settings(conn, settings: tuple[tuple[str, str], ...]) -> None:
    """Set ``settings`` on the (per-thread, autocommit) connection for its session, only when they differ from
    what it last got: a search then costs one round trip, not BEGIN + SET LOCAL + query + COMMIT."""
    with _SESSION_LOCK:
        if _SESSION.get(conn) == settings:
            return
    conn.execute("SELECT " + ", ".join("set_config(%s, %s, false)" for _ in settings),
                 [x for pair in settings for x in pair])
    with _SESSION_LOCK:
        _SESSION[conn] = settings


# --------------------------------------------------------------------------- search-time objects


class PgVectorStore(VectorStore):
    """A version's vectors: loaded for exact scoring, HNSW (vector_ip_ops) in Postgres for candidates."""

    kind = "pgvector-hnsw"

    def __init__(self, cluster: Cluster, version: str, vectors: np.ndarray, hnsw: HnswConfig | None = None):
        self.cluster, self.version = cluster, version
        self._vectors = vectors
        self.hnsw = hnsw or HnswConfig()

    def vectors(self) -> np.ndarray:
        return self._vectors

    @property
    def count(self) -> int:
        return len(self._vectors)

    def _knn(self, sql: str, query: np.ndarray, k: int) -> list[tuple]:
        def run(conn):
            with_vector(conn)
            apply_settings(conn, self.hnsw.settings(k))
            return conn.execute(sql, {"q": np.asarray(query, np.float32), "k": int(k)}).fetchall()

        rows = self.cluster.read(run, "vector search")
        if self.hnsw.iterative_scan == "relaxed_order":  # rows may come slightly out of order
            rows.sort(key=lambda r: -r[1] if len(r) > 1 else 0.0)
        return rows

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self._knn(f"SELECT pos, -(embedding <#> %(q)s) FROM {self.version}.passages "
                         "ORDER BY embedding <#> %(q)s LIMIT %(k)s", query, k)
        return (np.array([r[1] for r in rows], dtype=np.float32), np.array([r[0] for r in rows], dtype=np.int64))

    def candidates(self, query: np.ndarray, k: int) -> np.ndarray:
        """Nearest passages by passage vector and by title/heading vector (search scores both), one query."""
        rows = self._knn(f"SELECT pos FROM ({CANDIDATES_SQL.format(v=self.version)}) c", query, k)
        return np.array(sorted(r[0] for r in rows), dtype=np.int64)

    def search_questions(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest editor-written questions (rows of the bundle's question list)."""
        rows = self._knn(f"SELECT pos, -(embedding <#> %(q)s) FROM {self.version}.questions "
                         "ORDER BY embedding <#> %(q)s LIMIT %(k)s", query, k)
        return (np.array([r[1] for r in rows], dtype=np.float32), np.array([r[0] for r in rows], dtype=np.int64))

    def search_headings(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self._knn(f"SELECT pos, -(heading <#> %(q)s) FROM {self.version}.passages "
                         "ORDER BY heading <#> %(q)s LIMIT %(k)s", query, k)
        return (np.array([r[1] for r in rows], dtype=np.float32), np.array([r[0] for r in rows], dtype=np.int64))


# Dense candidates: nearest passages by passage vector and by title/heading vector, each through its HNSW index.
CANDIDATES_SQL = ("(SELECT pos FROM {v}.passages ORDER BY embedding <#> %(q)s LIMIT %(k)s) "
                  "UNION (SELECT pos FROM {v}.passages ORDER BY heading <#> %(q)s LIMIT %(k)s)")

# One row per (table asked for, query term, matching row): a prefix term is a range scan [stem, stem ||
# U+10FFFF] of the ("C"-collated) term index, an exact term the range [term, term]. FTS5's bm25() over them,
# written as fts5_aux.c computes it (same operations in the same order, terms summed in query order, so the
# doubles are the same and ties fall back to the row order as in FTS5): IDF ln((N - n + 0.5) / (n + 0.5)),
# 1e-6 where that is <= 0, N = rows in the table, n = rows matching the term. Each table's best ``lim`` rows.
BM25_CTES = """
q AS (SELECT * FROM unnest(%(terms)s::text[], %(prefix)s::bool[]) WITH ORDINALITY AS q(term, prefix, i)),
l AS (SELECT * FROM unnest(%(tbls)s::int2[], %(limits)s::int4[]) AS l(tbl, lim)),
tf AS (SELECT l.tbl, q.i, p.row, sum(p.tf)::float8 AS f, min(p.ntok) AS ntok
       FROM l CROSS JOIN q CROSS JOIN LATERAL (
           SELECT row, tf, ntok FROM {v}.postings
           WHERE tbl = l.tbl AND term >= q.term
             AND term <= (CASE WHEN q.prefix THEN q.term || chr(1114111) ELSE q.term END) COLLATE "C") p
       GROUP BY l.tbl, q.i, p.row),
df AS (SELECT tbl, i, count(*)::float8 AS n FROM tf GROUP BY tbl, i),
st AS (SELECT tbl, rows::float8 AS total, avgdl FROM {v}.lexstats),
sc AS (SELECT tf.tbl, tf.row,
              sum(CASE WHEN ln((st.total - df.n + 0.5) / (df.n + 0.5)) <= 0 THEN 1e-6
                       ELSE ln((st.total - df.n + 0.5) / (df.n + 0.5)) END
                  * ((tf.f * (%(k1)s + 1.0)) / (tf.f + %(k1)s * (1 - %(b)s + %(b)s * tf.ntok / st.avgdl)))
                  ORDER BY tf.i) AS score
       FROM tf JOIN df USING (tbl, i) JOIN st USING (tbl)
       GROUP BY tf.tbl, tf.row)"""
BM25_BEST = ("SELECT l.tbl, s.row, s.score FROM l CROSS JOIN LATERAL (SELECT row, score FROM sc WHERE sc.tbl = l.tbl "
             "ORDER BY score DESC, row LIMIT l.lim) s")


def first_stage_sql(version: str, dense: bool, lexical: bool) -> str:
    """ONE statement for a search's Postgres work: rows (leg, row, score), leg -1 = a dense candidate (no
    score: the searcher scores candidates exactly), else the postings table of a lexical leg."""
    parts = []
    if lexical:
        parts.append(BM25_BEST)
    if dense:
        parts.append(f"SELECT -1::int2, c.pos, NULL::float8 FROM ({CANDIDATES_SQL.format(v=version)}) c")
    if not parts:
        raise ValueError("first_stage_sql: nothing asked for")
    with_ = f"WITH {BM25_CTES.format(v=version)}\n" if lexical else ""
    return with_ + "\nUNION ALL\n".join(parts)


LexRequest = tuple[str, int, "set[int] | None"]  # (table, limit, rowids allowed or None): kb.lexical's search()


def _lex_hits(rows: list[tuple[int, float]], limit: int, rowids: set[int] | None) -> list[tuple[int, float]]:
    return restrict(sorted(rows, key=lambda r: (-r[1], r[0])), limit, rowids)  # ORDER BY score DESC, row


class PgFirstStage:
    """A search's dense candidates and lexical legs in one statement on one server (one round trip): the
    searcher's ``bundle.first_stage`` for the Postgres backend."""

    def __init__(self, cluster: Cluster, version: str, hnsw: HnswConfig | None = None):
        self.cluster, self.version, self.hnsw = cluster, version, hnsw or HnswConfig()

    def statement(self, text: str, qvec: np.ndarray | None, k: int,
                  lexical: Sequence[LexRequest]) -> tuple[str, dict, bool, bool] | None:
        """(SQL, parameters, dense?, lexical?) of a search's one statement, None when there is nothing to ask
        (benchmarks/postgres.py --explain runs it under EXPLAIN ANALYZE)."""
        terms, prefix = query_lexemes(text)
        legs = [(LEX_TABLES[t], pool_size(lim, rowids)) for t, lim, rowids in lexical if t in LEX_TABLES]
        dense = bool(k) and qvec is not None
        lex = bool(terms) and bool(legs)
        if not dense and not lex:
            return None
        params: dict = {"k1": BM25_K1, "b": BM25_B}
        if lex:
            tbls = sorted({t for t, _ in legs})  # one fetch per table: the largest asked for
            params.update(terms=terms, prefix=prefix, tbls=tbls,
                          limits=[max(n for t, n in legs if t == tb) for tb in tbls])
        if dense:
            params.update(q=np.asarray(qvec, np.float32), k=int(k))
        return first_stage_sql(self.version, dense, lex), params, dense, lex

    def __call__(self, text: str, qvec: np.ndarray | None, k: int,
                 lexical: Sequence[LexRequest]) -> tuple[np.ndarray | None, list[list[tuple[int, float]]]]:
        """(dense candidate rows, sorted, or None when ``k`` is 0; per lexical request its (rowid, score) hits)."""
        stmt = self.statement(text, qvec, k, lexical)
        if stmt is None:
            return None, [[] for _ in lexical]
        sql, params, dense, lex = stmt

        def run(conn):
            if dense:
                with_vector(conn)
                apply_settings(conn, self.hnsw.settings(k))
            return conn.execute(sql, params).fetchall()

        rows = self.cluster.read(run, "search")
        ids = np.array(sorted(r for leg, r, _s in rows if leg == -1), dtype=np.int64) if dense else None
        by_tbl: dict[int, list[tuple[int, float]]] = {}
        for leg, r, s in rows:
            if leg != -1:
                by_tbl.setdefault(leg, []).append((r, s))
        hits = [_lex_hits(by_tbl.get(LEX_TABLES[t], []), lim, rowids) if lex and t in LEX_TABLES else []
                for t, lim, rowids in lexical]
        return ids, hits


class PgLexicalIndex:
    """kb.lexical.LexicalIndex's interface over a version's postings: same tokens, same BM25."""

    TABLES = tuple(LEX_TABLES)

    def __init__(self, cluster: Cluster, version: str):
        self.cluster, self.version = cluster, version
        self._stage = PgFirstStage(cluster, version)

    def search(self, text: str, limit: int = 100, rowids: set[int] | None = None,
               table: str = "fts") -> list[tuple[int, float]]:
        """(rowid, score) best first, score = BM25 (higher is better); ``rowids`` restricts the pool the way
        the FTS5 index does (best matches first, then filtered), so both backends rank alike."""
        if table not in LEX_TABLES:
            return []
        return self._stage(text, None, 0, [(table, limit, rowids)])[1][0]


# --------------------------------------------------------------------------- embedding cache


class PgEmbeddingCache:
    """kb.index.EmbeddingCache's interface in the database (read and written on the primary)."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster

    def get_many(self, model: str, hashes: list[str]) -> dict[str, np.ndarray]:
        def read(conn) -> dict[str, np.ndarray]:
            found: dict[str, np.ndarray] = {}
            for i in range(0, len(hashes), 5000):
                for h, blob in conn.execute("SELECT hash, vec FROM kb_embcache WHERE model = %s AND hash = ANY(%s)",
                                            (model, hashes[i : i + 5000])):
                    found[h] = np.frombuffer(blob, dtype=np.float32)
            return found

        return self.cluster.write(read, "embedding cache read")  # the primary: a replica may lag

    def put_many(self, model: str, items: list[tuple[str, np.ndarray]]) -> None:
        def write(conn):
            conn.execute("CREATE TEMP TABLE kb_embcache_in (LIKE kb_embcache) ON COMMIT DROP")
            with conn.cursor().copy("COPY kb_embcache_in (model, hash, vec) FROM STDIN") as copy:
                for h, v in items:
                    copy.write_row((model, h, np.asarray(v, np.float32).tobytes()))
            conn.execute("INSERT INTO kb_embcache SELECT * FROM kb_embcache_in ON CONFLICT DO NOTHING")

        if items:
            self.cluster.write(write, "embedding cache write", retry=False)

    def close(self) -> None:
        pass


class ChainedCache:
    """The database's cache first, then a local kb.index.EmbeddingCache (say the file backend's
    index/embcache.sqlite); new vectors go to the database. Moving a KB from files to Postgres on the
    machine that built it re-embeds nothing."""

    def __init__(self, first: PgEmbeddingCache, fallback):
        self.first, self.fallback = first, fallback

    def get_many(self, model: str, hashes: list[str]) -> dict[str, np.ndarray]:
        found = self.first.get_many(model, hashes)
        missing = [h for h in hashes if h not in found]
        if missing and self.fallback is not None:
            more = self.fallback.get_many(model, missing)
            if more:
                self.first.put_many(model, list(more.items()))
                found.update(more)
        return found

    def put_many(self, model: str, items: list[tuple[str, np.ndarray]]) -> None:
        self.first.put_many(model, items)

    def close(self) -> None:
        if self.fallback is not None:
            self.fallback.close()


# --------------------------------------------------------------------------- the index


class PgIndex:
    """One named index in a Postgres database: publish versions, read the pointer, load a version.

    Also the service's bundle source (``current()`` / ``open()``, like kb.index.BundleDir)."""

    def __init__(self, cluster: Cluster, name: str = "kb", keep: int = KEEP_BUNDLES, hnsw: HnswConfig | None = None):
        if not INDEX_NAME_RE.match(name):
            raise ValueError(f"bad index name {name!r}: lower-case letters, digits and _ . : - only")
        self.cluster, self.name, self.keep = cluster, name, max(1, keep)
        self.hnsw = hnsw or HnswConfig.from_env()

    # ------------------------------------------------------------------ schema

    def ensure_schema(self) -> None:
        """Shared tables and the extension (on the primary; CREATE EXTENSION needs the right to create it,
        so on a managed cluster create `vector` once as its owner)."""
        def ddl(conn):
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('kb_index:schema'))")
            if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is None:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(SHARED_DDL)

        self.cluster.write(ddl, "schema setup", retry=False)

    # ------------------------------------------------------------------ pointer

    def current(self) -> str:
        """The version the pointer row names (read from a replica)."""
        from psycopg import errors

        def read(conn):
            try:
                row = conn.execute("SELECT version FROM kb_index WHERE name = %s", (self.name,)).fetchone()
            except errors.UndefinedTable:
                return None
            return row[0] if row else None

        version = self.cluster.read(read, "index pointer read")
        if version is None:
            raise BundleError(f"no index {self.name!r} in Postgres: run `kb build --backend postgres` first")
        return version

    def versions(self) -> list[dict]:
        rows = self.cluster.read(lambda c: c.execute(
            "SELECT version, created_at, manifest->'counts' FROM kb_versions WHERE index_name = %s "
            "ORDER BY created_at DESC, version DESC", (self.name,)).fetchall(), "versions read")
        return [{"version": v, "created_at": t.isoformat(), "counts": c} for v, t, c in rows]

    # ------------------------------------------------------------------ writing

    def publish(self, prep: Prepared, encoder: Encoder, extra: dict | None = None) -> tuple[str, dict]:
        """Write ``prep`` as a new version and make it current, in one transaction. Returns (version, manifest)."""
        if len(prep.vectors) != len(prep.passages) or prep.headings.shape != prep.vectors.shape:
            raise ValueError(f"{len(prep.passages)} passages but vectors {prep.vectors.shape}, "
                             f"headings {prep.headings.shape}")
        if len(prep.question_vectors) != len(prep.questions):
            raise ValueError(f"{len(prep.questions)} questions but {len(prep.question_vectors)} question vectors")
        self.ensure_schema()
        dim = encoder.dim
        langs: dict[str, int] = {}
        for a in prep.articles:
            langs[a.lang] = langs.get(a.lang, 0) + 1
        manifest = {
            "format_version": FORMAT_VERSION,
            "model": {"id": encoder.model_id, "checksum": encoder.checksum, "encoder": encoder.kind},
            "dim": dim,
            "store": PgVectorStore.kind,
            "hnsw": {"m": self.hnsw.m, "ef_construction": self.hnsw.ef_construction, "ops": "vector_ip_ops"},
            "counts": {"articles": len(prep.articles), "passages": len(prep.passages),
                       "questions": len(prep.questions), "languages": langs},
            "articles": {f"{a.id}.{a.lang}": a.content_hash for a in prep.articles},
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            MANIFEST_KEY: probe_manifest_entry(prep.questions, prep.question_vectors, dim),  # as kb.index's
            **(extra or {}),
        }
        qs = prep.query_style
        if qs is not None and qs.shape != prep.vectors.shape:
            raise ValueError(f"{len(prep.passages)} passages but query-style vectors {qs.shape}")
        docs = passage_docs(prep.passages, prep.sentence_vectors)
        starts = sentence_starts(docs)
        sentences = (np.zeros((0, dim), np.float16) if prep.sentence_vectors is None
                     else np.ascontiguousarray(prep.sentence_vectors, dtype=np.float16))
        p_tokens = [tokenize(p.embed_text) for p in prep.passages]
        q_tokens = [tokenize(q["text"]) for q in prep.questions]

        def tx(conn) -> str:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('kb_index:' || %s))", (self.name,))
            # with a synchronous standby, COMMIT returns once it has *applied* the version: readers on it
            # find the new version as soon as the build says it is done
            conn.execute("SET LOCAL synchronous_commit = remote_apply")
            conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
            conn.execute("SET LOCAL statement_timeout = 0")  # the request timeout is not for index builds
            seq = conn.execute("SELECT nextval('kb_version_seq')").fetchone()[0]
            v = f"kbv_{seq:06d}"
            conn.execute(f"CREATE SCHEMA {v}")
            conn.execute(f"CREATE TABLE {v}.articles (pos int PRIMARY KEY, doc jsonb NOT NULL)")
            conn.execute(f"CREATE TABLE {v}.passages (pos int PRIMARY KEY, doc jsonb NOT NULL, "
                         f"embedding vector({dim}) NOT NULL, heading vector({dim}), "  # NULL: no title/heading
                         f"query_style vector({dim}), "  # NULL: built without query-style vectors
                         "sentences bytea NOT NULL)")  # the snippet sentences' vectors, float16 (kb.index)
            conn.execute(f"CREATE TABLE {v}.questions (pos int PRIMARY KEY, doc jsonb NOT NULL, "
                         f"embedding vector({dim}) NOT NULL)")
            conn.execute(f"CREATE TABLE {v}.postings (tbl smallint NOT NULL, term text COLLATE \"C\" NOT NULL, "
                         "row int NOT NULL, tf int NOT NULL, ntok int NOT NULL)")
            conn.execute(f"CREATE TABLE {v}.lexstats (tbl smallint PRIMARY KEY, rows int NOT NULL, "
                         "avgdl float8 NOT NULL)")
            cur = conn.cursor()
            with cur.copy(f"COPY {v}.articles (pos, doc) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "bytea"])
                for i, a in enumerate(prep.articles):
                    copy.write_row((i, jsonb_bytes(dict(a.meta(), body=a.body))))
            with cur.copy(f"COPY {v}.passages (pos, doc, embedding, heading, query_style, sentences) "
                          "FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "bytea", "bytea", "bytea", "bytea", "bytea"])
                has_heading = np.linalg.norm(prep.headings, axis=1) > 0 if len(prep.headings) else []
                # rows in a fixed random order: CREATE INDEX inserts them into the HNSW graph in table order,
                # and rows that come in blocks (the KB, then another corpus; one language after another)
                # left the first block an island the search rarely entered (benchmarks/postgres.py: recall@10
                # at 100k 0.899 in block order, 0.990 shuffled). pos keeps the passage order.
                for i in np.random.default_rng(0).permutation(len(prep.passages)).tolist():
                    copy.write_row((i, jsonb_bytes(docs[i]), vector_bytes(prep.vectors[i]),
                                    vector_bytes(prep.headings[i]) if has_heading[i] else None,
                                    vector_bytes(qs[i]) if qs is not None else None,
                                    sentences[starts[i] : starts[i + 1]].tobytes()))
            with cur.copy(f"COPY {v}.questions (pos, doc, embedding) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "bytea", "bytea"])
                for i, q in enumerate(prep.questions):
                    copy.write_row((i, jsonb_bytes(q), vector_bytes(prep.question_vectors[i])))
            with cur.copy(f"COPY {v}.postings (tbl, term, row, tf, ntok) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int2", "text", "int4", "int4", "int4"])
                for tbl, toks in ((LEX_TABLES["fts"], p_tokens), (LEX_TABLES["questions"], q_tokens)):
                    for row in postings(toks):
                        copy.write_row((tbl, *row))
            for tbl, toks in ((LEX_TABLES["fts"], p_tokens), (LEX_TABLES["questions"], q_tokens)):
                conn.execute(f"INSERT INTO {v}.lexstats VALUES (%s, %s, %s)",
                             (tbl, len(toks), sum(map(len, toks)) / max(len(toks), 1)))
            with_ = f"WITH (m = {int(self.hnsw.m)}, ef_construction = {int(self.hnsw.ef_construction)})"
            conn.execute(f"CREATE INDEX ON {v}.passages USING hnsw (embedding vector_ip_ops) {with_}")
            conn.execute(f"CREATE INDEX ON {v}.passages USING hnsw (heading vector_ip_ops) {with_}")
            conn.execute(f"CREATE INDEX ON {v}.questions USING hnsw (embedding vector_ip_ops) {with_}")
            conn.execute(f"CREATE INDEX ON {v}.postings (tbl, term) INCLUDE (row, tf, ntok)")
            for table in ("passages", "questions", "postings"):
                conn.execute(f"ANALYZE {v}.{table}")
            conn.execute("INSERT INTO kb_versions (version, index_name, manifest) VALUES (%s, %s, %s::jsonb)",
                         (v, self.name, json.dumps(manifest, ensure_ascii=False)))
            conn.execute("INSERT INTO kb_index (name, version) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE "
                         "SET version = excluded.version, switched_at = now()", (self.name, v))
            old = conn.execute("SELECT version FROM kb_versions WHERE index_name = %s "
                               "ORDER BY created_at DESC, version DESC OFFSET %s", (self.name, self.keep)).fetchall()
            for (ov,) in old:
                if VERSION_RE.match(ov):
                    conn.execute(f"DROP SCHEMA IF EXISTS {ov} CASCADE")
                conn.execute("DELETE FROM kb_versions WHERE version = %s", (ov,))
            return v

        version = self.cluster.write(tx, "index build", retry=False)
        return version, manifest

    # ------------------------------------------------------------------ reading

    def open(self, name: str | None = None, model_checksum: str | None = None) -> Bundle:
        """Load a version (the current one by default) into a Bundle whose store and lexical index query
        that version's tables only."""
        version = name or self.current()
        if not VERSION_RE.match(version):
            raise BundleError(f"bad Postgres index version {version!r}")

        def load(conn):
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                conn.execute("SET LOCAL statement_timeout = 0")  # a large version takes a while to read
                row = conn.execute("SELECT manifest FROM kb_versions WHERE version = %s", (version,)).fetchone()
                if row is None:
                    from psycopg import errors

                    raise errors.UndefinedTable(f"version {version} is not (yet) on this server")
                cur = conn.cursor(binary=True)
                arts = [r[0] for r in cur.execute(f"SELECT doc FROM {version}.articles ORDER BY pos")]
                prow = cur.execute(f"SELECT doc, vector_send(embedding), vector_send(heading), vector_send(query_style), "
                                   f"sentences FROM {version}.passages ORDER BY pos").fetchall()
                qrow = cur.execute(f"SELECT doc, vector_send(embedding) FROM {version}.questions "
                                   "ORDER BY pos").fetchall()
                return row[0], arts, prow, qrow

        manifest, articles, prow, qrow = self.cluster.read(load, f"load of version {version}")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"postgres {version}: format version {manifest.get('format_version')} is not "
                              f"{FORMAT_VERSION}; rebuild with `kb build --backend postgres`")
        if model_checksum and manifest.get("model", {}).get("checksum") != model_checksum:
            raise BundleError(f"postgres {version}: built with model checksum "
                              f"{manifest.get('model', {}).get('checksum')!r}, but the loaded model is "
                              f"{model_checksum!r}; rebuild with `kb build --backend postgres`")
        dim = int(manifest["dim"])
        counts = manifest.get("counts", {})
        if len(prow) != counts.get("passages") or len(qrow) != counts.get("questions"):
            raise BundleError(f"postgres {version}: {len(prow)} passages and {len(qrow)} questions, the "
                              f"manifest says {counts.get('passages')} and {counts.get('questions')}")
        vectors = vectors_from_bytes([r[1] for r in prow], dim)
        headings = vectors_from_bytes([r[2] for r in prow], dim)
        qvecs = vectors_from_bytes([r[1] for r in qrow], dim)
        # all rows have one or none (a version published without them, e.g. an evaluation set)
        query_style = vectors_from_bytes([r[3] for r in prow], dim) if prow and prow[0][3] is not None else None
        passages = [r[0] for r in prow]
        sentences = np.frombuffer(b"".join(bytes(r[4]) for r in prow), dtype=np.float16)
        if sentences.size % dim:
            raise BundleError(f"postgres {version}: snippet-sentence vectors are not rows of {dim}")
        sentences = sentences.reshape(-1, dim)
        check_sentences(f"postgres {version}", passages, sentences, dim)
        store = PgVectorStore(self.cluster, version, vectors, self.hnsw)
        return Bundle(version, Path("postgres") / self.name / version, manifest, passages, articles,
                      store, PgLexicalIndex(self.cluster, version), headings, [r[0] for r in qrow], qvecs,
                      query_style, sentences, first_stage=PgFirstStage(self.cluster, version, self.hnsw))


def build(articles_dir: Path | None, index: PgIndex, encoder: Encoder, progress: bool = False,
          articles: list[Article] | None = None, local_cache: Path | None = None) -> BuildReport:
    """`kb build --backend postgres`: kb.index.build's pipeline, published as a new Postgres version.

    ``local_cache``: a file backend's embcache.sqlite to take vectors from before computing them."""
    from .index import EmbeddingCache

    t0 = time.perf_counter()
    index.ensure_schema()
    fallback = EmbeddingCache(local_cache) if local_cache and Path(local_cache).is_file() else None
    cache = ChainedCache(PgEmbeddingCache(index.cluster), fallback)
    try:
        prep = prepare(articles_dir, encoder, cache, progress=progress, articles=articles)
    finally:
        cache.close()
    version, manifest = index.publish(prep, encoder, extra={"build_seconds": round(time.perf_counter() - t0, 3)})
    return BuildReport(version, len(prep.articles), len(prep.passages), prep.computed, prep.reused,
                       time.perf_counter() - t0, manifest["counts"]["languages"])


def prepared_from(articles: list[Article], passages: list[Passage], vectors: np.ndarray,
                  headings: np.ndarray, query_style: np.ndarray | None = None) -> Prepared:
    """A Prepared without questions (evaluation sets and synthetic benchmark passages)."""
    return Prepared(articles, passages, vectors, headings, [], np.zeros((0, vectors.shape[1]), np.float32), 0, 0,
                    query_style)

