"""``ResponseCache``: the front that chains the memory, disk and Redis tiers.

Lookups go memory -> disk -> Redis and a lower-tier hit is copied to the tiers above it.
The cache maps a hex key (the hash of the whole request, computed by the caller) to a
JSON-able dict; it knows nothing of requests. Reads never raise for a bad entry: a failed
signature is counted, the entry deleted, and the lookup is a miss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from .._aio import off_loop
from .._errors import InvalidArgumentError
from ._disk import ACCESS_RESOLUTION_S, DiskTier
from ._envelope import encode_value, seal
from ._memory import MemoryTier
from ._paths import default_cache_dir, ensure_private_dir
from ._redis import RedisTier
from ._secret import load_secret
from ._types import MISS, Found, Miss, Tier, TierStats, check_key

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


def _hit(found: Found, tier: Tier, now: float) -> CacheHit:
    # A new top-level dict, so a caller adding or replacing fields cannot alter the value
    # that other callers will be served (nested values are shared with the memory tier).
    age = now - found.created_at
    return CacheHit(dict(found.value), found.created_at, tier, age if age > 0 else 0.0)


def _positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    allowed = "a finite number >= 0" if allow_zero else "a finite number > 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentError(f"{name}={value!r} is not allowed; use {allowed}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
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

    Keyword arguments only. ``cache_dir``: the folder of the disk tier, else
    ``$CLAUDE_FORCE_CACHE_DIR``, else ``$XDG_CACHE_HOME/claude-force``, else
    ``~/.cache/claude-force``; a folder that cannot be created or written raises
    ``CacheDirectoryError`` naming it and the fix. ``ttl_hours``: entries older than this
    miss. ``max_size_mb``: the disk limit. Stored entries (sum of envelope sizes) stay within
    it, and the folder's whole disk use (``cache.db`` with its ``-wal`` and ``-shm`` files)
    stays within ``max(max_size_mb, 0.5) MiB + 64 KiB`` during a run, after ``close()`` and
    after a crash (see ``_limits``); an entry larger than a 64th of the limit (at least
    32 KiB, at most 2 MiB, compressed) is not stored on disk. ``memory_max_mb``: the
    in-process tier's limit, counted as the JSON text it holds plus a measured per-entry
    overhead, so it is close to the memory the process pays; 0 turns it off.
    ``cache_secret``: the HMAC key, else ``CLAUDE_CACHE_SECRET``, else a generated 0600
    file in the user's config folder. ``clock`` returns seconds since the epoch; tests
    inject one.

    Async code calls ``aget``/``aset``/``aclose``: memory and disk lookups stay on the
    loop (SQLite WAL readers never wait for a lock), disk writes go to a background thread,
    Redis uses its asyncio client. Write failures (disk full, read-only folder, database
    locked past the busy timeout, Redis down) never raise: they are counted in
    ``get_stats()["errors"]`` and logged once per cause on ``claude_force.cache``.

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
        *,
        cache_dir: str | Path | None = None,
        ttl_hours: float = 24,
        max_size_mb: float = 100,
        enabled: bool = True,
        cache_secret: str | bytes | None = None,
        exclude_agents: Iterable[str] | None = None,
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
        if not isinstance(enabled, bool):
            raise InvalidArgumentError(f"enabled={enabled!r} is not allowed; use True or False")
        if redis_url is not None and not isinstance(redis_url, str):
            # Bytes could hold a password: name their type, never their content.
            shown = "a bytes value" if isinstance(redis_url, bytes | bytearray) else repr(redis_url)
            raise InvalidArgumentError(
                f"redis_url={shown} is not allowed; use a URL string like redis://localhost:6379/0"
            )
        self.enabled = enabled
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
        try:
            self._disk = DiskTier(
                self.cache_dir, secret=secret, max_bytes=self.max_size_bytes, ttl=self.ttl_seconds
            )
        except BaseException:
            if self._redis is not None:
                self._redis.close()
            raise
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
        now = self._clock()
        hit = self._local(key, now)
        if hit is not None or self._redis is None:
            return hit
        return self._promoted(key, self._redis.get(key, now), now)

    async def aget(self, key: str) -> CacheHit | None:
        """``get`` for async code: Redis through its asyncio client, never blocking."""
        check_key(key)
        now = self._clock()
        # Memory and disk lookups stay on the loop: a WAL read takes no lock, and costs
        # less than handing it to a thread (see benchmarks/bench_cache.py).
        hit = self._local(key, now)
        if hit is not None or self._redis is None:
            return hit
        return self._promoted(key, await self._redis.aget(key, now), now)

    def _local(self, key: str, now: float) -> CacheHit | None:
        memory = self._memory
        if memory is not None:
            found = memory.get(key, now)
            if found is not MISS:
                return _hit(found, "memory", now)
        disk = self._disk
        if disk is None:
            return None
        found = disk.get(key, now)
        if found is MISS:
            return None
        if memory is not None:
            memory.put(key, found.payload, found.created_at)
        return _hit(found, "disk", now)

    def _promoted(self, key: str, found: Found | Miss, now: float) -> CacheHit | None:
        """A Redis hit, copied to the tiers above it (to disk off the caller's thread)."""
        disk = self._disk
        if found is MISS or found.envelope is None or disk is None:
            return None
        disk.queue(key, found.envelope, found.created_at, now)
        if self._memory is not None:
            self._memory.put(key, found.payload, found.created_at)
        return _hit(found, "redis", now)

    def is_excluded(self, agent_name: str) -> bool:
        """True when responses for ``agent_name`` must not be cached."""
        return agent_name in self.exclude_agents

    # -- writes ----------------------------------------------------------------------

    def _seal(self, key: str, value: dict[str, Any], now: float) -> bytes | None:
        """Sign ``value`` and keep it in memory at once; None when the cache is closed."""
        check_key(key)
        payload = encode_value(key, value)
        if self._disk is None:
            return None
        if self._memory is not None:
            # JSON text, not the caller's dict: later changes to it cannot alter what is
            # served, and every tier serves the same JSON shape.
            self._memory.put(key, payload, now)
        return seal(self._secret, key, payload, now)

    def set(self, key: str, value: dict[str, Any]) -> None:
        """Store ``value`` (a JSON-able dict) under ``key`` in every tier, now."""
        now = self._clock()
        envelope = self._seal(key, value, now)
        if envelope is None or self._disk is None:
            return
        self._disk.put(key, envelope, now, now)
        if self._redis is not None:
            self._redis.put(key, envelope, now, now)

    async def aset(self, key: str, value: dict[str, Any], *, wait: bool = True) -> None:
        """``set`` for async code: the memory tier at once, the disk write on the tier's
        background thread (``flush()`` waits for it), Redis through its asyncio client.
        ``wait=False`` skips Redis, the one tier that waits: the call then never suspends."""
        now = self._clock()
        envelope = self._seal(key, value, now)
        if envelope is None or self._disk is None:
            return
        self._disk.queue(key, envelope, now, now)
        if self._redis is not None and wait:
            await self._redis.aput(key, envelope, now, now)

    def warm(self, items: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Store many entries, in few disk transactions; returns how many were stored."""
        if self._disk is None:
            return 0
        now = self._clock()
        sealed: list[tuple[str, bytes, float]] = []
        for key, value in items:
            envelope = self._seal(key, value, now)
            if envelope is not None:
                sealed.append((key, envelope, now))
        stored = self._disk.put_many(sealed, now)
        if self._redis is not None:
            for key, envelope, _ in sealed:
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
        """Write everything queued (``aset`` writes, access times) to disk; durable on return."""
        if self._disk is not None:
            self._disk.flush()

    async def aflush(self) -> None:
        """``flush`` off the event loop."""
        await off_loop(self.flush)

    def close(self) -> None:
        """Flush, then release every thread, connection and file; the cache is then off.

        ``get_stats()`` keeps returning the counters as they were at close. Safe to call
        twice.
        """
        if self._disk is None:
            return
        self._disk.start_closing()  # another process's lock: one busy timeout, not many
        self._disk.flush()  # first, so the final counters include what was queued
        self._final_stats = self.get_stats()
        disk, redis, self._disk, self._redis = self._disk, self._redis, None, None
        try:
            disk.close()
        finally:
            if redis is not None:
                redis.close()
            if self._memory is not None:
                self._memory.clear()
                self._memory = None

    async def aclose(self) -> None:
        """``close`` for async code: Redis's asyncio client closed on the loop, the disk
        flush and close off it."""
        if self._redis is not None:
            await self._redis.aclose()
        await off_loop(self.close)

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
