"""Batches: many calls from a stream of items, results in completion order, memory flat.

:func:`run_batch` pulls items only as fast as calls finish: at most ``2 × concurrency`` items
are in memory (built, waiting or in flight) at once, however long the input. Every call takes
the orchestrator's one call path (cache, budgets, admission, transport, record), so the
concurrency gate and the rate-limit buckets govern; ``concurrency`` only caps them.
:func:`run_batch_file` ties it to files: a JSONL input, an append-only results file, resume.

A budget stop is not a failure of the line: a line refused by the budget gets no record, so a
rerun (with a larger budget) sends it. The first refusal stops pulling new items; calls already
in flight finish and are recorded, then :class:`BudgetExceeded` is raised.

``mode="batches"`` hands the same items to the Message Batches engine (``_message_batches``),
which yields the same records at half price; the file side (resume, the results file, the
summary) is shared by both modes.
"""

from __future__ import annotations

import asyncio
from collections.abc import (
    AsyncIterator,
    Callable,
    Iterator,
)
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast

from ._aio import off_loop
from ._batch_io import (
    AnyBatchItems,
    BatchInput,
    BatchItem,
    BatchItems,
    BatchRecord,
    ResultsFile,
    aiter_items,
    count_input_lines,
    max_line_bytes,
    open_input,
    prepare_item,
    read_input,
    scan_results,
)
from ._budget import Budget, trackers_for
from ._errors import BudgetExceeded, InvalidArgumentError
from ._message_batches import BatchesSettings, run_message_batches
from ._record import CallContext
from ._request import Request

if TYPE_CHECKING:
    from ._ledger import Ledger
    from ._orchestrator import AsyncAgentOrchestrator

__all__ = [
    "BatchInput",
    "BatchItems",
    "BatchMethods",
    "BatchMode",
    "BatchRecord",
    "BatchSummary",
    "run_batch",
    "run_batch_file",
    "start_batch",
    "state_path_for",
]

_Outcome: TypeAlias = "BatchRecord | BudgetExceeded"


def _limit(concurrency: int | None, max_concurrent: int) -> int:
    if concurrency is None:
        return max_concurrent
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InvalidArgumentError(
            f"concurrency must be a whole number of at least 1, or None, got {concurrency!r}"
        )
    return min(concurrency, max_concurrent)


async def run_batch(
    orch: AsyncAgentOrchestrator,
    items: AnyBatchItems,
    *,
    concurrency: int | None = None,
    budget: Budget | None = None,
    use_cache: bool = True,
    refresh: bool = False,
) -> AsyncIterator[BatchRecord]:
    """Run ``items``; yield one :class:`BatchRecord` per item as each finishes.

    A malformed item (bad fields, unknown agent, a repeated id) is yielded at once as a failed
    record and the rest still run. Raises :class:`BudgetExceeded` after the last record when
    ``budget`` (or the orchestrator's) stopped the batch; the items after the stop are not
    pulled from ``items``.
    """
    limit = _limit(concurrency, orch.options.max_concurrent)
    gate = asyncio.Semaphore(limit)
    budgets = trackers_for(orch.budget, budget)
    seen: set[str] = set()
    stop: list[BudgetExceeded] = []

    async def call(item: BatchItem, request: Request) -> _Outcome:
        assert item.spec is not None
        async with gate:
            if stop:  # queued behind the gate when the budget ran out: stays unsent
                return stop[0]
            # Batch lines stand alone: agent memory is neither read nor written for them.
            ctx = CallContext(item.spec.task, budgets, None, None, use_cache, refresh)
            ctx = ctx.with_memory(False)
            try:
                result = await orch._run(item.spec.agent, request, ctx)
            except BudgetExceeded as exc:
                stop.append(exc)
                return exc
        return BatchRecord.from_result(item.id, result)

    source = aiter_items(items)
    pending: set[asyncio.Task[_Outcome]] = set()
    exhausted = False
    try:
        while True:
            while not exhausted and not stop and len(pending) < 2 * limit:
                item = await anext(source, None)
                if item is None:
                    exhausted = True
                    break
                prepared = prepare_item(orch._requests.build, item, seen)
                if isinstance(prepared, BatchRecord):
                    yield prepared
                else:
                    pending.add(asyncio.create_task(call(item, prepared)))
            if not pending:
                break
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            # Every finished task is looked at before an error (a usage error that every
            # call would hit, such as a bad cache secret) ends the batch.
            errors = [exc for task in done if (exc := task.exception()) is not None]
            for task in done:
                outcome = None if task.exception() else task.result()
                if isinstance(outcome, BatchRecord):
                    yield outcome
            if errors:
                raise errors[0]
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await source.aclose()
    if stop:
        raise stop[0]


BatchMode: TypeAlias = Literal["messages", "batches"]
"""``messages``: one Messages API call per item; ``batches``: the Message Batches API."""


