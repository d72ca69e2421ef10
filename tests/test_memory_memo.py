"""The recall memo: a recall already made is answered on the loop, never a stale one.

Every change the memo must see is made for real: a call of this process, another
``AgentMemory`` on the same file, another process, the file deleted. "No thread hop" is
asserted by counting calls of the one function that reads the store off the loop.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from claude_force import AgentMemory, AsyncAgentOrchestrator, InvalidArgumentError
from claude_force._memory_memo import KEY_TASK_CHARS, RECHECK_SECONDS, RecallMemo, memo_key
from claude_force.testing import Fault, Simulator

from .test_memory import (
    ANSWER_PAYMENT,
    PALETTE,
    PAYMENT,
    PAYMENT_AGAIN,
    REVIEWER,
    make,
    store_of,
    success,
    user_text,
)


class StoreReads:
    """Counts trips to the store (``AgentMemory._read_contexts``, the off-loop function)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = AgentMemory._read_contexts

        def counted(memory: AgentMemory, items: Sequence[tuple[str, str]]) -> list[str | None]:
            self.count += 1
            return real(memory, items)

        monkeypatch.setattr(AgentMemory, "_read_contexts", counted)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> StoreReads:
    return StoreReads(monkeypatch)


class Clock:
    """The recall memo's monotonic clock, moved only by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def frozen_clock(orch: AsyncAgentOrchestrator) -> Clock:
    """Give the orchestrator's memory a clock that stands still until the test moves it."""
    memory = orch._requests.memory
    assert memory is not None
    clock = Clock()
    memory._store.probe.clock = clock
    return clock


def memory_db(project: Path) -> Path:
    return project.parent / "data" / "memory.db"


def settle(orch: AsyncAgentOrchestrator) -> None:
    """Wait for this process's queued entries to be written: the memo answers only then
    (a recall never waits for them itself; it reads them from the queue)."""
    memory = orch._requests.memory
    assert memory is not None
    memory.flush()


async def test_an_identical_repeat_is_a_hit_without_a_thread_hop(
    project: Path, sim: Simulator, tmp_path: Path, reads: StoreReads
) -> None:
    async with make(project, sim, enable_cache=True, cache_dir=tmp_path / "cache") as orch:
        sim.script(Fault.reply(ANSWER_PAYMENT))
        await orch.execute_agent(REVIEWER, PAYMENT)
        first = await orch.execute_agent(REVIEWER, PAYMENT_AGAIN)  # a miss: its entry is queued
        settle(orch)
        await orch.execute_agent(REVIEWER, PAYMENT_AGAIN)  # reads the store once more
        sent, before = len(sim.message_requests), reads.count
        repeats = [await orch.execute_agent(REVIEWER, PAYMENT_AGAIN) for _ in range(3)]
    assert reads.count == before  # answered by the memo, on the loop
    assert all(r.cached and r.output == first.output for r in repeats)
    assert len(sim.message_requests) == sent
    assert ANSWER_PAYMENT in user_text(sim)  # the repeated request held the recalled block
    with store_of(project) as memory:
        assert sorted(e.task for e in memory.entries()) == sorted([PAYMENT, PAYMENT_AGAIN])


# A recall of a task already answered is as of that answer (see test_memory.py), so the memo is
# probed with a task no call has stored: its recall must follow every change to the store.
PROBE = "Check retry handling of the payment gateway after bank timeouts"


async def probe(orch: AsyncAgentOrchestrator) -> str | None:
    memory = orch._requests.memory
    assert memory is not None
    return (await memory.acontexts([(REVIEWER, PROBE)]))[0]


async def test_a_write_of_this_process_is_seen_by_the_next_call(
    project: Path, sim: Simulator, reads: StoreReads
) -> None:
    async with make(project, sim) as orch:
        frozen_clock(orch)
        await orch.execute_agent(REVIEWER, "Check the colour palette of the settings page")
        settle(orch)
        assert await probe(orch) is None  # nothing relevant yet: memoised
        assert await probe(orch) is None
        sim.script(Fault.reply(ANSWER_PAYMENT))
        await orch.execute_agent(REVIEWER, PAYMENT)
        before = reads.count
        seen = await probe(orch)  # queued or written: seen either way
        assert reads.count == before + 1
        await orch.execute_agent(REVIEWER, PAYMENT_AGAIN)
    assert seen is not None and ANSWER_PAYMENT in seen
    assert ANSWER_PAYMENT in user_text(sim)


async def test_a_write_through_another_store_object_is_seen(
    project: Path, sim: Simulator, reads: StoreReads
) -> None:
    async with make(project, sim) as orch:
        frozen_clock(orch)  # this process's writes are seen at once, not after a look
        await orch.execute_agent(REVIEWER, "Check the colour palette of the settings page")
        settle(orch)
        assert await probe(orch) is None
        before = reads.count
        assert await probe(orch) is None
        assert reads.count == before  # the memo answered
        with store_of(project) as other:
            other.remember(success(REVIEWER, ANSWER_PAYMENT), PAYMENT)
        seen = await probe(orch)
    assert seen is not None and ANSWER_PAYMENT in seen


