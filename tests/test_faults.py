"""Faults with real parts: a full or read-only analytics disk (a real ext4 file system on a loop device), a
truncated or corrupt bundle, `kb build` killed at each step of publishing, a missing or broken model cache.

The rule each test checks: search keeps answering from what is loaded, writes that cannot be stored say so
(503 JSON naming the problem), nothing already acknowledged is lost, and every error names what to fix.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from helpers import KBServer

ROOT = Path(__file__).resolve().parent.parent


def _index_copy(built_index: Path, dest: Path) -> Path:
    """A private copy of the session's real-model index (tests here change or break it)."""
    shutil.copytree(built_index, dest, symlinks=True)
    return dest


def _keys(db: Path) -> tuple[str, str]:
    from kb.keys import KeyStore

    store = KeyStore(db)
    try:
        return store.create("admin", "faults"), store.create("agent", "faults")
    finally:
        store._conn.close()  # the test must not hold the file open (the disk is unmounted later)


# ---------------------------------------------------------------------------- analytics disk


def _can_mount_loop() -> str | None:
    """Why a loop-mounted ext4 cannot be used here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root to mount a loop ext4 image"
    if not shutil.which("mkfs.ext4") or not Path("/dev/loop-control").exists():
        return "needs mkfs.ext4 and loop devices"
    return None


class LoopDisk:
    """A small real ext4 file system (errors=remount-ro, as production disks are mounted) on a loop device."""

    def __init__(self, root: Path, size_mb: int = 12):
        self.image, self.mnt = root / "disk.img", root / "disk"
        self.mnt.mkdir()
        with open(self.image, "wb") as f:
            f.truncate(size_mb << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(self.image)], check=True)
        r = subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.mnt)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot loop-mount an ext4 image here: {r.stderr.strip()}")
        self.device = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(self.mnt)], capture_output=True,
                                     text=True, check=True).stdout.strip()

    def fill(self) -> Path:
        """Write a filler file until the file system says ENOSPC."""
        filler = self.mnt / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        block = b"\0" * (64 << 10)
        try:
            while True:
                try:
                    os.write(fd, block)
                except OSError as e:
                    if e.errno != 28:
                        raise
                    if len(block) == 512:
                        break
                    block = block[: len(block) // 2]
            os.fsync(fd)
        finally:
            os.close(fd)
        return filler

    def fail(self) -> None:
        """Make the kernel remount it read-only as after an I/O error (ext4's own test trigger), with the
        server's files still open for writing (a plain `mount -o remount,ro` would refuse: busy)."""
        (Path("/sys/fs/ext4") / Path(self.device).name / "trigger_fs_error").write_text("kb fault test\n")
        opts = subprocess.run(["findmnt", "-n", "-o", "OPTIONS", str(self.mnt)], capture_output=True, text=True,
                              check=True).stdout
        assert "emergency_ro" in opts or opts.startswith("ro,"), opts

    def remount_checked(self) -> None:
        """Unmount, fsck (replaying ext4's journal) and mount read-only: what a restarted host would read."""
        subprocess.run(["umount", str(self.mnt)], check=True)
        subprocess.run(["e2fsck", "-fy", str(self.image)], capture_output=True)
        subprocess.run(["mount", "-o", "loop,ro", str(self.image), str(self.mnt)], check=True)

    def close(self) -> None:
        subprocess.run(["umount", str(self.mnt)], capture_output=True)


def _ids(db: Path, table: str) -> set[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute(f"SELECT id FROM {table}")}
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.skipif(_can_mount_loop() is not None, reason=str(_can_mount_loop()))
def test_full_then_read_only_analytics_disk(built_index, tmp_path):
    """Search answers 200 throughout; feedback/click/contact answer 201 or a 503 naming the problem; every
    acknowledged row is in the file afterwards, also after an fsck and a fresh mount."""
    disk = LoopDisk(tmp_path)
    try:
        _analytics_disk_faults(disk, built_index, tmp_path)
    finally:
        disk.close()


def _analytics_disk_faults(disk: LoopDisk, built_index: Path, tmp_path: Path) -> None:
    db = disk.mnt / "kb.sqlite3"
    index = _index_copy(built_index, tmp_path / "index")
    admin, agent = _keys(db)
    acked: dict[str, set[str]] = {"feedback": set(), "clicks": set(), "contacts": set()}
    refused: dict[str, list[str]] = {}
    server = KBServer(index, db, tmp_path / "server.log", workers=2).start()
    try:
        status, res = server.get("/api/v1/search?q=customs%20duty%20on%20a%20gift")
        assert status == 200 and res["search_id"] and res["results"], res
        sid, article = res["search_id"], res["results"][0]["article_id"]

        def writes(n: int) -> int:
            """n rounds of feedback + click + contact; returns how many were refused (503)."""
            bad = 0
            for i in range(n):
                for table, path, body in (
                        ("feedback", "/api/v1/feedback", {"search_id": sid, "article_id": article,
                                                          "helpful": i % 2 == 0, "comment": f"note {i} " * 20}),
                        ("clicks", "/api/v1/events/click", {"search_id": sid, "article_id": article, "rank": 1}),
                        ("contacts", "/api/v1/events/contact", {"search_id": sid})):
                    status, out = server.post(path, body)
                    if status == 201:
                        acked[table].add(out["id"])
                    else:
                        assert status == 503, (path, status, out)
                        assert out["error"]["code"] == "unavailable", out
                        refused.setdefault(out["error"]["message"], []).append(path)
                        bad += 1
            return bad

        def search_ok(q: str) -> None:
            status, out = server.get(f"/api/v1/search?q={q}")
            assert status == 200 and out["results"], (status, out)
            status, out = server.get(f"/api/v1/articles/{article}")
            assert status == 200, (status, out)
            status, out = server.post("/api/v1/assist", {"text": "my parcel is stuck in customs"}, key=agent)
            assert status in (200, 503), (status, out)  # an assist is logged (its id is what agents vote on)
            assert server.get("/readyz")[0] == 200

        assert writes(10) == 0
        # 1. the disk fills up: writes are refused one by one, each with a 503 naming the full disk
        filler = disk.fill()
        rounds = 0
        while rounds < 400 and not refused:
            writes(5)
            rounds += 5
        assert refused, "no write was refused on a full disk"
        assert any("disk is full" in m for m in refused), refused
        for q in ("refund", "prohibited%20items", "how%20long%20does%20customs%20take"):
            search_ok(q)
        status, out = server.get("/api/v1/analytics/summary", key=admin)  # reports only read
        assert status == 200, (status, out)
        # 2. space comes back: writes work again without a restart
        filler.unlink()
        assert writes(5) == 0
        # 3. the kernel remounts the disk read-only under the running server
        disk.fail()
        refused.clear()
        assert writes(5) == 15
        assert all("cannot be written" in m for m in refused), refused
        for q in ("lithium%20batteries", "duty%20free%20allowance"):
            search_ok(q)
        assert server.get("/api/v1/analytics/summary", key=admin)[0] == 200
    finally:
        server.kill()
        log = server.log()
    assert "Traceback" not in log, log[-4000:]
    for table, ids in acked.items():
        assert ids and ids <= _ids(db, table), table
    disk.remount_checked()
    for table, ids in acked.items():
        assert ids <= _ids(db, table), f"{table}: acknowledged rows lost after fsck and remount"


def test_store_full_is_store_unavailable_and_keeps_rows(tmp_path):
    """Without root: SQLite's own page limit fills the file; the store raises StoreUnavailable naming the
    full disk, keeps every committed row and takes writes again when there is room."""
    from kb.analytics import SQLiteStore, StoreUnavailable

    store = SQLiteStore(tmp_path / "kb.sqlite3")
    conn = store._conn()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 4}")
    stored, error = [], None
    for i in range(2000):
        try:
            stored.append(store.record_feedback("an-article", True, comment=f"comment {i} " * 150))
        except StoreUnavailable as e:
            error = str(e)
            break
    assert error and "disk is full" in error and stored, error
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert set(stored) <= {r["id"] for r in store._query("SELECT id FROM feedback", [])}
    conn.execute(f"PRAGMA max_page_count = {pages + 1000}")
    stored.append(store.record_feedback("an-article", False))
    store.close()
    assert set(stored) <= _ids(tmp_path / "kb.sqlite3", "feedback")
