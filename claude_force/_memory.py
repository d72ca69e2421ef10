"""Per-agent memory: earlier answers of an agent, recalled when a new task is about the same.

Each successful call of an agent leaves one entry in ``<project>/.claude/data/memory.db``: the
task (first :data:`TASK_CHARS` characters), the first :data:`EXCERPT_CHARS` characters of the
answer, the time and the model. Failed calls leave nothing (the usage ledger records them).
One entry per agent and task: a fresh answer to the same task replaces the older one, a
response-cache hit adds the task only if it is not there yet.

Recall finds the agent's entries by BM25 (SQLite FTS5) over the task text and keeps those that
share enough meaningful words with the new task (:func:`needed_shared`), most shared first; the
entry of the identical task is never recalled, and when it exists recall is as of it (only
older entries), so an identical repeat sends a byte-identical request and stays a
response-cache hit even after related tasks ran. Entries are injected as quoted data
(:func:`render_block`).

Everything here is best-effort: a damaged, read-only or missing store is one warning per cause
on the ``claude_force.memory`` logger and the call goes on without memory. Writes are queued and
done by a background thread; reads run off the event loop on read-only connections of their
own (a 10,000-entry store costs a few milliseconds, see ``benchmarks/bench_memory.py``) and
never wait for a write: this process's queued entries are read from the queue, so a store
locked by another process costs a call nothing. A recall already made while the store is
unchanged is answered on the loop by the recall memo (``_memory_memo.py``). The file itself,
its writer queue and its pool of readers are ``_memory_store.Store``.
"""

from __future__ import annotations

import asyncio
import enum
import math
import os
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar, cast

from ._config import ProjectConfig
from ._errors import InvalidArgumentError
from ._ledger import task_hash
from ._memory_memo import RECHECK_SECONDS, Generation, Probe, RecallMemo, memo_key
from ._memory_recall import (
    COLUMNS,
    TASK_CHARS,
    MemoryEntry,
    cut,
    entry_of,
    fts5_available,
    fts_query,
    needed_shared,
    recall_all,
    render_block,
    rendered_entry,
    search,
    terms,
)
from ._memory_store import Pending, Store, _log, busy_at_fork, storable
from ._results import AgentResult

__all__ = [
    "BUDGET_CHARS",
    "EXCERPT_CHARS",
    "MAX_BYTES",
    "MAX_ENTRIES_PER_AGENT",
    "TASK_CHARS",
    "TOP_K",
    "AgentMemory",
    "MemoryEntry",
    "fts_query",
    "needed_shared",
    "render_block",
    "terms",
]

MEMORY_FILE = "data/memory.db"
"""Where the store lives, relative to the project's config folder (beside the usage ledger)."""

EXCERPT_CHARS = 2_000
"""Characters of an answer kept (its beginning); longer answers end with ``[...]``."""
TOP_K = 3
"""At most this many earlier entries are injected into one request."""
BUDGET_CHARS = 8_000
"""The injected block stays within this many characters; an entry that does not fit is left out."""
MAX_ENTRIES_PER_AGENT = 500
"""Entries kept per agent; beyond it the oldest go."""
MAX_BYTES = 32 * 1024 * 1024
"""Bytes of task and excerpt text kept over all agents; beyond it the oldest entries go."""

_RECALLED_MAX = 16_384  # recall times kept for remember(): calls in flight at once, and more

T = TypeVar("T")


def _valid_id(entry_id: object) -> bool:
    """Ids are positive 64-bit integers; anything else names no entry (and would make SQLite
    raise OverflowError)."""
    return isinstance(entry_id, int) and not isinstance(entry_id, bool) and 0 < entry_id < 2**63


class _CheckedClock:
    """A clock given by the caller, each reading checked: one that is not a finite number of
    seconds (or raises) is named in one warning and replaced by ``fallback``'s reading, so a
    bad clock never stops a call or the writer thread (a huge integer would make SQLite raise
    OverflowError when the entry is written)."""

    def __init__(self, clock: Callable[[], float], fallback: Callable[[], float], name: str):
        self._clock = clock
        self._fallback = fallback
        self._name = name

    def __call__(self) -> float:
        try:
            value: object = self._clock()
        except Exception as exc:  # the caller's code: named, never raised
            value = exc
        if type(value) is float and math.isfinite(value):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                reading = float(value)
            except OverflowError:
                reading = math.nan
            if math.isfinite(reading):
                return reading
        _log.warn(
            f"clock:{self._name}",
            f"AgentMemory's {self._name} gave {value!r}, not a finite int or float of seconds; "
            f"the system clock's reading is used instead. Give a {self._name} that returns "
            "a float",
        )
        return self._fallback()


