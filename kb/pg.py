"""Postgres connections for the Postgres backend: reads from replicas, writes to the primary.

One :class:`Cluster` per process holds a primary DSN and any number of replica DSNs. Each thread keeps its
own connection per server (gunicorn's gthread workers have a fixed set of threads), like the SQLite store.
A read runs on the next healthy replica; a replica that fails (connection refused or lost, or one that has
not replayed the version a reader asks for yet) is skipped for ``retry_after_s`` and the read moves on to
the next one, then to the primary. A write runs in one transaction on the primary and returns only after
COMMIT, so with synchronous replication (``synchronous_standby_names``) an acknowledged write is on the
standby too. When nothing answers, :class:`Unavailable` carries a message the API turns into a 503.

psycopg is imported lazily: the default FAISS + SQLite service never needs it.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class Unavailable(RuntimeError):
    """No Postgres server could run the request (the API answers 503 with this message)."""


def redact_dsn(dsn: str) -> str:
    """A DSN fit for logs and error messages: any password replaced."""
    import re

    dsn = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn, flags=re.I)


def parse_dsn_list(raw: str) -> list[str]:
    """Replica DSNs from configuration: a JSON list, or one DSN per line (DSNs may hold commas and spaces)."""
    import json

    raw = (raw or "").strip()
    if raw.startswith("["):
        return [str(d) for d in json.loads(raw) if str(d).strip()]
    return [line.strip() for line in raw.splitlines() if line.strip()]


_VECTOR_READY: weakref.WeakSet = weakref.WeakSet()


def with_vector(conn):
    """``conn`` with pgvector's numpy adapters registered (once; the extension may be created after the
    connection was opened, by the first build)."""
    if conn not in _VECTOR_READY:
        from pgvector.psycopg.vector import register_vector_info
        from psycopg.types import TypeInfo

        register_vector_info(conn, TypeInfo.fetch(conn, "vector"))
        _VECTOR_READY.add(conn)
    return conn


def connect(dsn: str, connect_timeout: float = 3.0, autocommit: bool = True):
    import psycopg

    return psycopg.connect(dsn, connect_timeout=max(1, int(connect_timeout)), autocommit=autocommit)


def _retryable(exc: BaseException) -> bool:
    """Errors that say "this server cannot answer now", not "the request is wrong"."""
    import psycopg
    from psycopg import errors

    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return True
    # a replica that has not replayed a new version yet, or a standby asked to write after a failover
    return isinstance(exc, errors.UndefinedTable | errors.InvalidSchemaName | errors.ReadOnlySqlTransaction |
                      errors.AdminShutdown | errors.CannotConnectNow | errors.QueryCanceled)


class Cluster:
    """A primary and its read replicas, with per-thread connections and failover of reads."""

    def __init__(self, primary: str, replicas: Sequence[str] = (), connect_timeout: float = 3.0,
                 statement_timeout_ms: int = 10_000, retry_after_s: float = 5.0):
        if not primary:
            raise ValueError("a Postgres DSN for the primary is required (--dsn / KB_PG_DSN)")
        self.primary = primary
        self.replicas = [r for r in replicas if r]
        self.connect_timeout = connect_timeout
        self.statement_timeout_ms = statement_timeout_ms
        self.retry_after_s = retry_after_s
        self._local = threading.local()
        self._down: dict[str, float] = {}  # dsn -> monotonic time until which it is skipped
        self._rr = itertools.count()
        self._lock = threading.Lock()
        self._all: list[tuple[threading.Thread, Any]] = []  # (owner thread, connection), for close()
        self.setup: list[str] = []  # statements run on every new connection (e.g. SET hnsw.ef_search)

    # ------------------------------------------------------------------ connections

    def _conn(self, dsn: str):
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get(dsn)
        if conn is not None and not conn.closed:
            return conn
        conn = connect(dsn, self.connect_timeout)
        conn.execute(f"SET statement_timeout = {int(self.statement_timeout_ms)}")
        for stmt in self.setup:
            conn.execute(stmt)
        conns[dsn] = conn
        with self._lock:  # close what threads that have ended left open (a thread-per-request server)
            live = []
            for t, c in self._all:
                if t.is_alive():
                    live.append((t, c))
                else:
                    try:
                        c.close()
                    except Exception:
                        pass
            live.append((threading.current_thread(), conn))
            self._all = live
        return conn

    def _drop(self, dsn: str) -> None:
        conn = getattr(self._local, "conns", {}).pop(dsn, None)
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken
                pass

    def _mark_down(self, dsn: str, exc: BaseException) -> None:
        with self._lock:
            self._down[dsn] = time.monotonic() + self.retry_after_s
        log.warning("postgres %s skipped for %.0f s: %s", redact_dsn(dsn), self.retry_after_s,
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)

    def read_order(self) -> list[str]:
        """Healthy replicas (rotating, so threads spread over them), then the primary; servers marked
        down go last rather than never, so a read still succeeds when they come back first."""
        now = time.monotonic()
        reps = self.replicas
        if reps:
            k = next(self._rr) % len(reps)
            reps = reps[k:] + reps[:k]
        order = [d for d in reps if self._down.get(d, 0) <= now]
        order += [self.primary] if self._down.get(self.primary, 0) <= now else []
        order += [d for d in [*reps, self.primary] if d not in order]
        return order

    def close(self) -> None:
        with self._lock:
            conns, self._all = [c for _t, c in self._all], []
        for c in conns:
            try:
                c.close()
            except Exception:
                pass
        self._local = threading.local()

    # ------------------------------------------------------------------ running work

    def read(self, fn: Callable[[Any], T], what: str = "read") -> T:
        """``fn(conn)`` on a replica (or, failing all, the primary); its errors other than "this server
        cannot answer" propagate unchanged."""
        errors: list[str] = []
        for dsn in self.read_order():
            try:
                conn = self._conn(dsn)
                return fn(conn)
            except Exception as e:
                if not _retryable(e):
                    raise
                self._drop(dsn)
                self._mark_down(dsn, e)
                errors.append(f"{redact_dsn(dsn)}: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}")
        raise Unavailable(f"postgres {what} failed on every server ({'; '.join(errors)})")

    def write(self, fn: Callable[[Any], T], what: str = "write", retry: bool = True, transaction: bool = True) -> T:
        """``fn(conn)`` inside one transaction on the primary, committed before this returns.

        ``transaction=False``: for an ``fn`` of ONE statement, which autocommit makes its own transaction,
        committed (with a synchronous standby: on the standby's disk too) before the statement returns, as
        durable as BEGIN + statement + COMMIT at a third of the round trips.

        A write whose connection failed is retried once on a fresh connection (with a multi-host DSN and
        ``target_session_attrs=read-write`` that finds a promoted standby); callers make their writes
        idempotent (rows carry client-made ids, inserted ON CONFLICT DO NOTHING)."""
        last: BaseException | None = None
        for _attempt in range(2 if retry else 1):
            try:
                conn = self._conn(self.primary)
                if not transaction:
                    return fn(conn)
                with conn.transaction():
                    return fn(conn)
            except Exception as e:
                if not _retryable(e):
                    raise
                self._drop(self.primary)
                last = e
        msg = str(last).strip().splitlines()[0] if last is not None and str(last).strip() else repr(last)
        raise Unavailable(f"postgres {what} failed on the primary {redact_dsn(self.primary)}: {msg}")
