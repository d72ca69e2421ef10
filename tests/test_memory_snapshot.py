"""What recall reads once per state of the store (entry total, word counts, whether an agent
has entries), and the writer's cheap checks before pruning: never a different answer.

Each change is made for real: a write through this process's writer, another process.
Statements are counted with SQLite's own trace callback on the reading connections.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from claude_force import AgentMemory
from claude_force import _memory_store as store_mod

from .test_memory import success
from .test_memory_memo import other_process

AGENT = "rev"


class Statements:
    """The SQL run on every reading connection opened from now on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sql: list[str] = []
        real = store_mod._connect_reader

        def traced(path: Path, identity: tuple[int, int]) -> sqlite3.Connection | None:
            conn = real(path, identity)
            if conn is not None:
                conn.set_trace_callback(self.sql.append)
            return conn

        monkeypatch.setattr(store_mod, "_connect_reader", traced)

    def lookups(self, word: str) -> int:
        return sum(1 for s in self.sql if "entries_terms" in s and f"'{word}'" in s)


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> Statements:
    return Statements(monkeypatch)


def fill(memory: AgentMemory, tasks: list[str]) -> None:
    for i, task in enumerate(tasks):
        memory.remember(success(AGENT, f"answer {i}"), task)
    memory.flush()


def test_a_batch_of_recalls_looks_each_word_up_once(tmp_path: Path, statements: Statements) -> None:
    with AgentMemory(tmp_path / "m.db") as memory:
        fill(memory, [f"Audit the ledger export number{i}" for i in range(4)])
        items = [(AGENT, f"Audit the ledger import number{i}") for i in range(6)]
        blocks = asyncio.run(memory.acontexts(items))
        assert statements.lookups("ledger") == 1
        assert statements.lookups("audit") == 1
        # The same answers as one recall at a time (each without the others' lookups).
        with AgentMemory(tmp_path / "m.db") as alone:
            assert blocks == [alone._read_contexts([item])[0] for item in items]
        assert all(block is not None for block in blocks)


def test_a_batch_of_recalls_looks_its_stored_tasks_up_in_one_statement(
    tmp_path: Path, statements: Statements
) -> None:
    with AgentMemory(tmp_path / "m.db") as memory:
        fill(memory, ["Audit the ledger export", "Tidy the stylesheet colours"])
        items = [(AGENT, f"Audit the ledger import number{i}") for i in range(5)]
        blocks = asyncio.run(memory.acontexts([*items, (AGENT, "Audit the ledger export")]))
        lookups = [s for s in statements.sql if "FROM entries WHERE agent" in s and "task_h" in s]
        assert len(lookups) == 1
        assert blocks[:5] == [memory._read_contexts([item])[0] for item in items]
        assert all(block is not None for block in blocks[:5])
        assert blocks[5] is None  # the identical task is stored: as of its entry, nothing


def test_counts_are_kept_while_the_store_is_unchanged_and_read_again_after_a_write(
    tmp_path: Path, statements: Statements
) -> None:
    with AgentMemory(tmp_path / "m.db") as memory:
        fill(memory, ["Audit the ledger export", "Tidy the stylesheet colours"])
        memory.recall(AGENT, "Audit the ledger import")
        memory.recall(AGENT, "Audit the ledger totals")
        assert statements.lookups("ledger") == 1
        fill(memory, ["Audit the ledger rounding"])
        memory.recall(AGENT, "Audit the ledger import")
        assert statements.lookups("ledger") == 2


def test_counts_kept_for_a_state_see_another_process_write(tmp_path: Path) -> None:
    """Words in most entries relate nothing: another process makes "alpha" and "beta" common,
    which only fresh counts (and a fresh entry total) can tell."""
    path = tmp_path / "m.db"
    task = "alpha beta gamma"
    with AgentMemory(path) as memory:
        fill(memory, ["alpha beta delta", *(f"filler{i} words{i}" for i in range(7))])
        assert [e.task for e in memory.recall(AGENT, task)] == ["alpha beta delta"]
        assert [e.task for e in memory.recall(AGENT, task)] == ["alpha beta delta"]
        for i in range(12):
            other_process(str(path), AGENT, f"answer {i}", f"alpha beta other{i}")
        assert memory.recall(AGENT, task) == []


