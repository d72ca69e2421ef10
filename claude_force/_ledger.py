"""The call ledger: one SQLite row per completed call, written off the caller's path.

:meth:`Ledger.record` only appends to an in-memory queue. A background thread writes queued rows
in batches (one transaction) every ``flush_interval`` seconds or as soon as ``batch_size`` rows
are waiting. The database runs in WAL mode with a busy timeout, so several ``Ledger`` instances
and several processes can share one file.

Timestamps (``ts``) are POSIX epoch seconds (UTC) as ``float``: cheap to compare and to filter
with ``rows(since=...)``; reports format them for people.

The ledger is best-effort: it runs after a paid answer arrived, so nothing here may lose that
answer. A folder that cannot be created, a read-only or damaged file, a full disk: each is one
warning per cause on the ``claude_force.ledger`` logger, and the rows concerned are dropped
(counted in :attr:`Ledger.dropped`). A damaged file is moved aside and a fresh one started.
:func:`read_rows` reads without writing anything (``mode=ro``), so reports work on a read-only,
missing or damaged ledger.
"""

from __future__ import annotations

import atexit
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ._errors import InvalidArgumentError
from ._ledger_row import (
    COLUMNS,
    OUTCOMES,
    LedgerRow,
    Params,
    RowTemplate,
    from_record,
    storable,
    task_hash,
    to_params,
)
from ._ledger_sql import ADDED_COLUMNS, SCHEMA
from ._ledger_sql import insert as _insert
from ._warnings import OnceLog
from .cache._sqlite import is_corruption

__all__ = ["OUTCOMES", "Ledger", "LedgerRow", "RowTemplate", "read_rows", "task_hash"]

logger = logging.getLogger("claude_force.ledger")
_log = OnceLog(logger)

_BUSY_TIMEOUT_MS = 10_000
# Rows that wake the writer before flush_interval ends. Every wake and every SQLite call of
# the writer takes the interpreter lock from a busy event loop and gives it back, which cost
# the loop more than the rows themselves at 100 a batch; a full batch of cache hits' rows is
# one INSERT (see _ledger_sql), so this is a power of two.
_BATCH_SIZE = 1024
_MAX_WRITE_ATTEMPTS = 5
_CLOSE_JOIN_SECONDS = 30.0
# Rows held while the disk cannot keep up (a few hundred bytes each); beyond it the oldest go.
_MAX_PENDING = 100_000
_GITIGNORE = "# the usage ledger and caches of claude-force\n*\n"
_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_CANTOPEN, _SQLITE_AUTH = 3, 8, 14, 23
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


# -- opening, classifying failures, setting damaged files aside -------------------------------


