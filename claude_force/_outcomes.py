"""How each kind of call outcome becomes an :class:`AgentResult`, a cache value, a ledger row.

The cached value's shape is written by :func:`cache_value` and read by :func:`hit_result`,
side by side, so the two cannot drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from ._errors import APIError, BudgetExceeded
from ._ledger import LedgerRow, task_hash
from ._request import Request
from ._results import AgentResult
from ._transport import Sent
from ._usage import Usage
from .cache import CacheHit

__all__ = [
    "NO_USAGE",
    "ZERO_COST",
    "budget_result",
    "cache_value",
    "failure_result",
    "hit_result",
    "ledger_row",
    "shared_result",
    "success_result",
]

_ZERO = ZERO_COST = Decimal(0)
NO_USAGE = Usage()


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def success_result(
    agent: str, request: Request, sent: Sent, started: float, usage: Usage, cost: Decimal | None
) -> AgentResult:
    answer = sent.answer
    return AgentResult(
        agent_name=agent,
        success=True,
        output=answer.text,
        model=answer.model,
        usage=usage,
        cost=cost,
        attempts=sent.attempts,
        latency_ms=_elapsed_ms(started),
        request_id=sent.request_id,
        message_id=answer.id,
        stop_reason=answer.stop_reason,
        injection_flags=request.injection_flags,
    )


def failure_result(agent: str, request: Request, err: APIError, started: float) -> AgentResult:
    """A call that failed after retries: the service bills no failed request, so $0."""
    return AgentResult(
        agent_name=agent,
        success=False,
        output="",
        errors=[str(err)],
        model=request.model,
        cost=_ZERO,
        attempts=err.attempts,
        latency_ms=_elapsed_ms(started),
        request_id=err.request_id,
        error=err,
        injection_flags=request.injection_flags,
    )


def budget_result(agent: str, request: Request, exc: BudgetExceeded) -> AgentResult:
    """A step that was not sent because it could cross a budget."""
    return AgentResult(
        agent_name=agent,
        success=False,
        output="",
        errors=[f"budget exceeded: {exc}"],
        model=request.model,
        cost=_ZERO,
        error=exc,
        injection_flags=request.injection_flags,
    )


def cache_value(sent: Sent, usage: Usage, cost: Decimal | None) -> dict[str, Any]:
    """What the response cache stores for an answer; :func:`hit_result` reads it back."""
    answer = sent.answer
    return {
        "message": {
            "id": answer.id,
            "model": answer.model,
            "stop_reason": answer.stop_reason,
            "content": answer.content,
        },
        "usage": asdict(usage),
        "cost": None if cost is None else str(cost),
    }


def hit_result(agent: str, request: Request, hit: CacheHit, started: float) -> AgentResult | None:
    """A response-cache hit: nothing consumed, cost $0, ``cost_saved`` the original cost.

    Returns None when the stored value does not have the shape :func:`cache_value` writes
    (an entry from another version): the caller treats it as a miss.
    """
    try:
        message = hit.value["message"]
        text = "".join(b["text"] for b in message["content"] if b.get("type") == "text")
        stored = hit.value.get("cost")
        saved = Decimal(stored) if stored is not None else None
        return AgentResult(
            agent_name=agent,
            success=True,
            output=text,
            model=str(message["model"]),
            usage=NO_USAGE,
            cost=_ZERO,
            cost_saved=saved,
            latency_ms=_elapsed_ms(started),
            cached=True,
            cache_tier=hit.tier,
            cache_age_seconds=hit.age_seconds,
            message_id=message.get("id"),
            stop_reason=message.get("stop_reason"),
            injection_flags=request.injection_flags,
        )
    except (KeyError, TypeError, AttributeError, InvalidOperation):
        return None


def shared_result(agent: str, request: Request, leader: AgentResult, started: float) -> AgentResult:
    """A waiter's view of another caller's identical in-flight request: costs nothing, made
    no attempt and was served by that call (``cache_tier`` "in-flight"), its answer or its
    error (``error`` is the shared call's, with that call's attempts and request id)."""
    if not leader.success:
        return replace(
            leader,
            agent_name=agent,
            cost=_ZERO,
            attempts=0,
            latency_ms=_elapsed_ms(started),
            cached=True,
            cache_tier="in-flight",
            request_id=None,
        )
    return replace(
        leader,
        agent_name=agent,
        usage=Usage(),
        cost=_ZERO,
        cost_saved=leader.cost,
        attempts=0,
        latency_ms=_elapsed_ms(started),
        cached=True,
        cache_tier="in-flight",
        cache_age_seconds=0.0,
        request_id=None,
    )


def ledger_row(
    result: AgentResult,
    *,
    task: str,
    workflow_run: str | None,
    workflow_step: int | None,
    batch: bool = False,
) -> LedgerRow:
    """The ledger row for one completed call; the task is stored only as a hash."""
    usage = result.usage
    error = result.error
    error_type = None
    if error is not None:
        error_type = error.error_type if isinstance(error, APIError) else "budget_exceeded"
    return LedgerRow(
        agent=result.agent_name,
        model=result.model,
        outcome="success" if result.success else "error",
        message_id=result.message_id,
        request_id=result.request_id,
        workflow_run=workflow_run,
        workflow_step=workflow_step,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_write_5m_tokens=usage.cache_write_5m_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        web_search_requests=usage.web_search_requests,
        cost_usd=result.cost,
        cost_saved_usd=result.cost_saved,
        latency_ms=result.latency_ms,
        attempts=result.attempts,
        cached=result.cached,
        error_type=error_type,
        task_hash=task_hash(task),
        batch=batch,
        injection_flags=",".join(result.injection_flags) or None,
    )


def warm_counts(results: Sequence[AgentResult]) -> dict[str, int]:
    """What warming the cache did: ``already_cached``, ``stored`` and ``failed`` calls."""
    cached = sum(1 for r in results if r.success and r.cached)
    failed = sum(1 for r in results if not r.success)
    return {"already_cached": cached, "stored": len(results) - cached - failed, "failed": failed}
