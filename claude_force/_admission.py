"""Admission control: token buckets for rate limits (the concurrency gate for overload,
:class:`ConcurrencyGate`, lives in :mod:`._gate` and is re-exported here).

:class:`TokenBuckets` keeps, per model class, the service's per-minute buckets (requests,
input tokens, output tokens; or requests and ``tokens`` where a service states only input
and output together) on the client side, so that requests are sent only when they fit
instead of being bounced with 429s:

- limits are learned from the ``anthropic-ratelimit-*`` headers of responses (read by
  :mod:`._limit_headers`, which never fails on odd values); until the first
  arrive, only a few requests of a class go out at once. Configured limits (the constructor's,
  or ``rate_limits`` in claude.json) set a bucket before anything is learned and cap it
  afterwards (they can only lower what the service states);
- a request's input is estimated from its characters, scaled by the ratio of real to estimated
  tokens learned from each response's usage, and corrected from usage once answered; output is
  reserved from ``max_tokens`` and corrected the same way (as the service does). Prompt-cache
  reads are not charged, as on the service;
- every response's ``remaining`` lowers the local level when it is lower (another process or
  tool of the organisation spends the same allowance), and is compared with a model of the
  service's level that only this client's attempts drain: the difference is learned as the
  share of the refill others take (see :class:`_Bucket`), and the bucket refills that much
  slower, recovering as the reports stop showing it. The service's ``reset`` headers are not
  used: rounded to the second, and on the service they state the full refill whoever spends;
- a 429 sets the bucket to what the server reports and halves that bucket's refill, which
  recovers linearly over ``recovery_seconds``; a 429 stating no bucket at all empties every
  bucket of the class (one of them lacked the request) and is retried as any other 429;
- requests of one class are admitted first come, first served (a retry ahead of first
  attempts); the one at the head sleeps (with jitter) until it fits. A request whose
  predicted wait ends after its deadline fails at once with :class:`AdmissionDeadlineError`.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ._errors import APIError, InvalidArgumentError
from ._gate import ConcurrencyGate
from ._limit_headers import KINDS, stated
from ._usage import Usage

__all__ = [
    "DEFAULT_LIMITS",
    "AdmissionDeadlineError",
    "ConcurrencyGate",
    "Limits",
    "Ticket",
    "TokenBuckets",
    "limits_from_config",
    "model_class",
]

DEFAULT_LIMITS = "default"  # the key of a limits mapping for every class not named in it
CHARS_PER_TOKEN = 4.0  # the first guess for English text, before any usage calibrates it
_MAX_HEADROOM = 0.5  # of the input estimate, however poorly the ratio predicts
_SLOW_COOLDOWN = 2.0  # seconds during which further 429s do not slow a bucket again
_MIN_REFILL = 0.05  # of the stated refill: the slowest a bucket is assumed to refill
_MAX_UNSEEN = 0.9  # of the refill: the most others are assumed to take when admitting
# The estimate itself is bounded only against runaway: clamping it tighter would keep one
# side of the noise (attempts sent but not yet counted, read as a lower level) and lose the
# other, which would bias it. Admission uses it clipped to [0, _MAX_UNSEEN].
_UNSEEN_BOUND = 1.0
_UNSEEN_REQUESTS = 20  # the estimator's time constant is at least this many requests' refill
# A burst's reports come within seconds of each other; a peak long past says nothing.
_PEAK_HALF_LIFE = 10.0
_FAMILIES = ("opus", "sonnet", "haiku")
_UNITS = {k: k.replace("-", " ") for k in KINDS}


def model_class(model: str) -> str:
    """The group of models that share one set of limits on the service: the family.

    Every Opus 4.x shares the Opus buckets, and so on; an unknown model is its own class.
    """
    lowered = model.lower()
    for family in _FAMILIES:
        if family in lowered:
            return family
    return lowered


MAX_RATE_LIMIT = 10**12  # far above any organisation's limit; keeps the arithmetic in floats


def _check_limit(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RATE_LIMIT:
        raise InvalidArgumentError(
            f"Limits.{name} must be an integer from 1 to {MAX_RATE_LIMIT:,} or None (learn it "
            f"from the service), got {value!r}"
        )


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Per-minute limits to use for a model class; None leaves a limit to the service's
    headers. A configured limit is used before any is learned, and caps what is learned."""

    requests_per_minute: int | None = None
    input_tokens_per_minute: int | None = None
    output_tokens_per_minute: int | None = None

    def __post_init__(self) -> None:
        _check_limit("requests_per_minute", self.requests_per_minute)
        _check_limit("input_tokens_per_minute", self.input_tokens_per_minute)
        _check_limit("output_tokens_per_minute", self.output_tokens_per_minute)

    def per_kind(self) -> dict[str, int]:
        values = (
            self.requests_per_minute,
            self.input_tokens_per_minute,
            self.output_tokens_per_minute,
        )
        return {kind: v for kind, v in zip(KINDS[:3], values, strict=True) if v is not None}


