"""The Redis tier against the real local server, and its failure modes."""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from claude_force._errors import InvalidArgumentError
from claude_force.cache import ResponseCache
from claude_force.cache._redis import redact_url

from ._cache_support import Clock, key

SECRET = "redis-test-secret-0123456789abcdef"
URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def server() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(URL)
    try:
        client.ping()
    except redis.ConnectionError:
        client.close()
        # The scale-out tests run against a real Redis; .ci/run starts one when none answers.
        pytest.fail(
            "no Redis server on 127.0.0.1:6379; start one with: "
            'redis-server --daemonize yes --port 6379 --save "" --appendonly no'
        )
    yield client
    client.close()


@pytest.fixture
def namespace(server: redis.Redis) -> Iterator[str]:
    name = f"cf-test-{uuid.uuid4().hex}"
    yield name
    names = list(server.scan_iter(match=f"{name}:*"))
    if names:
        server.delete(*names)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(folder: Path, namespace: str, clock: Clock, **kwargs: object) -> ResponseCache:
    return ResponseCache(
        cache_dir=folder,
        cache_secret=SECRET,
        redis_url=URL,
        namespace=namespace,
        clock=clock,
        **kwargs,  # type: ignore[arg-type]
    )


def test_round_trip_through_redis_and_promotion(
    tmp_path: Path, namespace: str, clock: Clock, server: redis.Redis
) -> None:
    with make(tmp_path / "a", namespace, clock) as writer:
        writer.set(key(1), {"answer": 42})
    stored = f"{namespace}:resp:{key(1)}"
    assert server.exists(stored)
    assert 24 * 3600 - 5 <= server.ttl(stored) <= 24 * 3600
    with make(tmp_path / "b", namespace, clock) as reader:
        first, second = reader.get(key(1)), reader.get(key(1))
        assert first is not None and first.tier == "redis" and first.value == {"answer": 42}
        assert second is not None and second.tier == "memory"
        assert reader.get_stats()["tiers"]["redis"]["hits"] == 1
    # The Redis hit was also written to b's disk tier.
    with ResponseCache(cache_dir=tmp_path / "b", cache_secret=SECRET, clock=clock) as local:
        hit = local.get(key(1))
        assert hit is not None and hit.tier == "disk"


def test_empty_dict_is_a_redis_hit(tmp_path: Path, namespace: str, clock: Clock) -> None:
    with make(tmp_path / "a", namespace, clock) as writer:
        writer.set(key(1), {})
    with make(tmp_path / "b", namespace, clock) as reader:
        hit = reader.get(key(1))
        assert hit is not None and hit.value == {} and hit.tier == "redis"


def test_entry_copied_to_another_key_is_rejected(
    tmp_path: Path, namespace: str, clock: Clock, server: redis.Redis
) -> None:
    with make(tmp_path / "a", namespace, clock) as writer:
        writer.set(key(1), {"a": 1})
    copied = f"{namespace}:resp:{key(2)}"
    assert server.copy(f"{namespace}:resp:{key(1)}", copied)
    with make(tmp_path / "b", namespace, clock) as reader:
        assert reader.get(key(2)) is None
        assert reader.get_stats()["integrity_failures"] == 1
        assert reader.get(key(1)) is not None
    assert not server.exists(copied)


def test_tampered_redis_value_is_rejected(
    tmp_path: Path, namespace: str, clock: Clock, server: redis.Redis
) -> None:
    with make(tmp_path / "a", namespace, clock) as writer:
        writer.set(key(1), {"a": 1})
    name = f"{namespace}:resp:{key(1)}"
    raw = server.get(name)
    assert isinstance(raw, bytes)
    blob = bytearray(raw)
    blob[-2] ^= 0x01
    server.set(name, bytes(blob))
    with make(tmp_path / "b", namespace, clock) as reader:
        assert reader.get(key(1)) is None
        assert reader.get_stats()["tiers"]["redis"]["integrity_failures"] == 1


def test_expiry_by_our_clock_applies_to_redis_too(
    tmp_path: Path, namespace: str, clock: Clock
) -> None:
    with make(tmp_path / "a", namespace, clock) as writer:
        writer.set(key(1), {"a": 1})
    clock.now += 24 * 3600
    with make(tmp_path / "b", namespace, clock) as reader:
        assert reader.get(key(1)) is None
        assert reader.get_stats()["tiers"]["redis"]["expirations"] == 1


