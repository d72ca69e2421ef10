"""Workflows: stages run in order, the agents of one stage concurrently."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from ._results import AgentResult, WorkflowResult

__all__ = ["StepCall", "StepEvent", "run_stages"]

StepCall = Callable[[str, Sequence[tuple[str, str]], int], Awaitable[AgentResult]]
"""(agent, earlier (agent, output) pairs, 0-based step index) -> result."""


@dataclass(frozen=True, slots=True)
class StepEvent:
    """Progress of one workflow step, for live displays."""

    workflow: str
    run_id: str
    stage: int
    stages: int
    agent: str
    status: Literal["started", "succeeded", "failed"]
    result: AgentResult | None = None


async def run_stages(
    workflow: str,
    stages: Sequence[Sequence[str]],
    call: StepCall,
    *,
    run_id: str,
    on_step: Callable[[StepEvent], None] | None = None,
) -> WorkflowResult:
    """Run ``stages``; each step gets every earlier step's ``(agent, output)``.

    Agents of one stage all see the same earlier outputs, not each other's. A failed step
    stops the workflow once its stage has finished; later stages are not started.
    """
    started = time.perf_counter()
    steps: list[AgentResult] = []
    previous: list[tuple[str, str]] = []

    def emit(stage: int, agent: str, status: str, result: AgentResult | None = None) -> None:
        if on_step is not None:
            on_step(StepEvent(workflow, run_id, stage, len(stages), agent, status, result))  # type: ignore[arg-type]

    async def one(
        stage_no: int, step_no: int, agent: str, seen: tuple[tuple[str, str], ...]
    ) -> AgentResult:
        emit(stage_no, agent, "started")
        result = await call(agent, seen, step_no - 1)
        result = replace(
            result, workflow=workflow, workflow_run=run_id, stage=stage_no, step=step_no
        )
        emit(stage_no, agent, "succeeded" if result.success else "failed", result)
        return result

    step_no = 0
    for stage_no, stage in enumerate(stages, 1):
        seen = tuple(previous)
        coros = [one(stage_no, step_no + i + 1, agent, seen) for i, agent in enumerate(stage)]
        step_no += len(stage)
        results = await asyncio.gather(*coros)
        steps.extend(results)
        failed = [r for r in results if not r.success]
        if failed:
            names = ", ".join(f"'{r.agent_name}'" for r in failed)
            return WorkflowResult(
                workflow_name=workflow,
                steps=steps,
                success=False,
                execution_time_ms=(time.perf_counter() - started) * 1000,
                run_id=run_id,
                error=f"stage {stage_no} failed at {names}: {_first_error(failed[0])}",
                skipped=[agent for later in stages[stage_no:] for agent in later],
            )
        previous.extend((r.agent_name, r.output) for r in results)
    return WorkflowResult(
        workflow_name=workflow,
        steps=steps,
        success=True,
        execution_time_ms=(time.perf_counter() - started) * 1000,
        run_id=run_id,
    )


def _first_error(result: AgentResult) -> str:
    return result.errors[0] if result.errors else "unknown error"
