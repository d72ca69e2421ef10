"""The disk tier holds its limit on the whole folder: database, WAL and WAL index.

Guarantee (``_limits``): cache.db + -wal + -shm <= max(max_size_mb, 0.5 MiB) + 64 KiB during
a run, after close() and after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from claude_force.cache import ResponseCache, _disk, _evict, _sqlite
from claude_force.cache._disk import DiskTier
from claude_force.cache._limits import PAGE_SIZE, SLACK, DiskLimits
from claude_force.cache._wal import WalKeeper

from ._cache_support import key

SECRET = "limits-test-secret-0123456789abcdef"
MIB = 1024 * 1024


def folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.iterdir():
        if path.name.startswith("cache.db"):
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                continue  # the last connection to close deleted the WAL meanwhile
    return total


def text(rng: random.Random, size: int) -> str:
    # Letters and spaces: compresses like prose, so large values are stored compressed.
    return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz     ", k=size))


@pytest.mark.parametrize("limit", [1, 16, 100, 0.004, 3.5])
def test_the_budgets_add_up_to_the_stated_bound(limit: float) -> None:
    limits = DiskLimits.for_limit(int(limit * MIB))
    # Database (with one transaction's overshoot) + WAL + WAL index, within the bound.
    used = limits.file_bytes + limits.wal_bytes // 2 + limits.wal_bytes + limits.shm_bytes
    assert used + SLACK <= limits.folder_bytes == max(int(limit * MIB), MIB // 2) + SLACK
    assert limits.file_bytes > 0 and limits.max_entry_bytes <= limits.wal_bytes // 4


@pytest.mark.parametrize("limit", [0.004, 1, 16, 100, 200, 1000])
def test_the_wal_index_budget_holds_a_wal_one_transaction_past_its_budget(limit: float) -> None:
    limits = DiskLimits.for_limit(int(limit * MIB))
    frames = limits.wal_bytes * 3 // 2 // (PAGE_SIZE + 24)
    # The index's first 32 KiB holds 4062 frames, each further 32 KiB 4096.
    held = 4062 + 4096 * (limits.shm_bytes // (32 * 1024) - 1)
    assert frames <= held


def test_2kb_sets_fill_an_eighth_of_the_limit_before_the_wal_starts_over(tmp_path: Path) -> None:
    # Each time the WAL starts over, a writer waits for the checkpoint's last pass (two
    # fsyncs), so its budget sets how many sets in a hundred wait: a 2 KB set writes about
    # eight pages to it, and a sixteenth of 100 MiB started over every 120 sets or so.
    rng = random.Random(5)
    with ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, memory_max_mb=0) as cache:
        disk = cache._disk
        assert disk is not None
        disk._worker.close()  # no checkpoint: the WAL only grows
        n = 0
        while disk._wal.size() < disk.limits.checkpoint_at:
            cache.set(key(n), {"t": text(rng, 2000)})
            n += 1
    assert n >= 200


@pytest.mark.parametrize(("size", "count"), [(2000, 800), (150, 3000), (12_000, 150)])
def test_a_1mb_cache_holds_its_limit_while_filled_and_after_close(
    tmp_path: Path, size: int, count: int
) -> None:
    rng = random.Random(size)
    bound = DiskLimits.for_limit(MIB).folder_bytes
    samples = []
    with ResponseCache(
        cache_dir=tmp_path, cache_secret=SECRET, max_size_mb=1, memory_max_mb=0
    ) as cache:
        for n in range(count):
            cache.set(key(n), {"n": n, "text": text(rng, size)})
            if n % 20 == 0:
                samples.append(folder_bytes(tmp_path))
        stats = cache.get_stats()
    assert stats["evictions"] > 0 and stats["errors"] == 0
    assert max(samples) <= bound, (max(samples), bound)
    assert folder_bytes(tmp_path) <= bound
    assert not (tmp_path / "cache.db-wal").exists()  # close() checkpointed it away


def test_evicting_large_entries_holds_the_limit_at_every_commit(tmp_path: Path) -> None:
    # Entries of several overflow pages: where SQLite zeroes freed pages (Debian's build
    # does by default), each eviction wrote them to the WAL again, past its budget.
    rng = random.Random(23)
    bound = DiskLimits.for_limit(MIB).folder_bytes
    peak = 0
    with ResponseCache(
        cache_dir=tmp_path, cache_secret=SECRET, max_size_mb=1, memory_max_mb=0
    ) as cache:
        for n in range(120):
            cache.set(key(n), {"n": n, "text": text(rng, 23_000)})
            peak = max(peak, folder_bytes(tmp_path))
        stats = cache.get_stats()
    assert stats["evictions"] > 0 and stats["errors"] == 0
    assert peak <= bound, (peak, bound)


def test_a_second_cache_on_the_folder_leaves_the_file_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Closing any descriptor of cache.db drops every POSIX lock this process holds on it,
    # SQLite's locks of the cache already open included: the file is opened only to create it.
    first = ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, memory_max_mb=0)
    first.set(key(1), {"n": 1})
    opened: list[str] = []
    real_open = os.open

    def watching(path: Any, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, *args, **kwargs)
        opened.append(os.fspath(path))  # only what was opened: O_EXCL on it fails
        return fd

    monkeypatch.setattr(os, "open", watching)
    second = ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, memory_max_mb=0)
    second.set(key(2), {"n": 2})
    monkeypatch.undo()
    assert not [p for p in opened if p.endswith("cache.db")], opened
    assert first.get(key(2)) is not None and second.get(key(1)) is not None
    second.close()
    first.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() only")
@pytest.mark.parametrize("lock", ["checkpoint", "_write_lock", "_read_lock", "_state"])
def test_a_child_forked_during_a_checkpoint_can_write_and_close(tmp_path: Path, lock: str) -> None:
    cache = ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, max_size_mb=1, memory_max_mb=0)
    cache.set(key(0), {"n": 0})
    tier = cache._disk
    assert tier is not None
    # The background thread holds the checkpoint lock and, for its last pass, the write lock;
    # lookups and queued writes take the read and state locks.
    held = tier._wal._checkpoint_lock() if lock == "checkpoint" else getattr(tier, lock)
    taken, done = threading.Event(), threading.Event()

    def background() -> None:  # as the tier's background thread does while it checkpoints
        with held:
            taken.set()
            done.wait()

    thread = threading.Thread(target=background)
    thread.start()
    taken.wait()
    try:
        pid = os.fork()
        if pid == 0:  # the child: no thread of its own holds that lock, nor ever will
            # A hang fails the test instead of stalling it: the alarm kills the child (the
            # default action; pytest-timeout's inherited handler would raise into ``finally``).
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(30)
            try:
                rng = random.Random(5)
                for n in range(1, 200):
                    cache.set(key(n), {"n": n, "text": text(rng, 3000)})
                cache.close()
            finally:
                os._exit(0 if cache.get_stats()["errors"] == 0 else 3)
        _, status = os.waitpid(pid, 0)
    finally:
        done.set()
        thread.join()
    cache.close()
    assert os.waitstatus_to_exitcode(status) == 0


async def test_aset_holds_the_limit_too(tmp_path: Path) -> None:
    rng = random.Random(3)
    bound = DiskLimits.for_limit(MIB).folder_bytes
    samples = []
    cache = ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, max_size_mb=1, memory_max_mb=0)
    for n in range(1000):
        await cache.aset(key(n), {"n": n, "text": text(rng, 2000)})
        if n % 100 == 0:
            await cache.aflush()
            samples.append(folder_bytes(tmp_path))
    await cache.aclose()
    assert max(samples) <= bound
    assert folder_bytes(tmp_path) <= bound
    assert cache.get_stats()["errors"] == 0


WRITER = """
import hashlib, random, sys, types
package = types.ModuleType("claude_force")
package.__path__ = [{package!r}]
sys.modules["claude_force"] = package
from claude_force.cache import ResponseCache
rng = random.Random(1)
cache = ResponseCache(cache_dir=sys.argv[1], cache_secret={secret!r}, max_size_mb=1,
                      memory_max_mb=0)
