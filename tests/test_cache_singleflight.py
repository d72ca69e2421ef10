"""SingleFlight: concurrent identical calls share one upstream call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from claude_force.cache import SingleFlight


async def test_fifty_waiters_share_one_call() -> None:
    flight = SingleFlight()
    calls = 0
    release = asyncio.Event()

    async def fetch() -> dict[str, int]:
        nonlocal calls
        calls += 1
        await release.wait()
        return {"answer": 42}

    waiters = [asyncio.create_task(flight.run("k", fetch)) for _ in range(50)]
    await asyncio.sleep(0)
    assert flight.in_flight() == 1
    release.set()
    results = await asyncio.gather(*waiters)
    assert calls == 1
    assert all(value == {"answer": 42} for value, _ in results)
    assert sum(shared for _, shared in results) == 49
    assert flight.in_flight() == 0


async def test_different_keys_do_not_share() -> None:
    flight = SingleFlight()
    seen: list[str] = []

    def fetcher(name: str) -> Callable[[], Awaitable[str]]:
        async def fetch() -> str:
            seen.append(name)
            await asyncio.sleep(0)
            return name

        return fetch

    results = await asyncio.gather(flight.run("a", fetcher("a")), flight.run("b", fetcher("b")))
    assert list(results) == [("a", False), ("b", False)]
    assert sorted(seen) == ["a", "b"]


async def test_an_error_reaches_every_waiter_and_is_not_cached() -> None:
    flight = SingleFlight()
    calls = 0
    release = asyncio.Event()

    async def failing() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        raise RuntimeError("upstream down")

    waiters = [asyncio.create_task(flight.run("k", failing)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    assert calls == 1
    assert all(isinstance(o, RuntimeError) and str(o) == "upstream down" for o in outcomes)
    assert flight.in_flight() == 0

    async def fine() -> int:
        return 7

    assert await flight.run("k", fine) == (7, False)  # a later call starts afresh


async def test_cancelling_one_waiter_leaves_the_others() -> None:
    flight = SingleFlight()
    release = asyncio.Event()
    started = 0

    async def fetch() -> str:
        nonlocal started
        started += 1
        await release.wait()
        return "done"

    first = asyncio.create_task(flight.run("k", fetch))
    others = [asyncio.create_task(flight.run("k", fetch)) for _ in range(3)]
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    assert first.cancelled()
    release.set()
    assert await asyncio.gather(*others) == [("done", True)] * 3
    assert started == 1


async def test_the_call_is_cancelled_when_every_waiter_is() -> None:
    flight = SingleFlight()
    cancelled = asyncio.Event()

    async def fetch() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    waiters = [asyncio.create_task(flight.run("k", fetch)) for _ in range(3)]
    await asyncio.sleep(0)
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    await asyncio.wait_for(cancelled.wait(), timeout=5)
    assert flight.in_flight() == 0


async def test_a_cancelled_call_does_not_block_the_next_one() -> None:
    flight = SingleFlight()

    async def hang() -> str:
        await asyncio.Event().wait()
        return "never"

    waiter = asyncio.create_task(flight.run("k", hang))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    async def quick() -> str:
        return "fresh"

    assert await flight.run("k", quick) == ("fresh", False)
