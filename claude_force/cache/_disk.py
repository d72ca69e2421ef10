"""The disk tier: signed envelopes in one SQLite database, LRU within a byte limit.

Every write is one ``BEGIN IMMEDIATE`` transaction that stores the rows and then evicts
least-recently-accessed rows until both budgets of ``DiskLimits`` hold (``_evict``): the
sum of envelope sizes, and the pages the database file has in use. A transaction begins
only while the WAL's frames (read from its index, ``_walindex``) are within its budget
(holding the write lock, so other processes cannot add to it); past it, the writer first
checkpoints all of it. Commits never checkpoint: the tier's background thread does
(``_wal``). The WAL is also truncated on close and on open (after a crash), so the whole
folder stays within ``DiskLimits.folder_bytes``.

Three connections: lookups use a reader that never waits for a write (WAL readers take no
lock), writes use a writer, checkpoints their own. Nothing on a lookup path writes: access
times, expired and malformed rows, entries found in Redis and ``queue()``d writes wait in
memory and go out with the next write, ``flush()``, ``close()`` or on the tier's one
background thread, which also runs the checkpoints.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .._errors import CacheDirectoryError, CacheIntegrityError
from .._warnings import OnceLog
from ._envelope import open_value
from ._evict import fit, repair, vacuum
from ._limits import DiskLimits
from ._rows import COLUMNS, RECOUNT, column_problem, plausible, row_ok
from ._shrink import checkpoint_now, shrink
from ._sqlite import (
    BUSY_TIMEOUT_S,
    DB_NAME,
    UNUSED_INDEX,
    connect,
    connect_reader,
    error_cause,
    file_identity,
    file_size,
    is_busy,
    is_corruption,
    set_aside,
    write_problem,
)
from ._types import MISS, Found, Miss, TierStats
from ._wal import WAL_STUCK, WalKeeper
from ._worker import Worker

__all__ = ["DiskTier"]

logger = logging.getLogger("claude_force.cache")
T = TypeVar("T")

# Past this many noted access times, the background thread is woken to write them.
PENDING_LIMIT = 1024
# LRU needs to know which entries are in use, not the exact second: an access within this
# many seconds of the recorded one is not recorded again, so hot keys cost no writes.
ACCESS_RESOLUTION_S = 60.0
# Queued writes wait in memory while another process holds the write lock; past this many
# bytes further ones are dropped (and counted) rather than growing without bound.
_QUEUE_MAX_BYTES = 64 * 1024 * 1024
_WRITE_ATTEMPTS = 4
_VERIFY_BATCH = 256
# Connections inherited through fork() must never be used or closed by the child; they are
# parked here so garbage collection does not close them either.
_ABANDONED: list[sqlite3.Connection] = []
# Bumped in a forked child, so a tier notices the fork without a getpid() call per read.
_fork_generation = 0


_TIERS: weakref.WeakSet[DiskTier] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1
    # Only the forking thread lives on in a child: a lock that the tier's background thread
    # held at the fork would never be released there. Each tier's locks start afresh.
    for tier in list(_TIERS):
        tier._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

_GET = f"SELECT rowid, {COLUMNS} FROM entries WHERE key = ?"
_UPSERT = (
    "INSERT INTO entries (key, envelope, size, created_at, expires_at, last_access) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET envelope = excluded.envelope, "
    "size = excluded.size, created_at = excluded.created_at, "
    "expires_at = excluded.expires_at, last_access = excluded.last_access"
)
_TOTAL = "SELECT total_bytes, entries FROM meta WHERE id = 0"
_TOUCH = "UPDATE entries SET last_access = ? WHERE key = ? AND last_access < ?"
_DELETE_IF = "DELETE FROM entries WHERE key = ? AND created_at = ?"
# Delete only the bad bytes we read: another process may have rewritten the row since.
_DELETE_BAD = "DELETE FROM entries WHERE rowid = ? AND key = ? AND CAST(envelope AS BLOB) IS ?"

Row = tuple[str, bytes, float]  # key, envelope, created_at


@dataclass
class _Batch:
    """What a write transaction takes from the in-memory queues."""

    rows: list[Row] = field(default_factory=list)
    now: float = 0.0
    touches: list[tuple[float, str, float]] = field(default_factory=list)
    expired: list[tuple[str, float]] = field(default_factory=list)
    bad: list[tuple[int, str, object]] = field(default_factory=list)
    recount: bool = False


# What ``_take`` returns when nothing waits; never changed.
_NO_BATCH = _Batch()


def _nothing(conn: sqlite3.Connection) -> None:
    return None


class DiskTier:
    """SQLite-backed tier in ``directory`` (which the caller has already checked)."""

    def __init__(self, directory: Path, *, secret: bytes, max_bytes: int, ttl: float) -> None:
        self.path = directory / DB_NAME
        self.limits = DiskLimits.for_limit(max_bytes)
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.stats = TierStats()
        self._secret = secret
        # A string, not a Path: it is stat()ed on every write.
        self._db_file = str(self.path)
        self._tidied = False  # UNUSED_INDEX ran in this process's first write
        self._log = OnceLog(logger)
        self._failing: set[str] = set()
        # Lock order: write -> read -> state. Only the write lock is ever held while
        # waiting for another process; lookups take the read and state locks only.
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._state = threading.Lock()
        self._queued: dict[str, tuple[bytes, float, float]] = {}  # key -> env, created, now
        self._queued_bytes = 0
        self._pending: dict[str, float] = {}  # key -> last access to record
        self._expired: dict[str, float] = {}  # key -> created_at seen expired
        self._bad: dict[tuple[int, str], object] = {}  # (rowid, key) -> envelope read
        # A row with a wrong size was seen: deleting it would subtract that size from the
        # running totals, so the next write deletes such rows and recounts instead.
        self._recount = False
        self._damaged: sqlite3.Error | None = None
        self._keep = ""  # the key a running transaction wrote last: never its own victim
        self._pages = 0  # the database's pages as the transaction began, 0 when unknown
        self._writer, self._identity = connect(self.path, limits=self.limits)
        self._reader: sqlite3.Connection | None = None
        self._page_size = int(self._writer.execute("PRAGMA page_size").fetchone()[0])
        self._wal = WalKeeper(self.path, self.limits, self._log, self._write_lock)
        self._wal.map(self._page_size)
        self._worker = Worker(self._background, name=f"claude-force-cache-writer:{self.path}")
        self._generation = self._read_generation = _fork_generation
        self._closed = False
        # Closing: a write that waited out the busy timeout (another process holds the lock)
        # is not tried again, and what is still queued is dropped, so that close() returns
        # within about one busy timeout instead of one per attempt and per transaction.
        self._closing = False
        self._gave_up = False
        # The database file or its folder was removed or replaced while open: writes would
        # go to a deleted file. Each write tries to reopen; until then lookups are misses.
        self._gone = False
        _TIERS.add(self)
        with self._write_lock:
            self._reclaim()

    def _after_fork(self) -> None:
        """In a forked child: fresh locks and a fresh background thread (see ``_db``)."""
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._state = threading.Lock()
        self._wal.after_fork(self._write_lock)
        self._worker = Worker(self._background, name=f"claude-force-cache-writer:{self.path}")

    # -- connections ------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        """The writer; caller holds the write lock."""
        if self._generation != _fork_generation:
            # A forked child sharing the parent's SQLite handle could corrupt the file.
            _ABANDONED.append(self._writer)
            self._writer, self._identity = connect(self.path, limits=self.limits)
            self._wal.map(self._page_size)
            self._worker = Worker(self._background, name=f"claude-force-cache-writer:{self.path}")
            self._generation = _fork_generation
            with self._state:
                self._pending.clear()
                self._queued.clear()
                self._queued_bytes = 0
        return self._writer

    def _read_db(self) -> sqlite3.Connection:
        """The reader, opened on first use; caller holds the read lock."""
        reader = self._reader
        if reader is not None and self._read_generation == _fork_generation:
            return reader
        if reader is not None:
            _ABANDONED.append(reader)
        self._reader = reader = connect_reader(self.path)
        self._read_generation = _fork_generation
        return reader

    def _close_reader(self) -> None:
        with self._read_lock:
            reader, self._reader = self._reader, None
            if reader is not None and self._read_generation == _fork_generation:
                reader.close()

    # -- failures ---------------------------------------------------------------------

    def _failed(self, exc: sqlite3.Error, action: str) -> None:
        """A failed write: count it, warn once per cause, set a damaged file aside."""
        self.stats.errors += 1
        if is_corruption(exc):
            self._recover(exc)
            return
        cause = error_cause(exc)
        self._failing.add(cause)
        if cause == "locked":
            problem = f"another process held its write lock for over {BUSY_TIMEOUT_S:g} s ({exc})"
            fix = "give each busy job its own cache_dir if this repeats"
        else:
            problem, fix = write_problem(self.path.parent, exc)
        self._log.warn(
            f"disk:{cause}",
            f"disk cache {action} failed in {self.path}: {problem}; the entry is not stored, "
            f"the run goes on; {fix}",
        )

    def _recover(self, exc: sqlite3.Error) -> None:
        """Set a damaged file aside and start a fresh one; caller holds the write lock."""
        self._damaged = None
        self._close_reader()
        self._wal.reopen()
        if self._generation == _fork_generation:
            self._writer.close()
        set_aside(self.path, exc, expected=self._identity)
        with self._state:
            self._queued.clear()
            self._queued_bytes = 0
            self._pending.clear()
            self._expired.clear()
            self._bad.clear()
        try:
            self._writer, self._identity = connect(self.path, limits=self.limits)
        except CacheDirectoryError as error:
            # The directory itself went bad mid-run: carry on without a disk tier.
            logger.error("%s; the disk cache is off for the rest of this run", error)
            self._closed = True
        else:
            self._wal.map(self._page_size)
        self._generation = _fork_generation

    def _read_failed(self, exc: sqlite3.Error) -> None:
        """A failed lookup is a miss; a damaged file is set aside by the next write."""
        self.stats.errors += 1
        if is_corruption(exc):
            self._damaged = exc
            self._worker.wake()
            return
        cause = error_cause(exc)
        self._log.warn(f"read:{cause}", f"disk cache read failed in {self.path} ({exc})")

    # -- writes -----------------------------------------------------------------------

    def _write(
        self,
        action: str,
        body: Callable[[sqlite3.Connection], T],
        failed: T,
        *,
        take_queued: bool = False,
        evict_at_most: int | None = None,
    ) -> T:
        """Run ``body`` in one write transaction with what is waiting in memory, evict to
        the limits, commit; retry on BUSY. Caller holds the write lock."""
        if self._damaged is not None:
            self._recover(self._damaged)
        batch = self._take(take_queued)
        if not self._in_place(action):
            return failed
        for attempt in range(_WRITE_ATTEMPTS):
            if self._closed or (self._closing and self._gave_up):
                return failed
            conn = self._db()
            try:
                if not self._begin(conn):
                    # Closing: the WAL stayed stuck for a busy timeout; the next queued
                    # transaction would wait as long again (a minute per 12 of them).
                    self._gave_up = self._gave_up or self._closing
                    self._wal_stuck(action)
                    return failed
                try:
                    self._keep = ""
                    if not self._tidied:
                        conn.execute(UNUSED_INDEX)
                        self._tidied = True
                    self._apply(conn, batch)
                    result = body(conn)
                    evicted = fit(
                        conn,
                        self.limits,
                        self._page_size,
                        self._keep,
                        self.path,
                        self._pages,
                        evict_at_most,
                    )
                    conn.execute("COMMIT")
                    self.stats.evictions += evicted  # rolled back, they were not evictions
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                last_try = attempt == _WRITE_ATTEMPTS - 1
                if is_busy(exc) and self._closing:
                    self._gave_up = True
                elif is_busy(exc) and not last_try:
                    continue  # the busy timeout already waited; try again
                self._failed(exc, action)
                if is_corruption(exc) and not last_try:
                    batch = _Batch()  # its rows belonged to the file set aside
                    continue  # a fresh database now stands in for the damaged one
                return failed
            self._committed(conn)
            return result
        return failed

    def _in_place(self, action: str) -> bool:
        """True when the file we write is still the one at ``self.path``, reopening it
        if it was removed or replaced; caller holds the write lock."""
        if self._closed or self._generation != _fork_generation:
            return True  # nothing to check, or ``_db()`` reconnects anyway
        if not self._gone and file_identity(self._db_file) == self._identity:
            return True
        if not self._gone:
            self._gone = True
            self._close_reader()
            self._wal.reopen()
            self._writer.close()
        try:
            self._writer, self._identity = connect(self.path, limits=self.limits)
        except CacheDirectoryError as exc:
            self.stats.errors += 1
            self._failing.add("gone")
            self._log.warn(
                "disk:gone",
                f"disk cache {action} failed, the entry is not stored and the run goes on: {exc}",
            )
            return False
        self._gone = False
        self._wal.map(self._page_size)
        logger.warning("cache database %s was removed while in use; started a fresh one", self.path)
        return True

    def _begin(self, conn: sqlite3.Connection) -> bool:
        """BEGIN IMMEDIATE once the WAL is within its budget; False (no transaction open)
        when it stays over it for ``BUSY_TIMEOUT_S``."""
        deadline: float | None = None
        while True:
            conn.execute("BEGIN IMMEDIATE")
            # Checked holding the write lock, so no other process adds to the WAL before we
            # commit: it passes its budget by at most one transaction, however many write.
            pending, self._pages = self._wal.pending()
            if pending <= self.limits.wal_bytes:
                if self._wal.due(pending):
                    self._worker.wake()  # the checkpoint runs there, never on the write path
                return True
            conn.execute("ROLLBACK")
            if deadline is None:
                deadline = time.monotonic() + BUSY_TIMEOUT_S
            if not self._wal.shrink(conn, deadline):
                return False

    def _wal_stuck(self, action: str) -> None:
        self.stats.errors += 1
        self._failing.add("wal")
        stuck = WAL_STUCK.format(self.limits.wal_bytes)
        self._log.warn("disk:wal", f"disk cache {action} skipped in {self.path}: {stuck}")

    def _committed(self, conn: sqlite3.Connection) -> None:
        if self._failing:
            for cause in self._failing:
                self._log.clear(f"disk:{cause}")
            self._failing.clear()

    def _take(self, take_queued: bool) -> _Batch:
        """Move what waits in memory into a batch no larger than one transaction may be."""
        if not (take_queued or self._pending or self._expired or self._bad or self._recount):
            # Read without the lock: what another thread notes meanwhile waits for the
            # next write, as it would had it come a moment later.
            return _NO_BATCH
        batch = _Batch()
        with self._state:
            if take_queued and self._queued:
                budget = self.limits.txn_bytes
                for key in list(self._queued):
                    envelope, created_at, seen = self._queued.pop(key)
                    self._queued_bytes -= len(envelope)
                    batch.rows.append((key, envelope, created_at))
                    batch.now = max(batch.now, seen)
                    budget -= len(envelope)
                    if budget <= 0:
                        break
            if self._pending:  # each check is cheap; most writes find nothing waiting
                for key in list(self._pending)[: self.limits.touches_per_txn]:
                    seen = self._pending.pop(key)
                    batch.touches.append((seen, key, seen))
            if self._expired:
                batch.expired = list(self._expired.items())
                self._expired.clear()
            if self._bad:
                batch.bad = [(rowid, key, env) for (rowid, key), env in self._bad.items()]
                self._bad.clear()
            batch.recount, self._recount = self._recount, False
        return batch

    def _apply(self, conn: sqlite3.Connection, batch: _Batch) -> None:
        if batch.rows:
            self._put_rows(conn, batch.rows, batch.now)
        if batch.touches:
            conn.executemany(_TOUCH, batch.touches)
        if batch.expired:
            conn.executemany(_DELETE_IF, batch.expired)
        if batch.bad:
            conn.executemany(_DELETE_BAD, batch.bad)
        if batch.recount:
            repair(conn, self.path, "held rows whose size is not their envelope's")

    def _has_work(self) -> bool:
        with self._state:
            return self._waiting()

    def _waiting(self) -> bool:
        """``_has_work`` without the lock, for deciding whether to wake the background
        thread after a write: what is queued meanwhile wakes it itself."""
        return bool(
            self._queued
            or self._pending
            or self._expired
            or self._bad
            or self._recount
            or self._damaged
        )

    def _background(self) -> None:
        """The background thread's job: a checkpoint if one is due, then queued writes."""
        self._wal.background()
        self._drain()

    def _drain(self) -> None:
        """Write everything waiting in memory, one bounded transaction at a time."""
        while True:
            # Checked under the write lock: what another thread took is committed by then.
            with self._write_lock:
                if self._closed or self._gave_up or not self._has_work():
                    return
                self._write("flush", _nothing, None, take_queued=True)

    def _put_rows(self, conn: sqlite3.Connection, rows: list[Row], now: float) -> int:
        stored = 0
        for key, envelope, created_at in rows:
            stored += self._put_row(conn, key, envelope, created_at, now)
        return stored

    def _put_row(
        self, conn: sqlite3.Connection, key: str, envelope: bytes, created_at: float, now: float
    ) -> bool:
        size = len(envelope)
        if size > self.limits.max_entry_bytes:
            # Never stored; drop any older value so a get after this set cannot
            # return something other than what was just set.
            conn.execute("DELETE FROM entries WHERE key = ?", (key,))
            return False
        conn.execute(_UPSERT, (key, envelope, size, created_at, created_at + self.ttl, now))
        self._keep = key
        return True

    def _reclaim(self) -> None:
        """On open: give back what a crash or a lower limit left; caller holds write lock."""
        conn = self._writer
        if self._wal.file_bytes() > self.limits.journal_limit:
            # Without waiting: another process writing now will checkpoint it itself.
            checkpoint_now(conn, self._wal, "TRUNCATE")
        if file_size(self.path) <= self.limits.file_bytes:
            return
        # A limit lowered since the file was written: in steps (see _shrink).
        vacuum_step = functools.partial(self._vacuum, conn, "reclaim")
        shrink(conn, self._wal, self.limits, self._page_size, self._evict_step, vacuum_step)

    def _evict_step(self, rows: int | None) -> int:
        """One reclaim transaction evicting at most ``rows`` (None: down to the limits); how
        many it committed."""
        before = self.stats.evictions
        self._write("reclaim", _nothing, None, evict_at_most=rows)
        return self.stats.evictions - before

    def _vacuum(self, conn: sqlite3.Connection, action: str, pages: int = 0) -> int | None:
        """Give free pages back to the file system (at most ``pages``, 0: all); the free
        pages left, None when it failed; caller holds the write lock."""
        try:
            return vacuum(conn, pages)
        except sqlite3.Error as exc:
            self._failed(exc, action)
            return None

    # -- public writes ------------------------------------------------------------------

    def put(self, key: str, envelope: bytes, created_at: float, now: float) -> bool:
        """Store one signed envelope now; False when it was not stored.

        That is when it is larger than ``limits.max_entry_bytes``, or the write failed
        (counted in ``errors`` and logged once per cause).
        """
        if self._queued:  # an older value queued for the key must not land after this one
            self._unqueue((key,))
        with self._write_lock:
            stored = not self._closed and self._write(
                "write", lambda conn: self._put_row(conn, key, envelope, created_at, now), False
            )
        if self._waiting():
            self._worker.wake()
        return stored

    def put_many(self, items: Iterable[Row], now: float) -> int:
        """Store envelopes now, in transactions of at most ``limits.txn_bytes`` each."""
        stored = 0
        chunk: list[Row] = []
        size = 0
        rows = list(items)
        if self._queued:
            self._unqueue(row[0] for row in rows)
        for row in rows:
            chunk.append(row)
            size += len(row[1])
            if size >= self.limits.txn_bytes:
                stored += self._put_chunk(chunk, now)
                chunk, size = [], 0
        if chunk:
            stored += self._put_chunk(chunk, now)
        if self._waiting():
            self._worker.wake()
        return stored

    def _put_chunk(self, rows: list[Row], now: float) -> int:
        with self._write_lock:
            if self._closed:
                return 0
            return self._write("write", lambda conn: self._put_rows(conn, rows, now), 0)

    def queue(self, key: str, envelope: bytes, created_at: float, now: float) -> None:
        """Store an envelope soon, on the background thread: the caller never waits."""
        with self._state:
            old = self._queued.pop(key, None)
            if old is not None:
                self._queued_bytes -= len(old[0])
            if self._queued_bytes + len(envelope) > _QUEUE_MAX_BYTES:
                self.stats.errors += 1
                full = True
            else:
                self._queued[key] = (envelope, created_at, now)
                self._queued_bytes += len(envelope)
                full = False
        if full:
            self._log.warn(
                "queue-full",
                f"disk cache writes to {self.path} are falling behind (the database is "
                "locked or slow); entries beyond 64 MiB waiting are not stored",
            )
        self._worker.wake()

    def _unqueue(self, keys: Iterable[str]) -> None:
        """Drop values queued for ``keys`` (a later write or a delete of them wins)."""
        with self._state:
            for key in keys:
                old = self._queued.pop(key, None)
                if old is not None:
                    self._queued_bytes -= len(old[0])

    def delete(self, key: str) -> None:
        self._unqueue((key,))
        with self._write_lock:
            if not self._closed:
                self._write(
                    "delete",
                    lambda conn: conn.execute("DELETE FROM entries WHERE key = ?", (key,)),
                    None,
                )

    def clear(self) -> None:
        with self._state:
            self._queued.clear()
            self._queued_bytes = 0
        with self._write_lock:
            if not self._closed:
                self._write("clear", lambda conn: conn.execute("DELETE FROM entries"), None)
                if not (self._closed or self._gone):
                    self._vacuum(self._db(), "clear")

    def prune(self, now: float) -> int:
        """Delete expired rows, by their stored expiry or by this tier's TTL; return count."""

        def body(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM entries WHERE expires_at <= ? OR created_at <= ?",
                (now, now - self.ttl),
            )
            return cursor.rowcount

        with self._write_lock:
            if self._closed:
                return 0
            removed = self._write("prune", body, 0)
            self.stats.expirations += removed
            return removed

    def flush(self) -> None:
        """Write everything waiting in memory before returning (durable on return)."""
        self._drain()

    def start_closing(self) -> None:
        """From now on a write that waited out the busy timeout is not retried (see close)."""
        self._closing = True

    def close(self) -> None:
        """Write what waits, truncate the WAL, close the connections, join the thread.

        While another process holds the write lock this waits one busy timeout at most
        (what is queued is then not stored: a cache entry, never an answer).
        """
        self._closing = True
        self._worker.close()
        self.flush()
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._close_reader()
            if self._generation == _fork_generation and not self._gone:
                if not self._gave_up:  # else the lock is held: a later open reclaims the WAL
                    self._wal.truncate(self._writer)
                self._writer.close()
            self._wal.close()

    # -- reads ------------------------------------------------------------------------

    def touch(self, key: str, now: float) -> None:
        """Note an access served by an upper tier, so disk LRU sees the entry as used."""
        with self._state:
            self._note_access(key, now)

    def _note_access(self, key: str, now: float) -> None:
        """Caller holds the state lock."""
        self._pending[key] = now
        if len(self._pending) >= PENDING_LIMIT:
            self._worker.wake()  # a hit never writes to disk itself

    def get(self, key: str, now: float) -> Found | Miss:
        with self._read_lock:
            if self._closed or self._gone:
                self.stats.misses += 1
                return MISS
            # No lock: one dict lookup is atomic, and most lookups find nothing queued.
            queued = self._queued.get(key) if self._queued else None
            if queued is not None:
                envelope, created = queued[0], queued[1]
                row: tuple[Any, ...] | None = (
                    None,
                    envelope,
                    "blob",
                    len(envelope),
                    created,
                    created + self.ttl,
                    now,
                )
            else:
                try:
                    row = self._read_db().execute(_GET, (key,)).fetchone()
                except sqlite3.Error as exc:
                    self._read_failed(exc)
                    row = None
            if row is None:
                self.stats.misses += 1
                return MISS
            return self._found(key, row, now)

    def _found(self, key: str, row: tuple[Any, ...], now: float) -> Found | Miss:
        """Check a row read for ``key``; any malformed row is a counted miss, deleted."""
        rowid, envelope, kind, size, created_col, expires_at, last_access = row
        try:
            problem = column_problem(envelope, kind, size, created_col, expires_at, last_access)
            if problem is not None:
                with self._state:
                    self._recount = True
                raise CacheIntegrityError(f"cache entry {key[:16]}... {problem}")
            opened = open_value(self._secret, key, envelope, created_col, self.ttl, now)
        except CacheIntegrityError as exc:
            self._reject(rowid, key, envelope, exc)
            return MISS
        if opened is None:
            self.stats.expirations += 1
            self.stats.misses += 1
            with self._state:
                self._expired[key] = created_col
            return MISS
        self.stats.hits += 1
        if now - last_access >= ACCESS_RESOLUTION_S:
            with self._state:
                self._note_access(key, now)
        return Found(opened[1], created_col, opened[0], envelope)

    def _reject(self, rowid: int | None, key: str, envelope: object, exc: Exception) -> None:
        self.stats.integrity_failures += 1
        self.stats.misses += 1
        logger.warning("%s; deleted it from %s", exc, self.path)
        if rowid is None:
            return  # a queued envelope: ours, and written as it is
        with self._state:
            self._bad[(rowid, key)] = envelope
        self._worker.wake()

    # -- maintenance -----------------------------------------------------------------

    def verify(self) -> dict[str, int]:
        """Check every row's signature in batches; delete the bad ones; return counts.

        Batches keep each read short, so other processes keep writing meanwhile.
        """
        checked = bad = 0
        last = 0
        while True:
            with self._read_lock:
                rows = self._read_batch(last)
            if not rows:
                break
            last = rows[-1][0]
            checked += len(rows)
            bad_rows = [(r[0], r[2]) for r in rows if not row_ok(self._secret, r)]
            if bad_rows:
                bad += len(bad_rows)
                self.stats.integrity_failures += len(bad_rows)
                logger.warning("deleted %d cache entries that failed verification", len(bad_rows))
                with self._write_lock:
                    self._write("verify", functools.partial(_delete_rows, rows=bad_rows), None)
        if bad:
            # Once all are checked: a recount deletes every mis-sized row at once.
            with self._state:
                self._recount = True
            with self._write_lock:
                self._write("verify", _nothing, None)
        return {"checked": checked, "ok": checked - bad, "bad": bad}

    def _read_batch(self, after: int) -> list[tuple[Any, ...]]:
        if self._closed or self._gone:
            return []
        try:
            cursor = self._read_db().execute(
                f"SELECT rowid, CAST(key AS BLOB), {COLUMNS} FROM entries "
                "WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (after, _VERIFY_BATCH),
            )
            return cursor.fetchall()
        except sqlite3.Error as exc:
            self._read_failed(exc)
            return []

    def snapshot(self) -> dict[str, Any]:
        entries = size = 0
        with self._read_lock:
            if not (self._closed or self._gone):
                try:
                    size, entries = self._totals(self._read_db())
                except sqlite3.Error as exc:
                    self._read_failed(exc)
        return self.stats.as_dict(entries=entries, size_bytes=size, max_size_bytes=self.max_bytes)

    def _totals(self, reader: sqlite3.Connection) -> tuple[int, int]:
        """Stored bytes and entries: the running totals, or counted from the valid rows
        while they cannot be right (the next write repairs them)."""
        row = reader.execute(_TOTAL).fetchone()
        if row is not None and plausible(row[0], row[1]):
            return int(row[0]), int(row[1])
        size, entries = reader.execute(RECOUNT).fetchone()
        return int(size), int(entries)


def _delete_rows(conn: sqlite3.Connection, *, rows: list[tuple[int, object]]) -> None:
    # Delete only the bad bytes we read: another process may have rewritten the row since.
    conn.executemany("DELETE FROM entries WHERE rowid = ? AND CAST(envelope AS BLOB) IS ?", rows)
