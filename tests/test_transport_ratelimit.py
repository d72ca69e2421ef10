"""Rate limits through the orchestrator: every attempt passes the token buckets.

Against the simulator enforcing per-minute buckets, through the real SDK over loopback HTTP,
on a fake clock shared by the client's buckets and the server's (time moves only when the
code under test sleeps).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from claude_force import (
    AgentOrchestrator,
    APIError,
    AsyncAgentOrchestrator,
    InvalidArgumentError,
    Limits,
)
from claude_force.testing import Fault, RateLimits, Simulator

from ._support import FakeTime, WireTime
from .conftest import API_KEY

WALL = 1_700_000_000.0


@pytest.fixture
def t() -> FakeTime:
    return FakeTime()


def limited(t: FakeTime, **limits: Any) -> Simulator:
    return Simulator(
        rate_limits=RateLimits(**limits), clock=t.clock, wall_clock=lambda: WALL + t.now
    )


def make(project: Path, sim: Simulator, t: FakeTime, **kw: Any) -> AsyncAgentOrchestrator:
    kw.setdefault("enable_cache", False)
    kw.setdefault("enable_tracking", False)
    orch = AsyncAgentOrchestrator(
        project, api_key=API_KEY, base_url=sim.base_url, sleep=t.sleep, **kw
    )
    # The transport's clock drives the buckets, deadlines and gate; share the fake one.
    orch._transport._monotonic = t.clock
    return orch


async def wire(orch: AsyncAgentOrchestrator, t: WireTime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each attempt of ``orch`` is on the wire for ``t`` from its sending until its answer
    is read (the transport takes an answer into the buckets before it next yields)."""
    session = await orch._transport.session()
    create = session.create

    async def sent(**kwargs: Any) -> Any:
        with t.on_the_wire():
            return await create(**kwargs)

    monkeypatch.setattr(session, "create", sent)


def tasks(orch: AsyncAgentOrchestrator, n: int) -> list[tuple[str, str]]:
    agent = orch.list_agents()[0]
    return [(agent, f"task {i}: " + "review this module " * (50 + 37 * (i % 9))) for i in range(n)]


def sonnet(orch: AsyncAgentOrchestrator) -> Any:
    classes: Any = orch.rate_limit_state["classes"]
    return classes["sonnet"]


