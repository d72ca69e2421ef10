"""Rate limits shared by every process pointed at one Redis (``redis_url``).

The service's limits belong to the organisation, not to a process: N processes each pacing
itself to the full limit send N times too much. With ``redis_url`` set, the token buckets of a
model class live in one Redis hash, and one Lua script (:data:`BUCKETS_LUA`) does all the
arithmetic on the server, atomically:

- it refills continuously from the server's ``TIME`` (clients' clocks never meet), with the
  refill slowed by a quarter after a 429 and recovering linearly, as in :mod:`._admission`;
- ``take`` charges requests, input and output tokens in one step or not at all. When the
  tokens are there within :data:`BOOK_AHEAD` seconds it books them at once and returns the wait
  (the caller sleeps it, then sends): processes are served in the order they asked, so a
  large prompt is not overtaken for ever by small ones. Otherwise it charges nothing and
  returns the wait. In each process requests queue first come, first served and the head
  asks; a retry after a 429 asks first and books up to :data:`RETRY_BOOK_AHEAD` ahead, so it
  goes before the first attempts of every process rather than waiting again behind tokens
  others keep taking;
- every charge is entered in a ledger (a sorted set by the time its attempt left; ``sent``
  dates it as the process sends it, until then it counts as not yet left). ``update``
  corrects a charge from usage, gives back what a 429 or a cancelled attempt never spent,
  writes the limits learned from ``anthropic-ratelimit-*`` headers (so every process shares
  one calibration) and slows the refill of a bucket a 429 named. The ``remaining`` a report
  states is read against the ledger: the level becomes that ``remaining``, refilled since the
  answer, less every charge that left after the reporting attempt or has not left yet (up or
  down; erring low by about one service time of traffic, never high). Between reports the
  level refills at :data:`PREDICTED_REFILL` of what is learned. Beside it a model of the same
  estimate, drained by every take, is compared with each new estimate; the difference, spread
  over a horizon of at least 5 s, corrects the share of the refill a workload we cannot see
  takes, and the admission refill is reduced by that share for every process;
- until any process knows a class's limits, one request at a time across all processes
  (the probe) goes out uncharged to learn them: the level its answer reports then covers
  everything sent.

Keys are ``claude-force:limits:<organisation>:<class>`` (and ``...:ledger``, the charges of the
last minute), where the organisation is a hash of the API key and base URL (never the key
itself): two organisations never share buckets.
Each write renews a TTL (:data:`KEY_TTL_MS`), so nothing stays after the last process stops.

:class:`SharedTokenBuckets` is :class:`TokenBuckets` with its levels in Redis; the local
buckets keep learning from every answer, so when Redis cannot be reached (at start or
mid-run) the same object carries on with local buckets: one warning, a metric, and no
request fails because of Redis. It tries Redis again after :data:`REST_AFTER_ERROR_S`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ._admission import (
    Limits,
    Ticket,
    TokenBuckets,
    _Class,
    _priced,
    _Waiter,
    _with_headroom,
    corrections,
    deadline_error,
    too_low,
)
from ._attempt_bounds import bounded, cancels_requested
from ._errors import InvalidArgumentError
from ._limit_headers import KINDS, stated
from ._shared_limits_lua import BUCKETS_LUA, PREDICTED_REFILL
from ._usage import Usage
from ._warnings import OnceLog
from .cache._redis import LoopClient, Resting, import_redis, loop_client, redact_url

if TYPE_CHECKING:
    import redis.asyncio

__all__ = [
    "BOOK_AHEAD",
    "BUCKETS_LUA",
    "KEY_TTL_MS",
    "PREDICTED_REFILL",
    "RETRY_BOOK_AHEAD",
    "RedisBuckets",
    "SharedRedis",
    "SharedTicket",
    "SharedTokenBuckets",
    "learned",
    "organisation",
]

logger = logging.getLogger("claude_force")

BOOK_AHEAD = 0.5  # seconds: tokens this close are booked at once, the caller sleeps the rest
# A retry after a 429 books this far ahead: it goes before every first attempt of every
# process (they find the level it took), instead of waiting again behind them.
RETRY_BOOK_AHEAD = 60.0
KEY_TTL_MS = 3_600_000  # a bucket untouched for an hour is forgotten (it was full long before)
REST_AFTER_ERROR_S = 5.0
# A take slower than this is an outage: a Redis that answers just inside its socket timeout
# would otherwise hold every request that long (and past its deadline).
SLOW_TAKE_S = 0.5
UNKNOWN_POLL_S = 0.25  # while no process knows the limits yet, how often to ask Redis again
UNKNOWN_MAX_WAIT_S = 2.0  # then admit with this process's own (cautious) buckets meanwhile
_SOCKET_TIMEOUT_S = 1.0
_SLOW_COOLDOWN = 2.0  # as in _admission: one burst of 429s slows a bucket once
Arg = str | int | float  # what a script argument may be
T = TypeVar("T")
_SHORT = {"requests": "r", "input-tokens": "i", "output-tokens": "o", "tokens": "t"}
_LONG = {v: k for k, v in _SHORT.items()}


def organisation(api_key: str, base_url: str | None) -> str:
    """A short, stable name for the allowance an API key draws on at an endpoint.

    A hash: the key itself never reaches Redis, logs or errors.
    """
    digest = hashlib.sha256(f"{base_url or ''}\n{api_key}".encode()).hexdigest()
    return digest[:16]


class SharedRedis:
    """One Redis for an orchestrator's shared limits and cross-process single-flight.

    Holds the asyncio client of each event loop and the health policy: an error marks Redis
    down for :data:`REST_AFTER_ERROR_S` (callers then use their local fallback), warns once,
    and counts a fallback (``fallbacks``, and ``on_fallback(part)`` for the metric).
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "claude-force",
        clock: Callable[[], float] = time.monotonic,
        on_fallback: Callable[[str], None] | None = None,
    ) -> None:
        self.url = redact_url(url)  # the only form of the URL that messages ever show
        self._url = url
        self._redis = redis = import_redis(self.url)
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # Fail fast: a slow or absent server must cost one timeout, never a retry ladder.
        self._options: dict[str, Any] = {
            "socket_timeout": _SOCKET_TIMEOUT_S,
            "socket_connect_timeout": _SOCKET_TIMEOUT_S,
            "retry": Retry(NoBackoff(), 0),
        }
        try:
            redis.asyncio.Redis.from_url(url, **self._options)
        except ValueError:
            raise InvalidArgumentError(
                f"redis_url={self.url!r} is not a Redis URL; use redis://host:port/db"
            ) from None  # the cause would show the URL with its password
        self.errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError, Resting)
        self.namespace = namespace
        self.fallbacks = 0
        self.on_fallback = on_fallback
        self._clock = clock
        self._down_until = -math.inf
        self._log = OnceLog(logger)
        self._async: LoopClient | None = None
        self._shas: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"SharedRedis({self.url!r})"

    async def run(self, command: Callable[[redis.asyncio.Redis], Awaitable[T]]) -> T:
        """``command`` on the running loop's client once one of its connections is free
        (waiting for one is no outage); :class:`Resting` when Redis went down meanwhile."""
        self._async = held = loop_client(self._async, self._redis, self._url, self._options)
        return await held.run(command, self.usable)

    def usable(self) -> bool:
        """False while resting after an error: callers use their local fallback."""
        return self._clock() >= self._down_until

    def failed(self, part: str, exc: BaseException) -> None:
        """Redis could not be used for ``part`` (``limits``, ``single_flight``). A command
        that found it already down (:class:`Resting`) is no new failure."""
        if isinstance(exc, Resting):
            return
        self._down_until = self._clock() + REST_AFTER_ERROR_S
        self.fallbacks += 1  # also the epoch ``succeeded`` compares
        if self.on_fallback is not None:
            self.on_fallback(part)
        self._log.warn(
            "redis-down",
            f"redis at {self.url} cannot be used ({type(exc).__name__}: {self._scrub(exc)}); "
            "rate limits and single-flight are per process until it answers again",
        )

    def succeeded(self, since: int) -> None:
        """An operation begun when ``fallbacks`` was ``since`` answered. One begun before the
        latest failure proves nothing (it may have been served just before the server went
        away), so it does not end the outage, nor repeat its warning later."""
        if since == self.fallbacks and self._down_until != -math.inf:
            self._down_until = -math.inf
            self._log.clear("redis-down")
            logger.info("redis at %s answers again; limits are shared again", self.url)

    async def script(self, source: str, keys: list[str], args: list[Arg]) -> Any:
        """EVALSHA ``source``; on NOSCRIPT (a restarted or flushed server) load it and retry."""
        sha: str = self._shas.get(source) or hashlib.sha1(source.encode()).hexdigest()
        self._shas[source] = sha
        try:
            return await self.run(lambda client: client.evalsha(sha, len(keys), *keys, *args))
        except self._redis.exceptions.NoScriptError:
            sha = self._shas[source] = await self.run(lambda client: client.script_load(source))
        except self._redis.exceptions.ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            # Something else wrote these keys: they hold only state the scripts rebuild (levels
            # relearned from the next answers), so they are dropped rather than shared limits
            # staying off until someone deletes them by hand.
            logger.warning("redis keys %s held another type; they are reset", ", ".join(keys))
            await self.run(lambda client: client.delete(*keys))
        return await self.run(lambda client: client.evalsha(sha, len(keys), *keys, *args))

    async def aclose(self) -> None:
        """Close the running loop's client now (another loop's closes when that loop ends)."""
        held = self._async
        if held is not None and held.loop is asyncio.get_running_loop():
            self._async = None
            held.keeper.cancel()
            await asyncio.gather(held.keeper, return_exceptions=True)

    def _scrub(self, exc: BaseException) -> str:
        text = str(exc)
        return text.replace(self._url, self.url) if self._url != self.url else text


