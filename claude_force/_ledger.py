"""The call ledger: one SQLite row per completed call, written off the caller's path.

:meth:`Ledger.record` only appends to an in-memory queue. A background thread writes queued rows
in batches (one ``executemany`` in one transaction) every ``flush_interval`` seconds or as soon as
``batch_size`` rows are waiting. The database runs in WAL mode with a busy timeout, so several
``Ledger`` instances and several processes can share one file.

Timestamps (``ts``) are POSIX epoch seconds (UTC) as ``float``: cheap to compare and to filter
with ``rows(since=...)``; reports format them for people.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import operator
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from ._errors import InvalidArgumentError
from ._usage import Usage

__all__ = ["OUTCOMES", "Ledger", "LedgerRow", "task_hash"]

logger = logging.getLogger("claude_force.ledger")

OUTCOMES = frozenset({"success", "error"})
_BUSY_TIMEOUT_MS = 10_000
_MAX_WRITE_ATTEMPTS = 5
_CLOSE_JOIN_SECONDS = 30.0

# message_id is unique among *upstream* calls only: a response-cache hit replays the original
# message id for tracing, and each hit must still be recorded. NULL ids (failures) never collide.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    message_id TEXT,
    request_id TEXT,
    agent TEXT NOT NULL,
    model TEXT NOT NULL,
    workflow_run TEXT,
    workflow_step INTEGER,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_5m_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd TEXT,
    cost_saved_usd TEXT,
    latency_ms REAL,
    attempts INTEGER NOT NULL DEFAULT 1,
    cached INTEGER NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL CHECK (outcome IN ('success', 'error')),
    error_type TEXT,
    task_hash TEXT,
    task_text TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS calls_message_id ON calls(message_id) WHERE cached = 0;
CREATE INDEX IF NOT EXISTS calls_ts ON calls(ts);
"""


def task_hash(text: str) -> str:
    """SHA-256 hex digest of a task's text, so calls can be grouped without storing the text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerRow:
    """One completed call (success or failure), as stored in the ledger.

    ``ts`` is epoch seconds (UTC); ``None`` means "now" by the ledger's clock when recorded.
    ``cost_usd`` is ``None`` when the model is unpriced; a response-cache hit has ``cached=True``,
    ``cost_usd=Decimal("0")`` and what it saved in ``cost_saved_usd``. ``workflow_step`` is the
    0-based index of the step in its workflow. ``task_text`` is kept only when the ledger was
    opened with ``store_task_text=True``; ``task_hash`` is filled from it when missing.
    """

    agent: str
    model: str
    outcome: str = "success"
    ts: float | None = None
    message_id: str | None = None
    request_id: str | None = None
    workflow_run: str | None = None
    workflow_step: int | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    cost_usd: Decimal | None = None
    cost_saved_usd: Decimal | None = None
    latency_ms: float | None = None
    attempts: int = 1
    cached: bool = False
    error_type: str | None = None
    task_hash: str | None = None
    task_text: str | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise InvalidArgumentError(
                f"ledger outcome must be one of {sorted(OUTCOMES)}, got {self.outcome!r}"
            )
        for name in ("cost_usd", "cost_saved_usd"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Decimal):
                raise InvalidArgumentError(
                    f"LedgerRow.{name} must be a Decimal or None, got {value!r}; "
                    "use Decimal(str(x)) so money keeps exact cents"
                )

    @property
    def usage(self) -> Usage:
        return Usage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cache_write_5m_tokens=self.cache_write_5m_tokens,
            cache_write_1h_tokens=self.cache_write_1h_tokens,
            cache_read_tokens=self.cache_read_tokens,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: money as decimal strings, everything else as is."""
        out: dict[str, Any] = {}
        for name in _COLUMNS:
            value = getattr(self, name)
            out[name] = str(value) if isinstance(value, Decimal) else value
        return out


