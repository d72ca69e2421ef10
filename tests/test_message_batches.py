"""The Message Batches engine against the simulator: records, prices, cache, chunks, resuming."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from claude_force import AsyncAgentOrchestrator, Budget
from claude_force._errors import APIError, InvalidArgumentError
from claude_force._message_batches import (
    BatchItem,
    BatchProgress,
    custom_id_for,
    run_message_batches,
)
from claude_force._results import AgentResult
from claude_force.testing import Fault, Simulator

from ._support import FakeTime
from .conftest import API_KEY

DAY = 24 * 3600.0


def items(n: int, agent: str = "code-reviewer") -> list[BatchItem]:
    return [BatchItem(f"line-{i}", agent, f"Review module number {i}") for i in range(n)]


@pytest.fixture
def time_() -> FakeTime:
    return FakeTime()


@pytest.fixture
def bsim(time_: FakeTime) -> Iterator[Simulator]:
    """A simulator whose batches take an hour of the fake clock the engine's polls move."""
    with Simulator(clock=time_.clock, batch_delay=3600.0) as sim:
        yield sim


def make(project: Path, sim: Simulator, time_: FakeTime, **kw: object) -> AsyncAgentOrchestrator:
    kw.setdefault("enable_cache", False)
    # Batch requests are built without memory; direct calls compared with them must be too.
    kw.setdefault("enable_memory", False)
    return AsyncAgentOrchestrator(
        project,
        api_key=API_KEY,
        base_url=sim.base_url,
        sleep=time_.sleep,
        **kw,  # type: ignore[arg-type]
    )


async def run(
    orch: AsyncAgentOrchestrator,
    todo: list[BatchItem],
    state: Path,
    time_: FakeTime,
    **kw: object,
) -> dict[str, AgentResult]:
    got: dict[str, AgentResult] = {}
    kw.setdefault("poll_initial", 60.0)
    kw.setdefault("poll_max", 600.0)
    agen = run_message_batches(orch, todo, state_path=state, sleep=time_.sleep, **kw)  # type: ignore[arg-type]
    async for item_id, result in agen:
        assert item_id not in got
        got[item_id] = result
    return got


