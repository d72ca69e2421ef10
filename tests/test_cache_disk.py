"""The SQLite tier: LRU and TTL with an injected clock, tampering, damaged files."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from claude_force._errors import CacheDirectoryError
from claude_force.cache import ResponseCache, _disk
from claude_force.cache._sqlite import set_aside

from ._cache_support import T0, Clock, key

SECRET = "disk-test-secret-0123456789abcdef"
MIB = 1024 * 1024


def value(n: int, pad: int = 1000) -> dict[str, object]:
    return {"n": n, "pad": "x" * pad}


@pytest.fixture
def clock() -> Clock:
    return Clock()


def open_cache(folder: Path, clock: Clock, **kwargs: object) -> ResponseCache:
    options: dict[str, object] = {"cache_secret": SECRET, "memory_max_mb": 0, "clock": clock}
    options.update(kwargs)
    return ResponseCache(cache_dir=folder, **options)  # type: ignore[arg-type]


@pytest.fixture
def cache(tmp_path: Path, clock: Clock) -> Iterator[ResponseCache]:
    with open_cache(tmp_path, clock) as cache:
        yield cache


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A second, independent connection: the attacker's view of the file."""
    conn = sqlite3.connect(tmp_path / "cache.db", isolation_level=None)
    yield conn
    conn.close()


def envelope_size(tmp_path: Path, clock: Clock) -> int:
    with open_cache(tmp_path / "probe", clock) as probe:
        probe.set(key(0), value(0))
        return int(probe.get_stats()["size_bytes"])


# -- LRU and TTL ----------------------------------------------------------------------


def test_lru_evicts_the_least_recently_accessed(tmp_path: Path, clock: Clock) -> None:
    size = envelope_size(tmp_path, clock)
    with open_cache(tmp_path / "c", clock, max_size_mb=3.5 * size / MIB) as cache:
        for n in (1, 2, 3):
            cache.set(key(n), value(n))
            clock.now += 100
        assert cache.get(key(1)) is not None  # 1 is now more recent than 2
        clock.now += 100
        cache.set(key(4), value(4))
        present = {n for n in (1, 2, 3, 4) if cache.get(key(n)) is not None}
        stats = cache.get_stats()
    assert present == {1, 3, 4}
    assert stats["evictions"] == 1
    assert stats["entries"] == 3
    assert stats["size_bytes"] == 3 * size <= stats["max_size_bytes"]


def test_without_access_eviction_is_oldest_first(tmp_path: Path, clock: Clock) -> None:
    size = envelope_size(tmp_path, clock)
    with open_cache(tmp_path / "c", clock, max_size_mb=4.5 * size / MIB) as cache:
        for n in range(10):
            cache.set(key(n), value(n))
            clock.now += 1
        present = [n for n in range(10) if cache.get(key(n)) is not None]
    assert present == [6, 7, 8, 9]


def test_hits_do_not_write_until_flush(
    cache: ResponseCache, clock: Clock, db: sqlite3.Connection
) -> None:
    cache.set(key(1), value(1))
    clock.now += 3600
    assert cache.get(key(1)) is not None
    last_access = "SELECT last_access FROM entries"
    assert db.execute(last_access).fetchone()[0] == T0
    cache.flush()
    assert db.execute(last_access).fetchone()[0] == T0 + 3600


def test_pending_access_times_go_out_with_the_next_write(
    cache: ResponseCache, clock: Clock, db: sqlite3.Connection
) -> None:
    cache.set(key(1), value(1))
    clock.now += 600
    cache.get(key(1))
    cache.set(key(2), value(2))
    got = db.execute("SELECT last_access FROM entries WHERE key = ?", (key(1),)).fetchone()[0]
    assert got == T0 + 600


def test_accesses_within_the_resolution_are_not_recorded(
    cache: ResponseCache, clock: Clock, db: sqlite3.Connection
) -> None:
    cache.set(key(1), value(1))
    clock.now += _disk.ACCESS_RESOLUTION_S / 2
    cache.get(key(1))
    cache.flush()
    assert db.execute("SELECT last_access FROM entries").fetchone()[0] == T0