@dataclass(frozen=True, slots=True)
class Verdict:
    """What ``take`` answered: ``ok`` (charged; sleep ``wait``), ``wait`` or ``unknown``."""

    verdict: str
    wait: float
    charged: frozenset[str]
    levels: dict[str, dict[str, float]]
    entry: str = ""  # the charge's entry in the class's ledger


class RedisBuckets:
    """The Lua script's two operations for one organisation, as Python calls."""

    def __init__(self, shared: SharedRedis, org: str, *, recovery_seconds: float = 30.0) -> None:
        self.shared = shared
        self.prefix = f"{shared.namespace}:limits:{org}:"
        self.recovery = recovery_seconds

    def key(self, cls: str) -> str:
        return self.prefix + cls

    def keys(self, cls: str) -> list[str]:
        """The class's hash and its ledger of charges (a sorted set by the time each left)."""
        return [self.prefix + cls, self.prefix + cls + ":ledger"]

    async def take(
        self,
        cls: str,
        costs: Mapping[str, float],
        wait_for: Mapping[str, float],
        *,
        caps: Mapping[str, float],
        init: Mapping[str, float],
        ahead: float,
    ) -> Verdict:
        args: list[Arg] = ["take", KEY_TTL_MS, self.recovery, ahead]
        for kind in KINDS:
            args += [
                costs.get(kind, 0),
                wait_for.get(kind, 0),
                caps.get(kind, 0),
                init.get(kind, 0),
            ]
        verdict, wait, charged, levels, entry = await self.shared.script(
            BUCKETS_LUA, self.keys(cls), args
        )
        return Verdict(
            verdict.decode(),
            float(wait),
            frozenset(_LONG[c] for c in charged.decode()),
            _levels(levels.decode()),
            entry.decode(),
        )

    async def update(
        self,
        cls: str,
        *,
        deltas: Mapping[str, float] | None = None,
        limits: Mapping[str, float] | None = None,
        left: Mapping[str, float] | None = None,
        slow: frozenset[str] = frozenset(),
        probed: bool = False,
        age: float = 0.0,
        in_flight: int = 0,
        entry: str = "",
        counted: bool = True,
        sent_ago: float | None = None,
    ) -> dict[str, dict[str, float]]:
        """Corrections and what a report states; ``entry`` the attempt's ledger entry,
        ``counted`` False when the service never counted it (a 429, never sent), ``age`` and
        ``sent_ago`` the seconds since its answer arrived and since it left."""
        deltas, limits, left = deltas or {}, limits or {}, left or {}
        args: list[Arg] = ["update", KEY_TTL_MS, self.recovery, _SLOW_COOLDOWN]
        for kind in KINDS:
            slowed = int(kind in slow)
            args += [deltas.get(kind, 0), limits.get(kind, 0), left.get(kind, -1), slowed]
        args += [int(probed), max(0.0, age), max(0, in_flight), entry]
        args += ["count" if counted else "drop", -1.0 if sent_ago is None else max(0.0, sent_ago)]
        reply = await self.shared.script(BUCKETS_LUA, self.keys(cls), args)
        return _levels(reply[3].decode())

    async def sent(self, cls: str, entry: str, ago: float) -> None:
        """The attempt of ledger ``entry`` left ``ago`` seconds ago."""
        args: list[Arg] = ["sent", KEY_TTL_MS, self.recovery, entry, max(0.0, ago)]
        await self.shared.script(BUCKETS_LUA, self.keys(cls), args)


