"""SQLite helpers shared by the project's stores (analytics, API keys, the embedding cache)."""

from __future__ import annotations

import sqlite3
import time


def enable_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Switch a SQLite file to WAL, retrying while another process holds it (every store of this project).

    The switch takes an exclusive lock and SQLite answers SQLITE_BUSY at once, without its busy handler, when
    another connection is opening the same new file (CI: 1 of 8 processes starting together failed; gunicorn's
    workers opening the key store). Once any process has switched, the mode is stored in the file and this
    returns on the first try."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
