"""Server-side rate limits: token buckets per model class, as the real service enforces them.

Each organisation has, per model class, three buckets: requests, input tokens and output
tokens per minute. A bucket holds at most its per-minute limit and refills continuously at
``limit / 60`` per second (not in fixed windows). A request is admitted only when every
bucket can cover it; otherwise it is answered 429 ``rate_limit_error`` with ``retry-after``
(whole seconds, rounded up) and nothing is charged.

What is charged, following the service's documentation:

- requests: one per admitted request;
- input tokens: the prompt's tokens that are not read from the prompt cache (cache reads do
  not count against input tokens per minute; cache writes do);
- output tokens: ``max_tokens`` is reserved when the request is admitted (the service
  estimates output from ``max_tokens`` up front) and the unused part is given back when the
  answer is complete. A request with a generous ``max_tokens`` therefore occupies output
  allowance while it runs, exactly as on the service.

An invisible neighbour (another workload of the same organisation that the client cannot
see) is modelled by ``neighbour_share``: that fraction of every refill never reaches the
bucket, while the headers still report the full limit.

Not thread-safe by itself: the server thread does the bucket work; a lock guards the
statistics that tests read from their own thread.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .._errors import InvalidArgumentError

__all__ = [
    "KINDS",
    "PLAUSIBLE_LIMITS",
    "Admission",
    "RateLimits",
    "Rejection",
    "ServerRateLimiter",
    "model_class",
]

KINDS = ("requests", "input-tokens", "output-tokens")
_UNITS = {"requests": "requests", "input-tokens": "input tokens", "output-tokens": "output tokens"}
_FAMILIES = ("opus", "sonnet", "haiku")


def model_class(model: str) -> str:
    """The group of models that share limits: the family (``opus``, ``sonnet``, ``haiku``).

    The service pools the versions of one family (every Opus 4.x shares one set of buckets);
    an unknown model is its own class.
    """
    lowered = model.lower()
    for family in _FAMILIES:
        if family in lowered:
            return family
    return lowered


def _check_limit(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(
            f"RateLimits.{name} must be an integer >= 1 or None (no limit), got {value!r}"
        )


@dataclass(frozen=True, kw_only=True)
class RateLimits:
    """Per-minute limits the simulator enforces for each model class; None means no limit.

    ``neighbour_share`` (0 to below 1) is the fraction of every refill consumed by a workload
    the client cannot see.
    """

    requests_per_minute: int | None = None
    input_tokens_per_minute: int | None = None
    output_tokens_per_minute: int | None = None
    neighbour_share: float = 0.0

    def __post_init__(self) -> None:
        _check_limit("requests_per_minute", self.requests_per_minute)
        _check_limit("input_tokens_per_minute", self.input_tokens_per_minute)
        _check_limit("output_tokens_per_minute", self.output_tokens_per_minute)
        share = self.neighbour_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share < 1.0:
            raise InvalidArgumentError(
                f"RateLimits.neighbour_share must be a number from 0 to below 1 (the share of "
                f"each refill another workload takes), got {share!r}"
            )

    def per_kind(self) -> dict[str, int]:
        """The configured limits by header name (``requests``, ``input-tokens``, ...)."""
        values = (
            self.requests_per_minute,
            self.input_tokens_per_minute,
            self.output_tokens_per_minute,
        )
        return {kind: value for kind, value in zip(KINDS, values, strict=True) if value is not None}


# The limits the simulator's headers state when it enforces none (a high usage tier's).
PLAUSIBLE_LIMITS = RateLimits(
    requests_per_minute=4_000,
    input_tokens_per_minute=2_000_000,
    output_tokens_per_minute=400_000,
)


class _Bucket:
    """A continuously refilled bucket that starts full; the level may go below zero when a
    request larger than the whole bucket is admitted (it then repays the debt by refilling)."""

    def __init__(self, limit: int, *, share: float, now: float) -> None:
        self.limit = limit
        self.rate = limit / 60.0 * (1.0 - share)
        self.level = float(limit)
        self._updated = now

    def refill(self, now: float) -> None:
        if now > self._updated:
            self.level = min(float(self.limit), self.level + (now - self._updated) * self.rate)
        self._updated = max(self._updated, now)

    def seconds_until(self, cost: float) -> float:
        """Seconds until ``cost`` fits (a cost above the limit needs a full bucket)."""
        missing = min(cost, float(self.limit)) - self.level
        return max(0.0, missing / self.rate)

    def seconds_until_full(self) -> float:
        return max(0.0, (self.limit - self.level) / self.rate)


@dataclass(slots=True)
class Admission:
    """An admitted request: what was charged, so the answer can correct it."""

    model_class: str
    input_tokens: int
    output_reserved: int
    settled: bool = False


@dataclass(frozen=True, slots=True)
class Rejection:
    """A request that does not fit: the 429's message and headers."""

    kind: str
    message: str
    headers: dict[str, str]


@dataclass(slots=True)
class _Stats:
    admitted: int = 0
    rejected: int = 0
    rejected_by: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    input_tokens: int = 0
    output_tokens: int = 0
    first_admitted: float | None = None  # on the limiter's clock
    last_admitted: float | None = None


