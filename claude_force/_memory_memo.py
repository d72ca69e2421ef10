"""Recall answers kept in process while the memory store is unchanged, so a call whose
recall was already made costs no thread hop and no FTS5 query.

Recall runs before every call (its block is part of the request and so of the cache key),
and reading the store means a trip off the event loop: about a millisecond, where a
response-cache hit costs tens of microseconds. Most recalls repeat one already made: an
identical repeat, a workflow re-run, an agent with nothing stored. Their answers are kept
here, keyed by everything recall reads, and given out only under the generation they were
read in:

* this process's changes to the file (:class:`LocalChanges`, one count per file shared by
  every ``AgentMemory`` of the process): moved at once by each queued entry, each commit of
  the writer thread, each ``forget``/``clear`` and each damaged file set aside, and nothing
  queued may still be unwritten;
* the file's identity (``os.stat``: device and inode), or its absence;
* SQLite's ``PRAGMA data_version`` on a connection of our own that never writes: it
  changes when any other connection, in this process or another, commits to the file.

The last two see *another process's* writes (and a file deleted or replaced by hand); they
cost a ``stat`` and a query, so :class:`Probe` makes them at most once per
:data:`RECHECK_SECONDS` on its clock (and at every read of the store, which costs more
anyway). Another process's write is therefore seen within :data:`RECHECK_SECONDS`; this
process's own writes, through any ``AgentMemory``, are seen by the very next recall.

A generation is read before the store is queried, so an answer can only be kept under a
generation at least as old as what it saw: a change in between makes it miss, never lie.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import ClassVar

__all__ = [
    "MEMO_ENTRIES",
    "RECHECK_SECONDS",
    "Generation",
    "LocalChanges",
    "Probe",
    "RecallMemo",
    "memo_key",
]

MEMO_ENTRIES = 4096
"""Recall answers kept (least recently used go first); tasks over :data:`KEY_TASK_CHARS`
are keyed by their hash."""
KEY_TASK_CHARS = 1024

RECHECK_SECONDS = 0.1
"""How long the file's identity and ``data_version`` are trusted before they are read again:
the longest another process's write can go unseen by recall."""

Generation = tuple[int, tuple[int, int] | None, int]
"""(this process's changes to the file, its identity or None when absent, data_version)."""


class LocalChanges:
    """Per store file (its real path), how many changes this process made or queued: every
    ``AgentMemory`` of the process on that file moves the same count, so a write through one
    is seen at once by the memo of another."""

    _counts: ClassVar[dict[str, int]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def bump(cls, key: str) -> None:
        with cls._lock:
            cls._counts[key] = cls._counts.get(key, 0) + 1

    @classmethod
    def count(cls, key: str) -> int:
        return cls._counts.get(key, 0)  # a dict read: atomic, no lock on the call path

    @classmethod
    def after_fork(cls) -> None:
        """In a forked child: a lock of its own (a parent's thread may have held this one)."""
        cls._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=LocalChanges.after_fork)


