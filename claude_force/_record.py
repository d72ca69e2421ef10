"""The last step of a call: Prometheus counters and a usage-ledger row, never blocking.

Recording is best-effort: the ledger queues rows for its own writer thread and never raises,
so a call's answer is returned whatever happens to the data folder.
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from pathlib import Path

from ._budget import BudgetTracker
from ._errors import InvalidArgumentError
from ._frozen import quick_init
from ._ledger import Ledger
from ._ledger_row import LedgerRow, RowTemplate, task_hash
from ._memory import AgentMemory
from ._metrics import Metrics
from ._outcomes import NO_USAGE, ZERO_COST, ledger_row
from ._pricing import PriceTable
from ._reports import UsageReportMethods, UsageReports
from ._request import TaskSpec
from ._results import AgentResult
from ._usage import Usage

_log = logging.getLogger("claude_force.ledger")

# What differs between the ledger rows of two cache hits of one agent and model: per hit,
# and (``shared``, for answers too) what is usually equal from one row to the next (bound
# once per run).
_HIT_EACH = ("message_id", "cost_saved_usd", "latency_ms", "task_hash")
_SHARED = ("workflow_run", "workflow_step", "batch", "injection_flags")
# The objects ``hit_result`` puts in every hit: compared by identity first.
_ZERO = ZERO_COST
_NO_USAGE = NO_USAGE
# Likewise for answered calls (what ``success_result`` makes): per answer, then shared.
_ANSWER_EACH = (
    "message_id",
    "request_id",
    "input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "web_search_requests",
    "cost_usd",
    "latency_ms",
    "attempts",
    "task_hash",
)
_counts = operator.attrgetter(*_ANSWER_EACH[2:8])
_all_counts = operator.attrgetter(*(f.name for f in fields(Usage)))
_INT64_END = 2**63
_TEMPLATES_MAX = 1024  # per-agent-and-model templates kept; then they start again

__all__ = ["CallContext", "RecordedMethods", "Recorder"]


@quick_init
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

    @classmethod
    def of(cls, item: TaskSpec, budgets: tuple[BudgetTracker, ...], refresh: bool) -> CallContext:
        """The context of a call outside a workflow, from its task spec."""
        use_memory = item.use_memory
        return cls(
            item.task, budgets, use_cache=item.use_cache, refresh=refresh, use_memory=use_memory
        )

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
        self._hit_rows: dict[tuple[str, str], RowTemplate] = {}
        self._answer_rows: dict[tuple[str, str], RowTemplate] = {}

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger(self.ledger_path, keep_out_of_git=True)
        return self._ledger

    def flush(self) -> None:
        """Write the ledger rows queued so far, if a ledger was opened (blocking)."""
        if self._ledger is not None:
            self._ledger.flush()

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
        if self.tracking and not self._record_answer(result, ctx):
            self._record_row(result, ctx)
        if self.memory is not None and ctx.use_memory:
            self.memory.remember(result, ctx.task)

    def _record_row(self, result: AgentResult, ctx: CallContext) -> None:
        """Queue the ledger row of any result. A count too big for the ledger's 64-bit
        columns (a service's answer says what it likes) is stored as the largest one they
        hold, with a warning: recording never fails a call that was answered."""
        try:
            self.ledger.record(self._row(result, ctx))
        except InvalidArgumentError as exc:
            biggest = _INT64_END - 1
            usage = Usage(*(min(count, biggest) for count in _all_counts(result.usage)))
            clamped = replace(result, usage=usage, attempts=min(result.attempts, biggest))
            _log.warning("%s; the ledger row holds %d instead", exc, biggest)
            self.ledger.record(self._row(clamped, ctx))

    @staticmethod
    def _row(result: AgentResult, ctx: CallContext) -> LedgerRow:
        run, step = ctx.workflow_run, ctx.workflow_step
        return ledger_row(
            result, task=ctx.task, workflow_run=run, workflow_step=step, batch=ctx.batch
        )

    def _record_answer(self, result: AgentResult, ctx: CallContext) -> bool:
        """Queue the ledger row of an answered call (what ``success_result`` makes) as a
        copy of a per-agent-and-model template with its own values set, as :meth:`record_hit`
        does; False for anything else, or a value the general path must check or refuse."""
        usage, cost = result.usage, result.cost
        message_id, request_id = result.message_id, result.request_id
        latency, attempts = result.latency_ms, result.attempts
        run, step = ctx.workflow_run, ctx.workflow_step
        if not (
            result.success
            and type(result.agent_name) is str
            and type(result.model) is str
            and not result.cached
            and result.error is None
            and result.cost_saved is None
            and type(usage) is Usage
            and (cost is None or type(cost) is Decimal)
            and (message_id is None or type(message_id) is str)
            and (request_id is None or type(request_id) is str)
            and type(latency) is float
            and type(attempts) is int
            and 0 <= attempts < _INT64_END
            and (run is None or type(run) is str)
            and (step is None or (type(step) is int and 0 <= step < _INT64_END))
            and type(ctx.batch) is bool
        ):
            return False
        counts = _counts(usage)
        if max(counts) >= _INT64_END:
            return False  # the general path names the column that does not fit
        templates = self._answer_rows
        key = (result.agent_name, result.model)
        template = templates.get(key)
        if template is None:
            # Every other field is the same for each answer the guard above lets through.
            row = ledger_row(result, task=ctx.task, workflow_run=None, workflow_step=None)
            template = RowTemplate(row, _ANSWER_EACH, _SHARED)
            if len(templates) >= _TEMPLATES_MAX:
                templates.clear()
            templates[key] = template
        ledger = self.ledger
        ledger.record_params(
            (
                template,
                ledger.now(),
                message_id,  # then the rest of _ANSWER_EACH, then _SHARED
                request_id,
                *counts,
                None if cost is None else str(cost),
                latency,
                attempts,
                task_hash(ctx.task),
                run,
                step,
                int(ctx.batch),
                ",".join(result.injection_flags) or None,
            )
        )
        return True

    def record_hit(self, result: AgentResult, ctx: CallContext) -> None:
        """``record`` for a response-cache hit (what ``hit_result`` makes), at a fraction of
        its cost: it runs on every hit, so the counters that a hit changes are bumped
        directly and the ledger row is a copy of a per-agent template with eight fields set.
        Anything unusual takes the general path."""
        message_id = result.message_id
        saved = result.cost_saved
        usage, cost = result.usage, result.cost
        if not (
            result.cached
            and result.success
            and (usage is _NO_USAGE or usage == _NO_USAGE)
            and cost is _ZERO
            and result.attempts == 0
            and result.request_id is None
            and result.error is None
            and (message_id is None or type(message_id) is str)
        ):
            self.record(result, ctx)
            return
        if self.metrics is not None:
            self.metrics.observe_hit(
                agent=result.agent_name, model=result.model, latency_s=result.latency_ms / 1000
            )
        if self.tracking:
            ledger = self.ledger
            template = self._hit_rows.get((result.agent_name, result.model))
            if template is None:
                # Every other field is the same for each hit the guard above lets through.
                row = ledger_row(result, task=ctx.task, workflow_run=None, workflow_step=None)
                template = RowTemplate(row, _HIT_EACH, _SHARED)
                if len(self._hit_rows) >= _TEMPLATES_MAX:
                    self._hit_rows.clear()
                self._hit_rows[(result.agent_name, result.model)] = template
            ledger.record_params(
                (
                    template,
                    ledger.now(),
                    message_id,  # then the rest of _HIT_EACH, then _SHARED
                    None if saved is None else str(saved),
                    result.latency_ms,
                    task_hash(ctx.task),
                    ctx.workflow_run,
                    ctx.workflow_step,
                    int(ctx.batch),
                    ",".join(result.injection_flags) or None,
                )
            )
        if self.memory is not None and ctx.use_memory:
            self.memory.remember(result, ctx.task)

    def close(self) -> None:
        """Write pending rows and memory entries; release threads and files; reopens on use."""
        if self.memory is not None:
            self.memory.close()
        ledger, self._ledger = self._ledger, None
        if ledger is not None:
            ledger.close()


class RecordedMethods(UsageReportMethods):
    """What an orchestrator's records offer: the ledger, live metrics and usage reports.

    The class using it sets ``_recorder``, ``ledger_path`` and ``prices``.
    """

    _recorder: Recorder
    ledger_path: Path
    prices: PriceTable

    @property
    def metrics(self) -> Metrics | None:
        """Live Prometheus counters of this orchestrator's calls (None with metrics off)."""
        return self._recorder.metrics

    @property
    def ledger(self) -> Ledger:
        """The usage ledger in the project's data folder (opened on first use)."""
        return self._recorder.ledger

    @property
    def reports(self) -> UsageReports:
        """Reports over the usage ledger (read-only; rows still pending are written first);
        they work on a read-only or missing ledger too."""
        return UsageReports(self.ledger_path, prices=self.prices, open_ledger=self._recorder.opened)
