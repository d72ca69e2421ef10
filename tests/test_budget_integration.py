"""Budgets end to end: the orchestrator against the simulator over HTTP, in scripts where four
characters a token undershoots."""

from __future__ import annotations

import math
import socket
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from claude_force import AsyncAgentOrchestrator, Budget, BudgetExceeded
from claude_force._budget import (
    FRAMING_TOKENS_PER_MESSAGE,
    FRAMING_TOKENS_PER_REQUEST,
    utf8_bytes,
    worst_case_cost,
)
from claude_force._errors import APIError
from claude_force._pricing import PriceTable
from claude_force._request import Request, SystemPrompt, TaskSpec
from claude_force._transport import Transport
from claude_force.testing import Fault, Simulator
from claude_force.testing._simulator import COUNT_TOKENS_PATH, MESSAGES_PATH
from claude_force.testing._tokens import text_tokens

from .conftest import API_KEY

HAIKU = "claude-haiku-4-5"  # $1 input, $1.25 5-minute cache write, $5 output per million
HAN = "\u4e2d"
PRICES = PriceTable.load()


def make(project: Path, sim: Simulator, **kw: Any) -> AsyncAgentOrchestrator:
    kw.setdefault("enable_cache", False)
    return AsyncAgentOrchestrator(project, api_key=API_KEY, base_url=sim.base_url, **kw)


def texts_of(body: dict[str, Any]) -> list[str]:
    """The texts of a recorded request: its system blocks and its message text blocks."""
    texts = [block["text"] for block in body["system"]]
    for message in body["messages"]:
        texts.extend(block["text"] for block in message["content"])
    return texts


def worst_case(body: dict[str, Any], input_tokens: int) -> Decimal:
    price = PRICES.price(body["model"])
    assert price is not None
    return worst_case_cost(price, input_tokens, body["max_tokens"], prompt_cache_ttl="5m")


def bytes_bound(body: dict[str, Any]) -> int:
    return utf8_bytes(texts_of(body)) + FRAMING_TOKENS_PER_REQUEST + FRAMING_TOKENS_PER_MESSAGE


def paths(sim: Simulator) -> list[str]:
    return [r.path for r in sim.requests]


async def test_concurrent_chinese_calls_stay_within_a_small_budget(
    project: Path, sim: Simulator
) -> None:
    limit = Decimal("0.20")
    tasks = [
        TaskSpec("code-reviewer", f"{i}: " + HAN * 20_000, model=HAIKU, max_tokens=200)
        for i in range(20)
    ]
    async with make(project, sim, budget=Budget(max_cost_usd=limit)) as orch:
        results = await orch.execute_multiple(tasks)
        assert orch.budget is not None
        spent = orch.budget.spent
        assert orch.budget.reserved["requests"] == 0
    sent = [r for r in results if r.success]
    refused = [r for r in results if not r.success]
    costs = [r.metadata["estimated_cost"] for r in sent]
    assert sent and refused
    assert all(r.metadata["error"]["type"] == "budget_exceeded" for r in refused)
    assert sum(costs) == spent["cost_usd"] <= limit
    assert spent["requests"] == len(sent) == len(sim.message_requests)
    assert COUNT_TOKENS_PATH in paths(sim)  # the bound did not fit: exact counts were asked

    # The old estimate, ceil(characters / 4), would have let every call through at once, and
    # together they would have cost more than twice the limit.
    body = sim.message_requests[0].body
    old_estimate = math.ceil(sum(len(t) for t in texts_of(body)) / 4)
    admitted_by_old = min(len(tasks), int(limit / worst_case(body, old_estimate)))
    assert admitted_by_old == len(tasks)
    assert admitted_by_old * min(costs) > 2 * limit
    # The simulator's count is about four times that estimate; the bound is above both.
    counted = sent[0].metadata["input_tokens"]
    assert counted > 3 * old_estimate
    assert bytes_bound(body) >= counted