def test_many_pending_hits_flush_themselves(
    monkeypatch: pytest.MonkeyPatch, cache: ResponseCache, clock: Clock, db: sqlite3.Connection
) -> None:
    monkeypatch.setattr(_disk, "PENDING_LIMIT", 3)
    cache.warm((key(n), value(n)) for n in range(3))
    clock.now += 3600
    for n in range(3):
        cache.get(key(n))
    # The full batch woke the background writer; the hits wrote nothing themselves.
    cache.flush()
    times = {row[0] for row in db.execute("SELECT last_access FROM entries")}
    assert times == {T0 + 3600}


def test_memory_hits_keep_entries_alive_on_disk(tmp_path: Path, clock: Clock) -> None:
    size = envelope_size(tmp_path, clock)
    with open_cache(tmp_path / "c", clock, memory_max_mb=1, max_size_mb=2.5 * size / MIB) as c:
        c.set(key(1), value(1))
        clock.now += 100
        c.set(key(2), value(2))
        clock.now += 100
        hit = c.get(key(1))
        assert hit is not None and hit.tier == "memory"
        c.set(key(3), value(3))
    with open_cache(tmp_path / "c", clock) as disk_only:
        assert disk_only.get(key(1)) is not None
        assert disk_only.get(key(2)) is None


def test_expired_entries_miss_and_are_deleted_on_next_write(
    cache: ResponseCache, clock: Clock, db: sqlite3.Connection
) -> None:
    cache.set(key(1), value(1))
    clock.now += 24 * 3600
    assert cache.get(key(1)) is None
    assert cache.get_stats()["expirations"] == 1
    cache.set(key(2), value(2))
    assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 1


def test_a_longer_expires_at_column_does_not_extend_life(
    cache: ResponseCache, clock: Clock, db: sqlite3.Connection
) -> None:
    cache.set(key(1), value(1))
    db.execute("UPDATE entries SET expires_at = 1e18")
    clock.now += 25 * 3600
    assert cache.get(key(1)) is None


def test_an_entry_larger_than_the_limit_is_not_stored(tmp_path: Path, clock: Clock) -> None:
    with open_cache(tmp_path, clock, max_size_mb=0.01) as cache:
        cache.set(key(1), {"small": 1})
        cache.set(key(1), {"blob": os.urandom(20_000).hex()})  # > 10 KiB even compressed
        assert cache.get(key(1)) is None  # neither the new value nor the replaced one
        stats = cache.get_stats()
        assert stats["entries"] == 0 and stats["size_bytes"] == 0


# -- tampering ------------------------------------------------------------------------


def assert_rejected(cache: ResponseCache, k: str, failures: int = 1) -> None:
    assert cache.get(k) is None
    assert cache.get_stats()["integrity_failures"] == failures


