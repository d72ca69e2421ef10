"""The Message Batches API of the simulator: create, retrieve, list, results, cancel.

A batch is answered lazily: nothing runs until someone looks at it (retrieve, list, results or
cancel) after its processing time has passed on the simulator's clock, so tests move the clock
instead of sleeping. ``delay`` is the time a whole batch takes; request ``i`` of ``n`` finishes at
``created + delay * (i + 1) / n``. A batch still running 24 hours after creation ends with its
unfinished requests ``expired``; a cancelled one ends at the next look with them ``canceled``.
Each finished request gets the answer a direct ``/v1/messages`` call would get (``answer``), or
the fault the plan gives it: ``Fault.status(...)`` makes it ``errored``, ``Fault.reply(text)``
answers with that text.

The store returns plain values (status and JSON, or the JSONL lines of the results); the
simulator turns them into HTTP. It is used only on the server thread, except the counters.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from .._errors import InvalidArgumentError
from ._faults import Fault, FaultPlan
from ._wire import check_messages_body, error_body, new_id

__all__ = ["BATCHES_PATH", "BatchReply", "BatchStore", "check_batch_fault"]

BATCHES_PATH = "/v1/messages/batches"
MAX_REQUESTS = 100_000
EXPIRY_SECONDS = 24 * 3600.0
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_DEFAULT_LIMIT, _MAX_LIMIT = 20, 1000
_ROUTES = frozenset({("GET", ()), ("GET", ("results",)), ("POST", ("cancel",))})

#: Answers one request's params given an optional reply text: the Message JSON, or the
#: problem that makes the request fail.
Answer = Callable[[Mapping[str, Any], str | None], "dict[str, Any] | str"]
Status = Literal["in_progress", "canceling", "ended"]


@dataclass(frozen=True, slots=True)
class BatchReply:
    """What to send: ``status`` with ``payload`` (JSON), or the results as JSONL ``lines``.

    An error (status >= 400) carries ``{"error_type": ..., "message": ...}`` as its payload;
    the simulator wraps it in the API's error JSON with the request's id.
    """

    status: int
    payload: Mapping[str, Any] | None = None
    lines: tuple[bytes, ...] | None = None


@dataclass(slots=True)
class _Batch:
    id: str
    requests: list[tuple[str, dict[str, Any]]]
    created: float  # the simulator's clock
    created_wall: float
    delay: float
    status: Status = "in_progress"
    cancel_wall: float | None = None
    ended_wall: float | None = None
    results: list[bytes] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def _stamp(wall: float | None) -> str | None:
    if wall is None:
        return None
    return datetime.fromtimestamp(wall, timezone.utc).isoformat().replace("+00:00", "Z")


def check_batch_fault(fault: Fault | None) -> Fault | None:
    """Batch requests take ``Fault.status`` (errored) or ``Fault.reply``; not resets or hangs."""
    if fault is not None and (
        not isinstance(fault, Fault) or fault.kind not in ("status", "reply")
    ):
        raise InvalidArgumentError(
            f"a batch request fault must be Fault.status(...) (an errored result), "
            f"Fault.reply(text) or None, got {fault!r}; batch requests cannot reset or hang"
        )
    return fault


class BatchStore:
    """The batches one simulator holds, and the counters tests read."""

    def __init__(
        self,
        *,
        answer: Answer,
        clock: Callable[[], float],
        wall: Callable[[], float],
        delay: float,
        faults: FaultPlan,
    ) -> None:
        self._answer = answer
        self._clock = clock
        self._wall = wall
        self.delay = delay
        self._faults = faults
        self._batches: dict[str, _Batch] = {}  # in creation order
        self._lock = threading.Lock()
        self._created = 0
        self._submitted = 0

    @property
    def created(self) -> int:
        with self._lock:
            return self._created

    @property
    def submitted(self) -> int:
        with self._lock:
            return self._submitted

    def handle(
        self, method: str, path: str, query: Mapping[str, str], body: Any, base_url: str
    ) -> BatchReply | None:
        """The reply to a request under ``/v1/messages/batches``; None when no route matches."""
        tail = path[len(BATCHES_PATH) :].strip("/")
        parts = tail.split("/") if tail else []
        if method == "POST" and not parts:
            return self._create(body, base_url)
        if method == "GET" and not parts:
            return self._list(query, base_url)
        if len(parts) not in (1, 2):
            return None
        batch = self._batches.get(parts[0])
        if batch is None:
            if (method, tuple(parts[1:])) in _ROUTES:
                return _error(404, "not_found_error", f"no message batch with id {parts[0]!r}")
            return None
        if method == "GET" and len(parts) == 1:
            return BatchReply(200, self._view(batch, base_url))
        if method == "GET" and parts[1] == "results":
            return self._results(batch)
        if method == "POST" and parts[1] == "cancel":
            return self._cancel(batch, base_url)
        return None

    # -- endpoints -------------------------------------------------------------------------

    def _create(self, body: Any, base_url: str) -> BatchReply:
        problem = _check_create(body)
        if problem is not None:
            return _error(400, "invalid_request_error", problem)
        requests = [(r["custom_id"], r["params"]) for r in body["requests"]]
        batch = _Batch(new_id("msgbatch_"), requests, self._clock(), self._wall(), self.delay)
        self._batches[batch.id] = batch
        with self._lock:
            self._created += 1
            self._submitted += len(requests)
        # Never ended on creation, as on the service: even a zero delay ends at the next look.
        return BatchReply(200, self._view(batch, base_url, advance=False))

    def _list(self, query: Mapping[str, str], base_url: str) -> BatchReply:
        try:
            limit = int(query.get("limit", _DEFAULT_LIMIT))
        except ValueError:
            limit = 0
        if not 1 <= limit <= _MAX_LIMIT:
            return _error(
                400,
                "invalid_request_error",
                f"limit: must be 1 to {_MAX_LIMIT}, got {query.get('limit')!r}",
            )
        newest_first = list(reversed(self._batches))
        after, before = query.get("after_id"), query.get("before_id")
        for cursor in (after, before):
            if cursor is not None and cursor not in self._batches:
                return _error(404, "not_found_error", f"no message batch with id {cursor!r}")
        if after is not None:
            rest = newest_first[newest_first.index(after) + 1 :]
            page, has_more = rest[:limit], len(rest) > limit
        elif before is not None:
            rest = newest_first[: newest_first.index(before)]
            page, has_more = rest[-limit:], len(rest) > limit
        else:
            page, has_more = newest_first[:limit], len(newest_first) > limit
        data = [self._view(self._batches[i], base_url) for i in page]
        return BatchReply(
            200,
            {
                "data": data,
                "has_more": has_more,
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            },
        )

    def _results(self, batch: _Batch) -> BatchReply:
        self._advance(batch)
        if batch.status != "ended":
            return _error(
                400,
                "invalid_request_error",
                f"message batch {batch.id} is still {batch.status}; its results are available "
                "once processing_status is 'ended'",
            )
        return BatchReply(200, lines=tuple(batch.results))

    def _cancel(self, batch: _Batch, base_url: str) -> BatchReply:
        self._advance(batch)
        if batch.status == "ended":
            return _error(
                409, "conflict_error", f"message batch {batch.id} has ended; it cannot be canceled"
            )
        if batch.status == "in_progress":
            batch.status = "canceling"
            batch.cancel_wall = self._wall()
        return BatchReply(200, self._view(batch, base_url, advance=False))

    # -- processing ------------------------------------------------------------------------

    def _view(self, batch: _Batch, base_url: str, *, advance: bool = True) -> dict[str, Any]:
        if advance:
            self._advance(batch)
        counts = batch.counts or {"processing": len(batch.requests)}
        ended = batch.status == "ended"
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": batch.status,
            "request_counts": {
                name: counts.get(name, 0)
                for name in ("processing", "succeeded", "errored", "canceled", "expired")
            },
            "created_at": _stamp(batch.created_wall),
            "expires_at": _stamp(batch.created_wall + EXPIRY_SECONDS),
            "ended_at": _stamp(batch.ended_wall),
            "cancel_initiated_at": _stamp(batch.cancel_wall),
            "archived_at": None,
            "results_url": f"{base_url}{BATCHES_PATH}/{batch.id}/results" if ended else None,
        }

    def _advance(self, batch: _Batch) -> None:
        """End ``batch`` if its time has come: done, expired, or cancelled."""
        if batch.status == "ended":
            return
        elapsed = self._clock() - batch.created
        if batch.status == "in_progress" and elapsed < min(batch.delay, EXPIRY_SECONDS):
            return
        # Request i of n is done once delay * (i + 1) / n has passed; the rest are cut short.
        cut = "canceled" if batch.status == "canceling" else "expired"
        n = len(batch.requests)
        counts = dict.fromkeys(("succeeded", "errored", "canceled", "expired"), 0)
        for i, (custom_id, params) in enumerate(batch.requests):
            done = batch.delay <= 0 or elapsed >= batch.delay * (i + 1) / n
            result = self._process(params) if done else {"type": cut}
            counts[result["type"]] += 1
            line = {"custom_id": custom_id, "result": result}
            batch.results.append(json.dumps(line).encode() + b"\n")
        batch.counts = counts
        batch.status = "ended"
        batch.ended_wall = self._wall()
        batch.requests = []  # the results now stand for them

    def _process(self, params: Mapping[str, Any]) -> dict[str, Any]:
        fault = self._faults.next()
        if fault is not None and fault.kind == "status":
            error = error_body(fault.error_type, fault.error_message(), new_id("req_"))
            return {"type": "errored", "error": error}
        message = self._answer(params, fault.text if fault is not None else None)
        if isinstance(message, str):
            error = error_body("invalid_request_error", message, new_id("req_"))
            return {"type": "errored", "error": error}
        return {"type": "succeeded", "message": message}


def _error(status: int, error_type: str, message: str) -> BatchReply:
    return BatchReply(status, {"error_type": error_type, "message": message})


def _check_create(body: Any) -> str | None:
    """The problem with a batch-create body, or None; params are checked as /v1/messages does."""
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
        return (
            'request body must be a JSON object {"requests": [{"custom_id": ..., "params": ...}]}'
        )
    requests = body["requests"]
    if not 1 <= len(requests) <= MAX_REQUESTS:
        return f"requests: must hold 1 to {MAX_REQUESTS:,} requests, got {len(requests):,}"
    seen: set[str] = set()
    for i, item in enumerate(requests):
        if not isinstance(item, dict) or set(item) != {"custom_id", "params"}:
            return f"requests.{i}: must be an object with exactly custom_id and params"
        custom_id = item["custom_id"]
        if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
            return f"requests.{i}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$, got {custom_id!r}"
        if custom_id in seen:
            return f"requests.{i}.custom_id: {custom_id!r} is used twice; custom_id must be unique"
        seen.add(custom_id)
        if not isinstance(item["params"], dict):
            return f"requests.{i}.params: must be an object of /v1/messages parameters"
        problem = check_messages_body(item["params"])
        if problem is not None:
            return f"requests.{i}.params.{problem}"
    return None
