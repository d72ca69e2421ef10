"""The concurrency gate: bound, fairness, cancellation, AIMD."""

from __future__ import annotations

import asyncio

from claude_force._admission import ConcurrencyGate


async def test_never_more_than_limit_in_flight() -> None:
    gate = ConcurrencyGate(3)
    release = asyncio.Event()
    inside = 0
    most = 0

    async def worker() -> None:
        nonlocal inside, most
        async with gate.slot():
            inside += 1
            most = max(most, inside)
            await release.wait()
            inside -= 1

    tasks = [asyncio.create_task(worker()) for _ in range(10)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert inside == 3
    release.set()
    await asyncio.gather(*tasks)
    assert most == 3
    assert gate.peak == 3
    assert gate.active == 0


async def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    gate = ConcurrencyGate(1)
    await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    gate.release()
    assert gate.active == 0
    await asyncio.wait_for(gate.acquire(), 1)
    assert gate.active == 1


async def test_slot_handed_over_while_cancelled_is_passed_on() -> None:
    gate = ConcurrencyGate(1)
    await gate.acquire()
    first = asyncio.create_task(gate.acquire())
    second = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gate.release()  # hands the slot to `first`...
    first.cancel()  # ...which is cancelled before it runs
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 1)
    assert gate.active == 1


def test_aimd_halves_on_overload_and_recovers() -> None:
    now = [0.0]
    gate = ConcurrencyGate(8, cooldown=1.0, clock=lambda: now[0])
    gate.on_overload()
    assert gate.limit == 4
    gate.on_overload()  # same burst: within the cooldown, counted once
    assert gate.limit == 4
    now[0] = 2.0
    gate.on_overload()
    assert gate.limit == 2
    for _ in range(2):
        gate.on_success()
    assert gate.limit == 3
    for _ in range(100):
        gate.on_success()
    assert gate.limit == 8


def test_non_adaptive_gate_keeps_its_limit() -> None:
    gate = ConcurrencyGate(4, adaptive=False)
    gate.on_overload()
    assert gate.limit == 4