for n in range(1_000_000):
    value = "".join(rng.choices("abcdefghij     ", k=2000))
    cache.set(hashlib.sha256(str(n).encode()).hexdigest(), {{"v": value}})
    if n == 600:
        print("filled", flush=True)
"""


SETTER = """
import hashlib, json, random, sys, types
package = types.ModuleType("claude_force")
package.__path__ = [{package!r}]
sys.modules["claude_force"] = package
from claude_force.cache import ResponseCache
tag = sys.argv[2]
rng = random.Random(tag)
with ResponseCache(cache_dir=sys.argv[1], cache_secret={secret!r}, max_size_mb=1,
                   memory_max_mb=0) as cache:
    for n in range(int(sys.argv[3])):
        cache.set(hashlib.sha256(f"{{tag}}-{{n}}".encode()).hexdigest(),
                  {{"v": "".join(rng.choices("abcdefghij", k=1200))}})
        if n % 50 == 0:
            cache.get(hashlib.sha256(f"{{tag}}-{{n // 2}}".encode()).hexdigest())
    print(json.dumps(cache.get_stats()))
"""


@pytest.mark.parametrize("writers", [2, 4])
def test_several_writer_processes_hold_the_limit_together(tmp_path: Path, writers: int) -> None:
    # SQLite's own checkpoints never catch up while other processes keep writing, so
    # without the writers' truncating checkpoints the WAL grows without bound.
    package = str(Path(__file__).resolve().parent.parent / "claude_force")
    script = SETTER.format(package=package, secret=SECRET)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), f"w{n}", str(4000 // writers)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(writers)
    ]
    samples = []
    for child in children:
        while True:
            samples.append(folder_bytes(tmp_path))
            try:
                child.wait(timeout=0.005)  # also paces the sampling
                break
            except subprocess.TimeoutExpired:
                continue
    outputs = [child.communicate()[0] for child in children]
    assert [child.returncode for child in children] == [0] * writers
    stats = [json.loads(out) for out in outputs]
    assert all(s["errors"] == 0 for s in stats), stats
    assert sum(s["evictions"] for s in stats) > 0
    bound = DiskLimits.for_limit(MIB).folder_bytes
    assert len(samples) > 20
    assert max(samples) <= bound, (max(samples), bound)
    assert folder_bytes(tmp_path) <= bound


def test_a_sigkilled_writer_leaves_the_folder_within_bound_and_reopen_reclaims(
    tmp_path: Path,
) -> None:
    package = str(Path(__file__).resolve().parent.parent / "claude_force")
    script = WRITER.format(package=package, secret=SECRET)
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "filled\n"  # mid-run: the WAL is in use
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()
    bound = DiskLimits.for_limit(MIB).folder_bytes
    assert folder_bytes(tmp_path) <= bound
    with ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, max_size_mb=1) as cache:
        assert cache.verify()["bad"] == 0
        assert folder_bytes(tmp_path) <= bound
    assert not (tmp_path / "cache.db-wal").exists()


def test_a_huge_leftover_wal_is_truncated_on_open(tmp_path: Path) -> None:
    with ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, max_size_mb=1) as cache:
        cache.set(key(1), {"a": 1})
    # What an older version, or a writer starved of checkpoints, left behind at a crash:
    # a child writes 4 MiB into the WAL with checkpoints off, then kills itself.
    code = (
        "import os, signal, sqlite3, sys\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "db.execute('PRAGMA wal_autocheckpoint=0')\n"
        "db.execute('CREATE TABLE IF NOT EXISTS junk (b BLOB)')\n"
        "for _ in range(1000): db.execute('INSERT INTO junk VALUES (randomblob(4000))')\n"
        "db.execute('DROP TABLE junk')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "cache.db")], check=False)
    assert (tmp_path / "cache.db-wal").stat().st_size > 4 * MIB
    limits = DiskLimits.for_limit(MIB)
    with ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, max_size_mb=1) as cache:
        assert (tmp_path / "cache.db-wal").stat().st_size <= limits.journal_limit
        hit = cache.get(key(1))
        assert hit is not None and hit.value == {"a": 1}


def test_a_lower_limit_shrinks_the_folder_on_open(tmp_path: Path) -> None:
    rng = random.Random(5)
    with ResponseCache(
        cache_dir=tmp_path, cache_secret=SECRET, max_size_mb=4, memory_max_mb=0
    ) as cache:
        cache.warm((key(n), {"t": text(rng, 3000)}) for n in range(1500))
    assert folder_bytes(tmp_path) > 3 * MIB
    with ResponseCache(
        cache_dir=tmp_path, cache_secret=SECRET, max_size_mb=1, memory_max_mb=0
    ) as cache:
        assert folder_bytes(tmp_path) <= DiskLimits.for_limit(MIB).folder_bytes
        assert 0 < cache.get_stats()["size_bytes"] <= MIB
    with sqlite3.connect(tmp_path / "cache.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()


def fill(folder: Path, *, mb: float, entries: int, size: int, seed: int) -> None:
    """A cache written under ``mb``: ``entries`` values of ``size`` random bytes (as hex,
    which does not compress), each also numbered."""
    rng = random.Random(seed)
    with ResponseCache(
        cache_dir=folder, cache_secret=SECRET, max_size_mb=mb, memory_max_mb=0
    ) as cache:
        cache.warm((key(n), {"t": rng.randbytes(size).hex(), "n": n}) for n in range(entries))


@pytest.mark.parametrize(("written", "entries", "size"), [(24, 11_000, 900), (64, 20_000, 0)])
def test_a_lower_limit_never_grows_the_folder_while_it_shrinks_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: int, entries: int, size: int
) -> None:
    # In one transaction, the rows evicted and the pages vacuum moved all went to the WAL
    # before a checkpoint: 300 MB lowered to 20 MB took a 215 MB WAL beside the old file,
    # and a WAL index (-shm) of 416 KiB, kept until the next reopen. Over 16 MB of WAL
    # (4,062 frames) the index grows past its first 32 KiB. Small entries: each evicted
    # row also changes a page of the key index (steps counted in bytes of rows overran).
    fill(tmp_path, mb=written, entries=entries, size=size, seed=6)
    before = folder_bytes(tmp_path)
    assert before > 2 * MIB
    seen: list[int] = []  # the folder as each checkpoint begins: the WAL at its largest
    real = WalKeeper.truncate

    def truncate(keeper: WalKeeper, conn: sqlite3.Connection, mode: str = "TRUNCATE") -> bool:
        seen.append(folder_bytes(tmp_path))
        return real(keeper, conn, mode)

    monkeypatch.setattr(WalKeeper, "truncate", truncate)
    with ResponseCache(
        cache_dir=tmp_path, cache_secret=SECRET, max_size_mb=1, memory_max_mb=0
    ) as cache:
        assert 0 < cache.get_stats()["size_bytes"] <= MIB
        assert folder_bytes(tmp_path) <= DiskLimits.for_limit(MIB).folder_bytes  # -shm too
    assert len(seen) > 2 and folder_bytes(tmp_path) <= DiskLimits.for_limit(MIB).folder_bytes
    limits = DiskLimits.for_limit(MIB)  # a WAL budget, and a step's overshoot as any write's
    assert max(seen) <= before + limits.wal_bytes * 3 // 2 + limits.shm_bytes


def test_a_lower_limit_with_another_process_reading_waits_one_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reader keeps the WAL from starting over: each step's checkpoint waited a busy
    # timeout for it (250 s for a reopen the one-transaction reclaim did in 10 s).
    fill(tmp_path, mb=8, entries=3500, size=900, seed=8)
    reader = sqlite3.connect(tmp_path / "cache.db", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM entries").fetchone()
    waited: list[str] = []  # checkpoints that could wait for the reader
    real = WalKeeper.truncate

    def truncate(keeper: WalKeeper, conn: sqlite3.Connection, mode: str = "TRUNCATE") -> bool:
        if conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0:
            waited.append(mode)
        return real(keeper, conn, mode)

    monkeypatch.setattr(WalKeeper, "truncate", truncate)
    monkeypatch.setattr(_sqlite, "BUSY_TIMEOUT_S", 0.2)
    monkeypatch.setattr(_disk, "BUSY_TIMEOUT_S", 0.2)
    try:
        cache = ResponseCache(
            cache_dir=tmp_path, cache_secret=SECRET, max_size_mb=1, memory_max_mb=0
        )
        assert 0 < cache.get_stats()["size_bytes"] <= MIB
        opened = list(waited)
    finally:
        reader.execute("ROLLBACK")
        reader.close()
    cache.set(key(9999), {"t": "after the read"})  # the file shrinks once the WAL can go
    assert folder_bytes(tmp_path) <= DiskLimits.for_limit(MIB).folder_bytes
    cache.close()
    assert len(opened) <= 1, opened


def open_files() -> set[str]:
    targets = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.add(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:
            continue  # the descriptor listdir itself used
    return targets


def test_open_files_are_only_the_cache_folder_s(tmp_path: Path) -> None:
    # The writer and the reader: nothing else stays open while a cache is open.
    before = open_files()
    with ResponseCache(cache_dir=tmp_path, cache_secret=SECRET) as cache:
        cache.set(key(1), {"a": 1})
        assert cache.get(key(1)) is not None
        opened = open_files() - before
        assert opened and all(t.startswith(str(tmp_path)) for t in opened), opened
    assert open_files() - before == set()


def test_open_and_close_many_caches_leaks_no_thread_or_file(tmp_path: Path) -> None:
    def one_round(n: int) -> None:
        cache = ResponseCache(cache_dir=tmp_path / str(n % 5), cache_secret=SECRET)
        cache.set(key(n), {"n": n})
        assert cache.get(key(n)) is not None

        async def use() -> None:
            await cache.aset(key(n + 1), {"n": n})  # starts the background writer
            assert await cache.aget(key(n + 1)) is not None
            await cache.aclose()

        asyncio.run(use())

    one_round(0)  # first use: lazy imports and executors
    import threading

    threads, fds = threading.active_count(), len(os.listdir("/proc/self/fd"))
    for n in range(1, 101):
        one_round(n)
    assert threading.active_count() <= threads
    assert len(os.listdir("/proc/self/fd")) <= fds


@contextlib.contextmanager
def wal_at_its_checkpoint(
    folder: Path, rng: random.Random
) -> Iterator[tuple[ResponseCache, DiskTier, int]]:
    """A 1 MiB cache whose background job runs only by hand, written to until a write
    began with its WAL at the size that asks for a checkpoint; with the number of entries
    written."""
    with ResponseCache(
        cache_dir=folder, cache_secret=SECRET, max_size_mb=1, memory_max_mb=0
    ) as cache:
        disk = cache._disk
        assert disk is not None
        disk._worker.close()  # the background job runs in the test, by hand, at a known point
        n = 0
        while not disk._wal._wanted:
            assert disk._wal.size() < disk.limits.checkpoint_at + disk.limits.txn_bytes * 4
            cache.set(key(n), {"t": text(rng, 1500)})
            n += 1
        yield cache, disk, n


def test_writes_leave_checkpoints_to_the_background_and_the_wal_then_starts_over(
    tmp_path: Path,
) -> None:
    rng = random.Random(9)
    with wal_at_its_checkpoint(tmp_path, rng) as (cache, disk, n):
        wal = disk._wal
        assert wal.passes == 0  # no write checkpointed: the WAL only grew
        assert disk._writer.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        disk._background()
        assert wal.passes == 1  # nothing was written meanwhile: one pass copied it all
        grown = wal.file_bytes()
        cache.set(key(n), {"t": text(rng, 1500)})
        # The next write started the WAL over at its beginning: one transaction's frames,
        # in the file as it was (truncating it would cost that write milliseconds).
        assert 0 < wal.size() <= disk.limits.txn_bytes * 4
        assert wal.file_bytes() == grown <= disk.limits.wal_bytes
        assert cache.get(key(n - 1)) is not None


def wal_index_descriptors(folder: Path) -> int:
    target = str(folder / "cache.db-shm")
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == target
        except FileNotFoundError:
            continue
    return count


def test_the_wal_index_is_read_through_one_descriptor_closed_with_its_last_user(
    tmp_path: Path,
) -> None:
    # Closing any descriptor of a file drops all of this process's locks on it, SQLite's
    # too: a second cache on the folder must not close the one the first still relies on.
    first = ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, memory_max_mb=0)
    first.set(key(1), {"a": 1})
    alone = wal_index_descriptors(tmp_path)  # SQLite's own, and ours
    assert alone == 2
    second = ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, memory_max_mb=0)
    second.set(key(3), {"a": 3})
    assert wal_index_descriptors(tmp_path) == alone
    second.close()
    assert wal_index_descriptors(tmp_path) == alone
    disk = first._disk
    assert disk is not None
    before = disk._wal.size()
    first.set(key(2), {"a": 2})
    assert disk._wal.size() > before  # still read from the index, frame by frame
    first.close()
    assert wal_index_descriptors(tmp_path) == 0


def test_the_wal_size_read_from_its_index_is_sqlite_s_frame_count(tmp_path: Path) -> None:
    with ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, memory_max_mb=0) as cache:
        disk = cache._disk
        assert disk is not None
        disk._worker.close()  # no checkpoint moves the WAL meanwhile
        for n in range(20):
            cache.set(key(n), {"n": n, "t": "x" * 3000})
        frames = (disk._wal.size() - 32) // (disk._page_size + 24)
        with sqlite3.connect(tmp_path / "cache.db") as other:
            busy, log, _ = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        other.close()
        assert busy == 0 and log == frames > 20


def test_a_checkpoint_behind_the_writer_syncs_its_copies_before_taking_the_write_lock(
    tmp_path: Path,
) -> None:
    # A pass that does not reach the WAL's end leaves the pages it copied unsynced; the
    # pass that does (holding the write lock, writers waiting) would sync them all.
    rng = random.Random(11)
    with wal_at_its_checkpoint(tmp_path, rng) as (cache, disk, n):
        wal = disk._wal
        assert wal._wanted  # the last write asked for a checkpoint
        flushed: list[bool] = []
        index_flush = wal._index.flush
        write_lock = disk._write_lock

        def flush() -> None:
            flushed.append(write_lock.locked())
            index_flush()

        wal._index.flush = flush  # type: ignore[method-assign]
        checkpoint_pass = wal._pass

        class WriteDuringCheckpoint:
            """The checkpoint's connection; a write lands as each unlocked one ends."""

            def __init__(self, conn: sqlite3.Connection) -> None:
                self.conn = conn

            def execute(self, sql: str) -> sqlite3.Cursor:
                cursor = self.conn.execute(sql)
                if "wal_checkpoint" in sql and not write_lock.locked():
                    cache.set(key(10_000 + len(flushed)), {"t": text(rng, 1500)})
                return cursor

        def behind_a_writer(conn: sqlite3.Connection) -> bool:
            return checkpoint_pass(WriteDuringCheckpoint(conn))  # type: ignore[arg-type]

        wal._pass = behind_a_writer  # type: ignore[method-assign]
        disk._background()
        assert flushed and not any(flushed), flushed
        cache.set(key(n), {"t": text(rng, 1500)})
        assert 0 < wal.size() <= disk.limits.txn_bytes * 4  # the WAL started over
        assert cache.get(key(n - 1)) is not None