def test_flipped_byte_in_the_blob_is_never_served(
    cache: ResponseCache, db: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    cache.set(key(1), value(1))
    blob = bytearray(db.execute("SELECT envelope FROM entries").fetchone()[0])
    blob[len(blob) // 2] ^= 0x20
    db.execute("UPDATE entries SET envelope = ?", (bytes(blob),))
    with caplog.at_level(logging.WARNING, "claude_force.cache"):
        assert_rejected(cache, key(1))
    assert "signature" in caplog.text
    cache.flush()  # deleted by the background writer, not on the lookup path
    assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 0


def test_changed_created_at_column_is_never_served(
    cache: ResponseCache, db: sqlite3.Connection
) -> None:
    cache.set(key(1), value(1))
    db.execute("UPDATE entries SET created_at = created_at + 3600")
    assert_rejected(cache, key(1))
    cache.flush()
    assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 0


def test_changed_created_at_inside_the_envelope_is_never_served(
    cache: ResponseCache, db: sqlite3.Connection
) -> None:
    import struct

    cache.set(key(1), value(1))
    blob = db.execute("SELECT envelope FROM entries").fetchone()[0]
    forged = blob[:4] + struct.pack(">d", T0 + 3600) + blob[12:]
    db.execute("UPDATE entries SET envelope = ?, created_at = ?", (forged, T0 + 3600))
    assert_rejected(cache, key(1))


def test_entry_moved_to_another_key_is_never_served(
    cache: ResponseCache, db: sqlite3.Connection
) -> None:
    cache.set(key(1), value(1))
    db.execute("UPDATE entries SET key = ? WHERE key = ?", (key(2), key(1)))
    assert_rejected(cache, key(2))
    cache.flush()
    assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 0


def test_entry_copied_to_another_key_is_never_served(
    cache: ResponseCache, db: sqlite3.Connection
) -> None:
    cache.set(key(1), value(1))
    db.execute(
        "INSERT INTO entries (key, envelope, size, created_at, expires_at, last_access) "
        "SELECT ?, envelope, size, created_at, expires_at, last_access FROM entries",
        (key(2),),
    )
    assert_rejected(cache, key(2))
    hit = cache.get(key(1))  # the original stays good
    assert hit is not None and hit.value == value(1)


def test_verify_counts_and_deletes_bad_entries(
    cache: ResponseCache, db: sqlite3.Connection
) -> None:
    cache.warm((key(n), value(n)) for n in range(600))
    db.execute("UPDATE entries SET envelope = substr(envelope, 1, 60) WHERE rowid % 100 = 7")
    db.execute("UPDATE entries SET key = 'not-a-key' WHERE rowid = 500")
    assert cache.verify() == {"checked": 600, "ok": 593, "bad": 7}
    assert cache.get_stats()["integrity_failures"] == 7
    assert cache.verify() == {"checked": 593, "ok": 593, "bad": 0}
    stats = cache.get_stats()
    total = db.execute("SELECT sum(size), count(*) FROM entries").fetchone()
    assert (stats["size_bytes"], stats["entries"]) == tuple(total)


# -- damaged database files -------------------------------------------------------------


def test_a_file_that_is_not_a_database_is_set_aside(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "cache.db").write_bytes(b"this is not an SQLite database" * 200)
    with caplog.at_level(logging.WARNING, "claude_force.cache"), open_cache(tmp_path, clock) as c:
        c.set(key(1), value(1))
        hit = c.get(key(1))
        assert hit is not None and hit.value == value(1)
    assert "damaged" in caplog.text
    aside = list(tmp_path.glob("cache.db.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"this is not")


def damage_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    assert len(data) > 8 * 4096
    for offset in range(4096, len(data), 512):
        data[offset : offset + 64] = b"\xa5" * 64
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("first", ["get", "set"])
def test_a_malformed_database_is_set_aside_mid_run(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture, first: str
) -> None:
    with open_cache(tmp_path, clock) as c:
        c.warm((key(n), value(n)) for n in range(40))
    damage_pages(tmp_path / "cache.db")
    with caplog.at_level(logging.WARNING, "claude_force.cache"), open_cache(tmp_path, clock) as c:
        if first == "get":
            assert c.get(key(1)) is None
        c.set(key(100), value(100))
        hit = c.get(key(100))
        assert hit is not None and hit.value == value(100)
        assert c.get_stats()["errors"] >= 1
    assert "damaged" in caplog.text
    assert len(list(tmp_path.glob("cache.db.corrupt-*"))) == 1
    with open_cache(tmp_path, clock) as c:  # the fresh file opens cleanly
        assert c.get(key(100)) is not None


def test_an_unusable_directory_mid_run_turns_the_disk_tier_off(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with open_cache(tmp_path, clock) as c:
        c.warm((key(n), value(n)) for n in range(40))
    damage_pages(tmp_path / "cache.db")
    with caplog.at_level(logging.WARNING, "claude_force.cache"), open_cache(tmp_path, clock) as c:

        def refuse(path: Path, **options: object) -> object:
            raise CacheDirectoryError(f"cache directory {path.parent} vanished")

        monkeypatch.setattr(_disk, "connect", refuse)  # the fault: reopening fails
        assert c.get(key(1)) is None
        c.set(key(2), value(2))  # no exception: the run goes on
        assert c.get(key(2)) is None
    assert "disk cache is off" in caplog.text


def test_set_aside_moves_the_wal_and_shm_too(tmp_path: Path) -> None:
    # A stale WAL left beside a fresh database would be replayed into it.
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"cache.db{suffix}").write_bytes(suffix.encode() or b"main")
    set_aside(tmp_path / "cache.db", sqlite3.DatabaseError("test"), expected=None)
    assert not any((tmp_path / f"cache.db{suffix}").exists() for suffix in ("", "-wal", "-shm"))
    moved = sorted(p.read_bytes() for p in tmp_path.glob("cache.db.corrupt-*"))
    assert moved == [b"-shm", b"-wal", b"main"]


def test_set_aside_leaves_a_file_another_process_already_replaced(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    path.write_bytes(b"damaged")
    identity = (path.stat().st_dev, path.stat().st_ino)
    path.rename(tmp_path / "cache.db.corrupt-by-the-other-process")
    path.write_bytes(b"fresh, made by another process")
    set_aside(path, sqlite3.DatabaseError("test"), expected=identity)
    assert path.read_bytes() == b"fresh, made by another process"
    assert [p.name for p in tmp_path.glob("cache.db.corrupt-*")] == [
        "cache.db.corrupt-by-the-other-process"
    ]


# -- threads ----------------------------------------------------------------------------


def test_threads_share_one_cache_safely(tmp_path: Path, clock: Clock) -> None:
    errors: list[BaseException] = []
    limit = 40 * 1100

    def worker(seed: int) -> None:
        try:
            for i in range(150):
                n = (seed * 7 + i) % 60
                if i % 3:
                    shared.get(key(n))
                else:
                    shared.set(key(n), value(n))
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    with open_cache(tmp_path, clock, memory_max_mb=0.02, max_size_mb=limit / MIB) as shared:
        threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = shared.get_stats()
    assert errors == []
    assert 0 < stats["size_bytes"] <= limit
    assert stats["tiers"]["memory"]["size_bytes"] <= stats["tiers"]["memory"]["max_size_bytes"]


def test_hits_never_write_on_the_callers_thread(
    monkeypatch: pytest.MonkeyPatch, cache: ResponseCache, clock: Clock
) -> None:
    monkeypatch.setattr(_disk, "PENDING_LIMIT", 2)
    cache.warm((key(n), value(n)) for n in range(6))
    clock.now += 3600
    writes: list[str] = []
    real_write = _disk.DiskTier._write
    caller = threading.get_ident()

    def spy(self: _disk.DiskTier, action: str, *args: object, **kw: object) -> object:
        if threading.get_ident() == caller:  # the background writer may write meanwhile
            writes.append(action)
        return real_write(self, action, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(_disk.DiskTier, "_write", spy)
    for n in range(6):
        assert cache.get(key(n)) is not None
    assert writes == []


# -- malformed rows ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "bad"),
    [
        ("envelope", "a text value"),
        ("envelope", 12345),
        ("envelope", 1.5),
        ("envelope", b"CF\x01"),  # truncated
        ("created_at", "yesterday"),
        ("created_at", None),
        ("last_access", "often"),
        ("last_access", None),
        ("size", "abc"),
        ("size", -5),
        ("size", 2**63 - 1),
        ("size", 12.5),
        ("expires_at", "never"),
        ("expires_at", None),
        ("expires_at", T0 - 1),  # before its created_at
    ],
)
def test_a_malformed_row_is_a_counted_miss_and_deleted(
    cache: ResponseCache, db: sqlite3.Connection, column: str, bad: object
) -> None:
    cache.set(key(1), value(1))
    # A table rebuilt without constraints, as a foreign tool or old version could leave it.
    db.executescript(
        "CREATE TABLE loose AS SELECT * FROM entries; DROP TABLE entries; "
        "ALTER TABLE loose RENAME TO entries; "
        "CREATE UNIQUE INDEX entries_key ON entries (key);"
    )
    db.execute(f"UPDATE entries SET {column} = ?", (bad,))
    assert cache.get(key(1)) is None  # no TypeError, whatever the column holds
    stats = cache.get_stats()
    assert stats["integrity_failures"] == 1 and stats["misses"] == 1
    cache.flush()
    assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 0
    cache.set(key(1), value(1))  # the key works again
    hit = cache.get(key(1))
    assert hit is not None and hit.value == value(1)


def test_a_text_envelope_that_is_not_utf8_is_a_bad_row(
    cache: ResponseCache, db: sqlite3.Connection
) -> None:
    cache.set(key(1), value(1))
    db.execute("UPDATE entries SET envelope = CAST(envelope || x'ff00' AS TEXT)")
    assert cache.get(key(1)) is None  # not a read error: a bad row
    stats = cache.get_stats()
    assert stats["integrity_failures"] == 1 and stats["errors"] == 0
    cache.flush()
    assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 0


def meta(db: sqlite3.Connection) -> tuple[int, int]:
    total, entries = db.execute("SELECT total_bytes, entries FROM meta").fetchone()
    return int(total), int(entries)


def valid_totals(db: sqlite3.Connection) -> tuple[int, int]:
    total, entries = db.execute(
        "SELECT coalesce(sum(length(envelope)), 0), count(*) FROM entries"
    ).fetchone()
    return int(total), int(entries)


@pytest.mark.parametrize("bad", [2**62, 2**63 - 1, -(10**12), -5, "abc"])
def test_a_tampered_size_never_shows_negative_stats_nor_empties_the_cache(
    tmp_path: Path, clock: Clock, db: sqlite3.Connection, bad: object
) -> None:
    with open_cache(tmp_path, clock, max_size_mb=1) as c:
        c.warm((key(n), value(n, 200)) for n in range(50))
    intact = valid_totals(db)
    # The triggers carry the tampered size into the running totals, as an attacker's
    # UPDATE would.
    db.execute("UPDATE entries SET size = ? WHERE key = ?", (bad, key(0)))
    with open_cache(tmp_path, clock, max_size_mb=1) as c:
        stats = c.get_stats()
        assert 0 <= stats["size_bytes"] <= intact[0] and 0 <= stats["entries"] <= 50
        assert all(c.get(key(n)) is not None for n in range(1, 50))  # nothing evicted
        assert c.get(key(0)) is None
        assert c.get_stats()["integrity_failures"] == 1
        c.set(key(99), value(99, 200))
        c.flush()
        stats = c.get_stats()
    assert stats["evictions"] == 0
    assert meta(db) == valid_totals(db) == (stats["size_bytes"], stats["entries"])
    assert stats["entries"] == 50


def test_a_tampered_meta_row_is_recounted(
    tmp_path: Path, clock: Clock, db: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    with open_cache(tmp_path, clock) as c:
        c.warm((key(n), value(n, 200)) for n in range(20))
    intact = valid_totals(db)
    db.execute("UPDATE meta SET total_bytes = -999999889497, entries = -3")
    with caplog.at_level(logging.WARNING, "claude_force.cache"), open_cache(tmp_path, clock) as c:
        stats = c.get_stats()
        assert (stats["size_bytes"], stats["entries"]) == intact  # counted from the rows
        c.set(key(99), value(99, 200))  # the next write repairs the totals
    assert meta(db) == valid_totals(db)
    assert "cannot be right" in caplog.text


def test_verify_finds_a_tampered_size(cache: ResponseCache, db: sqlite3.Connection) -> None:
    cache.warm((key(n), value(n)) for n in range(3))
    db.execute("UPDATE entries SET size = size + 1 WHERE key = ?", (key(1),))
    assert cache.verify() == {"checked": 3, "ok": 2, "bad": 1}
    assert cache.get(key(1)) is None and cache.get(key(2)) is not None


def test_the_first_write_drops_the_unused_expires_at_index(tmp_path: Path, clock: Clock) -> None:
    # A file made before the index was dropped from the schema: the index costs every
    # write a page and no query uses it.
    open_cache(tmp_path, clock).close()
    raw = sqlite3.connect(tmp_path / "cache.db")
    raw.execute("CREATE INDEX entries_expires_at ON entries (expires_at)")
    raw.commit()
    raw.close()

    def indexes() -> set[str]:
        db = sqlite3.connect(tmp_path / "cache.db")
        try:
            return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        finally:
            db.close()

    assert "entries_expires_at" in indexes()
    with open_cache(tmp_path, clock) as cache:
        cache.set(key(1), value(1))
        assert cache.get(key(1)) is not None
        clock.now += 25 * 3600
        assert cache.prune() == 1  # expiry still works without it
    assert "entries_expires_at" not in indexes()
    assert "entries_last_access" in indexes()
