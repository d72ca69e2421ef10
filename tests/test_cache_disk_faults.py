"""The disk tier when its folder or disk fails mid-run: warnings that say what is wrong and
how to fix it, counted errors, and never an exception out of a cache call or its thread."""

from __future__ import annotations

import errno
import logging
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from claude_force._errors import CacheDirectoryError
from claude_force.cache import ResponseCache
from claude_force.cache._limits import DiskLimits
from claude_force.cache._sqlite import connect, write_problem

from ._cache_support import key

SECRET = "faults-test-secret-0123456789abcdef"


@pytest.fixture
def thread_errors(monkeypatch: pytest.MonkeyPatch) -> list[BaseException | None]:
    """Exceptions that escaped any thread (the cache's writer thread among them)."""
    seen: list[BaseException | None] = []

    def hook(args: threading.ExceptHookArgs) -> None:
        seen.append(args.exc_value)

    monkeypatch.setattr(threading, "excepthook", hook)
    return seen


class Warnings:
    """The cache's warnings so far."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def __call__(self) -> list[str]:
        return [r.getMessage() for r in self._caplog.records if r.levelno >= logging.WARNING]


@pytest.fixture
def warnings_seen(caplog: pytest.LogCaptureFixture) -> Iterator[Warnings]:
    with caplog.at_level(logging.WARNING, "claude_force.cache"):
        yield Warnings(caplog)


def replace_with_file(folder: Path) -> None:
    shutil.rmtree(folder)
    folder.write_text("x")


async def test_a_folder_replaced_by_a_file_is_one_warning_and_counted_errors(
    tmp_path: Path, thread_errors: list[BaseException | None], warnings_seen: Warnings
) -> None:
    folder = tmp_path / "cache"
    cache = ResponseCache(cache_dir=folder, cache_secret=SECRET, memory_max_mb=0)
    await cache.aset(key(0), {"n": 0})
    await cache.aflush()
    replace_with_file(folder)
    for n in range(1, 6):
        await cache.aset(key(n), {"n": n})  # through the background thread
        await cache.aflush()
    cache.set(key(9), {"n": 9})  # and on the caller's thread
    assert cache.get(key(9)) is None
    await cache.aclose()  # no exception: the run goes on
    assert thread_errors == []
    stats = cache.get_stats()
    assert stats["errors"] >= 6
    assert len(warnings_seen()) == 1, warnings_seen()
    message = warnings_seen()[0]
    assert f"its folder {folder} was removed or is not a directory" in message
    assert "create the folder again, or choose another cache_dir" in message


def test_a_database_file_removed_mid_run_is_started_afresh(
    tmp_path: Path, thread_errors: list[BaseException | None], warnings_seen: Warnings
) -> None:
    with ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, memory_max_mb=0) as cache:
        cache.set(key(0), {"n": 0})
        for name in ("cache.db", "cache.db-wal", "cache.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        cache.set(key(1), {"n": 1})  # would otherwise go to the deleted file
        hit = cache.get(key(1))
        assert hit is not None and hit.value == {"n": 1}
        assert cache.get_stats()["errors"] == 0
    with sqlite3.connect(tmp_path / "cache.db") as db:
        assert db.execute("SELECT count(*) FROM entries").fetchone() == (1,)
    db.close()
    assert thread_errors == []
    assert any("was removed while in use; started a fresh one" in m for m in warnings_seen())


def test_a_full_disk_says_so_and_how_to_fix_it(
    tmp_path: Path, thread_errors: list[BaseException | None], warnings_seen: Warnings
) -> None:
    with ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, memory_max_mb=0) as cache:
        cache.set(key(0), {"n": 0})
        disk = cache._disk
        assert disk is not None
        # The fault: the database may not grow, as on a full disk (SQLITE_FULL).
        pages = disk._writer.execute("PRAGMA page_count").fetchone()[0]
        disk._writer.execute(f"PRAGMA max_page_count={pages}")
        for n in range(1, 20):
            cache.set(key(n), {"n": n, "pad": str(n) * 20_000})
        assert cache.get_stats()["errors"] >= 1
    assert thread_errors == []
    full = [m for m in warnings_seen() if "failed in" in m]
    assert len(full) == 1, warnings_seen()
    assert "the disk is full" in full[0]
    assert "free disk space, or choose another cache_dir" in full[0]
    assert "writable" not in full[0]


def real_sqlite_full() -> sqlite3.Error:
    db = sqlite3.connect(":memory:")
    db.execute("PRAGMA max_page_count=1")
    try:
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (randomblob(10000))")
    except sqlite3.Error as exc:
        return exc
    finally:
        db.close()
    raise AssertionError("SQLite stored more than its page limit")


@pytest.mark.parametrize(
    ("error", "problem", "fix"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "the disk is full", "free disk space"),
        ("sqlite-full", "the disk is full", "free disk space"),
        (OSError(errno.ENOTDIR, "Not a directory"), "was removed", "create the folder again"),
        (OSError(errno.EACCES, "Permission denied"), "is not writable", "make /f writable"),
        (OSError(errno.EROFS, "Read-only file system"), "is not writable", "make /f writable"),
        (OSError(errno.EIO, "Input/output error"), "failed (Input/output error)", "choose"),
    ],
)
def test_each_write_problem_has_its_own_fix(error: object, problem: str, fix: str) -> None:
    exc = real_sqlite_full() if error == "sqlite-full" else error
    assert isinstance(exc, BaseException)
    said, offered = write_problem(Path("/f"), exc)
    assert problem in said
    assert offered.startswith(fix)
    # The library speaks Python; the command line rewrites these words itself.
    assert offered.endswith("or run without the cache (enable_cache=False)")
    assert "choose another cache_dir" in offered


def test_opening_in_a_folder_that_is_a_file_names_the_problem(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(CacheDirectoryError) as caught:
        connect(tmp_path / "file" / "cache.db", limits=DiskLimits.for_limit(1 << 20))
    assert "was removed or is not a directory" in str(caught.value)
    assert "make the directory writable" not in str(caught.value)
