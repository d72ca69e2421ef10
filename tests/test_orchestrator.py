"""The async core against the simulator, through the real SDK over loopback HTTP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from claude_force import (
    AgentNotFoundError,
    AsyncAgentOrchestrator,
    Budget,
    InvalidArgumentError,
    UsageError,
    WorkflowNotFoundError,
)
from claude_force.testing import Fault, Simulator

from .conftest import API_KEY

META_KEYS = {
    "model",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "execution_time_ms",
    "cached",
    "attempts",
    "request_id",
    "stop_reason",
    "estimated_cost",
}


class FakeSleep:
    """Records requested delays instead of waiting."""

    def __init__(self, gate: Callable[[], Awaitable[object]] | None = None) -> None:
        self.delays: list[float] = []
        self._gate = gate

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self._gate is not None:
            await self._gate()


def make(project: Path, sim: Simulator, **kw: Any) -> AsyncAgentOrchestrator:
    kw.setdefault("sleep", FakeSleep())
    kw.setdefault("enable_cache", False)
    kw.setdefault("enable_tracking", False)
    return AsyncAgentOrchestrator(project, api_key=API_KEY, base_url=sim.base_url, **kw)


def agent_of(orch: AsyncAgentOrchestrator) -> str:
    return orch.list_agents()[0]


async def test_execute_agent_returns_output_and_metadata(project: Path, sim: Simulator) -> None:
    async with make(project, sim) as orch:
        result = await orch.execute_agent(agent_of(orch), "Review utils.py")
    assert result.success, result.errors
    assert result.output
    assert set(result.metadata) >= META_KEYS
    assert result.metadata["attempts"] == 1
    assert result.metadata["request_id"].startswith("req_")
    assert result.metadata["input_tokens"] > 0 and result.metadata["output_tokens"] > 0
    body = sim.message_requests[-1].body
    system = body["system"][0]
    assert system["cache_control"]["type"] == "ephemeral"
    definition = orch.config.agent(agent_of(orch)).file.read_text(encoding="utf-8").strip()
    assert definition[:200] in system["text"]
    assert "Review utils.py" in body["messages"][0]["content"][-1]["text"]
    for absent in ("temperature", "top_p", "top_k"):
        assert absent not in body


async def test_temperature_sent_in_body_only_when_given(project: Path, sim: Simulator) -> None:
    async with make(project, sim) as orch:
        await orch.execute_agent(
            agent_of(orch), "t", temperature=0.3, max_tokens=77, model="claude-haiku-4-5"
        )
    body = sim.message_requests[-1].body
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 77
    assert body["model"] == "claude-haiku-4-5"


async def test_identical_requests_identical_text(project: Path, sim: Simulator) -> None:
    async with make(project, sim) as orch:
        a = await orch.execute_agent(agent_of(orch), "same task")
        b = await orch.execute_agent(agent_of(orch), "same task")
        c = await orch.execute_agent(agent_of(orch), "other task")
    assert a.output == b.output != c.output


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 529])
async def test_retryable_status_is_retried(project: Path, sim: Simulator, status: int) -> None:
    sleep = FakeSleep()
    sim.script(Fault.status(status), None)
    async with make(project, sim, sleep=sleep) as orch:
        result = await orch.execute_agent(agent_of(orch), "t")
    assert result.success, result.errors
    assert result.metadata["attempts"] == 2
    assert len(sleep.delays) == 1
    assert len(sim.message_requests) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
async def test_non_retryable_status_fails_at_once(
    project: Path, sim: Simulator, status: int
) -> None:
    sleep = FakeSleep()
    sim.script(Fault.status(status))
    async with make(project, sim, sleep=sleep) as orch:
        result = await orch.execute_agent(agent_of(orch), "t")
    assert not result.success
    err = result.metadata["error"]
    assert err["status_code"] == status
    assert err["request_id"] and err["request_id"].startswith("req_")
    assert err["attempts"] == 1
    assert sleep.delays == []
    assert len(sim.message_requests) == 1
    assert str(status) in result.errors[0]


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault.status(429, retry_after="3"), 3.0),
        (Fault.status(529, retry_after_ms="1250"), 1.25),
        (Fault.status(503, retry_after="2", retry_after_ms="40"), 0.04),
    ],
)
async def test_retry_after_is_honoured(
    project: Path, sim: Simulator, fault: Fault, expected: float
) -> None:
    sleep = FakeSleep()
    sim.script(fault, None)
    async with make(project, sim, sleep=sleep) as orch:
        result = await orch.execute_agent(agent_of(orch), "t")
    assert result.success
    # The server's wait, lengthened by up to 25% of jitter, never shortened.
    assert len(sleep.delays) == 1
    assert expected <= sleep.delays[0] <= expected * 1.25 + 1e-9


async def test_x_should_retry_false_stops_retries(project: Path, sim: Simulator) -> None:
    sim.script(Fault.status(500, should_retry=False), None)
    async with make(project, sim) as orch:
        result = await orch.execute_agent(agent_of(orch), "t")
    assert not result.success
    assert result.metadata["attempts"] == 1


async def test_x_should_retry_true_retries_a_400(project: Path, sim: Simulator) -> None:
    sim.script(Fault.status(400, should_retry=True), None)
    async with make(project, sim) as orch:
        result = await orch.execute_agent(agent_of(orch), "t")
    assert result.success
    assert result.metadata["attempts"] == 2


async def test_max_retries_counts_retries_after_first_attempt(
    project: Path, sim: Simulator
) -> None:
    sleep = FakeSleep()
    sim.script(*[Fault.status(500)] * 5)
    async with make(project, sim, sleep=sleep, max_retries=3) as orch:
        result = await orch.execute_agent(agent_of(orch), "t")
    assert not result.success
    assert result.metadata["attempts"] == 4
    assert len(sim.message_requests) == 4
    assert len(sleep.delays) == 3
    assert sleep.delays == sorted(sleep.delays)  # exponential backoff grows


async def test_connection_reset_is_retried(project: Path, sim: Simulator) -> None:
    sim.script(Fault.reset(), None)
    async with make(project, sim) as orch:
        result = await orch.execute_agent(agent_of(orch), "t")
    assert result.success, result.errors
    assert result.metadata["attempts"] == 2


async def test_per_attempt_timeout_then_retry(project: Path, sim: Simulator) -> None:
    sim.script(Fault.hang(), None)
    async with make(project, sim, timeout_seconds=0.3, max_retries=1) as orch:
        result = await orch.execute_agent(agent_of(orch), "t")
    assert result.success, result.errors
    assert result.metadata["attempts"] == 2


async def test_timeout_after_retries_is_a_failure(project: Path, sim: Simulator) -> None:
    sim.script(Fault.hang())
    async with make(project, sim, timeout_seconds=0.2, max_retries=0) as orch:
        result = await orch.execute_agent(agent_of(orch), "t")
    assert not result.success
    assert result.metadata["error"]["type"] == "timeout"
    assert result.metadata["error"]["status_code"] is None
    assert "(timeout_seconds=0.2)" in result.errors[0]


async def test_a_timeout_cut_short_by_the_deadline_names_the_deadline(
    project: Path, sim: Simulator
) -> None:
    sim.script(Fault.hang())
    async with make(project, sim, timeout_seconds=60, deadline_seconds=0.2) as orch:
        result = await orch.execute_agent(agent_of(orch), "t")
    assert not result.success and result.metadata["error"]["type"] == "timeout"
    assert "deadline_seconds=0.2" in result.errors[0], result.errors


async def test_peak_concurrency_never_above_max(project: Path) -> None:
    async with Simulator(latency_ms=20) as slow, make(project, slow, max_concurrent=4) as orch:
        results = await orch.execute_multiple([(agent_of(orch), f"task {i}") for i in range(24)])
        assert orch.peak_concurrency == 4
        assert all(r.success for r in results)
        assert 2 <= slow.peak_in_flight <= 4


async def test_waiting_retry_gives_its_slot_back(project: Path, sim: Simulator) -> None:
    other_done = asyncio.Event()

    async def until_other_done() -> None:
        await asyncio.wait_for(other_done.wait(), 5)

    sim.script(Fault.status(429, retry_after="30"), None, None)
    async with make(project, sim, max_concurrent=1, sleep=FakeSleep(until_other_done)) as orch:
        first = asyncio.create_task(orch.execute_agent(agent_of(orch), "first"))
        await asyncio.sleep(0)

        async def second() -> Any:
            result = await orch.execute_agent(agent_of(orch), "second")
            other_done.set()
            return result

        a, b = await asyncio.gather(first, second())
    # With one slot, "second" could only finish while "first" waited to retry.
    assert a.success and b.success
    assert a.metadata["attempts"] == 2


async def test_order_kept_and_one_failure_isolated(project: Path, sim: Simulator) -> None:
    agent = "code-reviewer"
    tasks = [(agent, f"item {i}") for i in range(6)]
    sim.script(None, None, Fault.status(400), None, None, None)
    async with make(project, sim, max_concurrent=1) as orch:
        results = await orch.execute_multiple(tasks)
        singles = [await orch.execute_agent(agent, t) for _, t in tasks]
    assert [r.success for r in results] == [True, True, False, True, True, True]
    for i in (0, 1, 3, 4, 5):
        assert results[i].output == singles[i].output


async def test_execute_multiple_accepts_dicts_and_validates_first(
    project: Path, sim: Simulator
) -> None:
    async with make(project, sim) as orch:
        ok = await orch.execute_multiple(
            [{"agent": "code-reviewer", "task": "a", "max_tokens": 50}]
        )
        assert ok[0].success
        with pytest.raises(AgentNotFoundError):
            await orch.execute_multiple([("code-reviewer", "a"), ("nobody", "b")])
        with pytest.raises(InvalidArgumentError, match="tasks\\[0\\]"):
            await orch.execute_multiple([{"agent": "code-reviewer", "prompt": "a"}])
    assert len(sim.message_requests) == 1  # nothing sent for the invalid batches


async def test_usage_errors(project: Path, sim: Simulator) -> None:
    async with make(project, sim, max_task_chars=100) as orch:
        with pytest.raises(AgentNotFoundError, match="did you mean 'code-reviewer'"):
            await orch.execute_agent("code-reviewr", "t")
        with pytest.raises(InvalidArgumentError, match="empty"):
            await orch.execute_agent("code-reviewer", "   ")
        with pytest.raises(InvalidArgumentError, match="over the limit of 100"):
            await orch.execute_agent("code-reviewer", "x" * 101)
        with pytest.raises(InvalidArgumentError, match="max_tokens"):
            await orch.execute_agent("code-reviewer", "t", max_tokens=0)
        with pytest.raises(InvalidArgumentError, match="temperature"):
            await orch.execute_agent("code-reviewer", "t", temperature=3.0)
        with pytest.raises(InvalidArgumentError):
            await orch.execute_agent("../etc/passwd", "t")
        with pytest.raises(WorkflowNotFoundError):
            await orch.run_workflow("nope", "t")
    assert sim.message_requests == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"max_concurrent": 2.5}, "max_concurrent"),
        ({"max_retries": -1}, "max_retries"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"deadline_seconds": -1}, "deadline_seconds"),
        ({"cache_ttl_hours": 0}, "cache_ttl_hours"),
        ({"cache_max_size_mb": "big"}, "cache_max_size_mb"),
        ({"max_task_chars": 0}, "max_task_chars"),
    ],
)
def test_bad_constructor_arguments(project: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        AsyncAgentOrchestrator(project, **kwargs)


async def test_missing_api_key_is_a_usage_error(project: Path, sim: Simulator) -> None:
    orch = AsyncAgentOrchestrator(project, base_url=sim.base_url)
    with pytest.raises(UsageError, match="ANTHROPIC_API_KEY"):
        await orch.execute_agent("code-reviewer", "t")


async def test_api_key_never_in_errors_logs_or_repr(
    project: Path, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim.script(Fault.status(500), Fault.status(401), Fault.reset())
    async with make(project, sim, max_retries=1) as orch:
        bad = await orch.execute_agent("code-reviewer", "t")
        assert API_KEY not in repr(orch)
    assert not bad.success
    assert API_KEY not in caplog.text
    assert API_KEY not in str(bad.to_dict())
    for recorded in sim.requests:
        assert API_KEY not in str(recorded.headers)


@pytest.mark.parametrize(
    "echo", [API_KEY, API_KEY[:20], f"b'Bearer {API_KEY[:-3]}...'", f"...{API_KEY[-17:]}"]
)
async def test_a_server_echoing_the_key_cut_short_is_redacted(
    project: Path, sim: Simulator, echo: str
) -> None:
    """A server or proxy quoting the header in its error, whole or cut short."""
    sim.script(Fault.status(400, message=f"Got more than 8190 bytes when reading: {echo}"))
    async with make(project, sim) as orch:
        bad = await orch.execute_agent("code-reviewer", "t")
    assert "Got more than 8190 bytes when reading" in str(bad.to_dict())
    text = str(bad.to_dict())
    assert API_KEY[:16] not in text and API_KEY[-16:] not in text and "***" in text


def test_usable_across_separate_event_loops(project: Path, sim: Simulator) -> None:
    orch = make(project, sim)
    first = asyncio.run(orch.execute_agent("code-reviewer", "one"))
    second = asyncio.run(orch.execute_agent("code-reviewer", "two"))
    assert first.success and second.success


async def test_edited_agent_file_changes_the_request(project: Path, sim: Simulator) -> None:
    async with make(project, sim) as orch:
        await orch.execute_agent("code-reviewer", "t")
        spec = orch.config.agent("code-reviewer")
        spec.file.write_text("You are a terse reviewer. Edited.\n", encoding="utf-8")
        await orch.execute_agent("code-reviewer", "t")
    before, after = sim.message_requests[-2].body, sim.message_requests[-1].body
    assert "Edited." not in before["system"][0]["text"]
    assert "Edited." in after["system"][0]["text"]


async def test_overall_deadline_stops_a_wait_that_would_pass_it(
    project: Path, sim: Simulator
) -> None:
    sleep = FakeSleep()
    sim.script(Fault.status(429, retry_after="30"), None)
    async with make(project, sim, sleep=sleep, deadline_seconds=5) as orch:
        result = await orch.execute_agent(agent_of(orch), "t")
    assert not result.success
    assert result.metadata["error"]["status_code"] == 429
    assert sleep.delays == []  # gave up at once instead of waiting past the deadline


async def test_agent_files_are_read_once_until_they_change(
    project: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import claude_force._config
    import claude_force._request as core

    reads: list[str] = []
    real = claude_force._config.read_agent_prompt

    def counting(spec: Any) -> tuple[str, str | None]:
        reads.append(spec.name)
        return real(spec)

    monkeypatch.setattr(core, "read_agent_prompt", counting)
    async with make(project, sim) as orch:
        for i in range(5):
            await orch.execute_agent("code-reviewer", f"task {i}")
        assert reads == ["code-reviewer"]
        contract = orch.config.agent("code-reviewer").contract
        assert contract is not None
        contract.write_text(
            contract.read_text(encoding="utf-8") + "\nNew rule.\n", encoding="utf-8"
        )
        await orch.execute_agent("code-reviewer", "after edit")
    assert reads == ["code-reviewer", "code-reviewer"]
    assert "New rule." in sim.message_requests[-1].body["system"][0]["text"]


async def test_a_wait_for_the_budget_counts_toward_the_deadline(
    project: Path, sim: Simulator
) -> None:
    """The second call fits the budget only once the first, in flight, settles: it waits, and
    that wait is part of its deadline, not added to it."""
    # Both hang: the second may get the budget in the moment between the first's failure and
    # its own deadline (a slow machine), and then must still end at that deadline.
    sim.script(Fault.hang(), Fault.hang())
    async with make(
        project, sim, timeout_seconds=60, deadline_seconds=0.3, budget=Budget(max_requests=1)
    ) as orch:
        agent = agent_of(orch)
        first, second = await orch.execute_multiple([(agent, "one"), (agent, "two")])
    assert not first.success and "deadline_seconds=0.3" in first.errors[0], first.errors
    assert not second.success and "deadline" in second.errors[0], second.errors
    # Not the first's time plus a deadline of its own (about twice the first's), whatever
    # the machine's pace: both are measured in this run.
    assert first.latency_ms is not None and second.latency_ms is not None
    assert second.latency_ms < 1.5 * first.latency_ms
    sim.release_hangs()
