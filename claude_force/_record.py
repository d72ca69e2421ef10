"""The last step of a call: Prometheus counters and a usage-ledger row, never blocking.

Recording is best-effort: the ledger queues rows for its own writer thread and never raises,
so a call's answer is returned whatever happens to the data folder.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ._budget import BudgetTracker
from ._ledger import Ledger
from ._memory import AgentMemory
from ._metrics import Metrics
from ._outcomes import ledger_row
from ._results import AgentResult

__all__ = ["CallContext", "Recorder"]


@dataclass(frozen=True, slots=True)
class CallContext:
    """Where a call belongs: its task (for the ledger hash and memory), workflow, budgets,
    cache and memory use; ``batch`` when it was answered through the Message Batches API."""

    task: str
    budgets: tuple[BudgetTracker, ...] = ()
    workflow_run: str | None = None
    workflow_step: int | None = None
    use_cache: bool = True
    refresh: bool = False
    batch: bool = False
    use_memory: bool = True

    def with_memory(self, use_memory: bool) -> CallContext:
        return self if use_memory else replace(self, use_memory=False)


class Recorder:
    """Counts each completed call, writes its ledger row (opened on first use) and hands
    it to agent memory (both written by background threads)."""

    def __init__(
        self,
        ledger_path: Path,
        *,
        tracking: bool,
        metrics: bool,
        memory: AgentMemory | None = None,
    ) -> None:
        self.ledger_path = ledger_path
        self.memory = memory
        self.tracking = tracking
        self.metrics = Metrics() if metrics else None
        self._ledger: Ledger | None = None

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger(self.ledger_path, keep_out_of_git=True)
        return self._ledger

    def opened(self) -> Ledger | None:
        """The ledger if this recorder opened it, else None (reports flush it first)."""
        return self._ledger

    def record(self, result: AgentResult, ctx: CallContext) -> None:
        """Counters and a queued ledger row for one completed call; no disk I/O here."""
        if self.metrics is not None:
            self.metrics.observe_call(
                agent=result.agent_name,
                model=result.model,
                outcome="success" if result.success else "error",
                usage=result.usage,
                cost=result.cost,
                latency_s=result.latency_ms / 1000,
                cached=result.cached,
                retries=max(0, result.attempts - 1),
            )
        if self.tracking:
            row = ledger_row(
                result,
                task=ctx.task,
                workflow_run=ctx.workflow_run,
                workflow_step=ctx.workflow_step,
                batch=ctx.batch,
            )
            self.ledger.record(row)
        if self.memory is not None and ctx.use_memory:
            self.memory.remember(result, ctx.task)

    def close(self) -> None:
        """Write pending rows and memory entries; release threads and files; reopens on use."""
        if self.memory is not None:
            self.memory.close()
        ledger, self._ledger = self._ledger, None
        if ledger is not None:
            ledger.close()
