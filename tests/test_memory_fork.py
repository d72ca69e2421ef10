"""Agent memory in a process forked from one that used it (multiprocessing's default on Linux).

The child never waits on what a parent's thread held at the fork, never writes what the parent
queued, and writes its own entries with a connection of its own. Each child does its part
under an alarm, so a hang ends it with a signal (the test fails) instead of stalling the run.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from claude_force import AgentMemory, AgentResult
from claude_force import _memory_store as store_mod

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX only"),
    # Python 3.12 warns about fork() in a process with threads: that is the case tested.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def answer(output: str) -> AgentResult:
    return AgentResult(agent_name="rev", success=True, output=output, model="m")


def with_one_entry(tmp_path: Path) -> AgentMemory:
    """A store holding "review parser module" (id 1), written."""
    memory = AgentMemory(tmp_path / "m.db")
    memory.remember(answer("first"), "review parser module")
    memory.flush()
    return memory


def in_child(work: Callable[[], int]) -> int:
    """Run ``work`` in a forked child; its return value is the child's exit status (a
    signal, e.g. the alarm's, comes back as 128 + its number)."""
    pid = os.fork()
    if pid == 0:  # the child: never back into pytest
        code = 99
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)  # not pytest-timeout's handler
            signal.alarm(20)
            code = work()
        finally:
            sys.stdout.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def test_a_child_forked_while_the_parent_writes_turns_memory_off_and_never_hangs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    memory = with_one_entry(tmp_path)
    store = memory._store
    store._io.acquire()  # as the writer thread holds it through a transaction
    try:
        memory.remember(answer("queued"), "review lexer module")  # waits behind the write

        def child() -> int:
            memory.remember(answer("child"), "review child module")
            memory.flush()  # used to wait forever for the parent's lock
            found = memory.recall("rev", "review parser code module")
            memory.close()
            return 0 if found == [] and not memory.enabled else 1

        with caplog.at_level(logging.WARNING, logger="claude_force.memory"):
            code = in_child(child)
    finally:
        store._io.release()
    memory.flush()
    tasks = sorted(e.task for e in memory.entries())
    memory.close()
    assert code == 0
    assert tasks == ["review lexer module", "review parser module"]  # the parent's, once


def test_a_child_forked_while_idle_writes_its_own_entries_with_its_own_store(
    tmp_path: Path,
) -> None:
    memory = with_one_entry(tmp_path)
    assert memory.recall("rev", "review parser code module") != []  # connections open

    def child() -> int:
        memory.remember(answer("child"), "review child module")
        memory.flush()
        found = sorted(e.task for e in memory.recall("rev", "review child module code"))
        memory.close()
        return (
            0 if memory.enabled and found == ["review child module", "review parser module"] else 1
        )

    assert in_child(child) == 0
    memory.remember(answer("after"), "review after module")
    tasks = sorted(e.task for e in memory.entries())
    memory.close()
    assert tasks == ["review after module", "review child module", "review parser module"]


def test_a_child_that_drops_the_parents_memory_neither_writes_its_queue_nor_hangs(
    tmp_path: Path,
) -> None:
    memory = with_one_entry(tmp_path)
    store = memory._store
    store._io.acquire()  # the writer holds it through a transaction
    try:
        memory.remember(answer("queued"), "review lexer module")

        def child() -> int:
            nonlocal memory
            del memory  # its finalizer closed the parent's store: a drain of its queue
            gc.collect()
            return 0

        code = in_child(child)
    finally:
        store._io.release()
    memory.flush()
    ids = {e.task: e.id for e in memory.entries()}
    memory.close()
    assert code == 0
    assert ids == {"review parser module": 1, "review lexer module": 2}  # written once


def test_memory_made_in_a_child_forked_while_the_parent_reads_the_file_is_off(
    tmp_path: Path,
) -> None:
    memory = with_one_entry(tmp_path)
    inside, leave = threading.Event(), threading.Event()

    def slow_read(conn: sqlite3.Connection) -> int:
        inside.set()
        leave.wait(30)
        return int(conn.execute("SELECT count(*) FROM entries").fetchone()[0])

    reader = threading.Thread(target=memory._store.read, args=(slow_read, 0))
    reader.start()
    inside.wait(30)
    try:

        def child() -> int:
            fresh = AgentMemory(tmp_path / "m.db")  # made after the fork: checked as well
            fresh.remember(answer("child"), "review child module")
            fresh.flush()
            fresh.close()
            return 0 if not fresh.enabled and not memory._ready() else 1

        code = in_child(child)
    finally:
        leave.set()
        reader.join()
    tasks = [e.task for e in memory.entries()]
    memory.close()
    assert code == 0
    assert tasks == ["review parser module"]


def test_a_warning_lock_held_by_a_parents_thread_does_not_hang_the_child(
    tmp_path: Path,
) -> None:
    memory = with_one_entry(tmp_path)
    log_lock = store_mod._log._lock
    memory._store._io.acquire()
    log_lock.acquire()  # as if another thread were logging at the fork
    try:

        def child() -> int:
            memory.remember(answer("child"), "review child module")  # warns: memory off
            return 0 if not memory.enabled else 1

        code = in_child(child)
    finally:
        log_lock.release()
        memory._store._io.release()
    memory.close()
    assert code == 0
