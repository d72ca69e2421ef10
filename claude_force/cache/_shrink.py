"""Shrinking a cache file opened with a lower limit than it was written to.

In one transaction every row evicted and every page vacuum moved went to the WAL before a
checkpoint: the WAL grew by most of the old file, beside it (100 MB lowered to 8 MB: the
folder went to 139 MB before it shrank). So the rows are evicted, then the free pages given
back, in steps of about half a WAL budget of frames, each checkpointed, and the folder holds
the old file and a WAL within its budget while it shrinks. A step takes at most the rows (or
pages) that many frames hold at the worst, fewer when the last step wrote more. When the WAL
cannot start over without a wait (another process reads it), the rest goes in one step:
each step would wait a busy timeout.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from ._evict import free_pages
from ._limits import DiskLimits
from ._wal import WalKeeper

__all__ = ["checkpoint_now", "shrink"]

# A step's WAL frames at the worst, per row evicted (its leaf page, its pages in the key and
# last-access indexes, the free-page list's) and per page vacuum moves (the page, its
# pointer-map page, its parent).
_FRAMES_PER_ROW = 4
_FRAMES_PER_PAGE = 3


def shrink(
    conn: sqlite3.Connection,
    wal: WalKeeper,
    limits: DiskLimits,
    page_size: int,
    evict: Callable[[int | None], int],
    vacuum: Callable[[int], int | None],
) -> None:
    """Evict to ``limits``, then give the free pages back, step by step (see the module).

    ``evict(rows)``: one transaction evicting at most ``rows`` (None: down to the limits),
    returning how many it committed; ``vacuum(pages)``: give back at most ``pages`` (0: all),
    returning the free pages left, None when it failed. Caller holds the write lock."""
    frames = max(1, limits.wal_bytes // 2 // page_size)
    most = max(1, frames // _FRAMES_PER_ROW)
    step: int | None = most
    while step is not None:
        done = evict(step)
        if not done:
            break  # within the limits, or the write failed (one warning)
        step = _next_step(conn, wal, page_size, done, frames, most)
    if step is None:
        evict(None)
    most = max(1, frames // _FRAMES_PER_PAGE)
    step = most
    free = free_pages(conn)
    while free and step is not None:
        left = vacuum(step)
        if left is None or left >= free:
            break  # failed (one warning), or nothing given back: a later reopen tries
        step, free = _next_step(conn, wal, page_size, free - left, frames, most), left
    if step is None:
        vacuum(0)
    wal.truncate(conn)


def _next_step(
    conn: sqlite3.Connection, wal: WalKeeper, page_size: int, done: int, frames: int, most: int
) -> int | None:
    """After a step of ``done`` rows or pages: the WAL started over, and the next step's size
    for about ``frames`` frames, at most ``most`` (the rows or pages that many frames hold at
    the worst: rows that shared pages so far need not share the next); None when the WAL
    could not start over at once."""
    written = max(1, wal.pending()[0] // page_size)
    if not checkpoint_now(conn, wal, "RESTART"):
        return None
    return max(1, min(most, done * frames // written))


def checkpoint_now(conn: sqlite3.Connection, wal: WalKeeper, mode: str) -> bool:
    """A checkpoint that waits for no other connection (busy timeout 0 while it runs); True
    when it went through."""
    previous = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
    conn.execute("PRAGMA busy_timeout=0")
    try:
        return wal.truncate(conn, mode)
    finally:
        conn.execute(f"PRAGMA busy_timeout={previous}")
