"""Agent memory on odd input: a damaged, read-only or hand-edited store, a Python without
FTS5, and text SQLite cannot encode (lone surrogates). Memory is best-effort: none of it may
cost a call its answer or lose the entries written beside it.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest

from claude_force import AgentMemory, AgentResult
from claude_force import _memory as memory_mod
from claude_force import _memory_store as store_mod
from claude_force._warnings import OnceLog
from claude_force.testing import Fault, Simulator

from .test_memory import (
    ANSWER_PAYMENT,
    PALETTE,
    PAYMENT,
    PAYMENT_AGAIN,
    REVIEWER,
    make,
    remember_two,
    store_of,
    success,
    user_text,
)


async def test_a_damaged_store_costs_one_warning_and_never_the_call(
    project: Path, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    data = project.parent / "data"
    data.mkdir()
    (data / "memory.db").write_bytes(b"this is not a database" * 100)
    caplog.set_level(logging.WARNING, logger="claude_force")
    async with make(project, sim) as orch:
        first = await orch.execute_agent(REVIEWER, PAYMENT)
        second = await orch.execute_agent(REVIEWER, PAYMENT_AGAIN)
    assert first.success and second.success
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "memory store" in warnings[0], warnings
    assert any(p.name.startswith("memory.db.damaged-") for p in data.iterdir())
    assert ANSWER_PAYMENT not in user_text(sim) and "<earlier_work" in user_text(sim)


async def test_a_read_only_store_costs_one_warning_and_is_still_read(
    project: Path,
    sim: Simulator,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with make(project, sim) as orch:
        await remember_two(orch, sim)
    # Tests run as root, where file modes stop nothing: SQLite refuses writes itself.
    real = store_mod._connect

    def read_only(path: Path) -> sqlite3.Connection:
        conn = real(path)
        conn.execute("PRAGMA query_only = ON")
        return conn

    monkeypatch.setattr(store_mod, "_connect", read_only)
    caplog.set_level(logging.WARNING, logger="claude_force")
    async with make(project, sim) as orch:
        results = [await orch.execute_agent(REVIEWER, f"{PAYMENT_AGAIN} {i}") for i in range(3)]
    assert all(r.success for r in results)
    assert ANSWER_PAYMENT in user_text(sim)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot be written" in warnings[0], warnings
    monkeypatch.setattr(store_mod, "_connect", real)
    with store_of(project) as memory:
        assert len(memory.entries()) == 2


def test_without_fts5_memory_is_off_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(memory_mod, "fts5_available", lambda: False)
    monkeypatch.setattr(memory_mod, "_log", OnceLog(store_mod.logger))
    caplog.set_level(logging.WARNING, logger="claude_force")
    for _ in range(2):
        with AgentMemory(tmp_path / "m.db") as memory:
            memory.remember(success("a", "kept?"), "parser tokens grammar")
            assert memory.recall("a", "parser tokens grammar errors") == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "FTS5" in warnings[0], warnings
    assert not (tmp_path / "m.db").exists()


async def test_an_answer_with_a_lone_surrogate_is_remembered_with_its_batch(
    project: Path, sim: Simulator
) -> None:
    # JSON's "\udc80" escape decodes to a str SQLite cannot encode; the entries written in the
    # same batch must not be lost with it.
    sim.script(None, Fault.reply("odd \udc80 answer"), None)
    async with make(project, sim) as orch:
        results = await orch.execute_multiple(
            [{"agent": REVIEWER, "task": task} for task in (PAYMENT, PALETTE, PAYMENT_AGAIN)]
        )
    assert all(r.success for r in results)
    with store_of(project) as memory:
        entries = memory.entries()
    assert sorted(e.task for e in entries) == sorted([PAYMENT, PALETTE, PAYMENT_AGAIN])
    assert any("odd ? answer" in e.excerpt for e in entries)


async def test_a_queued_answer_with_a_lone_surrogate_is_recalled_as_it_will_be_stored(
    project: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Recalled from the write queue before the writer ran, the excerpt must already be
    # storable text: raw, it could not be encoded into the request's cache key.
    sim.script(Fault.reply("odd \udc80 answer"))
    async with make(project, sim) as orch:
        memory = orch._recorder.memory
        assert memory is not None
        with monkeypatch.context() as m:
            m.setattr(memory._store, "_write_queued", lambda: False)  # the entry stays queued
            first = await orch.execute_agent(REVIEWER, PAYMENT)
            again = await orch.execute_agent(REVIEWER, PAYMENT_AGAIN)
            assert memory._store.unwritten()  # recalled from the queue, not the file
    assert first.success and again.success, again.errors
    assert "odd ? answer" in user_text(sim)


def test_lone_surrogates_from_python_callers_are_stored_cleaned_with_the_rest(
    tmp_path: Path,
) -> None:
    # remember() never raises, and one odd entry never costs the others of its batch.
    memory = AgentMemory(tmp_path / "m.db")
    answer = AgentResult(agent_name="a", success=True, output="fine", model="m")
    memory.remember(answer, "before")
    memory.remember(AgentResult(agent_name="b\udc80", success=True, output="x", model="m"), "t")
    memory.remember(answer, "a task \udc80 with a surrogate")
    memory.remember(answer, "after")
    stored = {(e.agent, e.task) for e in memory.entries()}
    memory.close()
    assert stored == {
        ("a", "before"),
        ("b?", "t"),
        ("a", "a task ? with a surrogate"),
        ("a", "after"),
    }
    assert memory.dropped == 0


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE entries SET seen = 'abc'",
        "UPDATE entries SET seen = x'00'",
        # The full-text index keeps the old words: its matches have no BM25 score.
        "UPDATE entries SET task = 'Fix the login page css'",
        "UPDATE entries SET excerpt = x'6162', model = 7, task = x'7061796d656e74'",
    ],
)
async def test_calls_succeed_on_a_store_edited_by_hand(
    project: Path, sim: Simulator, edit: str
) -> None:
    # Each of these made the calls that recalled the edited rows raise (TypeError,
    # ValueError, AttributeError): memory is best-effort, a call never fails for it.
    tasks = [PAYMENT, PAYMENT_AGAIN, "Review the payment gateway retry logic for refunds"]
    async with make(project, sim) as orch:
        for task in tasks:
            assert (await orch.execute_agent(REVIEWER, task)).success
    with closing(sqlite3.connect(store_of(project).path)) as db, db:
        db.execute(edit)
    async with make(project, sim) as orch:
        again = [await orch.execute_agent(REVIEWER, task) for task in [*tasks, *tasks]]
        new = await orch.execute_agent(REVIEWER, "Audit the payment gateway retry paths")
    assert [r.success for r in [*again, new]] == [True] * 7


@pytest.mark.parametrize("ts", [1e300, float("inf"), -1e20, "yesterday", b"\x00"])
def test_an_entry_whose_time_no_date_has_is_recalled_and_listed(tmp_path: Path, ts: object) -> None:
    # A row edited by hand (or written by an odd injected clock) made every recall that
    # found it raise OverflowError or ValueError, and with it the call that asked.
    memory = AgentMemory(tmp_path / "m.db")
    memory.remember(success("a", "The payment module retries."), "review payment module code")
    memory.flush()
    with closing(sqlite3.connect(tmp_path / "m.db")) as db, db:
        db.execute("UPDATE entries SET ts = ?", (ts,))
    found = memory.recall("a", "review payment module again")
    block = memory.context("a", "review payment module again")
    listed = memory.entries()
    memory.close()
    assert [e.task for e in found] == ["review payment module code"]
    assert block is not None and "The payment module retries." in block
    assert [e.task for e in listed] == ["review payment module code"]


@pytest.mark.parametrize("written", [False, True])
def test_recall_and_context_read_a_lone_surrogate_as_it_was_stored(
    tmp_path: Path, written: bool
) -> None:
    # Direct callers' tasks are not validated: a lone surrogate reads as "?", as remember()
    # stored it, instead of raising UnicodeEncodeError from the task's hash.
    memory = AgentMemory(tmp_path / "m.db")
    memory.remember(success("a", "The payment module retries."), "review payment module code")
    memory.remember(success("a", "Odd."), "review payment \udc80 module")
    if written:
        memory.flush()
    related = memory.recall("a", "review payment module \udc80 again")
    own = memory.recall("a", "review payment \udc80 module")
    block = memory.context("a", "review payment \udc80 module")
    memory.close()
    assert {e.task for e in related} == {"review payment module code", "review payment ? module"}
    assert [e.task for e in own] == ["review payment module code"]  # never its own entry
    assert block is not None and "review payment module code" in block


def _raising() -> float:
    raise RuntimeError("the clock is broken")


@pytest.mark.parametrize(
    ("reading", "warned"),
    [
        (10**30, False),  # a float can hold it: stored as one
        (sys.float_info.max, False),  # the next reading stays there (inf read back as 0)
        (10**400, True),
        (float("nan"), True),
        (float("inf"), True),
        ("now", True),
        (None, True),
        (True, True),
        (_raising, True),
    ],
)
def test_an_injected_clock_giving_no_number_of_seconds_never_costs_an_entry(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    reading: object,
    warned: bool,
) -> None:
    # A huge integer made the writer thread die on SQLite's OverflowError (the entry and
    # every one queued after it lost, flush() raising); text or None made remember() raise.
    monkeypatch.setattr(memory_mod, "_log", OnceLog(store_mod.logger))
    caplog.set_level(logging.WARNING, logger="claude_force")
    clock = reading if callable(reading) else (lambda: reading)
    memory = AgentMemory(tmp_path / "m.db", clock=clock, monotonic=clock)  # type: ignore[arg-type]
    memory.remember(success("a", "The payment module retries."), "review payment module code")
    memory.remember(success("a", "The palette is fine."), "check the settings palette colours")
    memory.flush()
    block = memory.context("a", "review payment module again")
    entries = memory.entries()
    memory.close()
    assert sorted(e.task for e in entries) == [
        "check the settings palette colours",
        "review payment module code",
    ]
    assert all(isinstance(e.ts, float) and 0 < e.ts < math.inf for e in entries)
    assert block is not None and "The payment module retries." in block
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # The wall clock and the monotonic one, once each.
    assert len(warnings) == (2 if warned else 0), warnings
    assert all("not a finite int or float of seconds" in w for w in warnings)
