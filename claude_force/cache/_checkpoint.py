"""WAL checkpoints on a background thread, so no ``set()`` pays for one.

SQLite's automatic checkpoint runs inside whichever commit crosses the WAL threshold: that
one write copies hundreds of pages and syncs the file, a latency spike of milliseconds every
few hundred writes. Here writers only count their commits; a daemon thread with its own
connection runs a PASSIVE checkpoint, which never blocks readers or writers. If the thread
falls behind, the WAL simply grows until it catches up; if the process dies, the next
connection carries on (checkpoints are crash-safe).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import urllib.parse
from pathlib import Path

__all__ = ["Checkpointer"]

logger = logging.getLogger("claude_force.cache")

# About 3 WAL pages per write: a checkpoint every 256 writes keeps the WAL near SQLite's
# default 1000-page threshold.
CHECKPOINT_EVERY = 256


class Checkpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` for ``path`` after every N commits."""

    def __init__(self, path: Path, *, every: int = CHECKPOINT_EVERY) -> None:
        self._path = path
        self._every = every
        self._commits = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def committed(self) -> None:
        """Note one commit; wakes the thread every ``every`` commits. Caller holds a lock."""
        self._commits += 1
        if self._commits < self._every or self._stopping:
            return
        self._commits = 0
        # Started lazily, and again if it died (a fork leaves a dead Thread object behind).
        if self._thread is None or not self._thread.is_alive():
            self._wake = threading.Event()
            self._thread = threading.Thread(
                target=self._run, name=f"claude-force-cache-checkpoint:{self._path}", daemon=True
            )
            self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        try:
            # mode=rw: never create the file (it may just have been set aside as damaged).
            uri = f"file:{urllib.parse.quote(str(self._path))}?mode=rw"
            conn = sqlite3.connect(uri, uri=True, timeout=10.0, isolation_level=None)
        except sqlite3.Error as exc:
            logger.debug("checkpoint thread for %s cannot open it: %s", self._path, exc)
            return
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                # Also once more when stopping, so close() leaves the WAL copied back.
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    # A failed checkpoint loses nothing: the pages stay in the WAL.
                    logger.debug("checkpoint of %s failed: %s", self._path, exc)
                if self._stopping:
                    break
        finally:
            conn.close()

    def close(self) -> None:
        """Stop the thread after one last checkpoint, and wait for it."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
