"""Result values returned by the orchestrators: typed fields, ``metadata`` derived from them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal, overload

from ._errors import APIError, BudgetExceeded, RunError
from ._frozen import quick_init
from ._usage import Usage

__all__ = ["AgentResult", "CacheTier", "WorkflowResult"]

CacheTier = Literal["memory", "disk", "redis", "in-flight"]
"""Where a cached answer came from; ``in-flight`` is an identical call made at the same time."""

_NO_USAGE = Usage()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def error_dict(error: RunError) -> dict[str, Any]:
    """The JSON form of a run error: type, status code, request id, message, attempts."""
    if isinstance(error, APIError):
        return error.to_dict()
    kind = "budget_exceeded" if isinstance(error, BudgetExceeded) else type(error).__name__
    return {
        "type": kind,
        "status_code": None,
        "request_id": None,
        "message": str(error),
        "attempts": 0,
    }


@quick_init
@dataclass(frozen=True, slots=True)
class AgentResult:
    """What one agent call produced.

    ``cost`` is what the call cost in USD (``Decimal(0)`` for a cache hit or a failure the
    service did not bill; None only when the model's price is unknown); ``cost_saved`` what a
    cache hit would have cost. ``error`` is set when ``success`` is False. ``metadata`` is a
    read-only mapping derived from the fields, kept for code written against the dict form.

    ``reused``: a workflow step taken from the kept outputs of an earlier run (``resume=True``);
    it made no call, so its usage is zero and ``cost`` $0, with the original cost in
    ``cost_saved``. ``injection_flags``: signals found in the task or the earlier outputs this
    call was given (see ``_injection.py``); flagged content was sent unchanged.
    """

    agent_name: str
    success: bool
    output: str
    errors: list[str] = field(default_factory=list)
    model: str = ""
    usage: Usage = _NO_USAGE
    cost: Decimal | None = None
    cost_saved: Decimal | None = None
    attempts: int = 0
    latency_ms: float = 0.0
    cached: bool = False
    cache_tier: CacheTier | None = None
    cache_age_seconds: float | None = None
    request_id: str | None = None
    message_id: str | None = None
    stop_reason: str | None = None
    error: RunError | None = None
    workflow: str | None = None
    workflow_run: str | None = None
    stage: int | None = None
    step: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    reused: bool = False
    injection_flags: tuple[str, ...] = ()

    @property
    def metadata(self) -> Mapping[str, Any]:
        """The fields as the seed's ``metadata`` dict (read-only, built on each access)."""
        usage = self.usage
        meta: dict[str, Any] = {
            "model": self.model,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            # Claude Force 1.x's total: input plus output, as the service counts them.
            "tokens_used": usage.input_tokens + usage.output_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens,
            "cache_read_input_tokens": usage.cache_read_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": usage.cache_write_5m_tokens,
                "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
            },
            "execution_time_ms": self.latency_ms,
            "cached": self.cached,
            "cache_tier": self.cache_tier,
            "cache_age_seconds": self.cache_age_seconds,
            "attempts": self.attempts,
            "request_id": self.request_id,
            "message_id": self.message_id,
            "stop_reason": self.stop_reason,
            "estimated_cost": self.cost,
            "cost_saved": self.cost_saved,
            "reused": self.reused,
            "injection_flags": self.injection_flags,
        }
        if self.error is not None:
            meta["error"] = error_dict(self.error)
            if isinstance(self.error, BudgetExceeded):
                meta["budget_spent"] = dict(self.error.spent)
        if self.workflow is not None:
            meta.update(
                workflow=self.workflow,
                workflow_run=self.workflow_run,
                stage=self.stage,
                step=self.step,
            )
        meta.update(self.extra)
        return MappingProxyType(meta)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (Decimals as strings)."""
        return {
            "agent_name": self.agent_name,
            "success": self.success,
            "output": self.output,
            "metadata": _jsonable(self.metadata),
            "errors": list(self.errors),
        }


@dataclass(frozen=True, slots=True)
class WorkflowResult(Sequence[AgentResult]):
    """What a workflow run produced: its steps in order and the totals.

    It is also a read-only sequence of its steps (``for r in result``, ``len(result)``,
    ``result[-1]``), as Claude Force 1.x's ``run_workflow`` returned a list of results.
    """

    workflow_name: str
    steps: list[AgentResult]
    success: bool
    execution_time_ms: float
    run_id: str = ""
    error: str | None = None
    skipped: list[str] = field(default_factory=list)
    """Agents of later stages that were not run because an earlier stage failed."""
    reused: list[int] = field(default_factory=list)
    """Step numbers (1-based, as ``AgentResult.step``) taken from an earlier run on resume."""
    resumed_from: str | None = None
    """The run whose kept outputs were reused, when any were."""

    def __iter__(self) -> Iterator[AgentResult]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    @overload
    def __getitem__(self, index: int) -> AgentResult: ...
    @overload
    def __getitem__(self, index: slice) -> list[AgentResult]: ...
    def __getitem__(self, index: int | slice) -> AgentResult | list[AgentResult]:
        return self.steps[index]

    @property
    def usage(self) -> Usage:
        """Tokens of every step added together."""
        total = _NO_USAGE
        for step in self.steps:
            total = total + step.usage
        return total

    @property
    def total_input_tokens(self) -> int:
        return self.usage.input_tokens

    @property
    def total_output_tokens(self) -> int:
        return self.usage.output_tokens

    @property
    def total_cost(self) -> Decimal | None:
        """Sum of the steps' costs; None only when a step's price is unknown."""
        total = Decimal(0)
        for step in self.steps:
            if step.cost is None:
                return None
            total += step.cost
        return total

    @property
    def final_output(self) -> str:
        return self.steps[-1].output if self.steps else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow_name": self.workflow_name,
            "run_id": self.run_id,
            "success": self.success,
            "error": self.error,
            "execution_time_ms": self.execution_time_ms,
            "total_input_tokens": self.total_input_tokens,
            "total_output_tokens": self.total_output_tokens,
            "total_cost": _jsonable(self.total_cost),
            "skipped": list(self.skipped),
            "reused": list(self.reused),
            "resumed_from": self.resumed_from,
            "steps": [s.to_dict() for s in self.steps],
        }