class _Unavailable(Exception):
    """The ledger cannot be written at all right now; ``cause`` keys its one warning."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    return code & 0xFF if isinstance(code, int) else None


def _cannot_write(exc: sqlite3.Error) -> bool:
    """True for failures that retrying at once cannot fix: read-only, cannot open, no access."""
    code = _code(exc)
    if code is not None:
        return code in (_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_CANTOPEN, _SQLITE_AUTH)
    text = str(exc)
    return "readonly" in text or "unable to open" in text


def _is_locked(exc: sqlite3.Error) -> bool:
    code = _code(exc)
    if code is not None:
        return code in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return "locked" in str(exc)


def _retry_message(path: Path, exc: sqlite3.Error, rows: int) -> str:
    """The warning for a write that will be tried again: what happened, what comes next."""
    what = "1 row" if rows == 1 else f"{rows} rows"
    then = f"retrying up to {_MAX_WRITE_ATTEMPTS} times, then dropping {what} from the record"
    if _is_locked(exc):  # another process holds the file: nothing is wrong with the disk
        return (
            f"usage ledger {path} is locked by another process ({exc}); {then}. If this "
            "persists, look for a stuck program holding the file open"
        )
    return (
        f"usage ledger {path}: writing {what} failed ({exc}); {then}. Check free disk space "
        "and the file"
    )


def _connect(path: Path) -> sqlite3.Connection:
    # check_same_thread off: a late write after close() may run on the caller's thread; the
    # writer's lock keeps any one connection to one thread at a time.
    conn = sqlite3.connect(
        path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    try:
        # busy_timeout first: switching to WAL itself needs a lock another process may hold.
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        _ensure_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _columns(conn: sqlite3.Connection) -> set[str]:
    return {r[1] for r in conn.execute("PRAGMA table_info(calls)").fetchall()}


def _ensure_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)
    if set(ADDED_COLUMNS) <= _columns(conn):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        present = _columns(conn)  # again under the lock: another process may have added them
        for name, definition in ADDED_COLUMNS.items():
            if name not in present:
                conn.execute(f"ALTER TABLE calls ADD COLUMN {name} {definition}")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


def _move_aside(path: Path, *, expected: tuple[int, int] | None) -> Path | None:
    """Rename a damaged ledger (and its -wal/-shm files) to ``<name>.damaged-<time>-<pid>``.

    Returns the new name, or ``None`` when ``path`` is no longer the file found damaged
    (another process already replaced it). Raises ``OSError`` when the rename fails.
    """
    if _inode(path) != expected:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.damaged-{stamp}-{os.getpid()}")
    for suffix in ("", "-wal", "-shm"):
        # A stale WAL left beside a fresh database would be replayed into it.
        try:
            os.replace(path.with_name(path.name + suffix), target.with_name(target.name + suffix))
        except FileNotFoundError:
            continue
    return target


def _keep_out_of_git(folder: Path) -> None:
    """The data folder lives inside .claude/, which projects commit: ignore its contents."""
    marker = folder / ".gitignore"
    try:
        with marker.open("x", encoding="utf-8") as out:
            out.write(_GITIGNORE)
    except FileExistsError:
        return
    except OSError as exc:
        _log.warn(
            f"gitignore:{marker}",
            f"could not write {marker} ({exc.strerror or exc}); the usage ledger may end up in "
            f"git: create {marker} containing a line with '*'",
        )


def _prepare_folder(folder: Path, keep_out_of_git: bool) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = "a file is in the way" if isinstance(exc, FileExistsError) else exc.strerror
        raise _Unavailable(
            f"folder:{folder}",
            f"usage ledger folder {folder} cannot be created ({why or exc}); calls are not "
            "being recorded. Make it a writable folder, or pass ledger_path= naming a file in "
            "one",
        ) from exc
    if keep_out_of_git:
        _keep_out_of_git(folder)


# -- the writer -------------------------------------------------------------------------------

_LIVE: set[_Writer] = set()
_LIVE_LOCK = threading.Lock()
# Bumped in a forked child: each Ledger then starts a writer of its own there (see _live).
_fork_generation = 0
# Writers inherited through fork(): the parent's, never used, closed or collected here.
_INHERITED: list[_Writer] = []


def _after_fork_in_child() -> None:
    """The parent's writers (and any lock their threads held) stay the parent's business."""
    global _fork_generation, _LIVE_LOCK
    _fork_generation += 1
    _INHERITED.extend(_LIVE)
    _LIVE.clear()
    _LIVE_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _close_all() -> None:
    """At interpreter exit, write what every ledger still holds (closed or forgotten)."""
    with _LIVE_LOCK:
        writers = list(_LIVE)
    for writer in writers:
        writer.close()


atexit.register(_close_all)


class _Writer:
    """The queue, the background thread and its connection of one :class:`Ledger`.

    It holds no reference to its ``Ledger``, so a forgotten ledger can be garbage collected:
    its finalizer then asks this writer to write what is queued and stop.
    """

    def __init__(
        self, path: Path, *, batch_size: int, flush_interval: float, keep_out_of_git: bool
    ) -> None:
        self.path = path
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.keep_out_of_git = keep_out_of_git
        self.dropped = 0
        self.cond = threading.Condition()
        # The queue's own lock, held for a few operations and never across a wait: put() takes
        # only this one on every row, and the Condition (which the writer holds while it wakes
        # and checks its predicates) only to wake the writer, twice a batch.
        self._queue = threading.Lock()
        self.pending: deque[Params] = deque()
        self.enqueued = 0  # rows queued so far
        self.done = 0  # queued rows written (or given up on) so far
        self.flush_waiters = 0
        self.opened = False  # the thread's first attempt to open the file is over
        self.closing = False
        self.stopped = False
        # One connection, used by one thread at a time: the writer thread, or a late write.
        self._io = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self.thread = threading.Thread(target=self._run, name="claude-force-ledger", daemon=True)

    def start(self) -> None:
        with _LIVE_LOCK:
            _LIVE.add(self)
        self.thread.start()

    # -- called from any thread ---------------------------------------------------------------

    def put(self, params: Params) -> bool:
        """Queue a row; False once closing (the caller then writes it directly)."""
        with self._queue:
            if self.closing:
                return False
            size = len(self.pending) + 1
            if size <= _MAX_PENDING:
                self.pending.append(params)
                self.enqueued += 1
        if size > _MAX_PENDING:
            return self._put_dropping_oldest(params)
        # Wake the writer on the first row (starts its flush_interval) and on a full batch.
        if size == 1 or size == self.batch_size:
            with self.cond:
                self.cond.notify_all()
        return True

    def _put_dropping_oldest(self, params: Params) -> bool:
        with self.cond, self._queue:  # done and dropped change under the Condition
            if self.closing:
                return False
            if len(self.pending) >= _MAX_PENDING:
                self.pending.popleft()
                self.dropped += 1
                self.done += 1
            self.pending.append(params)
            self.enqueued += 1
        _log.warn(
            f"overflow:{self.path}",
            f"usage ledger {self.path} is not keeping up ({_MAX_PENDING:,} rows waiting); "
            "dropping the oldest. Check the disk holding it",
        )
        return True

    def write_now(self, params: Params) -> None:
        """Write one row on the caller's thread (after close), then let go of the file."""
        with self._io:
            self._store([params])
            self._disconnect()

    def flush(self, timeout: float | None) -> bool:
        with self.cond:
            target = self.enqueued
            self.flush_waiters += 1
            self.cond.notify_all()
            try:
                self.cond.wait_for(
                    lambda: (self.opened and self.done >= target) or self.stopped, timeout
                )
                return self.opened and self.done >= target
            finally:
                self.flush_waiters -= 1

    def stop(self) -> None:
        """Ask the thread to write what is queued and end; returns at once."""
        with self.cond:
            with self._queue:  # a put() either queued before this, or writes directly
                self.closing = True
            self.cond.notify_all()

    def close(self) -> None:
        self.stop()
        if self.thread.ident is not None and self.thread is not threading.current_thread():
            self.thread.join(_CLOSE_JOIN_SECONDS)

    def wait_done(self, count: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.done >= count, timeout)

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            with self._io:
                self._open_quietly()  # so the file exists soon after the Ledger does
            with self.cond:
                self.opened = True
                self.cond.notify_all()
            while True:
                batch, closing = self._next_batch()
                if batch:
                    with self._io:
                        self._store(batch)
                    with self.cond:
                        self.done += len(batch)
                        self.cond.notify_all()
                elif closing:
                    return
        finally:
            with self._io:
                self._disconnect()
            with _LIVE_LOCK:
                _LIVE.discard(self)
            with self.cond:
                self.stopped = True
                self.cond.notify_all()

    def _next_batch(self) -> tuple[list[Params], bool]:
        """Block until there is something to write or the ledger closes."""
        with self.cond:
            self.cond.wait_for(lambda: bool(self.pending) or self.closing)
            if self._should_linger():
                # Let a batch build up; put() (batch full), flush() and close() cut this short.
                self.cond.wait_for(lambda: not self._should_linger(), self.flush_interval)
            with self._queue:
                batch = list(self.pending)
                self.pending.clear()
            return batch, self.closing

    def _should_linger(self) -> bool:
        return (
            0 < len(self.pending) < self.batch_size and not self.closing and self.flush_waiters == 0
        )

    # -- disk (with self._io held) ------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if self._conn is not None and _inode(self.path) != self._identity:
            # Deleted or replaced while open: rows would go to a file no one can read.
            self._disconnect()
            _log.warn(
                f"replaced:{self.path}",
                f"usage ledger {self.path} was removed or replaced while in use; "
                "recording into a fresh one",
            )
        if self._conn is None:
            _prepare_folder(self.path.parent, self.keep_out_of_git)
            self._identity = _inode(self.path)
            self._conn = _connect(self.path)
            self._identity = self._identity or _inode(self.path)
        return self._conn

    def _open_quietly(self) -> None:
        try:
            self._open()
        except _Unavailable as exc:
            _log.warn(exc.cause, str(exc))
        except sqlite3.Error as exc:
            # The first write meets this again and handles it (damaged file, read-only...).
            logger.debug("usage ledger %s: opening failed (%s)", self.path, exc)

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _store(self, batch: list[Params]) -> bool:
        """Write ``batch`` in one transaction; never raises. False when the rows were dropped."""
        for attempt in range(1, _MAX_WRITE_ATTEMPTS + 1):
            try:
                if _insert(self._open(), batch):
                    _log.warn(
                        f"reused-id:{self.path}",
                        f"usage ledger {self.path}: the service gave a call a message id that "
                        "another call in the ledger already has; such calls are recorded "
                        "without their id, so every paid call is still counted",
                    )
            except _Unavailable as exc:
                _log.warn(exc.cause, str(exc))
                break
            except sqlite3.Error as exc:
                self._disconnect()
                if not self._handle(exc, len(batch), attempt):
                    break
            except ValueError:
                # A lone surrogate (a "\\udc80" escape in the service's JSON, e.g. in a
                # message id) cannot be encoded for SQLite: store the rows with it replaced.
                batch = [storable(row) for row in batch]
            except OSError as exc:  # moving a damaged file aside failed
                _log.warn(
                    f"aside:{self.path}",
                    f"usage ledger {self.path} is damaged and could not be moved aside "
                    f"({exc.strerror or exc}); calls are not being recorded. Move or delete it",
                )
                break
            else:
                _log.clear(f"write:{self.path}")
                _log.clear(f"unwritable:{self.path}")
                return True
        with self.cond:  # put() counts its drops under the same lock
            self.dropped += len(batch)
        logger.debug("usage ledger %s: dropped %d rows", self.path, len(batch))
        return False

    def _handle(self, exc: sqlite3.Error, rows: int, attempt: int) -> bool:
        """Deal with a failed write; True to try again."""
        if is_corruption(exc):
            target = _move_aside(self.path, expected=self._identity)
            if target is not None:
                _log.warn(
                    f"damaged:{target}",
                    f"usage ledger {self.path} was damaged ({exc}); moved it to {target} and "
                    "started a fresh one",
                )
            return True
        if _cannot_write(exc):
            _log.warn(
                f"unwritable:{self.path}",
                f"usage ledger {self.path} cannot be written ({exc}); calls are not being "
                "recorded. Make the file and its folder writable, or pass ledger_path= naming "
                "a writable file",
            )
            return False
        _log.warn(f"write:{self.path}", _retry_message(self.path, exc, rows))
        if attempt < _MAX_WRITE_ATTEMPTS:
            with self.cond:  # back off, cut short by flush() and close()
                self.cond.wait_for(
                    lambda: self.closing or self.flush_waiters > 0,
                    self.flush_interval * attempt,
                )
        return True


