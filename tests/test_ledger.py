from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from claude_force._errors import InvalidArgumentError
from claude_force._ledger import (
    _BATCH_SIZE,
    Ledger,
    LedgerRow,
    RowTemplate,
    _connect,
    read_rows,
    task_hash,
)
from claude_force._ledger_sql import insert
from claude_force._usage import Usage

REPO = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ledger(tmp_path: Path, clock: FakeClock) -> Iterator[Ledger]:
    with Ledger(tmp_path / "data" / "ledger.sqlite3", clock=clock) as led:
        yield led


def row(**kw: Any) -> LedgerRow:
    base: dict[str, Any] = {"agent": "reviewer", "model": "claude-haiku-4-5"}
    base.update(kw)
    return LedgerRow(**base)


def test_round_trip_keeps_every_field_exactly(ledger: Ledger) -> None:
    original = row(
        ts=1_700_000_000.25,
        message_id="msg_1",
        request_id="req_1",
        workflow_run="run-7",
        workflow_step=2,
        input_tokens=10,
        output_tokens=20,
        cache_write_5m_tokens=30,
        cache_write_1h_tokens=40,
        cache_read_tokens=50,
        cost_usd=Decimal("0.000123456789"),
        cost_saved_usd=Decimal("0.5"),
        latency_ms=812.5,
        attempts=3,
        cached=False,
        task_hash="ab" * 32,
    )
    ledger.record(original)
    assert ledger.rows() == [original]


def test_unpriced_and_failure_rows(ledger: Ledger) -> None:
    ledger.record(row(outcome="error", error_type="rate_limit_error", attempts=4))
    ledger.record(row(cost_usd=None, input_tokens=5))
    got = ledger.rows()
    assert [(r.outcome, r.error_type, r.attempts) for r in got] == [
        ("error", "rate_limit_error", 4),
        ("success", None, 1),
    ]
    assert got[1].cost_usd is None
    assert got[1].usage == Usage(input_tokens=5)


def test_rows_with_none_in_different_columns_keep_their_values_and_order(tmp_path: Path) -> None:
    # One batch, one timestamp: rows leave their None values out of the INSERT, so they are
    # written in runs of the same shape; each reads back as recorded, in the order recorded.
    rows = [
        row(ts=5.0, message_id="a", workflow_run="run", workflow_step=0, latency_ms=1.5),
        row(ts=5.0, outcome="error", error_type="overloaded_error", cost_usd=Decimal(0)),
        row(ts=5.0, message_id="b", cost_usd=Decimal("0.25"), injection_flags="task:x"),
        row(ts=5.0, message_id="c", workflow_run="run", workflow_step=1, latency_ms=2.5),
        row(ts=5.0),
        row(ts=5.0, message_id="d", cost_usd=None, cost_saved_usd=Decimal("0.1"), cached=True),
    ]
    with Ledger(tmp_path / "l.db", batch_size=len(rows), flush_interval=3600) as led:
        for r in rows:
            led.record(r)
        assert led._wait_done(len(rows), timeout=30)  # one batch, written without a flush
        assert led.rows() == rows


def test_ts_defaults_to_injected_clock_and_since_filters(ledger: Ledger, clock: FakeClock) -> None:
    ledger.record(row(message_id="old"))
    clock.now += 3600
    ledger.record(row(message_id="new"))
    assert [r.ts for r in ledger.rows()] == [1_800_000_000.0, 1_800_003_600.0]
    assert [r.message_id for r in ledger.rows(since=1_800_000_001.0)] == ["new"]


def test_message_id_deduplicates_but_failures_and_cache_hits_do_not(
    ledger: Ledger, clock: FakeClock
) -> None:
    ledger.record(row(message_id="msg_dup", input_tokens=1, batch=True))
    clock.now += 60
    ledger.record(row(message_id="msg_dup", input_tokens=1, batch=True))  # collected again
    ledger.record(row(outcome="error"))
    ledger.record(row(outcome="error"))
    # Each response-cache hit replays the original message id and must still count.
    ledger.record(row(message_id="msg_dup", cached=True, cost_usd=Decimal(0)))
    ledger.record(row(message_id="msg_dup", cached=True, cost_usd=Decimal(0)))
    got = ledger.rows()
    upstream = [r for r in got if r.message_id == "msg_dup" and not r.cached]
    assert [r.input_tokens for r in upstream] == [1]
    assert sum(r.outcome == "error" for r in got) == 2
    assert sum(r.cached for r in got) == 2


def test_task_text_is_hashed_not_stored_by_default(ledger: Ledger) -> None:
    ledger.record(row(task_text="review this secret plan"))
    (stored,) = ledger.rows()
    assert stored.task_text is None
    assert stored.task_hash == task_hash("review this secret plan")
    assert len(stored.task_hash or "") == 64


