"""The wire: the official SDK client, the retry policy as pure functions, and one loop.

The SDK client is created with ``max_retries=0``; the loop below is the only retry layer.
Unlike a retry inside the SDK, it hands the concurrency slot back while it waits.

With client-side rate limiting on (the default), every attempt of :meth:`Transport.send`,
retries included, first passes the session's :class:`TokenBuckets` and then the concurrency
gate. Each attempt's answer (its usage and its own ``anthropic-ratelimit-*`` headers) settles
its ticket; a 429 that carries those headers hands the wait to the buckets (a short jittered
pause, then the buckets hold the retry until it fits) instead of sleeping the server's
whole-second ``retry-after``, and the gate then reacts only to 529 (overload).

``max_retries`` counts retries after the first attempt, as in the SDK: ``max_retries=3``
allows up to four attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ._admission import AdmissionDeadlineError, ConcurrencyGate, Limits, Ticket, TokenBuckets
from ._answers import (
    Answer,
    _complete_models,
    _NotAnAnswer,
    _tokens_count_type,
    expect_answer,
    message_answer,
)
from ._attempt_bounds import redact_key, within
from ._errors import APIError, InvalidArgumentError, UsageError
from ._frozen import quick_init
from ._request import Request, canonical_json
from ._retry_policy import (
    has_rate_limit_headers,
    retry_delay,
    should_retry,
)
from ._shared_limits import SharedRedis, SharedTokenBuckets, organisation
from ._usage import Usage

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

    from ._options import OrchestratorOptions

__all__ = [
    "INVALID_RESPONSE",
    "Sent",
    "Session",
    "Transport",
    "expect_answer",
    "input_chars",
]

log = logging.getLogger("claude_force.transport")
T = TypeVar("T")

OVERLOAD_STATUSES = frozenset({429, 529})
# 429s that the token buckets pace do not use up max_retries; this bounds them all the same.
MAX_PACED_RETRIES = 20
# After a 429 the buckets decide when to retry; this short pause, jittered, only keeps
# requests bounced together from queueing again in the same instant.
RATE_LIMITED_PAUSE = 0.05


# Each attempt's own response headers: the response hook runs in the task that made the call,
# so a box set in the attempt's context receives exactly that attempt's headers, whatever
# other requests answer meanwhile.
class _Seen(list[Mapping[str, str]]):
    """The headers of each response an attempt received, and the last one's status."""

    __slots__ = ("status",)  # no dict of its own for one attribute

    def __init__(self) -> None:
        super().__init__()
        self.status: int | None = None

    def answered(self) -> bool:
        """Whether a response came (its headers did)."""
        return bool(self)


_ATTEMPT_HEADERS: contextvars.ContextVar[_Seen | None] = contextvars.ContextVar(
    "claude_force_attempt_headers", default=None
)
# A 2xx whose body is not the endpoint's answer (a proxy's page) is retried like this status.
MALFORMED_RETRY_STATUS = 502
INVALID_RESPONSE = "invalid_response"  # the APIError's error_type for such a body


@quick_init
@dataclass(frozen=True, slots=True)
class Sent:
    """A successful exchange."""

    answer: Answer
    attempts: int
    request_id: str | None
    usage: Usage  # read from the message once, by whoever reads it first
    # A cancel that arrived after the answer did: the caller keeps the answer, then raises it.
    cancelled: asyncio.CancelledError | None = None


async def _pass_turn() -> asyncio.CancelledError | None:
    """Let what is ready on the event loop run first; the cancel that arrived meanwhile.

    The cancel is held here so that an answer already paid for is kept: the caller records
    and caches it, then raises the held :class:`asyncio.CancelledError` (``Sent.cancelled``).
    """
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError as exc:
        return exc
    return None


def input_chars(request: Request) -> int:
    """Characters of what the service counts as input: system prompt, messages and tools.

    The buckets turn characters into tokens with a ratio learned from usage, so a close
    count matters more than an exact one.
    """
    chars = len(request.system.text)
    for message in request.messages:
        chars += _text_chars(message.get("content"))
    if request.tools:
        chars += len(canonical_json(list(request.tools)))
    return chars