def start_batch(
    orch: AsyncAgentOrchestrator,
    items: AnyBatchItems,
    *,
    mode: BatchMode,
    concurrency: int | None,
    budget: Budget | None,
    use_cache: bool,
    refresh: bool,
    state_path: str | Path | None,
    batches: BatchesSettings | None,
) -> AsyncIterator[BatchRecord]:
    """The records of ``items`` run in ``mode``; both modes yield the same kind of record."""
    if mode == "messages":
        return run_batch(
            orch,
            items,
            concurrency=concurrency,
            budget=budget,
            use_cache=use_cache,
            refresh=refresh,
        )
    if mode != "batches":
        raise InvalidArgumentError(f"mode must be 'messages' or 'batches', got {mode!r}")
    if state_path is None:
        raise InvalidArgumentError(
            "mode='batches' needs state_path: the file that keeps the ids of the message "
            "batches made, so a rerun collects them instead of paying for them again"
        )
    return run_message_batches(
        orch,
        items,
        state_path=Path(state_path),
        budget=budget,
        use_cache=use_cache,
        refresh=refresh,
        settings=batches,
    )


class BatchMethods:
    """``execute_batch``, mixed into :class:`AsyncAgentOrchestrator` so its page stays one."""

    def execute_batch(
        self,
        items: BatchItems,
        *,
        mode: BatchMode = "messages",
        concurrency: int | None = None,
        budget: Budget | None = None,
        use_cache: bool = True,
        refresh: bool = False,
        state_path: str | Path | None = None,
        batches: BatchesSettings | None = None,
    ) -> AsyncIterator[BatchRecord]:
        """Run many calls, yielding a :class:`BatchRecord` per item in completion order.

        ``items`` may be a stream (an iterator, a generator, an async iterable): only about
        ``2 * concurrency`` of them are taken ahead of the results. Each item is a dict like a
        line of a batch file (``agent``, ``task``, optional ``id``, ``model``, ``max_tokens``,
        ``temperature``), a :class:`TaskSpec` or an ``(agent, task)`` pair; without an ``id``
        the 1-based position is the id. A malformed item becomes a failed record and the
        rest still run. ``concurrency`` caps the calls in flight below ``max_concurrent``;
        admission (rate limits, overload) may hold them lower. ``budget`` applies to the
        whole batch (with the orchestrator's own): the first request that could cross it
        stops the batch; the calls in flight finish, then :class:`BudgetExceeded` is raised.

        ``mode="batches"`` sends the items through the Message Batches API at half price
        (answers within 24 hours; ``concurrency`` does not apply). It needs ``state_path``,
        where the batch ids are kept so that a rerun collects instead of resubmitting;
        ``batches`` tunes polling and chunk limits (see ``_message_batches``).
        """
        return start_batch(
            cast("AsyncAgentOrchestrator", self),
            items,
            mode=mode,
            concurrency=concurrency,
            budget=budget,
            use_cache=use_cache,
            refresh=refresh,
            state_path=state_path,
            batches=batches,
        )


# -- files -----------------------------------------------------------------------------------


