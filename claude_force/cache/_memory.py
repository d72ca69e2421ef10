"""The in-process tier: an LRU bounded in bytes, with TTL.

It holds values that were already verified (or that this process produced), so a hit does
not re-check a signature: the memory is our own.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ._types import MISS, Found, Miss, TierStats

__all__ = ["MemoryTier"]


class MemoryTier:
    """LRU of at most ``max_bytes`` bytes of payload; entries older than ``ttl`` miss.

    ``on_use(key, now)`` is called on a hit at most once per ``use_every`` seconds per key,
    so a lower tier can keep its own LRU informed without hearing of every hit.
    """

    def __init__(
        self,
        *,
        max_bytes: int,
        ttl: float,
        on_use: Callable[[str, float], None] | None = None,
        use_every: float = 60.0,
    ) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.stats = TierStats()
        self._entries: OrderedDict[str, Found] = OrderedDict()
        self._reported: dict[str, float] = {}  # key -> when on_use last heard of it
        self._bytes = 0
        self._lock = threading.Lock()
        self._on_use = on_use
        self._use_every = use_every

    def get(self, key: str, now: float) -> Found | Miss:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.stats.misses += 1
                return MISS
            if now - found.created_at >= self.ttl:
                self._drop(key, found)
                self.stats.expirations += 1
                self.stats.misses += 1
                return MISS
            self._entries.move_to_end(key)
            self.stats.hits += 1
            due = now - self._reported.get(key, found.created_at) >= self._use_every
            if due:
                self._reported[key] = now
        if due and self._on_use is not None:
            self._on_use(key, now)
        return found

    def put(self, key: str, found: Found) -> None:
        """Store ``found`` (its envelope is not kept); evict LRU entries to fit."""
        if found.envelope is not None:
            found = Found(found.value, found.created_at, found.size)
        with self._lock:
            old = self._entries.get(key)
            if old is not None:
                self._drop(key, old)
            if found.size > self.max_bytes:
                return  # larger than the whole tier: storing it would evict everything
            self._entries[key] = found
            self._bytes += found.size
            while self._bytes > self.max_bytes:
                victim, entry = next(iter(self._entries.items()))
                self._drop(victim, entry)
                self.stats.evictions += 1

    def delete(self, key: str) -> None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._drop(key, found)

    def prune(self, now: float) -> int:
        with self._lock:
            expired = [k for k, f in self._entries.items() if now - f.created_at >= self.ttl]
            for key in expired:
                self._drop(key, self._entries[key])
            self.stats.expirations += len(expired)
            return len(expired)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._reported.clear()
            self._bytes = 0

    def _drop(self, key: str, found: Found) -> None:
        del self._entries[key]
        self._reported.pop(key, None)
        self._bytes -= found.size

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self.stats.as_dict(
                entries=len(self._entries), size_bytes=self._bytes, max_size_bytes=self.max_bytes
            )
