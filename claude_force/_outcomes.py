"""How each kind of call outcome becomes an :class:`AgentResult` and a ledger row."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from ._errors import APIError, BudgetExceeded
from ._ledger import LedgerRow, task_hash
from ._request import Request
from ._results import AgentResult
from ._transport import Sent
from ._usage import Usage
from .cache import CacheHit

__all__ = [
    "base_metadata",
    "budget_result",
    "failure_result",
    "hit_result",
    "ledger_row",
    "shared_result",
    "success_result",
]


def base_metadata(request: Request, started: float) -> dict[str, Any]:
    return {
        "model": request.model,
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "execution_time_ms": (time.perf_counter() - started) * 1000,
        "cached": False,
        "attempts": 0,
        "request_id": None,
        "stop_reason": None,
        "estimated_cost": None,
    }


def success_result(
    agent: str, request: Request, sent: Sent, started: float, usage: Usage, cost: Decimal | None
) -> AgentResult:
    message = sent.message
    text = "".join(getattr(block, "text", "") for block in message.content)
    meta = base_metadata(request, started)
    meta.update(
        model=message.model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_creation_input_tokens=usage.cache_write_tokens,
        cache_read_input_tokens=usage.cache_read_tokens,
        cache_creation={
            "ephemeral_5m_input_tokens": usage.cache_write_5m_tokens,
            "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
        },
        estimated_cost=cost,
        attempts=sent.attempts,
        request_id=sent.request_id,
        stop_reason=message.stop_reason,
        message_id=message.id,
    )
    return AgentResult(agent_name=agent, success=True, output=text, metadata=meta)


def failure_result(agent: str, request: Request, err: APIError, started: float) -> AgentResult:
    meta = base_metadata(request, started)
    meta.update(attempts=err.attempts, request_id=err.request_id, error=err.to_dict())
    return AgentResult(agent_name=agent, success=False, output="", metadata=meta, errors=[str(err)])


def hit_result(agent: str, request: Request, hit: CacheHit, started: float) -> AgentResult:
    """A response-cache hit: nothing consumed, cost $0, ``cost_saved`` the original cost."""
    value = hit.value
    message = value["message"]
    cost = value.get("cost")
    meta = base_metadata(request, started)
    meta.update(
        model=message["model"],
        stop_reason=message.get("stop_reason"),
        message_id=message.get("id"),
        cached=True,
        cache_tier=hit.tier,
        cache_age_seconds=hit.age_seconds,
        estimated_cost=Decimal(0),
        cost_saved=Decimal(cost) if cost is not None else None,
    )
    text = "".join(b.get("text", "") for b in message["content"] if b.get("type") == "text")
    return AgentResult(agent_name=agent, success=True, output=text, metadata=meta)


def shared_result(agent: str, request: Request, leader: AgentResult, started: float) -> AgentResult:
    """A waiter's view of another caller's identical in-flight request: costs nothing."""
    meta = dict(leader.metadata)
    if leader.success:
        meta.update(
            base_metadata(request, started),
            model=leader.metadata["model"],
            stop_reason=leader.metadata["stop_reason"],
            message_id=leader.metadata.get("message_id"),
            cached=True,
            cache_tier="in-flight",
            cache_age_seconds=0.0,
            estimated_cost=Decimal(0),
            cost_saved=leader.metadata["estimated_cost"],
        )
    return AgentResult(agent, leader.success, leader.output, meta, list(leader.errors))


def budget_result(agent: str, request: Request, exc: BudgetExceeded) -> AgentResult:
    """A step that was not sent because it could cross a budget."""
    meta = base_metadata(request, time.perf_counter())
    meta["error"] = {
        "type": "budget_exceeded",
        "status_code": None,
        "request_id": None,
        "message": str(exc),
        "attempts": 0,
    }
    meta["budget_spent"] = exc.spent
    return AgentResult(agent, False, "", meta, [f"budget exceeded: {exc}"])


def ledger_row(
    result: AgentResult,
    usage: Usage,
    *,
    task: str,
    workflow_run: str | None,
    workflow_step: int | None,
) -> LedgerRow:
    """The ledger row for one completed call; the task is stored only as a hash."""
    meta = result.metadata
    error = meta.get("error")
    return LedgerRow(
        agent=result.agent_name,
        model=meta["model"],
        outcome="success" if result.success else "error",
        message_id=meta.get("message_id"),
        request_id=meta["request_id"],
        workflow_run=workflow_run,
        workflow_step=workflow_step,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_write_5m_tokens=usage.cache_write_5m_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cost_usd=meta["estimated_cost"],
        cost_saved_usd=meta.get("cost_saved"),
        latency_ms=meta["execution_time_ms"],
        attempts=meta["attempts"],
        cached=bool(meta["cached"]),
        error_type=error["type"] if error else None,
        task_hash=task_hash(task),
    )
