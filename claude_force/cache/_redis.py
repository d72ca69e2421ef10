"""The shared tier: signed envelopes in Redis under ``<namespace>:resp:<key>``.

Redis is an optimisation shared between machines, never a dependency of a run: a server
that is down or slow is one warning, then misses, and the tier rests for a few seconds
instead of paying a connection timeout on every request. A key that holds something other
than our envelope (another type, a forged or truncated value) is a bad entry, not an
outage: it is counted, deleted, and the lookup is a miss.

Sync methods use redis-py's client, async ones (``aget``, ``aput``) its asyncio client on
the running loop; both pass through the same policy methods below.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from .._errors import CacheIntegrityError, InvalidArgumentError
from .._warnings import OnceLog
from ._envelope import decode_payload, open_envelope
from ._types import MISS, Found, Miss, TierStats

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["LoopClient", "RedisTier", "Resting", "import_redis", "pooled_client", "redact_url"]

logger = logging.getLogger("claude_force.cache")

# Loopback and LAN round trips are well under this; a slower server is treated as down.
_SOCKET_TIMEOUT_S = 0.5
_REST_AFTER_ERROR_S = 5.0
_MAX_CONNECTIONS = 16  # per event loop
_GLOB_SPECIAL = re.compile(r"[*?\[\]\\]")
_WRONG_TYPE: Final = object()  # what a fetch returns when the key holds another type
_HIDDEN = "***"
_USERINFO = re.compile(r"(//)[^/?#]*@")
# Query parameters redis-py reads credentials from.
_SECRET_PARAMS = frozenset({"password", "username", "user", "pass"})


def redact_url(url: str) -> str:
    """``url`` with its user name, password and credential parameters replaced by ``***``,
    for warnings and errors: ``redis://:pw@host:6379/0`` -> ``redis://***@host:6379/0``."""
    # Whatever the URL's shape: userinfo is everything between "//" and the last "@"
    # before the path, so an "@" inside the password is hidden too.
    text = _USERINFO.sub(rf"\g<1>{_HIDDEN}@", url, count=1)
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:
        return text.split("?", 1)[0] + ("?" + _HIDDEN if "?" in text else "")
    if not parts.query:
        return text
    query = [
        (name, _HIDDEN if name.lower() in _SECRET_PARAMS else value)
        for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    ]
    shown = urllib.parse.urlencode(query, safe="*")
    return urllib.parse.urlunsplit(parts._replace(query=shown))


def import_redis(shown_url: str) -> Any:
    """redis-py (with its asyncio client), or an error naming the URL and what to install."""
    try:
        import redis
        import redis.asyncio
    except ImportError as exc:
        raise InvalidArgumentError(
            f"redis_url={shown_url!r} needs the redis package; install claude-force[redis]"
        ) from exc
    return redis


def pooled_client(module: Any, url: str, options: dict[str, Any]) -> redis.asyncio.Redis:
    """An asyncio client on a bounded pool (:data:`_MAX_CONNECTIONS`): a burst of commands
    started at once would otherwise open as many connections at once, and time out. Callers
    take a slot of :class:`LoopClient` first, so the pool itself never has to refuse one."""
    pool = module.asyncio.BlockingConnectionPool.from_url(
        url, max_connections=_MAX_CONNECTIONS, timeout=None, **options
    )
    return cast("redis.asyncio.Redis", module.asyncio.Redis.from_pool(pool))


class Resting(Exception):
    """Redis was found unusable while a command waited for a connection: the command was not
    sent, and the caller takes its fallback without counting another failure."""


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LoopClient:
    """The asyncio client of one event loop and the slots its commands wait for.

    Waiting for a connection is not an outage: a burst of commands queues for the
    :data:`_MAX_CONNECTIONS` slots (each command bounded by the socket timeout) instead of
    failing with "No connection available". An outage is a failed connection to the server.
    """

    loop: asyncio.AbstractEventLoop
    client: redis.asyncio.Redis
    keeper: asyncio.Task[None]
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(_MAX_CONNECTIONS))

    async def run(
        self, command: Callable[[redis.asyncio.Redis], Awaitable[T]], usable: Callable[[], bool]
    ) -> T:
        """``command(client)`` once a slot is free; :class:`Resting` when Redis was marked
        down meanwhile (an outage found by a command ahead of this one)."""
        from redis.exceptions import TimeoutError as RedisTimeout

        async with self.slots:
            if not usable():
                raise Resting
            try:
                return await command(self.client)
            except RedisTimeout as exc:
                # redis-py's words for a connection not made in time: the command was not
                # sent. On a busy event loop (a burst of CPU work) the timer fires before the
                # loop sees the connection made, which proves nothing about the server; a
                # second failure does.
                if not str(exc).startswith("Timeout connecting"):
                    raise
            return await command(self.client)


