"""How many frames the disk tier's WAL holds, read from SQLite's WAL index (``-shm``).

The WAL file's size does not tell: SQLite reuses the file from its beginning once a
checkpoint has copied every frame, and only truncates it when it grew past
``journal_size_limit`` (truncating after every checkpoint costs the write that starts the
WAL over milliseconds). The WAL index header does: ``mxFrame``, the frames written since the
WAL last started over, ``nBackfill``, how many of them a checkpoint has copied into the
database, and ``nPage``, the database's size in pages (https://sqlite.org/walformat.html;
native byte order). One ``pread`` costs less
than the ``stat`` it replaces.

POSIX drops every ``fcntl`` lock a process holds on a file when *any* of its descriptors of
that file is closed, SQLite's locks on the index included (another process could then take
the index for its own and reset it). So this module opens one descriptor per index file per
process, shared by every tier that reads it, and closes it only when the last of them
detaches, after their connections are closed; a forked child never closes its parent's.
The same holds for a second, read-only descriptor of the database itself, which the
background thread ``flush``es: a checkpoint that has not caught up with the WAL's end leaves
the pages it copied unsynced, and the one that catches up (holding the write lock) would
otherwise sync them all while writers wait.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from dataclasses import dataclass

__all__ = ["WalIndex"]

# mxFrame and nPage (the database's size in pages, 0 when unknown) at byte 16 of the
# header; nBackfill at byte 96 (the checkpoint info after the header's two 48-byte copies).
_MX_FRAME = struct.Struct("=16xII")
_BACKFILL = struct.Struct("=96xI")
_READ = _BACKFILL.size


@dataclass
class _Shared:
    fd: int
    db_fd: int  # -1 when the database could not be opened
    inode: tuple[tuple[int, int], tuple[int, int] | None]  # the index's, the database's
    users: int
    pid: int


# Without pread (Windows) the tier stats the WAL file instead.
_READABLE = hasattr(os, "pread")
_SYNC = getattr(os, "fdatasync", os.fsync)
_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
_lock = threading.Lock()
_shared: dict[str, _Shared] = {}


def _fresh_lock_in_child() -> None:
    """A forked child starts with an unheld lock (another thread may have held it)."""
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_lock_in_child)
# Descriptors this process must never close: a parent's (after fork), or a replaced file's
# while some tier may still use it. Bounded by forks and file replacements.
_PARKED: list[int] = []


def _inode(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


class WalIndex:
    """The frame counts of one database's WAL; ``None`` when its index cannot be read."""

    def __init__(self, db_path: str) -> None:
        self._db_path = db_path
        self._path = db_path + "-shm"
        self._entry: _Shared | None = None

    def attach(self) -> None:
        """Read the index file now at the path; call once a connection has opened it."""
        shm = _inode(self._path) if _READABLE else None
        inode = None if shm is None else (shm, _inode(self._db_path))
        entry = self._entry
        if entry is not None and entry.pid == os.getpid() and entry.inode == inode:
            return  # the same files: closing our descriptors would drop SQLite's locks
        self.detach()
        if inode is None:
            return
        with _lock:
            entry = _shared.get(self._path)
            if entry is not None and (entry.pid != os.getpid() or entry.inode != inode):
                # A parent's, or a replaced file's: never closed.
                _PARKED.extend(fd for fd in (entry.fd, entry.db_fd) if fd >= 0)
                del _shared[self._path]
                entry = None
            if entry is None:
                entry = _open(self._path, self._db_path, inode)
                if entry is None:
                    return
                _shared[self._path] = entry
            entry.users += 1
            self._entry = entry

    def detach(self) -> None:
        """Stop reading; the descriptor closes with its last user (whose connections to
        the database must be closed by then)."""
        entry, self._entry = self._entry, None
        if entry is None or entry.pid != os.getpid():
            return
        with _lock:
            entry.users -= 1
            if entry.users > 0:
                return
            if _shared.get(self._path) is entry:
                del _shared[self._path]
                os.close(entry.fd)
                if entry.db_fd >= 0:
                    os.close(entry.db_fd)
            # else: parked when the file was replaced; it stays open

    def frames(self) -> tuple[int, int, int] | None:
        """(frames written since the WAL started over, frames copied into the database,
        the database's size in pages or 0 when the index does not tell)."""
        # No fork check here (getpid is a system call): a forked child's tier attaches
        # afresh when it reconnects, before its first write reads this.
        entry = self._entry
        if entry is None:
            return None
        try:
            head = os.pread(entry.fd, _READ, 0)
        except OSError:
            return None
        if len(head) < _READ:
            return None  # not initialised yet
        written, pages = _MX_FRAME.unpack_from(head)
        return written, _BACKFILL.unpack_from(head)[0], pages if written else 0

    def flush(self) -> None:
        """Write the database file's dirty pages to the disk now (what checkpoints copied
        into it); nothing when it cannot be."""
        entry = self._entry
        if entry is None or entry.db_fd < 0:
            return
        # On failure the checkpoint that catches up syncs them anyway.
        with contextlib.suppress(OSError):
            _SYNC(entry.db_fd)


def _open(
    path: str, db_path: str, inode: tuple[tuple[int, int], tuple[int, int] | None]
) -> _Shared | None:
    try:
        fd = os.open(path, _FLAGS)
    except OSError:
        return None
    try:
        db_fd = os.open(db_path, _FLAGS) if inode[1] is not None else -1
    except OSError:
        db_fd = -1
    return _Shared(fd, db_fd, inode, 0, os.getpid())
