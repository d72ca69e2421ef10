"""An Anthropic-compatible Messages API server on loopback, for tests, demos and benchmarks.

The server is aiohttp on its own event loop in a daemon thread, so one ``Simulator`` serves
sync tests, async tests (whose loop it never blocks) and the CLI alike::

    with Simulator() as sim:
        client = anthropic.Anthropic(base_url=sim.base_url, api_key="test-key", max_retries=0)

It answers ``POST /v1/messages`` with deterministic text and realistic usage (prompt caching
included, see ``_tokens``), ``POST /v1/messages/count_tokens`` (the same count as the usage of
a message), and injects faults on demand into either. With ``rate_limits=RateLimits(...)`` it
enforces per-minute token buckets per model class as the service does (see ``_ratelimit``).
The Message Batches API (``/v1/messages/batches``) answers each request as ``/v1/messages``
would, after ``batch_delay`` seconds of its clock (see ``_batches``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web

from .._errors import InvalidArgumentError
from ._batches import BATCHES_PATH, BatchReply, BatchStore, check_batch_fault
from ._faults import Fault, FaultPlan
from ._prompt_cache import CacheUsage, PromptCache
from ._ratelimit import PLAUSIBLE_LIMITS, RateLimits, Rejection, ServerRateLimiter
from ._text import Reply, render_reply, reply_digest, reply_words
from ._tokens import (
    Breakpoint,
    PromptShape,
    eligible_breakpoints,
    min_cacheable_tokens,
    prompt_shape,
)
from ._wire import (
    check_count_tokens_body,
    check_messages_body,
    error_body,
    message_body,
    new_id,
)

__all__ = ["RecordedRequest", "Simulator", "serve"]

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
REDACTED = "<redacted>"
_SECRET_HEADERS = frozenset({"x-api-key", "authorization"})
_MAX_BODY_BYTES = 32 * 1024 * 1024  # the real API's request size limit
_THREAD_TIMEOUT = 10.0


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the simulator received it; credential headers read ``<redacted>``."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]


def _json_response(
    status: int, payload: Mapping[str, Any], headers: dict[str, str]
) -> web.Response:
    return web.Response(
        body=json.dumps(payload).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _error_response(
    status: int,
    error_type: str,
    message: str,
    request_id: str,
    extra_headers: Mapping[str, str] | None = None,
) -> web.Response:
    headers = {"request-id": request_id, **(extra_headers or {})}
    return _json_response(status, error_body(error_type, message, request_id), headers)


def _has_api_key(headers: Mapping[str, str]) -> bool:
    if headers.get("x-api-key", "").strip():
        return True
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


def _decode(raw: bytes) -> Any:
    """The JSON value of a body, or None when it is empty or not JSON (checks report it)."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _check_number(name: str, value: object, *, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidArgumentError(f"{name} must be a finite number, got {value!r}")
    if value < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum:g}, got {value!r}")
    return float(value)


