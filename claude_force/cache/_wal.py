"""Keeping the disk tier's write-ahead log within its budget (``DiskLimits.wal_bytes``).

Writes never checkpoint: the writer's connection has SQLite's automatic checkpoints off, so a
commit appends its pages to the WAL and returns, durable against a process crash (WAL with
``synchronous=NORMAL``), without the two fsyncs a checkpoint costs. Once the WAL passes
``checkpoint_at`` the tier's background thread copies it into the database on a connection
of its own, PASSIVE (writers never wait for it); the next write then starts the WAL over
from its beginning, and SQLite truncates the file to ``journal_limit``.

A writer that keeps committing while a checkpoint runs leaves new frames behind it, and the
WAL only starts over once every frame is copied. So when frames remain after the pass, the
background thread runs a second one holding this process's write lock: it copies only what
came during the first. Whatever the background thread manages, a writer still
begins a transaction only while the WAL is within its whole budget, first truncating it
(waiting for other processes) otherwise: the hard bound, as before.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from .._warnings import OnceLog
from ._limits import DiskLimits
from ._sqlite import BUSY_TIMEOUT_S, DB_NAME, connect_reader, file_size

__all__ = ["WAL_STUCK", "WalKeeper"]

# Unlocked passes before the one that holds the write lock. Each pass costs two fsyncs
# whatever it copies, so one: it copies the bulk, the locked one what came meanwhile.
_UNLOCKED_PASSES = 1
_DATA_VERSION = "PRAGMA data_version"
# A truncating checkpoint that found another one running is retried after this pause.
_PAUSE_S = 0.001
_PAUSE_MAX_S = 0.05
# How long a truncating checkpoint is retried while another checkpoint runs.
_TRUNCATE_PATIENCE_S = 0.5
WAL_STUCK = (
    "its write-ahead log is over its {} byte budget and could not be checkpointed for "
    f"{BUSY_TIMEOUT_S:g} s (another process holds a long read on it); the entry is not "
    "stored, the run goes on"
)
# Connections inherited through fork() are parked, never used or closed by the child.
_ABANDONED: list[sqlite3.Connection] = []


class WalKeeper:
    """Checkpoints for one database: in the background, and truncating when over budget."""

    def __init__(self, path: Path, limits: DiskLimits, log: OnceLog, write_lock: threading.Lock):
        self.limits = limits
        self.passes = 0  # background passes run, for tests
        self._path = path
        self._wal = str(path.with_name(DB_NAME + "-wal"))
        self._log = log
        self._write_lock = write_lock
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._stale = False  # the file was replaced: reopen before the next pass
        self._wanted = False
        self._seen = 0  # the WAL's size after the last background pass

    def size(self) -> int:
        return file_size(self._wal)

    def after_commit(self) -> bool:
        """True when the background thread should checkpoint (the caller wakes it)."""
        size = file_size(self._wal)
        if size < self.limits.checkpoint_at:
            self._seen = 0  # started over: the next growth past the mark needs a pass
            return False
        # Past the mark and grown since the last pass (which may have been unable to finish
        # while another process read an old snapshot): once per growth, not per commit.
        if self._wanted or size <= self._seen:
            return False
        self._wanted = True
        return True

    def background(self) -> None:
        """Copy the WAL into the database; on the tier's background thread."""
        if not self._wanted:
            return
        try:
            conn = self._db()
            for _ in range(_UNLOCKED_PASSES):
                if self._pass(conn):
                    return
            with self._write_lock:  # this process's writer waits for this one only
                self._pass(conn)
        except sqlite3.Error as exc:
            # Nothing is lost: the pages stay in the WAL, and a writer truncates it if needed.
            self._log.warn("checkpoint", f"disk cache checkpoint of {self._path} failed ({exc})")
        finally:
            self._seen = file_size(self._wal)
            self._wanted = False

    def _pass(self, conn: sqlite3.Connection) -> bool:
        """One PASSIVE checkpoint; True when every frame of the WAL is now in the database
        (or another connection is checkpointing it)."""
        self.passes += 1
        before = conn.execute(_DATA_VERSION).fetchone()[0]
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if busy:
            return True  # another connection is at it
        # ``frames`` is the WAL as the checkpoint began: a commit since then (which moves
        # data_version) left frames it did not copy, and the WAL cannot start over yet.
        return bool(frames <= copied and conn.execute(_DATA_VERSION).fetchone()[0] == before)

    def _db(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is not None and self._pid == os.getpid() and not self._stale:
            return conn
        if conn is not None and self._pid != os.getpid():
            _ABANDONED.append(conn)  # the parent's: a forked child must not touch it
        elif conn is not None:
            conn.close()
        self._stale = False
        self._conn = conn = connect_reader(self._path)
        self._pid = os.getpid()
        return conn

    def reopen(self) -> None:
        """The database file was set aside or replaced: the next pass opens the new one."""
        self._stale = True

    def close(self) -> None:
        """Close the background connection; call once the background thread has stopped."""
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            conn.close()

    # -- on the writer's connection -----------------------------------------------------

    def truncate(self, conn: sqlite3.Connection) -> bool:
        """A TRUNCATE checkpoint: waits (busy timeout) for other connections, empties the
        WAL; True when it did. Retried briefly while another checkpoint (the background
        thread's, or another process's) runs, which makes it fail at once."""
        pause = _PAUSE_S
        deadline = time.monotonic() + _TRUNCATE_PATIENCE_S
        while True:
            try:
                busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.Error as exc:
                # Nothing is lost: the pages stay in the WAL until a later checkpoint.
                self._log.warn(
                    "checkpoint", f"disk cache checkpoint of {self._path} failed ({exc})"
                )
                return False
            if not busy or time.monotonic() >= deadline:
                return not busy
            time.sleep(pause)
            pause = min(pause * 2, _PAUSE_MAX_S)

    def shrink(self, conn: sqlite3.Connection, deadline: float) -> bool:
        """Truncate until the WAL is within its budget or ``deadline`` passes.

        While other processes keep writing, SQLite's PASSIVE checkpoints never catch up with
        the WAL's end, so it is never started over and grows. A TRUNCATE checkpoint waits
        for the writers and readers (busy timeout) and empties it; it fails at once while
        another connection checkpoints, hence the retries (in ``truncate``)."""
        while True:
            self.truncate(conn)
            if file_size(self._wal) <= self.limits.wal_bytes:
                return True
            if time.monotonic() >= deadline:
                return False
