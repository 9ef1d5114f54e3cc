"""Acknowledged writes survive a SIGKILL of the server: 201 is sent only after the row is committed."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import write_article

from kb.embedder import HashEncoder
from kb.index import build


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_acknowledged_writes_survive_sigkill(tmp_path: Path):
    for i in range(3):
        write_article(tmp_path / "articles", f"durable-{i}", f"Durable article {i}", f"Claims and refunds text number {i}.",
                      topic="claims")
    build(tmp_path / "articles", tmp_path / "index", HashEncoder())
    db = tmp_path / "kb.sqlite3"
    port = _free_port()
    env = dict(os.environ, KB_INDEX_DIR=str(tmp_path / "index"), KB_DB_PATH=str(db), KB_ENCODER="hash",
               KB_RATE_LIMIT="100000/minute", KB_QUERY_CACHE="0")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1", "--threads", "4",
         "--bind", f"127.0.0.1:{port}", "search_api.wsgi:app"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            assert time.time() < deadline, "server did not start"
            time.sleep(0.3)
        acked = []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/v1/search?q=claims")  # feedback must cite a search the service issued
        sid = json.loads(conn.getresponse().read())["search_id"]
        for n in range(60):
            body = {"search_id": sid, "article_id": f"durable-{n % 3}", "helpful": n % 2 == 0,
                    "comment": f"write {n}"}
            conn.request("POST", "/api/v1/feedback", json.dumps(body), {"Content-Type": "application/json"})
            r = conn.getresponse()
            payload = json.loads(r.read())
            assert r.status == 201, payload
            acked.append(payload["id"])
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # no shutdown hooks, no flush: what was acknowledged must be there
        server.wait(timeout=10)
    rows = {r[0] for r in sqlite3.connect(db).execute("SELECT id FROM feedback")}
    assert set(acked) <= rows and len(acked) == 60