def test_clear_removes_only_this_namespace(
    tmp_path: Path, namespace: str, clock: Clock, server: redis.Redis
) -> None:
    foreign = f"{namespace}-other:resp:{key(1)}"
    server.set(foreign, b"not ours", ex=60)
    try:
        with make(tmp_path / "a", namespace, clock) as cache:
            cache.warm((key(n), {"n": n}) for n in range(20))
            assert len(list(server.scan_iter(match=f"{namespace}:*"))) == 20
            cache.clear()
        assert list(server.scan_iter(match=f"{namespace}:*")) == []
        assert server.get(foreign) == b"not ours"
    finally:
        server.delete(foreign)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_redis_down_degrades_to_a_miss(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    with (
        caplog.at_level(logging.WARNING, "claude_force.cache"),
        ResponseCache(
            cache_dir=tmp_path, cache_secret=SECRET, redis_url=url, clock=clock, memory_max_mb=0
        ) as cache,
    ):
        assert cache.get(key(1)) is None
        cache.set(key(2), {"b": 2})  # still stored on disk
        hit = cache.get(key(2))
        assert hit is not None and hit.tier == "disk"
        redis_stats = cache.get_stats()["tiers"]["redis"]
        assert redis_stats["errors"] == 1  # resting after the first failure
        assert redis_stats["misses"] == 1
        clock.now += 10
        assert cache.get(key(3)) is None
        assert cache.get_stats()["tiers"]["redis"]["errors"] == 2
    assert caplog.text.count("redis cache get failed") == 1  # one warning per outage


def test_a_bad_redis_url_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="redis_url='http://x'"):
        ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, redis_url="http://x")


def test_redis_hit_reaches_disk_off_the_callers_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, namespace: str, clock: Clock
) -> None:
    import sqlite3
    import threading

    from claude_force.cache import _disk

    with make(tmp_path / "a", namespace, clock) as writer:
        writer.set(key(1), {"answer": 42})
    caller, writes = threading.get_ident(), []
    real_write = _disk.DiskTier._write

    def spy(self: _disk.DiskTier, action: str, *args: object, **kw: object) -> object:
        if threading.get_ident() == caller:
            writes.append(action)
        return real_write(self, action, *args, **kw)  # type: ignore[arg-type]

    with make(tmp_path / "b", namespace, clock) as reader:
        monkeypatch.setattr(_disk.DiskTier, "_write", spy)
        hit = reader.get(key(1))
        assert hit is not None and hit.tier == "redis"
        assert writes == []  # the hit path wrote nothing to disk itself
        reader.flush()
        conn = sqlite3.connect(tmp_path / "b" / "cache.db")
        assert conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 1
        conn.close()


@pytest.mark.parametrize("plant", ["list", "hash", "string"])
def test_a_key_of_the_wrong_type_is_a_bad_entry_not_an_outage(
    tmp_path: Path, namespace: str, clock: Clock, server: redis.Redis, plant: str
) -> None:
    with make(tmp_path, namespace, clock, memory_max_mb=0) as cache:
        name = f"{namespace}:resp:{key(1)}"
        if plant == "list":
            server.rpush(name, b"x")
        elif plant == "hash":
            server.hset(name, "field", b"x")
        else:
            server.set(name, b"not an envelope")
        assert cache.get(key(1)) is None
        stats = cache.get_stats()["tiers"]["redis"]
        assert (stats["integrity_failures"], stats["errors"]) == (1, 0)
        assert server.exists(name) == 0  # deleted
        with make(tmp_path / "other", namespace, clock) as other:
            other.set(key(2), {"b": 2})
        hit = cache.get(key(2))  # no rest: the very next lookup asks Redis
        assert hit is not None and hit.tier == "redis"


async def test_async_door_uses_redis_too(
    tmp_path: Path, namespace: str, clock: Clock, server: redis.Redis
) -> None:
    cache = make(tmp_path / "a", namespace, clock)
    await cache.aset(key(1), {"answer": 42})
    other = make(tmp_path / "b", namespace, clock)
    hit = await other.aget(key(1))
    assert hit is not None and hit.tier == "redis" and hit.value == {"answer": 42}
    server.rpush(f"{namespace}:resp:{key(2)}", b"x")
    assert await other.aget(key(2)) is None
    assert other.get_stats()["tiers"]["redis"]["integrity_failures"] == 1
    assert server.exists(f"{namespace}:resp:{key(2)}") == 0
    await other.aclose()
    await cache.aclose()


