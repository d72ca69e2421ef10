"""A full concurrency gate keeps its pace: the request that takes a freed slot goes out
before the finished call's bookkeeping, and a cancel in that moment never loses the answer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from claude_force import AgentResult, AsyncAgentOrchestrator, Budget, TaskSpec
from claude_force._record import Recorder
from claude_force._transport import Transport
from claude_force.testing import Simulator

from .conftest import API_KEY


def make(project: Path, sim: Simulator, **kw: Any) -> AsyncAgentOrchestrator:
    kw = {"enable_cache": False, "enable_memory": False, "max_concurrent": 1, **kw}
    return AsyncAgentOrchestrator(project, api_key=API_KEY, base_url=sim.base_url, **kw)


class Events:
    """The order in which attempts start and results are recorded (by task text)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[tuple[str, str]] = []
        self.on_attempt: list[Any] = []
        attempt, record = Transport._attempt, Recorder.record
        events = self

        async def attempting(self: Transport, *args: Any) -> Any:
            events.seen.append(("attempt", ""))
            for hook in events.on_attempt:
                hook()
            return await attempt(self, *args)

        def recording(self: Recorder, result: AgentResult, ctx: Any) -> None:
            events.seen.append(("record", ctx.task))
            record(self, result, ctx)

        monkeypatch.setattr(Transport, "_attempt", attempting)
        monkeypatch.setattr(Recorder, "record", recording)


async def test_the_next_request_goes_out_before_the_finished_calls_bookkeeping(
    project: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = Events(monkeypatch)
    async with make(project, sim, enable_tracking=False) as orch:
        agent = orch.list_agents()[0]
        results = await orch.execute_multiple([TaskSpec(agent, "first"), TaskSpec(agent, "second")])
    assert [r.success for r in results] == [True, True]
    # The second attempt starts (takes the slot and sends) before the first is recorded.
    assert [kind for kind, _ in events.seen] == ["attempt", "attempt", "record", "record"]


async def test_with_a_free_slot_nothing_waits_and_the_order_is_plain(
    project: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = Events(monkeypatch)
    async with make(project, sim, enable_tracking=False) as orch:
        agent = orch.list_agents()[0]
        await orch.execute_agent(agent, "alone")
        await orch.execute_agent(agent, "after")
    assert events.seen == [
        ("attempt", ""),
        ("record", "alone"),
        ("attempt", ""),
        ("record", "after"),
    ]


async def test_a_cancel_while_the_next_request_goes_out_keeps_the_paid_answer(
    project: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = Events(monkeypatch)
    async with make(project, sim, budget=Budget(max_cost_usd="5")) as orch:
        agent = orch.list_agents()[0]
        first = asyncio.ensure_future(orch.execute_agent(agent, "first"))
        await asyncio.sleep(0)  # the first call takes the slot before the second asks
        second = asyncio.ensure_future(orch.execute_agent(agent, "second"))
        # The second attempt starts in the moment the first call has its answer and has
        # given its slot away: a cancel of the first lands exactly then.
        events.on_attempt.append(lambda: len(events.seen) == 2 and first.cancel())
        done = await asyncio.gather(first, second, return_exceptions=True)
        assert isinstance(done[0], asyncio.CancelledError)
        assert isinstance(done[1], AgentResult) and done[1].success
        rows = orch.usage_rows()
        assert orch.budget is not None
        spent = orch.budget.spent
    # The cancelled call's answer was paid for: it is in the ledger and the budget.
    assert len(rows) == 2 and all(row.outcome == "success" for row in rows)
    assert spent["requests"] == 2
    assert spent["cost_usd"] == sum(row.cost_usd for row in rows if row.cost_usd is not None)
    assert ("record", "first") in events.seen


async def test_a_held_cancel_still_caches_the_answer(
    project: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    events = Events(monkeypatch)
    cache = {"enable_cache": True, "cache_dir": tmp_path / "cache"}
    async with make(project, sim, enable_tracking=False, **cache) as orch:
        agent = orch.list_agents()[0]
        # The call's own task: a cancel of a caller of a shared call would not reach it.
        calls: list[asyncio.Task[Any]] = []
        original = orch._send

        async def send(*args: Any) -> Any:
            calls.append(asyncio.current_task())  # type: ignore[arg-type]
            return await original(*args)

        monkeypatch.setattr(orch, "_send", send)
        events.on_attempt.append(lambda: len(events.seen) == 2 and calls[0].cancel())
        first = asyncio.ensure_future(orch.execute_agent(agent, "first"))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(orch.execute_agent(agent, "second"))
        done = await asyncio.gather(first, second, return_exceptions=True)
        sent = len(sim.message_requests)
        again = await orch.execute_agent(agent, "first")
    assert isinstance(done[0], asyncio.CancelledError)
    # The paid answer was cached before the cancel was raised: asking again is a hit.
    assert again.cached and len(sim.message_requests) == sent == 2
