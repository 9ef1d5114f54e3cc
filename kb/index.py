"""Index bundles: build, atomically publish, verify and load.

A bundle is one directory (vectors, passage and article metadata, the FTS5 lexical index, a manifest with
checksums). It is written under a temporary name, fsynced, renamed into ``bundles/``, and only then made
current by atomically replacing the ``CURRENT`` pointer file, so a crash mid-build leaves the previous
bundle current. Embeddings are cached by (model checksum, passage-text hash): an edit re-embeds only the
passages it changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .ann import VectorStore, create_store, store_for
from .articles import Article, check_out_of_scope, load_articles
from .domain import MANIFEST_KEY, probe_manifest_entry
from .embedder import QUERY_PREFIX, Encoder, file_sha256
from .lexical import LexicalIndex
from .passages import Passage, snippet_sentences, split_article
from .sqlite import enable_wal

FORMAT_VERSION = 5
FILES = ("vectors.faiss", "headings.npy", "query_style.npy", "passages.jsonl", "articles.json", "lexical.sqlite",
         "questions.jsonl", "questions.npy", "sentences.npy")
KEEP_BUNDLES = 3


class BundleError(RuntimeError):
    """A bundle is missing, incomplete, corrupt or built with another model."""


@dataclass
class BuildReport:
    bundle: str
    articles: int
    passages: int
    computed: int
    reused: int
    seconds: float
    languages: dict[str, int] = field(default_factory=dict)
    timings: dict[str, list[float]] = field(default_factory=dict)  # Prepared.timings
    encoder: str = ""

    def summary(self) -> str:
        langs = ", ".join(f"{k} {v}" for k, v in sorted(self.languages.items()))
        texts, secs = sum(n for n, _ in self.timings.values()), sum(s for _, s in self.timings.values())
        rate = f" in {secs:.1f} s ({texts / secs:.1f} texts/s)" if texts and secs > 0 else ""
        return (f"built {self.bundle}: {self.articles} articles ({langs}), {self.passages} passages, "
                f"embeddings computed {self.computed}{rate} with {self.encoder or 'the encoder'}, "
                f"reused {self.reused}, {self.seconds:.1f} s")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EmbeddingCache:
    """SQLite map (model checksum, text hash) -> vector."""

    def __init__(self, path: Path):
        self.conn = sqlite3.connect(path, timeout=30)
        enable_wal(self.conn, 30)  # builds and test sessions may open one cache together
        self.conn.execute("CREATE TABLE IF NOT EXISTS emb (model TEXT, hash TEXT, vec BLOB, PRIMARY KEY (model, hash))")

    def get_many(self, model: str, hashes: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for i in range(0, len(hashes), 500):
            chunk = hashes[i : i + 500]
            q = f"SELECT hash, vec FROM emb WHERE model=? AND hash IN ({','.join('?' * len(chunk))})"
            for h, blob in self.conn.execute(q, [model, *chunk]):
                found[h] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model: str, items: list[tuple[str, np.ndarray]]) -> None:
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?, ?)",
                                  [(model, h, np.asarray(v, np.float32).tobytes()) for h, v in items])

    def close(self) -> None:
        self.conn.close()


def embed_texts(texts: list[str], encoder: Encoder, cache: EmbeddingCache | None, as_query: bool = False,
                progress: bool = False, batch: int = 512, desc: str = "embedding",
                timings: dict[str, list[float]] | None = None) -> tuple[np.ndarray, int, int]:
    """Vectors for texts, from the cache where possible. Returns (vectors, computed, reused).

    The cache key covers the prefix the text is embedded with, so query- and passage-style vectors of the
    same text never mix. Vectors cached by an equivalent runtime (Encoder.reuse_keys) count as reused. Texts to
    embed go to the encoder in chunks of ``batch`` (each chunk cached as it is done), shortest first, so an
    encoder's own length buckets are full. ``timings[desc]`` accumulates [texts computed, seconds].
    """
    marker = QUERY_PREFIX if as_query else ""  # passage keys predate the marker: keep them valid
    hashes = [hashlib.sha256((marker + t).encode()).hexdigest() for t in texts]
    known = cache.get_many(encoder.cache_key, list(set(hashes))) if cache else {}
    for key in encoder.reuse_keys if cache else ():
        missing = list({h for h in hashes if h not in known})
        if not missing:
            break
        known.update(cache.get_many(key, missing))
    unique: list[int] = []
    pending: set[str] = set()
    for i, h in enumerate(hashes):
        if h not in known and h not in pending:
            pending.add(h)
            unique.append(i)
    t0 = time.perf_counter()
    if unique:
        from tqdm import tqdm

        unique.sort(key=lambda i: len(texts[i]))
        encode = encoder.encode_queries if as_query else encoder.encode_passages
        bar = tqdm(total=len(unique), desc=desc, unit="text", disable=not progress)
        for s in range(0, len(unique), batch):
            idx = unique[s : s + batch]
            vecs = encode([texts[i] for i in idx])
            new = [(hashes[i], v) for i, v in zip(idx, vecs, strict=True)]
            if cache:  # stored per batch: an interrupted run keeps what it embedded
                cache.put_many(encoder.cache_key, new)
            known.update(new)
            bar.update(len(idx))
        bar.close()
    if timings is not None:
        spent = timings.setdefault(desc, [0, 0.0])
        spent[0] += len(unique)
        spent[1] += time.perf_counter() - t0
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    for i, h in enumerate(hashes):
        out[i] = known[h]
    return out, len(unique), len(texts) - len(unique)


def embed_passages(passages: list[Passage], encoder: Encoder, cache: EmbeddingCache | None,
                   progress: bool = False, timings: dict | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """(passage vectors, heading vectors, query-style passage vectors, computed, reused).

    Heading vectors embed "title — heading path" as a query (e5's `query:` on both sides matches short or
    conversational text better); a passage without title or heading gets a zero vector and search then
    uses its passage vector alone. Query-style vectors embed the same text as the passage vector, with
    `query: ` instead of `passage: `: search scores a passage with both (see SearchConfig.query_style_weight).
    """
    texts = [p.embed_text for p in passages]
    vectors, c1, r1 = embed_texts(texts, encoder, cache, progress=progress, desc="passages", timings=timings)
    query_style, c3, r3 = embed_texts(texts, encoder, cache, as_query=True, progress=progress,
                                      desc="passages as queries", timings=timings)
    heads = [p.heading_text for p in passages]
    idx = [i for i, h in enumerate(heads) if h]
    hv, c2, r2 = embed_texts([heads[i] for i in idx], encoder, cache, as_query=True, progress=progress,
                             desc="headings", timings=timings)
    headings = np.zeros_like(vectors)
    if idx:
        headings[idx] = hv
    return vectors, headings, query_style, c1 + c2 + c3, r1 + r2 + r3


def embed_sentences(passages: list[Passage], encoder: Encoder, cache: EmbeddingCache | None,
                    progress: bool = False, timings: dict | None = None) -> tuple[np.ndarray, int, int]:
    """Vectors of every passage's snippet sentences (kb.passages.snippet_sentences), passage by passage.

    A cross-lingual hit shows the passage sentence closest to the query; embedding them here, with
    `passage: ` like the passages, keeps that encoding off the first search that shows the passage.
    """
    texts = [t for p in passages for t in snippet_sentences(p.text)]
    if not texts:
        return np.zeros((0, encoder.dim), dtype=np.float32), 0, 0
    return embed_texts(texts, encoder, cache, progress=progress, desc="snippet sentences", timings=timings)


def passage_docs(passages: list[Passage], sentence_vectors: np.ndarray | None) -> list[dict]:
    """Passages as bundles store them: with their snippet sentences where the build embedded them
    (``sentence_vectors`` rows, passage by passage), else none (evaluation sets, synthetic benchmark passages:
    their snippets are the passage's opening)."""
    docs = [p.to_dict() for p in passages]
    total = 0
    for p, d in zip(passages, docs, strict=True):
        d["sentences"] = snippet_sentences(p.text) if sentence_vectors is not None else []
        total += len(d["sentences"])
    rows = 0 if sentence_vectors is None else len(sentence_vectors)
    if rows != total:
        raise ValueError(f"{total} snippet sentences but {rows} sentence vectors")
    return docs


def sentence_starts(passages: list[dict]) -> np.ndarray:
    """Row of each passage's first snippet-sentence vector; passage i has rows starts[i]:starts[i + 1]."""
    return np.concatenate([[0], np.cumsum([len(p["sentences"]) for p in passages], dtype=np.int64)]).astype(np.int64)


def article_questions(articles: list[Article], out_of_scope: dict[str, list[str]] | None = None) -> list[dict]:
    """One row per editor-written question: the translation group it leads to, its language and text.

    Out-of-scope examples follow with group None: search compares queries with them, never returns them.
    """
    rows = [{"group": a.group, "article_id": a.id, "lang": lang, "text": text}
            for a in articles for lang, texts in sorted(a.questions.items()) for text in texts]
    rows += [{"group": None, "article_id": None, "lang": lang, "text": text}
             for lang, texts in sorted((out_of_scope or {}).items()) for text in texts]
    return rows


def embed_questions(questions: list[dict], encoder: Encoder, cache: EmbeddingCache | None,
                    progress: bool = False, timings: dict | None = None) -> tuple[np.ndarray, int, int]:
    """Questions are embedded as queries: e5 matches a question to a question best with `query:` on both."""
    if not questions:
        return np.zeros((0, encoder.dim), dtype=np.float32), 0, 0
    return embed_texts([q["text"] for q in questions], encoder, cache, as_query=True, progress=progress,
                       desc="questions", timings=timings)


def write_bundle(directory: Path, articles: list[Article], passages: list[Passage], vectors: np.ndarray,
                 headings: np.ndarray, query_style: np.ndarray, encoder: Encoder, store_kind: str = "auto",
                 extra: dict | None = None, questions: list[dict] | None = None,
                 question_vectors: np.ndarray | None = None, sentence_vectors: np.ndarray | None = None) -> dict:
    """Write the bundle files into an existing empty directory and return its manifest.

    ``sentence_vectors``: embed_sentences' rows; None stores no snippet sentences."""
    questions = questions or []
    if question_vectors is None:
        question_vectors = np.zeros((0, encoder.dim), dtype=np.float32)
    if len(question_vectors) != len(questions):
        raise ValueError(f"{len(questions)} questions but {len(question_vectors)} question vectors")
    store_kind = store_for(store_kind, len(passages))
    store = create_store(store_kind, encoder.dim)
    if len(passages):
        store.add(vectors)
    store.save(directory)
    for fname, matrix in (("headings.npy", headings), ("query_style.npy", query_style)):
        if len(matrix) != len(passages):
            raise ValueError(f"{len(passages)} passages but {len(matrix)} rows for {fname}")
        with open(directory / fname, "wb") as f:
            np.save(f, np.ascontiguousarray(matrix, dtype=np.float32).reshape(len(passages), encoder.dim))
    docs = passage_docs(passages, sentence_vectors)
    with open(directory / "passages.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    # float16: only the argmax over a passage's few sentences reads them
    sentences = np.zeros((0, encoder.dim)) if sentence_vectors is None else sentence_vectors
    with open(directory / "sentences.npy", "wb") as f:
        np.save(f, np.ascontiguousarray(sentences, dtype=np.float16).reshape(len(sentences), encoder.dim))
    with open(directory / "questions.npy", "wb") as f:
        np.save(f, np.ascontiguousarray(question_vectors, dtype=np.float32).reshape(len(questions), encoder.dim))
    with open(directory / "questions.jsonl", "w", encoding="utf-8") as f:
        for q in questions:
            f.write(json.dumps(q, ensure_ascii=False) + "\n")
    arts = [dict(a.meta(), body=a.body) for a in articles]
    (directory / "articles.json").write_text(json.dumps(arts, ensure_ascii=False), encoding="utf-8")
    LexicalIndex.build(directory / "lexical.sqlite", [p.embed_text for p in passages], [q["text"] for q in questions])
    langs: dict[str, int] = {}
    for a in articles:
        langs[a.lang] = langs.get(a.lang, 0) + 1
    manifest = {
        "format_version": FORMAT_VERSION,
        # the encoder whose vectors a build computed (cached ones may come from an equivalent runtime,
        # Encoder.reuse_keys); any encoder with the model's checksum may search the bundle
        "model": {"id": encoder.model_id, "checksum": encoder.checksum, "encoder": encoder.kind},
        "dim": encoder.dim,
        "store": store_kind,
        "counts": {"articles": len(articles), "passages": len(passages), "questions": len(questions),
                   "languages": langs},
        "articles": {f"{a.id}.{a.lang}": a.content_hash for a in articles},
        "files": {name: file_sha256(directory / name) for name in FILES},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # fitted here, every build, so serving never fits it (kb.domain)
        MANIFEST_KEY: probe_manifest_entry(questions, question_vectors, encoder.dim),
        **(extra or {}),
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    for name in (*FILES, "manifest.json"):
        with open(directory / name, "rb") as f:
            os.fsync(f.fileno())
    _fsync_dir(directory)
    return manifest


@dataclass
class Prepared:
    """What a build publishes, whatever the backend: articles, passages, questions and their vectors."""

    articles: list[Article]
    passages: list[Passage]
    vectors: np.ndarray
    headings: np.ndarray
    questions: list[dict]
    question_vectors: np.ndarray
    computed: int
    reused: int
    # passages embedded with `query: ` (embed_passages); None: a backend that does not store them yet scores
    # with the passage vectors alone
    query_style: np.ndarray | None = None
    # per kind of text ("passages", "headings", ...): [texts embedded, seconds spent embedding them]
    timings: dict[str, list[float]] = field(default_factory=dict)
    # embed_sentences' rows (cross-lingual snippets); None: the passages' snippets are their openings
    sentence_vectors: np.ndarray | None = None


def prepare(articles_dir: Path | None, encoder: Encoder, cache: EmbeddingCache | None, progress: bool = False,
            articles: list[Article] | None = None) -> Prepared:
    """Split the articles into passages and embed passages, headings and questions (cached)."""
    if articles is None:
        articles = load_articles(Path(articles_dir))
    passages = [p for a in articles for p in split_article(a)]
    timings: dict[str, list[float]] = {}
    vectors, headings, query_style, computed, reused = embed_passages(passages, encoder, cache, progress=progress,
                                                                      timings=timings)
    questions = article_questions(articles, check_out_of_scope(Path(articles_dir))[0] if articles_dir else None)
    qvecs, qc, qr = embed_questions(questions, encoder, cache, progress=progress, timings=timings)
    svecs, sc, sr = embed_sentences(passages, encoder, cache, progress=progress, timings=timings)
    return Prepared(articles, passages, vectors, headings, questions, qvecs, computed + qc + sc, reused + qr + sr,
                    query_style, timings, svecs)


def build(articles_dir: Path, index_dir: Path, encoder: Encoder, store_kind: str = "auto",
          progress: bool = False, articles: list[Article] | None = None) -> BuildReport:
    """Build a bundle from the articles and make it current."""
    t0 = time.perf_counter()
    index_dir = Path(index_dir)
    bundles = index_dir / "bundles"
    bundles.mkdir(parents=True, exist_ok=True)
    cache = EmbeddingCache(index_dir / "embcache.sqlite")
    try:
        prep = prepare(articles_dir, encoder, cache, progress=progress, articles=articles)
    finally:
        cache.close()
    name = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.getpid()}-{int(time.time() * 1e6) % 1000000:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=bundles))
    try:
        manifest = write_bundle(tmp, prep.articles, prep.passages, prep.vectors, prep.headings, prep.query_style,
                                encoder, store_kind,
                                extra={"build_seconds": round(time.perf_counter() - t0, 3),
                                       "embedded": {"computed": prep.computed, "reused": prep.reused}},
                                questions=prep.questions, question_vectors=prep.question_vectors,
                                sentence_vectors=prep.sentence_vectors)
        os.rename(tmp, bundles / name)
        _fsync_dir(bundles)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    set_current(index_dir, name)
    _prune(index_dir, keep=name)
    return BuildReport(name, len(prep.articles), len(prep.passages), prep.computed, prep.reused,
                       time.perf_counter() - t0, manifest["counts"]["languages"], prep.timings, encoder.kind)


def set_current(index_dir: Path, name: str) -> None:
    """Point CURRENT at a bundle with one atomic rename."""
    fd, tmp = tempfile.mkstemp(dir=index_dir, prefix=".CURRENT-")
    with os.fdopen(fd, "w") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, Path(index_dir) / "CURRENT")
    _fsync_dir(Path(index_dir))


