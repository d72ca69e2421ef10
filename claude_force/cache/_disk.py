"""The disk tier: signed envelopes in one SQLite database, LRU within a byte limit.

Every write is one ``BEGIN IMMEDIATE`` transaction that stores the row, reads the running
byte total and evicts least-recently-accessed rows until the total is within the limit, so
the limit holds at every commit, across processes. Hits do not write: their access times
wait in memory and go out with the next write, ``flush()`` or ``close()``.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from .._errors import CacheDirectoryError, CacheIntegrityError, InvalidArgumentError
from ._access import AccessWriter
from ._checkpoint import Checkpointer
from ._envelope import decode_payload, open_envelope
from ._sqlite import DB_NAME, connect, is_busy, is_corruption, set_aside
from ._types import MISS, Found, Miss, TierStats, check_key

__all__ = ["DiskTier"]

logger = logging.getLogger("claude_force.cache")
T = TypeVar("T")

# Pending access times are written with the next write; past this many, a hit writes them
# itself so memory stays bounded on a read-only workload.
PENDING_LIMIT = 1024
# LRU needs to know which entries are in use, not the exact second: an access within this
# many seconds of the recorded one is not recorded again, so hot keys cost no writes.
ACCESS_RESOLUTION_S = 60.0
_WRITE_ATTEMPTS = 4
_EVICT_BATCH = 8
_VERIFY_BATCH = 256
# Connections inherited through fork() must never be used or closed by the child; they are
# parked here so garbage collection does not close them either.
_ABANDONED: list[sqlite3.Connection] = []
# Bumped in a forked child, so a tier notices the fork without a getpid() call per read.
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

_GET = "SELECT envelope, created_at, last_access FROM entries WHERE key = ?"
_UPSERT = (
    "INSERT INTO entries (key, envelope, size, created_at, expires_at, last_access) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET envelope = excluded.envelope, "
    "size = excluded.size, created_at = excluded.created_at, "
    "expires_at = excluded.expires_at, last_access = excluded.last_access"
)
_TOTAL = "SELECT total_bytes, entries FROM meta WHERE id = 0"
_LRU = "SELECT rowid, size FROM entries WHERE key != ? ORDER BY last_access, rowid LIMIT ?"
_TOUCH = "UPDATE entries SET last_access = ? WHERE key = ? AND last_access < ?"
_DELETE_IF = "DELETE FROM entries WHERE key = ? AND created_at = ?"


def _delete_rows(conn: sqlite3.Connection, *, rows: list[tuple[int, bytes]]) -> None:
    # Delete only the bad bytes we read: another process may have rewritten the row since.
    conn.executemany("DELETE FROM entries WHERE rowid = ? AND envelope = ?", rows)


class DiskTier:
    """SQLite-backed tier in ``directory`` (which the caller has already checked)."""

    def __init__(self, directory: Path, *, secret: bytes, max_bytes: int, ttl: float) -> None:
        self.path = directory / DB_NAME
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.stats = TierStats()
        self._secret = secret
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}
        # Entries found in Redis, copied here with the next write rather than on the hit path.
        self._promoted: dict[str, tuple[bytes, float, float]] = {}
        self._expired: dict[str, float] = {}  # key -> created_at seen, deleted on next write
        self._conn, self._identity = connect(self.path)
        self._checkpointer = Checkpointer(self.path)
        self._access = AccessWriter(self.path)
        self._generation = _fork_generation
        self._closed = False

    # -- connection management --------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._generation != _fork_generation:
            # A forked child sharing the parent's SQLite handle could corrupt the file.
            _ABANDONED.append(self._conn)
            self._conn, self._identity = connect(self.path)
            self._checkpointer = Checkpointer(self.path)
            self._access = AccessWriter(self.path)
            self._generation = _fork_generation
            self._pending.clear()
        return self._conn

    def _recover(self, exc: sqlite3.Error, action: str) -> None:
        """Handle a failed statement: set a damaged file aside, else log and go on."""
        self.stats.errors += 1
        if is_corruption(exc):
            self._checkpointer.close()
            self._conn.close()
            set_aside(self.path, exc, expected=self._identity)
            self._pending.clear()
            self._promoted.clear()
            self._expired.clear()
            try:
                self._conn, self._identity = connect(self.path)
            except CacheDirectoryError as error:
                # The directory itself went bad mid-run: carry on without a disk tier.
                logger.error("%s; the disk cache is off for the rest of this run", error)
                self._closed = True
                return
            self._checkpointer = Checkpointer(self.path)
        else:
            logger.warning("disk cache %s failed in %s (%s); continuing", action, self.path, exc)

    def _write(self, action: str, body: Callable[[sqlite3.Connection], T], failed: T) -> T:
        """Run ``body`` in one write transaction with pending access times; retry on BUSY."""
        for attempt in range(_WRITE_ATTEMPTS):
            if self._closed:
                return failed
            conn = self._db()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    self._flush_pending(conn)
                    result = body(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                last_try = attempt == _WRITE_ATTEMPTS - 1
                if is_busy(exc) and not last_try:
                    continue  # the busy timeout already waited; try again
                self._recover(exc, action)
                if is_corruption(exc) and not last_try:
                    continue  # a fresh database now stands in for the damaged one
                return failed
            self._pending.clear()
            self._promoted.clear()
            self._expired.clear()
            self._checkpointer.committed()
            return result
        return failed

    def _flush_pending(self, conn: sqlite3.Connection) -> None:
        if self._promoted:
            rows = [(key, env, created) for key, (env, created, _) in self._promoted.items()]
            now = max(seen for _, _, seen in self._promoted.values())
            self.stats.evictions += self._put_rows(conn, rows, now)[1]
        if self._pending:
            conn.executemany(_TOUCH, [(t, k, t) for k, t in self._pending.items()])
        if self._expired:
            conn.executemany(_DELETE_IF, list(self._expired.items()))

    # -- reads -----------------------------------------------------------------------

    def touch(self, key: str, now: float) -> None:
        """Note an access served by an upper tier, so disk LRU sees the entry as used."""
        with self._lock:
            self._note_access(key, now)

    def put_later(self, key: str, envelope: bytes, created_at: float, now: float) -> None:
        """Store an envelope with the next write or flush: no disk write on a hit path."""
        with self._lock:
            self._promoted[key] = (envelope, created_at, now)
            if len(self._promoted) >= PENDING_LIMIT and not self._closed:
                self._write("flush", lambda conn: None, None)

    def _note_access(self, key: str, now: float) -> None:
        self._pending[key] = now
        if len(self._pending) >= PENDING_LIMIT and not self._closed:
            # Handed to a background thread: a hit never writes to disk itself.
            batch, self._pending = self._pending, {}
            self._access.submit(batch)

    def get(self, key: str, now: float) -> Found | Miss:
        with self._lock:
            if self._closed:
                self.stats.misses += 1
                return MISS
            try:
                row = self._db().execute(_GET, (key,)).fetchone()
            except sqlite3.Error as exc:
                self._recover(exc, "read")
                row = None
            if row is None:
                self.stats.misses += 1
                return MISS
            envelope, created_col, last_access = row
            try:
                opened = open_envelope(self._secret, key, envelope)
                if opened.created_at != created_col:
                    raise CacheIntegrityError(
                        f"cache entry {key[:16]}... has a created_at that does not match its "
                        "signed one"
                    )
                value = decode_payload(key, opened.payload)
            except CacheIntegrityError as exc:
                self._reject(key, envelope, exc)
                return MISS
            if now - opened.created_at >= self.ttl:
                self.stats.expirations += 1
                self.stats.misses += 1
                self._expired[key] = created_col
                return MISS
            self.stats.hits += 1
            if now - last_access >= ACCESS_RESOLUTION_S:
                self._note_access(key, now)
            return Found(value, opened.created_at, len(opened.payload), envelope)

    def _reject(self, key: str, envelope: bytes, exc: CacheIntegrityError) -> None:
        self.stats.integrity_failures += 1
        self.stats.misses += 1
        logger.warning("%s; deleted it from %s", exc, self.path)
        # Delete only the bad bytes we read: another process may have rewritten the key since.
        self._write(
            "delete",
            lambda conn: conn.execute(
                "DELETE FROM entries WHERE key = ? AND envelope = ?", (key, envelope)
            ),
            None,
        )

    # -- writes ----------------------------------------------------------------------

    def put(self, key: str, envelope: bytes, created_at: float, now: float) -> bool:
        """Store one signed envelope; False when it was not stored.

        That is when it is larger than the whole tier, or the write failed (and was logged).
        """
        return self.put_many([(key, envelope, created_at)], now) == 1

    def put_many(self, items: Iterable[tuple[str, bytes, float]], now: float) -> int:
        """Store envelopes in one transaction, evicting to the limit before it commits."""
        rows = list(items)
        with self._lock:
            if self._closed or not rows:
                return 0
            stored, evicted = self._write(
                "write", lambda conn: self._put_rows(conn, rows, now), (0, 0)
            )
            self.stats.evictions += evicted
            return stored

    def _put_rows(
        self, conn: sqlite3.Connection, rows: list[tuple[str, bytes, float]], now: float
    ) -> tuple[int, int]:
        stored = 0
        keep = ""
        for key, envelope, created_at in rows:
            size = len(envelope)
            if size > self.max_bytes:
                # Never stored; drop any older value so a get after this set cannot
                # return something other than what was just set.
                conn.execute("DELETE FROM entries WHERE key = ?", (key,))
                continue
            conn.execute(_UPSERT, (key, envelope, size, created_at, created_at + self.ttl, now))
            stored += 1
            keep = key
        total = conn.execute(_TOTAL).fetchone()[0]
        evicted = self._evict(conn, total - self.max_bytes, keep) if total > self.max_bytes else 0
        return stored, evicted

    def _evict(self, conn: sqlite3.Connection, excess: int, keep: str) -> int:
        """Delete least-recently-accessed rows (never ``keep``) until ``excess`` bytes go."""
        freed = evicted = 0
        while freed < excess:
            victims: list[tuple[int]] = []
            for rowid, size in conn.execute(_LRU, (keep, _EVICT_BATCH)).fetchall():
                victims.append((rowid,))
                freed += size
                if freed >= excess:
                    break
            if not victims:
                break
            conn.executemany("DELETE FROM entries WHERE rowid = ?", victims)
            evicted += len(victims)
        return evicted

    def delete(self, key: str) -> None:
        with self._lock:
            if not self._closed:
                self._write(
                    "delete",
                    lambda conn: conn.execute("DELETE FROM entries WHERE key = ?", (key,)),
                    None,
                )

    def clear(self) -> None:
        with self._lock:
            if not self._closed:
                self._write("clear", lambda conn: conn.execute("DELETE FROM entries"), None)

    def prune(self, now: float) -> int:
        """Delete expired rows, by their stored expiry or by this tier's TTL; return count."""

        def body(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM entries WHERE expires_at <= ? OR created_at <= ?",
                (now, now - self.ttl),
            )
            return cursor.rowcount

        with self._lock:
            if self._closed:
                return 0
            removed = self._write("prune", body, 0)
            self.stats.expirations += removed
            return removed

    def flush(self) -> None:
        with self._lock:
            if not self._closed and (self._pending or self._promoted or self._expired):
                self._write("flush", lambda conn: None, None)
        self._access.drain()

    def close(self) -> None:
        self.flush()
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._generation == _fork_generation:
                    self._access.close()
                    self._checkpointer.close()
                    self._conn.close()

    # -- maintenance -----------------------------------------------------------------

    def verify(self) -> dict[str, int]:
        """Check every row's signature in batches; delete the bad ones; return counts.

        Batches keep each read short, so other processes keep writing meanwhile.
        """
        checked = bad = 0
        last = 0
        while True:
            with self._lock:
                rows = self._read_batch(last)
                if not rows:
                    break
                last = rows[-1][0]
                checked += len(rows)
                bad_rows = [(r[0], r[2]) for r in rows if not self._row_ok(r[1], r[2], r[3])]
                if bad_rows:
                    bad += len(bad_rows)
                    self.stats.integrity_failures += len(bad_rows)
                    logger.warning(
                        "deleted %d cache entries that failed verification", len(bad_rows)
                    )
                    self._write("verify", functools.partial(_delete_rows, rows=bad_rows), None)
        return {"checked": checked, "ok": checked - bad, "bad": bad}

    def _read_batch(self, after: int) -> list[tuple[Any, ...]]:
        if self._closed:
            return []
        try:
            cursor = self._db().execute(
                "SELECT rowid, key, envelope, created_at FROM entries "
                "WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (after, _VERIFY_BATCH),
            )
            return cursor.fetchall()
        except sqlite3.Error as exc:
            self._recover(exc, "verify")
            return []

    def _row_ok(self, key: object, envelope: object, created_col: object) -> bool:
        if not isinstance(key, str) or not isinstance(envelope, bytes):
            return False
        try:
            check_key(key)
            opened = open_envelope(self._secret, key, envelope)
            decode_payload(key, opened.payload)
        except (CacheIntegrityError, InvalidArgumentError):
            return False
        return opened.created_at == created_col

    def snapshot(self) -> dict[str, Any]:
        entries = size = 0
        with self._lock:
            if not self._closed:
                try:
                    size, entries = self._db().execute(_TOTAL).fetchone()
                except sqlite3.Error as exc:
                    self._recover(exc, "stats")
        return self.stats.as_dict(entries=entries, size_bytes=size, max_size_bytes=self.max_bytes)