def test_a_task_with_too_few_meaningful_words_skips_the_search(
    tmp_path: Path, statements: Statements
) -> None:
    """An entry is recalled when it shares at least two meaningful words (and 30 %): a task
    with fewer cannot recall anything, so the full-text search is not run for it. The
    answers stay those of a task with enough words."""
    with AgentMemory(tmp_path / "m.db") as memory:
        fill(memory, [*(f"Audit the ledger export number{i}" for i in range(8)), "Fix payroll"])
        assert memory.recall(AGENT, "payroll please") == []  # one meaningful word
        # "audit" and "ledger" are in most entries: common, so one meaningful word is left.
        assert memory.recall(AGENT, "Audit the ledger payroll") == []
        assert not [s for s in statements.sql if "bm25(" in s]
        found = memory.recall(AGENT, "Fix the payroll rounding")
        assert [e.task for e in found] == ["Fix payroll"]
        assert [s for s in statements.sql if "bm25(" in s]


def test_an_agent_with_no_entries_is_known_per_state(tmp_path: Path) -> None:
    with AgentMemory(tmp_path / "m.db") as memory:
        fill(memory, ["Audit the ledger export"])
        assert memory.recall("other", "Audit the ledger import") == []
        other_process(str(tmp_path / "m.db"), "other", "answer", "Audit the ledger export")
        assert [e.task for e in memory.recall("other", "Audit the ledger import")] == [
            "Audit the ledger export"
        ]


# -- writing ----------------------------------------------------------------------------------

_LITERAL = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?(?:e[-+]?\d+)?\b|\bNULL\b")


def test_the_writer_runs_the_same_statements_for_a_batch_of_any_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite compiles each statement text it has not seen: one text per batch size cost
    more to compile than its rows cost to write."""
    monkeypatch.setattr(store_mod, "_LINGER_S", 3600.0)  # each flush writes one batch
    shapes: list[set[str]] = []
    real = store_mod._connect

    def traced(path: Path) -> sqlite3.Connection:
        conn = real(path)
        conn.set_trace_callback(lambda sql: shapes[-1].add(_LITERAL.sub("?", sql)))
        return conn

    monkeypatch.setattr(store_mod, "_connect", traced)
    with AgentMemory(tmp_path / "m.db") as memory:
        shapes.append(set())
        fill(memory, ["first task"])
        for size in (2, 5):
            shapes.append(set())
            fill(memory, [f"task {size} {i}" for i in range(size)])
        shapes.append(set())
        fill(memory, [f"task 5 {i}" for i in range(3)])  # fresh answers replace entries
        assert len(memory.entries(agent=AGENT)) == 8
    assert shapes[1] == shapes[2]
    assert shapes[1] < shapes[3]  # the same, and the delete of the entries replaced


# -- pruning ----------------------------------------------------------------------------------


def logical_size(path: Path) -> int:
    """The database's size as SQLite sees it (its WAL included)."""
    with closing(sqlite3.connect(path)) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        return int(pages * conn.execute("PRAGMA page_size").fetchone()[0])


def test_an_agent_at_its_cap_keeps_everything_and_one_more_drops_the_oldest(
    tmp_path: Path,
) -> None:
    now = [1000.0]

    def clock() -> float:
        now[0] += 1
        return now[0]

    with AgentMemory(tmp_path / "m.db", max_entries_per_agent=4, clock=clock) as memory:
        for i in range(4):
            memory.remember(success(AGENT, "x"), f"task {i}")
            memory.remember(success("other", "x"), f"task {i}")
        memory.flush()
        assert len(memory.entries(agent=AGENT)) == 4
        memory.remember(success(AGENT, "again"), "task 0")  # replaced: no growth
        memory.flush()
        assert len(memory.entries(agent=AGENT)) == 4
        memory.remember(success(AGENT, "x"), "task 4")  # one over the cap
        memory.flush()
        assert [e.task for e in memory.entries(agent=AGENT)] == [
            "task 4",
            "task 0",
            "task 3",
            "task 2",
        ]
        for i in range(5, 8):  # one batch, several over the cap
            memory.remember(success(AGENT, "x"), f"task {i}")
        assert [e.task for e in memory.entries(agent=AGENT)] == [
            "task 7",
            "task 6",
            "task 5",
            "task 4",
        ]
        assert len(memory.entries(agent="other")) == 4


def test_the_byte_cap_counts_the_entries_not_the_file(tmp_path: Path) -> None:
    """The file (its schema and index pages) outgrows the cap long before the entries do."""
    with AgentMemory(tmp_path / "m.db", max_bytes=5_000) as memory:
        for i in range(4):
            memory.remember(success(f"agent{i}", "y" * 1_000), f"task {i}")
        memory.flush()
        assert logical_size(tmp_path / "m.db") > 5_000
        assert len(memory.entries()) == 4
        memory.remember(success("agent9", "y" * 1_000), "task 9")
        assert [e.task for e in memory.entries()][-1] == "task 1"
        assert len(memory.entries()) == 4