async def test_a_bound_too_big_is_settled_by_count_tokens_and_the_call_is_sent(
    project: Path, sim: Simulator
) -> None:
    limit = Decimal("0.03")
    async with make(project, sim) as orch:
        result = await orch.execute_agent(
            "code-reviewer",
            HAN * 10_000,
            model=HAIKU,
            max_tokens=200,
            budget=Budget(max_cost_usd=limit),
        )
    assert result.success
    assert paths(sim) == [COUNT_TOKENS_PATH, MESSAGES_PATH]
    counted = sim.requests[0].body
    assert counted["model"] == HAIKU and "max_tokens" not in counted
    body = sim.message_requests[0].body
    exact = sum(text_tokens(t) for t in texts_of(body))
    assert result.metadata["input_tokens"] == exact
    assert worst_case(body, bytes_bound(body)) > limit >= worst_case(body, exact)


async def test_a_bound_that_fits_sends_no_count(project: Path, sim: Simulator) -> None:
    async with make(project, sim) as orch:
        result = await orch.execute_agent(
            "code-reviewer", HAN * 100, model=HAIKU, budget=Budget(max_cost_usd="1")
        )
    assert result.success
    assert paths(sim) == [MESSAGES_PATH]


async def test_max_input_tokens_is_settled_by_count_tokens(project: Path, sim: Simulator) -> None:
    async with make(project, sim, budget=Budget(max_input_tokens=20_000)) as orch:
        sent = await orch.execute_agent("code-reviewer", HAN * 10_000, model=HAIKU)
        assert sent.success
        with pytest.raises(BudgetExceeded, match=r"max_input_tokens=20,000.*counted exactly"):
            await orch.execute_agent("code-reviewer", HAN * 10_000 + "!", model=HAIKU)
    assert paths(sim) == [COUNT_TOKENS_PATH, MESSAGES_PATH, COUNT_TOKENS_PATH]


async def test_a_failing_count_refuses_with_the_bound_after_retries(
    project: Path, sim: Simulator
) -> None:
    async def no_wait(_: float) -> None:
        return None

    sim.script_count_tokens(*[Fault.status(500)] * 4)
    async with make(project, sim, max_retries=3, sleep=no_wait) as orch:
        with pytest.raises(BudgetExceeded) as info:
            await orch.execute_agent(
                "code-reviewer",
                HAN * 10_000,
                model=HAIKU,
                max_tokens=200,
                budget=Budget(max_cost_usd="0.03"),
            )
    message = str(info.value)
    assert "could not be fetched from count_tokens (HTTP 500 api_error" in message
    assert "safe bound" in message and API_KEY not in message
    assert paths(sim) == [COUNT_TOKENS_PATH] * 4  # retried, and nothing was sent


async def test_a_count_refused_by_the_service_is_not_retried(project: Path, sim: Simulator) -> None:
    sim.script_count_tokens(Fault.status(400, message="model not supported for counting"))
    async with make(project, sim, budget=Budget(max_cost_usd="0.03")) as orch:
        result = (
            await orch.execute_multiple(
                [TaskSpec("code-reviewer", HAN * 10_000, model=HAIKU, max_tokens=200)]
            )
        )[0]
    assert not result.success
    assert "model not supported for counting" in result.metadata["error"]["message"]
    assert paths(sim) == [COUNT_TOKENS_PATH]


async def test_count_tokens_on_an_unreachable_service_is_an_api_error() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    transport = Transport(
        api_key=API_KEY,
        base_url=f"http://127.0.0.1:{port}",
        timeout_seconds=5.0,
        max_retries=1,
        sleep=record,
    )
    request = Request(
        model=HAIKU,
        system=SystemPrompt("Be brief."),
        messages=({"role": "user", "content": [{"type": "text", "text": HAN}]},),
        max_tokens=10,
    )
    try:
        with pytest.raises(APIError) as info:
            await transport.count_tokens(request)
    finally:
        await transport.aclose()
    assert info.value.error_type == "connection_error" and info.value.attempts == 2
    assert len(waits) == 1 and API_KEY not in str(info.value)
