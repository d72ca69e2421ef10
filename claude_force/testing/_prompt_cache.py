"""The simulator's prompt cache: which prefixes are warm, and the usage numbers that follow.

It behaves like the real service: the longest breakpoint whose prefix is still cached is read
(its lifetime refreshed), and every later breakpoint is written, the written tokens counted
under the ttl of the breakpoint that ends them. With one breakpoint this is simply: read the
whole prefix when it is cached, otherwise write it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._tokens import CACHE_TTL_SECONDS, Breakpoint

__all__ = ["CacheUsage", "PromptCache"]

# Expired entries are swept only past this size, so a long benchmark cannot grow without bound
# and a short test never pays for a sweep.
_SWEEP_ABOVE = 50_000


@dataclass(frozen=True, slots=True)
class CacheUsage:
    """Prefix tokens read from the cache and written to it (by lifetime)."""

    read: int = 0
    written_5m: int = 0
    written_1h: int = 0

    @property
    def cached_or_written(self) -> int:
        return self.read + self.written_5m + self.written_1h


class PromptCache:
    """Prefix key -> expiry time on the injected clock. Safe to use from several threads."""

    def __init__(self, *, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._expiry.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)

    def account(self, breakpoints: Sequence[Breakpoint]) -> CacheUsage:
        """Read or write the given (eligible, in order) breakpoints and say what it cost."""
        if not breakpoints:
            return CacheUsage()
        now = self._clock()
        with self._lock:
            hit = self._longest_hit(breakpoints, now)
            for bp in breakpoints[: hit + 1]:
                self._expiry[bp.key] = now + CACHE_TTL_SECONDS[bp.ttl]
            read = breakpoints[hit].prefix_tokens if hit >= 0 else 0
            written = {"5m": 0, "1h": 0}
            previous = read
            for bp in breakpoints[hit + 1 :]:
                written[bp.ttl] += bp.prefix_tokens - previous
                previous = bp.prefix_tokens
                self._expiry[bp.key] = now + CACHE_TTL_SECONDS[bp.ttl]
            if len(self._expiry) > _SWEEP_ABOVE:
                self._sweep(now)
        return CacheUsage(read=read, written_5m=written["5m"], written_1h=written["1h"])

    def peek(self, breakpoints: Sequence[Breakpoint]) -> int:
        """The prefix tokens :meth:`account` would read now, without touching the cache."""
        if not breakpoints:
            return 0
        with self._lock:
            hit = self._longest_hit(breakpoints, self._clock())
        return breakpoints[hit].prefix_tokens if hit >= 0 else 0

    def _longest_hit(self, breakpoints: Sequence[Breakpoint], now: float) -> int:
        """Index of the last breakpoint still cached at ``now``, or -1."""
        for index in range(len(breakpoints) - 1, -1, -1):
            expiry = self._expiry.get(breakpoints[index].key)
            if expiry is not None and now < expiry:
                return index
        return -1

    def _sweep(self, now: float) -> None:
        self._expiry = {k: v for k, v in self._expiry.items() if v > now}