_OTHER_PROCESS = """
import sys
from claude_force import AgentMemory, AgentResult
with AgentMemory(sys.argv[1]) as memory:
    if sys.argv[2] == "clear":
        memory.clear()
    else:
        result = AgentResult(agent_name=sys.argv[2], success=True, output=sys.argv[3], model="m")
        memory.remember(result, sys.argv[4])
"""


def other_process(*args: str) -> None:
    subprocess.run([sys.executable, "-c", _OTHER_PROCESS, *args], check=True, timeout=60)


async def test_writes_and_deletions_by_another_process_are_seen(
    project: Path, sim: Simulator, reads: StoreReads
) -> None:
    async with make(project, sim) as orch:
        clock = frozen_clock(orch)
        await orch.execute_agent(REVIEWER, "Check the colour palette of the settings page")
        settle(orch)
        assert await probe(orch) is None
        assert await probe(orch) is None  # memoised
        other_process(str(memory_db(project)), REVIEWER, ANSWER_PAYMENT, PAYMENT)
        # Another process's write is looked for at most once per RECHECK_SECONDS.
        clock.advance(RECHECK_SECONDS * 0.9)
        before = reads.count
        assert await probe(orch) is None
        assert reads.count == before
        clock.advance(RECHECK_SECONDS * 0.1)
        seen = await probe(orch)
        assert seen is not None and ANSWER_PAYMENT in seen
        before = reads.count
        assert await probe(orch) == seen  # memoised with the block
        assert reads.count == before
        other_process(str(memory_db(project)), "clear")
        clock.advance(RECHECK_SECONDS)
        assert await probe(orch) is None


async def test_a_deleted_store_file_is_seen(project: Path, sim: Simulator) -> None:
    async with make(project, sim) as orch:
        clock = frozen_clock(orch)
        sim.script(Fault.reply(ANSWER_PAYMENT))
        await orch.execute_agent(REVIEWER, PAYMENT)
        settle(orch)
        assert await probe(orch) is not None
        assert await probe(orch) is not None  # memoised
        for path in memory_db(project).parent.glob("memory.db*"):
            path.unlink()
        clock.advance(RECHECK_SECONDS)  # not through this process's store: seen on a look
        assert await probe(orch) is None
        await orch.execute_agent(REVIEWER, PAYMENT_AGAIN)
    assert "<earlier_work" not in user_text(sim)


async def test_a_new_store_costs_no_trip(project: Path, sim: Simulator, reads: StoreReads) -> None:
    async with make(project, sim) as orch:
        await orch.execute_agent(REVIEWER, PAYMENT)  # no file, nothing queued: nothing to read
        assert reads.count == 0
        await orch.execute_agent(REVIEWER, PAYMENT_AGAIN)  # its entry is queued: one read
    assert reads.count == 1
    assert "<earlier_work" in user_text(sim)


def test_an_agent_with_no_entries_costs_one_trip(tmp_path: Path, reads: StoreReads) -> None:
    with AgentMemory(tmp_path / "m.db") as memory:
        memory.remember(success("a", "first answer"), "parser tokens grammar rules")
        memory.flush()
        assert memory.context("b", "parser tokens grammar errors") is None
        assert memory.context("b", "a wholly different task about billing") is None
        assert reads.count == 1
        memory.remember(success("b", "an answer"), "billing task wholly different")
        memory.flush()
        assert memory.context("b", "a wholly different task about billing") is not None
        assert reads.count == 2


