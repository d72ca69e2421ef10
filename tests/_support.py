"""Helpers shared by test modules: a fake clock and a guard against blocking I/O."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Iterator
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
