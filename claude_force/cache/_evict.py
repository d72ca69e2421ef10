"""Keeping the disk tier's rows within their budgets: evicting the least recently used.

Every write transaction ends with ``fit``: while the stored envelope bytes pass
``DiskLimits.max_bytes`` the rows accessed longest ago are deleted, exactly enough; while the
database file's pages in use pass ``file_bytes``, as many rows as the overshoot is worth at
the average row's pages, at least eight, in one statement. The byte total comes from the ``meta``
row the triggers keep; when it cannot be right (someone changed the file) ``repair``
recounts it first.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from pathlib import Path

from ._limits import DiskLimits
from ._rows import REPAIR, plausible

__all__ = ["fit", "repair", "vacuum"]

logger = logging.getLogger("claude_force.cache")

_EVICT_BATCH = 8
# Rows evicted at most per statement when over in pages (as many as the overshoot is worth).
_PAGE_BATCH = 64
_TOTALS = "SELECT total_bytes, entries FROM meta WHERE id = 0"
# Separate pragmas, not pragma_page_count() in a SELECT: each of those table-valued
# functions prepares its PRAGMA afresh on every run, and this runs in every write.
_PAGES = "PRAGMA page_count"
_FREE = "PRAGMA freelist_count"
_LRU = "SELECT rowid, size FROM entries WHERE key != ? ORDER BY last_access, rowid LIMIT ?"
_DELETE_LRU = (
    "DELETE FROM entries WHERE rowid IN "
    "(SELECT rowid FROM entries WHERE key != ? ORDER BY last_access, rowid LIMIT ?)"
)


def fit(
    conn: sqlite3.Connection,
    limits: DiskLimits,
    page_size: int,
    keep: str,
    path: Path,
    pages_before: int = 0,
    at_most: int | None = None,
) -> int:
    """Evict least-recently-accessed rows, never ``keep`` (the key just written), until both
    budgets hold; returns how many. Caller is in a write transaction, which began with
    ``pages_before`` pages in the database (0: unknown). ``at_most``: stop after that many
    rows (a step of a reclaim: each row's pages, and its indexes', go to the WAL)."""
    total, entries = _totals(conn, path)
    evicted = 0
    left = math.inf if at_most is None else at_most
    if total > limits.max_bytes:
        evicted += _fit_bytes(conn, limits.max_bytes, total, keep, left)
        entries -= evicted
        left -= evicted
        if left <= 0:
            return evicted
    # One transaction adds at most half a WAL budget of pages (``DiskLimits``): far from
    # the budget, the pages need no counting.
    if pages_before and pages_before * page_size + limits.wal_bytes <= limits.file_bytes:
        return evicted
    pages = int(conn.execute(_PAGES).fetchone()[0])
    if pages * page_size <= limits.file_bytes:
        return evicted  # the whole file is within budget: no need to count free pages
    while True:
        used = (pages - int(conn.execute(_FREE).fetchone()[0])) * page_size
        over = used - limits.file_bytes
        if over <= 0 or entries <= 0:
            return evicted
        # As many rows as the overshoot is worth at the average row's pages, and at least a
        # batch: evicting rows next to each other in LRU order shares the pages on the
        # way to them, so a batch every few writes adds less to the WAL than one per write.
        count = int(min(_PAGE_BATCH, max(_EVICT_BATCH, -(-over * entries // used)), left))
        removed = conn.execute(_DELETE_LRU, (keep, count)).rowcount
        if removed <= 0:
            return evicted
        evicted += removed
        entries -= removed
        left -= removed
        if left <= 0:
            return evicted


def _fit_bytes(
    conn: sqlite3.Connection, max_bytes: int, total: int, keep: str, rows: float = math.inf
) -> int:
    """Evict exactly enough rows to bring the stored bytes within ``max_bytes``, or
    ``rows`` of them when that comes first."""
    evicted = 0
    while total > max_bytes and evicted < rows:
        victims: list[tuple[int]] = []
        batch = int(min(_EVICT_BATCH, rows - evicted))
        for rowid, size in conn.execute(_LRU, (keep, batch)).fetchall():
            victims.append((rowid,))
            total -= size if type(size) is int else 0
            if total <= max_bytes:
                break
        if not victims:
            break
        conn.executemany("DELETE FROM entries WHERE rowid = ?", victims)
        evicted += len(victims)
    return evicted


def _totals(conn: sqlite3.Connection, path: Path) -> tuple[int, int]:
    """Stored envelope bytes and entries; repairs the totals first when they cannot be
    right."""
    row = conn.execute(_TOTALS).fetchone()
    if row is None or not plausible(row[0], row[1]):
        shown = "no totals" if row is None else f"{row[0]!r} bytes in {row[1]!r} entries"
        repair(conn, path, f"counted {shown}, which cannot be right")
        row = conn.execute(_TOTALS).fetchone()
    return int(row[0]), int(row[1])


def repair(conn: sqlite3.Connection, path: Path, why: str) -> None:
    """Delete rows whose size is not their envelope's and recount ``meta``: a full scan,
    only after someone changed the file. Caller is in a write transaction."""
    removed = conn.execute(REPAIR[0]).rowcount
    for statement in REPAIR[1:]:
        conn.execute(statement)
    # Not counted in integrity_failures: a lookup may have counted them already.
    logger.warning(
        "cache database %s %s; deleted %d rows with a wrong size and recounted the rest",
        path,
        why,
        removed,
    )


def free_pages(conn: sqlite3.Connection) -> int:
    return int(conn.execute(_FREE).fetchone()[0])


def vacuum(conn: sqlite3.Connection, pages: int = 0) -> int:
    """Give free pages back to the file system, at most ``pages`` of them (0: all; each one
    moved goes to the WAL); outside a transaction. Returns the free pages left."""
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0:
        conn.execute("VACUUM")  # a file made before auto_vacuum: rewritten, once
        return 0
    # executescript steps the pragma to the end; execute() frees one page.
    conn.executescript(f"PRAGMA incremental_vacuum({max(0, int(pages))});")
    return free_pages(conn) if pages > 0 else 0