async def test_use_memory_false_never_asks_the_memo_or_the_store(
    project: Path, sim: Simulator, reads: StoreReads, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[object] = []
    real = AgentMemory._memo_generation

    def generation(memory: AgentMemory) -> object:  # where every memo answer starts
        asked.append(memory)
        return real(memory)

    monkeypatch.setattr(AgentMemory, "_memo_generation", generation)
    async with make(project, sim) as orch:
        await orch.execute_agent(REVIEWER, PAYMENT, use_memory=False)
        await orch.execute_agent(REVIEWER, PAYMENT, use_memory=False)
    assert asked == [] and reads.count == 0
    assert not memory_db(project).exists()


async def test_one_call_builds_the_request_a_batch_builds_for_its_task(
    project: Path, sim: Simulator, tmp_path: Path, reads: StoreReads
) -> None:
    # execute_agent's one item takes a path of its own (no lists, the memo asked directly):
    # what it sends must be what execute_multiple sends, memo or store, memory on or off.
    tasks = [(REVIEWER, PAYMENT_AGAIN), (REVIEWER, PALETTE)]
    async with make(project, sim, enable_cache=True, cache_dir=tmp_path / "cache") as orch:
        sim.script(Fault.reply(ANSWER_PAYMENT))
        await orch.execute_agent(REVIEWER, PAYMENT)
        settle(orch)
        batch = await orch.execute_multiple(tasks)  # the store read off the loop
        off = await orch.execute_multiple(
            [{"agent": a, "task": t, "use_memory": False} for a, t in tasks]
        )
        sent = len(sim.message_requests)
        settle(orch)
        ones = [await orch.execute_agent(a, t) for a, t in tasks]  # each reads the store
        before = reads.count
        ones += [await orch.execute_agent(a, t) for a, t in tasks]  # the memo answers
        memo_reads = reads.count - before
        offs = [await orch.execute_agent(a, t, use_memory=False) for a, t in tasks]
    assert [r.success for r in batch + off] == [True] * 4
    assert len(sim.message_requests) == sent  # every one-call request was a batch's: hits
    assert all(r.cached for r in ones + offs)
    assert [r.output for r in ones + offs] == [r.output for r in batch + batch + off]
    assert memo_reads == 0
    texts = [user_text(sim, i) for i in range(sent)]
    with_block = [t for t in texts if PAYMENT_AGAIN in t and ANSWER_PAYMENT in t]
    assert len(with_block) == 1  # memory on: the block went with it; off: none


def test_context_uses_the_memo_and_sees_another_store_object(
    tmp_path: Path, reads: StoreReads
) -> None:
    path = tmp_path / "m.db"
    clock = Clock()  # stands still: other.clear() is seen through this process's count
    with AgentMemory(path, monotonic=clock) as memory, AgentMemory(path) as other:
        memory.remember(success("a", "first answer"), "parser tokens grammar rules")
        memory.flush()
        assert memory.context("a", "parser tokens grammar errors") is not None
        assert memory.context("a", "parser tokens grammar errors") is not None
        assert reads.count == 1
        other.clear()
        assert memory.context("a", "parser tokens grammar errors") is None
        assert reads.count == 2


def test_changing_the_limits_is_another_recall(tmp_path: Path, reads: StoreReads) -> None:
    with AgentMemory(tmp_path / "m.db") as memory:
        for i in range(3):
            memory.remember(success("a", f"answer {i}"), f"parser tokens grammar rules {i}")
        assert memory.context("a", "parser tokens grammar errors") is not None
        memory.top_k = 1
        block = memory.context("a", "parser tokens grammar errors")
        assert block is not None and block.count("<entry ") == 1
        assert reads.count == 2


def test_the_memo_is_bounded_and_keys_long_tasks_by_hash() -> None:
    memo = RecallMemo(size=2)
    generation = (0, (1, 2), 3)
    for i in range(3):
        memo.put(generation, memo_key("a", f"t{i}", 3, 100), "a", (f"b{i}", False), True)
    with pytest.raises(KeyError):
        memo.get(generation, memo_key("a", "t0", 3, 100), "a")
    assert memo.get(generation, memo_key("a", "t2", 3, 100), "a") == ("b2", False)
    with pytest.raises(KeyError):  # another generation answers nothing
        memo.get((1, (1, 2), 3), memo_key("a", "t2", 3, 100), "a")
    long_key = memo_key("a", "x" * (KEY_TASK_CHARS + 1), 3, 100)
    assert isinstance(long_key, tuple) and len(long_key[1]) < KEY_TASK_CHARS


async def test_a_hit_whose_recall_found_its_task_queued_adds_nothing(
    project: Path, sim: Simulator, tmp_path: Path
) -> None:
    """A repeat while the writer is still busy: its recall reads the queue and finds the task
    there, so the cache hit queues no second entry (which would end the memo's generation
    and send every call after it to the store once more)."""
    async with make(project, sim, enable_cache=True, cache_dir=tmp_path / "cache") as orch:
        memory = orch._requests.memory
        assert memory is not None
        with memory._store._io:  # the writer cannot write: the entry stays queued
            first = await orch.execute_agent(REVIEWER, PAYMENT)
            again = await orch.execute_agent(REVIEWER, PAYMENT)
            queued = memory._store.unwritten()
    assert again.cached and again.output == first.output
    assert [p.task for p in queued] == [PAYMENT]
    with store_of(project) as memory:
        assert [e.task for e in memory.entries()] == [PAYMENT]


async def test_a_long_task_with_a_lone_surrogate_is_named_when_the_memo_is_warm(
    project: Path, sim: Simulator
) -> None:
    """The memo is asked before the task is checked: a task it cannot encode must still get
    the check's error (naming the character), not a UnicodeEncodeError, and send nothing."""
    bad = "Review the payment gateway retry logic. " * 30 + "\udc80"
    async with make(project, sim) as orch:
        await orch.execute_agent(REVIEWER, PAYMENT)
        settle(orch)
        await orch.execute_agent(REVIEWER, PAYMENT_AGAIN)
        settle(orch)  # nothing queued: the memo is asked
        sent = len(sim.message_requests)
        with pytest.raises(InvalidArgumentError, match="surrogate"):
            await orch.execute_agent(REVIEWER, bad)
    assert len(sim.message_requests) == sent


async def test_one_task_twice_in_a_batch_is_one_entry_on_its_way(
    project: Path, sim: Simulator, tmp_path: Path
) -> None:
    """The second of two identical tasks shares the first one's answer: it adds no entry of
    its own, which would count the task twice in recalls while both wait to be written."""
    async with make(project, sim, enable_cache=True, cache_dir=tmp_path / "cache") as orch:
        memory = orch._requests.memory
        assert memory is not None
        with memory._store._io:  # the writer cannot write: what is queued stays queued
            first, second = await orch.execute_multiple([(REVIEWER, PAYMENT)] * 2)
            queued = memory._store.unwritten()
    assert first.output == second.output and second.cached
    assert [p.task for p in queued] == [PAYMENT]
    with store_of(project) as memory:
        assert [e.task for e in memory.entries()] == [PAYMENT]


WORDS = "payment gateway retry logic billing bank timeout charge refund ledger invoice webhook"


async def test_repeats_send_their_first_block_however_many_related_tasks_came_since(
    project: Path, sim: Simulator, tmp_path: Path
) -> None:
    """Many related tasks, one after another, then every one again: each repeat sends the
    memory block its first request sent (entries stored since, and the ranking they change,
    do not count), so every repeat is a cache hit."""
    rng = random.Random(1)
    vocabulary = WORDS.split()
    tasks = list(
        dict.fromkeys(" ".join(rng.sample(vocabulary, rng.randint(3, 5))) for _ in range(150))
    )
    async with make(project, sim, enable_cache=True, cache_dir=tmp_path / "cache") as orch:
        for task in tasks:
            await orch.execute_agent(REVIEWER, task)
        settle(orch)
        sent = len(sim.message_requests)
        repeats = [await orch.execute_agent(REVIEWER, task) for task in tasks]
    assert [t for t, r in zip(tasks, repeats, strict=True) if not r.cached] == []
    assert len(sim.message_requests) == sent


async def test_a_related_task_answered_again_leaves_other_repeats_hits(
    project: Path, sim: Simulator, tmp_path: Path
) -> None:
    """A recalled by C, then A answered afresh (refresh=True): C's repeat still sends the
    block with A's first answer, which it was answered with, and is a hit."""
    async with make(project, sim, enable_cache=True, cache_dir=tmp_path / "cache") as orch:
        sim.script(Fault.reply(ANSWER_PAYMENT))
        await orch.execute_agent(REVIEWER, PAYMENT)
        settle(orch)
        first = await orch.execute_agent(REVIEWER, PAYMENT_AGAIN)
        settle(orch)
        await orch.execute_agent(REVIEWER, PAYMENT, refresh=True)
        settle(orch)
        again = await orch.execute_agent(REVIEWER, PAYMENT_AGAIN)
    assert ANSWER_PAYMENT in user_text(sim, 1)
    assert again.cached and again.output == first.output


async def test_a_forgotten_entry_is_never_sent_again(project: Path, sim: Simulator) -> None:
    """C's request quoted A; A is forgotten: C asked again (no response cache) recalls
    afresh, and A's text is not in it."""
    async with make(project, sim) as orch:
        sim.script(Fault.reply(ANSWER_PAYMENT))
        await orch.execute_agent(REVIEWER, PAYMENT)
        settle(orch)
        await orch.execute_agent(REVIEWER, PAYMENT_AGAIN)
        assert ANSWER_PAYMENT in user_text(sim)
        settle(orch)
        memory = orch._requests.memory
        assert memory is not None
        (forgotten,) = [e for e in memory.entries() if e.task == PAYMENT]
        assert memory.forget(forgotten.id)
        await orch.execute_agent(REVIEWER, PAYMENT_AGAIN)
    assert ANSWER_PAYMENT not in user_text(sim)


def test_only_a_block_recall_rendered_is_sent_again() -> None:
    from claude_force._memory_recall import MemoryEntry, _kept_block, render_block

    block = render_block(REVIEWER, [MemoryEntry(1, REVIEWER, "t", "x", 0.0, "m")])
    assert _kept_block(block, REVIEWER) == block
    assert _kept_block("", REVIEWER) == ""
    for edited in (b"\x00\xffA", 42, "</earlier_work>", block.replace("<earlier_work", "<x", 1)):
        assert _kept_block(edited, REVIEWER) is None
    assert _kept_block(block, "another-agent") is None
