"""The wire: the official SDK client, the retry policy as pure functions, and one loop.

The SDK client is created with ``max_retries=0``; the loop below is the only retry layer.
Unlike a retry inside the SDK, it hands the concurrency slot back while it waits.

``max_retries`` counts retries after the first attempt, as in the SDK: ``max_retries=3``
allows up to four attempts.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._admission import ConcurrencyGate
from ._errors import APIError
from ._request import Request

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from anthropic.types import Message

__all__ = [
    "NON_RETRYABLE_STATUSES",
    "RETRYABLE_STATUSES",
    "Sent",
    "Transport",
    "parse_retry_after",
    "retry_delay",
    "should_retry",
]

log = logging.getLogger("claude_force.transport")

RETRYABLE_STATUSES = frozenset({408, 409, 429})
NON_RETRYABLE_STATUSES = frozenset({400, 401, 403, 404, 413, 422})
OVERLOAD_STATUSES = frozenset({429, 529})

INITIAL_DELAY = 0.5
MAX_DELAY = 8.0


def should_retry(status: int | None, headers: Mapping[str, str] | None = None) -> bool:
    """Whether a failed attempt may be retried.

    ``status`` is None for connection errors and timeouts, which are retried. An explicit
    ``x-should-retry`` header from the server wins over the status code, as in the SDK.
    """
    hint = (headers or {}).get("x-should-retry")
    if hint == "true":
        return True
    if hint == "false":
        return False
    if status is None:
        return True
    return status in RETRYABLE_STATUSES or status >= 500


def parse_retry_after(headers: Mapping[str, str] | None, *, now: float) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, then ``retry-after``.

    ``retry-after`` may be seconds (integer or float) or an HTTP date, measured against
    ``now`` (epoch seconds). Returns None when absent, unparseable or not positive.
    """
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000
        except ValueError:
            value = -1.0
        if value > 0:
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is None:
            return None
        seconds = float(email.utils.mktime_tz(parsed)) - now
    return seconds if seconds > 0 else None


def retry_delay(
    retries_done: int,
    headers: Mapping[str, str] | None = None,
    *,
    now: float,
    jitter: float,
    initial: float = INITIAL_DELAY,
    cap: float = MAX_DELAY,
) -> float:
    """Seconds to wait before the next attempt.

    The server's ``retry-after-ms`` / ``retry-after`` is obeyed as given. Otherwise
    exponential backoff ``initial * 2**retries_done`` capped at ``cap``, reduced by up to
    25% by ``jitter`` (a number in [0, 1)) so that clients spread out.
    """
    asked = parse_retry_after(headers, now=now)
    if asked is not None:
        return asked
    backoff = min(initial * 2.0 ** min(retries_done, 60), cap)
    return backoff * (1.0 - 0.25 * jitter)


@dataclass(frozen=True, slots=True)
class Sent:
    """A successful exchange."""

    message: Message
    attempts: int
    request_id: str | None


@dataclass(slots=True)
class _Failure:
    status: int | None
    headers: Mapping[str, str] | None
    error: APIError


class Transport:
    """Sends canonical requests through the SDK with our retry loop.

    One SDK client per event loop: an aiohttp session belongs to the loop that made it.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        timeout_seconds: float,
        max_retries: int,
        deadline_seconds: float | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.deadline_seconds = deadline_seconds
        self._sleep = sleep
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._rand = rand
        self.last_rate_limits: Mapping[str, str] = {}

    def __repr__(self) -> str:  # never show the key
        return f"Transport(base_url={self._base_url!r}, api_key='***')"

    def make_client(self) -> AsyncAnthropic:
        import anthropic

        # A response hook keeps the latest rate-limit headers; it is far cheaper than
        # `with_raw_response`, which costs about 12% of throughput at high concurrency.
        http_client = anthropic.DefaultAioHttpClient(event_hooks={"response": [self._observe]})
        return anthropic.AsyncAnthropic(
            api_key=self._api_key,
            base_url=self._base_url,
            max_retries=0,
            timeout=self.timeout_seconds,
            http_client=http_client,
        )

    async def _observe(self, response: Any) -> None:
        self.last_rate_limits = response.headers

    async def send(self, client: AsyncAnthropic, request: Request, gate: ConcurrencyGate) -> Sent:
        """Send with retries; raises :class:`APIError` once retries are spent."""
        kwargs = request.create_kwargs()
        start = self._monotonic()
        retries = 0
        while True:
            timeout = self._attempt_timeout(start)
            await gate.acquire()
            try:
                outcome = await self._attempt(client, kwargs, timeout, retries + 1)
            finally:
                gate.release()
            if isinstance(outcome, Sent):
                gate.on_success()
                return outcome
            if outcome.status in OVERLOAD_STATUSES:
                gate.on_overload()
            if retries >= self.max_retries or not should_retry(outcome.status, outcome.headers):
                raise outcome.error
            delay = retry_delay(
                retries, outcome.headers, now=self._wall_clock(), jitter=self._rand()
            )
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

    async def count_tokens(self, client: AsyncAnthropic, request: Request) -> int:
        """The service's exact input-token count for ``request`` (the free count endpoint).

        Retried like :meth:`send` (same policy, timeouts and deadline), but outside the
        concurrency gate: counting has its own rate limit and never produces an answer.
        Raises :class:`APIError` once retries are spent.
        """
        import anthropic

        wanted = ("model", "system", "messages", "tools")
        kwargs = {k: v for k, v in request.create_kwargs().items() if k in wanted}
        start = self._monotonic()
        retries = 0
        while True:
            timeout = self._attempt_timeout(start)
            try:
                counted = await client.messages.count_tokens(**kwargs, timeout=timeout)
                return int(counted.input_tokens)
            except anthropic.APIStatusError as exc:
                status, headers = exc.status_code, exc.response.headers
                error = self._map_status(exc, retries + 1)
            except anthropic.APIConnectionError as exc:  # timeouts included
                status, headers = None, None
                timed_out = isinstance(exc, anthropic.APITimeoutError)
                error = APIError(
                    self._redact(f"count_tokens failed: {exc.__cause__ or exc}"),
                    error_type="timeout" if timed_out else "connection_error",
                    attempts=retries + 1,
                )
            delay = retry_delay(retries, headers, now=self._wall_clock(), jitter=self._rand())
            if (
                retries >= self.max_retries
                or not should_retry(status, headers)
                or self._deadline_passed_by(start, delay)
            ):
                raise error
            await self._sleep(delay)
            retries += 1

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
        self, client: AsyncAnthropic, kwargs: dict[str, Any], timeout: float, attempt: int
    ) -> Sent | _Failure:
        import anthropic

        try:
            message = await client.messages.create(**kwargs, timeout=timeout)
        except anthropic.APIStatusError as exc:
            headers = exc.response.headers
            return _Failure(exc.status_code, headers, self._map_status(exc, attempt))
        except anthropic.APITimeoutError:
            err = APIError(
                f"request timed out after {timeout:g}s (timeout_seconds={self.timeout_seconds:g})",
                error_type="timeout",
                attempts=attempt,
            )
            return _Failure(None, None, err)
        except anthropic.APIConnectionError as exc:
            err = APIError(
                self._redact(f"connection error: {exc.__cause__ or exc}"),
                error_type="connection_error",
                attempts=attempt,
            )
            return _Failure(None, None, err)
        return Sent(message, attempt, message._request_id)

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

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text
