"""Faults the simulator can inject, and the plan that decides which request gets one."""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from .._errors import InvalidArgumentError

__all__ = ["ERROR_TYPES", "Fault", "FaultPlan", "error_type"]

#: The ``error.type`` the real API sends with each status; other statuses fall back by class.
ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_DEFAULT_MESSAGES: Mapping[str, str] = {
    "rate_limit_error": "Simulated rate limit: slow down and retry later.",
    "overloaded_error": "Overloaded",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out",
    "authentication_error": "invalid x-api-key",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
}

FaultKind = Literal["status", "reset", "hang", "reply", "lost"]


def error_type(status: int) -> str:
    """The API's ``error.type`` for an HTTP status (``api_error`` for an unlisted 5xx)."""
    known = ERROR_TYPES.get(status)
    if known is not None:
        return known
    return "api_error" if status >= 500 else "invalid_request_error"


@dataclass(frozen=True, kw_only=True)
class Fault:
    """One injected fault; build it with :meth:`status`, :meth:`reset`, :meth:`hang`,
    :meth:`lost` (the work done, the answer lost) or :meth:`reply` (a normal answer whose
    text is given, e.g. to test how clients print it)."""

    kind: FaultKind
    status_code: int = 0
    retry_after: str | None = None
    retry_after_ms: str | None = None
    should_retry: bool | None = None
    message: str | None = None
    seconds: float = 0.0
    text: str = ""
    extra_headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def status(
        cls,
        code: int,
        *,
        retry_after: str | None = None,
        retry_after_ms: str | None = None,
        should_retry: bool | None = None,
        message: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """Answer with HTTP ``code`` and the API's error JSON; headers only when given
        (``headers``: any others, e.g. ``anthropic-ratelimit-*``)."""
        if isinstance(code, bool) or not isinstance(code, int) or not 400 <= code <= 599:
            raise InvalidArgumentError(
                f"Fault.status code must be an HTTP error status from 400 to 599, got {code!r}; "
                "use None in sim.script(...) for a normal answer"
            )
        return cls(
            kind="status",
            status_code=code,
            retry_after=retry_after,
            retry_after_ms=retry_after_ms,
            should_retry=should_retry,
            message=message,
            extra_headers=tuple((str(k), str(v)) for k, v in (headers or {}).items()),
        )

    @classmethod
    def reset(cls) -> Fault:
        """Drop the connection without sending any response."""
        return cls(kind="reset")

    @classmethod
    def hang(cls, seconds: float = 3600.0) -> Fault:
        """Accept the request and answer after ``seconds``, or at ``sim.release_hangs()``
        (never, if the simulator stops first)."""
        if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
            raise InvalidArgumentError(
                f"Fault.hang seconds must be a finite number >= 0, got {seconds!r}"
            )
        return cls(kind="hang", seconds=float(seconds))

    @classmethod
    def lost(cls, code: int | None = None) -> Fault:
        """Carry the request out, then lose its answer: send HTTP ``code`` instead, or with no
        code drop the connection (a streamed body, part of the way through).

        What a client cannot tell from a failure before the work: whatever it made (a paid
        message batch) exists although the client saw an error.
        """
        if code is None:
            return cls(kind="lost")
        return replace(cls.status(code), kind="lost")

    @classmethod
    def reply(cls, text: str) -> Fault:
        """Answer normally, but with exactly ``text`` (one output token per word)."""
        if not isinstance(text, str) or not text:
            raise InvalidArgumentError(f"Fault.reply text must be a non-empty string, got {text!r}")
        return cls(kind="reply", text=text)

    @property
    def error_type(self) -> str:
        return error_type(self.status_code)

    def error_message(self) -> str:
        return self.message or _DEFAULT_MESSAGES.get(self.error_type, "Simulated error")

    def headers(self) -> dict[str, str]:
        """The retry hints this status fault sends, exactly those that were given."""
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["retry-after"] = str(self.retry_after)
        if self.retry_after_ms is not None:
            headers["retry-after-ms"] = str(self.retry_after_ms)
        if self.should_retry is not None:
            headers["x-should-retry"] = "true" if self.should_retry else "false"
        headers.update(self.extra_headers)
        return headers


class FaultPlan:
    """Scripted faults first, in order; then the random rate. Safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: deque[Fault | None] = deque()
        self._probability = 0.0
        self._random_fault: Fault | None = None
        self._rng = random.Random(0)

    def script(self, faults: Iterable[Fault | None]) -> None:
        items = list(faults)
        for item in items:
            if item is not None and not isinstance(item, Fault):
                raise InvalidArgumentError(
                    f"sim.script() takes Fault values or None, got {item!r}; "
                    "build one with Fault.status(429), Fault.reset() or Fault.hang()"
                )
        with self._lock:
            self._script.extend(items)

    def set_rate(self, probability: float, fault: Fault, *, seed: int) -> None:
        if not 0.0 <= probability <= 1.0:
            raise InvalidArgumentError(
                f"fault probability must be between 0.0 and 1.0, got {probability!r}"
            )
        if not isinstance(fault, Fault):
            raise InvalidArgumentError(f"set_fault_rate() needs a Fault, got {fault!r}")
        with self._lock:
            self._probability = probability
            self._random_fault = fault
            self._rng = random.Random(seed)

    def clear(self) -> None:
        with self._lock:
            self._script.clear()
            self._probability = 0.0
            self._random_fault = None

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._script)

    def next(self) -> Fault | None:
        """The fault for the request arriving now, or None to answer it normally."""
        with self._lock:
            if self._script:
                return self._script.popleft()
            if self._random_fault is not None and self._rng.random() < self._probability:
                return self._random_fault
            return None
