"""The retry policy as pure functions: which failures are retried and how long to wait.

Split from :mod:`._transport`, whose one retry loop applies it."""

from __future__ import annotations

import email.utils
from collections.abc import Mapping

__all__ = [
    "INITIAL_DELAY",
    "MAX_DELAY",
    "MAX_RETRY_AFTER",
    "NON_RETRYABLE_STATUSES",
    "RETRYABLE_STATUSES",
    "has_rate_limit_headers",
    "parse_retry_after",
    "retry_delay",
    "should_retry",
]

RETRYABLE_STATUSES = frozenset({408, 409, 429})
NON_RETRYABLE_STATUSES = frozenset({400, 401, 403, 404, 413, 422})

INITIAL_DELAY = 0.5
MAX_DELAY = 8.0
MAX_RETRY_AFTER = 60.0
RATELIMIT_HEADER_PREFIX = "anthropic-ratelimit-"


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
        try:
            seconds = float(email.utils.mktime_tz(parsed)) - now
        except (ValueError, OverflowError):  # a date no calendar holds (year 99999)
            return None
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

    The server's ``retry-after-ms`` / ``retry-after`` is obeyed, lengthened by up to 25% by
    ``jitter`` (a number in [0, 1)); waits are capped at 60 s, spread down to 45 s by
    jitter. Otherwise exponential backoff ``initial * 2**retries_done`` capped at ``cap``,
    reduced by up to 25% by ``jitter`` so that clients spread out.
    """
    asked = parse_retry_after(headers, now=now)
    if asked is not None:
        # Up to 25% more, so requests bounced together do not all come back in the same
        # instant; capped at a minute as the SDK caps it (spread below the cap when hit).
        spread = asked * (1.0 + 0.25 * jitter)
        return spread if spread <= MAX_RETRY_AFTER else MAX_RETRY_AFTER * (1.0 - 0.25 * jitter)
    backoff = min(initial * 2.0 ** min(retries_done, 60), cap)
    return backoff * (1.0 - 0.25 * jitter)


def has_rate_limit_headers(headers: Mapping[str, str] | None) -> bool:
    """Whether a response states the service's rate-limit buckets."""
    return bool(headers) and any(
        name.lower().startswith(RATELIMIT_HEADER_PREFIX) for name in (headers or {})
    )
