"""The ledger never raises and never leaks: unusable folders and files, damage, full disks.

Tests run as root, where file modes do not stop writes, so faults come from SQLite itself:
a path whose parent is a regular file (the OS refuses), garbage bytes in the file (SQLite says
"file is not a database"), ``PRAGMA query_only`` on the writer's connection (SQLite refuses
the write as it does for a read-only file: SQLITE_READONLY) and ``PRAGMA max_page_count``
(SQLite reports the disk full: SQLITE_FULL).
"""

from __future__ import annotations

import gc
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import claude_force._ledger as ledger_mod
from claude_force._ledger import Ledger, LedgerRow, read_rows
from claude_force._ledger_sql import SCHEMA

REAL_CONNECT = ledger_mod._connect


def row(**kw: Any) -> LedgerRow:
    base: dict[str, Any] = {"agent": "reviewer", "model": "claude-haiku-4-5", "ts": 1.0}
    base.update(kw)
    return LedgerRow(**base)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "claude_force.ledger" and r.levelno == logging.WARNING
    ]


def with_pragma(
    monkeypatch: pytest.MonkeyPatch, pragma: Callable[[sqlite3.Connection], str]
) -> None:
    """Make every writer connection run ``pragma`` once it is open (the injected fault)."""

    def connect(path: Path) -> sqlite3.Connection:
        conn = REAL_CONNECT(path)
        conn.execute(pragma(conn))
        return conn

    monkeypatch.setattr(ledger_mod, "_connect", connect)


def record_three(led: Ledger) -> None:
    for i in range(3):
        led.record(row(message_id=f"m{i}"))  # must not raise


# -- the folder cannot be created --------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("blocker/data/usage.db", "Not a directory"),  # a parent on the way is a file
        ("blocker/usage.db", "a file is in the way"),  # the folder itself is a file
    ],
)
def test_folder_that_cannot_be_created_drops_rows_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str, reason: str
) -> None:
    (tmp_path / "blocker").write_text("a regular file")
    path = tmp_path / where
    with Ledger(path, keep_out_of_git=True) as led:
        record_three(led)
        assert led.flush(timeout=30)
        record_three(led)
        assert led.flush(timeout=30)
        assert led.dropped == 6
        assert led.rows() == []
    (message,) = warnings_of(caplog)
    assert str(path.parent) in message and reason in message
    assert "ledger_path=" in message  # the fix


def test_record_after_close_on_a_broken_folder_does_not_raise(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "blocker").write_text("x")
    led = Ledger(tmp_path / "blocker" / "usage.db")
    led.close()
    led.record(row())  # written directly after close; fails quietly
    assert led.dropped == 1
    assert len(warnings_of(caplog)) == 1


# -- the file cannot be written ----------------------------------------------------------------


def test_read_only_ledger_warns_once_keeps_going_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "usage.db"
    with Ledger(path) as first:
        first.record(row(message_id="before"))
    with_pragma(monkeypatch, lambda conn: "PRAGMA query_only = ON")
    led = Ledger(path, flush_interval=0.001)
    record_three(led)
    assert led.flush(timeout=30)
    record_three(led)
    assert led.flush(timeout=30)
    assert led.dropped == 6
    (message,) = warnings_of(caplog)
    assert f"usage ledger {path} cannot be written" in message
    assert "readonly" in message and "writable" in message
    # The file becomes writable again: the next rows land, and nothing was lost before it.
    monkeypatch.setattr(ledger_mod, "_connect", REAL_CONNECT)
    led.record(row(message_id="after"))
    led.close()
    assert [r.message_id for r in read_rows(path)] == ["before", "after"]


def test_full_disk_is_retried_then_dropped_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "usage.db"
    with Ledger(path):
        pass
    # Allow no page beyond those the file has: SQLite reports SQLITE_FULL on insert.
    with_pragma(
        monkeypatch,
        lambda conn: (
            "PRAGMA max_page_count = " + str(conn.execute("PRAGMA page_count").fetchone()[0])
        ),
    )
    with Ledger(path, flush_interval=0.001) as led:
        led.record(row(task_hash="x" * 100_000))  # needs new pages
        assert led.flush(timeout=30)
        assert led.dropped == 1
    (message,) = warnings_of(caplog)
    assert "database or disk is full" in message and "free disk space" in message


