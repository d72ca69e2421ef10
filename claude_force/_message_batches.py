"""Half price: many calls through Anthropic's Message Batches API, resumable.

:func:`run_message_batches` takes the items of a batch (the same :class:`BatchItem` values,
dicts, :class:`TaskSpec` values or pairs as ``execute_batch``) and yields one
:class:`BatchRecord` per item, the same records the one-call-per-item mode yields:

1. Each item's request is built exactly as a direct call builds it, so its params and its
   response-cache key are the same; a malformed item is a failed record with the same words.
   A cache hit is answered at once and never submitted.
2. The rest go out in batches within the service's limits (100,000 requests or 256 MB of
   JSON per batch). Before a request joins a batch, the budgets reserve its worst case (at
   full price: a bound that cannot undershoot). The first item that could cross a budget
   stops the reading of the input: it and the items after it are not submitted (no record),
   the batches already made are collected, then :class:`BudgetExceeded` is raised.
3. Creating a batch is never blindly repeated, since a create whose answer was lost may have
   made a paid batch. Before the create call, the state file records a *pending* entry (a
   hash of the chunk's ``custom_id`` values, their count, the time). After a failure that
   may have reached the service (a dropped connection, a timeout, a 5xx), and on a later
   run that meets the same chunk, recent batches are listed (``created_at`` at or after the
   pending time, less a minute of clock skew, with the same request count, not already
   recorded) and a match is adopted; only when none matches is the batch created again.
4. Each created batch is written to the state file (atomically, synced) the moment it is
   known: its id and, per request, the ``custom_id``, the item's id and a short hash of its
   cache key. A restarted run with the same state file collects the recorded batches instead
   of submitting the same requests again; an item whose request changed since (another cache
   key) is submitted anew. A recorded batch the service does not know (a 404: deleted, or
   made under another workspace's key) is dropped from the state file, with one warning, and
   its requests are submitted again.
5. The batches are polled with exponential backoff and jitter; ``on_progress`` sees the
   service's request counts summed over them. A failed poll is retried; after
   ``max_poll_failures`` failures in a row the run stops with the error, resumable.
6. Ended batches are read as a stream. A succeeded request becomes a success priced at the
   batch rate, stored in the response cache (a later direct call hits it) and recorded in the
   ledger with ``batch=1``; errored, expired and canceled requests become failed results
   whose error type says which (``batch_errored:<type>``, ``batch_expired``,
   ``batch_canceled``). A batch is marked collected once every result was handed over; a
   stream that breaks off raises :class:`APIError` and leaves the batch to the next run.

Memory: the input is read one item at a time, but every request submitted in this run is
held (its :class:`Request`, a few hundred bytes plus the task text) until its batch is
collected, and a chunk's request bodies (up to 100,000 requests or 256 MB) are held while it
is created. The API key never reaches the state file: it holds ids and hashes only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from . import _outcomes as outcome
from ._aio import off_loop
from ._batch_io import AnyBatchItems, BatchItem, BatchRecord, aiter_items, prepare_item
from ._batch_results import batch_error, succeeded
from ._budget import Budget, BudgetTracker, Reservation, release_all, reserve_all, trackers_for
from ._errors import APIError, BudgetExceeded, InvalidArgumentError
from ._files import FileProblem, read_regular, replace_file, shown
from ._record import CallContext
from ._request import Request, cache_key
from ._results import AgentResult
from ._transport import INVALID_RESPONSE, Sent, expect_answer
from .cache import ResponseCache

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

    from ._orchestrator import AsyncAgentOrchestrator

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_REQUESTS",
    "BatchProgress",
    "BatchesSettings",
    "custom_id_for",
    "run_message_batches",
]

MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1024 * 1024
STATE_VERSION = 1
CLOCK_SKEW = 60.0
"""Seconds a batch's ``created_at`` may read before the local time of its pending entry."""
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_HASHED = re.compile(r"^id-[0-9a-f]{32}$")
_KEY_CHARS = 16  # enough of the cache key to notice an edited request
_STATE_LIMIT = 1 << 30
_BODY_OVERHEAD = len(b'{"requests":[]}')
_log = logging.getLogger("claude_force")