class Probe:
    """A read-only view of the store's file, asked only for its identity and data_version,
    and this process's count of changes to it.

    Its connection never writes, so its ``data_version`` moves on every commit made through
    any other connection. It is opened off the loop (``open=True``, the slow path) and only
    asked on the loop: a WAL reader takes no lock that a writer holds, and the connection
    has no busy timeout, so a busy file is "unknown" at once instead of a wait. The file's
    part of the generation is trusted for ``recheck_seconds`` of ``clock`` (monotonic).
    """

    def __init__(
        self,
        path: Path,
        *,
        recheck_seconds: float = RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.key = os.path.realpath(path)
        self.recheck_seconds = recheck_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        # (when it was read, this process's changes then, the generation then): one
        # attribute, so never read torn; the generation is given out as it is (no new tuple).
        self._seen: tuple[float, int, Generation] | None = None

    def changes(self) -> int:
        """This process's changes to the file so far (see :class:`LocalChanges`)."""
        return LocalChanges._counts.get(self.key, 0)

    def changed(self) -> None:
        """This process changed the file: every memo answer read before is stale now."""
        LocalChanges.bump(self.key)

    def in_use(self) -> bool:
        """Whether a thread is reading the file through this probe now."""
        return self._lock.locked()

    def version(self, *, open: bool, fresh: bool = False) -> Generation | None:
        """The store's generation now, or None when it cannot be told cheaply. The file's
        part comes from the last look when it is younger than ``recheck_seconds`` and this
        process changed nothing since (its own write may have made or replaced the file),
        unless ``fresh`` (a read of the store, which pays for a look anyway)."""
        changes = LocalChanges._counts.get(self.key, 0)  # a dict read: atomic, no lock
        now = self.clock()
        seen = self._seen
        if (
            not fresh
            and seen is not None
            and seen[1] == changes
            and 0 <= now - seen[0] < self.recheck_seconds
        ):
            return seen[2]
        found = self._look(open)
        if found is None:
            self._seen = None
            return None
        generation = (changes, *found)
        self._seen = (now, changes, generation)
        return generation

    def _look(self, open: bool) -> tuple[tuple[int, int] | None, int] | None:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return (None, 0)
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
        return (identity, version)

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
        self._seen = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._identity = None


class _Answers:
    """One generation's answers; replaced whole, never cleared, when the generation moves,
    so a reader holding it never sees another generation's answers."""

    __slots__ = ("agents", "answers", "generation")

    def __init__(self, generation: Generation | None) -> None:
        self.generation = generation
        self.answers: OrderedDict[Hashable, tuple[str | None, bool]] = OrderedDict()
        self.agents: dict[str, bool] = {}


class RecallMemo:
    """Recall answers of one generation: per (agent, task, limits) the block (or None) and
    whether the identical task is stored; per agent whether it has any entry at all.

    Reads take no lock (they run on the event loop for every call): the generation and its
    answers are one object, swapped whole by :meth:`put`, and each dict operation is atomic.
    """

    def __init__(self, size: int = MEMO_ENTRIES) -> None:
        self.size = size
        self._now = _Answers(None)
        self._lock = threading.Lock()  # writers: the reading threads

    @property
    def generation(self) -> Generation | None:
        return self._now.generation

    def get(self, generation: Generation, key: Hashable, agent: str) -> tuple[str | None, bool]:
        """``(block, identical task stored)`` or KeyError when this generation has no answer."""
        found = self.find(generation, key, agent)
        if found is None:
            raise KeyError(key)
        return found

    def find(
        self, generation: Generation, key: Hashable, agent: str
    ) -> tuple[str | None, bool] | None:
        """:meth:`get`, with None for no answer (the call path: no exception raised)."""
        now = self._now
        if generation != now.generation:
            return None
        found = now.answers.get(key)
        if found is not None:
            try:
                now.answers.move_to_end(key)
            except KeyError:  # a writer let it go just now: still this generation's answer
                return found
            return found
        if now.agents.get(agent) is False:
            return (None, False)
        return None

    def put(
        self,
        generation: Generation,
        key: Hashable,
        agent: str,
        answer: tuple[str | None, bool],
        has_entries: bool,
    ) -> None:
        with self._lock:
            now = self._now
            if generation != now.generation:
                now = _Answers(generation)
            answers = now.answers
            answers[key] = answer
            answers.move_to_end(key)
            while len(answers) > self.size:
                answers.popitem(last=False)
            if len(now.agents) >= self.size:
                now.agents.clear()
            now.agents[agent] = has_entries
            self._now = now  # filled before it is seen

    def stored(self, generation: Generation | None, key: Hashable) -> bool:
        """Whether this generation saw the identical task stored under ``key``."""
        now = self._now
        if generation is None or generation != now.generation:
            return False
        found = now.answers.get(key)
        return found is not None and found[1]


def memo_key(agent: str, task: str, top_k: int, budget: int) -> Hashable:
    """What a recall reads besides the store; a long task by its hash, to bound the memo.

    Asked before a task is checked (a repeat's request is built after the memo answers):
    a lone surrogate is hashed as it stands, and the build then names the problem."""
    if len(task) <= KEY_TASK_CHARS:
        return (agent, task, top_k, budget)
    digest = hashlib.sha256(task.encode("utf-8", "surrogatepass")).hexdigest()
    return (agent, digest, top_k, budget)
