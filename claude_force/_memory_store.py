"""The agent memory store's file: its schema, the writer queue and thread, the pool of
read-only connections, and what happens when the file is damaged or cannot be written.

What is stored and how it is recalled live in ``_memory.py``; this module knows entries only
as rows. Everything here is best-effort (see ``_memory.py``): a problem is one warning per
cause on the ``claude_force.memory`` logger, never an exception on the call path.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import sqlite3
import threading
import time
import urllib.parse
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ._ledger import _cannot_write, _keep_out_of_git, _move_aside, task_hash
from ._ledger import _log as _data_folder_log
from ._memory_memo import Probe
from ._warnings import OnceLog
from .cache._sqlite import file_identity as _identity
from .cache._sqlite import is_corruption
from .cache._worker import Worker

__all__ = ["Pending", "Snapshot", "Store", "akey", "busy_at_fork", "empty_store", "storable"]

logger = logging.getLogger("claude_force.memory")
_log = OnceLog(logger)

_MAX_PENDING = 10_000
_BUSY_TIMEOUT_S = 10.0
_READ_BUSY_TIMEOUT_S = 0.1
_WRITE_ATTEMPTS = 3
# entries.seen was added without a new version: earlier releases read and write a store
# that has it (leaving it NULL), and this one adds it to a store that lacks it.
_SCHEMA_VERSION = 1
_LINGER_S = 0.03  # in a burst, how long the writer lets entries gather: see Store._gather
_LINGER_ENTRIES = 256  # ...or until this many are queued

_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent TEXT NOT NULL,
    task TEXT NOT NULL,
    task_hash TEXT NOT NULL,
    excerpt TEXT NOT NULL,
    ts REAL NOT NULL,
    model TEXT NOT NULL,
    size INTEGER NOT NULL,
    seen REAL,
    block TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS entries_agent_task ON entries (agent, task_hash);
CREATE INDEX IF NOT EXISTS entries_agent_ts ON entries (agent, ts);
CREATE INDEX IF NOT EXISTS entries_ts ON entries (ts);
CREATE VIRTUAL TABLE IF NOT EXISTS entries_fts USING fts5(
    akey, task, content='entries', content_rowid='id', tokenize='unicode61 remove_diacritics 0'
);
CREATE VIRTUAL TABLE IF NOT EXISTS entries_terms USING fts5vocab(entries_fts, 'row');
CREATE TRIGGER IF NOT EXISTS entries_ai AFTER INSERT ON entries BEGIN
    INSERT INTO entries_fts (rowid, akey, task) VALUES (new.id, akey(new.agent), new.task);
END;
CREATE TRIGGER IF NOT EXISTS entries_ad AFTER DELETE ON entries BEGIN
    INSERT INTO entries_fts (entries_fts, rowid, akey, task)
        VALUES ('delete', old.id, akey(old.agent), old.task);
END;
PRAGMA user_version = {_SCHEMA_VERSION};
COMMIT;
"""
T = TypeVar("T")


@functools.lru_cache(maxsize=256)  # the triggers call it for every row written or pruned
def akey(agent: str) -> str:
    """One FTS token per agent, so the index itself narrows a query to one agent's entries."""
    return "a" + task_hash(agent)[:16]


# -- the store ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pending:
    agent: str
    task: str
    digest: str
    excerpt: str
    ts: float
    model: str
    replace: bool  # a fresh answer replaces an older one; a cache hit only fills a gap
    # When the recall for this task's request looked at the store (the clock of ``ts``):
    # a repeat recalls the entries older than that, which are the ones that request saw.
    # None when unknown (no recall was made in this process): then as of the entry itself.
    seen: float | None = None
    # The memory block that request sent ("" for none): a repeat sends it again, whatever
    # was stored since. None when unknown (no recall was made in this process).
    block: str | None = None