def custom_id_for(item_id: str) -> str:
    """The ``custom_id`` for an item id: itself when the API allows it, else ``id-`` and a
    hash (the API takes only ``[a-zA-Z0-9_-]{1,64}``); the state file maps it back.

    One-to-one: an id that already looks like a hashed form is hashed too, so no id passed
    through unchanged can equal another id's hash.

    >>> custom_id_for("line-7"), custom_id_for("docs/a b.md")
    ('line-7', 'id-9524abbeabfceee71d5014c5a7e82fac')
    """
    if _CUSTOM_ID.match(item_id) and not _HASHED.match(item_id):
        return item_id
    return "id-" + hashlib.sha256(item_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def chunk_digest(custom_ids: Iterable[str]) -> str:
    """What names a chunk in a pending entry: a hash of its ``custom_id`` values in order."""
    digest = hashlib.sha256()
    for custom_id in custom_ids:
        digest.update(custom_id.encode() + b"\n")
    return digest.hexdigest()[:32]


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


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchesSettings:
    """How the Message Batches mode polls and chunks; the defaults suit the real service.

    ``poll_initial`` seconds pass before the second look at the batches, doubling up to
    ``poll_max``. ``on_progress`` gets the service's counts after every look. Tests make the
    limits and the waits small, and inject ``sleep``, ``rand`` and ``wall`` (the epoch clock
    of pending entries).
    """

    POLL_INITIAL: ClassVar[float] = 30.0
    """The default ``poll_initial``, in seconds."""
    POLL_MAX: ClassVar[float] = 600.0
    """The default ``poll_max``, in seconds: ten minutes, the longest wait between looks."""

    poll_initial: float = POLL_INITIAL
    poll_max: float = POLL_MAX
    max_requests: int = MAX_BATCH_REQUESTS
    max_bytes: int = MAX_BATCH_BYTES
    max_poll_failures: int = 10
    on_progress: Callable[[BatchProgress], None] | None = None
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep
    rand: Callable[[], float] = random.random
    wall: Callable[[], float] = time.time

    def check(self) -> None:
        for name in ("max_requests", "max_bytes", "max_poll_failures"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"{name} must be a whole number >= 1, got {value!r}")
        if not 0 < self.poll_initial <= self.poll_max:
            raise InvalidArgumentError(
                f"poll_initial and poll_max must satisfy 0 < poll_initial <= poll_max, "
                f"got {self.poll_initial!r} and {self.poll_max!r}"
            )


@dataclass(slots=True)
class _Pending:
    """An item whose answer will come from a batch, and what turning it into a result needs."""

    item: BatchItem
    task: str
    request: Request
    key: str
    store: ResponseCache | None
    started: float
    reservations: list[tuple[BudgetTracker, Reservation]] = field(default_factory=list)
    batch_id: str = ""


class _State:
    """The state file: batches submitted and, for those not yet collected, their requests;
    and the creates that were under way (pending) when their answer was last awaited."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.batches: dict[str, bool] = {}  # batch id -> collected
        # custom_id -> [item id, cache key prefix, batch id], for batches not yet collected
        self.items: dict[str, list[str]] = {}
        # chunk digest -> [request count, epoch seconds before its create call]
        self.pending: dict[str, list[float]] = {}

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
            state._read(json.loads(raw))
        except (ValueError, RecursionError) as exc:
            raise InvalidArgumentError(
                f"batch state file {shown(path)} is not one this version wrote ({exc}); it "
                "names message batches already paid for, so it is left as it is: move it "
                "aside to start afresh (its batch ids can then be collected by hand)"
            ) from None
        return state

    def _read(self, doc: object) -> None:
        """Take the state from a parsed file, every value checked for its exact type: a
        misread state (``"false"`` taken as true) would skip or repeat paid work."""
        if not isinstance(doc, dict):
            raise ValueError(f"expected a JSON object, got {type(doc).__name__}")
        if doc.get("version") != STATE_VERSION:
            raise ValueError(f"version {doc.get('version')!r}")
        batches, items, pending = doc.get("batches"), doc.get("items"), doc.get("pending", {})
        if not isinstance(batches, list) or not all(
            isinstance(b, dict)
            and isinstance(b.get("id"), str)
            and isinstance(b.get("collected"), bool)
            for b in batches
        ):
            raise ValueError("'batches' must be a list of {id: string, collected: true/false}")
        self.batches = {b["id"]: b["collected"] for b in batches}
        if not isinstance(items, dict) or not all(
            isinstance(e, list) and len(e) == 3 and all(isinstance(v, str) for v in e)
            for e in items.values()
        ):
            raise ValueError("'items' must map custom ids to [item id, key, batch id] strings")
        if any(e[2] not in self.batches for e in items.values()):
            raise ValueError("an item names no recorded batch")
        self.items = items
        if not isinstance(pending, dict) or not all(
            isinstance(e, list) and len(e) == 2 and type(e[0]) is int and type(e[1]) in (int, float)
            for e in pending.values()
        ):
            raise ValueError("'pending' must map digests to [request count, epoch seconds]")
        self.pending = {d: [e[0], float(e[1])] for d, e in pending.items()}

    def recorded(self, custom_id: str, key: str) -> str | None:
        """The uncollected batch holding this very request, or None."""
        entry = self.items.get(custom_id)
        if entry is None or entry[1] != key[:_KEY_CHARS]:
            return None
        return entry[2]

    def add(self, batch_id: str, digest: str, chunk: Iterable[tuple[str, _Pending]]) -> None:
        self.pending.pop(digest, None)
        self.batches[batch_id] = False
        for custom_id, p in chunk:
            self.items[custom_id] = [p.item.id, p.key[:_KEY_CHARS], batch_id]

    def forget(self, batch_id: str) -> int:
        """Drop a batch the service does not know; returns how many requests it held."""
        self.batches.pop(batch_id, None)
        before = len(self.items)
        self.items = {c: e for c, e in self.items.items() if e[2] != batch_id}
        return before - len(self.items)

    def collected(self, batch_id: str) -> None:
        self.batches[batch_id] = True
        self.items = {c: e for c, e in self.items.items() if e[2] != batch_id}

    async def save(self) -> None:
        doc = {
            "version": STATE_VERSION,
            "batches": [{"id": b, "collected": done} for b, done in self.batches.items()],
            "items": self.items,
            "pending": self.pending,
        }
        data = json.dumps(doc, separators=(",", ":")).encode()
        await off_loop(lambda: replace_file(self.path, data, durable=True))


def _batch_params(request: Request) -> dict[str, Any]:
    """``messages.create`` arguments as one params object (sampling inline, not extra_body)."""
    params = request.create_kwargs()
    params.update(params.pop("extra_body", None) or {})
    return params


def _ambiguous(err: APIError) -> bool:
    """Whether a failed create may still have made a batch: no answer, a server error, or a
    2xx whose body was not a batch (a proxy's page)."""
    unreadable = err.error_type == INVALID_RESPONSE
    return unreadable or err.status_code is None or err.status_code >= 500


def _batch_type() -> type[MessageBatch]:
    from anthropic.types.messages import MessageBatch

    return MessageBatch


async def run_message_batches(
    orch: AsyncAgentOrchestrator,
    items: AnyBatchItems,
    *,
    state_path: Path,
    budget: Budget | None = None,
    use_cache: bool = True,
    refresh: bool = False,
    settings: BatchesSettings | None = None,
) -> AsyncGenerator[BatchRecord, None]:
    """Answer ``items`` through the Message Batches API; yields one record per item.

    Cache hits and refused items come first, while the input is read; batch answers follow as
    batches end. ``budget`` applies to the whole run (with the orchestrator's own); a budget
    stop raises :class:`BudgetExceeded` after the last record. See the module docstring for
    resuming with ``state_path``.
    """
    settings = settings or BatchesSettings()
    settings.check()
    state = await asyncio.to_thread(_State.load, Path(state_path))
    budgets = trackers_for(orch.budget, budget)
    run = _Run(orch, state, settings, budgets, use_cache=use_cache, refresh=refresh)
    async for record in run.submit_all(items):
        yield record
    poller = _Poller(settings)
    async for record in run.collect_all(poller, settings.on_progress):
        yield record
    if run.stop is not None:
        raise run.stop


@dataclass(slots=True)
class _Poller:
    settings: BatchesSettings
    delay: float = 0.0
    failures: int = 0

    async def wait(self) -> None:
        """Sleep the next backoff step: doubling up to the cap, up to 25% shorter by jitter."""
        s = self.settings
        self.delay = s.poll_initial if self.delay == 0.0 else min(self.delay * 2.0, s.poll_max)
        await s.sleep(self.delay * (1.0 - 0.25 * s.rand()))


class _Run:
    def __init__(
        self,
        orch: AsyncAgentOrchestrator,
        state: _State,
        settings: BatchesSettings,
        budgets: tuple[BudgetTracker, ...],
        *,
        use_cache: bool,
        refresh: bool,
    ) -> None:
        self.orch = orch
        self.state = state
        self.settings = settings
        self.budgets = budgets
        self.use_cache = use_cache
        self.refresh = refresh
        self.stop: BudgetExceeded | None = None
        self.pending: dict[str, _Pending] = {}  # custom_id -> item waiting for its batch
        self.waiting: dict[str, None] = {}  # batches holding items of this run, in order
        self.views: dict[str, MessageBatch] = {}  # the latest look at each of them
        self.gone: dict[str, APIError] = {}  # batches the service answered 404 for

    def _call(
        self,
        fn: Callable[[AsyncAnthropic, float], Awaitable[Any]],
        before_retry: Callable[[APIError], Awaitable[Any]] | None = None,
    ) -> Awaitable[Any]:
        return self.orch._transport.call(fn, before_retry=before_retry)

    def _record(self, p: _Pending, result: AgentResult, *, batch: bool) -> BatchRecord:
        # Batch requests are built without memory, and thousands of offline answers would
        # crowd out an agent's memory: batches neither read nor write it.
        self.orch._recorder.record(result, CallContext(p.task, batch=batch, use_memory=False))
        return BatchRecord.from_result(p.item.id, result)

    # -- reading the input and submitting ----------------------------------------------------

    async def submit_all(self, items: AnyBatchItems) -> AsyncIterator[BatchRecord]:
        cache = await self.orch._cache.aget() if self.use_cache else None
        seen: set[str] = set()
        custom_ids: set[str] = set()
        chunk: list[tuple[str, _Pending]] = []
        size = _BODY_OVERHEAD
        source = aiter_items(items)
        try:
            async for item in source:
                prepared = prepare_item(self.orch._requests.build, item, seen)
                if isinstance(prepared, BatchRecord):
                    yield prepared
                    continue
                custom_id = custom_id_for(item.id)
                if custom_id in custom_ids:  # two ids hashed alike: practically never
                    yield BatchRecord._rejected(
                        item,
                        f"{item.where}: id {item.id!r} maps to the custom_id of an "
                        "earlier item; use another id",
                    )
                    continue
                custom_ids.add(custom_id)
                assert item.spec is not None
                key = cache_key(prepared)
                store = cache if cache is not None and not cache.is_excluded(item.agent) else None
                p = _Pending(item, item.spec.task, prepared, key, store, time.perf_counter())
                hit = await self._hit(p)
                if hit is not None:
                    yield hit
                    continue
                batch_id = self.state.recorded(custom_id, key)
                if batch_id is not None and not await self._known(batch_id):
                    batch_id = None  # gone from the service: submitted again below
                if batch_id is not None:  # submitted by an earlier run: collect, never resubmit
                    self._wait_for(batch_id, custom_id, p)
                    continue
                try:
                    # No waiting for settlements: this run's own items settle only once
                    # their batch ends, after everything is submitted.
                    p.reservations = await reserve_all(
                        self.budgets,
                        prepared,
                        self.orch.prices,
                        self.orch._transport.count_tokens,
                        wait=False,
                    )
                except BudgetExceeded as exc:  # this item and the rest stay unsent
                    self.stop = exc
                    break
                params = _batch_params(prepared)
                line = len(json.dumps({"custom_id": custom_id, "params": params}))
                if chunk and (
                    len(chunk) >= self.settings.max_requests
                    or size + line + 1 > self.settings.max_bytes
                ):
                    async for record in self._submit(chunk):
                        yield record
                    chunk, size = [], _BODY_OVERHEAD
                chunk.append((custom_id, p))
                size += line + 1
        finally:
            await source.aclose()
        if chunk:
            async for record in self._submit(chunk):
                yield record

    async def _hit(self, p: _Pending) -> BatchRecord | None:
        """The cached answer's record, when the cache may be read and holds one."""
        if p.store is None or self.refresh:
            return None
        hit = await p.store.aget(p.key)
        if hit is None:
            return None
        result = outcome.hit_result(p.item.agent, p.request, hit, p.started)
        return None if result is None else self._record(p, result, batch=False)

    async def _known(self, batch_id: str) -> bool:
        """Whether the service knows a batch an earlier run recorded (one look per batch).

        A 404 means the batch is gone for this key (deleted, or another workspace's): it is
        dropped from the state file with one warning, and its requests count as unsent. Any
        other failure leaves it to the polls.
        """
        if batch_id in self.views or batch_id in self.waiting:
            return True
        if batch_id not in self.state.batches:
            return False
        try:
            self.views[batch_id] = await self._retrieve(batch_id)
        except APIError as err:
            if err.status_code != 404:
                return True
            await self._drop(batch_id, err, "are submitted again")
            return False
        return True

    async def _drop(self, batch_id: str, err: APIError, then: str) -> None:
        dropped = self.state.forget(batch_id)
        await self.state.save()
        _log.warning(
            "message batch %s, recorded in %s, is unknown to the service (%s): deleted, or "
            "made with another workspace's key; dropped it from the state file, and its %d "
            "uncollected requests %s",
            batch_id,
            shown(self.state.path),
            err,
            dropped,
            then,
        )

    def _unanswered(self, batch_id: str, err: APIError) -> list[BatchRecord]:
        """Failed records for the items of a batch that vanished while this run waited."""
        gone = APIError(
            f"message batch {batch_id} is gone from the service ({err}); run again with "
            "--retry-failed to submit these requests anew",
            status_code=err.status_code,
            error_type="batch_gone",
        )
        records = []
        for custom_id, p in [(c, p) for c, p in self.pending.items() if p.batch_id == batch_id]:
            del self.pending[custom_id]
            release_all(p.reservations)
            result = outcome.failure_result(p.item.agent, p.request, gone, p.started)
            records.append(self._record(p, result, batch=True))
        return records

    def _wait_for(self, batch_id: str, custom_id: str, pending: _Pending) -> None:
        pending.batch_id = batch_id
        self.pending[custom_id] = pending
        self.waiting[batch_id] = None

    async def _submit(self, chunk: list[tuple[str, _Pending]]) -> AsyncIterator[BatchRecord]:
        digest = chunk_digest(c for c, _ in chunk)
        try:
            batch = await self._adopt_or_create(chunk, digest)
        except APIError as err:
            for _, p in chunk:
                release_all(p.reservations)
            if _ambiguous(err):
                raise
            refused = APIError(
                f"the Message Batches API refused a batch of {len(chunk)} requests: {err}",
                status_code=err.status_code,
                request_id=err.request_id,
                error_type=err.error_type,
                attempts=err.attempts,
            )
            self.state.pending.pop(digest, None)
            await self.state.save()
            for _, p in chunk:
                result = outcome.failure_result(p.item.agent, p.request, refused, p.started)
                yield self._record(p, result, batch=True)
            return
        except BaseException:
            for _, p in chunk:
                release_all(p.reservations)
            raise
        self.state.add(batch.id, digest, chunk)
        await self.state.save()
        for custom_id, p in chunk:
            self._wait_for(batch.id, custom_id, p)

    async def _adopt_or_create(
        self, chunk: list[tuple[str, _Pending]], digest: str
    ) -> MessageBatch:
        """The chunk's batch: one an earlier attempt made (found by listing), else a new one.

        Raises :class:`APIError`; an ambiguous one (the batch may exist) keeps the pending
        entry, so the next run looks for it before creating another.
        """
        count = len(chunk)
        earlier = self.state.pending.get(digest)
        if earlier is not None:  # a run that died with this create under way
            found = await self._find(count, earlier[1])
            if found is not None:
                return found
        since = self.settings.wall()
        self.state.pending[digest] = [count, since]
        await self.state.save()  # on disk before the service can hear of the batch
        requests = [{"custom_id": c, "params": _batch_params(p.request)} for c, p in chunk]
        unsure = False

        async def create(client: AsyncAnthropic, timeout: float) -> MessageBatch:
            made = await client.messages.batches.create(requests=requests, timeout=timeout)  # type: ignore[arg-type]
            return expect_answer(made, _batch_type())

        async def look(err: APIError) -> MessageBatch | None:
            nonlocal unsure
            if not _ambiguous(err):
                return None
            unsure = True
            return await self._find(count, since)

        try:
            batch: MessageBatch = await self._call(create, look)
            return batch
        except APIError as err:
            if not (unsure or _ambiguous(err)):
                raise
            cause = err
        # The last attempt (or an earlier one) may have made the batch: one more look.
        try:
            found = await self._find(count, since)
        except APIError as err:
            found, cause = None, err
        if found is not None:
            return found
        raise APIError(
            f"creating a message batch of {count} requests failed ({cause}); the service may "
            f"have made it: {shown(self.state.path)} records the attempt, and running the same "
            "command again looks for that batch before creating another",
            status_code=cause.status_code,
            request_id=cause.request_id,
            error_type=cause.error_type,
            attempts=cause.attempts,
        ) from cause

    async def _find(self, count: int, since: float) -> MessageBatch | None:
        """The oldest batch created since ``since`` with ``count`` requests, not recorded."""

        async def scan(client: AsyncAnthropic, timeout: float) -> list[MessageBatch]:
            found: list[MessageBatch] = []
            async for view in client.messages.batches.list(limit=100, timeout=timeout):
                if view.created_at.timestamp() < since - CLOCK_SKEW:
                    break  # newest first: the rest are older still
                if view.id not in self.state.batches and _total(view) == count:
                    found.append(view)
            return found

        matches: list[MessageBatch] = await self._call(scan)
        if not matches:
            return None
        if len(matches) > 1:
            _log.warning(
                "%d recent message batches of %d requests could be the one a failed create "
                "made; adopting the oldest, %s",
                len(matches),
                count,
                matches[-1].id,
            )
        return matches[-1]

    # -- polling and collecting ----------------------------------------------------------

    async def collect_all(
        self, poller: _Poller, on_progress: Callable[[BatchProgress], None] | None
    ) -> AsyncIterator[BatchRecord]:
        while self.waiting:
            views = await self._poll(poller)
            self.views.update((v.id, v) for v in views)
            if on_progress is not None:
                on_progress(_progress(list(self.views.values())))
            for view in views:
                if view.processing_status == "ended":
                    async for record in self._collect(view.id):
                        yield record
            for batch_id in [b for b in self.waiting if b in self.gone]:
                for record in self._unanswered(batch_id, self.gone[batch_id]):
                    yield record
                del self.waiting[batch_id]
            if self.waiting:
                await poller.wait()

    async def _poll(self, poller: _Poller) -> list[MessageBatch]:
        views: list[MessageBatch] = []
        for batch_id in list(self.waiting):
            try:
                views.append(await self._retrieve(batch_id))
                poller.failures = 0
            except APIError as err:
                if err.status_code == 404:  # deleted while we waited: no answers will come
                    self.gone[batch_id] = err
                    self.views.pop(batch_id, None)
                    await self._drop(batch_id, err, "fail now; --retry-failed resubmits them")
                    continue
                poller.failures += 1
                if poller.failures >= self.settings.max_poll_failures:
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
            view = await client.messages.batches.retrieve(batch_id, timeout=timeout)
            return expect_answer(view, _batch_type())

        view: MessageBatch = await self._call(retrieve)
        return view

    async def _collect(self, batch_id: str) -> AsyncIterator[BatchRecord]:
        async def open_results(client: AsyncAnthropic, timeout: float) -> Any:
            return await client.messages.batches.results(batch_id, timeout=timeout)

        stream = await self._call(open_results)
        lines = aiter(stream)
        try:
            while (line := await self._next_line(lines, batch_id)) is not None:
                pending = self.pending.pop(line.custom_id, None)
                if pending is None:
                    continue  # not asked for in this run (an earlier run handed it over)
                yield await self._result(pending, line, batch_id)
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
            yield BatchRecord.from_result(
                p.item.id, outcome.failure_result(p.item.agent, p.request, err, p.started)
            )
        # Every result was handed over: the batch never needs reading again.
        del self.waiting[batch_id]
        self.state.collected(batch_id)
        await self.state.save()

    async def _next_line(
        self, lines: AsyncIterator[MessageBatchIndividualResponse], batch_id: str
    ) -> MessageBatchIndividualResponse | None:
        """The next result of the stream; a stream that breaks off is an :class:`APIError`."""
        try:
            with self.orch._transport.reading(f"reading the results of message batch {batch_id}"):
                return await anext(lines, None)
        except APIError as broken:
            raise APIError(
                f"{broken}; the batch stays recorded in {shown(self.state.path)}: run the same "
                "command again to collect the rest (records already written are kept)",
                error_type=broken.error_type,
            ) from None

    async def _result(
        self, p: _Pending, line: MessageBatchIndividualResponse, batch_id: str
    ) -> BatchRecord:
        res = line.result
        read = succeeded(res, batch_id) if res.type == "succeeded" else None
        if isinstance(read, tuple):
            answer, usage = read
            cost = self.orch.prices.cost(answer.model, usage, batch=True)
            for tracker, reservation in p.reservations:
                tracker.commit(reservation, usage, cost)
            sent = Sent(answer, 1, None, usage)
            result = outcome.success_result(p.item.agent, p.request, sent, p.started, usage, cost)
            if p.store is not None:
                await p.store.aset(p.key, outcome.cache_value(sent, usage, cost))
        else:
            release_all(p.reservations)
            err = read if read is not None else batch_error(res, batch_id)
            result = outcome.failure_result(p.item.agent, p.request, err, p.started)
        result = replace(result, extra={"batch_id": batch_id})
        return self._record(p, result, batch=True)


def _total(view: MessageBatch) -> int:
    c = view.request_counts
    return c.processing + c.succeeded + c.errored + c.canceled + c.expired


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
