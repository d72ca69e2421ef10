"""Helpers shared by test modules: fake clocks and a guard against blocking I/O."""

from __future__ import annotations

import asyncio
import heapq
import signal
import uuid
from collections.abc import Iterator, Sized
from contextlib import contextmanager
from typing import Any


class FakeTime:
    """A clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class WireTime(FakeTime):
    """A fake clock for code that talks to a server on another thread (the simulator).

    A sleep ends when the clock reaches its end, and the clock moves to the earliest end
    only once no request is on the wire (:meth:`on_the_wire` marks one, from its sending
    until its answer is taken in) and nothing else on the event loop can run: the server
    answers in no time on this clock, and sleeps that overlap take as long as the longest.
    On :class:`FakeTime`, time jumped as soon as anything slept, so how many answers came
    in first, and so what the code under test saw, depended on how the threads were
    scheduled.
    """

    def __init__(self) -> None:
        super().__init__()
        self._wire = 0
        self._ends: list[tuple[float, int, asyncio.Future[None]]] = []
        self._count = 0
        self._ticker: asyncio.Task[None] | None = None

    @contextmanager
    def on_the_wire(self) -> Iterator[None]:
        self._wire += 1
        try:
            yield
        finally:
            self._wire -= 1
            self._tick()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        end: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._ends, (self.now + seconds, self._count, end))
        self._count += 1
        self._tick()
        await end  # cancelled: its entry is skipped when it comes up

    def _tick(self) -> None:
        if self._ends and (self._ticker is None or self._ticker.done()):
            self._ticker = asyncio.get_running_loop().create_task(self._advance())

    async def _advance(self) -> None:
        loop = asyncio.get_running_loop()
        # CPython's queue of callbacks ready to run: empty when the loop would wait for I/O.
        ready: Sized = loop._ready  # type: ignore[attr-defined]
        while self._ends and not self._wire:  # the end of the wire ticks again
            await asyncio.sleep(0)
            if len(ready) or self._wire:
                continue
            at, _, end = heapq.heappop(self._ends)
            if not end.done():
                self.now = max(self.now, at)
                end.set_result(None)


@contextmanager
def no_hang(seconds: int = 10) -> Iterator[None]:
    """Turn a blocked open() or read() into a test failure instead of a stalled suite."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def scratch_namespace(client: Any) -> Iterator[str]:
    """A Redis key prefix of one test's own (for a fixture); its keys are deleted after."""
    name = f"cf-test-{uuid.uuid4().hex}"
    yield name
    names = list(client.scan_iter(match=f"{name}:*"))
    if names:
        client.delete(*names)