class Snapshot:
    """What recall reads again and again from one state of the store, kept per reader
    connection: the number of entries, each word's document count (an fts5vocab lookup,
    tens of microseconds each) and whether an agent has any entry.

    Valid for one ``PRAGMA data_version`` of its connection, read as the first statement of
    each read transaction: the version of the snapshot that transaction reads, which moves
    whenever any other connection (this process's writer or another process) committed.
    A reader never writes, so the same version means the same rows, byte for byte.
    """

    __slots__ = ("agents", "total", "version", "words")

    MAX_WORDS = 8192  # beyond it the words start over: a bound, not a working-set size

    def __init__(self) -> None:
        self.version: int | None = None
        self.total: int | None = None
        self.words: dict[str, int] = {}
        self.agents: dict[str, bool] = {}

    def sync(self, conn: sqlite3.Connection) -> Snapshot:
        """Start (or keep) the cache for the snapshot ``conn``'s transaction reads."""
        version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        if version != self.version or len(self.words) > self.MAX_WORDS:
            self.version, self.total = version, None
            self.words, self.agents = {}, {}
        return self


def _connect(path: Path) -> sqlite3.Connection:
    if not path.exists():
        # The store holds tasks and answers: private to its owner, like the cache.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    conn = sqlite3.connect(
        path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    try:
        conn.create_function("akey", 1, akey, deterministic=True)
        conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA temp_store = MEMORY")  # where a batch is staged: see _STAGE
        if conn.execute("PRAGMA user_version").fetchone()[0] != _SCHEMA_VERSION:
            conn.executescript(_SCHEMA)
        _add_columns(conn)
    except BaseException:
        conn.close()
        raise
    return conn


# Columns added after the first release: an earlier release's store gains them when a writer
# opens it (its version unchanged, so that release reads and writes the store on).
_ADDED_COLUMNS = {"seen": "REAL", "block": "TEXT"}


