"""The shared tier: signed envelopes in Redis under ``<namespace>:resp:<key>``.

Redis is an optimisation shared between machines, never a dependency of a run: any error
(server down, timeout) is logged and becomes a miss. After an error the tier rests for a
few seconds instead of paying a connection timeout on every request.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable
from typing import Any

from .._errors import CacheIntegrityError, InvalidArgumentError
from ._envelope import decode_payload, open_envelope
from ._types import MISS, Found, Miss, TierStats

__all__ = ["RedisTier"]

logger = logging.getLogger("claude_force.cache")

# Loopback and LAN round trips are well under this; a slower server is treated as down.
_SOCKET_TIMEOUT_S = 0.5
_REST_AFTER_ERROR_S = 5.0
_GLOB_SPECIAL = re.compile(r"[*?\[\]\\]")


class RedisTier:
    """A redis-py client plus the policy that turns its failures into misses."""

    def __init__(
        self,
        url: str,
        *,
        secret: bytes,
        namespace: str,
        ttl: float,
        clock: Callable[[], float],
    ) -> None:
        try:
            import redis
        except ImportError as exc:
            raise InvalidArgumentError(
                f"redis_url={url!r} needs the redis package; install claude-force[redis]"
            ) from exc
        self._redis = redis
        try:
            self._client = redis.Redis.from_url(
                url,
                socket_timeout=_SOCKET_TIMEOUT_S,
                socket_connect_timeout=_SOCKET_TIMEOUT_S,
            )
        except ValueError as exc:
            raise InvalidArgumentError(
                f"redis_url={url!r} is not a Redis URL ({exc}); use redis://host:port/db"
            ) from exc
        self.url = url
        self.prefix = f"{namespace}:resp:"
        self.ttl = ttl
        self.stats = TierStats()
        self._secret = secret
        self._clock = clock
        self._down_until = -math.inf
        self._in_outage = False
        self._lock = threading.Lock()

    def _available(self) -> bool:
        return self._clock() >= self._down_until

    def _failed(self, action: str, exc: Exception) -> None:
        with self._lock:
            self.stats.errors += 1
            first = not self._in_outage
            self._in_outage = True
            self._down_until = self._clock() + _REST_AFTER_ERROR_S
        # One warning per outage, not one per request.
        log = logger.warning if first else logger.debug
        log("redis cache %s failed at %s (%s); treating as a miss", action, self.url, exc)

    def _succeeded(self) -> None:
        if self._in_outage:
            self._in_outage = False
            logger.info("redis cache at %s answers again", self.url)

    def get(self, key: str, now: float) -> Found | Miss:
        if not self._available():
            self.stats.misses += 1
            return MISS
        try:
            envelope = self._client.get(self.prefix + key)
        except (self._redis.RedisError, OSError) as exc:
            self._failed("get", exc)
            self.stats.misses += 1
            return MISS
        self._succeeded()
        if not isinstance(envelope, bytes):
            self.stats.misses += 1
            return MISS
        try:
            opened = open_envelope(self._secret, key, envelope)
            value = decode_payload(key, opened.payload)
        except CacheIntegrityError as exc:
            self.stats.integrity_failures += 1
            self.stats.misses += 1
            logger.warning("%s; deleted it from redis", exc)
            self.delete(key)
            return MISS
        if now - opened.created_at >= self.ttl:
            self.stats.expirations += 1
            self.stats.misses += 1
            return MISS
        self.stats.hits += 1
        return Found(value, opened.created_at, len(opened.payload), envelope)

    def put(self, key: str, envelope: bytes, created_at: float, now: float) -> None:
        # Redis expires the entry itself, at the same moment the TTL check would.
        remaining = math.ceil(created_at + self.ttl - now)
        if remaining <= 0 or not self._available():
            return
        try:
            self._client.set(self.prefix + key, envelope, ex=remaining)
        except (self._redis.RedisError, OSError) as exc:
            self._failed("set", exc)
            return
        self._succeeded()

    def delete(self, key: str) -> None:
        if not self._available():
            return
        try:
            self._client.delete(self.prefix + key)
        except (self._redis.RedisError, OSError) as exc:
            self._failed("delete", exc)

    def clear(self) -> None:
        """Delete every entry under this namespace (SCAN, in batches)."""
        if not self._available():
            return
        try:
            batch: list[Any] = []
            pattern = _GLOB_SPECIAL.sub(r"\\\g<0>", self.prefix) + "*"
            for name in self._client.scan_iter(match=pattern, count=500):
                batch.append(name)
                if len(batch) >= 500:
                    self._client.delete(*batch)
                    batch.clear()
            if batch:
                self._client.delete(*batch)
        except (self._redis.RedisError, OSError) as exc:
            self._failed("clear", exc)

    def snapshot(self) -> dict[str, Any]:
        # Redis applies its own memory policy; counting our keys would need a full SCAN,
        # so entries and sizes are not reported (0).
        return self.stats.as_dict(entries=0, size_bytes=0, max_size_bytes=0)

    def close(self) -> None:
        self._client.close()