def _levels(text: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for part in filter(None, text.split(";")):
        short, cap, level, factor, unseen = part.split(":")
        out[_LONG[short]] = {
            "limit": float(cap),
            "level": float(level),
            "refill_factor": float(factor),
            "unseen_share": float(unseen),
        }
    return out


@dataclass(slots=True, eq=False)
class SharedTicket(Ticket):
    """A ticket whose charge (``shared``: the kinds) was booked in Redis, not locally;
    ``probe``: sent uncharged, alone, to learn the limits; ``wait``: booked that far ahead."""

    shared: frozenset[str] = frozenset()
    probe: bool = False
    wait: float = 0.0  # booked ahead: seconds to sleep before sending
    entry: str = ""  # its charge in the class's ledger
    sent_at: float | None = None  # when it left, on the buckets' clock


def learned(
    headers: Mapping[str, str] | None, caps: Mapping[str, int]
) -> tuple[dict[str, float], dict[str, float]]:
    """Limits and remaining levels stated by ``anthropic-ratelimit-*`` headers, capped (a
    cap below the service's limit leaves the rest to others: the remaining share is in
    proportion, as the local buckets take it)."""
    found = stated(headers, caps)
    limits = {kind: limit for kind, (limit, _) in found.items() if limit is not None}
    left = {kind: v for kind, (limit, v) in found.items() if v is not None and limit is not None}
    return limits, left


class SharedTokenBuckets(TokenBuckets):
    """:class:`TokenBuckets` whose levels live in Redis, shared by every process using it.

    Same four calls and the same meaning; the local buckets underneath keep learning from
    every answer and take over whenever Redis cannot be used. Corrections are sent to Redis
    in the background (they never delay an answer); :meth:`drain` waits for them.
    """

    # Redis decides the waits; a retry asks at once, beside the head (Redis serialises).
    _queue_predicts = False

    def __init__(
        self,
        shared: SharedRedis,
        org: str,
        *,
        limits: Limits | Mapping[str, Limits] | None = None,
        recovery_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            limits=limits, recovery_seconds=recovery_seconds, clock=clock, sleep=sleep, **kwargs
        )
        self.store = RedisBuckets(shared, org, recovery_seconds=recovery_seconds)
        self._seen: dict[str, dict[str, dict[str, float]]] = {}
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def shared(self) -> SharedRedis:
        return self.store.shared

    async def admit(
        self,
        model: str,
        input_estimate_chars: int,
        max_tokens: int,
        *,
        deadline: float | None = None,
        retry: bool = False,
    ) -> Ticket:
        ticket = await super().admit(
            model, input_estimate_chars, max_tokens, deadline=deadline, retry=retry
        )
        if isinstance(ticket, SharedTicket) and ticket.wait > 0:
            try:
                await self._sleep(ticket.wait)  # booked: the tokens are ours at the end of it
            except BaseException:
                self.refund(ticket)
                raise
        return ticket

    async def _try_admit(
        self, cls_name: str, cls: _Class, waiter: _Waiter, deadline: float | None
    ) -> Ticket | float:
        """The head of this process's queue asks Redis; the local buckets answer while Redis
        cannot be used, for a class without rate-limit headers, or when the probe of another
        process takes too long."""
        local = super()._try_admit
        waiter.local = waiter.local or not self.shared.usable() or cls.state == "absent"
        if waiter.local:
            return await local(cls_name, cls, waiter, deadline)
        if self._max_in_flight is not None and cls.in_flight >= self._max_in_flight:
            # An attempt admitted leaves at once (the ledger dates it so): none waits for a
            # concurrency slot, unknown to the ledger. An answer wakes the head.
            return math.inf
        now = self._clock()
        costs = _priced(cls, waiter.costs)
        horizon = RETRY_BOOK_AHEAD if waiter.retry else BOOK_AHEAD
        ahead = horizon if deadline is None else min(horizon, deadline - now)
        since = self.shared.fallbacks
        bound = SLOW_TAKE_S if deadline is None else max(0.0, min(SLOW_TAKE_S, deadline - now))
        cancels = cancels_requested()
        try:
            if bound <= 0.0:  # the deadline has come: no time to ask
                raise asyncio.TimeoutError
            take = self.store.take(
                cls_name,
                costs,
                _with_headroom(cls, costs),
                caps=cls.caps,
                init={kind: b.capacity for kind, b in cls.buckets.items()},
                ahead=max(0.0, ahead),
            )
            # Not wait_for: a request cancelled just as Redis answered went on to be sent.
            verdict = await bounded(take, bound)
            self.shared.succeeded(since)
        except asyncio.TimeoutError:
            if bound >= SLOW_TAKE_S:  # Redis was slow, not this request's deadline short
                self.shared.failed("limits", TimeoutError(f"no answer in {SLOW_TAKE_S:g} s"))
            waiter.local = True
            return await local(cls_name, cls, waiter, deadline)
        except self.shared.errors as exc:
            self.shared.failed("limits", exc)
            waiter.local = True
            return await local(cls_name, cls, waiter, deadline)
        if verdict.levels:
            self._seen[cls_name] = verdict.levels
        raw = waiter.costs["input-tokens"]
        ticket = None
        if verdict.verdict in ("ok", "probe"):
            cls.in_flight += 1
            probe = verdict.verdict == "probe"
            ticket = SharedTicket(
                cls_name, costs, raw, frozenset(), shared=verdict.charged, probe=probe,
                wait=verdict.wait, entry=verdict.entry,
            )  # fmt: skip
        if cancels_requested() > cancels:
            # redis-py writes each command under asyncio.wait_for, which lost a cancellation
            # that came as the write ended: the caller is gone, and what it booked goes back.
            if ticket is not None:
                self.refund(ticket)
            raise asyncio.CancelledError
        if ticket is not None:
            return ticket
        if verdict.verdict == "unknown":  # another process is learning the limits
            if waiter.learning_since is None:
                waiter.learning_since = now
            # Its probe may hang or its process die: waiting for it is bounded (and never
            # past this request's deadline); this process then learns alone.
            limit = waiter.learning_since + UNKNOWN_MAX_WAIT_S
            if deadline is not None:
                limit = min(limit, deadline - UNKNOWN_POLL_S)
            if now >= limit:
                waiter.local = True
                return await local(cls_name, cls, waiter, deadline)
            return UNKNOWN_POLL_S
        if deadline is not None and now + verdict.wait > deadline:
            levels = verdict.levels
            kind = min(levels, key=lambda k: levels[k]["level"], default="requests")
            limit = levels.get(kind, {}).get("limit", 0.0)
            raise deadline_error(verdict.wait, f"shared {cls_name}", limit, kind, deadline - now)
        return verdict.wait - horizon

    def sending(self, ticket: Ticket) -> None:
        """As :meth:`TokenBuckets.sending`; the ledger learns when the attempt left, so that
        the reports of attempts sent after it count it, and earlier ones do not."""
        if isinstance(ticket, SharedTicket) and ticket.entry and not (ticket.sent or ticket.done):
            ticket.sent_at = self._clock()
            self._background(self._sent(ticket.model_class, ticket.entry, ticket.sent_at))
        super().sending(ticket)

    def settle(
        self, ticket: Ticket, usage: Usage | None, headers: Mapping[str, str] | None
    ) -> None:
        if ticket.done:
            return
        super().settle(ticket, usage, headers)
        shared = ticket.shared if isinstance(ticket, SharedTicket) else frozenset()
        deltas = {k: v for k, v in corrections(ticket, usage).items() if k in shared}
        self._push(ticket, deltas, headers, frozenset(), counted=True)

    def on_rate_limited(self, ticket: Ticket, headers: Mapping[str, str] | None) -> bool:
        if ticket.done:
            return False
        explained = super().on_rate_limited(ticket, headers)
        shared = ticket.shared if isinstance(ticket, SharedTicket) else frozenset()
        deltas = {kind: ticket.costs[kind] for kind in shared}  # the service charged nothing
        slow = too_low(headers, ticket.costs)
        self._push(ticket, deltas, headers, slow, counted=False)
        return explained or bool(slow)

    def refund(self, ticket: Ticket) -> None:
        if ticket.done:
            return
        super().refund(ticket)
        shared = ticket.shared if isinstance(ticket, SharedTicket) else frozenset()
        self._push(ticket, {k: ticket.costs[k] for k in shared}, None, frozenset(), counted=False)

    def snapshot(self) -> dict[str, object]:
        """As :meth:`TokenBuckets.snapshot`, with the levels last read from Redis."""
        out = super().snapshot()
        for name, seen in list(self._seen.items()):
            entry = out.get(name)
            if isinstance(entry, dict):
                entry["shared"] = self.shared.usable()
                if self.shared.usable():
                    entry["buckets"] = {kind: dict(v) for kind, v in seen.items()}
        return out

    async def drain(self) -> None:
        """Wait for the corrections still being sent to Redis."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def _push(
        self,
        ticket: Ticket,
        deltas: Mapping[str, float],
        headers: Mapping[str, str] | None,
        slow: frozenset[str],
        *,
        counted: bool,
    ) -> None:
        """Send a correction and what the headers say to Redis, off the caller's path."""
        cls_name = ticket.model_class
        limits, left = learned(headers, self._class(cls_name).caps)
        shared = ticket if isinstance(ticket, SharedTicket) else None
        probed = shared is not None and shared.probe
        entry = shared.entry if shared is not None else ""
        if not (deltas or limits or left or slow or probed or entry) or not self.shared.usable():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        now = self._clock()
        sent_at = shared.sent_at if shared is not None else None
        report = _Report(
            dict(deltas), limits, left, slow, probed, entry, counted, now,
            sent_at, self._class(cls_name).in_flight,
        )  # fmt: skip
        self._background(self._update(cls_name, report), loop)

    def _background(
        self, work: Coroutine[Any, Any, None], loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        """Run ``work`` off the caller's path (:meth:`drain` waits for it)."""
        if not self.shared.usable():
            work.close()
            return
        task = (loop or asyncio.get_running_loop()).create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _sent(self, cls_name: str, entry: str, sent_at: float) -> None:
        try:
            await self.store.sent(cls_name, entry, self._clock() - sent_at)
        except self.shared.errors as exc:
            self.shared.failed("limits", exc)

    async def _update(self, cls_name: str, report: _Report) -> None:
        now = self._clock()
        try:
            levels = await self.store.update(
                cls_name,
                deltas=report.deltas,
                limits=report.limits,
                left=report.left,
                slow=report.slow,
                probed=report.probed,
                age=now - report.answered,
                in_flight=report.in_flight,
                entry=report.entry,
                counted=report.counted,
                sent_ago=None if report.sent_at is None else now - report.sent_at,
            )
        except self.shared.errors as exc:
            self.shared.failed("limits", exc)
            return
        if levels:
            self._seen[cls_name] = levels
        # Another request of this process may fit now.
        self._notify(self._class(cls_name))


@dataclass(frozen=True, slots=True)
class _Report:
    """What one attempt's end tells the shared buckets (see :meth:`RedisBuckets.update`)."""

    deltas: dict[str, float]
    limits: dict[str, float]
    left: dict[str, float]
    slow: frozenset[str]
    probed: bool
    entry: str
    counted: bool
    answered: float  # on the buckets' clock
    sent_at: float | None
    in_flight: int
