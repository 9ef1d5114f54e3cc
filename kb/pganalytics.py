"""Search analytics in Postgres: kb.analytics.AnalyticsStore's primitives over the Postgres backend's cluster.

Validation, redaction, every report and the report queries themselves stay in the base class, so both
stores give the same reports. The
tables mirror SQLite's column for column (timestamps as the same fixed-width UTC text, flags as 0/1, JSON as
text), and MIGRATIONS mirrors kb.analytics.MIGRATIONS one for one: a migration added there gets its
Postgres twin here under the same number. Writes go to the primary in one transaction each and return after
COMMIT (with a synchronous standby: after the standby has the WAL); rows carry client-made ids and are
inserted ON CONFLICT DO NOTHING, so a write retried after a lost connection is not counted twice. Reports
read from a replica.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .analytics import (
    EVENT_TABLES,
    TABLES,
    AnalyticsError,
    AnalyticsStore,
    _same_query,
    _same_typing,
    _utc_ts,
)
from .pg import Cluster

SCHEMA_COMPONENT = "analytics"


def _m001_initial(c) -> None:
    c.execute("""CREATE TABLE IF NOT EXISTS searches (
        id text PRIMARY KEY, ts text NOT NULL,
        channel text NOT NULL CHECK (channel IN ('selfservice', 'agent', 'api')),
        session_id text, query_redacted text NOT NULL, lang text,
        filters text NOT NULL DEFAULT '{}', result_ids text NOT NULL DEFAULT '[]', top_confidence double precision,
        no_confident_answer integer NOT NULL DEFAULT 0, zero_results integer NOT NULL DEFAULT 0,
        lang_fallback_only integer NOT NULL DEFAULT 0, latency_ms double precision)""")
    c.execute("""CREATE TABLE IF NOT EXISTS clicks (
        id text PRIMARY KEY, ts text NOT NULL, search_id text, article_id text NOT NULL, rank integer,
        session_id text)""")
    c.execute("""CREATE TABLE IF NOT EXISTS feedback (
        id text PRIMARY KEY, ts text NOT NULL, search_id text, article_id text NOT NULL,
        helpful integer NOT NULL CHECK (helpful IN (0, 1)), comment_redacted text, session_id text)""")
    c.execute("""CREATE TABLE IF NOT EXISTS assist (
        id text PRIMARY KEY, ts text NOT NULL, entities text NOT NULL DEFAULT '{}',
        suggestions text NOT NULL DEFAULT '[]', used text NOT NULL DEFAULT '[]', text_redacted text)""")
    c.execute("""CREATE TABLE IF NOT EXISTS contacts (
        id text PRIMARY KEY, ts text NOT NULL, session_id text, search_id text)""")
    for table in TABLES:
        c.execute(f"CREATE INDEX IF NOT EXISTS {table}_ts ON {table} (ts)")
    for table in ("clicks", "feedback", "contacts"):
        c.execute(f"CREATE INDEX IF NOT EXISTS {table}_search ON {table} (search_id)")
    c.execute("CREATE INDEX IF NOT EXISTS searches_lang_ts ON searches (lang, ts)")


def _m002_channel_key_langs(c) -> None:
    """kb.analytics._m002_channel_key_langs: searches.key_id, answer_lang, result_langs; channel and key_id
    on clicks, feedback and contacts; indexes for channel-filtered reports and refinement."""
    channel = "text CHECK (channel IS NULL OR channel IN ('selfservice', 'agent', 'api'))"
    for column in ("key_id text", "answer_lang text", "result_langs text"):
        c.execute(f"ALTER TABLE searches ADD COLUMN IF NOT EXISTS {column}")
    for table in EVENT_TABLES:
        c.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS channel {channel}")
        c.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS key_id text")
    c.execute("CREATE INDEX IF NOT EXISTS searches_channel_ts ON searches (channel, ts)")
    c.execute("CREATE INDEX IF NOT EXISTS searches_session_ts ON searches (session_id, ts)")


# Append only, in step with kb.analytics.MIGRATIONS (same numbers, same meaning).
MIGRATIONS: list[Callable[[Any], None]] = [_m001_initial, _m002_channel_key_langs]


class PostgresStore(AnalyticsStore):
    """Analytics tables in the Postgres backend's database (writes: primary; reports: replicas)."""

    migrations: list[Callable[[Any], None]] = MIGRATIONS
    placeholder = "%s"

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self._migrated = False
        try:
            self._migrate()
        except Exception as e:  # the primary may be down while a server starts: migrate at the first write
            from .pg import Unavailable

            if not isinstance(e, Unavailable):
                raise

    # ------------------------------------------------------------------ schema

    def schema_version(self) -> int:
        from psycopg import errors

        def read(conn) -> int:
            try:
                row = conn.execute("SELECT MAX(version) FROM schema_version WHERE component = %s",
                                   (SCHEMA_COMPONENT,)).fetchone()
            except errors.UndefinedTable:
                return 0
            return int(row[0] or 0)

        return self.cluster.write(read, "analytics schema read")

    def _migrate(self) -> None:
        """Apply missing migrations; concurrent servers serialise on an advisory lock and re-check inside."""
        target = len(self.migrations)

        def tx(c) -> None:
            c.execute("SELECT pg_advisory_xact_lock(hashtext('kb_analytics:schema'))")
            c.execute("""CREATE TABLE IF NOT EXISTS schema_version (
                component text NOT NULL, version integer NOT NULL, applied_at text NOT NULL,
                PRIMARY KEY (component, version))""")
            current = int(c.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version WHERE component = %s",
                                    (SCHEMA_COMPONENT,)).fetchone()[0])
            if current > target:
                raise AnalyticsError(f"postgres: analytics schema v{current} is newer than this code "
                                     f"(v{target}); upgrade kb")
            for version in range(current + 1, target + 1):
                self.migrations[version - 1](c)
                c.execute("INSERT INTO schema_version (component, version, applied_at) VALUES (%s, %s, %s)",
                          (SCHEMA_COMPONENT, version, _utc_ts()))

        self.cluster.write(tx, "analytics migration", retry=False)
        self._migrated = True

    def _write(self, fn: Callable[[Any], Any], what: str, transaction: bool = True) -> Any:
        if not self._migrated:
            self._migrate()
        return self.cluster.write(fn, what, transaction=transaction)

    # ------------------------------------------------------------------ primitives

    @staticmethod
    def _insert_in(conn, table: str, row: dict) -> None:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        conn.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))}) "
                     "ON CONFLICT (id) DO NOTHING", tuple(row.values()))

    def _insert(self, table: str, row: dict) -> None:
        # one INSERT: its own autocommit transaction, committed before it returns (one round trip)
        self._write(lambda c: self._insert_in(c, table, row), f"analytics write ({table})", transaction=False)

    def _insert_or_refine_search(self, row: dict, since_ts: str, later_page: bool = False) -> str:
        def tx(c) -> str:
            # one session's searches one at a time, like SQLite's BEGIN IMMEDIATE
            c.execute("SELECT pg_advisory_xact_lock(hashtext('kb_search_session:' || %s))", (row["session_id"],))
            prev = c.execute(
                "SELECT id, query_redacted FROM searches WHERE session_id = %s AND channel = %s "
                "AND key_id IS NOT DISTINCT FROM %s AND ts >= %s ORDER BY ts DESC LIMIT 1",
                (row["session_id"], row["channel"], row.get("key_id"), since_ts)).fetchone()
            if prev and later_page and _same_query(prev[1], row["query_redacted"]):
                return prev[0]
            if prev and not later_page and _same_typing(prev[1], row["query_redacted"]) and not any(
                    c.execute(f"SELECT 1 FROM {t} WHERE search_id = %s LIMIT 1", (prev[0],)).fetchone()
                    for t in EVENT_TABLES):
                fields = {k: v for k, v in row.items() if k != "id"}
                c.execute(f"UPDATE searches SET {', '.join(f'{k} = %s' for k in fields)} WHERE id = %s",
                          (*fields.values(), prev[0]))
                return prev[0]
            self._insert_in(c, "searches", row)
            return row["id"]

        return self._write(tx, "analytics write (searches)")

    def _row_exists(self, table: str, row_id: str) -> bool:
        """On the primary, not a replica: a click arrives right after its search, before a replica has it."""
        if table not in ("searches", "assist"):
            raise ValueError(f"unknown table {table!r}")
        return self._write(lambda c: c.execute(f"SELECT 1 FROM {table} WHERE id = %s", (row_id,)).fetchone()
                           is not None, "analytics lookup", transaction=False)

    def _set_assist_used(self, assist_id: str, used_json: str) -> bool:
        return self._write(lambda c: c.execute("UPDATE assist SET used = %s WHERE id = %s",
                                               (used_json, assist_id)).rowcount > 0, "analytics write (assist)",
                           transaction=False)

    def _delete_before(self, cutoff_ts: str) -> dict[str, int]:
        return self._write(lambda c: {t: c.execute(f"DELETE FROM {t} WHERE ts < %s", (cutoff_ts,)).rowcount
                                      for t in TABLES}, "analytics purge")

    def _query(self, sql: str, args) -> list[dict]:
        """The base class's report SELECTs (``%s`` markers), on a replica."""
        from psycopg.rows import dict_row

        def read(conn) -> list[dict]:
            return conn.cursor(row_factory=dict_row).execute(sql, list(args)).fetchall()

        return self.cluster.read(read, "analytics report")

    def close(self) -> None:
        self.cluster.close()