def test_a_reclaim_whose_transactions_fail_ends_and_counts_no_eviction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full disk fails each step's COMMIT after its rows were deleted: the evictions were
    # counted before the commit, so the stepped reclaim saw progress and looped forever
    # (8 million evictions of 6,300 rows in 30 s). Here a deferred foreign key fails it.
    fill(tmp_path, mb=8, entries=3500, size=900, seed=9)
    real_connect, real_fit = _sqlite.connect, _evict.fit  # as _disk imported them
    calls: list[int] = []

    def connect(*args: Any, **kwargs: Any) -> Any:
        conn, identity = real_connect(*args, **kwargs)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS parent (id INTEGER PRIMARY KEY)")
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS child "
            "(id INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
        )
        return conn, identity

    def fit_then_no_commit(conn: sqlite3.Connection, *args: Any) -> int:
        calls.append(real_fit(conn, *args))
        if len(calls) > 50:
            raise AssertionError("the reclaim did not end")
        conn.execute("INSERT INTO temp.child VALUES (1)")  # its COMMIT fails
        return calls[-1]

    monkeypatch.setattr(_disk, "connect", connect)
    monkeypatch.setattr(_disk, "fit", fit_then_no_commit)
    cache = ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, max_size_mb=1, memory_max_mb=0)
    stats = cache.get_stats()
    cache.close()
    assert calls and calls[0] > 0  # it did evict, then the transaction failed
    assert stats["evictions"] == 0 and stats["errors"] >= 1
    monkeypatch.setattr(_disk, "fit", real_fit)
    monkeypatch.setattr(_disk, "connect", real_connect)
    with ResponseCache(
        cache_dir=tmp_path, cache_secret=SECRET, max_size_mb=1, memory_max_mb=0
    ) as cache:
        assert 0 < cache.get_stats()["size_bytes"] <= MIB
