"""Half price: many calls through Anthropic's Message Batches API, resumable.

:func:`run_message_batches` takes :class:`BatchItem` values (an id, an agent, a task) and
yields ``(id, AgentResult)`` pairs as answers become known:

1. Each item's request is built exactly as a direct call builds it, so its params and its
   response-cache key are the same. A cache hit is answered at once and never submitted.
2. The rest go out in batches within the service's limits (100,000 requests or 256 MB of
   JSON per batch). Before a batch is created, the orchestrator's budget reserves each
   request's worst case (at full price: a bound that cannot undershoot); an item that could
   cross it is yielded as a failed budget result and not submitted.
3. Each created batch is written to the state file (atomically, synced) before anything else
   happens: its id and, per request, the ``custom_id``, the item's id and a short hash of its
   cache key. A restarted run with the same state file collects the recorded batches instead
   of submitting the same requests again; an item whose request changed since (another cache
   key) is submitted anew.
4. The batches are polled with exponential backoff and jitter; ``on_progress`` sees the
   service's request counts summed over them. A failed poll is retried; after
   ``max_poll_failures`` failures in a row the run stops with the error, resumable.
5. Ended batches are read as a stream. A succeeded request becomes a success priced at the
   batch rate, stored in the response cache (a later direct call hits it) and recorded in the
   ledger with ``batch=1``; errored, expired and canceled requests become failed results
   whose error type says which (``batch_errored:<type>``, ``batch_expired``,
   ``batch_canceled``). A batch is marked collected once every result was handed over.

The API key never reaches the state file: it holds ids and hashes only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _outcomes as outcome
from ._aio import off_loop
from ._budget import BudgetTracker, Reservation, release_all, reserve_all
from ._errors import APIError, BudgetExceeded, InvalidArgumentError, UsageError
from ._files import FileProblem, read_regular, replace_file, shown
from ._record import CallContext
from ._request import Request, TaskSpec, cache_key
from ._results import AgentResult
from ._transport import Sent
from ._usage import Usage
from .cache import ResponseCache

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

    from ._orchestrator import AsyncAgentOrchestrator

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_REQUESTS",
    "BatchItem",
    "BatchProgress",
    "custom_id_for",
    "run_message_batches",
]

MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1024 * 1024
STATE_VERSION = 1
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_KEY_CHARS = 16  # enough of the cache key to notice an edited request
_STATE_LIMIT = 1 << 30
_BODY_OVERHEAD = len(b'{"requests":[]}')


def custom_id_for(item_id: str) -> str:
    """The ``custom_id`` for an item id: itself when the API allows it, else ``id-`` and a
    hash (the API takes only ``[a-zA-Z0-9_-]{1,64}``); the state file maps it back.

    >>> custom_id_for("line-7"), custom_id_for("docs/a b.md")
    ('line-7', 'id-9524abbeabfceee71d5014c5a7e82fac')
    """
    if _CUSTOM_ID.match(item_id):
        return item_id
    return "id-" + hashlib.sha256(item_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One call of a batch: the caller's ``id`` (any string, unique in the run), an agent and
    a task, and optional per-call overrides as in ``execute_agent``."""

    id: str
    agent: str
    task: str
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """The service's request counts, summed over the batches this run waits for."""

    batches: int
    ended_batches: int
    processing: int
    succeeded: int
    errored: int
    canceled: int
    expired: int


@dataclass(slots=True)
class _Pending:
    """An item whose answer will come from a batch, and what turning it into a result needs."""

    item: BatchItem
    request: Request
    key: str
    store: ResponseCache | None
    started: float
    reservations: list[tuple[BudgetTracker, Reservation]] = field(default_factory=list)
    batch_id: str = ""


