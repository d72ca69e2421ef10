"""Workflows: stages run in order, the steps of one stage concurrently.

A step sees the task and earlier outputs, each in a delimited block naming its agent (see
``_request.earlier_output_block``): every earlier stage's (``handoff: all``) or only the
previous stage's (``handoff: previous``). After a failed stage the run stops (``on_failure:
stop``) or goes on with the failure handed to later steps as data (``continue``).

Resume: every successful step is kept (``_runs.RunStore``) with the cache key of its request.
``resume=True`` reuses a kept step of the latest run of the same workflow and task when the
step's request is identical: same agent definition, overrides, task and earlier outputs. A
changed definition therefore reuses exactly the steps it did not change, and never an output
made from other inputs. Reused steps make no call and write no ledger row.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from ._config import StepSpec, WorkflowSpec
from ._request import EarlierOutput, Request, RequestBuilder, TaskSpec, cache_key
from ._results import AgentResult, WorkflowResult
from ._runs import KeptStep, RunStore

__all__ = ["SendStep", "StepEvent", "WorkflowRunner"]

SendStep = Callable[[str, Request, str, int], Awaitable[AgentResult]]
"""(agent, request, run id, 0-based step index) -> the call's result."""


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


class WorkflowRunner:
    """One run of a workflow: builds each step's request, sends it (or reuses a kept one)."""

    def __init__(
        self,
        spec: WorkflowSpec,
        task: str,
        requests: RequestBuilder,
        send: SendStep,
        *,
        runs: RunStore | None = None,
        recorded: Callable[[], object] = lambda: None,
    ) -> None:
        self.spec = spec
        self.recorded = recorded  # writes the ledger rows queued so far (blocking)
        self.task = task
        self.requests = requests
        self.send = send
        self.runs = runs
        self.run_id = uuid.uuid4().hex[:12]
        self._kept: dict[int, KeptStep] = {}
        self._on_step: Callable[[StepEvent], None] | None = None

    async def run(
        self, *, resume: bool = False, on_step: Callable[[StepEvent], None] | None = None
    ) -> WorkflowResult:
        """Run every stage under the workflow's hand-off and failure policies."""
        self._on_step = on_step
        self.requests.check_agents([step.agent for stage in self.spec.stages for step in stage])
        started = time.perf_counter()
        runs, name, task = self.runs, self.spec.name, self.task
        if runs is not None:
            self._kept = await asyncio.to_thread(runs.latest, name, task) if resume else {}
            await asyncio.to_thread(runs.start, name, task)
        steps: list[AgentResult] = []
        earlier: list[EarlierOutput] = []
        last_stage: list[EarlierOutput] = []
        error, skipped = None, []
        index = 0
        for stage_no, stage in enumerate(self.spec.stages, 1):
            seen = tuple(last_stage if self.spec.handoff == "previous" else earlier)
            calls = [self._step(stage_no, index + i, s, seen) for i, s in enumerate(stage)]
            index += len(stage)
            results = await asyncio.gather(*calls)
            steps.extend(results)
            last_stage = [_handed(r) for r in results]
            earlier.extend(last_stage)
            failed = [r for r in results if not r.success]
            if failed and self.spec.on_failure == "stop":
                names = ", ".join(f"'{r.agent_name}'" for r in failed)
                error = f"stage {stage_no} failed at {names}: {_first_error(failed[0])}"
                skipped = [s.agent for later in self.spec.stages[stage_no:] for s in later]
                break
        failures = [r for r in steps if not r.success]
        if failures and error is None:
            error = "; ".join(
                f"step {r.step} ('{r.agent_name}') failed: {_first_error(r)}" for r in failures
            )
            error += "; later stages ran (on_failure: continue)"
        if runs is not None and not failures:
            await asyncio.to_thread(runs.finish, name, task)
        reused = [r.step for r in steps if r.reused and r.step is not None]
        return WorkflowResult(
            workflow_name=name,
            steps=steps,
            success=not failures,
            execution_time_ms=(time.perf_counter() - started) * 1000,
            run_id=self.run_id,
            error=error,
            skipped=skipped,
            reused=reused,
            resumed_from=next(iter(self._kept.values())).run_id if reused else None,
        )

    async def _step(
        self, stage_no: int, index: int, step: StepSpec, seen: Sequence[EarlierOutput]
    ) -> AgentResult:
        item = TaskSpec(step.agent, self.task, step.model, step.max_tokens, step.temperature)
        (request,) = await self.requests.abuild([item], previous=seen)
        self._emit(stage_no, step.agent, "started")
        key = cache_key(request)
        kept = self._kept.get(index)
        if kept is not None and kept.request_key == key and kept.result.agent_name == step.agent:
            result = replace(kept.result, injection_flags=request.injection_flags)
        else:
            result = await self.send(step.agent, request, self.run_id, index)
        result = replace(
            result,
            workflow=self.spec.name,
            workflow_run=self.run_id,
            stage=stage_no,
            step=index + 1,
        )
        if result.success and self.runs is not None:
            keep = self.runs.keep
            # Its ledger row first: a resumed run reuses a kept step without a new row.
            await asyncio.to_thread(self.recorded)
            await asyncio.to_thread(
                keep, self.spec.name, self.task, self.run_id, index, key, result
            )
        self._emit(stage_no, step.agent, "succeeded" if result.success else "failed", result)
        return result

    def _emit(
        self,
        stage: int,
        agent: str,
        status: Literal["started", "succeeded", "failed"],
        result: AgentResult | None = None,
    ) -> None:
        if self._on_step is not None:
            stages = len(self.spec.stages)
            self._on_step(
                StepEvent(self.spec.name, self.run_id, stage, stages, agent, status, result)
            )


def _handed(result: AgentResult) -> EarlierOutput:
    """What later steps see of ``result``: its output, or its error marked as a failure."""
    if result.success:
        return EarlierOutput(result.agent_name, result.output, result.step)
    return EarlierOutput(result.agent_name, _first_error(result), result.step, failed=True)


def _first_error(result: AgentResult) -> str:
    return result.errors[0] if result.errors else "unknown error"
