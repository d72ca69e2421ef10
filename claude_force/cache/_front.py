"""``ResponseCache``: the front that chains the memory, disk and Redis tiers.

Lookups go memory -> disk -> Redis and a lower-tier hit is copied to the tiers above it.
The cache maps a hex key (the hash of the whole request, computed by the caller) to a
JSON-able dict; it knows nothing of requests. Reads never raise for a bad entry: a failed
signature is counted, the entry deleted, and the lookup is a miss.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from .._errors import InvalidArgumentError
from ._disk import ACCESS_RESOLUTION_S, DiskTier
from ._envelope import encode_value, seal
from ._memory import MemoryTier
from ._paths import default_cache_dir, ensure_private_dir
from ._redis import RedisTier
from ._secret import load_secret
from ._types import MISS, Found, Tier, TierStats, check_key

__all__ = ["CacheHit", "ResponseCache"]

_MIB = 1024 * 1024
_STAT_SUMS = ("evictions", "expirations", "integrity_failures", "errors")


@dataclass(frozen=True, slots=True)
class CacheHit:
    """A cached value, when it was stored, which tier served it and how old it was then.

    ``value`` is a fresh top-level dict, but nested lists and dicts may be shared with the
    memory tier: read them, do not mutate them in place.
    """

    value: dict[str, Any]
    created_at: float
    tier: Tier
    age_seconds: float


def _positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        allowed = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise InvalidArgumentError(f"{name}={value!r} is not allowed; use {allowed}")
    return number


def _agents(exclude_agents: Iterable[str] | None) -> frozenset[str]:
    if exclude_agents is None:
        return frozenset()
    if isinstance(exclude_agents, str):
        raise InvalidArgumentError(
            f"exclude_agents={exclude_agents!r} is a single string; pass a list of agent names"
        )
    return frozenset(exclude_agents)


class ResponseCache:
    """Signed response cache on memory, SQLite (and optionally Redis).

    ``ttl_hours``: entries older than this miss. ``max_size_mb``: byte limit of the disk
    tier (sum of stored envelope sizes, MiB). ``memory_max_mb``: byte limit of the
    in-process tier (JSON payload sizes); 0 turns it off. ``cache_secret``: the HMAC key,
    else ``CLAUDE_CACHE_SECRET``, else a generated 0600 file in the user's config folder.
    ``verify_integrity`` is accepted for compatibility; entries are always verified.
    ``clock`` returns seconds since the epoch; tests inject one.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder, ResponseCache(
    ...     cache_dir=folder, cache_secret="s" * 32
    ... ) as cache:
    ...     cache.set("ab" * 32, {"text": "hi"})
    ...     cache.get("ab" * 32).value
    {'text': 'hi'}
    """

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        ttl_hours: float = 24,
        max_size_mb: float = 100,
        enabled: bool = True,
        cache_secret: str | bytes | None = None,
        exclude_agents: Iterable[str] | None = None,
        verify_integrity: bool = True,
        *,
        memory_max_mb: float = 16,
        redis_url: str | None = None,
        namespace: str = "claude-force",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl_seconds = _positive("ttl_hours", ttl_hours) * 3600.0
        self.max_size_bytes = int(_positive("max_size_mb", max_size_mb) * _MIB)
        memory_bytes = int(_positive("memory_max_mb", memory_max_mb, allow_zero=True) * _MIB)
        if not namespace or not namespace.isprintable() or " " in namespace:
            raise InvalidArgumentError(
                f"namespace={namespace!r} is not allowed; use a non-empty name without spaces"
            )
        if not verify_integrity:
            warnings.warn(
                "ResponseCache(verify_integrity=False) is ignored: entries are always verified",
                DeprecationWarning,
                stacklevel=2,
            )
        self.enabled = bool(enabled)
        self.namespace = namespace
        self.exclude_agents = _agents(exclude_agents)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._clock = clock
        self._memory: MemoryTier | None = None
        self._disk: DiskTier | None = None
        self._redis: RedisTier | None = None
        self._final_stats: dict[str, Any] | None = None
        if not self.enabled:
            return  # a disabled cache touches no file, secret or server
        self._open_tiers(load_secret(cache_secret), memory_bytes, redis_url)

    def _open_tiers(self, secret: bytes, memory_bytes: int, redis_url: str | None) -> None:
        self._secret = secret
        self.cache_dir = ensure_private_dir(self.cache_dir)
        if redis_url is not None:
            # Before the disk tier: a bad URL then fails with no file left open.
            self._redis = RedisTier(
                redis_url,
                secret=secret,
                namespace=self.namespace,
                ttl=self.ttl_seconds,
                clock=self._clock,
            )
        self._disk = DiskTier(
            self.cache_dir, secret=secret, max_bytes=self.max_size_bytes, ttl=self.ttl_seconds
        )
        if memory_bytes > 0:
            self._memory = MemoryTier(
                max_bytes=memory_bytes,
                ttl=self.ttl_seconds,
                on_use=self._disk.touch,  # memory hits keep the entry alive in disk LRU
                use_every=ACCESS_RESOLUTION_S,
            )

    # -- lookups ---------------------------------------------------------------------

    def get(self, key: str) -> CacheHit | None:
        """Return the entry for ``key`` from the fastest tier that has it, else None."""
        check_key(key)
        disk = self._disk
        if disk is None:
            return None
        now = self._clock()
        memory = self._memory
        if memory is not None:
            found = memory.get(key, now)
            if found is not MISS:
                return self._hit(found, "memory", now)
        found = disk.get(key, now)
        if found is not MISS:
            if memory is not None:
                memory.put(key, found)
            return self._hit(found, "disk", now)
        if self._redis is None:
            return None
        found = self._redis.get(key, now)
        if found is MISS or found.envelope is None:
            return None
        disk.put_later(key, found.envelope, found.created_at, now)
        if memory is not None:
            memory.put(key, found)
        return self._hit(found, "redis", now)

    @staticmethod
    def _hit(found: Found, tier: Tier, now: float) -> CacheHit:
        # A new top-level dict, so a caller adding or replacing fields cannot alter the
        # cached value that other callers will be served.
        age = now - found.created_at
        return CacheHit(dict(found.value), found.created_at, tier, age if age > 0 else 0.0)

    def is_excluded(self, agent_name: str) -> bool:
        """True when responses for ``agent_name`` must not be cached."""
        return agent_name in self.exclude_agents

    # -- writes ----------------------------------------------------------------------

    def _seal(self, key: str, value: dict[str, Any], now: float) -> tuple[bytes, Found]:
        payload = encode_value(key, value)
        envelope = seal(self._secret, key, payload, now)
        # The memory tier keeps its own parsed copy: later changes to the caller's dict
        # must not change what is served, and every tier then serves the same JSON shape.
        copy = json.loads(payload) if self._memory is not None else {}
        return envelope, Found(copy, now, len(payload), envelope)

    def set(self, key: str, value: dict[str, Any]) -> None:
        """Store ``value`` (a JSON-able dict) under ``key`` in every tier."""
        check_key(key)
        if self._disk is None:
            return
        now = self._clock()
        envelope, found = self._seal(key, value, now)
        self._disk.put(key, envelope, now, now)
        if self._memory is not None:
            self._memory.put(key, found)
        if self._redis is not None:
            self._redis.put(key, envelope, now, now)

    def warm(self, items: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Store many entries in one disk transaction; returns how many were stored."""
        if self._disk is None:
            return 0
        now = self._clock()
        sealed = [(check_key(key), *self._seal(key, value, now)) for key, value in items]
        stored = self._disk.put_many([(key, env, now) for key, env, _ in sealed], now)
        for key, envelope, found in sealed:
            if self._memory is not None:
                self._memory.put(key, found)
            if self._redis is not None:
                self._redis.put(key, envelope, now, now)
        return stored

    def delete(self, key: str) -> None:
        """Remove ``key`` from every tier."""
        check_key(key)
        for tier in (self._memory, self._disk, self._redis):
            if tier is not None:
                tier.delete(key)

    def clear(self) -> None:
        """Remove every entry from every tier (Redis: only this namespace)."""
        for tier in (self._memory, self._disk, self._redis):
            if tier is not None:
                tier.clear()

    # -- maintenance -----------------------------------------------------------------

    def prune(self) -> int:
        """Delete expired entries; returns how many were removed from disk."""
        if self._disk is None:
            return 0
        now = self._clock()
        if self._memory is not None:
            self._memory.prune(now)
        return self._disk.prune(now)

    def verify(self) -> dict[str, int]:
        """Check the signature of every disk entry, delete the bad ones.

        Returns ``{"checked": n, "ok": n, "bad": n}``.
        """
        if self._disk is None:
            return {"checked": 0, "ok": 0, "bad": 0}
        return self._disk.verify()

    def get_stats(self) -> dict[str, Any]:
        """Counters for this process (numbers only), overall and per tier.

        ``entries``, ``size_bytes`` and ``max_size_bytes`` at the top level are the disk
        tier's, which is shared by every process using the same directory.
        """
        if self._final_stats is not None:
            return self._final_stats
        tiers: dict[str, dict[str, Any]] = {}
        empty = TierStats().as_dict(entries=0, size_bytes=0, max_size_bytes=0)
        tiers["memory"] = self._memory.snapshot() if self._memory is not None else empty
        tiers["disk"] = self._disk.snapshot() if self._disk is not None else empty
        if self._redis is not None:
            tiers["redis"] = self._redis.snapshot()
        hits = sum(t["hits"] for t in tiers.values())
        # Every lookup that missed everywhere missed in the last tier asked.
        last = "redis" if "redis" in tiers else "disk"
        misses = tiers[last]["misses"]
        stats: dict[str, Any] = {
            "hits": hits,
            "misses": misses,
            "hit_rate": hits / (hits + misses) if hits + misses else 0.0,
        }
        for name in _STAT_SUMS:
            stats[name] = sum(t[name] for t in tiers.values())
        for name in ("entries", "size_bytes", "max_size_bytes"):
            stats[name] = tiers["disk"][name]
        stats["tiers"] = tiers
        return stats

    def flush(self) -> None:
        """Write access times batched from hits (also done by the next write and close)."""
        if self._disk is not None:
            self._disk.flush()

    def close(self) -> None:
        """Flush and release files and connections; afterwards the cache is disabled.

        ``get_stats()`` keeps returning the counters as they were at close.
        """
        if self._disk is None:
            return
        self._final_stats = self.get_stats()
        disk, redis, self._disk, self._redis = self._disk, self._redis, None, None
        if disk is not None:
            disk.close()
        if redis is not None:
            redis.close()
        if self._memory is not None:
            self._memory.clear()
            self._memory = None

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
