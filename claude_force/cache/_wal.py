"""Keeping the disk tier's write-ahead log within its budget (``DiskLimits.wal_bytes``).

Writes never checkpoint: the writer's connection has SQLite's automatic checkpoints off, so a
commit appends its pages to the WAL and returns, durable against a process crash (WAL with
``synchronous=NORMAL``), without the two fsyncs a checkpoint costs. Once the WAL passes
``checkpoint_at`` the tier's background thread copies it into the database on a connection
of its own, PASSIVE (writers never wait for it); the next write then starts the WAL over
from its beginning, reusing the file as it is (SQLite truncates it only when it grew past
``wal_bytes``: truncating after every checkpoint costs that write milliseconds). How full
the WAL is comes from its frame count in the WAL index (``_walindex``), not the file's size.

A writer that keeps committing while a checkpoint runs leaves new frames behind it, and the
WAL only starts over once every frame is copied. So the background thread runs further
unlocked passes, each copying what came during the one before, until little is left, and
then one holding this process's write lock: the writer waits for that one only, and it
copies and syncs a few frames (each unlocked pass has synced the database pages it copied,
``WalIndex.flush``; SQLite syncs them only in the pass that catches up). Whatever the
background thread manages, a writer still begins a transaction only while the WAL is within
its whole budget, first truncating it (waiting for other processes) otherwise: the hard
bound, as before.
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
from ._walindex import WalIndex

__all__ = ["WAL_STUCK", "WalKeeper"]

# Unlocked passes before the one that holds the write lock: the first copies the bulk,
# the next ones what came meanwhile, until so little is left (``_CATCH_UP_FRAMES``) that
# the locked one, which the writer waits for, costs it little more than two small fsyncs.
_UNLOCKED_PASSES = 4
_CATCH_UP_FRAMES = 24
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
_WAL_HEADER = 32
_FRAME_HEADER = 24


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
        self._index = WalIndex(str(path))
        # Held by this process's checkpoints: a writer that must truncate the WAL waits for
        # the background pass to end instead of retrying after pauses (SQLite makes a
        # second checkpointer fail at once). Taken after the write lock, never before it.
        self._checkpointing = threading.Lock()
        self._lock_pid = os.getpid()
        # The background thread checkpoints once the WAL passes this. A writer that finds
        # the WAL over its budget (the checkpoint took longer than the writes left room
        # for: a busy disk) lowers it; each cycle that did not raises it back a little.
        self._start_at = limits.checkpoint_at
        self._frame_bytes = 0

    def map(self, page_size: int) -> None:
        """Read the WAL's frames from its index from now on (``_walindex``); call once the
        writer has opened the database (again)."""
        self._frame_bytes = page_size + _FRAME_HEADER
        self._index.attach()

    def size(self) -> int:
        """Bytes of frames written since the WAL last started over. The file is at least
        this large, and larger after it started over (it is reused from its beginning),
        but never past the largest this was, or ``wal_bytes`` once it started over again."""
        frames = self._index.frames()
        if frames is None:
            return file_size(self._wal)
        return _WAL_HEADER + frames[0] * self._frame_bytes if frames[0] else 0

    def pending(self) -> tuple[int, int]:
        """(``size``, or 0 when every frame is in the database: the next write starts the
        WAL over, unless a reader still uses it, when it adds one transaction; and the
        database's size in pages, 0 when unknown). Exact while holding the write lock, when
        no other writer moves the index."""
        frames = self._index.frames()
        if frames is None:
            return file_size(self._wal), 0
        written, copied, pages = frames
        if written <= copied:
            return 0, pages
        return _WAL_HEADER + written * self._frame_bytes, pages

    def file_bytes(self) -> int:
        """The WAL file's size, whatever it holds."""
        return file_size(self._wal)

    def due(self, size: int) -> bool:
        """True when the background thread should checkpoint a WAL of ``size`` bytes (the
        caller wakes it). A writer asks with what ``pending`` told it as its transaction
        began: the check then costs no read of its own, and it runs one write later."""
        if size < self._start_at:
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
                # The pages this pass copied are synced now, off the write lock: the
                # locked pass then syncs only its own few.
                self._index.flush()
                if self._behind() <= _CATCH_UP_FRAMES:
                    break
            with self._write_lock:  # this process's writer waits for this one only
                self._pass(conn)
            self._start_at = min(
                self.limits.checkpoint_at, self._start_at + self.limits.wal_bytes // 32
            )
        except sqlite3.Error as exc:
            # Nothing is lost: the pages stay in the WAL, and a writer truncates it if needed.
            self._log.warn("checkpoint", f"disk cache checkpoint of {self._path} failed ({exc})")
        finally:
            self._seen = self.size()
            self._wanted = False

    def _behind(self) -> int:
        """Frames not yet copied into the database (0 when the index cannot be read: one
        unlocked pass then, as before the index was read)."""
        frames = self._index.frames()
        return 0 if frames is None else max(0, frames[0] - frames[1])

    def _pass(self, conn: sqlite3.Connection) -> bool:
        """One PASSIVE checkpoint; True when every frame of the WAL is now in the database
        (or another connection is checkpointing it)."""
        self.passes += 1
        with self._checkpoint_lock():
            before = conn.execute(_DATA_VERSION).fetchone()[0]
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if busy:
            return True  # another connection is at it
        # ``frames`` is the WAL as the checkpoint began: a commit since then (which moves
        # data_version) left frames it did not copy, and the WAL cannot start over yet.
        return bool(frames <= copied and conn.execute(_DATA_VERSION).fetchone()[0] == before)

    def after_fork(self, write_lock: threading.Lock) -> None:
        """In a forked child: the tier's fresh write lock, and a fresh checkpoint lock."""
        self._write_lock = write_lock
        self._checkpointing = threading.Lock()
        self._lock_pid = os.getpid()

    def _checkpoint_lock(self) -> threading.Lock:
        """The lock of this process's checkpoints. A forked child gets a new one: the
        parent's may have been held, at the fork, by a thread the child does not have."""
        if self._lock_pid != os.getpid():
            self._checkpointing = threading.Lock()
            self._lock_pid = os.getpid()
        return self._checkpointing

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
        """The database file was set aside or replaced: the next pass opens the new one
        (and the caller ``map``s its index once its writer has)."""
        self._stale = True

    def close(self) -> None:
        """Close the background connection; call once the background thread has stopped
        and the tier's other connections are closed."""
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            conn.close()
        self._index.detach()

    # -- on the writer's connection -----------------------------------------------------

    def truncate(self, conn: sqlite3.Connection, mode: str = "TRUNCATE") -> bool:
        """A TRUNCATE checkpoint (or ``mode``): waits (busy timeout) for other connections,
        empties the WAL; True when it did. Retried briefly while another checkpoint (another
        process's) runs, which makes it fail at once."""
        pause = _PAUSE_S
        deadline = time.monotonic() + _TRUNCATE_PATIENCE_S
        while True:
            lock = self._checkpoint_lock()
            if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return False  # our own pass outlasted the patience: a later write retries
            try:
                busy = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()[0]
            except sqlite3.Error as exc:
                # Nothing is lost: the pages stay in the WAL until a later checkpoint.
                self._log.warn(
                    "checkpoint", f"disk cache checkpoint of {self._path} failed ({exc})"
                )
                return False
            finally:
                lock.release()
            if not busy or time.monotonic() >= deadline:
                return not busy
            time.sleep(pause)
            pause = min(pause * 2, _PAUSE_MAX_S)

    def shrink(self, conn: sqlite3.Connection, deadline: float) -> bool:
        """Checkpoint until the WAL is within its budget or ``deadline`` passes.

        While other processes keep writing, SQLite's PASSIVE checkpoints never catch up with
        the WAL's end, so it is never started over and grows. A RESTART checkpoint waits
        for the writers and readers (busy timeout) and copies all of it, so the next write
        starts it over (and SQLite truncates the file if it grew past ``wal_bytes``); a
        TRUNCATE one also empties the file, needed only when its frames cannot be read. It
        fails at once while another process checkpoints, hence the retries (``truncate``).
        The background thread then starts its checkpoints earlier (``_start_at``)."""
        budget = self.limits.wal_bytes
        self._start_at = max(budget // 4, self._start_at - budget // 8)
        readable = self._index.frames() is not None
        while True:
            if readable:
                self.truncate(conn, "RESTART")
                if self.pending()[0] <= self.limits.wal_bytes:
                    return True
            else:
                self.truncate(conn)
                if file_size(self._wal) <= self.limits.wal_bytes:
                    return True
            if time.monotonic() >= deadline:
                return False
