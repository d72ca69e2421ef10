"""The concurrency gate: a semaphore whose limit adapts to overload (AIMD).

It starts at ``max_concurrent``. A 429 or 529 halves the limit (multiplicative decrease, at
most once per ``cooldown`` seconds so one burst of errors counts once); each run of ``limit``
successes raises it by one again (additive increase), never above the configured maximum.
Requests that are waiting to retry do not hold a slot.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

__all__ = ["ConcurrencyGate"]


class ConcurrencyGate:
    """A semaphore with an adjustable limit; FIFO fair. Bound to one event loop."""

    def __init__(
        self,
        max_concurrent: int,
        *,
        adaptive: bool = True,
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.limit = max_concurrent
        self.active = 0
        self.peak = 0
        self._adaptive = adaptive
        self._cooldown = cooldown
        self._clock = clock
        self._last_decrease = float("-inf")
        self._successes = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.active < self.limit and not self._waiters:
            self._take()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # The slot was handed to us just as we were cancelled: pass it on.
                self.release()
            else:
                self._waiters.remove(fut)
            raise

    @property
    def full(self) -> bool:
        """Every slot is taken: a request that comes now waits."""
        return self.active >= self.limit

    def release(self) -> None:
        self.active -= 1
        self._wake()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    def on_success(self) -> None:
        if not self._adaptive or self.limit >= self.max_concurrent:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            self.limit += 1
            self._wake()

    def on_overload(self) -> None:
        if not self._adaptive:
            return
        now = self._clock()
        if now - self._last_decrease < self._cooldown:
            return
        self._last_decrease = now
        self._successes = 0
        self.limit = max(1, self.limit // 2)

    def _take(self) -> None:
        self.active += 1
        if self.active > self.peak:
            self.peak = self.active

    def _wake(self) -> None:
        while self._waiters and self.active < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self._take()
                fut.set_result(None)
