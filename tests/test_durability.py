"""Acknowledged writes survive a SIGKILL of the server: 201 is sent only after the row is committed, and a
search's 200 only after its log row is (the search log commits without an fsync: kb.analytics.SQLiteStore._write)."""

from __future__ import annotations

import http.client
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
from helpers import KBServer

ACKED = 200
CLIENTS = 4


QUERY = "how do I claim for a damaged parcel"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["feedback", "searches"])
def test_acknowledged_writes_survive_sigkill_of_the_process_group(built_index, tmp_path: Path, kind: str):
    """`kb serve` as production runs it (gunicorn master + 2 gthread workers x 4 threads, the real model and
    index); 4 clients post feedback (or search: each search's id is its log row's); once 200 are acknowledged
    the whole process group is SIGKILLed while the clients are still sending. Every acknowledged id must be in
    the SQLite file, which must be intact."""
    index = tmp_path / "index"
    shutil.copytree(built_index, index)
    db = tmp_path / "kb.sqlite3"
    server = KBServer(index, db, tmp_path / "server.log", workers=2, threads=4).start()
    acked: list[str] = []
    refused: list[tuple[int, object]] = []
    lock = threading.Lock()
    enough = threading.Event()
    try:
        status, res = server.get("/api/v1/search?q=" + QUERY.replace(" ", "%20"))
        assert status == 200 and res["results"], res
        sid, article = res["search_id"], res["results"][0]["article_id"]

        def client(k: int) -> None:
            n = 0
            while True:  # keeps sending after the 200th ack, so writes are in flight when the kill lands
                body = {"search_id": sid, "article_id": article, "helpful": n % 2 == 0,
                        "comment": f"client {k} write {n}"}
                n += 1
                try:
                    if kind == "feedback":
                        status, out = server.request("POST", "/api/v1/feedback", body, timeout=10)
                    else:
                        status, out = server.request("GET", "/api/v1/search?q=" + QUERY.replace(" ", "%20"),
                                                     timeout=10)
                except (OSError, http.client.HTTPException):  # the server is gone (also mid-response: IncompleteRead):
                    # only what was acknowledged in full counts
                    return
                with lock:
                    if status == (201 if kind == "feedback" else 200):
                        acked.append(out["id"] if kind == "feedback" else out["search_id"])
                        if len(acked) >= ACKED:
                            enough.set()
                    else:
                        refused.append((status, out))
                        enough.set()
                        return

        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(CLIENTS)]
        for t in threads:
            t.start()
        assert enough.wait(120), f"only {len(acked)} writes acknowledged"
    finally:
        server.kill()  # master and workers at once: no shutdown hook, no flush
    for t in threads:
        t.join(timeout=30)
    assert not refused, refused[:3]
    assert len(acked) >= ACKED and len(set(acked)) == len(acked)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = {r[0] for r in conn.execute(f"SELECT id FROM {kind}")}
    finally:
        conn.close()
    lost = set(acked) - rows
    print(f"durability ({kind}): {len(acked)} acknowledged, {len(rows)} rows in the file, {len(lost)} lost")
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged writes lost"