class Ledger:
    """Append-only record of calls in a SQLite file, written by a background thread.

    Use it as a context manager or call :meth:`close`, which writes what is queued, stops the
    thread and closes the file. A ledger that is garbage collected, or still open when the
    interpreter exits, writes its queued rows too. Nothing here raises for a disk problem: see
    the module docstring. ``keep_out_of_git`` writes a ``.gitignore`` ignoring everything into
    the ledger's folder (for a data folder inside a committed project folder).
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        batch_size: int = _BATCH_SIZE,
        flush_interval: float = 0.5,
        store_task_text: bool = False,
        keep_out_of_git: bool = False,
    ) -> None:
        if batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be at least 1, got {batch_size!r}")
        if not flush_interval > 0:
            raise InvalidArgumentError(
                f"flush_interval must be a positive number of seconds, got {flush_interval!r}"
            )
        self.path = Path(path)
        self._clock = clock
        self._store_task_text = store_task_text
        self._settings = (batch_size, flush_interval, keep_out_of_git)
        self._start_writer()

    def _start_writer(self) -> None:
        batch_size, flush_interval, keep_out_of_git = self._settings
        self._generation = _fork_generation
        self._writer = _Writer(
            self.path,
            batch_size=batch_size,
            flush_interval=flush_interval,
            keep_out_of_git=keep_out_of_git,
        )
        self._finalizer = weakref.finalize(self, self._writer.stop)
        # At exit the module's hook closes every writer and waits for it; nothing to do here.
        self._finalizer.atexit = False
        self._writer.start()

    def _live(self) -> _Writer:
        """This process's writer: in a forked child, a new one (the parent's thread is not
        here, and its queue and file handle are the parent's)."""
        if self._generation != _fork_generation:
            self._finalizer.detach()
            self._start_writer()
        return self._writer

    # -- public API ---------------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Rows given up on: the file could not be written, or too many were waiting."""
        return self._live().dropped

    def record(self, row: LedgerRow) -> None:
        """Queue ``row`` for writing; returns at once, no disk I/O (unless already closed).

        Raises :class:`InvalidArgumentError` only for a row that could never be stored (a
        value of an unsupported type); disk problems are warnings.
        """
        if row.task_text is not None:
            row = self._prepare(row)
        params = to_params(row, row.ts if row.ts is not None else self._clock())
        if not (writer := self._live()).put(params):
            # After close (e.g. a late call during interpreter shutdown) write directly.
            writer.write_now(params)

    def record_params(self, params: Params) -> None:
        """Queue a :class:`RowTemplate` row, ``(template, ts, *each, *shared)`` with ``ts``
        from :meth:`now` and the values plain (str, int, float or None)."""
        head = params[0]
        if type(head) is not RowTemplate or len(params) != head.width:
            raise InvalidArgumentError(
                "record_params takes (template, ts, *each, *shared), a RowTemplate first; "
                f"got {len(params)} values starting with {type(head).__name__}"
            )
        if not (writer := self._live()).put(params):
            writer.write_now(params)

    def now(self) -> float:
        """The ledger's clock, which stamps rows recorded without a ``ts``."""
        return self._clock()

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every row recorded so far is written; False if ``timeout`` ran out.

        The file is created (or found unusable, with a warning) by the time it returns.
        """
        return self._live().flush(timeout)

    def close(self) -> None:
        """Write everything queued, stop the writer thread, close the file. Safe to call twice."""
        writer = self._live()
        self._finalizer.detach()
        writer.close()

    def rows(self, since: float | None = None) -> list[LedgerRow]:
        """Every stored row with ``ts >= since`` (all when ``None``), oldest first.

        Rows this instance has queued are flushed first, so a caller sees its own writes.
        """
        self.flush()
        return read_rows(self.path, since)

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
        return self._live().wait_done(count, timeout)


# -- reading ----------------------------------------------------------------------------------


def _open_reader(path: Path) -> sqlite3.Connection:
    uri = path.resolve().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT_MS / 1000)
    try:
        conn.execute("PRAGMA schema_version").fetchone()  # reads the header: fails here if bad
        return conn
    except sqlite3.OperationalError as exc:
        conn.close()
        if not _cannot_write(exc):
            raise
    # A WAL ledger in a folder we cannot write: SQLite cannot create its shared-memory file.
    # Read it as immutable, which needs none; a live writer would have created that file.
    conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True)
    try:
        conn.execute("PRAGMA schema_version").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn


def _select(conn: sqlite3.Connection, path: Path, since: float | None) -> list[LedgerRow]:
    present = _columns(conn)
    if not present:
        return []  # an empty file: no call was ever written
    names = [name for name in COLUMNS if name in present]
    sql = f"SELECT {', '.join(names)} FROM calls"
    args: tuple[float, ...] = ()
    if since is not None:
        sql, args = sql + " WHERE ts >= ?", (since,)
    out: list[LedgerRow] = []
    bad = 0
    for record in conn.execute(sql + " ORDER BY ts, id", args):
        try:
            out.append(from_record(names, record))
        except (ArithmeticError, ValueError, TypeError):
            bad += 1
    if bad:
        _log.warn(
            f"malformed:{path}",
            f"usage ledger {path}: skipped {bad} rows that are not valid ledger rows "
            "(edited by hand?); the other rows are reported",
        )
    return out


def read_rows(path: Path, since: float | None = None) -> list[LedgerRow]:
    """Rows of the ledger at ``path`` with ``ts >= since``, oldest first; writes nothing.

    A missing ledger has no rows. A damaged or unreadable one is a warning and no rows: reports
    never fail because of the ledger's file.
    """
    if not path.exists():
        return []
    try:
        conn = _open_reader(path)
    except sqlite3.Error as exc:
        _warn_unreadable(path, exc)
        return []
    try:
        return _select(conn, path, since)
    except sqlite3.Error as exc:
        _warn_unreadable(path, exc)
        return []
    finally:
        conn.close()


def _warn_unreadable(path: Path, exc: sqlite3.Error) -> None:
    if is_corruption(exc):
        _log.warn(
            f"read-damaged:{path}",
            f"usage ledger {path} is damaged ({exc}); reports leave it out. The next recorded "
            "call moves it aside and starts a fresh one; or move it away yourself",
        )
    else:
        _log.warn(
            f"read:{path}",
            f"usage ledger {path} cannot be read ({exc}); reports leave it out. Check that "
            "the file and its folder are readable",
        )