def _text_chars(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, (list, tuple)):
        chars = 0
        for block in content:
            # A text block, the usual one, without the general checks below.
            text = block.get("text") if type(block) is dict else None
            chars += len(text) if type(text) is str else _text_chars(block)
        return chars
    if isinstance(content, Mapping):
        text = content.get("text")
        if isinstance(text, str):
            return len(text)
        return len(canonical_json(content))  # tool results, images: a rough size
    return 0


@quick_init
@dataclass(frozen=True, slots=True)
class _Metered:
    """What the token buckets need to know about a request, and how to read its usage."""

    model: str
    chars: int
    max_tokens: int


class _Create:
    """One Messages call, made by each attempt: ``create(timeout)``. Each answer's usage is
    read once, inside its attempt (``read``). An object, not a closure: a closure's cells
    live as long as the call, and every call has one.

    ``create`` is the SDK's ``messages.with_raw_response.create``: the answer is read from
    its JSON body (:func:`message_answer`), not built into the SDK's models."""

    __slots__ = ("create", "kwargs", "read")

    def __init__(self, create: Callable[..., Awaitable[Any]], kwargs: dict[str, Any]) -> None:
        self.create = create
        self.kwargs = kwargs
        self.read: list[Usage] = []

    async def __call__(self, timeout: float) -> Answer:
        response = await self.create(**self.kwargs, timeout=timeout)
        answer, usage = message_answer(response.http_response.content, response.request_id)
        try:
            self.read.append(Usage.from_api(usage))
        except (InvalidArgumentError, TypeError, ValueError) as exc:  # a count < 0, a bool
            raise _NotAnAnswer(f"a Message whose usage cannot be read ({exc})") from None
        return answer

    def usage_of(self, answer: Answer) -> Usage:
        return self.read[-1]


@dataclass(slots=True)
class _Failure:
    status: int | None
    headers: Mapping[str, str] | None
    error: APIError