class _State:
    """The state file: batches submitted and, for those not yet collected, their requests."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.batches: dict[str, bool] = {}  # batch id -> collected
        # custom_id -> [item id, cache key prefix, batch id], for batches not yet collected
        self.items: dict[str, list[str]] = {}

    @classmethod
    def load(cls, path: Path) -> _State:
        state = cls(path)
        try:
            raw, _ = read_regular(path, limit=_STATE_LIMIT)
        except FileProblem as exc:
            if exc.kind == "missing":
                return state
            raise InvalidArgumentError(f"batch state file {exc.summary}; {exc.fix}") from None
        try:
            doc = json.loads(raw)
            if doc.get("version") != STATE_VERSION:
                raise ValueError(f"version {doc.get('version')!r}")
            state.batches = {str(b["id"]): bool(b["collected"]) for b in doc["batches"]}
            state.items = {str(c): [str(v) for v in e] for c, e in doc["items"].items()}
            if any(len(e) != 3 or e[2] not in state.batches for e in state.items.values()):
                raise ValueError("an item names no recorded batch")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InvalidArgumentError(
                f"batch state file {shown(path)} is not one this version wrote ({exc}); it "
                "names message batches already paid for, so it is left as it is: move it "
                "aside to start afresh (its batch ids can then be collected by hand)"
            ) from None
        return state

    def recorded(self, custom_id: str, key: str) -> str | None:
        """The uncollected batch holding this very request, or None."""
        entry = self.items.get(custom_id)
        if entry is None or entry[1] != key[:_KEY_CHARS]:
            return None
        return entry[2]

    def add(self, batch_id: str, chunk: Iterable[tuple[str, _Pending]]) -> None:
        self.batches[batch_id] = False
        for custom_id, p in chunk:
            self.items[custom_id] = [p.item.id, p.key[:_KEY_CHARS], batch_id]

    def collected(self, batch_id: str) -> None:
        self.batches[batch_id] = True
        self.items = {c: e for c, e in self.items.items() if e[2] != batch_id}

    async def save(self) -> None:
        doc = {
            "version": STATE_VERSION,
            "batches": [{"id": b, "collected": done} for b, done in self.batches.items()],
            "items": self.items,
        }
        data = json.dumps(doc, separators=(",", ":")).encode()
        await off_loop(lambda: replace_file(self.path, data, durable=True))


def _batch_params(request: Request) -> dict[str, Any]:
    """``messages.create`` arguments as one params object (sampling inline, not extra_body)."""
    params = request.create_kwargs()
    params.update(params.pop("extra_body", None) or {})
    return params


async def run_message_batches(
    orch: AsyncAgentOrchestrator,
    items: Iterable[BatchItem],
    *,
    state_path: Path,
    poll_initial: float = 30.0,
    poll_max: float = 600.0,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    on_progress: Callable[[BatchProgress], None] | None = None,
    max_requests: int = MAX_BATCH_REQUESTS,
    max_bytes: int = MAX_BATCH_BYTES,
    max_poll_failures: int = 10,
    rand: Callable[[], float] = random.random,
) -> AsyncGenerator[tuple[str, AgentResult], None]:
    """Answer ``items`` through the Message Batches API; yields ``(item id, result)``.

    Cache hits, refused items (budget, invalid agent or task, repeated id) and failed batch
    creations come first, while the input is read; batch answers follow as batches end. See
    the module docstring for resuming with ``state_path``.
    """
    for name, value in (("max_requests", max_requests), ("max_bytes", max_bytes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{name} must be a whole number >= 1, got {value!r}")
    if not 0 < poll_initial <= poll_max:
        raise InvalidArgumentError(
            f"poll_initial and poll_max must satisfy 0 < poll_initial <= poll_max, "
            f"got {poll_initial!r} and {poll_max!r}"
        )
    state = await asyncio.to_thread(_State.load, Path(state_path))
    run = _Run(orch, state, max_requests=max_requests, max_bytes=max_bytes)
    async for pair in run.submit_all(items):
        yield pair
    poller = _Poller(poll_initial, poll_max, sleep, rand, max_poll_failures)
    async for pair in run.collect_all(poller, on_progress):
        yield pair


@dataclass(slots=True)
class _Poller:
    initial: float
    cap: float
    sleep: Callable[[float], Awaitable[object]]
    rand: Callable[[], float]
    max_failures: int
    delay: float = 0.0
    failures: int = 0

    async def wait(self) -> None:
        """Sleep the next backoff step: doubling up to the cap, up to 25% shorter by jitter."""
        self.delay = self.initial if self.delay == 0.0 else min(self.delay * 2.0, self.cap)
        await self.sleep(self.delay * (1.0 - 0.25 * self.rand()))


class _Run:
    def __init__(
        self, orch: AsyncAgentOrchestrator, state: _State, *, max_requests: int, max_bytes: int
    ) -> None:
        self.orch = orch
        self.state = state
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.budgets = tuple(b for b in (orch.budget,) if b is not None)
        self.pending: dict[str, _Pending] = {}  # custom_id -> item waiting for its batch
        self.waiting: dict[str, None] = {}  # batches holding items of this run, in order
        self.views: dict[str, MessageBatch] = {}  # the latest look at each of them

    def _call(self, fn: Callable[[AsyncAnthropic, float], Awaitable[Any]]) -> Awaitable[Any]:
        return self.orch._transport.call(fn)

    def _record(self, item: BatchItem, result: AgentResult, *, batch: bool) -> None:
        # Batch requests are built without memory, and thousands of offline answers would
        # crowd out an agent's memory: batches neither read nor write it.
        self.orch._recorder.record(result, CallContext(item.task, batch=batch, use_memory=False))

    # -- reading the input and submitting ----------------------------------------------------

    async def submit_all(
        self, items: Iterable[BatchItem]
    ) -> AsyncIterator[tuple[str, AgentResult]]:
        cache = await self.orch._cache.aget()
        seen: set[str] = set()
        chunk: list[tuple[str, _Pending]] = []
        size = _BODY_OVERHEAD
        for item in items:
            custom_id = custom_id_for(item.id)
            if custom_id in seen:
                yield (
                    item.id,
                    _refused(
                        item,
                        f"id {item.id!r} is used twice in this run; ids "
                        "must be unique (its first use runs)",
                    ),
                )
                continue
            seen.add(custom_id)
            try:
                request = self.orch._requests.build(
                    TaskSpec(item.agent, item.task, item.model, item.max_tokens, item.temperature)
                )
            except UsageError as exc:
                yield item.id, _refused(item, str(exc))
                continue
            key = cache_key(request)
            store = cache if cache is not None and not cache.is_excluded(item.agent) else None
            started = time.perf_counter()
            if store is not None:
                hit = await store.aget(key)
                result = None
                if hit is not None:
                    result = outcome.hit_result(item.agent, request, hit, started)
                if result is not None:
                    self._record(item, result, batch=False)
                    yield item.id, result
                    continue
            pending = _Pending(item, request, key, store, started)
            batch_id = self.state.recorded(custom_id, key)
            if batch_id is not None:  # submitted by an earlier run: collect, never resubmit
                self._wait_for(batch_id, custom_id, pending)
                continue
            try:
                pending.reservations = await reserve_all(
                    self.budgets, request, self.orch.prices, self.orch._transport.count_tokens
                )
            except BudgetExceeded as exc:
                yield item.id, outcome.budget_result(item.agent, request, exc)
                continue
            line = len(json.dumps({"custom_id": custom_id, "params": _batch_params(request)}))
            if chunk and (len(chunk) >= self.max_requests or size + line + 1 > self.max_bytes):
                async for pair in self._submit(chunk):
                    yield pair
                chunk, size = [], _BODY_OVERHEAD
            chunk.append((custom_id, pending))
            size += line + 1
        if chunk:
            async for pair in self._submit(chunk):
                yield pair

    def _wait_for(self, batch_id: str, custom_id: str, pending: _Pending) -> None:
        pending.batch_id = batch_id
        self.pending[custom_id] = pending
        self.waiting[batch_id] = None

    async def _submit(
        self, chunk: list[tuple[str, _Pending]]
    ) -> AsyncIterator[tuple[str, AgentResult]]:
        requests = [{"custom_id": c, "params": _batch_params(p.request)} for c, p in chunk]

        async def create(client: AsyncAnthropic, timeout: float) -> MessageBatch:
            return await client.messages.batches.create(requests=requests, timeout=timeout)  # type: ignore[arg-type]

        try:
            batch: MessageBatch = await self._call(create)
        except APIError as err:
            refused = APIError(
                f"the Message Batches API refused a batch of {len(chunk)} requests: {err}",
                status_code=err.status_code,
                request_id=err.request_id,
                error_type=err.error_type,
                attempts=err.attempts,
            )
            for _, p in chunk:
                release_all(p.reservations)
                result = outcome.failure_result(p.item.agent, p.request, refused, p.started)
                self._record(p.item, result, batch=True)
                yield p.item.id, result
            return
        except BaseException:
            for _, p in chunk:
                release_all(p.reservations)
            raise
        # Recorded before anything else: from here on a restart collects this batch.
        self.state.add(batch.id, chunk)
        await self.state.save()
        for custom_id, p in chunk:
            self._wait_for(batch.id, custom_id, p)

    # -- polling and collecting ----------------------------------------------------------

    async def collect_all(
        self, poller: _Poller, on_progress: Callable[[BatchProgress], None] | None
    ) -> AsyncIterator[tuple[str, AgentResult]]:
        while self.waiting:
            views = await self._poll(poller)
            self.views.update((v.id, v) for v in views)
            if on_progress is not None:
                on_progress(_progress(list(self.views.values())))
            for view in views:
                if view.processing_status == "ended":
                    async for pair in self._collect(view.id):
                        yield pair
            if self.waiting:
                await poller.wait()

    async def _poll(self, poller: _Poller) -> list[MessageBatch]:
        views: list[MessageBatch] = []
        for batch_id in list(self.waiting):
            try:
                views.append(await self._retrieve(batch_id))
                poller.failures = 0
            except APIError as err:
                poller.failures += 1
                if poller.failures >= poller.max_failures:
                    raise APIError(
                        f"polling message batch {batch_id} failed {poller.failures} times in a "
                        f"row ({err}); the batches are recorded in {shown(self.state.path)}: "
                        "run again to collect them",
                        status_code=err.status_code,
                        request_id=err.request_id,
                        error_type=err.error_type,
                        attempts=err.attempts,
                    ) from err
        return views

    async def _retrieve(self, batch_id: str) -> MessageBatch:
        async def retrieve(client: AsyncAnthropic, timeout: float) -> MessageBatch:
            return await client.messages.batches.retrieve(batch_id, timeout=timeout)

        view: MessageBatch = await self._call(retrieve)
        return view

    async def _collect(self, batch_id: str) -> AsyncIterator[tuple[str, AgentResult]]:
        async def open_results(client: AsyncAnthropic, timeout: float) -> Any:
            return await client.messages.batches.results(batch_id, timeout=timeout)

        stream = await self._call(open_results)
        try:
            async for line in stream:
                pending = self.pending.pop(line.custom_id, None)
                if pending is None:
                    continue  # not asked for in this run (an earlier run handed it over)
                yield pending.item.id, await self._result(pending, line, batch_id)
        finally:
            await stream.close()
        missing = [(c, p) for c, p in self.pending.items() if p.batch_id == batch_id]
        for custom_id, p in missing:  # the service owes these an answer: say so
            del self.pending[custom_id]
            release_all(p.reservations)
            err = APIError(
                f"message batch {batch_id} ended without a result for {custom_id!r}; run "
                "again to submit it anew",
                error_type="batch_missing_result",
            )
            result = outcome.failure_result(p.item.agent, p.request, err, p.started)
            yield p.item.id, result
        # Every result was handed over: the batch never needs reading again.
        del self.waiting[batch_id]
        self.state.collected(batch_id)
        await self.state.save()

    async def _result(
        self, p: _Pending, line: MessageBatchIndividualResponse, batch_id: str
    ) -> AgentResult:
        res = line.result
        if res.type == "succeeded":
            message = res.message
            usage = Usage.from_api(message.usage)
            cost = self.orch.prices.cost(message.model, usage, batch=True)
            for tracker, reservation in p.reservations:
                tracker.commit(reservation, usage, cost)
            sent = Sent(message, 1, None)
            result = outcome.success_result(p.item.agent, p.request, sent, p.started, usage, cost)
            if p.store is not None:
                await p.store.aset(p.key, outcome.cache_value(sent, usage, cost))
        else:
            release_all(p.reservations)
            err = _batch_error(res, batch_id)
            result = outcome.failure_result(p.item.agent, p.request, err, p.started)
        result = replace(result, extra={"batch_id": batch_id})
        self._record(p.item, result, batch=True)
        return result


def _batch_error(res: Any, batch_id: str) -> APIError:
    """The error of a request that did not succeed in ``batch_id``; resubmitted by a rerun."""
    if res.type == "errored":
        error = res.error.error
        return APIError(
            f"the request failed in message batch {batch_id}: {error.type}: {error.message}",
            request_id=res.error.request_id,
            error_type=f"batch_errored:{error.type}",
        )
    if res.type == "expired":
        return APIError(
            f"message batch {batch_id} did not reach this request within 24 hours (expired); "
            "run again to submit it anew",
            error_type="batch_expired",
        )
    return APIError(
        f"message batch {batch_id} was canceled before this request ran; run again to submit "
        "it anew",
        error_type="batch_canceled",
    )


def _refused(item: BatchItem, reason: str) -> AgentResult:
    """An item that was not sent because it is not a valid call."""
    return AgentResult(agent_name=item.agent, success=False, output="", errors=[reason])


def _progress(views: list[MessageBatch]) -> BatchProgress:
    counts = [v.request_counts for v in views]
    return BatchProgress(
        batches=len(views),
        ended_batches=sum(v.processing_status == "ended" for v in views),
        processing=sum(c.processing for c in counts),
        succeeded=sum(c.succeeded for c in counts),
        errored=sum(c.errored for c in counts),
        canceled=sum(c.canceled for c in counts),
        expired=sum(c.expired for c in counts),
    )
