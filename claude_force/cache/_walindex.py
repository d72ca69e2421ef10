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
"""

from __future__ import annotations

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
    inode: tuple[int, int]
    users: int
    pid: int


# Without pread (Windows) the tier stats the WAL file instead.
_READABLE = hasattr(os, "pread")
_lock = threading.Lock()
_shared: dict[str, _Shared] = {}
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
        self._path = db_path + "-shm"
        self._entry: _Shared | None = None

    def attach(self) -> None:
        """Read the index file now at the path; call once a connection has opened it."""
        inode = _inode(self._path) if _READABLE else None
        entry = self._entry
        if entry is not None and entry.pid == os.getpid() and entry.inode == inode:
            return  # the same file: closing our descriptor would drop SQLite's locks on it
        self.detach()
        if inode is None:
            return
        with _lock:
            entry = _shared.get(self._path)
            if entry is not None and (entry.pid != os.getpid() or entry.inode != inode):
                _PARKED.append(entry.fd)  # a parent's, or a replaced file's: never closed
                del _shared[self._path]
                entry = None
            if entry is None:
                try:
                    fd = os.open(self._path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                except OSError:
                    return
                entry = _Shared(fd, inode, 0, os.getpid())
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