# -- a damaged file ----------------------------------------------------------------------------


def garbage(path: Path) -> None:
    path.write_bytes(b"this is not an SQLite database\n" * 200)


def test_damaged_ledger_is_moved_aside_and_a_fresh_one_started(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "usage.db"
    garbage(path)
    with Ledger(path) as led:
        led.record(row(message_id="kept"))
        assert led.flush(timeout=30)
        assert led.dropped == 0
        assert [r.message_id for r in led.rows()] == ["kept"]
    (aside,) = tmp_path.glob("usage.db.damaged-*")
    assert aside.read_bytes().startswith(b"this is not an SQLite database")
    (message,) = warnings_of(caplog)
    assert str(path) in message and str(aside) in message and "fresh" in message


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_ledger_deleted_while_in_use_records_into_a_fresh_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, what: str
) -> None:
    path = tmp_path / "data" / "usage.db"
    with Ledger(path) as led:
        led.record(row(message_id="before"))
        assert led.flush(timeout=30)
        if what == "file":
            for name in ("usage.db", "usage.db-wal", "usage.db-shm"):
                (path.parent / name).unlink(missing_ok=True)
        else:
            import shutil

            shutil.rmtree(path.parent)
        led.record(row(message_id="after"))
        assert led.flush(timeout=30)
        assert led.dropped == 0
    assert [r.message_id for r in read_rows(path)] == ["after"]
    (message,) = warnings_of(caplog)
    assert str(path) in message and "removed or replaced while in use" in message


# -- reading -----------------------------------------------------------------------------------


def test_reading_a_missing_ledger_is_empty_and_creates_nothing(tmp_path: Path) -> None:
    assert read_rows(tmp_path / "nowhere" / "usage.db") == []
    assert read_rows(tmp_path / "usage.db") == []
    assert list(tmp_path.iterdir()) == []


def test_reading_a_damaged_ledger_warns_and_leaves_it_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "usage.db"
    garbage(path)
    assert read_rows(path) == []
    assert read_rows(path) == []
    (message,) = warnings_of(caplog)
    assert f"usage ledger {path} is damaged" in message and "move it away" in message
    assert path.read_bytes().startswith(b"this is not")  # a reader never renames


def test_reading_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    with Ledger(path) as led:
        led.record(row())
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    assert len(read_rows(path)) == 1
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    conn = ledger_mod._open_reader(path)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("DELETE FROM calls")
    finally:
        conn.close()


def test_rows_that_are_not_ledger_rows_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "usage.db"
    with Ledger(path) as led:
        led.record(row(message_id="good"))
        led.record(row(message_id="bad"))
    conn = sqlite3.connect(path)
    conn.execute("UPDATE calls SET cost_usd = 'lots' WHERE message_id = 'bad'")
    conn.commit()
    conn.close()
    assert [r.message_id for r in read_rows(path)] == ["good"]
    (message,) = warnings_of(caplog)
    assert "skipped 1 rows" in message


# -- an older ledger ---------------------------------------------------------------------------

# The first release's table: before web_search_requests, batch and injection_flags were added.
OLD_SCHEMA = SCHEMA.replace("    web_search_requests INTEGER NOT NULL DEFAULT 0,\n", "").replace(
    "    task_text TEXT,\n    batch INTEGER NOT NULL DEFAULT 0,\n    injection_flags TEXT\n",
    "    task_text TEXT\n",
)