def _add_columns(conn: sqlite3.Connection) -> None:
    """Give a store made by an earlier release the columns added since (checked again under
    the write lock: another process may be adding them to the same file)."""
    if set(_ADDED_COLUMNS) <= {row[1] for row in conn.execute("PRAGMA table_info(entries)")}:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(entries)")}
        for name, kind in _ADDED_COLUMNS.items():
            if columns and name not in columns:
                conn.execute(f"ALTER TABLE entries ADD COLUMN {name} {kind}")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _connect_reader(path: Path, identity: tuple[int, int]) -> sqlite3.Connection | None:
    """A connection that only reads ``path`` (never creates it), or None when the file is
    not the one expected any more or holds no store yet (the writer makes the schema).

    Its busy timeout is short: a WAL reader never waits for a writer, so ``busy`` only
    comes from a store not in WAL mode being committed to, and recall then goes without.
    """
    uri = "file:" + urllib.parse.quote(str(path.absolute())) + "?mode=rw"
    conn = sqlite3.connect(
        uri, uri=True, timeout=_READ_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA query_only = ON")
        fresh = _identity(path) != identity
        if fresh or conn.execute("PRAGMA user_version").fetchone()[0] != _SCHEMA_VERSION:
            conn.close()
            return None
    except BaseException:
        conn.close()
        raise
    return conn


def empty_store() -> sqlite3.Connection:
    """An empty store in memory, for recalling from queued entries alone."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.create_function("akey", 1, akey, deterministic=True)
    conn.executescript(_SCHEMA)
    return conn


_LIVE: weakref.WeakSet[Store] = weakref.WeakSet()  # this process's stores
_BUSY_AT_FORK: frozenset[str] = frozenset()


def _after_fork_in_child() -> None:
    """Note the files a parent's thread was using (writing, reading, probing) when this
    process was forked: SQLite's lock bookkeeping was copied in the middle of it, so a
    connection here could wait forever or write over the parent's transaction. The stores
    themselves are the parent's from now on: they never count for a later fork."""
    global _BUSY_AT_FORK
    stores = list(_LIVE)
    _LIVE.clear()
    _BUSY_AT_FORK = frozenset(os.path.realpath(s.path) for s in stores if s.in_use())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def busy_at_fork(path: Path) -> bool:
    """Whether a thread of the parent was using ``path`` when this process was forked."""
    return bool(_BUSY_AT_FORK) and os.path.realpath(path) in _BUSY_AT_FORK


class Store:
    """The file, its connection and the queue of entries to write; shared by threads."""

    def __init__(
        self, path: Path, *, max_entries_per_agent: int, max_bytes: int, probe: Probe
    ) -> None:
        self.path = path
        self.max_entries_per_agent = max_entries_per_agent
        self.max_bytes = max_bytes
        self.dropped = 0
        self._pending: deque[Pending] = deque()
        self._writing: tuple[Pending, ...] = ()  # taken from the queue, not yet committed
        self._taken = 0  # batches taken from the queue to be written so far: see queued()
        self._on_way: dict[tuple[str, str], int] = {}  # (agent, digest): queued or writing
        self._lock = threading.Lock()  # the queue and the worker
        self._gathering = threading.Condition(self._lock)  # the worker's linger: see _gather
        self._wrote_at = -math.inf  # time.monotonic() of the latest write
        self._io = threading.Lock()  # the writing connection, one thread at a time
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._worker: Worker | None = None
        self._readers: list[_Reader] = []  # idle ones
        self._readers_lock = threading.Lock()
        self._readers_epoch = 0  # moves on close: a reader of an older epoch is not kept
        self._reading = 0  # reads in progress (see in_use)
        self.probe = probe  # also counts this process's changes: see _memory_memo.py
        _LIVE.add(self)

    def in_use(self) -> bool:
        """Whether a thread is inside SQLite on this store's file: writing, reading or
        probing it (asked by a forked child of the thread that forked, alone there)."""
        return self._io.locked() or self._reading > 0 or self.probe.in_use()

    # -- any thread ------------------------------------------------------------------------

    def put(self, item: Pending) -> None:
        with self._lock:
            if len(self._pending) >= _MAX_PENDING:
                self._arrived([self._pending.popleft()])
                self.dropped += 1
                _log.warn(
                    f"overflow:{self.path}",
                    f"memory store {self.path} is not keeping up; dropping the oldest entries",
                )
            self._pending.append(item)
            key = (item.agent, item.digest)
            self._on_way[key] = self._on_way.get(key, 0) + 1
            self.probe.changed()
            queued = len(self._pending)
            if queued >= _LINGER_ENTRIES:
                self._gathering.notify()
            if self._worker is None:
                self._worker = Worker(self._gather, name="claude-force-memory")
                queued = 1
            worker = self._worker
        # Woken for the first entry of a batch (the worker writes until the queue is empty,
        # so it takes the rest), for a full one, and whenever its thread is not running (a
        # fork left it dead with entries queued, or an error ended it): a wake per entry
        # cost each call a lock and a notify for nothing.
        if queued == 1 or queued == _LINGER_ENTRIES or not worker.alive:
            worker.wake()

    def _gather(self) -> None:
        """The worker's job: write what is queued, letting a burst gather before each batch.

        In a burst (the last write was under :data:`_LINGER_S` ago) the worker waits that
        long before each transaction, also between the batches of one wake-up, so a burst
        is a few transactions instead of one per call: each commit (and the FTS5 index
        segment it adds) costs about as much as the rows it writes, and entries that came
        during a write are few. An entry after a pause is written at once, so the store is
        soon quiet again (the recall memo answers only then). The wait ends early when
        enough are queued or the store is closing; close and flush never wait.
        """
        while True:
            with self._gathering:
                if not self._pending:
                    return
                if time.monotonic() - self._wrote_at < _LINGER_S:
                    self._gathering.wait_for(
                        lambda: self._worker is None or len(self._pending) >= _LINGER_ENTRIES,
                        timeout=_LINGER_S,
                    )
            with self._io:
                self._write_queued()

    def drain(self) -> None:
        """Write everything queued now (flush and close)."""
        with self._io:
            while self._write_queued():
                pass

    def _write_queued(self) -> bool:
        """Write what is queued now in one transaction (with ``_io`` held); False when
        nothing was."""
        with self._lock:
            batch = tuple(self._pending)
            self._writing = batch  # before the queue empties: see quiet()
            self._pending.clear()
            self._taken += 1  # before the commit: see queued()
        if not batch:
            return False
        try:
            self._write(list(batch))
        finally:
            self.probe.changed()  # committed: answers read before it are stale
            with self._lock:
                self._writing = ()
                self._arrived(batch)
                self._wrote_at = time.monotonic()
        return True

    def on_its_way(self, agent: str, digest: str) -> bool:
        """Whether an entry for ``agent``'s task is queued or being written (no lock: one
        dict read, on the loop)."""
        return (agent, digest) in self._on_way

    def _arrived(self, items: Iterable[Pending]) -> None:
        """``items`` left the queue for good (written, or given up); caller holds the lock."""
        on_way = self._on_way
        for p in items:
            key = (p.agent, p.digest)
            left = on_way.get(key, 0) - 1
            if left > 0:
                on_way[key] = left
            else:
                on_way.pop(key, None)

    def quiet(self) -> bool:
        """Nothing this process queued is waiting or being written.

        No lock (it is asked on the event loop for every call): an entry is in the queue or
        in ``_writing`` (set before the queue is emptied, cleared after the commit), and
        the queue is looked at first, so an entry on its way is always seen in one.
        """
        return not self._pending and not self._writing

    def unwritten(self) -> tuple[Pending, ...]:
        """What this process queued and has not committed yet, oldest first.

        An entry leaves this view only after its transaction committed, so a reader that
        takes it before reading the store sees every queued entry in one place or the other.
        """
        return self.queued()[0]

    def queued(self) -> tuple[tuple[Pending, ...], int, int]:
        """:meth:`unwritten`, how many of them (the first) were being written, and
        :meth:`batches_taken` then. A reader whose read transaction began before the count
        moved can see only those first ones committed: the rest were still queued."""
        with self._lock:
            return (*self._writing, *self._pending), len(self._writing), self._taken

    def batches_taken(self) -> int:
        """Batches taken from the queue to be written so far (counted before each commit)."""
        return self._taken

    def close(self) -> None:
        with self._lock:
            worker, self._worker = self._worker, None
            self._gathering.notify_all()  # a lingering worker writes now
        if worker is not None:
            worker.close()
        self.drain()  # what the worker left, on this thread
        with self._io:
            self._disconnect()
        with self._readers_lock:
            idle, self._readers = self._readers, []
            self._readers_epoch += 1
        for reader in idle:
            reader.conn.close()
        self.probe.close()

    def read(self, fn: Callable[[sqlite3.Connection], T], default: T) -> T:
        """``fn(reader)`` on a read-only connection of its own, or ``default`` when the store
        is missing or unusable (with a warning, as :meth:`use`).

        Readers never take the writing connection's lock nor the file's write lock (WAL
        readers need neither), so recalls run in parallel with each other and with a write,
        and a write lock held by another process costs a recall nothing.
        """
        return self.read_snapshot(lambda conn, _: fn(conn), default)

    def read_snapshot(self, fn: Callable[[sqlite3.Connection, Snapshot], T], default: T) -> T:
        """:meth:`read`, ``fn`` also given its connection's :class:`Snapshot` cache, synced
        to the state this read transaction sees."""
        identity = _identity(self.path)
        if identity is None:
            return default
        reader: _Reader | None = None
        with self._readers_lock:
            self._reading += 1
        try:
            with self._readers_lock:
                epoch = self._readers_epoch
                while self._readers:
                    reader = self._readers.pop()
                    if reader.identity == identity:
                        break
                    reader.conn.close()  # it reads a file replaced or set aside since
                    reader = None
            return self._read_on(reader, identity, epoch, fn, default)
        finally:
            with self._readers_lock:
                self._reading -= 1

    def _read_on(
        self,
        reader: _Reader | None,
        identity: tuple[int, int],
        epoch: int,
        fn: Callable[[sqlite3.Connection, Snapshot], T],
        default: T,
    ) -> T:
        conn: sqlite3.Connection | None = None
        try:
            if reader is None:
                conn = _connect_reader(self.path, identity)
                if conn is None:
                    return default
                reader = _Reader(conn, identity, Snapshot())
            conn = reader.conn
            # One read transaction: a consistent snapshot for all of ``fn``'s statements, and
            # ended here, so the pooled connection never keeps an old snapshot open.
            conn.execute("BEGIN")
            try:
                value = fn(conn, reader.snapshot.sync(conn))
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            self._failed(exc, identity)
            return default
        except OSError as exc:
            if conn is not None:
                conn.close()
            _warn_unusable(self.path, exc)
            return default
        except Exception as exc:  # a row edited by hand: what is read from it is not ours
            _log.warn(
                f"content:{self.path}",
                f"memory store {self.path} holds a row that cannot be read "
                f"({type(exc).__name__}: {exc}); recall skips it for now. "
                "`claude-force memory clear` starts the store afresh",
            )
            return default
        with self._readers_lock:
            if epoch == self._readers_epoch:
                self._readers.append(reader)
                return value
        conn.close()
        return value

    def use(self, fn: Callable[[sqlite3.Connection], T], default: T, *, create: bool) -> T:
        """``fn(connection)``, or ``default`` (with a warning) when the store is unusable.

        Without ``create`` a missing file is ``default``: reading never creates the store.
        """
        if not create and not self.path.exists():
            return default
        with self._io:
            try:
                return self._use(fn, default, create)
            finally:
                self.probe.changed()  # forget and clear write through here

    def _use(self, fn: Callable[[sqlite3.Connection], T], default: T, create: bool) -> T:
        for _ in range(2):  # a second try after a damaged file was set aside
            try:
                return fn(self._open())
            except sqlite3.Error as exc:
                self._disconnect()
                if not self._failed(exc):
                    return default
                if not create:
                    return default
            except OSError as exc:
                self._disconnect()
                _warn_unusable(self.path, exc)
                return default
        return default

    # -- with self._io held -------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if self._conn is not None and _identity(self.path) != self._identity:
            self._disconnect()  # set aside by another process, or deleted
        if self._conn is None:
            folder = self.path.parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                # One cause with the usage ledger's: one warning for a broken data folder.
                _data_folder_log.warn(
                    f"folder:{folder}",
                    f"data folder {folder} cannot be created ({exc.strerror or exc}); agent "
                    "memory is off. Make it a writable folder",
                )
                raise _Unusable from exc
            _keep_out_of_git(folder)
            self._conn = _connect(self.path)
            self._identity = _identity(self.path)
        return self._conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _failed(self, exc: sqlite3.Error, identity: tuple[int, int] | None = None) -> bool:
        """Warn about ``exc`` once per cause; True when trying again may succeed."""
        if is_corruption(exc):
            expected = identity or self._identity or _identity(self.path)
            target = _move_aside(self.path, expected=expected)
            self.probe.changed()
            if target is not None:
                _log.warn(
                    f"damaged:{target}",
                    f"memory store {self.path} was damaged ({exc}); moved it to {target} and "
                    "started a fresh one",
                )
            return True
        if _cannot_write(exc):
            _log.warn(
                f"unwritable:{self.path}",
                f"memory store {self.path} cannot be written ({exc}); agent memory is not "
                "being kept. Make the file and its folder writable",
            )
            return False
        _log.warn(
            f"error:{self.path}",
            f"memory store {self.path} failed ({exc}); agent memory is skipped for now",
        )
        return False

    def _write(self, batch: list[Pending]) -> None:
        for _ in range(_WRITE_ATTEMPTS):
            try:
                _apply(self._open(), batch, self.max_entries_per_agent, self.max_bytes)
                return
            except sqlite3.Error as exc:
                self._disconnect()
                if not self._failed(exc):
                    break
            except OSError as exc:
                _warn_unusable(self.path, exc)
                break
            except (TypeError, ValueError) as exc:
                # Text SQLite cannot take, or a row edited by hand (rolled back by _apply).
                _log.warn(f"value:{self.path}", f"memory store {self.path}: {exc}; entries dropped")
                break
        self.dropped += len(batch)


@dataclass(frozen=True, slots=True)
class _Reader:
    """A pooled read-only connection, the file it reads and its snapshot cache."""

    conn: sqlite3.Connection
    identity: tuple[int, int]
    snapshot: Snapshot


class _Unusable(OSError):
    """The data folder cannot be made; its warning is already given."""


def _warn_unusable(path: Path, exc: OSError) -> None:
    if not isinstance(exc, _Unusable):
        _log.warn(
            f"unusable:{path}",
            f"memory store {path} cannot be used ({exc.strerror or exc}); agent memory is "
            "off. Make the file and its folder writable",
        )


def storable(text: str) -> str:
    """``text`` as SQLite can store it: a lone surrogate (from a ``"\\udc80"`` escape in the
    service's JSON) becomes "?"."""
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"
_DIGESTS_PER_QUERY = 500  # within the 999 parameters of older SQLite builds


@functools.cache
def _insert_sql(rows: int) -> str:
    return (
        "INSERT OR IGNORE INTO entries "
        "(agent, task, task_hash, excerpt, ts, model, size, seen, block) "
        "VALUES " + ", ".join([_ROW] * rows)
    )


@functools.cache
def _replace_sql(digests: int) -> str:
    marks = ", ".join(["?"] * digests)
    return f"DELETE FROM entries WHERE agent = ? AND task_hash IN ({marks})"


def _size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "replace"))