@dataclass(slots=True)
class BatchSummary:
    """Counts of a batch run; ``total == succeeded + failed + skipped + unsent``.

    ``failed`` includes ``malformed`` lines. ``skipped`` are lines whose id the results file
    already held (successful, or failed without ``retry_failed``); ``skipped_failed`` of them
    had failed. ``unsent`` lines were not sent because the budget stopped the run (``stopped``
    says why); a rerun sends them. ``cost`` adds the priced records; ``unpriced`` counts the
    others. ``found_succeeded`` / ``found_failed``: ids the results file held at the start.
    ``expected``: the ``total`` the input comes to, counted before the run when it is a
    regular file (a progress bar's total); None for a pipe, a FIFO or standard input.
    """

    output: Path
    succeeded: int = 0
    failed: int = 0
    malformed: int = 0
    skipped: int = 0
    skipped_failed: int = 0
    unsent: int = 0
    cached: int = 0
    cost: Decimal = Decimal(0)
    unpriced: int = 0
    found_succeeded: int = 0
    found_failed: int = 0
    stopped: str | None = None
    expected: int | None = None

    @property
    def total(self) -> int:
        return self.succeeded + self.failed + self.skipped + self.unsent

    @property
    def done(self) -> int:
        """Lines dealt with so far: recorded or skipped."""
        return self.succeeded + self.failed + self.skipped

    @property
    def complete(self) -> bool:
        """Every line of the input has a successful record."""
        return self.failed == 0 and self.unsent == 0 and self.skipped_failed == 0

    def add(self, record: BatchRecord) -> None:
        if record.success:
            self.succeeded += 1
        else:
            self.failed += 1
            self.malformed += record.malformed
        self.cached += record.cached
        if record.cost is None:
            self.unpriced += 1
        else:
            self.cost += record.cost

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary: counts, ``cost`` as a decimal string, ``stopped`` or null.

        ``complete`` is what the CLI's exit status says (0 only when true); ``skipped_failed``
        counts the skipped lines whose earlier record failed, which keep the run incomplete.
        """
        return {
            "total": self.total,
            "complete": self.complete,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "malformed": self.malformed,
            "skipped": self.skipped,
            "skipped_failed": self.skipped_failed,
            "unsent": self.unsent,
            "cached": self.cached,
            "cost": str(self.cost),
            "unpriced": self.unpriced,
            "stopped": self.stopped,
            "output": str(self.output),
        }


def state_path_for(output_path: str | Path) -> Path:
    """Where ``mode="batches"`` keeps its batch ids: ``RESULTS.jsonl.batches.json``."""
    path = Path(output_path)
    return path.with_name(path.name + ".batches.json")


async def run_batch_file(
    orch: AsyncAgentOrchestrator,
    input_path: str | Path,
    output_path: str | Path,
    *,
    retry_failed: bool = False,
    concurrency: int | None = None,
    budget: Budget | None = None,
    use_cache: bool = True,
    refresh: bool = False,
    on_progress: Callable[[BatchSummary], None] | None = None,
    mode: BatchMode = "messages",
    batches: BatchesSettings | None = None,
) -> BatchSummary:
    """Run the JSONL ``input_path``, appending each record to ``output_path`` as it finishes.

    ``input_path`` is read once, a line at a time, so it may be a pipe or a FIFO; ``-`` is
    standard input.

    Both modes write the same records and resume the same way. In ``mode="batches"`` the
    batch ids are kept in :func:`state_path_for` ``(output_path)``, so a rerun collects the
    batches made before instead of submitting their lines again.

    Ids that already have a successful record in ``output_path`` are skipped; failed ones are
    skipped too unless ``retry_failed``. ``on_progress`` is called once before the first line
    and after each line. A budget stop returns normally with ``stopped`` and ``unsent`` set.
    Cancellation (Ctrl-C) propagates once the calls in flight are cancelled; every record
    finished before it is in the file.
    """
    with open_input(input_path) as handle:
        results = ResultsFile(output_path)
        try:
            found = scan_results(output_path)
            limit = max_line_bytes(orch._requests.max_task_chars)
            summary = BatchSummary(
                Path(output_path),
                found_succeeded=len(found.succeeded),
                found_failed=len(found.failed),
                expected=await asyncio.to_thread(count_input_lines, input_path, max_line=limit),
            )
            records = _Records(results, summary, on_progress, orch._recorder.opened)
            skip = found.succeeded if retry_failed else found.succeeded | found.failed
            lines = records.unfinished(read_input(handle, max_line=limit), skip, found.failed)
            try:
                batch = start_batch(
                    orch,
                    lines,
                    mode=mode,
                    concurrency=concurrency,
                    budget=budget,
                    use_cache=use_cache,
                    refresh=refresh,
                    state_path=state_path_for(output_path),
                    batches=batches,
                )
                async for record in batch:
                    await records.add(record)
            except BudgetExceeded as exc:
                records.stop(exc, lines)
        finally:
            await off_loop(results.close)
    return records.summary


class _Records:
    """Where a file batch's records go: the results file, the summary, the progress callback."""

    def __init__(
        self,
        results: ResultsFile,
        summary: BatchSummary,
        on_progress: Callable[[BatchSummary], None] | None,
        ledger: Callable[[], Ledger | None] = lambda: None,
    ) -> None:
        self.results = results
        self._ledger = ledger
        self.summary = summary
        self._report = on_progress or (lambda _summary: None)
        self._pulled = 0

    def unfinished(
        self, items: Iterator[BatchItem], skip: frozenset[str], failed: frozenset[str]
    ) -> Iterator[BatchItem]:
        """The items still to run; those with a record to keep are counted as skipped."""
        self._report(self.summary)
        for item in items:
            if item.id in skip:
                self.summary.skipped += 1
                self.summary.skipped_failed += item.id in failed
                self._report(self.summary)
                continue
            self._pulled += 1
            yield item

    async def add(self, record: BatchRecord) -> None:
        # The call's ledger row is written before its record: a rerun skips the ids that
        # have a record, so a row still queued when the process is killed would be lost.
        ledger = self._ledger()
        if ledger is not None:
            await off_loop(ledger.flush)
        self.results.append(record)
        self.summary.add(record)
        self._report(self.summary)
        if self.results.sync_due:
            await off_loop(self.results.sync)

    def stop(self, exc: BudgetExceeded, rest: Iterator[BatchItem]) -> None:
        """A budget stop: what was taken but not recorded and what was never taken is unsent."""
        for _ in rest:  # counted as it is read (skips noted as such)
            pass
        summary = self.summary
        summary.stopped = str(exc)
        summary.unsent = self._pulled - summary.succeeded - summary.failed
        self._report(summary)
