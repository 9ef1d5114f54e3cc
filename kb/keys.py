"""API keys for agents and admins, stored as salted SHA-256 hashes (the key itself is shown once)."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from pathlib import Path

from .sqlite import enable_wal

ROLES = ("agent", "admin")


class KeyStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=10)
        enable_wal(self._conn, 10)  # gunicorn's workers open this file at the same moment
        with self._conn:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS api_keys (id TEXT PRIMARY KEY, salt TEXT NOT NULL, hash TEXT NOT NULL,"
                " role TEXT NOT NULL, name TEXT, created TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0)")

    @staticmethod
    def _hash(salt: str, secret: str) -> str:
        return hashlib.sha256((salt + secret).encode()).hexdigest()

    def create(self, role: str, name: str = "") -> str:
        """Return a new key ``kb_<id>_<secret>``; only the hash of the secret is stored."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        key_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(24)
        salt = secrets.token_hex(8)
        with self._lock, self._conn:
            self._conn.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, 0)",
                               (key_id, salt, self._hash(salt, secret), role, name,
                                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
        return f"kb_{key_id}_{secret}"

    def verify(self, key: str) -> tuple[str, str] | None:
        """(key id, role) for a valid, unrevoked key; None otherwise."""
        parts = key.split("_", 2) if key else []
        if len(parts) != 3 or parts[0] != "kb":
            return None
        with self._lock:
            row = self._conn.execute("SELECT salt, hash, role, revoked FROM api_keys WHERE id=?",
                                     (parts[1],)).fetchone()
        if not row or row[3]:
            return None
        if not secrets.compare_digest(self._hash(row[0], parts[2]), row[1]):
            return None
        return parts[1], row[2]

    def revoke(self, key_id: str) -> bool:
        with self._lock, self._conn:
            cur = self._conn.execute("UPDATE api_keys SET revoked=1 WHERE id=? AND revoked=0", (key_id,))
        return cur.rowcount == 1

    def list(self) -> list[dict]:
        with self._lock:
            rows = self._conn.execute("SELECT id, role, name, created, revoked FROM api_keys ORDER BY created").fetchall()
        return [dict(zip(("id", "role", "name", "created", "revoked"), r, strict=True)) for r in rows]
