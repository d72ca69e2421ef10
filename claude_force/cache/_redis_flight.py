"""Cross-process single-flight: one upstream call for a request in flight anywhere.

:class:`~claude_force.cache.SingleFlight` joins identical requests within one event loop;
this joins them across processes and machines sharing one Redis. The first process to miss
the cache takes a lease, ``SET <namespace>:flight:<key> <token> NX PX``, renewed while its
call runs; the others find the lease taken and poll the response cache (its Redis tier is
shared) with a growing interval until the answer is there. The wait is bounded:

- the leader fails or dies: its lease is released at once, or expires within
  :data:`LEASE_S`, and the next poll of a waiter takes the lease and sends itself;
- the answer never appears within ``bound`` seconds (the request's deadline or timeout):
  the waiter sends itself rather than wait longer than the request itself may take.

Redis unusable: the caller just sends (see :class:`~claude_force._shared_limits.SharedRedis`,
which warns once and counts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from .._shared_limits import SharedRedis

__all__ = ["LEASE_S", "FlightStats", "RedisFlight"]

T = TypeVar("T")

LEASE_S = 10.0  # a dead leader's lease is gone this long after its last renewal
FIRST_POLL_S = 0.02
MAX_POLL_S = 0.25

# Renew or release the lease only while it is still ours (it may have expired and been taken).
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(slots=True)
class FlightStats:
    """Counts since start: calls led, calls that waited for another process, answers
    found after waiting, leases taken over, waits that ran out, and Redis failures."""

    led: int = 0
    waited: int = 0
    answered_elsewhere: int = 0
    took_over: int = 0
    gave_up: int = 0
    fallbacks: int = 0


class RedisFlight:
    """Lease-based single-flight across processes, for one :class:`SharedRedis`."""

    def __init__(
        self,
        shared: SharedRedis,
        *,
        lease_seconds: float = LEASE_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.shared = shared
        self.prefix = f"{shared.namespace}:flight:"
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self.stats = FlightStats()
        self._clock = clock
        self._sleep = sleep
        self._rand = rand

    async def run(
        self,
        key: str,
        send: Callable[[], Awaitable[T]],
        lookup: Callable[[], Awaitable[T | None]],
        *,
        bound: float,
    ) -> T:
        """``send()`` unless another process is already sending this ``key``; then the
        answer it stores, read by ``lookup()`` (None until there), within ``bound`` s."""
        token = uuid.uuid4().hex
        name = self.prefix + key
        give_up = self._clock() + bound
        poll = FIRST_POLL_S
        waited = False
        while True:
            taken = await self._acquire(name, token)
            if taken is None:
                return await send()  # Redis unusable: as if alone
            if taken:
                self.stats.led += 1
                self.stats.took_over += waited
                return await self._lead(name, token, send)
            if not waited:
                waited = True
                self.stats.waited += 1
            await self._sleep(poll * (1.0 + 0.5 * self._rand()))
            poll = min(poll * 1.5, MAX_POLL_S)
            found = await lookup()
            if found is not None:
                self.stats.answered_elsewhere += 1
                return found
            if self._clock() >= give_up:
                self.stats.gave_up += 1
                return await send()

    async def _acquire(self, name: str, token: str) -> bool | None:
        """True: the lease is ours; False: another holds it; None: Redis is unusable."""
        if not self.shared.usable():
            return None
        since = self.shared.fallbacks
        try:
            got = await self.shared.run(
                lambda client: client.set(name, token, nx=True, px=self.lease_ms)
            )
        except self.shared.errors as exc:
            self.stats.fallbacks += 1
            self.shared.failed("single_flight", exc)
            return None
        self.shared.succeeded(since)
        return bool(got)

    async def _lead(self, name: str, token: str, send: Callable[[], Awaitable[T]]) -> T:
        done = asyncio.Event()
        renewer = asyncio.ensure_future(self._renew(name, token, done))
        try:
            return await send()
        finally:
            # Told to stop rather than cancelled: a cancellation arriving while redis-py
            # runs a command can be lost there, and the renewer would then never end.
            done.set()
            await asyncio.shield(renewer)
            # Released at once, answered or not: a waiter then reads the answer or sends.
            await self._script(_RELEASE_LUA, name, token)

    async def _renew(self, name: str, token: str, done: asyncio.Event) -> None:
        """Keep the lease while the call runs (retries may take longer than one lease)."""
        while True:
            with contextlib.suppress(asyncio.TimeoutError):  # 3.10: not TimeoutError
                await asyncio.wait_for(done.wait(), self.lease_ms / 3000)
            if done.is_set() or not await self._script(_RENEW_LUA, name, token, self.lease_ms):
                return

    async def _script(self, source: str, name: str, *args: str | int) -> bool:
        if not self.shared.usable():
            return False
        try:
            return bool(await self.shared.script(source, [name], list(args)))
        except self.shared.errors as exc:
            self.stats.fallbacks += 1
            self.shared.failed("single_flight", exc)
            return False
