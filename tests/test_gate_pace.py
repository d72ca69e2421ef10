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
    return AsyncAgentOrchestrator(
        project,
        api_key=API_KEY,
        base_url=sim.base_url,
        enable_cache=False,
        enable_memory=False,
        max_concurrent=1,
        **kw,
    )


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