async def test_many_calls_under_a_tight_input_limit_all_succeed_with_few_429s(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = WireTime()  # the time paced below is the buckets', not the machine's speed
    async with limited(t, input_tokens_per_minute=20_000) as sim:
        async with make(project, sim, t) as orch:
            await wire(orch, t, monkeypatch)
            results = await orch.execute_multiple(tasks(orch, 40))
            state = sonnet(orch)
        stats: Any = sim.rate_limit_stats
    assert all(r.success for r in results), [r.errors for r in results if not r.success]
    assert stats["admitted"] == 40
    # Without the buckets (measured): 30 to 34 refusals and 4 or 5 failed calls. With them a
    # few, when an answer's `remaining` overtakes a request still on its way (0 to 2 measured).
    assert stats["rejected"] <= 15
    assert state["state"] == "known" and state["in_flight"] == 0
    assert state["buckets"]["input-tokens"]["limit"] == 20_000
    assert state["input_ratio"] == pytest.approx(1.0, rel=0.1)
    needed = (stats["input_tokens"] - 20_000) / 20_000 * 60  # seconds of refill after the burst
    assert needed * 0.8 < t.now - 100.0 < needed * 3


async def test_without_the_buckets_the_same_load_is_refused_far_more(
    project: Path, t: FakeTime
) -> None:
    async with limited(t, input_tokens_per_minute=20_000) as sim:
        async with make(project, sim, t, adaptive_rate_limits=False) as orch:
            await orch.execute_multiple(tasks(orch, 40))
            state: Any = orch.rate_limit_state
        stats: Any = sim.rate_limit_stats
    assert stats["rejected"] > 20
    assert state["classes"] == {} and state["concurrency_limit"] < 10  # the gate halved


async def test_a_neighbour_taking_30_percent_does_not_stop_the_calls(
    project: Path, t: FakeTime
) -> None:
    async with limited(t, input_tokens_per_minute=20_000, neighbour_share=0.3) as sim:
        async with make(project, sim, t) as orch:
            results = await orch.execute_multiple(tasks(orch, 30))
        stats: Any = sim.rate_limit_stats
    assert all(r.success for r in results), [r.errors for r in results if not r.success]
    assert stats["admitted"] == 30
    assert stats["rejected"] <= 15


async def test_a_deadline_shorter_than_the_wait_fails_fast_as_rate_limited(
    project: Path, t: FakeTime
) -> None:
    sim = limited(t, input_tokens_per_minute=6_000)
    async with sim, make(project, sim, t, deadline_seconds=5) as orch:
        agent = orch.list_agents()[0]
        first = await orch.execute_agent(agent, "review this module " * 1000)  # ~5,000
        sent = len(sim.message_requests)
        result = await orch.execute_agent(agent, "review this module " * 1000)
    assert first.success, first.errors
    assert not result.success
    err = result.metadata["error"]
    assert err["type"] == "rate_limited" and err["attempts"] == 0
    assert "per minute" in result.errors[0] and "deadline_seconds" in result.errors[0]
    assert len(sim.message_requests) == sent  # never sent
    assert t.sleeps == []  # failed at once, without waiting


async def test_a_429_with_rate_limit_headers_waits_in_the_buckets_not_retry_after(
    project: Path, t: FakeTime
) -> None:
    sim = limited(t, input_tokens_per_minute=6_000)
    async with sim, make(project, sim, t) as other, make(project, sim, t) as orch:
        agent = orch.list_agents()[0]
        assert (await orch.execute_agent(agent, "hello")).success  # learns the limits
        # Another client, invisible to `orch`, spends most of the allowance.
        assert (await other.execute_agent(agent, "review this module " * 1000)).success
        result = await orch.execute_agent(agent, "check this module " * 600)
        state: Any = orch.rate_limit_state
    assert result.success, result.errors
    assert result.metadata["attempts"] == 2
    assert sim.rate_limit_stats["rejected"] == 1
    # A short jittered pause, then the buckets' wait for the refill, not retry-after's
    # whole seconds on top of it.
    assert t.sleeps[0] <= 0.1
    assert state["concurrency_limit"] == state["max_concurrent"]  # 429s leave the gate alone


async def test_a_429_without_rate_limit_headers_keeps_retry_after(
    project: Path, sim: Simulator, t: FakeTime
) -> None:
    sim.script(Fault.status(429, retry_after="3"), None)
    async with make(project, sim, t) as orch:
        result = await orch.execute_agent(orch.list_agents()[0], "t")
        state: Any = orch.rate_limit_state
    assert result.success and result.metadata["attempts"] == 2
    assert 3.0 <= t.sleeps[0] <= 3.75
    assert state["concurrency_limit"] < state["max_concurrent"]


async def test_a_529_still_halves_the_gate(project: Path, sim: Simulator, t: FakeTime) -> None:
    sim.script(Fault.status(529), None)
    async with make(project, sim, t, max_concurrent=8) as orch:
        result = await orch.execute_agent(orch.list_agents()[0], "t")
        state: Any = orch.rate_limit_state
    assert result.success
    assert state["concurrency_limit"] == 4


async def test_a_cancelled_call_gives_its_ticket_back(
    project: Path, sim: Simulator, t: FakeTime
) -> None:
    sim.script(None, Fault.hang())
    async with make(project, sim, t) as orch:
        agent = orch.list_agents()[0]
        assert (await orch.execute_agent(agent, "first")).success
        call = asyncio.create_task(orch.execute_agent(agent, "second"))
        await asyncio.to_thread(sim.wait_for_in_flight, 1)
        assert sonnet(orch)["in_flight"] == 1
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert sonnet(orch)["in_flight"] == 0


def with_rate_limits(project: Path, section: dict[str, Any]) -> Path:
    config = json.loads(project.read_text(encoding="utf-8"))
    config["rate_limits"] = section
    project.write_text(json.dumps(config), encoding="utf-8")
    return project


@pytest.mark.parametrize("source", ["constructor", "claude.json"])
async def test_configured_limits_apply_before_anything_is_learned(
    project: Path, sim: Simulator, t: FakeTime, source: str
) -> None:
    kwargs: dict[str, Any] = {}
    if source == "claude.json":
        with_rate_limits(project, {"default": {"requests_per_minute": 2}})
    else:
        kwargs["rate_limits"] = {"claude-sonnet-4-6": Limits(requests_per_minute=2)}
    async with make(project, sim, t, **kwargs) as orch:
        agent = orch.list_agents()[0]
        results = await orch.execute_multiple([(agent, f"t{i}") for i in range(3)])
        state = sonnet(orch)
    assert all(r.success for r in results)
    assert state["buckets"]["requests"]["limit"] == 2  # the service states 4,000: capped
    assert sum(t.sleeps) == pytest.approx(30.0, rel=0.15)  # the third waited for the refill


async def test_the_constructors_limits_replace_claude_jsons(
    project: Path, sim: Simulator, t: FakeTime
) -> None:
    with_rate_limits(project, {"default": {"requests_per_minute": 2}})
    given = {"sonnet": Limits(requests_per_minute=3)}
    async with make(project, sim, t, rate_limits=given) as orch:
        await orch.execute_agent(orch.list_agents()[0], "t")
        assert sonnet(orch)["buckets"]["requests"]["limit"] == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rate_limits": {"requests_per_minute": 5}}, "rate_limits maps"),
        ({"rate_limits": 5}, "rate_limits must be"),
        ({"rate_limits": Limits(requests_per_minute=5), "adaptive_rate_limits": False}, "needs"),
        ({"adaptive_rate_limits": "yes"}, "adaptive_rate_limits"),
    ],
)
def test_bad_rate_limit_options_are_refused(
    project: Path, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        AsyncAgentOrchestrator(project, api_key=API_KEY, **kwargs)


@pytest.fixture
def sync_orch(project: Path, sim: Simulator) -> Iterator[AgentOrchestrator]:
    with AgentOrchestrator(
        project, api_key=API_KEY, base_url=sim.base_url, enable_cache=False, enable_tracking=False
    ) as orch:
        yield orch


async def test_prometheus_metrics_show_the_limits_levels_and_concurrency(
    project: Path, t: FakeTime
) -> None:
    sim = limited(t, input_tokens_per_minute=20_000, neighbour_share=0.3)
    async with sim, make(project, sim, t, enable_metrics=True) as orch:
        await orch.execute_multiple(tasks(orch, 10))
        assert orch.metrics is not None
        text = orch.metrics.render().decode()
        level = sonnet(orch)["buckets"]["input-tokens"]["level"]
    labels = '{bucket="input-tokens",model_class="sonnet"}'
    assert f"claude_force_rate_limit{labels} 20000.0" in text
    assert f"claude_force_rate_limit_level{labels} " in text
    shown = float(text.split(f"claude_force_rate_limit_level{labels} ")[1].split()[0])
    assert shown == pytest.approx(level, abs=1.0)
    assert "claude_force_concurrency_limit 10.0" in text
    assert "claude_force_in_flight 0.0" in text
    assert f"claude_force_rate_limit_unseen_share{labels} " in text


def test_the_sync_door_shows_the_state(sync_orch: AgentOrchestrator) -> None:
    before: Any = sync_orch.rate_limit_state
    assert before["classes"] == {} and before["concurrency_limit"] == 10
    assert sync_orch.execute_agent(sync_orch.list_agents()[0], "t").success
    after: Any = sync_orch.rate_limit_state
    assert after["classes"]["sonnet"]["buckets"]["requests"]["limit"] == 4_000


async def test_a_retry_after_a_server_error_is_charged_to_the_buckets_again(
    project: Path, sim: Simulator, t: FakeTime
) -> None:
    sim.script(Fault.status(500), None)
    async with make(project, sim, t, rate_limits=Limits(requests_per_minute=2)) as orch:
        agent = orch.list_agents()[0]
        first = await orch.execute_agent(agent, "t0")
        level = sonnet(orch)["buckets"]["requests"]["level"]
        waited = sum(t.sleeps)
        second = await orch.execute_agent(agent, "t1")
    assert first.success and first.attempts == 2
    assert level < 0.1  # two attempts, two requests of the two a minute
    assert second.success
    # A whole request's refill (30 s less the little gained meanwhile), plus up to 10% jitter.
    assert 29.0 <= sum(t.sleeps) - waited <= 33.5


async def test_paced_429s_do_not_use_up_max_retries(project: Path, t: FakeTime) -> None:
    # With no retries allowed, a request bounced by a neighbour the client cannot see is
    # still answered: the retry waits in the buckets and costs nothing.
    sim = limited(t, input_tokens_per_minute=6_000)
    async with sim, make(project, sim, t) as other, make(project, sim, t, max_retries=0) as orch:
        agent = orch.list_agents()[0]
        assert (await orch.execute_agent(agent, "hello")).success
        assert (await other.execute_agent(agent, "review this module " * 1000)).success
        result = await orch.execute_agent(agent, "check this module " * 600)
    assert result.success, result.errors
    assert result.attempts == 2 and sim.rate_limit_stats["rejected"] == 1


async def test_an_unpaced_429_still_uses_up_max_retries(
    project: Path, sim: Simulator, t: FakeTime
) -> None:
    sim.script(Fault.status(429, retry_after="1"), None)
    async with make(project, sim, t, max_retries=0) as orch:
        result = await orch.execute_agent(orch.list_agents()[0], "t")
    assert not result.success and result.attempts == 1


async def test_a_429_the_buckets_cannot_explain_obeys_retry_after_and_max_retries(
    project: Path, t: FakeTime
) -> None:
    # The service can refuse for a limit its headers do not show (an acceleration limit):
    # plenty remaining, yet 429 with retry-after. The buckets cannot pace that retry, so it
    # is an ordinary 429: the server's wait, and max_retries counts it.
    plenty = {
        f"anthropic-ratelimit-{kind}-{field}": value
        for kind in ("requests", "input-tokens", "output-tokens")
        for field, value in (("limit", "4000000"), ("remaining", "3999000"))
    }
    refused = Fault.status(429, retry_after="10", headers=plenty)
    async with Simulator(clock=t.clock, wall_clock=lambda: WALL + t.now) as sim:
        sim.script(*[refused] * 10)
        async with make(project, sim, t, max_retries=2) as orch:
            before = t.now
            result = await orch.execute_agent(orch.list_agents()[0], "Review x.py")
        assert not result.success and isinstance(result.error, APIError)
        assert result.error.error_type == "rate_limit_error"  # the service's own refusal
        assert len(sim.message_requests) == 3  # the first attempt and max_retries=2 retries
        assert t.now - before >= 2 * 10  # each retry waited the server's retry-after