_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(LedgerRow))
_INSERT = (
    f"INSERT OR IGNORE INTO calls ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM calls"


_Params = tuple[object, ...]


_GET_ALL = operator.attrgetter(*_COLUMNS)
_TS_INDEX = _COLUMNS.index("ts")
_PLAIN = (str, int, float, type(None))


def _to_params(row: LedgerRow, ts: float | None = None) -> _Params:
    """SQL parameters for ``row``; type errors surface here, on the caller, not in the writer.

    Runs on every call's path, so plain values cost no per-field Python work.
    """
    params = list(_GET_ALL(row))
    if ts is not None:
        params[_TS_INDEX] = ts
    for i, value in enumerate(params):
        kind = type(value)
        if kind in _PLAIN:
            continue
        if kind is Decimal:
            params[i] = str(value)
        elif kind is bool:
            params[i] = int(value)
        else:
            raise InvalidArgumentError(
                f"LedgerRow.{_COLUMNS[i]} must be a str, number or None, got {kind.__name__} "
                f"{value!r}; convert it before recording"
            )
    return tuple(params)


def _from_record(record: Sequence[Any]) -> LedgerRow:
    values = dict(zip(_COLUMNS, record, strict=True))
    for name in ("cost_usd", "cost_saved_usd"):
        if values[name] is not None:
            values[name] = Decimal(values[name])
    values["cached"] = bool(values["cached"])
    return LedgerRow(**values)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    # busy_timeout first: switching to WAL itself needs a lock another process may hold.
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _insert(conn: sqlite3.Connection, params: Iterable[_Params]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(_INSERT, params)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class Ledger:
    """Append-only record of calls in a SQLite file, written by a background thread.

    Use it as a context manager or call :meth:`close`; an ``atexit`` hook flushes whatever is
    still queued when the process exits normally. A batch that cannot be written after several
    attempts (disk full, file unwritable) is logged and counted in :attr:`dropped`.
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        batch_size: int = 100,
        flush_interval: float = 0.5,
        store_task_text: bool = False,
    ) -> None:
        if batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be at least 1, got {batch_size!r}")
        if not flush_interval > 0:
            raise InvalidArgumentError(
                f"flush_interval must be a positive number of seconds, got {flush_interval!r}"
            )
        self.path = Path(path)
        self._clock = clock
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._store_task_text = store_task_text
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _connect(self.path) as conn:
            conn.executescript(_SCHEMA)
        conn.close()
        self._cond = threading.Condition()
        self._pending: deque[_Params] = deque()
        self._enqueued = 0  # rows handed to record() so far
        self._done = 0  # rows written (or given up on) so far
        self._flush_waiters = 0
        self._closing = False
        self._closed = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="claude-force-ledger", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # -- public API ---------------------------------------------------------------------------

    def record(self, row: LedgerRow) -> None:
        """Queue ``row`` for writing; returns at once, no disk I/O (unless already closed)."""
        if row.task_text is not None:
            row = self._prepare(row)
        params = _to_params(row, row.ts if row.ts is not None else self._clock())
        with self._cond:
            if not self._closed:
                self._pending.append(params)
                self._enqueued += 1
                # Wake the writer on the first row (starts its flush_interval) and on a full batch.
                if len(self._pending) in (1, self._batch_size):
                    self._cond.notify_all()
                return
        # After close (e.g. a late call during interpreter shutdown) write directly, not lose it.
        conn = _connect(self.path)
        try:
            _insert(conn, [params])
        finally:
            conn.close()

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every row recorded so far is written; False if ``timeout`` ran out."""
        with self._cond:
            target = self._enqueued
            self._flush_waiters += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: self._done >= target, timeout)
            finally:
                self._flush_waiters -= 1

    def close(self) -> None:
        """Write everything queued, stop the writer thread. Safe to call twice."""
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._cond.notify_all()
        self._thread.join(_CLOSE_JOIN_SECONDS)
        with self._cond:
            self._closed = True
        atexit.unregister(self.close)

    def rows(self, since: float | None = None) -> list[LedgerRow]:
        """Every stored row with ``ts >= since`` (all when ``None``), oldest first.

        Rows this instance has queued are flushed first, so a caller sees its own writes.
        """
        if not self._closed:
            self.flush()
        conn = _connect(self.path)
        try:
            if since is None:
                cursor = conn.execute(f"{_SELECT} ORDER BY ts, id")
            else:
                cursor = conn.execute(f"{_SELECT} WHERE ts >= ? ORDER BY ts, id", (since,))
            return [_from_record(r) for r in cursor.fetchall()]
        finally:
            conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _prepare(self, row: LedgerRow) -> LedgerRow:
        changes: dict[str, Any] = {}
        if row.ts is None:
            changes["ts"] = self._clock()
        if row.task_text is not None:
            if row.task_hash is None:
                changes["task_hash"] = task_hash(row.task_text)
            if not self._store_task_text:
                changes["task_text"] = None
        return replace(row, **changes) if changes else row

    def _wait_done(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` rows are written, without asking for a flush (for tests)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._done >= count, timeout)

    def _next_batch(self) -> tuple[list[_Params], bool]:
        """Block until there is something to write or the ledger closes."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._pending) or self._closing)
            if self._should_linger():
                # Let a batch build up; record() (batch full), flush() and close() cut this short.
                self._cond.wait_for(lambda: not self._should_linger(), self._flush_interval)
            batch = list(self._pending)
            self._pending.clear()
            return batch, self._closing

    def _should_linger(self) -> bool:
        return (
            0 < len(self._pending) < self._batch_size
            and not self._closing
            and self._flush_waiters == 0
        )

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                batch, closing = self._next_batch()
                if batch:
                    conn = self._write(conn, batch)
                elif closing:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _write(
        self, conn: sqlite3.Connection | None, batch: list[_Params]
    ) -> sqlite3.Connection | None:
        for attempt in range(1, _MAX_WRITE_ATTEMPTS + 1):
            try:
                conn = conn or _connect(self.path)
                _insert(conn, batch)
                break
            except sqlite3.Error as exc:
                logger.warning(
                    "ledger %s: writing %d rows failed (attempt %d of %d): %s",
                    self.path,
                    len(batch),
                    attempt,
                    _MAX_WRITE_ATTEMPTS,
                    exc,
                )
                if conn is not None:
                    conn.close()
                conn = None
                with self._cond:  # back off without holding up flush() waiters forever
                    self._cond.wait(self._flush_interval * attempt)
        else:
            logger.error(
                "ledger %s: gave up on %d rows after %d attempts; check the disk and the file",
                self.path,
                len(batch),
                _MAX_WRITE_ATTEMPTS,
            )
            self.dropped += len(batch)
        with self._cond:
            self._done += len(batch)
            self._cond.notify_all()
        return conn