def current_name(index_dir: Path) -> str:
    pointer = Path(index_dir) / "CURRENT"
    try:
        return pointer.read_text().strip()
    except FileNotFoundError:
        raise BundleError(f"no index in {index_dir}: run `kb build` first") from None


def _prune(index_dir: Path, keep: str) -> None:
    bundles = Path(index_dir) / "bundles"
    names = sorted(p.name for p in bundles.iterdir() if p.is_dir() and not p.name.startswith("."))
    for old in [n for n in names if n != keep][:-(KEEP_BUNDLES - 1) or None]:
        shutil.rmtree(bundles / old, ignore_errors=True)
    for stale in bundles.glob(".tmp-*"):
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)


def _read(path: Path, reader):
    """One bundle file parsed; whatever its parser raises (faiss, numpy, json, sqlite) becomes a BundleError
    naming the file, so a file that matches its checksum but cannot be read is refused like a corrupt one."""
    try:
        return reader(path)
    except Exception as e:
        detail = (str(e).splitlines() or [""])[-1].replace(str(path), "the file")[:200]
        raise BundleError(f"{path}: unreadable ({type(e).__name__}: {detail}); rebuild with `kb build`") from None


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _lexical(path: Path) -> LexicalIndex:
    lexical = LexicalIndex(path)
    if lexical._db.execute("PRAGMA quick_check").fetchone()[0] != "ok":  # FTS pages are read only when searched
        raise ValueError("database disk image is malformed")
    return lexical


