"""How an orchestrator holds its response cache: opened once, off the loop, closed if its own.

Opening may wait for another process's lock on the database, so async code opens it in a
thread; a folder that cannot be used is one warning and an uncached run (see
:meth:`OrchestratorOptions._open_cache`).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ._metrics import Metrics
from ._options import OrchestratorOptions
from ._shared_limits import SharedRedis
from ._warnings import OnceLog
from .cache import ResponseCache, SingleFlight
from .cache._redis_flight import RedisFlight

__all__ = ["CacheUse"]

T = TypeVar("T")


class CacheUse:
    """The orchestrator's response cache (None when off or unusable) and its single-flight,
    within the process and, with ``redis_url``, across processes (``shared``, also used by
    the transport for shared rate limits)."""

    def __init__(
        self, options: OrchestratorOptions, log: OnceLog, metrics: Metrics | None = None
    ) -> None:
        self.options = options
        self._log = log
        self._cache = options.response_cache
        self._failed = False
        self._lock = threading.Lock()
        self._flights: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SingleFlight] = (
            weakref.WeakKeyDictionary()
        )
        self.shared: SharedRedis | None = None
        self._across: RedisFlight | None = None
        if options.redis_url is not None:
            on_fallback = metrics.redis_fallback if metrics is not None else None
            self.shared = SharedRedis(options.redis_url, on_fallback=on_fallback)
            self._across = RedisFlight(self.shared)

    def get(self) -> ResponseCache | None:
        """The cache, opened on first use (this may block: call it off the loop)."""
        if not self.options.enable_cache:
            return None
        with self._lock:  # one opener, even from many threads
            if self._cache is None and not self._failed:
                self._cache = self.options._open_cache(self._log)
                self._failed = self._cache is None
        return self._cache

    async def aget(self) -> ResponseCache | None:
        """The cache for async code: never opened on the loop."""
        if not self.options.enable_cache:
            return None
        return self._cache if self._cache is not None else await asyncio.to_thread(self.get)

    def flights(self) -> SingleFlight:
        """Identical requests in flight on this event loop share one call."""
        return self._flights.setdefault(asyncio.get_running_loop(), SingleFlight())

    async def across(
        self,
        key: str,
        send: Callable[[], Awaitable[T]],
        lookup: Callable[[], Awaitable[T | None]] | None,
    ) -> T:
        """``send()``, unless another process sharing ``redis_url`` is sending the same
        request: then its answer, read from the shared cache by ``lookup()``. The wait is
        bounded by the request's deadline (else its timeout); no ``lookup``: just send."""
        flight = self._across
        if flight is None or lookup is None:
            return await send()
        bound = self.options.deadline_seconds or self.options.timeout_seconds
        return await flight.run(key, send, lookup, bound=bound)

    async def close(self) -> None:
        """Release a cache this orchestrator opened (a later call reopens it); flush one given
        by the user, who owns it."""
        cache = self._cache
        if cache is None:
            return
        if self.options.response_cache is None:
            self._cache = None
            await cache.aclose()
        else:
            await cache.aflush()
