"""Result values returned by the orchestrators."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = ["AgentResult", "WorkflowResult"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@dataclass(slots=True)
class AgentResult:
    """What one agent call produced.

    ``metadata`` always holds ``model``, ``input_tokens``, ``output_tokens``,
    ``cache_creation_input_tokens``, ``cache_read_input_tokens``, ``execution_time_ms``,
    ``cached``, ``attempts``, ``request_id``, ``stop_reason`` and ``estimated_cost``
    (a ``Decimal``, or None while unknown). A failed call has ``success=False``, its
    messages in ``errors`` and ``metadata["error"]`` with type, status code and request id.
    """

    agent_name: str
    success: bool
    output: str
    metadata: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (Decimals as strings)."""
        return {
            "agent_name": self.agent_name,
            "success": self.success,
            "output": self.output,
            "metadata": _jsonable(self.metadata),
            "errors": list(self.errors),
        }


@dataclass(slots=True)
class WorkflowResult:
    """What a workflow run produced: its steps in order and the totals."""

    workflow_name: str
    steps: list[AgentResult]
    success: bool
    execution_time_ms: float
    run_id: str = ""
    error: str | None = None

    @property
    def total_input_tokens(self) -> int:
        return sum(int(s.metadata.get("input_tokens", 0) or 0) for s in self.steps)

    @property
    def total_output_tokens(self) -> int:
        return sum(int(s.metadata.get("output_tokens", 0) or 0) for s in self.steps)

    @property
    def total_cost(self) -> Decimal | None:
        """Sum of step costs; None when any step's cost is unknown."""
        total = Decimal(0)
        for step in self.steps:
            cost = step.metadata.get("estimated_cost")
            if cost is None:
                return None
            total += cost
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
            "steps": [s.to_dict() for s in self.steps],
        }