@dataclass(slots=True)
class Session:
    """What one event loop needs to send: its SDK client and its concurrency gate.

    An aiohttp session belongs to the loop that made it, so each loop gets its own.
    """

    loop: asyncio.AbstractEventLoop
    client: AsyncAnthropic
    gate: ConcurrencyGate
    keeper: asyncio.Task[None]
    buckets: TokenBuckets | None = None
    # The client's ``messages.with_raw_response.create``, looked up once.
    create: Callable[..., Awaitable[Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.create = self.client.messages.with_raw_response.create


class Transport:
    """Sends canonical requests through the SDK with our retry loop.

    :meth:`session` gives the current event loop's client, gate and token buckets, made on
    first use; the SDK is imported then, in a thread, because importing it takes about a
    second. ``rate_limits`` caps the buckets' limits; ``adaptive_rate_limits=False`` turns the
    buckets off (429s then halve the gate and wait the server's ``retry-after``).
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        timeout_seconds: float,
        max_retries: int,
        max_concurrent: int = 10,
        adaptive: bool = True,
        deadline_seconds: float | None = None,
        rate_limits: Limits | Mapping[str, Limits] | None = None,
        adaptive_rate_limits: bool = True,
        open_telemetry: bool | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.max_concurrent = max_concurrent
        self.adaptive = adaptive
        self.deadline_seconds = deadline_seconds
        self.rate_limits = rate_limits
        self.adaptive_rate_limits = adaptive_rate_limits
        self.open_telemetry = open_telemetry
        self._sleep = sleep
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._rand = rand
        self._session: Session | None = None
        self._starting: asyncio.Task[Session] | None = None
        # A Redis shared with other processes (redis_url): the buckets then live there.
        self.shared: SharedRedis | None = None
        self.last_rate_limits: Mapping[str, str] = {}

    @classmethod
    def from_options(
        cls,
        opts: OrchestratorOptions,
        api_key: str,
        rate_limits: Limits | Mapping[str, Limits] | None,
    ) -> Transport:
        """The transport an orchestrator's options describe (``rate_limits`` already merged
        with claude.json's)."""
        return cls(
            api_key=api_key,
            base_url=opts.base_url,
            timeout_seconds=float(opts.timeout_seconds),
            max_retries=opts.max_retries,
            max_concurrent=opts.max_concurrent,
            adaptive=opts.adaptive_concurrency,
            deadline_seconds=opts.deadline_seconds,
            rate_limits=rate_limits,
            adaptive_rate_limits=opts.adaptive_rate_limits,
            open_telemetry=opts.open_telemetry,
            sleep=opts.sleep,
        )

    def __repr__(self) -> str:  # never show the key
        return f"Transport(base_url={self._base_url!r}, api_key='***')"

    @property
    def peak_concurrency(self) -> int:
        """Most requests in flight at once on the current session's loop."""
        return self._session.gate.peak if self._session is not None else 0

    def rate_limit_state(self) -> dict[str, object]:
        """The current session's concurrency gate and token-bucket levels per model class.

        Before the first request (or with no session on this loop yet) the gate shows its
        configured maximum and ``classes`` is empty.
        """
        session = self._session
        gate = session.gate if session is not None else None
        buckets = session.buckets if session is not None else None
        return {
            "adaptive_rate_limits": self.adaptive_rate_limits,
            "max_concurrent": self.max_concurrent,
            "concurrency_limit": gate.limit if gate is not None else self.max_concurrent,
            "in_flight": gate.active if gate is not None else 0,
            "classes": buckets.snapshot() if buckets is not None else {},
        }

    async def session(self) -> Session:
        """The current loop's client and gate; raises :class:`UsageError` without a key."""
        loop = asyncio.get_running_loop()
        session = self._session
        if session is not None and session.loop is loop:
            return session
        if not self._api_key:
            raise UsageError(
                "no API key: set the ANTHROPIC_API_KEY environment variable or pass "
                "api_key=...; to try claude-force without a key, run `claude-force demo`"
            )
        starting = self._starting
        if starting is None or starting.get_loop() is not loop:
            # One task builds the loop's client and every first call waits for it: the
            # client is made in a thread, as importing the SDK takes about a second and its
            # SSL context reads the CA bundle from disk.
            starting = self._starting = loop.create_task(self._start(loop))
        return await asyncio.shield(starting)

    async def _start(self, loop: asyncio.AbstractEventLoop) -> Session:
        try:
            client = await asyncio.to_thread(self.make_client)
        finally:
            self._starting = None
        gate = ConcurrencyGate(self.max_concurrent, adaptive=self.adaptive, clock=self._monotonic)
        buckets: TokenBuckets | None = None
        if self.adaptive_rate_limits and self.shared is not None:
            buckets = SharedTokenBuckets(
                self.shared, organisation(self._api_key, self._base_url),
                limits=self.rate_limits, clock=self._monotonic, sleep=self._sleep, rand=self._rand,
                # The ledger dates a charge when it is admitted: none may wait for a slot.
                max_in_flight=self.max_concurrent,
            )  # fmt: skip
        elif self.adaptive_rate_limits:
            buckets = TokenBuckets(
                limits=self.rate_limits,
                # Admitted attempts wait for a slot at most about one service time.
                max_in_flight=2 * self.max_concurrent,
                clock=self._monotonic,
                sleep=self._sleep,
                rand=self._rand,
            )
        keeper = loop.create_task(_close_when_loop_ends(client))
        self._session = Session(loop, client, gate, keeper, buckets)
        return self._session

    async def aclose(self) -> None:
        """Close the current session's client; a later call makes a new one."""
        session, self._session = self._session, None
        if session is None:
            return
        session.keeper.cancel()
        if session.loop is asyncio.get_running_loop():
            if isinstance(session.buckets, SharedTokenBuckets):
                await session.buckets.drain()  # corrections still on their way to Redis
            await session.client.close()

    def make_client(self) -> AsyncAnthropic:
        import anthropic

        # A response hook keeps the latest rate-limit headers; it is far cheaper than
        # `with_raw_response`, which costs about 12% of throughput at high concurrency.
        http_client = anthropic.DefaultAioHttpClient(event_hooks={"response": [self._observe]})
        _complete_models(anthropic.types.Message)
        spans = self.open_telemetry
        return anthropic.AsyncAnthropic(
            api_key=self._api_key,
            base_url=self._base_url,
            max_retries=0,
            timeout=self.timeout_seconds,
            http_client=http_client,
            # The SDK's own choice (its environment variables) where spans are wanted.
            open_telemetry=None if (tracing_configured() if spans is None else spans) else False,
        )

    async def _observe(self, response: Any) -> None:
        self.last_rate_limits = response.headers
        box = _ATTEMPT_HEADERS.get()
        if box is not None:
            box.append(response.headers)
            box.status = response.status_code

    def clock(self) -> float:
        """Now on the clock ``deadline_seconds`` is measured on (pass it to :meth:`send`)."""
        return self._monotonic()

    def deadline_from(self, since: float) -> float | None:
        """When a call begun at ``since`` (:meth:`clock`) must end; None without a deadline."""
        return None if self.deadline_seconds is None else since + self.deadline_seconds

    async def send(self, request: Request, *, since: float | None = None) -> Sent:
        """Send with retries; raises :class:`APIError` once retries are spent.

        ``since`` (:meth:`clock`): when the call began, if before this (a budget wait), so
        that ``deadline_seconds`` bounds the whole call."""
        session = await self.session()
        create = _Create(session.create, request.create_kwargs())
        metered = _Metered(request.model, input_chars(request), request.max_tokens)
        answer, attempts = await self._retrying(
            create, session.gate, session.buckets, metered, create.usage_of, since=since
        )
        # When a request took the slot this one gave back, it goes out before this answer's
        # bookkeeping (the caller's, after return): a full gate keeps the pace of its queue.
        cancelled = await _pass_turn() if session.gate.full else None
        return Sent(answer, attempts, answer.request_id, create.read[-1], cancelled)

    async def count_tokens(self, request: Request) -> int:
        """The service's exact input-token count for ``request`` (the free count endpoint).

        Retried like :meth:`send`, but outside the concurrency gate and the token buckets:
        counting has its own rate limit and never produces an answer. Raises
        :class:`APIError` once retries are spent.
        """
        session = await self.session()
        wanted = ("model", "system", "messages", "tools")
        kwargs = {k: v for k, v in request.create_kwargs().items() if k in wanted}

        async def count(timeout: float) -> int:
            counted = await session.client.messages.count_tokens(**kwargs, timeout=timeout)
            return int(expect_answer(counted, _tokens_count_type()).input_tokens)

        tokens, _ = await self._retrying(count, None)
        return tokens

    async def call(
        self,
        fn: Callable[[AsyncAnthropic, float], Awaitable[T]],
        *,
        before_retry: Callable[[APIError], Awaitable[T | None]] | None = None,
    ) -> T:
        """``fn(client, timeout)`` on this loop's SDK client, retried by the one retry loop.

        For calls other than messages (the Message Batches API): outside the concurrency gate
        and the token buckets, SDK errors mapped to :class:`APIError` with the key redacted.
        ``before_retry(error)`` runs before each retry; a value it returns is the answer
        instead (a batch create that did reach the service is found, not made twice).
        """
        session = await self.session()

        async def attempt(timeout: float) -> T:
            return await fn(session.client, timeout)

        value, _ = await self._retrying(attempt, None, recover=before_retry)
        return value

    @contextlib.contextmanager
    def reading(self, what: str) -> Iterator[None]:
        """Errors while reading a streamed body (a dropped connection) as :class:`APIError`.

        The SDK maps errors of sending a request, not of the body read afterwards; those
        arrive raw from its HTTP client, so they are mapped here, at the one boundary.
        """
        import anthropic
        import httpx2

        try:
            yield
        except (anthropic.AnthropicError, httpx2.HTTPError, OSError) as exc:
            raise APIError(
                self._redact(f"{what} broke off: {type(exc).__name__}: {exc}"),
                error_type="connection_error",
            ) from None

    async def _retrying(
        self,
        call: Callable[[float], Awaitable[T]],
        gate: ConcurrencyGate | None,
        buckets: TokenBuckets | None = None,
        metered: _Metered | None = None,
        usage_of: Callable[[T], Usage] | None = None,
        recover: Callable[[APIError], Awaitable[T | None]] | None = None,
        *,
        since: float | None = None,
    ) -> tuple[T, int]:
        """The one retry loop: ``call(timeout)`` until it succeeds or retries are spent.

        With ``buckets`` (and ``metered``, what to charge), each attempt is first admitted by
        the token buckets and settled with its own usage (``usage_of`` its value) and
        headers. With a ``gate``, each attempt holds a concurrency slot, given back while
        waiting. Returns the value and the number of attempts made.
        """
        start = self._monotonic() if since is None else since
        bucketed = buckets is not None and metered is not None
        retries = bounced = 0
        while True:
            ticket = None
            if buckets is not None and metered is not None:
                if self.deadline_seconds is None:  # nothing to refuse: no wrapper to await
                    ticket = await buckets.admit(
                        metered.model, metered.chars, metered.max_tokens, retry=retries > 0
                    )
                else:
                    ticket = await self._admit(buckets, metered, start, retries)
            box = _Seen()
            sent = explained = False
            try:
                timeout = self._attempt_timeout(start)
                if gate is not None:
                    await gate.acquire()
                sent = True
                if buckets is not None and ticket is not None:
                    buckets.sending(ticket)
                token = _ATTEMPT_HEADERS.set(box)
                try:
                    outcome = await self._attempt(call, timeout, retries + 1, box, start)
                finally:
                    _ATTEMPT_HEADERS.reset(token)
                    if gate is not None:
                        gate.release()
                if buckets is not None and ticket is not None:
                    if not isinstance(outcome, _Failure):
                        usage = usage_of(outcome) if usage_of is not None else None
                        buckets.settle(ticket, usage, box[-1] if box else None)
                    elif outcome.status == 429:
                        explained = buckets.on_rate_limited(ticket, outcome.headers)
                    else:
                        buckets.settle(ticket, None, outcome.headers)
            finally:
                # Cancelled or raised: a ticket not yet settled is settled here.
                if buckets is not None and ticket is not None:
                    if sent:
                        buckets.settle(ticket, None, None)
                    else:
                        buckets.refund(ticket)
            if not isinstance(outcome, _Failure):
                if gate is not None:
                    gate.on_success()
                return outcome, retries + 1
            # Paced only when the buckets explain the 429; another limit (acceleration, a
            # proxy) gets the server's retry-after and counts against max_retries.
            paced = bucketed and explained and _paced(outcome)
            if gate is not None and outcome.status in OVERLOAD_STATUSES and not paced:
                gate.on_overload()
            # A 429 stating the service's buckets is retried when the buckets admit it again:
            # it does not use up max_retries (nothing was charged), up to a safety bound.
            bounced += paced
            spent = bounced > MAX_PACED_RETRIES if paced else retries - bounced >= self.max_retries
            if spent or not should_retry(outcome.status, outcome.headers):
                raise outcome.error
            delay = self._retry_delay(retries - bounced, outcome, paced=paced)
            if self._deadline_passed_by(start, delay):
                raise outcome.error
            log.info(
                "retrying after %s (attempt %d of %d) in %.2fs",
                outcome.error.error_type,
                retries + 1,
                self.max_retries + 1,
                delay,
            )
            await self._sleep(delay)
            retries += 1
            if recover is not None and (found := await recover(outcome.error)) is not None:
                return found, retries

    async def _admit(
        self, buckets: TokenBuckets, metered: _Metered, start: float, retries: int
    ) -> Ticket:
        """Wait for the buckets to admit this attempt; past the deadline, fail at once."""
        deadline = None if self.deadline_seconds is None else start + self.deadline_seconds
        try:
            return await buckets.admit(
                metered.model,
                metered.chars,
                metered.max_tokens,
                deadline=deadline,
                retry=retries > 0,
            )
        except AdmissionDeadlineError as exc:
            exc.attempts = retries  # the attempts actually sent before this one was refused
            raise

    def _retry_delay(self, retries: int, outcome: _Failure, *, paced: bool) -> float:
        if paced:
            # The buckets now hold the server's levels and will hold the retry until it
            # fits; the server's whole-second retry-after would only waste allowance.
            return RATE_LIMITED_PAUSE * (1.0 + self._rand())
        return retry_delay(retries, outcome.headers, now=self._wall_clock(), jitter=self._rand())

    def _attempt_timeout(self, start: float) -> float:
        if self.deadline_seconds is None:
            return self.timeout_seconds
        remaining = self.deadline_seconds - (self._monotonic() - start)
        return max(0.001, min(self.timeout_seconds, remaining))

    def _deadline_passed_by(self, start: float, delay: float) -> bool:
        if self.deadline_seconds is None:
            return False
        return self._monotonic() - start + delay >= self.deadline_seconds

    async def _attempt(
        self,
        call: Callable[[float], Awaitable[T]],
        timeout: float,
        attempt: int,
        seen: _Seen,
        start: float,
    ) -> T | _Failure:
        import anthropic

        try:
            # The SDK's timeout bounds each wait for bytes; this bounds the whole response,
            # which a server sending a byte at a time could otherwise stretch for ever. An
            # answer whose headers came in time (it is paid for) gets as long again for its
            # body, within the deadline.
            more = functools.partial(self._attempt_timeout, start)
            return await within(call(timeout), timeout, seen.answered, more)
        except anthropic.APIStatusError as exc:
            headers = exc.response.headers
            return _Failure(exc.status_code, headers, self._map_status(exc, attempt))
        except (anthropic.APITimeoutError, asyncio.TimeoutError):
            return self._timed_out(timeout, attempt)
        except anthropic.APIConnectionError as exc:
            err = APIError(
                self._redact(f"connection error: {exc.__cause__ or exc}"),
                error_type="connection_error",
                attempts=attempt,
            )
            return _Failure(None, None, err)
        except (_NotAnAnswer, json.JSONDecodeError, anthropic.APIResponseValidationError) as exc:
            # The SDK returns a non-JSON body as text and a JSON body unvalidated; what is
            # not an answer fails here, with the response's status and request id.
            return self._malformed(exc, attempt, seen)

    def _malformed(self, exc: Exception, attempt: int, seen: _Seen) -> _Failure:
        """A 2xx response whose body is not the endpoint's answer: retried like a 502."""
        headers: Mapping[str, str] = seen[-1] if seen else {}
        content_type = headers.get("content-type") or "no content-type"
        what = str(exc) if isinstance(exc, _NotAnAnswer) else "a body that is not valid JSON"
        err = APIError(
            self._redact(
                f"HTTP {seen.status or 200} from {self._base_url or 'the API'} ({content_type}) "
                f"is not an API answer: {what}; a proxy or another server answered instead of "
                "the Anthropic API: check base_url (ANTHROPIC_BASE_URL) and any proxy between"
            ),
            status_code=seen.status,
            request_id=headers.get("request-id"),
            error_type=INVALID_RESPONSE,
            attempts=attempt,
        )
        return _Failure(MALFORMED_RETRY_STATUS, headers, err)

    def _map_status(self, exc: Any, attempt: int) -> APIError:
        """The one place where SDK status errors become ours."""
        error_type = getattr(exc, "type", None) or f"http_{exc.status_code}"
        detail = getattr(exc, "api_message", None) or exc.message
        return APIError(
            self._redact(f"HTTP {exc.status_code} {error_type}: {detail}"),
            status_code=exc.status_code,
            request_id=exc.request_id,
            error_type=str(error_type),
            attempts=attempt,
        )

    def _timed_out(self, timeout: float, attempt: int) -> _Failure:
        cause = f"timeout_seconds={self.timeout_seconds:g}"
        if timeout < self.timeout_seconds and self.deadline_seconds is not None:
            cause = f"all that deadline_seconds={self.deadline_seconds:g} had left"
        err = APIError(
            f"request timed out after {timeout:g}s ({cause})",
            error_type="timeout",
            attempts=attempt,
        )
        return _Failure(None, None, err)

    def _redact(self, text: str) -> str:
        return redact_key(text, self._api_key)


def tracing_configured() -> bool:
    """Whether OpenTelemetry has a tracer provider: set by the application, or named by
    ``OTEL_PYTHON_TRACER_PROVIDER``. Without one, each of the SDK's spans is a no-op that
    still costs about a fourteenth of a call's CPU time (100 concurrent calls, zero latency)."""
    try:
        from opentelemetry import trace
    except ImportError:  # the SDK requires the API; a stripped install has no spans anyway
        return False
    if os.environ.get("OTEL_PYTHON_TRACER_PROVIDER"):
        return True
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _paced(outcome: _Failure) -> bool:
    """A 429 that states the service's buckets: the token buckets pace its retry.

    One without them (a proxy, another provider) leaves the gate and the server's
    retry-after to slow down.
    """
    return outcome.status == 429 and has_rate_limit_headers(outcome.headers)


async def _close_when_loop_ends(client: AsyncAnthropic) -> None:
    """Sleeps until cancelled; ``asyncio.run`` cancels it at exit, closing the client."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        await client.close()
        raise
