"""Flask service for the courier knowledge base: JSON API under /api/v1 plus the pages.

All retrieval logic lives in `kb`; this package only speaks HTTP. No FAISS import here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask, g, request

from kb.analytics import SQLiteStore
from kb.keys import KeyStore
from kb.search import SearchConfig
from kb.service import KBService

from . import errors
from .config import load_config

log = logging.getLogger(__name__)


def create_app(config: dict | None = None, service: KBService | None = None) -> Flask:
    """Application factory. ``config`` overrides defaults/file/env; ``service`` lets tests share a model."""
    cfg = load_config(**(config or {}))
    app = Flask(__name__)
    app.config.update(cfg)
    app.config["MAX_CONTENT_LENGTH"] = cfg["MAX_BODY_BYTES"]
    app.json.ensure_ascii = False
    app.json.sort_keys = False

    Path(cfg["DB_PATH"]).parent.mkdir(parents=True, exist_ok=True)
    app.extensions["kb_keys"] = KeyStore(Path(cfg["DB_PATH"]))
    source, watch = None, float(cfg["WATCH_INTERVAL"])
    if cfg["BACKEND"] == "postgres":
        from kb.pg import Cluster
        from kb.pganalytics import PostgresStore
        from kb.pgindex import PgIndex

        cluster = Cluster(cfg["PG_DSN"], cfg["PG_REPLICAS"])
        app.extensions["kb_analytics"] = PostgresStore(cluster)
        source = PgIndex(cluster)
        watch = watch or 5.0  # many servers share one database: each follows its pointer row
    elif cfg["BACKEND"] == "files":
        app.extensions["kb_analytics"] = SQLiteStore(Path(cfg["DB_PATH"]))
    else:
        raise ValueError(f"unknown backend {cfg['BACKEND']!r}: files or postgres")
    if service is None:
        service = KBService(Path(cfg["INDEX_DIR"]), config=SearchConfig(stale_days=cfg["STALE_DAYS"],
                                                                       relevance_floor=float(cfg["RELEVANCE_FLOOR"])),
                            encoder_kind=cfg["ENCODER"], query_cache=cfg["QUERY_CACHE"], source=source)
    app.extensions["kb_service"] = service
    if cfg["LOAD_INDEX"] and not service.ready:
        try:
            service.load()
        except Exception as e:  # serve /healthz and a clear /readyz until an index exists
            log.error("index not loaded: %s", e)
    service.watch(watch)

    errors.install(app)
    from .api import bp as api_bp
    from .api import limiter, warm_validation
    from .pages import bp as pages_bp

    warm_validation()
    limiter.init_app(app)
    app.register_blueprint(api_bp)
    app.register_blueprint(pages_bp)

    @app.after_request
    def _headers(resp):
        ancestors = " ".join(cfg["FRAME_ANCESTORS"]) or "'none'"
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
            f"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors {ancestors}")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
        origin = request.headers.get("Origin")
        if origin and origin in cfg["CORS_ORIGINS"]:
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Vary"] = "Origin"
            resp.headers["Access-Control-Allow-Headers"] = "Content-Type, X-API-Key, X-KB-Session, X-KB-Channel"
            resp.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        return resp

    @app.before_request
    def _role():
        from .api import caller_role

        try:  # werkzeug decodes raw query bytes strictly: a stray 0xff would be a 500 at request.args
            request.query_string.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.APIError(400, "bad_request", "the query string is not valid UTF-8") from None
        g.role, g.key_id = caller_role()

    return app