def test_task_text_stored_when_asked(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.db", store_task_text=True) as led:
        led.record(row(task_text="keep me"))
        (stored,) = led.rows()
    assert stored.task_text == "keep me"
    assert stored.task_hash == task_hash("keep me")


def test_record_does_no_disk_io(ledger: Ledger) -> None:
    assert ledger.flush(timeout=30)  # the writer has created the file
    locker = sqlite3.connect(ledger.path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # any write from the caller's thread would now block
    try:
        start = time.monotonic()
        for i in range(50):
            ledger.record(row(message_id=f"m{i}"))
        assert time.monotonic() - start < 1.0
    finally:
        locker.execute("COMMIT")
        locker.close()
    assert ledger.flush(timeout=30)
    assert len(ledger.rows()) == 50


def test_full_batch_is_written_without_flush(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.db", batch_size=10, flush_interval=3600) as led:
        for i in range(9):
            led.record(row(message_id=f"m{i}"))
        assert not led._wait_done(9, timeout=0.05)  # lingering for a full batch
        led.record(row(message_id="m9"))
        assert led._wait_done(10, timeout=10)


def test_a_full_batch_of_hit_rows_is_one_statement(tmp_path: Path) -> None:
    # Each SQLite call of the writer takes the interpreter lock from the event loop and gives
    # it back: a full batch of one template's rows is one INSERT, committed by itself.
    template = RowTemplate(row(cached=True), ["message_id"], ["workflow_run"])
    full = [(template, float(i), f"msg_{i}", None) for i in range(_BATCH_SIZE)]
    conn = _connect(tmp_path / "l.db")
    try:
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        insert(conn, full)
        assert [s.split()[0] for s in statements] == ["INSERT"]
        assert not conn.in_transaction
        # Rows of two forms are several statements, in one transaction.
        statements.clear()
        a, b, c = (
            (template, 1e4, "msg_a", None),
            (template, 1e5, "msg_b", None),
            (template, 1e6, "msg_c", "run-1"),
        )
        insert(conn, [a, b, c])
        assert [s.split()[0] for s in statements] == ["BEGIN", "INSERT", "INSERT", "COMMIT"]
    finally:
        conn.close()
    got = read_rows(tmp_path / "l.db")
    ids = [f"msg_{i}" for i in range(_BATCH_SIZE)]
    assert [r.message_id for r in got] == [*ids, "msg_a", "msg_b", "msg_c"]
    assert [r.workflow_run for r in got[-4:]] == [None, None, None, "run-1"]
    assert all(r.cached for r in got)


def test_partial_batch_is_written_after_flush_interval(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.db", batch_size=1000, flush_interval=0.02) as led:
        led.record(row())
        assert led._wait_done(1, timeout=10)


def test_close_flushes_is_idempotent_and_late_records_still_land(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.db", flush_interval=3600)
    led.record(row(message_id="a"))
    led.close()
    led.close()
    led.record(row(message_id="late"))
    assert [r.message_id for r in led.rows()] == ["a", "late"]


def test_threads_and_two_instances_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    ledgers = [Ledger(path, batch_size=7), Ledger(path, batch_size=13)]

    def work(n: int) -> None:
        led = ledgers[n % 2]
        for i in range(200):
            led.record(row(message_id=f"t{n}-{i}"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for led in ledgers:
        led.close()
    assert len(ledgers[0].rows()) == 800


def test_distinct_calls_given_one_message_id_are_each_counted(
    ledger: Ledger, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A stand-in or proxy that answers every call with the same message id: each paid call
    stays in the ledger (the repeats without the id), with one warning naming the cause."""
    for i, tokens in enumerate((10, 20, 10, 10)):
        clock.now += 1
        task = "t0" if i == 3 else f"t{i}"  # the last repeats the first: still a call
        ledger.record(
            row(message_id="msg_fixed", input_tokens=tokens, task_hash=task, request_id=None)
        )
    ledger.flush()
    got = ledger.rows()
    assert [(r.input_tokens, r.message_id) for r in got] == [
        (10, "msg_fixed"),
        (20, None),
        (10, None),
        (10, None),
    ]
    warned = [r.getMessage() for r in caplog.records if "message id" in r.getMessage()]
    assert len(warned) == 1 and "every paid call is still counted" in warned[0]


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from claude_force._ledger import Ledger, LedgerRow
    path, tag, count, close = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    led = Ledger(path, batch_size=25, flush_interval=0.01)
    for i in range(count):
        led.record(LedgerRow(agent=tag, model="m", message_id=f"{tag}-{i}"))
    # One Message Batches result, collected by every process: one row.
    led.record(LedgerRow(agent=tag, model="m", message_id="same-call-everywhere", batch=True))
    if close == "close":
        led.close()
    # otherwise the atexit hook must flush
    """
)


def _spawn(path: Path, tag: str, count: int, close: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), tag, str(count), close],
        env=env,
        stderr=subprocess.PIPE,
    )


def test_several_processes_write_one_file(tmp_path: Path) -> None:
    path = tmp_path / "multi.db"
    procs = [_spawn(path, f"p{n}", 300, "close") for n in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
    with Ledger(path) as reader:
        got = reader.rows()
    assert len(got) == 3 * 300 + 1  # the shared message id is kept once
    assert {r.agent for r in got} == {"p0", "p1", "p2"}


def test_atexit_flushes_unclosed_ledger(tmp_path: Path) -> None:
    path = tmp_path / "exit.db"
    proc = _spawn(path, "solo", 40, "no-close")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    with Ledger(path) as reader:
        assert len(reader.rows()) == 41


def test_parent_folders_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c" / "ledger.db"
    with Ledger(path):
        pass
    assert path.exists()


def test_to_dict_is_json_able(ledger: Ledger) -> None:
    ledger.record(row(cost_usd=Decimal("1.10"), cached=True))
    (stored,) = ledger.rows()
    data = json.loads(json.dumps(stored.to_dict()))
    assert data["cost_usd"] == "1.10"
    assert data["cached"] is True
    assert data["agent"] == "reviewer"


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"outcome": "ok"}, "outcome"),
        ({"cost_usd": 0.5}, "cost_usd"),
        ({"cost_saved_usd": "0.5"}, "cost_saved_usd"),
    ],
)
def test_row_validation(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        row(**kw)


def test_unsupported_value_fails_on_the_caller(ledger: Ledger) -> None:
    with pytest.raises(InvalidArgumentError, match="agent"):
        ledger.record(row(agent=Path("x")))
    ledger.record(row())  # the writer is unaffected
    assert len(ledger.rows()) == 1


@pytest.mark.parametrize("count", [2**63, -(2**63) - 1, 10**30])
def test_a_count_beyond_64_bits_fails_on_the_caller_every_time(ledger: Ledger, count: int) -> None:
    ledger.record(row(input_tokens=2**63 - 1, output_tokens=-(2**63)))  # the limits themselves
    for _ in range(2):  # the second time the row's value types are already known
        with pytest.raises(InvalidArgumentError, match=r"output_tokens = .* 64-bit"):
            ledger.record(row(input_tokens=1, output_tokens=count))
    (stored,) = ledger.rows()
    assert (stored.input_tokens, stored.output_tokens) == (2**63 - 1, -(2**63))


@pytest.mark.parametrize(
    ("kw", "match"), [({"batch_size": 0}, "batch_size"), ({"flush_interval": 0}, "flush_interval")]
)
def test_ledger_argument_validation(tmp_path: Path, kw: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        Ledger(tmp_path / "l.db", **kw)


def test_wal_mode(ledger: Ledger) -> None:
    assert ledger.flush(timeout=30)
    conn = sqlite3.connect(ledger.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_transient_write_failure_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import claude_force._ledger as ledger_mod
    from claude_force._ledger_sql import insert as real_insert

    failures = iter([True, True])

    def flaky(conn: sqlite3.Connection, params: Any) -> None:
        if next(failures, False):
            raise sqlite3.OperationalError("disk I/O error")
        real_insert(conn, params)

    monkeypatch.setattr(ledger_mod, "_insert", flaky)
    with Ledger(tmp_path / "l.db", flush_interval=0.001) as led:
        led.record(row(message_id="survivor"))
        assert led.flush(timeout=30)
        assert [r.message_id for r in led.rows()] == ["survivor"]
        assert led.dropped == 0
    # Two failed attempts, one warning: later ones of the same cause go to debug.
    assert sum("retrying" in r.getMessage() for r in caplog.records) == 1


def test_permanent_write_failure_drops_and_flush_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import claude_force._ledger as ledger_mod

    def broken(conn: sqlite3.Connection, params: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(ledger_mod, "_insert", broken)
    with Ledger(tmp_path / "l.db", flush_interval=0.001) as led:
        led.record(row())
        led.record(row())
        assert led.flush(timeout=30)
        assert led.dropped == 2
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "writing 2 rows failed (database or disk is full)" in warning.getMessage()
    assert "Check free disk space" in warning.getMessage()


def test_record_params_takes_only_template_rows(ledger: Ledger) -> None:
    template = RowTemplate(row(cached=True), ["message_id"], ["workflow_run"])
    with pytest.raises(InvalidArgumentError, match="RowTemplate first"):
        ledger.record_params(("reviewer", 1.0))
    with pytest.raises(InvalidArgumentError, match="got 3 values"):
        ledger.record_params((template, 1.0, "msg_1"))
    ledger.record_params((template, 7.0, "msg_1", "run-1"))
    (stored,) = ledger.rows()
    assert (stored.ts, stored.message_id, stored.workflow_run, stored.cached) == (
        7.0,
        "msg_1",
        "run-1",
        True,
    )
