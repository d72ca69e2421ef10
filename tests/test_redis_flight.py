"""Single-flight across processes on a Redis lease, against the real server.

Another process is played by writing its lease straight into Redis; the answer it would
store is played by ``lookup``. Waiting is on an injected clock, or bounded polling of Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis

from claude_force._shared_limits import SharedRedis
from claude_force.cache._redis_flight import RedisFlight

from ._support import FakeTime, scratch_namespace
from .test_cache_redis import URL, server  # noqa: F401  (the fixtures)


@pytest.fixture
def space(server: redis.Redis) -> Iterator[str]:  # noqa: F811
    yield from scratch_namespace(server)


def flight(space: str, fake: FakeTime | None = None, *, lease_seconds: float = 10) -> RedisFlight:
    shared = SharedRedis(URL, namespace=space)
    if fake is None:
        return RedisFlight(shared, lease_seconds=lease_seconds)
    return RedisFlight(shared, clock=fake.clock, sleep=fake.sleep, lease_seconds=lease_seconds)


def test_alone_it_leads_and_releases_the_lease(space: str, server: redis.Redis) -> None:  # noqa: F811
    sent: list[int] = []

    async def main() -> str:
        async def send() -> str:
            sent.append(1)
            assert server.get(f"{space}:flight:k1") is not None  # held while sending
            return "answer"

        async def lookup() -> str | None:
            return None

        return await flight(space).run("k1", send, lookup, bound=5)

    assert asyncio.run(main()) == "answer"
    assert sent == [1]
    assert not server.exists(f"{space}:flight:k1")


def test_a_request_in_flight_elsewhere_is_waited_for_not_sent(
    space: str,
    server: redis.Redis,  # noqa: F811
) -> None:
    server.set(f"{space}:flight:k2", "other-process", px=60_000)
    fake = FakeTime()
    polls: list[int] = []

    async def main() -> tuple[str, RedisFlight]:
        async def send() -> str:
            raise AssertionError("sent although another process is sending it")

        async def lookup() -> str | None:
            polls.append(1)
            return "stored by the other process" if len(polls) == 3 else None

        f = flight(space, fake)
        return await f.run("k2", send, lookup, bound=30), f

    answer, f = asyncio.run(main())
    assert answer == "stored by the other process"
    assert f.stats.waited == 1 and f.stats.answered_elsewhere == 1 and f.stats.led == 0
    assert fake.sleeps[0] < fake.sleeps[1] < fake.sleeps[2]  # polls back off


def test_a_wait_ends_at_its_bound_and_the_request_is_sent(
    space: str,
    server: redis.Redis,  # noqa: F811
) -> None:
    server.set(f"{space}:flight:k3", "stuck-process", px=60_000)
    fake = FakeTime()

    async def main() -> tuple[str, RedisFlight]:
        async def send() -> str:
            return "sent myself"

        async def lookup() -> str | None:
            return None

        f = flight(space, fake)
        return await f.run("k3", send, lookup, bound=10), f

    answer, f = asyncio.run(main())
    assert answer == "sent myself" and f.stats.gave_up == 1
    assert 10 <= sum(fake.sleeps) < 11


def test_when_the_leaders_lease_expires_a_waiter_takes_over(
    space: str,
    server: redis.Redis,  # noqa: F811
) -> None:
    server.set(f"{space}:flight:k4", "dead-process", px=150)  # its process died

    async def main() -> tuple[str, RedisFlight]:
        async def send() -> str:
            return "sent after the lease expired"

        async def lookup() -> str | None:
            return None

        f = flight(space)
        return await f.run("k4", send, lookup, bound=30), f

    answer, f = asyncio.run(main())
    assert answer == "sent after the lease expired"
    assert f.stats.waited == 1 and f.stats.took_over == 1 and f.stats.led == 1


def test_the_lease_is_renewed_while_the_call_runs_and_the_renewal_ends_with_it(
    space: str,
    server: redis.Redis,  # noqa: F811
) -> None:
    name = f"{space}:flight:k5"

    async def main() -> list[str]:
        async def send() -> str:
            # Poll until the lease has been renewed twice (its TTL went up), within 10 s.
            renewals, last, deadline = 0, server.pttl(name), time.monotonic() + 10
            while renewals < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
                now = server.pttl(name)
                renewals += now > last
                last = now
            assert renewals == 2, "the lease was not renewed"
            return "long answer"

        async def lookup() -> str | None:
            return None

        assert await flight(space, lease_seconds=0.3).run("k5", send, lookup, bound=30) == (
            "long answer"
        )
        names = [getattr(t.get_coro(), "__qualname__", "") for t in asyncio.all_tasks()]
        return [n for n in names if n == "RedisFlight._renew"]

    assert asyncio.run(main()) == []  # no renewer left behind
    assert not server.exists(name)


def test_unreachable_redis_sends_at_once() -> None:
    dead = RedisFlight(SharedRedis("redis://127.0.0.1:1/0"))

    async def main() -> str:
        async def send() -> str:
            return "sent"

        async def lookup() -> str | None:
            return None

        return await dead.run("k6", send, lookup, bound=30)

    assert asyncio.run(main()) == "sent"
    assert dead.stats.fallbacks == 1 and dead.shared.fallbacks == 1
