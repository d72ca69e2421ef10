"""Opening the disk tier's SQLite database: pragmas, schema, and damaged files.

Opening costs the same with ten entries or ten million: no scan, only a version check. A
file that is not a database, or is malformed, is renamed aside and a fresh one started.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import time
import urllib.parse
from pathlib import Path

from .._errors import CacheDirectoryError
from ._limits import DiskLimits
from ._paths import OTHER_DIR as _OTHER_DIR

__all__ = [
    "DB_NAME",
    "SCHEMA_VERSION",
    "UNUSED_INDEX",
    "connect",
    "connect_reader",
    "error_cause",
    "file_identity",
    "file_size",
    "is_busy",
    "is_corruption",
    "set_aside",
    "write_problem",
]

logger = logging.getLogger("claude_force.cache")

DB_NAME = "cache.db"
SCHEMA_VERSION = 1
# SQLite waits up to this long for another process's write lock before reporting BUSY.
BUSY_TIMEOUT_S = 10.0
# WAL readers take no lock; they can only wait while a crashed writer's WAL is recovered,
# which is bounded by the WAL budget. Longer than this, and the read is a miss.
READ_BUSY_TIMEOUT_S = 0.2
_OPEN_ATTEMPTS = 5

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26
_CAUSES = {
    _SQLITE_BUSY: "locked",
    _SQLITE_LOCKED: "locked",
    _SQLITE_READONLY: "read-only",
    _SQLITE_FULL: "disk full",
    _SQLITE_IOERR: "i/o error",
    _SQLITE_CANTOPEN: "cannot open",
}

# No index on expires_at: ``prune`` also matches on created_at (unindexed), so it scans
# anyway, and each index costs every write a page. Files made by 0.x before this have one;
# the first write drops it (``UNUSED_INDEX``).
UNUSED_INDEX = "DROP INDEX IF EXISTS entries_expires_at"
# The running byte total and entry count live in a one-row table that triggers keep in step
# with every insert, update and delete, so they change in the same transaction as the rows.
# Upserts (not INSERT OR REPLACE) are used for writes: REPLACE deletes without firing the
# delete trigger unless recursive triggers are on.
_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY NOT NULL,
    envelope BLOB NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    last_access REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_last_access ON entries (last_access);
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    total_bytes INTEGER NOT NULL,
    entries INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (id, total_bytes, entries) VALUES (0, 0, 0);
CREATE TRIGGER IF NOT EXISTS entries_ai AFTER INSERT ON entries BEGIN
    UPDATE meta SET total_bytes = total_bytes + NEW.size, entries = entries + 1 WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS entries_ad AFTER DELETE ON entries BEGIN
    UPDATE meta SET total_bytes = total_bytes - OLD.size, entries = entries - 1 WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS entries_au AFTER UPDATE OF size ON entries BEGIN
    UPDATE meta SET total_bytes = total_bytes - OLD.size + NEW.size WHERE id = 0;
END;
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""


class _ForeignSchema(sqlite3.DatabaseError):
    """The file is a database, but not one this version of the cache can use."""


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    return code & 0xFF if isinstance(code, int) else None


def is_corruption(exc: sqlite3.Error) -> bool:
    """True when ``exc`` says the file is damaged or not a database at all."""
    if isinstance(exc, _ForeignSchema):
        return True
    code = _code(exc)
    if code is not None:
        return code in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc)
    return "malformed" in text or "not a database" in text


def is_busy(exc: sqlite3.Error) -> bool:
    """True when another connection holds the lock we need."""
    code = _code(exc)
    if code is not None:
        return code in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def error_cause(exc: sqlite3.Error) -> str:
    """A short name for why a statement failed, one per cause a user can act on."""
    code = _code(exc)
    if code is not None:
        return _CAUSES.get(code, "sqlite error")
    text = str(exc).lower()
    for needle, cause in (("locked", "locked"), ("readonly", "read-only"), ("full", "disk full")):
        if needle in text:
            return cause
    return "sqlite error"


def _open(path: Path, limits: DiskLimits) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path,
        timeout=BUSY_TIMEOUT_S,
        isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
        check_same_thread=False,  # the tier serialises use with its own lock
        cached_statements=64,
    )
    try:
        if path.stat().st_size == 0:
            # Only a new file, before it is switched to WAL (on an existing one it would
            # wait for the write lock): lets ``incremental_vacuum`` free pages.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        # The first statement reads the header: a damaged file fails here.
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit is atomic and durable against a process crash; only an OS
        # crash can lose the last commits, never corrupt the file. Good for a cache.
        conn.execute("PRAGMA synchronous=NORMAL")
        # No checkpoint in a commit (two fsyncs on the write path): the tier's background
        # thread runs them (``_wal``).
        conn.execute("PRAGMA wal_autocheckpoint=0")
        # A WAL started over is truncated only when it grew past its budget: truncating
        # it after every checkpoint costs the write that starts it over milliseconds.
        conn.execute(f"PRAGMA journal_size_limit={limits.wal_bytes}")
        # Some builds (Debian's) zero every freed page, which writes an evicted entry's
        # overflow pages to the WAL again: an eviction then passes the WAL's budget.
        # FAST zeroes only what costs no extra page write.
        conn.execute("PRAGMA secure_delete=FAST")
        # Up to 32 MiB of pages (allocated as used) so hot index pages are not re-read
        # from the OS on every lookup; diskcache uses the same default.
        conn.execute("PRAGMA cache_size=-32768")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            conn.executescript(_SCHEMA)
        elif version != SCHEMA_VERSION:
            raise _ForeignSchema(f"schema version {version}, expected {SCHEMA_VERSION}")
    except BaseException:
        conn.close()
        raise
    return conn


def _create_private_file(path: Path) -> None:
    # SQLite creates files with 0644 minus the umask; create it 0600 first. Its -wal and
    # -shm files copy the main file's permissions. An existing file is not opened: closing
    # any descriptor of it would drop every POSIX lock this process holds on it, SQLite's
    # locks of another open cache on the same folder included (that corrupted it).
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if not os.access(path, os.R_OK | os.W_OK):
            raise _unusable(path, PermissionError(f"cannot read and write {path}")) from None
        return
    except OSError as exc:
        raise _unusable(path, exc) from exc
    os.close(fd)


def file_size(path: Path | str) -> int:
    """The file's size; 0 when it is gone, or its folder was removed or replaced."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def file_identity(path: Path | str) -> tuple[int, int] | None:
    """The file's device and inode; None when it is gone or its folder is unusable."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


def set_aside(path: Path, reason: BaseException, *, expected: tuple[int, int] | None) -> None:
    """Rename a damaged database (and its -wal/-shm files) to ``<name>.corrupt-<timestamp>``.

    ``expected`` is the file identity we found damaged: if the path now names another file,
    another process already replaced it and the fresh file is left alone.
    """
    if expected is not None and file_identity(path) != expected:
        return
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}-{os.getpid()}")
    for suffix in ("", "-wal", "-shm"):
        # A stale WAL left beside a fresh database would be replayed into it.
        source = path.with_name(path.name + suffix)
        try:
            os.replace(source, target.with_name(target.name + suffix))
        except FileNotFoundError:
            continue
        except OSError as exc:
            # Left in place: opening it again fails, and the caller reports that.
            logger.warning(
                "cache database %s is damaged (%s) and cannot be moved aside (%s)",
                path,
                reason,
                exc.strerror,
            )
            return
    logger.warning(
        "cache database %s is damaged (%s); moved it to %s and started a fresh one",
        path,
        reason,
        target,
    )


def _open_retrying(path: Path, limits: DiskLimits) -> sqlite3.Connection:
    # Switching a new file to WAL or creating the schema can report BUSY at once while
    # another process does the same; the second attempt then finds the work done.
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            return _open(path, limits)
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or attempt == _OPEN_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NO_FOLDER = (errno.ENOTDIR, errno.ENOENT)
_NO_WRITE = (errno.EACCES, errno.EPERM, errno.EROFS)


def write_problem(folder: Path, exc: BaseException) -> tuple[str, str]:
    """What is wrong when the cache cannot write to ``folder``, and the fix, by cause."""
    if isinstance(exc, OSError):
        code, detail = exc.errno, exc.strerror or str(exc)
        cause = ""
    else:
        code, detail = None, str(exc)
        cause = error_cause(exc) if isinstance(exc, sqlite3.Error) else ""
    if code in _NO_SPACE or cause == "disk full":
        said = "" if "full" in detail else f" ({detail})"  # SQLite says it in those words
        return f"the disk is full{said}", f"free disk space, or {_OTHER_DIR}"
    if code in _NO_FOLDER:
        return (
            f"its folder {folder} was removed or is not a directory ({detail})",
            f"create the folder again, or {_OTHER_DIR}",
        )
    if code in _NO_WRITE or cause in ("read-only", "cannot open"):
        return f"it is not writable ({detail})", f"make {folder} writable, or {_OTHER_DIR}"
    return f"it failed ({detail})", _OTHER_DIR


def _unusable(path: Path, exc: BaseException) -> CacheDirectoryError:
    problem, fix = write_problem(path.parent, exc)
    return CacheDirectoryError(f"cache database {path} cannot be opened: {problem}; {fix}")


def connect(path: Path, *, limits: DiskLimits) -> tuple[sqlite3.Connection, tuple[int, int] | None]:
    """Open (creating if needed) the cache database for writing; returns it and its identity.

    A damaged file is set aside and a fresh one started. A file that cannot be opened or
    written raises CacheDirectoryError.
    """
    _create_private_file(path)
    identity = file_identity(path)
    try:
        return _open_retrying(path, limits), identity
    except sqlite3.DatabaseError as exc:
        if not is_corruption(exc):
            raise _unusable(path, exc) from exc
        set_aside(path, exc, expected=identity)
    except OSError as exc:  # the folder removed or replaced between the two steps
        raise _unusable(path, exc) from exc
    _create_private_file(path)
    try:
        return _open_retrying(path, limits), file_identity(path)
    except (sqlite3.DatabaseError, OSError) as exc:
        raise _unusable(path, exc) from exc


def connect_reader(path: Path) -> sqlite3.Connection:
    """A second connection for lookups, so a read never waits behind our own writer."""
    uri = f"file:{urllib.parse.quote(str(path))}?mode=rw"  # never create: see set_aside
    conn = sqlite3.connect(
        uri,
        uri=True,
        timeout=READ_BUSY_TIMEOUT_S,
        isolation_level=None,
        check_same_thread=False,  # the tier serialises use with its read lock
        cached_statements=64,
    )
    try:
        # Up to 64 MiB of pages, allocated as used (the writer keeps 32): a lookup reads a
        # random entry, and a page not held here costs a read() of the file per lookup.
        conn.execute("PRAGMA cache_size=-65536")
    except BaseException:
        conn.close()
        raise
    return conn