def loop_client(
    held: LoopClient | None, module: Any, url: str, options: dict[str, Any]
) -> LoopClient:
    """``held`` when it belongs to the running loop, else a new client for this loop (its
    connections belong to that loop) that closes when the loop ends."""
    loop = asyncio.get_running_loop()
    if held is not None and held.loop is loop:
        return held
    client = pooled_client(module, url, options)
    return LoopClient(loop, client, loop.create_task(_close_when_loop_ends(client)))


async def _close_when_loop_ends(client: redis.asyncio.Redis) -> None:
    """Sleeps until cancelled; ``asyncio.run`` cancels it at exit, closing the client."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        await client.aclose()
        raise


class RedisTier:
    """redis-py clients (sync, and asyncio per event loop) plus the policy around them."""

    def __init__(
        self,
        url: str,
        *,
        secret: bytes,
        namespace: str,
        ttl: float,
        clock: Callable[[], float],
    ) -> None:
        self.url = redact_url(url)  # the only form of the URL that messages ever show
        self._url = url
        self._redis = redis = import_redis(self.url)
        self._options: dict[str, Any] = {
            "socket_timeout": _SOCKET_TIMEOUT_S,
            "socket_connect_timeout": _SOCKET_TIMEOUT_S,
        }
        try:
            self._client = redis.Redis.from_url(url, **self._options)
        except ValueError as exc:
            raise InvalidArgumentError(
                f"redis_url={self.url!r} is not a Redis URL ({self._scrub(str(exc))}); "
                "use redis://host:port/db"
            ) from None  # the cause would show the URL with its password
        self._errors = (redis.RedisError, OSError)
        self.prefix = f"{namespace}:resp:"
        self.ttl = ttl
        self.stats = TierStats()
        self._secret = secret
        self._clock = clock
        self._down_until = -math.inf
        self._log = OnceLog(logger)
        self._async: LoopClient | None = None

    # -- policy (shared by both doors) ----------------------------------------------------

    def _available(self) -> bool:
        return self._clock() >= self._down_until

    def _failed(self, action: str, exc: BaseException) -> object:
        """A fetch or write that failed: bad entry if the key holds another type, else an
        outage (one warning, then rest). Returns what a fetch should yield."""
        if isinstance(exc, self._redis.ResponseError) and str(exc).startswith("WRONGTYPE"):
            return _WRONG_TYPE
        self.stats.errors += 1
        self._down_until = self._clock() + _REST_AFTER_ERROR_S
        self._log.warn(
            "unreachable",
            f"redis cache {action} failed at {self.url} ({self._scrub(str(exc))}); "
            "treating as a miss",
        )
        return None

    def _scrub(self, text: str) -> str:
        """``text`` (a server or client message) with the URL's credentials hidden."""
        for secret in self._secrets():
            text = text.replace(secret, _HIDDEN)
        return text

    def _secrets(self) -> list[str]:
        """The URL's passwords, as typed and decoded. Only passwords: a user name such as
        "user" also occurs in ordinary server messages, which hiding it would garble."""
        try:
            parts = urllib.parse.urlsplit(self._url)
            found = [parts.password or ""]
            found += [
                value
                for name, value in urllib.parse.parse_qsl(parts.query)
                if name.lower() in ("password", "pass")
            ]
        except ValueError:
            return []
        found += [urllib.parse.unquote(s) for s in found]
        return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)

    def _succeeded(self, since: int) -> None:
        """A command begun when ``stats.errors`` was ``since`` answered; one begun before the
        latest failure does not end the outage (nor let its warning repeat)."""
        if since == self.stats.errors and self._down_until != -math.inf:
            self._down_until = -math.inf
            self._log.clear("unreachable")
            logger.info("redis cache at %s answers again", self.url)

    def _judge(self, key: str, raw: object, now: float) -> tuple[Found | Miss, bool]:
        """Turn what GET returned into a hit or a miss; True when the key must be deleted."""
        if raw is None:
            self.stats.misses += 1
            return MISS, False
        try:
            if type(raw) is not bytes:
                shown = "a value of another type" if raw is _WRONG_TYPE else type(raw).__name__
                raise CacheIntegrityError(f"cache entry {key[:16]}... holds {shown}")
            opened = open_envelope(self._secret, key, raw)
            value = decode_payload(key, opened.payload)
        except CacheIntegrityError as exc:
            self.stats.integrity_failures += 1
            self.stats.misses += 1
            logger.warning("%s; deleted it from redis", exc)
            return MISS, True
        if now - opened.created_at >= self.ttl:
            self.stats.expirations += 1
            self.stats.misses += 1
            return MISS, False
        self.stats.hits += 1
        return Found(value, opened.created_at, opened.payload, raw), False

    def _expiry(self, created_at: float, now: float) -> int | None:
        """Seconds Redis should keep the entry (it expires it when the TTL check would)."""
        remaining = math.ceil(created_at + self.ttl - now)
        return remaining if remaining > 0 and self._available() else None

    # -- sync door ---------------------------------------------------------------------

    def get(self, key: str, now: float) -> Found | Miss:
        raw: object = None
        if self._available():
            since = self.stats.errors
            try:
                raw = self._client.get(self.prefix + key)
                self._succeeded(since)
            except self._errors as exc:
                raw = self._failed("get", exc)
        found, bad = self._judge(key, raw, now)
        if bad:
            self.delete(key)
        return found

    def put(self, key: str, envelope: bytes, created_at: float, now: float) -> None:
        expiry = self._expiry(created_at, now)
        if expiry is None:
            return
        since = self.stats.errors
        try:
            self._client.set(self.prefix + key, envelope, ex=expiry)
            self._succeeded(since)
        except self._errors as exc:
            self._failed("set", exc)

    def delete(self, key: str) -> None:
        if not self._available():
            return
        try:
            self._client.delete(self.prefix + key)
        except self._errors as exc:
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
        except self._errors as exc:
            self._failed("clear", exc)

    # -- async door --------------------------------------------------------------------

    async def _run(self, command: Callable[[redis.asyncio.Redis], Awaitable[T]]) -> T:
        """``command`` on the running loop's client, once one of its connections is free."""
        self._async = held = loop_client(self._async, self._redis, self._url, self._options)
        return await held.run(command, self._available)

    async def aget(self, key: str, now: float) -> Found | Miss:
        raw: object = None
        if self._available():
            since = self.stats.errors
            try:
                raw = await self._run(lambda client: client.get(self.prefix + key))
                self._succeeded(since)
            except Resting:
                pass  # a miss: the tier went down while this lookup waited
            except self._errors as exc:
                raw = self._failed("get", exc)
        found, bad = self._judge(key, raw, now)
        if bad:
            await self.adelete(key)
        return found

    async def aput(self, key: str, envelope: bytes, created_at: float, now: float) -> None:
        expiry = self._expiry(created_at, now)
        if expiry is None:
            return
        since = self.stats.errors
        try:
            await self._run(lambda client: client.set(self.prefix + key, envelope, ex=expiry))
            self._succeeded(since)
        except Resting:
            pass
        except self._errors as exc:
            self._failed("set", exc)

    async def adelete(self, key: str) -> None:
        if not self._available():
            return
        try:
            await self._run(lambda client: client.delete(self.prefix + key))
        except Resting:
            pass
        except self._errors as exc:
            self._failed("delete", exc)

    # -- lifecycle -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        # Redis applies its own memory policy; counting our keys would need a full SCAN,
        # so entries and sizes are not reported (0).
        return self.stats.as_dict(entries=0, size_bytes=0, max_size_bytes=0)

    async def aclose(self) -> None:
        """Close the running loop's client now (others close when their loop ends)."""
        held = self._async
        if held is not None and held.loop is asyncio.get_running_loop():
            self._async = None
            held.keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await held.keeper
        self.close()

    def close(self) -> None:
        self._client.close()
        held, self._async = self._async, None
        if held is not None and not held.loop.is_closed():
            # The keeper closes the client on its own loop, when that loop next runs.
            held.loop.call_soon_threadsafe(held.keeper.cancel)
