"""The in-process tier: an LRU bounded in bytes, with TTL.

It holds each value parsed once, so a hit costs a dictionary lookup. A parsed response takes
several times its JSON size in Python objects, so each entry is charged what its objects
really take (``sys.getsizeof`` over the parsed tree, measured once when it is stored) plus
a measured fixed overhead (key, record, LRU links): ``max_bytes`` is what the process pays.
Nested lists and dicts of a hit are shared with the tier: read them, do not mutate them.

It holds values that were already verified (or that this process produced), so a hit does
not re-check a signature: the memory is our own.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

from ._envelope import parse_own
from ._types import MISS, Found, Miss, TierStats

__all__ = ["ENTRY_OVERHEAD", "MemoryTier", "deep_size"]

# Bytes held per entry besides its text: tracemalloc on CPython 3.11 measured 240-330 for
# the record, the LRU dict slots (tables grow in powers of two) and the access note, plus
# 113 for a 64-hex key; CPython 3.10's objects and dict tables are larger (about 80 more
# per entry, measured the same way).
ENTRY_OVERHEAD = 480 if sys.version_info >= (3, 11) else 560


class _Held(NamedTuple):
    value: dict[str, Any]
    created_at: float
    size: int  # what this entry is charged


def deep_size(value: object) -> int:
    """Bytes the objects of a parsed JSON tree take (small ints and singletons are shared)."""
    total = 0
    todo = [value]
    while todo:
        item = todo.pop()
        if item is None or item is True or item is False:
            continue
        if type(item) is int and -5 <= item <= 256:
            continue
        total += sys.getsizeof(item)
        if type(item) is dict:
            todo.extend(item.keys())
            todo.extend(item.values())
        elif type(item) is list:
            todo.extend(item)
    return total


class MemoryTier:
    """LRU of at most ``max_bytes`` bytes (objects + ENTRY_OVERHEAD each); older than ``ttl`` miss.

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
        self._entries: OrderedDict[str, _Held] = OrderedDict()
        self._reported: dict[str, float] = {}  # key -> when on_use last heard of it
        self._bytes = 0
        self._lock = threading.Lock()
        self._on_use = on_use
        self._use_every = use_every

    def get(self, key: str, now: float) -> Found | Miss:
        with self._lock:
            held = self._entries.get(key)
            if held is None:
                self.stats.misses += 1
                return MISS
            if now - held.created_at >= self.ttl:
                self._drop(key, held)
                self.stats.expirations += 1
                self.stats.misses += 1
                return MISS
            self._entries.move_to_end(key)
            self.stats.hits += 1
            due = now - self._reported.get(key, held.created_at) >= self._use_every
            if due:
                self._reported[key] = now
        if due and self._on_use is not None:
            self._on_use(key, now)
        return Found(held.value, held.created_at, b"")

    def put(self, key: str, payload: bytes, created_at: float) -> None:
        """Keep verified JSON ``payload`` for ``key``; evict LRU entries to fit."""
        value = parse_own(payload.decode("ascii"))
        held = _Held(value, created_at, deep_size(value) + ENTRY_OVERHEAD)
        with self._lock:
            old = self._entries.get(key)
            if old is not None:
                self._drop(key, old)
            if held.size > self.max_bytes:
                return  # larger than the whole tier: storing it would evict everything
            self._entries[key] = held
            self._bytes += held.size
            while self._bytes > self.max_bytes:
                victim, entry = next(iter(self._entries.items()))
                self._drop(victim, entry)
                self.stats.evictions += 1

    def delete(self, key: str) -> None:
        with self._lock:
            held = self._entries.get(key)
            if held is not None:
                self._drop(key, held)

    def prune(self, now: float) -> int:
        with self._lock:
            expired = [k for k, h in self._entries.items() if now - h.created_at >= self.ttl]
            for key in expired:
                self._drop(key, self._entries[key])
            self.stats.expirations += len(expired)
            return len(expired)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._reported.clear()
            self._bytes = 0

    def _drop(self, key: str, held: _Held) -> None:
        del self._entries[key]
        self._reported.pop(key, None)
        self._bytes -= held.size

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self.stats.as_dict(
                entries=len(self._entries), size_bytes=self._bytes, max_size_bytes=self.max_bytes
            )
