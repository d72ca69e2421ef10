"""Recall answers kept in process while the memory store is unchanged, so a call whose
recall was already made costs no thread hop and no FTS5 query.

Recall runs before every call (its block is part of the request and so of the cache key),
and reading the store means a trip off the event loop: about a millisecond, where a
response-cache hit costs tens of microseconds. Most recalls repeat one already made: an
identical repeat, a workflow re-run, an agent with nothing stored. Their answers are kept
here, keyed by everything recall reads, and given out only while the store is provably the
one they were read from:

* the file is the same file (``os.stat``: device and inode), or still absent;
* no committed change since (SQLite's ``PRAGMA data_version`` on a connection of our own
  that never writes: it changes when any other connection, in this process or another,
  commits to the file);
* this process has queued nothing since, and nothing it queued is still unwritten.

A generation is read before the store is queried, so an answer can only be kept under a
generation at least as old as what it saw: a change in between makes it miss, never lie.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Hashable
from pathlib import Path

from ._ledger import task_hash

__all__ = ["MEMO_ENTRIES", "Generation", "Probe", "RecallMemo", "memo_key"]

MEMO_ENTRIES = 4096
"""Recall answers kept (least recently used go first); tasks over :data:`KEY_TASK_CHARS`
are keyed by their hash."""
KEY_TASK_CHARS = 1024

Generation = tuple[int, tuple[int, int] | None, int]
"""(this process's queued writes, the file's identity or None when absent, data_version)."""


class Probe:
    """A read-only view of the store's file, asked only for its identity and data_version.

    Its connection never writes, so its ``data_version`` moves on every commit made through
    any other connection. It is opened off the loop (``open=True``, the slow path) and only
    asked on the loop: a WAL reader takes no lock that a writer holds, and the connection
    has no busy timeout, so a busy file is "unknown" at once instead of a wait.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None

    def version(self, changes: int, *, open: bool) -> Generation | None:
        """The store's generation now, or None when it cannot be told cheaply."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return (changes, None, 0)
        except OSError:
            return None
        identity = (info.st_dev, info.st_ino)
        with self._lock:
            if self._conn is None or self._identity != identity:
                if not open:
                    return None
                self._reopen(identity)
            conn = self._conn
            if conn is None:
                return None
            try:
                # fetchone steps the one-row pragma to its end: no read transaction is kept.
                version = int(conn.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error:
                self._close()
                return None
        return (changes, identity, version)

    def close(self) -> None:
        with self._lock:
            self._close()

    def _reopen(self, identity: tuple[int, int]) -> None:
        self._close()
        uri = "file:" + urllib.parse.quote(str(self.path.absolute())) + "?mode=rw"
        try:
            conn = sqlite3.connect(
                uri, uri=True, timeout=0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error:
            return
        # The name may have moved on to another file while it was being opened.
        try:
            info = os.stat(self.path)
        except OSError:
            info = None
        if info is None or (info.st_dev, info.st_ino) != identity:
            conn.close()
            return
        self._conn, self._identity = conn, identity

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._identity = None


class RecallMemo:
    """Recall answers of one generation: per (agent, task, limits) the block (or None) and
    whether the identical task is stored; per agent whether it has any entry at all."""

    def __init__(self, size: int = MEMO_ENTRIES) -> None:
        self.size = size
        self.generation: Generation | None = None
        self._answers: OrderedDict[Hashable, tuple[str | None, bool]] = OrderedDict()
        self._agents: dict[str, bool] = {}
        self._lock = threading.Lock()

    def get(self, generation: Generation, key: Hashable, agent: str) -> tuple[str | None, bool]:
        """``(block, identical task stored)`` or KeyError when this generation has no answer."""
        with self._lock:
            if generation != self.generation:
                raise KeyError(key)
            found = self._answers.get(key)
            if found is not None:
                self._answers.move_to_end(key)
                return found
            if self._agents.get(agent) is False:
                return (None, False)
        raise KeyError(key)

    def put(
        self,
        generation: Generation,
        key: Hashable,
        agent: str,
        answer: tuple[str | None, bool],
        has_entries: bool,
    ) -> None:
        with self._lock:
            if generation != self.generation:
                self._answers.clear()
                self._agents.clear()
                self.generation = generation
            self._answers[key] = answer
            self._answers.move_to_end(key)
            while len(self._answers) > self.size:
                self._answers.popitem(last=False)
            if len(self._agents) >= self.size:
                self._agents.clear()
            self._agents[agent] = has_entries

    def stored(self, generation: Generation | None, key: Hashable) -> bool:
        """Whether this generation saw the identical task stored under ``key``."""
        with self._lock:
            if generation is None or generation != self.generation:
                return False
            found = self._answers.get(key)
            return found is not None and found[1]


def memo_key(agent: str, task: str, top_k: int, budget: int) -> Hashable:
    """What a recall reads besides the store; a long task by its hash, to bound the memo."""
    return (agent, task if len(task) <= KEY_TASK_CHARS else task_hash(task), top_k, budget)