class _StrictClock:
    """``clock``, made to increase at every reading (the next float up when it did not)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._last = -math.inf
        self._lock = threading.Lock()

    def after_fork(self) -> None:
        """In a forked child: a lock of its own (a parent's thread may have held this one)."""
        self._lock = threading.Lock()

    def __call__(self) -> float:
        now = self._clock()
        with self._lock:
            if now > self._last:
                self._last = now
            elif self._last < sys.float_info.max:  # never past it: inf reads back as 0
                self._last = math.nextafter(self._last, math.inf)
            return self._last


_STRICT_WALL = _StrictClock(time.time)  # one for the process: every store's entries and looks

# Bumped in a forked child: each AgentMemory then opens a store of its own there (_ready).
_fork_generation = 0
_FORK_LOCK = threading.Lock()
# Stores inherited through fork(): the parent's queue, connections and any lock its threads
# held at the fork. Never used, closed or collected here: closing a connection copied in the
# middle of the parent's write could touch the parent's file state.
_INHERITED: list[Store] = []


def _close_mine(store: Store, generation: int) -> None:
    if generation == _fork_generation:
        store.close()


def _after_fork_in_child() -> None:
    global _fork_generation, _FORK_LOCK
    _fork_generation += 1
    _FORK_LOCK = threading.Lock()
    _STRICT_WALL.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Unknown(enum.Enum):
    """A recall the memo cannot answer: it takes the trip to the store."""

    UNKNOWN = 0


_UNKNOWN: Final = _Unknown.UNKNOWN


class AgentMemory:
    """The per-agent memory store of a project (``.claude/data/memory.db``).

    ::

        memory = AgentMemory.of_project(load_config(find_config()))
        for entry in memory.entries(agent="code-reviewer"):
            print(entry.id, entry.task[:60])

    Orchestrators use it when ``enable_memory`` is on; it can also be opened on its own to
    inspect or edit what agents remember. Nothing here raises for a disk problem.
    ``recheck_seconds``: how long a recall trusts its last look at the file for another
    process's writes (``monotonic`` is its clock); this process's writes are seen at once.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_entries_per_agent: int = MAX_ENTRIES_PER_AGENT,
        max_bytes: int = MAX_BYTES,
        top_k: int = TOP_K,
        budget_chars: int = BUDGET_CHARS,
        clock: Callable[[], float] = time.time,
        recheck_seconds: float = RECHECK_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (
            ("max_entries_per_agent", max_entries_per_agent),
            ("max_bytes", max_bytes),
            ("top_k", top_k),
            ("budget_chars", budget_chars),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"{name} must be an integer >= 1, got {value!r}")
        if not (
            isinstance(recheck_seconds, (int, float))
            and not isinstance(recheck_seconds, bool)
            and 0 <= recheck_seconds < math.inf
        ):
            raise InvalidArgumentError(
                f"recheck_seconds must be a finite number >= 0, got {recheck_seconds!r}"
            )
        self.path = Path(path)
        self.top_k = top_k
        self.budget_chars = budget_chars
        # Entry times and recall times from one clock that never repeats or goes back in this
        # process: "stored before this recall looked" must not depend on the clock's grain.
        self._clock = (
            _STRICT_WALL
            if clock is time.time
            else _StrictClock(_CheckedClock(clock, time.time, "clock"))
        )
        if monotonic is not time.monotonic:
            monotonic = _CheckedClock(monotonic, time.monotonic, "monotonic")
        self.enabled = fts5_available()
        if not self.enabled:
            _log.warn(
                "fts5",
                "this Python's SQLite has no FTS5 full-text search; agent memory is off. "
                "Use a Python build whose sqlite3 includes FTS5 (CPython's official builds do)",
            )
        self._limits = (max_entries_per_agent, max_bytes, recheck_seconds, monotonic)
        self._open_store()

    def _open_store(self) -> None:
        """The store, its probe and the recall memo: at construction, and in a forked child.
        In a process forked while a parent's thread was inside SQLite on the file (writing,
        reading), SQLite's lock bookkeeping was copied in the middle of it: a connection
        here could wait forever or write over the parent's transaction, so memory is off
        (also for an AgentMemory made after the fork)."""
        max_entries_per_agent, max_bytes, recheck_seconds, monotonic = self._limits
        probe = Probe(self.path, recheck_seconds=recheck_seconds, clock=monotonic)
        self._store = Store(
            self.path, max_entries_per_agent=max_entries_per_agent, max_bytes=max_bytes, probe=probe
        )
        # Closed when the AgentMemory goes, in the process that made the store only.
        self._finalizer = weakref.finalize(self, _close_mine, self._store, _fork_generation)
        self._memo = RecallMemo()
        self._seen: Generation | None = None  # the generation the latest recall was sure of
        # When the latest recall for an agent and task looked, and whether it found the task
        # stored (or queued): remember() stores the time with the task's entry, so that a
        # repeat recalls what that request saw, and a cache hit of a task found stored adds
        # nothing. Keyed by the task's str hash (kept by the string: free on the hit path)
        # and length; a collision could only make a repeat's request differ (a miss) or
        # leave a hit's task unstored, never a cached answer wrong.
        self._recalled: dict[tuple[str, int, int], tuple[float, bool, str | None]] = {}
        self._recalled_lock = threading.Lock()
        if self.enabled and busy_at_fork(self.path):
            self.enabled = False
            _log.warn(
                f"fork:{self.path}",
                f"agent memory is off in this process: it was forked while {self.path} "
                "was in use (written or read). Fork before the first call, or use "
                "multiprocessing's 'spawn' start method",
            )
        self._generation = _fork_generation  # last: another thread then sees all of it

    def _ready(self) -> bool:
        """Whether memory is on; in a forked child, first a store of its own (see
        :meth:`_after_fork`)."""
        if self._generation != _fork_generation:
            self._after_fork()
        return self.enabled

    def _after_fork(self) -> None:
        """The parent's entries still queued are the parent's to write, and its writer
        thread is not here: the child opens the file anew. Unless a parent's thread was
        using it at the fork (see :meth:`_open_store`)."""
        with _FORK_LOCK:
            if self._generation == _fork_generation:
                return  # another thread of the child did it
            self._finalizer.detach()
            _INHERITED.append(self._store)
            if self._clock is not _STRICT_WALL:
                self._clock.after_fork()
            self._open_store()

    @classmethod
    def of_project(cls, config: ProjectConfig, **kwargs: Any) -> AgentMemory:
        """The memory store of ``config``'s project, in its data folder."""
        return cls(config.root / MEMORY_FILE, **kwargs)

    def __repr__(self) -> str:
        return f"AgentMemory({str(self.path)!r})"

    def __enter__(self) -> AgentMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dropped(self) -> int:
        """Entries given up on (the store could not be written, or too many were waiting)."""
        self._ready()
        return self._store.dropped

    # -- the call path --------------------------------------------------------------------

    def remember(self, result: AgentResult, task: str) -> None:
        """Queue ``result`` of ``task`` for the background writer; no disk I/O, never raises.

        Failed calls are not remembered; a cache hit (or a shared in-flight answer) only
        adds the task when it is not remembered yet, so a repeat is never stored twice.
        """
        if not result.success or not self._ready():
            return
        if result.cached and self._known_stored(result.agent_name, task):
            return
        look = self._recall_look(result.agent_name, task)
        if result.cached and look is not None and look[1]:
            return  # its recall found it stored or queued (the store was busy then)
        task = storable(task)  # a lone surrogate (Python callers) becomes "?", as below
        agent, digest = storable(result.agent_name), task_hash(task)
        if result.cached and self._store.on_its_way(agent, digest):
            return  # a shared answer whose first caller's entry is on its way
        self._store.put(
            Pending(
                agent=agent,
                task=task[:TASK_CHARS],
                digest=digest,
                # Cleaned before it is queued: a queued entry is recalled as it will be stored.
                excerpt=storable(cut(result.output, EXCERPT_CHARS)),
                ts=self._clock(),
                model=storable(result.model),
                replace=not result.cached,
                seen=None if look is None else look[0],
                block=None if look is None else look[2] or "",
            )
        )

    def recall(self, agent: str, task: str) -> list[MemoryEntry]:
        """The agent's earlier entries relevant to ``task``, most relevant first, within
        :attr:`top_k` and :attr:`budget_chars`; never the identical task's own entry.

        Blocking (SQLite): async code calls :meth:`acontext`.
        """
        if not self._ready():
            return []
        found, _, _ = recall_all(self._store, [(agent, task)], self.top_k, self.budget_chars)
        return [] if found is None else found[0][0]

    def context(self, agent: str, task: str) -> str | None:
        """The block to inject for ``agent`` and ``task``, or None when nothing is relevant."""
        if not self._ready():
            return None
        known = self._known([(agent, task)])[0]
        return self._read_contexts([(agent, task)])[0] if known is _UNKNOWN else known

    def known_contexts(self, items: Sequence[tuple[str, str]]) -> list[str | None] | None:
        """:meth:`context` for each ``(agent, task)`` when the recall memo knows them all
        (no I/O, no thread: for the event loop), else None."""
        if not items or not self._ready():
            return [None] * len(items)
        known = self._known(items)
        return None if _UNKNOWN in known else cast("list[str | None]", known)

    def known_blocks(self, agent: str, task: str) -> tuple[str, ...] | None:
        """:meth:`known_contexts` for one call (``execute_agent``: every repeat's cache hit
        asks): the blocks its request sends (none or one), or None when the memo cannot tell."""
        if self._generation != _fork_generation:
            self._after_fork()
        if not self.enabled:
            return ()
        generation = self._memo_generation()
        if generation is None:
            return None
        if generation[1] is None:  # no store file, nothing queued: nothing to recall
            self._looked(((agent, task),), self._clock(), (False,), (None,))
            return ()
        key = memo_key(agent, task, self.top_k, self.budget_chars)
        found = self._memo.find(generation, key, agent)
        if found is None:
            return None
        block, stored = found
        if not stored:  # see _known
            self._looked(((agent, task),), self._clock(), (False,), (block,))
        return () if block is None else (block,)

    async def acontexts(self, items: Sequence[tuple[str, str]]) -> list[str | None]:
        """:meth:`context` for each ``(agent, task)``: answered on the loop when the recall
        memo knows the answer, the rest in one trip off the event loop."""
        if not items or not self._ready():
            return [None] * len(items)
        known = self._known(items)
        if _UNKNOWN not in known:  # the memo knew them all: the usual repeat
            return cast("list[str | None]", known)
        missing = [i for i, answer in enumerate(known) if answer is _UNKNOWN]
        out: list[str | None] = [None if a is _UNKNOWN else a for a in known]
        try:
            read = await asyncio.to_thread(self._read_contexts, [items[i] for i in missing])
        except RuntimeError:  # the executor is gone (interpreter exit): no memory then
            return [None] * len(items)
        for i, block in zip(missing, read, strict=True):
            out[i] = block
        return out

    # -- the recall memo (see _memory_memo.py) --------------------------------------------

    def _known(self, items: Sequence[tuple[str, str]]) -> list[str | _Unknown | None]:
        """What the recall memo knows, without touching the store's connection or a thread:
        nothing unless this process has no write waiting and the store is unchanged."""
        generation = self._memo_generation()
        if generation is None:
            return [_UNKNOWN] * len(items)
        if generation[1] is None:  # no store file, nothing queued: nothing to recall
            self._looked(items, self._clock(), [False] * len(items), [None] * len(items))
            return [None] * len(items)
        memo, top_k, budget = self._memo, self.top_k, self.budget_chars
        out: list[str | _Unknown | None] = []
        answered: list[tuple[str, str]] = []
        blocks: list[str | None] = []
        for agent, task in items:
            found = memo.find(generation, memo_key(agent, task, top_k, budget), agent)
            out.append(_UNKNOWN if found is None else found[0])
            # A stored task's entry keeps its own recall time and block (a fresh answer
            # replacing it carries them over): only the others need this look's.
            if found is not None and not found[1]:
                answered.append((agent, task))
                blocks.append(found[0])
        if answered:
            self._looked(answered, self._clock(), [False] * len(answered), blocks)
        return out

    def _memo_generation(self) -> Generation | None:
        """The generation the memo may answer under now (noted as the latest recall's), or
        None when this process has a write waiting or the file cannot be told cheaply."""
        store = self._store
        if not store.quiet():
            return None
        generation = store.probe.version(open=False)
        if generation is not None:
            self._seen = generation
        return generation

    def _read_contexts(self, items: Sequence[tuple[str, str]]) -> list[str | None]:
        """Recall from the store (blocking; off the loop) and keep the answers in the memo
        under the generation read before the store was."""
        store = self._store
        generation = store.probe.version(open=True, fresh=True)
        top_k, budget = self.top_k, self.budget_chars
        out: list[str | None] = []
        found_all, queued, looked = recall_all(store, items, top_k, budget, self._clock)
        for i, (agent, task) in enumerate(items):
            found = None if found_all is None else found_all[i]
            if found is not None and found.sent is not None:
                block = found.sent or None  # what the identical task's request sent
            else:
                entries = [] if found is None else found.entries
                block = render_block(agent, entries) if entries else None
            out.append(block)
            if found is not None and generation is not None and not queued:
                key = memo_key(agent, task, top_k, budget)
                self._memo.put(generation, key, agent, (block, found.stored), found.has_entries)
        stored = [False] * len(items) if found_all is None else [f.stored for f in found_all]
        self._looked(items, looked, stored, out)
        if generation is not None:
            self._seen = generation
        return out

    def _known_stored(self, agent: str, task: str) -> bool:
        """Whether the latest recall's generation holds ``task`` for ``agent`` and nothing was
        queued since: a cache hit then has nothing to add and queues no write (which would
        end the memo's generation for every call after it)."""
        seen, store = self._seen, self._store
        if seen is None or seen[0] != store.probe.changes() or not store.quiet():
            return False
        return self._memo.stored(seen, memo_key(agent, task, self.top_k, self.budget_chars))

    def _looked(
        self,
        items: Sequence[tuple[str, str]],
        looked: float,
        stored: Sequence[bool],
        blocks: Sequence[str | None],
    ) -> None:
        """Note when the recall for each of ``items`` looked at the store, whether it found
        the identical task stored or queued, and the block its request sends."""
        if not items:
            return
        with self._recalled_lock:
            recalled = self._recalled
            for (agent, task), found, block in zip(items, stored, blocks, strict=True):
                key = (agent, hash(task), len(task))
                recalled.pop(key, None)  # newest last: the oldest go first
                recalled[key] = (looked, found, block)
            while len(recalled) > _RECALLED_MAX:
                del recalled[next(iter(recalled))]

    def _recall_look(self, agent: str, task: str) -> tuple[float, bool, str | None] | None:
        with self._recalled_lock:
            return self._recalled.pop((agent, hash(task), len(task)), None)

    def flush(self) -> None:
        """Write every queued entry now (blocking)."""
        self._ready()
        self._store.drain()

    def close(self) -> None:
        """Write what is queued and release the thread and the file; reopens on use."""
        if self._generation != _fork_generation:
            return  # a forked child that never used it: the store is the parent's
        self._store.close()

    # -- inspecting and editing (blocking; the CLI's ``claude-force memory``) -----------------

    def entries(self, agent: str | None = None, limit: int | None = None) -> list[MemoryEntry]:
        """Stored entries, newest first (of one agent when given)."""
        self.flush()
        sql = f"SELECT {COLUMNS} FROM entries e"
        args: list[object] = []
        if agent is not None:
            sql, args = sql + " WHERE e.agent = ?", [agent]
        sql += " ORDER BY e.ts DESC, e.id DESC LIMIT ?"
        args.append(-1 if limit is None else limit)
        return self._store.read(lambda conn: [entry_of(r) for r in conn.execute(sql, args)], [])

    def search(
        self, query: str, *, agent: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """Entries ranked for ``query`` as recall ranks them: each entry's fields plus
        ``score`` (BM25, lower is better), ``shared_terms`` and ``relevant`` (would be
        recalled for a task worded like ``query``)."""
        self.flush()

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            return [
                {
                    **s.entry.to_dict(),
                    "score": s.score,
                    "shared_terms": list(s.shared),
                    "relevant": s.relevant,
                }
                for s in search(conn, agent, query, limit, None)
            ]

        return self._store.read(read, [])

    def get(self, entry_id: int) -> MemoryEntry | None:
        """The entry with that id; None when there is none (any id SQLite cannot hold)."""
        if not _valid_id(entry_id):
            return None
        self.flush()

        def read(conn: sqlite3.Connection) -> MemoryEntry | None:
            row = conn.execute(f"SELECT {COLUMNS} FROM entries e WHERE e.id = ?", (entry_id,))
            found = row.fetchone()
            return None if found is None else entry_of(found)

        return self._store.read(read, None)

    def forget(self, entry_id: int) -> bool:
        """Delete one entry; False when there is none with that id."""
        if not _valid_id(entry_id):
            return False
        self.flush()

        def delete(conn: sqlite3.Connection) -> bool:
            row = conn.execute(f"SELECT {COLUMNS} FROM entries e WHERE e.id = ?", (entry_id,))
            found = row.fetchone()
            if found is None:
                return False
            entry = entry_of(found)
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
                # Forgotten means never sent again: the requests that quoted it lose their
                # kept block, and their repeats recall afresh, without it.
                conn.execute(
                    "UPDATE entries SET block = NULL WHERE agent = ? AND instr(block, ?) > 0",
                    (entry.agent, rendered_entry(entry)),
                )
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return True

        return self._store.use(delete, False, create=False)

    def clear(self, agent: str | None = None) -> int:
        """Delete every entry (of one agent when given); returns how many went."""
        self.flush()

        def delete(conn: sqlite3.Connection) -> int:
            if agent is None:
                return conn.execute("DELETE FROM entries").rowcount
            return conn.execute("DELETE FROM entries WHERE agent = ?", (agent,)).rowcount

        return self._store.use(delete, 0, create=False)