class ServerRateLimiter:
    """The buckets of every model class, created on first use of the class.

    ``enforce=False`` keeps the same accounts and headers but refuses nothing (a bucket may
    go below zero; its headers then say 0): the simulator's plausible headers when no limits
    are set.
    """

    def __init__(
        self,
        limits: RateLimits,
        *,
        clock: Callable[[], float],
        wall: Callable[[], float],
        enforce: bool = True,
    ) -> None:
        self.limits = limits
        self._enforce = enforce
        self._clock = clock
        self._wall = wall
        self._classes: dict[str, dict[str, _Bucket]] = {}
        self._stats = _Stats()
        self._lock = threading.Lock()

    def admit(self, model: str, *, input_tokens: int, max_tokens: int) -> Admission | Rejection:
        """Charge the request to its class's buckets, or say which bucket it would exceed."""
        cls = model_class(model)
        buckets = self._buckets(cls)
        costs = {"requests": 1, "input-tokens": input_tokens, "output-tokens": max_tokens}
        waits = {kind: b.seconds_until(costs[kind]) for kind, b in buckets.items()}
        blocked = {kind: wait for kind, wait in waits.items() if wait > 0}
        if blocked and self._enforce:
            kind = max(blocked, key=lambda k: blocked[k])
            with self._lock:
                self._stats.rejected += 1
                self._stats.rejected_by[kind] += 1
            headers = self._headers(buckets)
            # Whole seconds, rounded up, as the service sends them; never 0 for a refusal.
            headers["retry-after"] = str(max(1, math.ceil(blocked[kind])))
            return Rejection(kind, self._message(kind, buckets[kind].limit), headers)
        for kind, bucket in buckets.items():
            bucket.level -= costs[kind]
        now = self._clock()
        with self._lock:
            if self._stats.first_admitted is None:
                self._stats.first_admitted = now
            self._stats.last_admitted = now
            self._stats.admitted += 1
            self._stats.input_tokens += input_tokens
        return Admission(cls, input_tokens, max_tokens)

    def settle(self, admission: Admission, *, input_tokens: int, output_tokens: int) -> None:
        """Correct the charge once the answer is known (idempotent): the output reservation
        becomes the tokens produced, the input charge the prompt tokens not read from cache."""
        if admission.settled:
            return
        admission.settled = True
        buckets = self._buckets(admission.model_class)
        corrections = {
            "input-tokens": input_tokens - admission.input_tokens,
            "output-tokens": output_tokens - admission.output_reserved,
        }
        for kind, delta in corrections.items():
            bucket = buckets.get(kind)
            if bucket is not None:
                bucket.level = min(float(bucket.limit), bucket.level - delta)
        with self._lock:
            self._stats.input_tokens += input_tokens - admission.input_tokens
            self._stats.output_tokens += output_tokens

    def headers(self, model: str) -> dict[str, str]:
        """The ``anthropic-ratelimit-*`` headers for ``model``'s class, as of now."""
        return self._headers(self._buckets(model_class(model)))

    def stats(self) -> dict[str, object]:
        """Counters since start: admitted and rejected requests (by bucket), tokens charged,
        and when the first and the last request were admitted (seconds on the limiter's
        clock, None before any): the span over which a client kept to the limits."""
        with self._lock:
            s = self._stats
            return {
                "admitted": s.admitted,
                "rejected": s.rejected,
                "rejected_by": dict(s.rejected_by),
                "input_tokens": s.input_tokens,
                "output_tokens": s.output_tokens,
                "first_admitted": s.first_admitted,
                "last_admitted": s.last_admitted,
            }

    def _buckets(self, cls: str) -> dict[str, _Bucket]:
        now = self._clock()
        buckets = self._classes.get(cls)
        if buckets is None:
            share = self.limits.neighbour_share
            buckets = {
                kind: _Bucket(limit, share=share, now=now)
                for kind, limit in self.limits.per_kind().items()
            }
            self._classes[cls] = buckets
        for bucket in buckets.values():
            bucket.refill(now)
        return buckets

    def _headers(self, buckets: dict[str, _Bucket]) -> dict[str, str]:
        wall = self._wall()
        out: dict[str, str] = {}
        for kind, bucket in buckets.items():
            # Rounded up to the second: the bucket is certainly full by then.
            full_at = datetime.fromtimestamp(
                math.ceil(wall + bucket.seconds_until_full()), timezone.utc
            )
            out[f"anthropic-ratelimit-{kind}-limit"] = str(bucket.limit)
            out[f"anthropic-ratelimit-{kind}-remaining"] = str(max(0, math.floor(bucket.level)))
            out[f"anthropic-ratelimit-{kind}-reset"] = full_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        return out

    @staticmethod
    def _message(kind: str, limit: int) -> str:
        return (
            f"This request would exceed the rate limit for your organization of {limit:,} "
            f"{_UNITS[kind]} per minute. For details, refer to: "
            "https://docs.claude.com/en/api/rate-limits. You can see the response headers "
            "for current usage. Please reduce the prompt length or the maximum tokens "
            "requested, or try again later."
        )