async def test_same_records_as_direct_calls_at_half_price(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    todo = items(4)
    async with make(project, bsim, time_) as orch:
        direct = [await orch.execute_agent(i.agent, i.task) for i in todo]
        progress: list[BatchProgress] = []
        got = await run(orch, todo, tmp_path / "s.json", time_, on_progress=progress.append)
        rows = orch.usage_rows()
    assert bsim.batches_created == 1 and bsim.batch_requests_submitted == 4
    assert len(bsim.message_requests) == 4  # the direct calls only
    for item, d in zip(todo, direct, strict=True):
        b = got[item.id]
        assert b.success and not b.cached
        assert (b.output, b.usage, b.model, b.stop_reason) == (
            d.output,
            d.usage,
            d.model,
            d.stop_reason,
        )
        assert d.cost is not None and b.cost == d.cost / 2
        assert b.metadata["batch_id"].startswith("msgbatch_")
    # Polled with backoff until the hour passed: 60, 120, 240, 480, 600... (jittered down).
    assert time_.sleeps[0] <= 60.0 and max(time_.sleeps) <= 600.0 and len(time_.sleeps) >= 4
    assert progress[0] == BatchProgress(1, 0, 4, 0, 0, 0, 0)
    assert progress[-1] == BatchProgress(1, 1, 0, 4, 0, 0, 0)
    batch_rows = [r for r in rows if r.batch]
    assert len(batch_rows) == 4 and len([r for r in rows if not r.batch]) == 4
    assert sum(r.cost_usd or 0 for r in batch_rows) == sum(r.cost or 0 for r in got.values())


async def test_cache_hits_are_not_submitted_and_answers_are_cached(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    todo = items(3)
    async with make(project, bsim, time_, enable_cache=True) as orch:
        warm = await orch.execute_agent(todo[0].agent, todo[0].task)
        got = await run(orch, todo, tmp_path / "s.json", time_)
        assert got["line-0"].cached and got["line-0"].output == warm.output
        assert bsim.batch_requests_submitted == 2
        calls = len(bsim.message_requests)
        later = await orch.execute_agent(todo[2].agent, todo[2].task)
        assert later.cached and later.output == got["line-2"].output
        # What the cache remembers as saved is what the batch cost.
        assert later.cost_saved == got["line-2"].cost
        assert len(bsim.message_requests) == calls


async def test_chunks_within_request_and_byte_limits(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    async with make(project, bsim, time_) as orch:
        got = await run(orch, items(7), tmp_path / "a.json", time_, max_requests=3)
        assert (bsim.batches_created, bsim.batch_requests_submitted) == (3, 7)
        assert all(r.success for r in got.values()) and len(got) == 7
        # A byte limit below two requests' JSON puts each in a batch of its own.
        await run(orch, items(2, "test-writer"), tmp_path / "b.json", time_, max_bytes=100)
        assert bsim.batches_created == 5
    with pytest.raises(InvalidArgumentError, match="max_requests"):
        await run(orch, items(1), tmp_path / "c.json", time_, max_requests=0)


async def test_restart_during_polling_collects_instead_of_resubmitting(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    state = tmp_path / "RESULTS.jsonl.batches.json"
    todo = [*items(3), BatchItem("docs/a b.md", "code-reviewer", "Review the docs")]
    async with make(project, bsim, time_) as orch:
        polls: list[BatchProgress] = []

        def crash(progress: BatchProgress) -> None:
            polls.append(progress)
            task.cancel()  # dies during the poll's sleep, as a killed process would

        async def crashing_run() -> None:
            await run(orch, todo, state, time_, on_progress=crash)

        task = asyncio.create_task(crashing_run())
        with pytest.raises(asyncio.CancelledError):
            await task
        assert polls and polls[-1].processing == 4
        assert bsim.batches_created == 1
        saved = json.loads(state.read_text(encoding="utf-8"))
        assert saved["items"][custom_id_for("docs/a b.md")][0] == "docs/a b.md"
        assert API_KEY not in state.read_text(encoding="utf-8")

        got = await run(orch, todo, state, time_)
        assert bsim.batches_created == 1 and bsim.batch_requests_submitted == 4
        assert sorted(got) == sorted(i.id for i in todo)
        assert all(r.success for r in got.values())
        saved = json.loads(state.read_text(encoding="utf-8"))
        assert saved["items"] == {} and list(saved["batches"][0].values())[1] is True

        # Collected batches are never read again; what is asked again is sent again.
        again = await run(orch, todo[:1], state, time_)
        assert again["line-0"].success and bsim.batches_created == 2


async def test_an_edited_request_is_submitted_anew(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    state = tmp_path / "s.json"
    async with make(project, bsim, time_) as orch:
        agen = run_message_batches(orch, items(2), state_path=state, sleep=time_.sleep)
        await agen.aclose()  # nothing submitted before the first step
        assert bsim.batches_created == 0

        def stop(progress: BatchProgress) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            await run(orch, items(2), state, time_, on_progress=stop)
        edited = [items(2)[0], BatchItem("line-1", "code-reviewer", "Something else")]
        got = await run(orch, edited, state, time_)
    assert bsim.batches_created == 2 and bsim.batch_requests_submitted == 3
    assert got["line-1"].success and got["line-0"].success


async def test_errored_expired_and_canceled_requests_fail_clearly(
    project: Path, time_: FakeTime, tmp_path: Path
) -> None:
    with Simulator(clock=time_.clock, batch_delay=2 * DAY) as sim:
        sim.script_batch(None, Fault.status(500, message="disk on fire"))
        async with make(project, sim, time_) as orch:
            got = await run(
                orch, items(4), tmp_path / "s.json", time_, poll_initial=3600.0, poll_max=4 * 3600.0
            )
            rows = orch.usage_rows()
    assert got["line-0"].success
    failed = got["line-1"]
    assert not failed.success and failed.cost == 0
    assert isinstance(failed.error, APIError)
    assert failed.error.error_type == "batch_errored:api_error"
    assert "disk on fire" in str(failed.error)
    for late in ("line-2", "line-3"):
        err = got[late].error
        assert isinstance(err, APIError) and err.error_type == "batch_expired"
        assert "24 hours" in str(err)
    assert sorted(r.error_type or "" for r in rows) == [
        "",
        "batch_errored:api_error",
        "batch_expired",
        "batch_expired",
    ]


async def test_budget_refuses_items_that_could_cross_it(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    async with make(project, bsim, time_, budget=Budget(max_requests=2)) as orch:
        got = await run(orch, items(3), tmp_path / "s.json", time_)
        assert orch.budget is not None
        spent = orch.budget.spent
    assert bsim.batch_requests_submitted == 2
    assert not got["line-2"].success and "max_requests" in got["line-2"].errors[0]
    assert spent["requests"] == 2
    assert spent["cost_usd"] == got["line-0"].cost + got["line-1"].cost  # type: ignore[operator]


async def test_invalid_and_repeated_items_are_failed_results(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    todo = [*items(1), BatchItem("line-0", "code-reviewer", "x"), BatchItem("b", "nobody", "x")]
    async with make(project, bsim, time_) as orch:
        pairs = [
            p
            async for p in run_message_batches(
                orch, todo, state_path=tmp_path / "s.json", sleep=time_.sleep
            )
        ]
    assert [(i, r.success) for i, r in pairs][:2] == [("line-0", False), ("b", False)]
    assert "used twice" in pairs[0][1].errors[0] and "nobody" in pairs[1][1].errors[0]
    assert pairs[2][0] == "line-0" and pairs[2][1].success
    assert bsim.batch_requests_submitted == 1


async def test_refused_batch_creation_fails_its_items_and_keeps_state(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    state = tmp_path / "s.json"
    bsim.script_batch_api(Fault.status(401))
    async with make(project, bsim, time_) as orch:
        got = await run(orch, items(2), state, time_)
    assert not state.exists() and bsim.batches_created == 0
    err = got["line-0"].error
    assert isinstance(err, APIError) and err.status_code == 401
    assert "refused a batch of 2 requests" in str(err) and API_KEY not in str(err)


async def test_poll_failures_retry_then_stop_resumably(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    state = tmp_path / "s.json"
    async with make(project, bsim, time_, max_retries=0) as orch:
        bsim.script_batch_api(None, Fault.status(500), Fault.reset(), None)
        got = await run(orch, items(2), state, time_)  # two failed polls, then fine
        assert len(got) == 2 and all(r.success for r in got.values())
        bsim.script_batch_api(None, *[Fault.status(503)] * 3)
        with pytest.raises(APIError, match="run again to collect"):
            await run(orch, items(2, "test-writer"), state, time_, max_poll_failures=3)
        again = await run(orch, items(2, "test-writer"), state, time_)
    assert len(again) == 2 and bsim.batches_created == 2


async def test_a_damaged_state_file_is_left_alone(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    state = tmp_path / "s.json"
    state.write_text("{not json", encoding="utf-8")
    async with make(project, bsim, time_) as orch:
        with pytest.raises(InvalidArgumentError, match="move it aside"):
            await run(orch, items(1), state, time_)
    assert state.read_text(encoding="utf-8") == "{not json"
    assert bsim.batches_created == 0


def test_custom_ids_are_valid_and_stable() -> None:
    assert custom_id_for("ok_ID-1") == "ok_ID-1"
    mapped = custom_id_for("x" * 65)
    assert mapped == custom_id_for("x" * 65) and len(mapped) <= 64
    assert custom_id_for("a b") != custom_id_for("a  b")