def _row(p: Pending) -> tuple[str, str, str, str, float, str, int, float | None, str | None]:
    # The answer's text and model come from the service's JSON, where a "\\udc80" escape
    # gives a lone surrogate SQLite cannot encode: stored as "?".
    block = None if p.block is None else storable(p.block)
    size = _size(p.task) + _size(p.excerpt) + (0 if block is None else _size(block))
    model = storable(p.model)
    return (p.agent, p.task, p.digest, storable(p.excerpt), p.ts, model, size, p.seen, block)


def _apply(conn: sqlite3.Connection, batch: list[Pending], per_agent: int, max_bytes: int) -> None:
    """Write ``batch`` and prune to the caps, oldest first, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if len({(p.agent, p.digest) for p in batch}) == len(batch):
            _insert_distinct(conn, batch)
        else:  # a task twice: entry by entry, so a later one acts on the earlier one's row
            for p in batch:
                if p.replace:
                    p = _carry_seen(p, _seen_of(conn, p.agent, [p.digest]))
                    conn.execute(_replace_sql(1), (p.agent, p.digest))
                conn.execute(_insert_sql(1), _row(p))
        _prune(conn, {p.agent for p in batch}, per_agent, max_bytes)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


_COLUMNS = "agent, task, task_hash, excerpt, ts, model, size, seen, block"
# A batch is staged row by row in a table of the connection's own (in memory), then written
# by statements whose text never changes: a VALUES list as long as the batch was a new
# statement to compile for every batch size, which cost more than writing its rows.
_STAGE = f"""
CREATE TEMP TABLE IF NOT EXISTS memory_batch (
    pos INTEGER PRIMARY KEY, replace INTEGER NOT NULL, {_COLUMNS}
)
"""
_STAGE_ROW = f"INSERT INTO temp.memory_batch ({_COLUMNS}, pos, replace) VALUES {_ROW[:-1]}, ?, ?)"
_STAGED_STORED = (
    "SELECT b.pos, e.seen, e.block FROM temp.memory_batch b JOIN entries e "
    "ON e.agent = b.agent AND e.task_hash = b.task_hash WHERE b.replace"
)
_CARRIED = "UPDATE temp.memory_batch SET seen = ?, block = ?, size = ? WHERE pos = ?"
_DELETE_REPLACED = (
    "DELETE FROM entries WHERE id IN (SELECT e.id FROM temp.memory_batch b JOIN entries e "
    "ON e.agent = b.agent AND e.task_hash = b.task_hash WHERE b.replace)"
)
_INSERT_STAGED = (
    f"INSERT OR IGNORE INTO entries ({_COLUMNS}) "
    f"SELECT {_COLUMNS} FROM temp.memory_batch ORDER BY pos"
)


def _insert_distinct(conn: sqlite3.Connection, batch: list[Pending]) -> None:
    """Write a batch with no task twice: every replaced entry first (each delete touches its
    own task's row only), then the rows in the batch's order, so ids follow it.

    One statement for all the deletes and one for all the rows: FTS5 writes its pending
    index at the end of every statement that changes it (through the triggers), so a
    statement per entry cost a new index segment, and merges, per entry.
    """
    conn.execute(_STAGE)
    conn.executemany(_STAGE_ROW, [(*_row(p), i, p.replace) for i, p in enumerate(batch)])
    stored = conn.execute(_STAGED_STORED).fetchall()
    if stored:
        carried = []
        for pos, seen, block in stored:
            if seen is None and block is None:
                continue
            kept = {
                batch[pos].digest: (
                    None if seen is None else float(seen),
                    None if block is None else str(block),
                )
            }
            row = _row(_carry_seen(batch[pos], kept))
            carried.append((row[7], row[8], row[6], pos))
        conn.executemany(_CARRIED, carried)
        conn.execute(_DELETE_REPLACED)
    conn.execute(_INSERT_STAGED)
    conn.execute("DELETE FROM temp.memory_batch")


def _seen_of(
    conn: sqlite3.Connection, agent: str, digests: list[str]
) -> dict[str, tuple[float | None, str | None]]:
    """The recall times and sent blocks of the agent's stored entries for these tasks
    (those that have either)."""
    found: dict[str, tuple[float | None, str | None]] = {}
    for i in range(0, len(digests), _DIGESTS_PER_QUERY):
        some = digests[i : i + _DIGESTS_PER_QUERY]
        marks = ", ".join("?" * len(some))
        sql = (
            f"SELECT task_hash, seen, block FROM entries WHERE agent = ? "
            f"AND task_hash IN ({marks}) AND (seen IS NOT NULL OR block IS NOT NULL)"
        )
        found.update(
            (str(d), (None if t is None else float(t), None if b is None else str(b)))
            for d, t, b in conn.execute(sql, (agent, *some))
        )
    return found


def _carry_seen(p: Pending, seen: dict[str, tuple[float | None, str | None]]) -> Pending:
    """A fresh answer replacing a stored one was asked for as of the stored one's recall
    (the repeat rebuilt that request): it keeps that time, and the stored block when its
    own is not known, so the next repeat is its hit."""
    old = seen.get(p.digest)
    if old is None:
        return p
    time, block = old
    return dataclasses.replace(
        p,
        seen=p.seen if time is None else time,
        block=block if p.block is None else p.block,
    )


def _prune(conn: sqlite3.Connection, agents: set[str], per_agent: int, max_bytes: int) -> None:
    """Delete the oldest entries beyond the caps, in the writer's transaction.

    Each check is a cheap one first, made so that a store within its caps costs no scan:
    an agent's newest entry past its cap (a walk of its index) before the delete of it and
    everything older (a range of that index), and the file's size before the sum of the
    entries' sizes (text kept is in the file's pages, so a file no bigger than
    ``max_bytes`` cannot hold more than ``max_bytes`` of it).
    """
    for agent in agents:
        first_out = conn.execute(
            "SELECT ts, id FROM entries WHERE agent = ? ORDER BY ts DESC, id DESC LIMIT 1 OFFSET ?",
            (agent, per_agent),
        ).fetchone()
        if first_out is not None:
            ts, out_id = first_out
            conn.execute(
                "DELETE FROM entries WHERE agent = ? AND ts <= ? AND (ts < ? OR id <= ?)",
                (agent, ts, ts, out_id),
            )
    file_bytes = conn.execute(
        "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
    ).fetchone()[0]
    if file_bytes <= max_bytes:
        return
    total = conn.execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()[0]
    if total > max_bytes:
        doomed: list[tuple[int]] = []
        for entry_id, size in conn.execute("SELECT id, size FROM entries ORDER BY ts, id"):
            if total <= max_bytes:
                break
            doomed.append((entry_id,))
            total -= size
        conn.executemany("DELETE FROM entries WHERE id = ?", doomed)
