"""Keeping the disk tier's rows within their budgets: evicting the least recently used.

Every write transaction ends with ``fit``: while the stored envelope bytes pass
``DiskLimits.max_bytes`` or the database file's pages in use pass ``file_bytes``, the rows
accessed longest ago are deleted, a few at a time. The byte total comes from the ``meta``
row the triggers keep; when it cannot be right (someone changed the file) ``repair``
recounts it first.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from ._limits import DiskLimits
from ._rows import REPAIR, plausible

__all__ = ["fit", "repair", "vacuum"]

logger = logging.getLogger("claude_force.cache")

_EVICT_BATCH = 8
# The stored bytes and the pages in use, in one statement: it runs in every write.
_USAGE = (
    "SELECT total_bytes, entries, (SELECT page_count FROM pragma_page_count()) - "
    "(SELECT freelist_count FROM pragma_freelist_count()) FROM meta WHERE id = 0"
)
_LRU = "SELECT rowid, size FROM entries WHERE key != ? ORDER BY last_access, rowid LIMIT ?"


def fit(conn: sqlite3.Connection, limits: DiskLimits, page_size: int, keep: str, path: Path) -> int:
    """Evict least-recently-accessed rows, never ``keep`` (the key just written), until both
    budgets hold; returns how many. Caller is in a write transaction."""
    total, used = _usage(conn, page_size, path)
    evicted = 0
    while total > limits.max_bytes or used > limits.file_bytes:
        pages_over = used > limits.file_bytes
        victims: list[tuple[int]] = []
        for rowid, size in conn.execute(_LRU, (keep, _EVICT_BATCH)).fetchall():
            victims.append((rowid,))
            total -= size if type(size) is int else 0
            if not pages_over and total <= limits.max_bytes:
                break  # over in bytes only: evict exactly enough
        if not victims:
            break
        conn.executemany("DELETE FROM entries WHERE rowid = ?", victims)
        evicted += len(victims)
        if pages_over:
            used = _usage(conn, page_size, path)[1]
    return evicted


def _usage(conn: sqlite3.Connection, page_size: int, path: Path) -> tuple[int, int]:
    """Stored envelope bytes, and bytes of the database file's pages in use; repairs the
    totals first when they cannot be right."""
    row = conn.execute(_USAGE).fetchone()
    if row is None or not plausible(row[0], row[1]):
        shown = "no totals" if row is None else f"{row[0]!r} bytes in {row[1]!r} entries"
        repair(conn, path, f"counted {shown}, which cannot be right")
        row = conn.execute(_USAGE).fetchone()
    total, _, pages = row
    return int(total), int(pages) * page_size


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


def vacuum(conn: sqlite3.Connection) -> None:
    """Give free pages back to the file system; outside a transaction."""
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0:
        conn.execute("VACUUM")  # a file made before auto_vacuum: rewritten, once
    else:
        # executescript steps the pragma to the end; execute() frees one page.
        conn.executescript("PRAGMA incremental_vacuum;")