def limits_from_config(
    given: Limits | Mapping[str, Limits] | None, section: Mapping[str, Mapping[str, int]]
) -> Limits | Mapping[str, Limits] | None:
    """The limits to keep to: the constructor's ``given`` when there are any, else the
    ``rate_limits`` section of ``claude.json`` (already validated); None when neither says
    anything, so that the buckets learn everything."""
    if given is not None:
        return given
    return {name: Limits(**fields) for name, fields in section.items()} or None


class AdmissionDeadlineError(APIError):
    """The rate limits would hold a request past its deadline; raised before it is sent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_type="rate_limited", attempts=0)


def deadline_error(
    wait: float, what: str, limit: float, kind: str, left: float
) -> AdmissionDeadlineError:
    """The error for a request that would wait ``wait`` s for ``what`` limit (``the sonnet``,
    ``the shared sonnet``) of ``limit`` per minute with ``left`` s to its deadline."""
    return AdmissionDeadlineError(
        f"rate limited: this request would wait about {wait:.1f}s for the {what} limit of "
        f"{limit:,.0f} {_UNITS.get(kind, kind)} per minute, past its deadline "
        f"({max(0.0, left):.1f}s left); raise deadline_seconds, send fewer or smaller "
        "requests, or ask Anthropic for higher limits"
    )


@dataclass(slots=True, eq=False)
class Ticket:
    """One admitted attempt: what it was charged, so that its answer can correct it."""

    model_class: str
    costs: dict[str, float]
    raw_input_estimate: float  # characters / CHARS_PER_TOKEN, before calibration
    charged: frozenset[str]  # the buckets that existed, and were charged, at admission
    done: bool = False
    sent: bool = False  # charged to the model of the service's buckets too


class _Bucket:
    """A continuously refilled bucket on the client side. The level may go below zero: a
    correction or a request larger than the bucket is repaid by refilling.

    Beside the admission ``level`` it keeps a model of the service's level: the last level the
    service reported (``base``, refilled since at the stated rate less the ``unseen`` share)
    less this client's own attempts since (``pending``; each charged when it leaves, not when
    admitted, since an admitted attempt may still wait for a concurrency slot). Each reported
    ``remaining`` is compared with the model; the difference is consumption this client cannot
    see (another process or tool of the same organisation) and corrects ``unseen`` by the
    difference spread over a horizon: an integral controller with that time constant. The
    model is then reset to the report, so errors that only exist while attempts are on the
    wire (an estimate against the exact count, an attempt not counted yet, answers read out
    of order) cancel out over the next reports instead of accumulating. The horizon is fixed
    rather than the time since the last report, whose weight would differ between the report
    that misses an attempt and the one that shows it; it is at least ``unseen_seconds``, and
    at least the refill time of ``_UNSEEN_REQUESTS`` typical requests plus one per attempt in
    flight (each is one request's worth of such noise), so that with limits that hold few
    requests a minute one request's noise does not read as another consumer. That count is
    the recent peak of attempts in flight (halving every ``_PEAK_HALF_LIFE`` seconds), not
    those at the report: a burst's first report (many attempts not counted yet) and the
    later ones that show them must weigh the same to cancel; weighed by the shrinking count,
    100 at once alone read as others taking 90%. A peak long past would only slow learning.
    """

    def __init__(self, capacity: float, level: float, now: float) -> None:
        self.capacity = capacity
        self.level = min(level, capacity)
        # The model of the service's level: ``base`` is its last report, refilled since
        # (up to the capacity, as the service's), ``pending`` our own net charges since.
        self.base = self.level
        self.pending = 0.0
        self.updated = now
        self.slow_factor = 1.0  # refill speed right after the last 429
        self.slowed_at = -math.inf
        self.unseen = 0.0  # share of the refill taken by consumers we cannot see, learned
        self.typical = 0.0  # a request's usual cost (moving average of charges)
        self.blind = 0  # attempts in flight not charged to this bucket: nothing to learn
        # The last of those was answered: the next report counts it and the model does not,
        # so it only resets the model (read as others' consumption, it slowed the refill).
        self.rebase = False

    def slowed(self, now: float, recovery: float) -> float:
        """The slowing after the last 429: its factor, back to 1 linearly over ``recovery``."""
        return min(1.0, self.slow_factor + (now - self.slowed_at) / recovery)

    def factor(self, now: float, recovery: float) -> float:
        """The refill speed now, as a share of the stated limit: what others are seen to
        leave, slowed for a while after a 429."""
        return max(_MIN_REFILL, self.slowed(now, recovery) * (1.0 - self.unseen_share))

    @property
    def unseen_share(self) -> float:
        """The share of the refill others take, as admission assumes it."""
        return min(_MAX_UNSEEN, max(0.0, self.unseen))

    def level_at(self, now: float, recovery: float) -> float:
        """The level at ``now``, refilled since the last update (changes nothing)."""
        if now <= self.updated:
            return self.level
        if self.updated - self.slowed_at >= recovery:  # not slowed: the usual case, cheaper
            speed = max(_MIN_REFILL, 1.0 - min(_MAX_UNSEEN, max(0.0, self.unseen)))
        else:  # the average speed over the interval (the factor rises linearly)
            speed = (self.factor(self.updated, recovery) + self.factor(now, recovery)) / 2
        gained = (now - self.updated) * self.capacity / 60.0 * speed
        return min(self.capacity, self.level + gained)

    def refill(self, now: float, recovery: float) -> None:
        updated, capacity = self.updated, self.capacity
        if now > updated:
            if updated - self.slowed_at >= recovery:
                # level_at's usual case, inline (min and max spelt out, same floats): every
                # attempt refills each bucket three times.
                share = self.unseen if self.unseen > 0.0 else 0.0
                speed = 1.0 - (share if share < _MAX_UNSEEN else _MAX_UNSEEN)
                speed = speed if speed > _MIN_REFILL else _MIN_REFILL
                level = self.level + (now - updated) * capacity / 60.0 * speed
                self.level = level if level < capacity else capacity
            else:
                self.level = self.level_at(now, recovery)
            # The model is what the service holds: no slowing after 429s, only others' share.
            base = self.base + (now - updated) * capacity / 60.0 * (1.0 - self.unseen)
            self.base = base if base < capacity else capacity
            self.updated = now

    def add(self, amount: float, *, model: bool = True) -> None:
        """Charge (negative) or give back (positive) ``amount``; ``model`` False for an
        attempt that has not left yet (the service has not counted it either)."""
        self.level = min(self.capacity, self.level + amount)
        if model:
            self.pending -= amount

    def charge(self, cost: float) -> None:
        """An attempt admitted: its cost off the level (the model's when it leaves)."""
        self.level -= cost
        self.typical += 0.1 * (cost - self.typical)

    def observe(
        self, remaining: float, *, authoritative: bool, seconds: float, in_flight: float
    ) -> None:
        """The service reports ``remaining`` (the bucket is refilled to now first):
        learn from the model's difference to it, then take it as the level when it is lower
        (or ``authoritative``: a 429, which the service refused for lack of it)."""
        rate = self.capacity / 60.0
        horizon = max(seconds, (_UNSEEN_REQUESTS + in_flight) * self.typical / rate)
        # Our own charges are taken off after the capacity: an attempt the service has not
        # counted yet must not vanish into a bucket that the model refilled to the top.
        remaining = min(remaining, self.capacity)
        if not (self.blind or self.rebase):
            predicted = min(self.capacity, self.base - self.pending)  # the service's cap too
            step = (predicted - remaining) / (rate * horizon)
            self.unseen = min(_UNSEEN_BOUND, max(-_UNSEEN_BOUND, self.unseen + step))
        self.base = remaining
        self.pending = 0.0
        self.rebase = False
        if authoritative or remaining < self.level:
            self.level = min(remaining, self.capacity)

    def seconds_until(self, cost: float, now: float, recovery: float) -> float:
        missing = min(cost, self.capacity) - self.level
        if missing <= 1e-6:  # float dust: a wait shorter than the clock can count never ends
            return 0.0
        # The current (lowest) speed: an upper bound while the refill is recovering.
        return missing / (self.capacity / 60.0 * self.factor(now, recovery))


_State = Literal["unknown", "known", "absent"]


@dataclass(eq=False)
class _Waiter:
    """A request waiting for admission: its costs in uncalibrated input tokens (the ratio
    may be learned meanwhile), its turn at the head of the queue, and since when it has
    waited for another process to learn the limits (shared buckets only)."""

    costs: dict[str, float]
    turn: asyncio.Future[None]
    retry: bool = False
    learning_since: float | None = None
    local: bool = False  # shared buckets failed it once: its own buckets admit it


@dataclass(eq=False)
class _Class:
    """One model class: its buckets, calibration and queue of waiting requests."""

    state: _State
    caps: dict[str, int]
    buckets: dict[str, _Bucket] = field(default_factory=dict)
    ratio: float | None = None  # real / estimated input tokens, learned
    spread: float = 0.0  # mean relative error of that ratio on single requests, learned
    in_flight: int = 0
    # The most attempts in flight lately (halving every _PEAK_HALF_LIFE seconds): the
    # estimator's noise scale; see _Bucket.
    peak_in_flight: float = 0.0
    peak_at: float = 0.0
    queue: deque[_Waiter] = field(default_factory=deque)
    queued: dict[str, float] = field(default_factory=lambda: dict.fromkeys(KINDS, 0.0))
    changed: asyncio.Future[None] | None = None


class TokenBuckets:
    """Client-side rate-limit buckets for every model class. Bound to one event loop.

    Use per attempt: ``ticket = await admit(...)`` before sending, :meth:`sending` as it
    leaves (after any other wait, such as a concurrency slot), then exactly one of
    :meth:`settle` (an answer, or a failure other than 429), :meth:`on_rate_limited` or
    :meth:`refund` (never sent).

    ``max_in_flight`` bounds the attempts of a class admitted and not yet answered: an
    attempt admitted long before it can be sent (it waits for a concurrency slot) is a
    prediction of the service's level that far ahead, and less accurate for it.

    ``unseen_seconds`` is how quickly the share of the refill taken by consumers this client
    cannot see is learned (and unlearned when they stop): a difference between what the
    service reports remaining and what this client's own use predicts corrects the share by
    the difference spread over that many seconds of refill.
    """

    def __init__(
        self,
        *,
        limits: Limits | Mapping[str, Limits] | None = None,
        unknown_in_flight: int = 4,
        max_in_flight: int | None = None,
        calibration_weight: float = 0.2,
        recovery_seconds: float = 10.0,
        unseen_seconds: float = 5.0,
        jitter: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        _check_count("unknown_in_flight", unknown_in_flight)
        if max_in_flight is not None:
            _check_count("max_in_flight", max_in_flight)
        self._limits = limits
        self._unknown_in_flight = unknown_in_flight
        self._max_in_flight = max_in_flight
        self._weight = calibration_weight
        self._recovery = recovery_seconds
        self._unseen_seconds = unseen_seconds
        self._jitter = jitter
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._classes: dict[str, _Class] = {}

    # Whether this process's queue predicts the waits (for the deadline check on entry) and
    # a retry waits behind the head; False where another store decides (shared buckets).
    _queue_predicts = True

    # -- the four calls ----------------------------------------------------------------------

    async def admit(
        self,
        model: str,
        input_estimate_chars: int,
        max_tokens: int,
        *,
        deadline: float | None = None,
        retry: bool = False,
    ) -> Ticket:
        """Wait until the request fits its class's buckets, charge it and return its ticket.

        ``deadline`` is a time on this object's clock; when the predicted wait ends after it,
        :class:`AdmissionDeadlineError` is raised at once instead of waiting. A ``retry``
        (an attempt after one that was sent) queues ahead of first attempts, behind the
        head and earlier retries: it has already waited its turn once, and sending it to the
        back of a long queue would multiply its time to an answer.
        """
        cls_name = model_class(model)
        cls = self._class(cls_name)
        raw_costs = _raw_costs(input_estimate_chars, max_tokens)
        now = self._clock()
        waiter = _Waiter(raw_costs, asyncio.get_running_loop().create_future(), retry)
        place = self._place(cls, waiter)
        if deadline is not None and self._queue_predicts:
            self._check_queue_deadline(cls_name, cls, raw_costs, place, now, deadline)
        self._enqueue(cls, waiter, place)
        try:
            if cls.queue[0] is not waiter:
                await waiter.turn
            while True:
                got = await self._try_admit(cls_name, cls, waiter, deadline)
                if isinstance(got, Ticket):
                    return got
                await self._pause(cls, max(0.001, got * (1.0 + self._jitter * self._rand())))
        finally:
            self._dequeue(cls, waiter)

    def _check_queue_deadline(
        self, name: str, cls: _Class, raw: Mapping[str, float], place: int, now: float, end: float
    ) -> None:
        """Raise :class:`AdmissionDeadlineError` when what is queued ahead of ``place``, and
        this request (``raw`` costs), could not be admitted before ``end``. Apart from
        admit: its comprehension's cells would be made, and held, by every admission."""
        ahead = {k: raw[k] + cls.queued[k] for k in KINDS}
        for behind in itertools.islice(cls.queue, place, None):  # a retry's
            for kind in KINDS:
                ahead[kind] -= behind.costs[kind]
        self._check_deadline(name, cls, _priced(cls, ahead), now, end)

    async def _try_admit(
        self, cls_name: str, cls: _Class, waiter: _Waiter, deadline: float | None
    ) -> Ticket | float:
        """The head of the queue asks: a ticket when it fits now, else the seconds to wait.
        Raises :class:`AdmissionDeadlineError` when the wait would end past ``deadline``."""
        now = self._clock()
        costs = _priced(cls, waiter.costs)
        wait = self._wait_for(cls, _with_headroom(cls, costs), now)
        if wait <= 0:
            return Ticket(cls_name, costs, waiter.costs["input-tokens"], self._charge(cls, costs))
        if deadline is not None:
            self._check_deadline(cls_name, cls, costs, now, deadline)
        return wait

    def sending(self, ticket: Ticket) -> None:
        """The attempt leaves now: from here the service may count it. Called by
        :meth:`settle` and :meth:`on_rate_limited` when the caller did not."""
        if ticket.sent or ticket.done:
            return
        ticket.sent = True
        cls = self._classes[ticket.model_class]
        # Refilled first: after a 429 the speed varies, so levels depend on when refills fall.
        self._refill(cls, self._clock())
        for kind in ticket.charged:
            cls.buckets[kind].pending += ticket.costs[kind]

    def settle(
        self, ticket: Ticket, usage: Usage | None, headers: Mapping[str, str] | None
    ) -> None:
        """An attempt ended other than by a 429: correct its charge and learn from headers.

        ``usage`` None (an error, a timeout) gives back the output reservation and keeps the
        input charge, which the service may have counted. Calling it twice does nothing.
        """
        if ticket.done:
            return
        self.sending(ticket)
        ticket.done = True
        cls = self._classes[ticket.model_class]
        self._finish(cls, ticket)
        now = self._clock()
        self._refill(cls, now)
        for kind, delta in corrections(ticket, usage).items():
            if kind in ticket.charged:
                cls.buckets[kind].add(delta)
        if usage is not None:
            self._calibrate(cls, ticket, usage)
        learned = self._learn(cls, headers, now, authoritative=False)
        if not learned and cls.state == "unknown" and usage is not None:
            # An answer without rate-limit headers (a proxy, another provider): nothing to
            # learn, so only the concurrency gate limits this class.
            cls.state = "absent"
        self._notify(cls)

    def on_rate_limited(self, ticket: Ticket, headers: Mapping[str, str] | None) -> bool:
        """The attempt was answered 429: nothing was charged by the service, so the ticket
        is refunded; the buckets take the server's ``remaining``, and the ones too low for
        this request refill at half speed for a while.

        True when the headers explain the 429 (a bucket's ``remaining`` is below what this
        request needs): the buckets then pace the retry. False when they do not (another
        limit of the service, or a proxy): the server's ``retry-after`` and ``max_retries``
        apply as to any 429."""
        if ticket.done:
            return False
        self.sending(ticket)
        ticket.done = True
        cls = self._classes[ticket.model_class]
        self._finish(cls, ticket)
        now = self._clock()
        self._refill(cls, now)
        for kind in ticket.charged:
            cls.buckets[kind].add(ticket.costs[kind])
        self._learn(cls, headers, now, authoritative=True)
        short = too_low(headers, ticket.costs)
        for kind in short:
            named = cls.buckets.get(kind)
            if named is None or now - named.slowed_at < _SLOW_COOLDOWN:
                continue  # one burst of bounced requests halves the refill once
            named.slow_factor = max(0.1, named.slowed(now, self._recovery) / 2)
            named.slowed_at = now
        if not stated(headers):
            # Refused without saying which bucket: one of them lacked this request, so none
            # is trusted to hold more than nothing until it refills.
            for bucket in cls.buckets.values():
                bucket.level = min(bucket.level, 0.0)
        self._notify(cls)
        return bool(short) and any(kind in cls.buckets for kind in short)

    def refund(self, ticket: Ticket) -> None:
        """The attempt was never sent (cancelled while waiting for a slot): give back all
        it was charged. Does nothing for a ticket already settled."""
        if ticket.done:
            return
        ticket.done = True
        cls = self._classes[ticket.model_class]
        self._finish(cls, ticket)
        self._refill(cls, self._clock())
        for kind in ticket.charged:
            cls.buckets[kind].add(ticket.costs[kind], model=ticket.sent)
        self._notify(cls)

    def snapshot(self) -> dict[str, object]:
        """Levels for stats and metrics: per model class, its state, requests in flight and
        waiting, the learned input ratio and each bucket's limit, level and refill factor.

        Changes nothing, so another thread may read it (the sync door's callers do)."""
        now = self._clock()
        out: dict[str, object] = {}
        for name, cls in sorted(list(self._classes.items())):
            out[name] = {
                "state": cls.state,
                "in_flight": cls.in_flight,
                "waiting": len(cls.queue),
                "input_ratio": cls.ratio,
                "input_ratio_spread": cls.spread,
                "buckets": {
                    kind: {
                        "limit": b.capacity,
                        "level": b.level_at(now, self._recovery),
                        "refill_factor": b.factor(now, self._recovery),
                        "unseen_share": b.unseen_share,
                    }
                    for kind, b in list(cls.buckets.items())
                },
            }
        return out

    # -- inside ------------------------------------------------------------------------------

    def _class(self, name: str) -> _Class:
        cls = self._classes.get(name)
        if cls is None:
            caps = self._caps_for(name)
            now = self._clock()
            buckets = {kind: _Bucket(cap, cap, now) for kind, cap in caps.items()}
            cls = _Class("known" if caps else "unknown", caps, buckets)
            self._classes[name] = cls
        return cls

    def _caps_for(self, name: str) -> dict[str, int]:
        limits = self._limits
        if limits is None:
            return {}
        if isinstance(limits, Limits):
            return limits.per_kind()
        for key, value in limits.items():
            if key != DEFAULT_LIMITS and model_class(key) == name:
                return value.per_kind()
        fallback = limits.get(DEFAULT_LIMITS)
        return fallback.per_kind() if fallback is not None else {}

    def _wait_for(self, cls: _Class, costs: Mapping[str, float], now: float) -> float:
        """Seconds until ``costs`` fit (inf: wait for an answer to learn the limits)."""
        if cls.state == "absent":
            return 0.0
        if cls.state == "unknown":
            return 0.0 if cls.in_flight < self._unknown_in_flight else math.inf
        if self._max_in_flight is not None and cls.in_flight >= self._max_in_flight:
            return math.inf  # an answer wakes the head
        self._refill(cls, now)
        return max(
            (b.seconds_until(costs[k], now, self._recovery) for k, b in cls.buckets.items()),
            default=0.0,
        )

    def _check_deadline(
        self,
        name: str,
        cls: _Class,
        costs: Mapping[str, float],
        now: float,
        deadline: float,
    ) -> None:
        if cls.state != "known":
            return  # nothing to predict yet
        self._refill(cls, now)
        waits = {k: b.seconds_until(costs[k], now, self._recovery) for k, b in cls.buckets.items()}
        kind = max(waits, key=lambda k: waits[k], default=None)
        if kind is None or now + waits[kind] <= deadline:
            return
        raise deadline_error(
            waits[kind], model_class(name), cls.buckets[kind].capacity, kind, deadline - now
        )

    def _charge(self, cls: _Class, costs: Mapping[str, float]) -> frozenset[str]:
        cls.in_flight += 1
        self._peak(cls, self._clock())
        for kind, bucket in cls.buckets.items():
            bucket.charge(costs[kind])  # the model's when it leaves: sending()
        return frozenset(cls.buckets)

    @staticmethod
    def _finish(cls: _Class, ticket: Ticket) -> None:
        cls.in_flight -= 1
        for kind, bucket in cls.buckets.items():
            if kind not in ticket.charged and bucket.blind > 0:
                bucket.blind -= 1
                bucket.rebase = not bucket.blind

    @staticmethod
    def _peak(cls: _Class, now: float) -> float:
        """The class's recent peak of attempts in flight, decayed to ``now`` and raised to
        those in flight now."""
        if now > cls.peak_at:
            cls.peak_in_flight *= 0.5 ** ((now - cls.peak_at) / _PEAK_HALF_LIFE)
            cls.peak_at = now
        cls.peak_in_flight = max(cls.peak_in_flight, float(cls.in_flight))
        return cls.peak_in_flight

    def _refill(self, cls: _Class, now: float) -> None:
        for bucket in cls.buckets.values():
            bucket.refill(now, self._recovery)

    def _calibrate(self, cls: _Class, ticket: Ticket, usage: Usage) -> None:
        """Learn the ratio of real to estimated input tokens from an answer's usage."""
        if ticket.raw_input_estimate <= 0 or usage.prompt_tokens <= 0:
            return
        seen = usage.prompt_tokens / ticket.raw_input_estimate
        if cls.ratio is None:
            cls.ratio = seen
        else:
            error = abs(seen - cls.ratio) / cls.ratio
            cls.spread += self._weight * (error - cls.spread)
            cls.ratio += self._weight * (seen - cls.ratio)

    def _learn(
        self, cls: _Class, headers: Mapping[str, str] | None, now: float, *, authoritative: bool
    ) -> bool:
        """Take the limits and remaining levels from ``anthropic-ratelimit-*`` headers;
        True when they state any limit."""
        learned = False
        peak: float | None = None  # the same at the same ``now``: taken once
        for kind, (cap, left) in stated(headers, cls.caps).items():
            bucket = cls.buckets.get(kind)
            if cap is None:
                # A level without its limit: it can only lower a bucket already known.
                if bucket is not None and left is not None:
                    lowered = left if authoritative else min(left, bucket.level)
                    bucket.level = min(lowered, bucket.capacity)
                continue
            learned = True
            if bucket is None:
                cls.buckets[kind] = bucket = _Bucket(cap, cap if left is None else left, now)
                # Attempts admitted before the bucket existed were not charged to it; the
                # service may count them after this report, unknown to the model.
                bucket.blind = cls.in_flight
                continue
            bucket.capacity = cap
            if left is not None:
                if peak is None:
                    peak = self._peak(cls, now)
                bucket.observe(
                    left, authoritative=authoritative, seconds=self._unseen_seconds, in_flight=peak
                )
        if learned:
            cls.state = "known"
        return learned

    def _place(self, cls: _Class, waiter: _Waiter) -> int:
        """Where ``waiter`` joins the queue: at the back, or a retry behind the head (whose
        turn has come) and the retries already waiting; at the head itself where the
        buckets are shared (the store serialises the asks anyway)."""
        if not waiter.retry:
            return len(cls.queue)
        if not self._queue_predicts:
            return 0
        place = 0
        for before in cls.queue:
            if not (before.retry or before.turn.done()):
                break
            place += 1
        return place

    def _enqueue(self, cls: _Class, waiter: _Waiter, place: int) -> None:
        cls.queue.insert(place, waiter)
        for kind in KINDS:
            cls.queued[kind] += waiter.costs[kind]
        if cls.queue[0] is waiter:
            waiter.turn.set_result(None)

    def _dequeue(self, cls: _Class, waiter: _Waiter) -> None:
        if cls.queue and cls.queue[0] is waiter:
            cls.queue.popleft()
        else:
            cls.queue.remove(waiter)  # cancelled while waiting its turn
        for kind in KINDS:
            cls.queued[kind] -= waiter.costs[kind]
        if cls.queue and not cls.queue[0].turn.done():
            cls.queue[0].turn.set_result(None)

    async def _pause(self, cls: _Class, seconds: float) -> None:
        """Sleep ``seconds`` or until an answer changes the buckets, whichever comes first."""
        loop = asyncio.get_running_loop()
        if cls.changed is None or cls.changed.done():
            cls.changed = loop.create_future()
        waits: list[asyncio.Future[Any]] = [cls.changed]
        sleeper = None
        if math.isfinite(seconds):
            sleeper = asyncio.ensure_future(self._sleep(seconds))
            waits.append(sleeper)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if sleeper is not None and not sleeper.done():
                sleeper.cancel()

    @staticmethod
    def _notify(cls: _Class) -> None:
        if cls.changed is not None and not cls.changed.done():
            cls.changed.set_result(None)


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{name} must be an integer >= 1, got {value!r}")


def _with_headroom(cls: _Class, costs: Mapping[str, float]) -> dict[str, float]:
    """Costs to wait for: the input estimate plus twice its usual error.

    Only the estimate is charged; the headroom stays in the bucket for the next request,
    so it delays a request slightly without lowering throughput, and keeps a request whose
    estimate is low from reaching the service before its tokens are there (a 429).
    """
    padded = dict(costs)
    padded["input-tokens"] *= 1.0 + min(_MAX_HEADROOM, 2.0 * cls.spread)
    return padded


def _raw_costs(chars: int, max_tokens: int) -> dict[str, float]:
    """A request's costs per bucket kind, its input in uncalibrated tokens."""
    raw = chars / CHARS_PER_TOKEN
    costs = {"requests": 1.0, "input-tokens": raw, "output-tokens": float(max_tokens)}
    costs["tokens"] = raw + max_tokens
    return costs


def _priced(cls: _Class, raw_costs: Mapping[str, float]) -> dict[str, float]:
    """Costs with the input scaled by the class's learned ratio of real to estimated tokens."""
    costs = dict(raw_costs)
    if cls.ratio is not None:
        costs["input-tokens"] *= cls.ratio
    costs["tokens"] = costs["input-tokens"] + costs["output-tokens"]
    return costs


def corrections(ticket: Ticket, usage: Usage | None) -> dict[str, float]:
    """What to give back to each bucket kind once an attempt is answered (negative: to
    charge more). Output was reserved as ``max_tokens``; input was an estimate, corrected
    only when usage tells (an attempt that failed may have been counted). Prompt-cache
    reads are free, as on the service."""
    out = {"output-tokens": ticket.costs["output-tokens"]}
    if usage is not None:
        out["output-tokens"] -= usage.output_tokens
        counted = usage.input_tokens + usage.cache_write_tokens
        out["input-tokens"] = ticket.costs["input-tokens"] - counted
    out["tokens"] = out["output-tokens"] + out.get("input-tokens", 0.0)
    return out


def too_low(headers: Mapping[str, str] | None, costs: Mapping[str, float]) -> frozenset[str]:
    """The kinds whose stated ``remaining`` is below what a refused request needed: the
    buckets that explain its 429."""
    return frozenset(
        kind
        for kind, (_, left) in stated(headers).items()
        if left is not None and left < costs[kind]
    )
