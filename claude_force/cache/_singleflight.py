"""Single-flight: identical requests in flight at the same time share one upstream call.

The first caller for a key starts the call as a Task; callers arriving before it finishes
wait on the same Task. A waiter that is cancelled leaves the others waiting; only when every
waiter has gone is the call itself cancelled. The entry is removed the moment the call
finishes, so a later caller starts a fresh call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

__all__ = ["SingleFlight"]

T = TypeVar("T")


class _Call(Generic[T]):
    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task[T]) -> None:
        self.task = task
        self.waiters = 0


def _consume(task: asyncio.Task[Any]) -> None:
    # Mark the outcome as retrieved: when every waiter was cancelled nobody else will, and
    # asyncio would log "exception was never retrieved".
    if not task.cancelled():
        task.exception()


class SingleFlight:
    """Deduplicate concurrent async calls by key, within one event loop.

    >>> import asyncio
    >>> async def main() -> list[tuple[int, bool]]:
    ...     flight, calls = SingleFlight(), []
    ...     async def fetch() -> int:
    ...         calls.append(1)
    ...         await asyncio.sleep(0)
    ...         return 42
    ...     return await asyncio.gather(*(flight.run("k", fetch) for _ in range(3)))
    >>> asyncio.run(main())
    [(42, False), (42, True), (42, True)]
    """

    def __init__(self) -> None:
        self._calls: dict[str, _Call[Any]] = {}

    def in_flight(self) -> int:
        """How many distinct keys have a call running."""
        return len(self._calls)

    async def run(self, key: str, fn: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Await ``fn()`` once per key in flight; returns (result, shared).

        ``shared`` is True when this caller joined a call another caller started. An
        exception from the call reaches every waiter.
        """
        call: _Call[T] | None = self._calls.get(key)
        shared = call is not None
        if call is None:
            call = self._start(key, fn)
        task = call.task
        call.waiters += 1
        try:
            # shield: cancelling this waiter must not cancel the call the others share.
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            call.waiters -= 1
            if call.waiters == 0 and not task.done():
                task.cancel()
                self._forget(key, call)
            raise
        call.waiters -= 1
        return result, shared

    def _start(self, key: str, fn: Callable[[], Awaitable[T]]) -> _Call[T]:
        async def runner() -> T:
            try:
                return await fn()
            finally:
                # Runs inside the task as it finishes, before any waiter resumes.
                self._forget(key, call)

        # The task only starts on the next loop turn, after ``call`` is bound below.
        call = _Call(asyncio.ensure_future(runner()))
        call.task.add_done_callback(_consume)
        self._calls[key] = call
        return call

    def _forget(self, key: str, call: _Call[Any]) -> None:
        # Only remove our own entry: a newer call may already hold this key.
        if self._calls.get(key) is call:
            del self._calls[key]
