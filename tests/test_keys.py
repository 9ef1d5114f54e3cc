"""API keys: the store, what it keeps on disk, and the `kb keys` command against a running app."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_article

from kb.keys import KeyStore

ROOT = Path(__file__).resolve().parent.parent


def _db_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def test_create_verify_revoke(tmp_path):
    store = KeyStore(tmp_path / "keys.sqlite3")
    agent = store.create("agent", "alice")
    admin = store.create("admin")
    prefix, key_id, secret = agent.split("_", 2)
    assert prefix == "kb" and len(key_id) == 8 and len(secret) >= 24
    assert store.verify(agent) == (key_id, "agent")
    assert store.verify(admin) == (admin.split("_", 2)[1], "admin")
    # wrong secret, wrong id, malformed
    other = "y" if secret.endswith("x") else "x"  # a secret that differs in its last character
    for bad in (f"kb_{key_id}_{secret[:-1]}{other}", f"kb_{key_id}_", f"kb_ffffffff_{secret}", f"xx_{key_id}_{secret}",
                "", "kb", "kb__", secret, agent + "x", f"kb_{key_id}"):
        assert store.verify(bad) is None, bad
    listed = {k["id"]: k for k in store.list()}
    assert listed[key_id] == {**listed[key_id], "role": "agent", "name": "alice", "revoked": 0}
    assert store.revoke(key_id) is True
    assert store.verify(agent) is None
    assert store.revoke(key_id) is False  # already revoked
    assert store.revoke("nope") is False
    assert store.verify(admin) is not None  # other keys unaffected
    assert {k["id"]: k["revoked"] for k in store.list()}[key_id] == 1
    with pytest.raises(ValueError):
        store.create("root")


def test_keys_survive_reopen(tmp_path):
    db = tmp_path / "keys.sqlite3"
    key = KeyStore(db).create("agent")
    assert KeyStore(db).verify(key) is not None


def test_no_plaintext_secret_stored(tmp_path):
    db = tmp_path / "keys.sqlite3"
    store = KeyStore(db)
    keys = [store.create(role, "n") for role in ("agent", "admin", "agent")]
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT * FROM api_keys").fetchall()
    conn.close()
    assert len(rows) == 3
    raw = _db_bytes(db)
    for key in keys:
        secret = key.split("_", 2)[2]
        for row in rows:
            assert all(secret not in str(v) for v in row)
            assert all(key not in str(v) for v in row)
        assert secret.encode() not in raw and key.encode() not in raw
    # salted: the same secret would not give the same hash under two keys
    assert len({r[2] for r in rows}) == 3 and len({r[1] for r in rows}) == 3


# ---------------------------------------------------------------------------- the CLI against the app



def _kb(*args: str) -> subprocess.CompletedProcess:
    """The `kb` console script of this environment (``python -m kb.cli`` where it is not installed)."""
    script = Path(sys.executable).with_name("kb")
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "kb.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)


@pytest.fixture()
def tiny_app(tmp_path):
    from kb.embedder import HashEncoder
    from kb.index import build
    from kb.search import SearchConfig
    from kb.service import KBService
    from search_api import create_app

    arts = tmp_path / "articles"
    for aid, title, topic, audience in (("track-a-parcel", "Track a parcel", "tracking", "public"),
                                        ("refund-limits", "Refund limits for agents", "support-procedures",
                                         "internal")):
        write_article(arts, aid, title, f"{title}: the waybill number is on the label, refunds up to USD 50. " * 3,
                      topic=topic, audience=audience)
    build(arts, tmp_path / "index", HashEncoder())
    db = tmp_path / "var" / "kb.sqlite3"
    app = create_app({"INDEX_DIR": str(tmp_path / "index"), "DB_PATH": str(db), "ENCODER": "hash",
                      "RATE_LIMIT": "10000/minute"}, service=KBService(tmp_path / "index", encoder=HashEncoder(),
                                                         config=SearchConfig(relevance_floor=0.0)))
    return app, db


def test_cli_create_then_revoke_against_app(tiny_app):
    app, db = tiny_app
    client = app.test_client()
    created = _kb("keys", "create", "--role", "agent", "--name", "cli test", "--db", str(db))
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("kb_") and len(key.splitlines()) == 1
    assert "shown once" in created.stderr
    key_id = key.split("_", 2)[1]

    hdr = {"X-API-Key": key}
    resp = client.post("/api/v1/assist", json={"text": "Customer wants a refund of USD 40, can I approve it?"},
                       headers=hdr)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert any(s["article_id"] == "refund-limits" for s in resp.get_json()["suggestions"])
    search = client.get("/api/v1/search", query_string={"q": "refund limits"}, headers=hdr).get_json()
    assert "refund-limits" in [r["article_id"] for r in search["results"]]
    assert client.get("/api/v1/analytics/summary", headers=hdr).status_code == 403  # agent, not admin

    listed = _kb("keys", "list", "--db", str(db))
    assert listed.returncode == 0 and key_id in listed.stdout and "active" in listed.stdout
    assert key.split("_", 2)[2] not in listed.stdout

    revoked = _kb("keys", "revoke", key_id, "--db", str(db))
    assert revoked.returncode == 0, revoked.stderr
    # the running app sees the revocation at once (the key is checked on every request)
    resp = client.post("/api/v1/assist", json={"text": "refund"}, headers=hdr)
    assert resp.status_code == 401
    assert resp.get_json()["error"]["field"] == "X-API-Key"
    assert client.get("/api/v1/search", query_string={"q": "refund"}, headers=hdr).status_code == 401
    assert "revoked" in _kb("keys", "list", "--db", str(db)).stdout

    again = _kb("keys", "revoke", key_id, "--db", str(db))
    assert again.returncode == 1 and "no active key" in again.stderr


def test_cli_admin_key(tiny_app):
    app, db = tiny_app
    created = _kb("keys", "create", "--role", "admin", "--db", str(db))
    assert created.returncode == 0, created.stderr
    admin = {"X-API-Key": created.stdout.strip()}
    assert app.test_client().get("/api/v1/analytics/summary", headers=admin).status_code == 200
    bad = _kb("keys", "create", "--role", "root", "--db", str(db))
    assert bad.returncode != 0


def _open_and_create(db: str, barrier) -> None:
    barrier.wait()  # every process opens the new file at once, as gunicorn's workers do
    KeyStore(Path(db)).create("agent", "w")


def test_workers_opening_a_new_key_file_together_all_start(tmp_path):
    """gunicorn's workers create the app at the same moment; switching a new key file to WAL answered
    SQLITE_BUSY to one of them (CI: "Worker failed to boot"). Five rounds of 8 processes on fresh files."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    for r in range(5):
        db = tmp_path / f"keys-{r}.sqlite3"
        barrier = ctx.Barrier(8)
        procs = [ctx.Process(target=_open_and_create, args=(str(db), barrier)) for _ in range(8)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 8, r
        with sqlite3.connect(db) as c:
            assert c.execute("SELECT COUNT(*) FROM api_keys").fetchone()[0] == 8
            assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