class Simulator:
    """A local Anthropic-compatible server with latency, fault injection and recording.

    Use it as ``with Simulator() as sim:`` or ``async with Simulator() as sim:``, or call
    :meth:`start` and :meth:`stop`. ``clock`` drives prompt-cache expiry and the rate-limit
    buckets, so tests can move time forward without sleeping (``latency_ms`` is real time).
    ``rate_limits`` (off by default) makes the server answer 429 when a request does not fit.
    ``batch_delay`` is how long, on ``clock``, a message batch takes (0: it has ended by the
    first look after creation).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: float = 0.0,
        per_token_latency_ms: float = 0.0,
        require_api_key: bool = True,
        min_cacheable_tokens: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rate_limits: RateLimits | None = None,
        batch_delay: float = 0.0,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise InvalidArgumentError(
                f"host must be a non-empty address like '127.0.0.1', got {host!r}"
            )
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidArgumentError(f"port must be 0 (any free port) to 65535, got {port!r}")
        if min_cacheable_tokens is not None and (
            isinstance(min_cacheable_tokens, bool)
            or not isinstance(min_cacheable_tokens, int)
            or min_cacheable_tokens < 1
        ):
            raise InvalidArgumentError(
                f"min_cacheable_tokens must be an integer >= 1 or None (per-model table), "
                f"got {min_cacheable_tokens!r}"
            )
        self._host = host
        self._requested_port = port
        self._latency_ms = _check_number("latency_ms", latency_ms, minimum=0.0)
        self._per_token_ms = _check_number(
            "per_token_latency_ms", per_token_latency_ms, minimum=0.0
        )
        self._require_api_key = require_api_key
        self._min_cacheable = min_cacheable_tokens
        self._faults = FaultPlan()
        self._count_faults = FaultPlan()
        self._cache = PromptCache(clock=clock)
        self._clock = clock
        self._wall = wall_clock
        # Without limits to enforce, the headers still describe buckets the service's way.
        self._plausible = ServerRateLimiter(
            PLAUSIBLE_LIMITS, clock=clock, wall=wall_clock, enforce=False
        )
        self._limiter: ServerRateLimiter | None = None
        self.set_rate_limits(rate_limits)
        # One lock guards the recordings and counters that the test thread reads.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._in_flight = 0
        self._peak = 0
        self._lifecycle = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._handlers: set[asyncio.Task[Any]] = set()  # touched only on the server thread
        self._release = asyncio.Event()  # set (and replaced) on the server thread
        self._port = 0
        self._batch_faults = FaultPlan()
        self._batch_api_faults = FaultPlan()
        self._batches = BatchStore(
            answer=self._batch_answer,
            clock=clock,
            wall=wall_clock,
            delay=_check_number("batch_delay", batch_delay, minimum=0.0),
            faults=self._batch_faults,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Simulator:
        """Bind and serve in a background thread; returns once the port accepts connections."""
        with self._lifecycle:
            if self._thread is not None:
                return self
            loop = asyncio.new_event_loop()
            ready: concurrent.futures.Future[int] = concurrent.futures.Future()
            thread = threading.Thread(
                target=self._run, args=(loop, ready), name="claude-force-simulator", daemon=True
            )
            thread.start()
            try:
                self._port = ready.result(timeout=_THREAD_TIMEOUT)
            except OSError as exc:
                thread.join(_THREAD_TIMEOUT)
                raise InvalidArgumentError(
                    f"the simulator cannot listen on {self._host}:{self._requested_port} "
                    f"({exc.strerror or exc}); choose another port, or port=0 for a free one"
                ) from exc
            self._loop, self._thread = loop, thread
            return self

    def stop(self) -> None:
        """Stop serving; requests still in progress (hung ones too) are cancelled. Idempotent."""
        with self._lifecycle:
            thread, loop, event = self._thread, self._loop, self._stop_requested
            self._thread = self._loop = self._stop_requested = None
            if thread is None or loop is None:
                return
            if event is not None and not loop.is_closed():
                # RuntimeError: the loop closed between the check and the call.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(event.set)
            thread.join(_THREAD_TIMEOUT)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Simulator:
        # Binding and joining happen on a worker thread so the caller's loop keeps running.
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        where = self.base_url if self.running else "stopped"
        return f"Simulator({where})"

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with ``port=0``)."""
        if not self.running:
            raise InvalidArgumentError(
                "the simulator is not running; call start() or use `with Simulator() as sim:`"
            )
        return self._port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``, to pass as the SDK's ``base_url``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    # -- faults ----------------------------------------------------------------------------

    def script(self, *faults: Fault | None) -> None:
        """Queue faults for the next ``/v1/messages`` requests, one each; None answers normally."""
        self._faults.script(faults)

    def script_count_tokens(self, *faults: Fault | None) -> None:
        """Queue faults for the next ``/v1/messages/count_tokens`` requests, one each."""
        self._count_faults.script(faults)

    def set_fault_rate(self, probability: float, fault: Fault, *, seed: int = 0) -> None:
        """After the script runs out, give each request ``fault`` with ``probability``."""
        self._faults.set_rate(probability, fault, seed=seed)

    def release_hangs(self) -> None:
        """Answer every request a :meth:`Fault.hang` holds now; later hangs wait as scripted.

        With ``sim.wait_for_in_flight(n)`` first, a test sees ``n`` requests in flight
        together whatever the machine's speed, then lets them finish at once.
        """
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed between the check and the call
                loop.call_soon_threadsafe(self._release_now)

    def _release_now(self) -> None:
        event, self._release = self._release, asyncio.Event()
        event.set()

    def clear_faults(self) -> None:
        """Drop the scripted faults (of every endpoint and of batch requests) and fault rates."""
        self._faults.clear()
        self._count_faults.clear()
        self._batch_faults.clear()
        self._batch_api_faults.clear()

    # -- message batches -------------------------------------------------------------------

    def script_batch(self, *faults: Fault | None) -> None:
        """Queue outcomes for the next batch requests processed, one each: ``Fault.status``
        makes a request ``errored``, ``Fault.reply(text)`` answers with ``text``, None answers
        normally."""
        self._batch_faults.script(check_batch_fault(f) for f in faults)

    def script_batch_api(self, *faults: Fault | None) -> None:
        """Queue faults for the next requests to the batch endpoints themselves (create,
        retrieve, list, results, cancel), one each; None answers normally."""
        self._batch_api_faults.script(faults)

    def set_batch_fault_rate(self, probability: float, fault: Fault, *, seed: int = 0) -> None:
        """After the batch script runs out, give each batch request ``fault`` with
        ``probability``."""
        self._batch_faults.set_rate(probability, check_batch_fault(fault) or fault, seed=seed)

    @property
    def batch_delay(self) -> float:
        return self._batches.delay

    @batch_delay.setter
    def batch_delay(self, seconds: float) -> None:
        """Processing time of batches created from now on."""
        self._batches.delay = _check_number("batch_delay", seconds, minimum=0.0)

    @property
    def batches_created(self) -> int:
        """Message batches accepted so far (not reset by :meth:`reset_stats`)."""
        return self._batches.created

    @property
    def batch_requests_submitted(self) -> int:
        """Requests inside the message batches accepted so far."""
        return self._batches.submitted

    # -- rate limits -----------------------------------------------------------------------

    def set_rate_limits(self, limits: RateLimits | None) -> None:
        """Enforce ``limits`` from now on, with full buckets; None turns enforcement off."""
        if limits is not None and not isinstance(limits, RateLimits):
            raise InvalidArgumentError(
                f"rate_limits must be a RateLimits(...) or None, got {limits!r}"
            )
        self._limiter = (
            None
            if limits is None
            else ServerRateLimiter(limits, clock=self._clock, wall=self._wall)
        )

    @property
    def rate_limit_stats(self) -> dict[str, object]:
        """Admitted and rejected (429) requests by bucket, and tokens charged; empty when
        rate limits are off."""
        limiter = self._limiter
        return {} if limiter is None else limiter.stats()

    # -- recordings ------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def message_requests(self) -> list[RecordedRequest]:
        """The ``/v1/messages`` requests received so far (a copy)."""
        with self._lock:
            return [r for r in self._requests if r.path == MESSAGES_PATH]

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def peak_in_flight(self) -> int:
        """The most ``/v1/messages`` requests processed at once since the last reset."""
        with self._lock:
            return self._peak

    def wait_for_in_flight(self, count: int, *, timeout: float = 5.0) -> bool:
        """Block until at least ``count`` requests are in progress; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._in_flight >= count, timeout)

    def reset_stats(self) -> None:
        """Forget recorded requests and the peak; the prompt cache is kept."""
        with self._lock:
            self._requests.clear()
            self._peak = self._in_flight

    def clear_prompt_cache(self) -> None:
        self._cache.clear()

    def _record(self, path: str, body: Any, headers: Mapping[str, str]) -> None:
        safe = {
            name.lower(): REDACTED if name.lower() in _SECRET_HEADERS else value
            for name, value in headers.items()
        }
        entry = RecordedRequest(path, body if isinstance(body, dict) else {}, safe)
        with self._lock:
            self._requests.append(entry)

    def _enter_flight(self) -> None:
        with self._changed:
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
            self._changed.notify_all()

    def _leave_flight(self) -> None:
        with self._changed:
            self._in_flight -= 1
            self._changed.notify_all()

    # -- server thread ---------------------------------------------------------------------

    def _run(self, loop: asyncio.AbstractEventLoop, ready: concurrent.futures.Future[int]) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(ready))
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _serve(self, ready: concurrent.futures.Future[int]) -> None:
        self._stop_requested = stop_requested = asyncio.Event()
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that gives up (timeout) cancels its handler, as a
        # real server stops work for a dropped connection.
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, handler_cancellation=True
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._requested_port)
            await site.start()
        except BaseException as exc:  # handed to the thread that called start()
            await runner.cleanup()
            ready.set_exception(exc)
            return
        ready.set_result(int(runner.addresses[0][1]))
        try:
            await stop_requested.wait()
        finally:
            handlers = list(self._handlers)
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            return await self._route(request)
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        body = _decode(await request.read())
        path = request.path
        self._record(path, body, request.headers)
        request_id = new_id("req_")
        if self._require_api_key and not _has_api_key(request.headers):
            return _error_response(
                401,
                "authentication_error",
                "x-api-key header is required; send x-api-key or 'Authorization: Bearer <key>'",
                request_id,
            )
        if request.method == "POST" and path == MESSAGES_PATH:
            return await self._messages(request, body, request_id)
        if request.method == "POST" and path == COUNT_TOKENS_PATH:
            return await self._count_tokens(request, body, request_id)
        if path == BATCHES_PATH or path.startswith(BATCHES_PATH + "/"):
            fault = self._batch_api_faults.next()
            if fault is not None and fault.kind not in ("reply", "lost"):
                response = await self._inject(fault, request, request_id)
                if response is not None:
                    return response
            base = f"{request.scheme}://{request.host}"
            reply = self._batches.handle(request.method, path, request.query, body, base)
            if reply is not None:
                lost = fault if fault is not None and fault.kind == "lost" else None
                return await _batch_response(request, reply, request_id, lost)
        return _error_response(
            404,
            "not_found_error",
            f"Not found: {request.method} {path}; the simulator serves "
            f"POST {MESSAGES_PATH}, POST {COUNT_TOKENS_PATH} and {BATCHES_PATH}",
            request_id,
        )

    async def _messages(self, request: web.Request, body: Any, request_id: str) -> web.Response:
        self._enter_flight()
        try:
            fault = self._faults.next()
            if fault is not None and fault.kind not in ("reply", "lost"):
                response = await self._inject(fault, request, request_id)
                if response is not None:
                    return response
            problem = check_messages_body(body)
            shape = prompt_shape(body) if problem is None else problem
            if isinstance(shape, str):
                return _error_response(400, "invalid_request_error", shape, request_id)
            text = fault.text if fault is not None and fault.kind == "reply" else None
            response = await self._answer(body, shape, request_id, text=text)
            if fault is not None and fault.kind == "lost":
                return _lose(fault, request, request_id)
            return response
        finally:
            self._leave_flight()

    async def _inject(
        self, fault: Fault, request: web.Request, request_id: str
    ) -> web.Response | None:
        """Apply ``fault``; a response to send instead of the answer, or None to answer."""
        if fault.kind == "status":
            return _error_response(
                fault.status_code,
                fault.error_type,
                fault.error_message(),
                request_id,
                fault.headers(),
            )
        if fault.kind == "hang":
            release = self._release  # taken before waiting: a release from now on ends it
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(release.wait(), fault.seconds)
            return None
        transport = request.transport
        if transport is not None:
            transport.abort()
        # Nothing can be sent on an aborted connection; a cancelled handler makes aiohttp
        # drop it quietly instead of logging a failed write.
        raise asyncio.CancelledError

    async def _answer(
        self, body: dict[str, Any], shape: PromptShape, request_id: str, *, text: str | None = None
    ) -> web.Response:
        model = body["model"]
        breakpoints = self._breakpoints(model, shape)
        limiter = self._limiter or self._plausible
        decision = limiter.admit(
            model,
            input_tokens=shape.input_tokens - self._cache.peek(breakpoints),
            max_tokens=body["max_tokens"],
        )
        if isinstance(decision, Rejection):
            return _error_response(
                429, "rate_limit_error", decision.message, request_id, decision.headers
            )
        admission = decision
        try:
            reply = _reply(body, text)
            delay_ms = self._latency_ms + self._per_token_ms * reply.output_tokens
            if delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000.0)
            # The cache is consulted after the delay: like the real service, an entry exists
            # only once the response that wrote it is under way, so concurrent twins both write.
            usage = self._cache.account(breakpoints)
            # Charged: every prompt token not read from the cache; output as produced.
            limiter.settle(
                admission,
                input_tokens=shape.input_tokens - usage.read,
                output_tokens=reply.output_tokens,
            )
        finally:
            # Only a dropped request (cancelled handler) is still unsettled here: it gives
            # its output reservation back.
            limiter.settle(admission, input_tokens=admission.input_tokens, output_tokens=0)
        payload = _message(model, shape, reply, usage)
        headers = limiter.headers(model)
        headers["request-id"] = request_id
        return _json_response(200, payload, headers)

    def _breakpoints(self, model: str, shape: PromptShape) -> Sequence[Breakpoint]:
        return eligible_breakpoints(shape, min_cacheable_tokens(model, self._min_cacheable))

    def _batch_answer(self, body: Mapping[str, Any], text: str | None) -> dict[str, Any] | str:
        """A batch request's Message (or its problem): the direct answer without latency or
        rate limits, which batches do not share with ``/v1/messages``; the prompt cache is the
        same."""
        shape = prompt_shape(body)
        if isinstance(shape, str):
            return shape
        reply = _reply(body, text)
        usage = self._cache.account(self._breakpoints(body["model"], shape))
        return _message(body["model"], shape, reply, usage)

    async def _count_tokens(self, request: web.Request, body: Any, request_id: str) -> web.Response:
        fault = self._count_faults.next()
        if fault is not None:
            response = await self._inject(fault, request, request_id)
            if response is not None:
                return response
        problem = check_count_tokens_body(body)
        shape = prompt_shape(body) if problem is None else problem
        if isinstance(shape, str):
            return _error_response(400, "invalid_request_error", shape, request_id)
        return _json_response(200, {"input_tokens": shape.input_tokens}, {"request-id": request_id})


def _reply(body: Mapping[str, Any], text: str | None) -> Reply:
    if text is not None:
        return Reply(text, max(1, len(text.split())), "end_turn")
    return render_reply(reply_words(body, reply_digest(body)), body["max_tokens"])


def _message(model: str, shape: PromptShape, reply: Reply, usage: CacheUsage) -> dict[str, Any]:
    uncached = shape.input_tokens - usage.cached_or_written
    return message_body(model=model, reply=reply, input_tokens=uncached, cache=usage)


def _lose(fault: Fault, request: web.Request, request_id: str) -> web.Response:
    """``Fault.lost``: the work is done; its answer becomes an error status or a drop."""
    if fault.status_code:
        return _error_response(
            fault.status_code, fault.error_type, fault.error_message(), request_id
        )
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError  # nothing can be sent on an aborted connection


async def _batch_response(
    request: web.Request, reply: BatchReply, request_id: str, lost: Fault | None = None
) -> web.StreamResponse:
    if lost is not None and (lost.status_code or reply.lines is None):
        return _lose(lost, request, request_id)
    if reply.lines is None:
        payload = reply.payload or {}
        if reply.status >= 400:
            return _error_response(
                reply.status, str(payload["error_type"]), str(payload["message"]), request_id
            )
        return _json_response(reply.status, payload, {"request-id": request_id})
    # Streamed in pieces, as the service streams a results file; never one huge body.
    response = web.StreamResponse(
        status=200, headers={"request-id": request_id, "content-type": "application/binary"}
    )
    await response.prepare(request)
    piece: list[bytes] = []
    lines = reply.lines
    if lost is not None:  # half of the body, then the connection drops
        lines = lines[: len(lines) // 2]
    for line in lines:
        piece.append(line)
        if len(piece) >= 256:
            await response.write(b"".join(piece))
            piece.clear()
    if piece:
        await response.write(b"".join(piece))
    if lost is not None and request.transport is not None:
        # Closed, not aborted: what was written reaches the client, the body's end never does.
        request.transport.close()
        raise asyncio.CancelledError
    await response.write_eof()
    return response


def serve(
    host: str,
    port: int,
    *,
    latency_ms: float = 0.0,
    per_token_latency_ms: float = 0.0,
    require_api_key: bool = True,
    min_cacheable_tokens: int | None = None,
    rate_limits: RateLimits | None = None,
    on_ready: Callable[[Simulator], None] | None = None,
    stop_event: threading.Event | None = None,
) -> None:
    """Run a simulator until Ctrl-C (or until ``stop_event`` is set).

    ``on_ready`` is called with the running simulator, e.g. to print its ``base_url``.
    """
    sim = Simulator(
        host=host,
        port=port,
        latency_ms=latency_ms,
        per_token_latency_ms=per_token_latency_ms,
        require_api_key=require_api_key,
        min_cacheable_tokens=min_cacheable_tokens,
        rate_limits=rate_limits,
    )
    stop = stop_event if stop_event is not None else threading.Event()
    sim.start()
    try:
        if on_ready is not None:
            on_ready(sim)
        # A timed wait keeps Ctrl-C prompt on every platform.
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
