"""The async door: aget/aset/aclose, writes off the loop, failures counted, never raised."""

from __future__ import annotations

import logging
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from claude_force.cache import ResponseCache, _disk, _sqlite, _wal

from ._cache_support import Clock, key

SECRET = "async-test-secret-0123456789abcdef"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding the cache database's write lock, as another process
    would; the cache's busy timeout is cut short so the test does not wait 10 s."""
    with ResponseCache(cache_dir=tmp_path, cache_secret=SECRET):
        pass  # creates the database
    other = sqlite3.connect(tmp_path / "cache.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    yield other
    if other.in_transaction:
        other.execute("ROLLBACK")
    other.close()


async def test_aset_then_aget_from_every_tier(tmp_path: Path, clock: Clock) -> None:
    cache = ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, clock=clock)
    assert await cache.aget(key(1)) is None
    await cache.aset(key(1), {"text": "hi"})
    hit = await cache.aget(key(1))
    assert hit is not None and hit.tier == "memory" and hit.value == {"text": "hi"}
    await cache.aclose()
    reopened = ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, clock=clock)
    hit = await reopened.aget(key(1))  # aclose made the queued write durable
    assert hit is not None and hit.tier == "disk"
    await reopened.aclose()


async def test_a_queued_write_is_read_back_before_it_reaches_disk(
    tmp_path: Path, locked: sqlite3.Connection, clock: Clock
) -> None:
    cache = ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, memory_max_mb=0, clock=clock)
    await cache.aset(key(1), {"n": 1})  # the write waits for the lock on the writer thread
    hit = await cache.aget(key(1))
    assert hit is not None and hit.value == {"n": 1}
    locked.execute("COMMIT")
    await cache.aflush()
    rows = locked.execute("SELECT count(*) FROM entries").fetchone()[0]
    assert rows == 1
    await cache.aclose()


async def test_a_write_locked_out_is_counted_and_warned_once(
    tmp_path: Path,
    locked: sqlite3.Connection,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(_sqlite, "BUSY_TIMEOUT_S", 0.01)
    cache = ResponseCache(cache_dir=tmp_path, cache_secret=SECRET)
    with caplog.at_level(logging.WARNING, "claude_force.cache"):
        for n in range(3):
            await cache.aset(key(n), {"n": n})  # never raises
            await cache.aflush()
        cache.set(key(9), {"n": 9})  # the sync door neither
    assert cache.get_stats()["errors"] == 4
    assert caplog.text.count("disk cache") == 1
    assert "locked" in caplog.text
    locked.execute("COMMIT")
    await cache.aset(key(5), {"n": 5})
    await cache.aflush()
    assert cache.get_stats()["errors"] == 4  # recovered
    await cache.aclose()


async def test_a_full_disk_is_counted_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, memory_max_mb=0)
    await cache.aset(key(0), {"n": 0})
    await cache.aflush()
    # The fault: the file may not grow past its size now, as on a full file system.
    assert cache._disk is not None
    writer = cache._disk._writer
    writer.execute(f"PRAGMA max_page_count = {writer.execute('PRAGMA page_count').fetchone()[0]}")
    with caplog.at_level(logging.WARNING, "claude_force.cache"):
        for n in range(1, 30):
            await cache.aset(key(n), {"n": n, "pad": "x" * 3000})
        await cache.aflush()
    assert cache.get_stats()["errors"] >= 1
    assert caplog.text.count("disk is full") == 1
    await cache.aclose()


async def test_aclose_twice_and_close_after_are_harmless(tmp_path: Path) -> None:
    cache = ResponseCache(cache_dir=tmp_path, cache_secret=SECRET)
    await cache.aset(key(1), {"n": 1})
    await cache.aclose()
    await cache.aclose()
    cache.close()
    assert await cache.aget(key(1)) is None
    await cache.aset(key(2), {"n": 2})  # a closed cache stores nothing and raises nothing
    assert cache.get_stats()["entries"] == 1


async def test_close_while_another_process_holds_the_lock_waits_one_busy_timeout(
    tmp_path: Path, locked: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each write attempt waits the busy timeout (10 s): close tries what is queued once and
    drops it, instead of once per attempt (four) and per transaction."""
    monkeypatch.setattr(_sqlite, "BUSY_TIMEOUT_S", 0.01)
    cache = ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, memory_max_mb=0)
    disk = cache._disk
    assert disk is not None
    tried: list[str] = []
    disk._worker.close()  # the writes below wait for close(), not for the thread
    disk._writer.set_trace_callback(tried.append)
    for n in range(3):
        await cache.aset(key(n), {"n": n})
    await cache.aclose()
    assert sum(s.startswith("BEGIN IMMEDIATE") for s in tried) == 1
    assert not any("wal_checkpoint" in s for s in tried)
    locked.execute("ROLLBACK")
    with ResponseCache(cache_dir=tmp_path, cache_secret=SECRET) as reopened:
        reopened.set(key(5), {"n": 5})  # the cache works on once the lock is gone
        hit = reopened.get(key(5))
    assert hit is not None and hit.value == {"n": 5}


async def test_a_set_after_an_aset_of_the_same_key_wins(tmp_path: Path) -> None:
    """The aset is still queued when the set writes: the queued older value must not land
    after it (a refresh from sync code beside async code)."""
    cache = ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, memory_max_mb=0)
    await cache.aset(key(1), {"v": 1})
    cache.set(key(1), {"v": 2})
    hit = cache.get(key(1))
    assert hit is not None and hit.value == {"v": 2}
    await cache.aflush()
    await cache.aclose()
    again = ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, memory_max_mb=0)
    hit = again.get(key(1))
    assert hit is not None and hit.value == {"v": 2}
    await again.aclose()


async def test_close_with_a_wal_kept_from_checkpointing_waits_one_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A WAL over its budget that another process's long read keeps from being checkpointed:
    each transaction waits a busy timeout for it, and close waited one per queued
    transaction (300 s for 60 entries of 20 KB). It gives up after the first."""
    monkeypatch.setattr(_sqlite, "BUSY_TIMEOUT_S", 0.01)
    monkeypatch.setattr(_disk, "BUSY_TIMEOUT_S", 0.01)
    monkeypatch.setattr(_wal, "_TRUNCATE_PATIENCE_S", 0.01)
    cache = ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, memory_max_mb=0, max_size_mb=1)
    disk = cache._disk
    assert disk is not None
    cache.set(key(0), {"n": 0})
    reader = sqlite3.connect(tmp_path / "cache.db", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM entries").fetchone()  # a snapshot the WAL must keep
    rng = random.Random(7)  # text that does not compress: each entry its full size
    for n in range(1, 40):
        cache.set(key(n), {"pad": rng.randbytes(6000).hex()})
    stuck = cache.get_stats()["errors"]
    assert stuck > 0  # the WAL passed its budget and stayed there
    disk._worker.close()  # the writes below wait for close(), not for the thread
    tried: list[str] = []
    disk._writer.set_trace_callback(tried.append)
    for n in range(40, 50):
        await cache.aset(key(n), {"pad": rng.randbytes(6000).hex()})  # several transactions
    assert disk._queued_bytes > 2 * disk.limits.txn_bytes
    await cache.aclose()
    assert sum(s.startswith("BEGIN IMMEDIATE") for s in tried) == 1
    reader.execute("ROLLBACK")
    reader.close()
    with ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, max_size_mb=1) as reopened:
        reopened.set(key(5), {"n": 5})  # the cache works on once the read has ended
        hit = reopened.get(key(5))
    assert hit is not None and hit.value == {"n": 5}