def old_ledger(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    conn.execute(
        "INSERT INTO calls (ts, agent, model, outcome, cost_usd) "
        "VALUES (1.0, 'old', 'm', 'success', '0.5')"
    )
    conn.commit()
    conn.close()


def test_an_older_ledger_reads_and_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    old_ledger(path)
    for added in ("web_search_requests", "batch", "injection_flags"):
        assert added not in OLD_SCHEMA
    (old,) = read_rows(path)  # read-only: no migration, defaults fill the gap
    assert (old.agent, old.web_search_requests, old.cost_usd) == ("old", 0, Decimal("0.5"))
    assert old.injection_flags is None
    ledgers = [Ledger(path) for _ in range(4)]  # several writers migrate at once
    ledgers[0].record(row(agent="new", web_search_requests=3, injection_flags="task:role-tag"))
    for led in ledgers:
        led.close()
    assert [(r.agent, r.web_search_requests, r.injection_flags) for r in read_rows(path)] == [
        ("old", 0, None),
        ("new", 3, "task:role-tag"),
    ]


# -- bounded memory ----------------------------------------------------------------------------


def test_rows_waiting_beyond_the_bound_drop_the_oldest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ledger_mod, "_MAX_PENDING", 5)
    with Ledger(tmp_path / "usage.db", batch_size=1000, flush_interval=3600) as led:
        for i in range(8):
            led.record(row(message_id=f"m{i}"))
        assert led.dropped == 3
        assert [r.message_id for r in led.rows()] == [f"m{i}" for i in range(3, 8)]
    (message,) = warnings_of(caplog)
    assert "not keeping up" in message


# -- the data folder's .gitignore ---------------------------------------------------------------


def test_keep_out_of_git_writes_a_gitignore_once(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    with Ledger(folder / "usage.db", keep_out_of_git=True):
        pass
    assert (folder / ".gitignore").read_text().splitlines()[-1] == "*"
    (folder / ".gitignore").write_text("mine\n")
    with Ledger(folder / "usage.db", keep_out_of_git=True):
        pass
    assert (folder / ".gitignore").read_text() == "mine\n"  # never overwritten
    with Ledger(tmp_path / "plain" / "usage.db"):
        pass
    assert not (tmp_path / "plain" / ".gitignore").exists()


# -- nothing leaks -----------------------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def baseline() -> Iterator[tuple[int, int]]:
    gc.collect()
    yield threading.active_count(), open_fds()


def test_closed_ledgers_leave_no_thread_and_no_file_open(
    tmp_path: Path, baseline: tuple[int, int]
) -> None:
    for i in range(100):
        with Ledger(tmp_path / f"l{i % 3}.db") as led:
            led.record(row(message_id=f"m{i}"))
            led.rows()
    assert (threading.active_count(), open_fds()) == baseline
    assert len(read_rows(tmp_path / "l0.db")) == 34


def test_a_forgotten_ledger_writes_its_rows_and_ends_its_thread(
    tmp_path: Path, baseline: tuple[int, int]
) -> None:
    led = Ledger(tmp_path / "usage.db", flush_interval=3600)
    led.record(row(message_id="kept"))
    thread = led._writer.thread
    del led
    gc.collect()
    thread.join(30)
    assert not thread.is_alive()
    assert (threading.active_count(), open_fds()) == baseline
    assert [r.message_id for r in read_rows(tmp_path / "usage.db")] == ["kept"]


def test_a_lone_surrogate_in_a_row_is_stored_replaced_and_the_writer_keeps_going(
    tmp_path: Path,
) -> None:
    # JSON's "\udc80" escape decodes to a str SQLite cannot encode; it came from the service.
    ledger = Ledger(tmp_path / "usage.db")
    try:
        ledger.record(LedgerRow(agent="a", model="m", outcome="success"))
        ledger.record(LedgerRow(agent="a", model="m\udc80", outcome="error", error_type="X"))
        assert ledger.flush(5)
        for _ in range(3):
            ledger.record(LedgerRow(agent="a", model="m", outcome="success"))
        assert ledger.flush(5)
        rows = ledger.rows()
    finally:
        ledger.close()
    assert len(rows) == 5
    assert sorted(r.model for r in rows) == ["m", "m", "m", "m", "m?"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() only")
def test_a_forked_child_writes_its_rows_with_a_writer_of_its_own(tmp_path: Path) -> None:
    import signal

    path = tmp_path / "usage.db"
    ledger = Ledger(path)
    ledger.record(LedgerRow(agent="parent", model="m"))
    ledger.flush()
    pid = os.fork()
    if pid == 0:  # the parent's writer thread is not here: rows must not wait for it
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # a hang kills the child: the test fails
        signal.alarm(30)
        ledger.record(LedgerRow(agent="child", model="m"))
        ledger.close()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    ledger.record(LedgerRow(agent="parent", model="m"))
    ledger.close()
    assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(row.agent for row in read_rows(path)) == ["child", "parent", "parent"]
