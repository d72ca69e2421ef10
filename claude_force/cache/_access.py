"""Access-time updates written from a daemon thread, so no cache hit writes to disk.

Hits only note when an entry was used; once enough notes pile up, the batch is handed to
this thread, which has its own connection. The updates are idempotent (``last_access``
only moves forward), so a batch lost to a crash only makes LRU slightly less exact.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import urllib.parse
from collections import deque
from pathlib import Path

__all__ = ["AccessWriter"]

logger = logging.getLogger("claude_force.cache")

_TOUCH = "UPDATE entries SET last_access = ? WHERE key = ? AND last_access < ?"
_ATTEMPTS = 5


class AccessWriter:
    """Writes batches of ``{key: last_access}`` for the database at ``path``."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._cond = threading.Condition()
        self._queue: deque[dict[str, float]] = deque()
        self._writing = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    def submit(self, batch: dict[str, float]) -> None:
        with self._cond:
            if self._stopping:
                return
            self._queue.append(batch)
            # Started lazily, and again if it died (a fork leaves a dead Thread behind).
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name=f"claude-force-cache-access:{self._path}", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def drain(self) -> None:
        """Wait until every submitted batch is written (or given up)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._queue and not self._writing)

    def close(self) -> None:
        self.drain()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:
            uri = f"file:{urllib.parse.quote(str(self._path))}?mode=rw"
            conn = sqlite3.connect(uri, uri=True, timeout=10.0, isolation_level=None)
        except sqlite3.Error as exc:
            logger.warning("cannot record cache access times in %s: %s", self._path, exc)
            with self._cond:
                self._queue.clear()
                self._cond.notify_all()
            return
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: bool(self._queue) or self._stopping)
                    if not self._queue:
                        return
                    batch = self._queue.popleft()
                    self._writing = True
                try:
                    self._write(conn, batch)
                finally:
                    with self._cond:
                        self._writing = False
                        self._cond.notify_all()
        finally:
            conn.close()

    def _write(self, conn: sqlite3.Connection, batch: dict[str, float]) -> None:
        rows = [(t, k, t) for k, t in batch.items()]
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(_TOUCH, rows)
                conn.execute("COMMIT")
                return
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if attempt == _ATTEMPTS:
                    logger.warning("dropped %d cache access times: %s", len(rows), exc)