async def test_async_door_with_redis_down_is_one_warning_then_rest(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    cache = ResponseCache(
        cache_dir=tmp_path, cache_secret=SECRET, redis_url=url, clock=clock, memory_max_mb=0
    )
    with caplog.at_level(logging.WARNING, "claude_force.cache"):
        assert await cache.aget(key(1)) is None
        await cache.aset(key(2), {"b": 2})  # resting: Redis is not asked again
        hit = await cache.aget(key(2))
        assert hit is not None and hit.tier == "disk"
    assert cache.get_stats()["tiers"]["redis"]["errors"] == 1
    assert caplog.text.count("redis cache get failed") == 1
    await cache.aclose()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@127.0.0.1:6390/0", "redis://***@127.0.0.1:6390/0"),
        ("redis://alice:hunter2@h/0", "redis://***@h/0"),
        ("redis://alice@h", "redis://***@h"),
        ("redis://:p@ss@h/0", "redis://***@h/0"),  # an "@" inside the password
        ("rediss://u:p%40w@h:1/0?password=pw2&db=2", "rediss://***@h:1/0?password=***&db=2"),
        ("redis://h/0?username=bob&password=pw3", "redis://h/0?username=***&password=***"),
        ("unix://:pw@/run/redis.sock?db=1", "unix://***@/run/redis.sock?db=1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_redact_url_hides_user_and_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


PASSWORD = "hunter2-PASSWORD"


def test_a_password_in_the_url_never_reaches_a_warning(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{closed_port()}/0"
    with (
        caplog.at_level(logging.INFO, "claude_force.cache"),
        ResponseCache(
            cache_dir=tmp_path, cache_secret=SECRET, redis_url=url, clock=clock, memory_max_mb=0
        ) as cache,
    ):
        assert cache.get(key(1)) is None
        cache.set(key(1), {"a": 1})
        assert cache._redis is not None and PASSWORD not in cache._redis.url
        assert PASSWORD not in repr(cache.get_stats())
    assert "redis cache get failed at redis://***@127.0.0.1:" in caplog.text
    assert PASSWORD not in caplog.text


async def test_a_wrong_password_on_a_live_server_is_not_shown(
    tmp_path: Path, server: redis.Redis, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://someone:{PASSWORD}@127.0.0.1:6379/0"
    cache = ResponseCache(
        cache_dir=tmp_path, cache_secret=SECRET, redis_url=url, clock=clock, memory_max_mb=0
    )
    with caplog.at_level(logging.INFO, "claude_force.cache"):
        assert cache.get(key(1)) is None
        clock.now += 10
        assert await cache.aget(key(2)) is None  # the asyncio client too
        await cache.aclose()
    assert cache.get_stats()["tiers"]["redis"]["errors"] == 2
    assert "redis://***@127.0.0.1:6379/0" in caplog.text
    assert PASSWORD not in caplog.text and "someone" not in caplog.text
    assert "***name" not in caplog.text  # the server's own words are left whole


@pytest.mark.parametrize(
    "url", [f"http://u:{PASSWORD}@x", f"redis://:{PASSWORD}@h:port/0", PASSWORD.encode()]
)
def test_a_bad_url_error_hides_the_password(tmp_path: Path, url: object) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, redis_url=url)  # type: ignore[arg-type]
    shown = "".join(
        str(e) for e in (caught.value, caught.value.__cause__, caught.value.__context__)
    )
    assert PASSWORD not in shown
    assert "redis_url=" in str(caught.value)


def test_a_password_echoed_in_an_error_message_is_hidden(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{closed_port()}/0"
    with ResponseCache(
        cache_dir=tmp_path, cache_secret=SECRET, redis_url=url, clock=clock
    ) as cache:
        tier = cache._redis
        assert tier is not None
        with caplog.at_level(logging.WARNING, "claude_force.cache"):
            # The fault: a client library that quotes the URL in its message.
            tier._failed("get", redis.ConnectionError(f"cannot reach {url}"))
    assert PASSWORD not in caplog.text
    assert "cannot reach redis://:***@127.0.0.1" in caplog.text