def check_sentences(where: Path | str, passages: list[dict], sentences: np.ndarray, dim: int) -> None:
    """A bundle's sentence vectors must be exactly its passages' snippet sentences (both backends)."""
    want = (int(sentence_starts(passages)[-1]), dim)
    if sentences.shape != want:
        raise BundleError(f"{where}: snippet-sentence vectors of shape {sentences.shape}, expected {want}; "
                          "rebuild with `kb build`")


@dataclass
class Bundle:
    """A verified, loaded bundle: what search reads."""

    name: str
    path: Path
    manifest: dict
    passages: list[dict]
    articles: list[dict]
    store: VectorStore
    lexical: LexicalIndex
    headings: np.ndarray
    questions: list[dict] = field(default_factory=list)
    question_vectors: np.ndarray | None = None
    query_style: np.ndarray | None = None  # passage texts embedded with `query: ` (see embed_passages)
    # the passages' snippet sentences embedded (rows per passage: sentence_starts), float16
    sentence_vectors: np.ndarray | None = None
    # (text, qvec, k, [(table, limit, rowids)]) -> (dense candidates or None, lexical hits per request):
    # a backend across a network answers a search's ANN and lexical legs in one round trip (kb.pgindex);
    # None: kb.search asks the store and the lexical index one by one
    first_stage: Callable | None = None

    @classmethod
    def open(cls, index_dir: Path, model_checksum: str | None = None, name: str | None = None) -> Bundle:
        index_dir = Path(index_dir)
        name = name or current_name(index_dir)
        path = index_dir / "bundles" / name
        mpath = path / "manifest.json"
        if not mpath.is_file():
            raise BundleError(f"{path}: bundle has no manifest.json (incomplete or not a bundle)")
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, ValueError) as e:
            raise BundleError(f"{mpath}: unreadable manifest: {e}") from None
        if manifest.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"{mpath}: format version {manifest.get('format_version')} is not "
                              f"{FORMAT_VERSION}; rebuild with `kb build`")
        if model_checksum and manifest.get("model", {}).get("checksum") != model_checksum:
            raise BundleError(f"{mpath}: built with model checksum {manifest.get('model', {}).get('checksum')!r}, "
                              f"but the loaded model is {model_checksum!r}; rebuild with `kb build`")
        for fname, digest in manifest.get("files", {}).items():
            fpath = path / fname
            if not fpath.is_file():
                raise BundleError(f"{path}: missing {fname}")
            if file_sha256(fpath) != digest:
                raise BundleError(f"{fpath}: checksum mismatch (file changed or corrupt); rebuild with `kb build`")
        if set(manifest.get("files", {})) != set(FILES):
            raise BundleError(f"{mpath}: manifest does not list the bundle files {FILES}")
        store = create_store(manifest["store"], manifest["dim"])
        _read(path / store.filename, lambda _p: store.load(path))
        passages = _read(path / "passages.jsonl", _jsonl)
        articles = _read(path / "articles.json", lambda p: json.loads(p.read_text(encoding="utf-8")))
        if store.count != len(passages):
            raise BundleError(f"{path}: {store.count} vectors but {len(passages)} passages")
        headings, query_style = (_read(path / fname, np.load) for fname in ("headings.npy", "query_style.npy"))
        for fname, matrix in (("headings.npy", headings), ("query_style.npy", query_style)):
            if matrix.shape != (len(passages), manifest["dim"]):
                raise BundleError(f"{path}: {fname} has shape {matrix.shape}, expected {(len(passages), manifest['dim'])}")
        questions = _read(path / "questions.jsonl", _jsonl)
        qvecs = _read(path / "questions.npy", np.load)
        if qvecs.shape != (len(questions), manifest["dim"]):
            raise BundleError(f"{path}: questions.npy has shape {qvecs.shape}, expected {(len(questions), manifest['dim'])}")
        # mapped, not read: a search touches a few rows, and workers share the pages (a 100k-passage KB has ~650k)
        sentences = _read(path / "sentences.npy", lambda p: np.load(p, mmap_mode="r"))
        check_sentences(path, passages, sentences, manifest["dim"])
        lexical = _read(path / "lexical.sqlite", _lexical)
        return cls(name, path, manifest, passages, articles, store, lexical, headings,
                   questions, qvecs, query_style, sentences)


class BundleDir:
    """The default source of bundles for the service: an index directory with ``CURRENT``."""

    def __init__(self, index_dir: Path):
        self.index_dir = Path(index_dir)

    def current(self) -> str:
        return current_name(self.index_dir)

    def open(self, name: str | None = None, model_checksum: str | None = None) -> Bundle:
        return Bundle.open(self.index_dir, model_checksum=model_checksum, name=name)
