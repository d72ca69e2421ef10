"""Client-side token buckets: learning, calibration, 429s, deadlines; on an injected clock."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Mapping
from typing import Any

import anthropic
import pytest
from anthropic.types import Message

from claude_force._admission import (
    AdmissionDeadlineError,
    Limits,
    Ticket,
    TokenBuckets,
    model_class,
)
from claude_force._errors import APIError, InvalidArgumentError
from claude_force._usage import Usage
from claude_force.cli._limits_line import rate_limit_line
from claude_force.testing import RateLimits, Simulator
from claude_force.testing._ratelimit import Rejection, ServerRateLimiter

from ._support import FakeTime, WireTime

SONNET = "claude-sonnet-4-6"


def headers(**kinds: tuple[int, int]) -> dict[str, str]:
    """``requests=(limit, remaining)`` -> the service's rate-limit headers."""
    out: dict[str, str] = {}
    for name, (limit, remaining) in kinds.items():
        kind = name.replace("_", "-")
        out[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
        out[f"anthropic-ratelimit-{kind}-remaining"] = str(remaining)
        out[f"anthropic-ratelimit-{kind}-reset"] = "2030-01-01T00:00:00Z"
    return out


def buckets(t: FakeTime, rand: float = 0.0, **kwargs: Any) -> TokenBuckets:
    return TokenBuckets(clock=t.clock, sleep=t.sleep, rand=lambda: rand, **kwargs)


def level(b: TokenBuckets, kind: str, cls: str = "sonnet") -> float:
    snap: Any = b.snapshot()
    return float(snap[cls]["buckets"][kind]["level"])


async def learned(
    t: FakeTime, max_in_flight: int | None = None, **kinds: tuple[int, int]
) -> TokenBuckets:
    """Buckets that have seen one answer carrying ``kinds``. The unseen-consumption
    estimator is slowed to a standstill: these tests' reports jump at will."""
    b = buckets(t, unseen_seconds=1e9, max_in_flight=max_in_flight)
    ticket = await b.admit(SONNET, 400, 10)
    b.settle(ticket, Usage(input_tokens=100, output_tokens=10), headers(**kinds))
    return b


async def test_before_any_headers_only_a_few_requests_go_out() -> None:
    t = FakeTime()
    b = buckets(t, unknown_in_flight=2)
    first = await b.admit(SONNET, 400, 10)
    await b.admit(SONNET, 400, 10)
    third = asyncio.create_task(b.admit(SONNET, 400, 10))
    await asyncio.sleep(0)
    assert not third.done()
    b.settle(first, Usage(input_tokens=100, output_tokens=10), headers(requests=(60, 50)))
    ticket = await asyncio.wait_for(third, 1)
    assert ticket.model_class == "sonnet"
    snap: Any = b.snapshot()
    assert snap["sonnet"]["state"] == "known"
    assert snap["sonnet"]["buckets"]["requests"]["limit"] == 60
    assert t.sleeps == []


async def test_answers_without_headers_leave_the_class_unlimited() -> None:
    t = FakeTime()
    b = buckets(t, unknown_in_flight=1)
    ticket = await b.admit(SONNET, 400, 10)
    b.settle(ticket, Usage(input_tokens=100, output_tokens=10), {})
    for _ in range(20):
        await b.admit(SONNET, 400, 10)
    snap: Any = b.snapshot()
    assert snap["sonnet"]["state"] == "absent" and snap["sonnet"]["in_flight"] == 20


async def test_waits_until_the_learned_bucket_refills() -> None:
    t = FakeTime()
    b = await learned(t, requests=(60, 0))
    await b.admit(SONNET, 400, 10)
    assert t.sleeps == [pytest.approx(1.0)]  # 60 a minute: one a second


async def test_waits_carry_jitter() -> None:
    t = FakeTime()
    b = buckets(t, rand=0.5, jitter=0.2)
    ticket = await b.admit(SONNET, 400, 10)
    b.settle(ticket, Usage(input_tokens=100, output_tokens=10), headers(requests=(60, 0)))
    await b.admit(SONNET, 400, 10)
    assert t.sleeps == [pytest.approx(1.1)]


async def test_input_estimate_learns_the_ratio_and_is_corrected_from_usage() -> None:
    t = FakeTime()
    b = buckets(t)
    first = await b.admit(SONNET, 4000, 10)  # 1000 tokens by characters
    assert first.costs["input-tokens"] == 1000
    usage = Usage(input_tokens=1500, output_tokens=10)
    b.settle(first, usage, headers(input_tokens=(100_000, 98_500)))
    second = await b.admit(SONNET, 4000, 10)
    assert second.costs["input-tokens"] == pytest.approx(1500)
    assert level(b, "input-tokens") == pytest.approx(98_500 - 1500)
    # The service counted 1200: the bucket gets the difference back.
    b.settle(second, Usage(input_tokens=1200, output_tokens=10), {})
    assert level(b, "input-tokens") == pytest.approx(98_500 - 1200)
    snap: Any = b.snapshot()
    assert snap["sonnet"]["input_ratio"] == pytest.approx(1.5 + 0.2 * (1.2 - 1.5))


async def test_a_request_waits_for_headroom_as_wide_as_the_estimates_usual_error() -> None:
    t = FakeTime()
    b = await learned(t, input_tokens=(60_000, 60_000))  # ratio 1.0
    ticket = await b.admit(SONNET, 4000, 10)
    b.settle(ticket, Usage(input_tokens=1500, output_tokens=1), {})  # 50% off: spread 0.1
    snap: Any = b.snapshot()
    assert snap["sonnet"]["input_ratio_spread"] == pytest.approx(0.1)
    ticket = await b.admit(SONNET, 400, 10)
    b.settle(ticket, None, headers(input_tokens=(60_000, 1100)))
    ticket = await b.admit(SONNET, 4000, 10)  # 1,100 tokens: fits, but not with headroom
    assert ticket.costs["input-tokens"] == pytest.approx(1100)  # only the estimate is charged
    assert t.sleeps == [pytest.approx(0.22)]  # 20% headroom: 220 tokens at 1,000 a second


async def test_a_refund_gives_back_everything_an_unsent_attempt_was_charged() -> None:
    t = FakeTime()
    b = await learned(t, input_tokens=(60_000, 60_000), output_tokens=(10_000, 10_000))
    ticket = await b.admit(SONNET, 4000, 4000)
    b.refund(ticket)
    b.refund(ticket)  # counted once
    assert level(b, "input-tokens") == pytest.approx(60_000)
    assert level(b, "output-tokens") == pytest.approx(10_000)
    snap: Any = b.snapshot()
    assert snap["sonnet"]["in_flight"] == 0


async def test_cache_reads_are_not_charged() -> None:
    t = FakeTime()
    b = await learned(t, input_tokens=(100_000, 100_000))
    ticket = await b.admit(SONNET, 40_000, 10)
    usage = Usage(input_tokens=50, cache_write_5m_tokens=100, cache_read_tokens=9000)
    b.settle(ticket, usage, {})
    assert level(b, "input-tokens") == pytest.approx(100_000 - 150)


async def test_output_is_reserved_from_max_tokens_and_corrected() -> None:
    t = FakeTime()
    b = await learned(t, output_tokens=(10_000, 10_000))
    ticket = await b.admit(SONNET, 400, 4000)
    assert level(b, "output-tokens") == pytest.approx(6000)
    b.settle(ticket, Usage(input_tokens=100, output_tokens=300), {})
    assert level(b, "output-tokens") == pytest.approx(9700)


async def test_a_failed_attempt_gives_back_its_output_reservation_only() -> None:
    t = FakeTime()
    b = await learned(t, output_tokens=(10_000, 10_000), input_tokens=(50_000, 50_000))
    ticket = await b.admit(SONNET, 4000, 4000)
    b.settle(ticket, None, None)
    assert level(b, "output-tokens") == pytest.approx(10_000)
    assert level(b, "input-tokens") == pytest.approx(49_000)


async def test_a_lower_remaining_lowers_the_level_a_higher_one_does_not() -> None:
    t = FakeTime()
    b = await learned(t, input_tokens=(100_000, 50_000))
    ticket = await b.admit(SONNET, 4000, 10)
    b.settle(
        ticket, Usage(input_tokens=1000, output_tokens=1), headers(input_tokens=(100_000, 20_000))
    )
    assert level(b, "input-tokens") == pytest.approx(20_000)
    ticket = await b.admit(SONNET, 4000, 10)
    b.settle(
        ticket, Usage(input_tokens=1000, output_tokens=1), headers(input_tokens=(100_000, 90_000))
    )
    assert level(b, "input-tokens") == pytest.approx(19_000)


async def test_configured_limits_apply_at_once_and_cap_what_is_learned() -> None:
    t = FakeTime()
    b = buckets(t, limits={"claude-sonnet-4-5": Limits(requests_per_minute=30)})
    for _ in range(30):
        await b.admit(SONNET, 400, 10)
    assert t.sleeps == []  # configured: no cautious start
    ticket = await b.admit(SONNET, 400, 10)
    assert t.sleeps == [pytest.approx(2.0)]
    b.settle(ticket, Usage(input_tokens=100, output_tokens=1), headers(requests=(60, 60)))
    snap: Any = b.snapshot()
    requests = snap["sonnet"]["buckets"]["requests"]
    assert requests["limit"] == 30
    assert requests["level"] == pytest.approx(0)  # the local count is lower: it stays
    # A lower limit from the service wins over the cap.
    b.settle(await b.admit(SONNET, 400, 10), None, headers(requests=(20, 20)))
    snap = b.snapshot()
    assert snap["sonnet"]["buckets"]["requests"]["limit"] == 20


async def test_a_429_takes_the_servers_remaining_and_slows_the_refill() -> None:
    t = FakeTime()
    b = await learned(t, input_tokens=(60_000, 60_000))
    ticket = await b.admit(SONNET, 40_000, 10)  # 10,000 tokens
    b.on_rate_limited(ticket, headers(input_tokens=(60_000, 2000)))
    b.on_rate_limited(ticket, headers(input_tokens=(60_000, 0)))  # a ticket counts once
    assert level(b, "input-tokens") == pytest.approx(2000)
    snap: Any = b.snapshot()
    assert snap["sonnet"]["buckets"]["input-tokens"]["refill_factor"] == pytest.approx(0.5)
    await b.admit(SONNET, 40_000, 10)
    # 8000 missing at 1000/s, slowed to half (recovering over 10 s): at most 16 s.
    assert 8.0 < sum(t.sleeps) <= 16.0 + 1e-3
    t.now += 10
    snap = b.snapshot()
    assert snap["sonnet"]["buckets"]["input-tokens"]["refill_factor"] == pytest.approx(1.0)


async def test_a_burst_of_429s_slows_the_refill_once() -> None:
    t = FakeTime()
    b = await learned(t, requests=(600, 600))
    tickets = [await b.admit(SONNET, 400, 10) for _ in range(5)]
    for ticket in tickets:
        b.on_rate_limited(ticket, headers(requests=(600, 0)))
    snap: Any = b.snapshot()
    assert snap["sonnet"]["buckets"]["requests"]["refill_factor"] == pytest.approx(0.5)


async def test_a_request_past_its_deadline_fails_at_once() -> None:
    t = FakeTime()
    b = await learned(t, requests=(60, 0))
    with pytest.raises(AdmissionDeadlineError) as info:
        await b.admit(SONNET, 400, 10, deadline=t.now + 0.5)
    err = info.value
    assert isinstance(err, APIError) and err.error_type == "rate_limited"
    assert "60 requests per minute" in str(err) and "deadline_seconds" in str(err)
    assert t.sleeps == []
    await b.admit(SONNET, 400, 10, deadline=t.now + 1.5)
    assert t.sleeps == [pytest.approx(1.0)]


async def test_the_deadline_counts_the_requests_queued_ahead() -> None:
    t = FakeTime()
    b = await learned(t, requests=(60, 0))
    queued = [asyncio.create_task(b.admit(SONNET, 400, 10)) for _ in range(3)]
    await asyncio.sleep(0)
    with pytest.raises(AdmissionDeadlineError):
        await b.admit(SONNET, 400, 10, deadline=t.now + 3.5)  # fourth in line: 4 s
    await asyncio.gather(*queued)
    assert sum(t.sleeps) == pytest.approx(3.0)


async def test_first_come_first_served_a_large_request_is_not_overtaken() -> None:
    t = FakeTime()
    b = await learned(t, input_tokens=(60_000, 0))
    order: list[str] = []

    async def go(name: str, chars: int) -> None:
        await b.admit(SONNET, chars, 10)
        order.append(name)

    await asyncio.gather(go("large", 40_000), go("small1", 400), go("small2", 400))
    assert order == ["large", "small1", "small2"]


async def test_a_cancelled_waiter_does_not_block_the_queue() -> None:
    t = FakeTime()
    b = await learned(t, requests=(60, 0))
    head = asyncio.create_task(b.admit(SONNET, 400, 10))
    second = asyncio.create_task(b.admit(SONNET, 400, 10))
    await asyncio.sleep(0)
    head.cancel()
    await asyncio.gather(head, return_exceptions=True)
    ticket = await asyncio.wait_for(second, 1)
    assert isinstance(ticket, Ticket)
    snap: Any = b.snapshot()
    assert snap["sonnet"]["waiting"] == 0 and snap["sonnet"]["in_flight"] == 1


async def test_an_answer_wakes_the_head_early() -> None:
    t = FakeTime()
    b = await learned(t, output_tokens=(6000, 6000))
    running = await b.admit(SONNET, 400, 6000)

    async def never(seconds: float) -> None:
        await asyncio.Event().wait()  # only an answer can let the head in

    b._sleep = never
    waiting = asyncio.create_task(b.admit(SONNET, 400, 1000))
    await asyncio.sleep(0)
    assert not waiting.done()
    b.settle(running, Usage(input_tokens=100, output_tokens=100), {})
    assert isinstance(await asyncio.wait_for(waiting, 1), Ticket)


async def test_a_retry_queues_behind_the_head_ahead_of_first_attempts() -> None:
    t = FakeTime()
    b = await learned(t, requests=(60, 0))
    order: list[str] = []

    async def go(name: str, retry: bool) -> None:
        await b.admit(SONNET, 400, 10, retry=retry)
        order.append(name)

    await asyncio.gather(
        go("head", False), go("first1", False), go("retry1", True), go("retry2", True)
    )
    assert order == ["head", "retry1", "retry2", "first1"]


async def test_admitted_attempts_of_a_class_are_bounded() -> None:
    t = FakeTime()
    b = await learned(t, max_in_flight=2, requests=(600, 600))
    first = await b.admit(SONNET, 400, 10)
    await b.admit(SONNET, 400, 10)
    third = asyncio.create_task(b.admit(SONNET, 400, 10))
    await asyncio.sleep(0)
    assert not third.done()
    b.settle(first, Usage(input_tokens=100, output_tokens=1), {})
    assert isinstance(await asyncio.wait_for(third, 1), Ticket)
    assert t.sleeps == []  # woken by the answer, not by a timer


# -- others' consumption, learned from what the service reports remaining ----------------


def unseen(b: TokenBuckets, kind: str = "input-tokens") -> float:
    snap: Any = b.snapshot()
    return float(snap["sonnet"]["buckets"][kind]["unseen_share"])


async def test_attempts_not_yet_sent_are_not_read_as_others_consumption() -> None:
    t = FakeTime()
    b = buckets(t)
    first = await b.admit(SONNET, 4000, 10)  # 1,000 tokens
    b.settle(
        first, Usage(input_tokens=1000, output_tokens=1), headers(input_tokens=(60_000, 59_000))
    )
    held = [await b.admit(SONNET, 4000, 10) for _ in range(5)]  # waiting for a slot
    sent = await b.admit(SONNET, 4000, 10)
    b.sending(sent)
    # The service counted only `sent`: exactly what our own use predicts.
    b.settle(
        sent, Usage(input_tokens=1000, output_tokens=1), headers(input_tokens=(60_000, 58_000))
    )
    assert unseen(b) == 0.0
    assert level(b, "input-tokens") == pytest.approx(58_000 - 5000)  # the held are charged
    for ticket in held:
        b.sending(ticket)
    # Now they have left and the service counted them, and 3,000 tokens of someone else's.
    b.settle(
        held[0], Usage(input_tokens=1000, output_tokens=1), headers(input_tokens=(60_000, 50_000))
    )
    assert unseen(b) > 0.0


async def test_attempts_sent_before_the_limits_were_known_are_not_read_as_others() -> None:
    """Four attempts leave before any limit is known; the service counts and answers them
    one by one. The first answer makes the bucket, the others' costs were never charged to
    it: each later report shows one more of them, not someone else's consumption."""
    t = FakeTime()
    server = limiter(t, 0.0)
    b = buckets(t)
    first = [await b.admit(SONNET, 4000, 10) for _ in range(4)]  # 1,000 tokens each
    for ticket in first:
        b.sending(ticket)
        decision = server.admit(SONNET, input_tokens=1000, max_tokens=10)
        assert not isinstance(decision, Rejection)
        server.settle(decision, input_tokens=1000, output_tokens=5)
        b.settle(ticket, Usage(input_tokens=1000, output_tokens=5), server.headers(SONNET))
    # The last of them was read as 1,000 tokens taken by others: a fifth of the refill.
    assert unseen(b) == 0.0
    assert level(b, "input-tokens") == pytest.approx(60_000 - 4000)


async def closed_loop(
    t: FakeTime, server: ServerRateLimiter, b: TokenBuckets, seconds: float
) -> int:
    """One request after another (1,000 tokens, 0.2 s of service) against ``server`` for
    ``seconds`` of the fake clock, every attempt through ``b``. Returns the 429s."""
    refused = 0
    end = t.now + seconds
    while t.now < end:
        ticket = await b.admit(SONNET, 4000, 10)
        b.sending(ticket)
        decision = server.admit(SONNET, input_tokens=1000, max_tokens=10)
        if isinstance(decision, Rejection):
            refused += 1
            b.on_rate_limited(ticket, decision.headers)
            continue
        t.now += 0.2
        server.settle(decision, input_tokens=1000, output_tokens=5)
        b.settle(ticket, Usage(input_tokens=1000, output_tokens=5), server.headers(SONNET))
    return refused


def limiter(t: FakeTime, share: float) -> ServerRateLimiter:
    limits = RateLimits(input_tokens_per_minute=60_000, neighbour_share=share)
    return ServerRateLimiter(limits, clock=t.clock, wall=lambda: 1_700_000_000.0 + t.now)


async def test_a_neighbour_taking_30_percent_is_learned_and_left_its_share() -> None:
    t = FakeTime()
    server = limiter(t, 0.3)
    b = buckets(t)
    refused = closed_loop(t, server, b, 60.0)
    assert await refused <= 5  # the first ones, while the share is being learned
    assert unseen(b) == pytest.approx(0.3, abs=0.05)
    # Learned: from here on the service's bucket is never overdrawn.
    before: Any = server.stats()
    assert await closed_loop(t, server, b, 120.0) == 0
    after: Any = server.stats()
    used = (after["input_tokens"] - before["input_tokens"]) / 120.0
    assert used == pytest.approx(0.7 * 1000, rel=0.03)  # all the neighbour leaves


async def test_alone_nothing_is_learned_and_the_whole_limit_is_used() -> None:
    t = FakeTime()
    server = limiter(t, 0.0)
    b = buckets(t)
    assert await closed_loop(t, server, b, 180.0) == 0
    assert unseen(b) < 0.02
    stats: Any = server.stats()
    # The full bucket at the start, then the refill: 1,000 tokens a second.
    assert stats["input_tokens"] >= 0.98 * (60_000 + 180 * 1000)


async def test_the_learned_share_recovers_gradually_when_the_neighbour_stops() -> None:
    t = FakeTime()
    server = limiter(t, 0.3)
    b = buckets(t)
    await closed_loop(t, server, b, 60.0)
    learned_share = unseen(b)
    # The neighbour stops: the service's bucket refills at the whole rate again.
    server._classes["sonnet"]["input-tokens"].rate = 1000.0
    await closed_loop(t, server, b, 2.0)
    assert 0.5 * learned_share < unseen(b) < learned_share  # not at once
    await closed_loop(t, server, b, 60.0)
    assert unseen(b) < 0.03


async def test_a_burst_counted_late_by_the_service_is_not_read_as_a_neighbour() -> None:
    """100 attempts leave at once; the service counts each only just before answering it,
    one every 10 ms. The first report misses 99 attempts our model charged; each later
    one shows one of them: the errors cancel, so nothing is learned, though fewer attempts
    are in flight at each later report."""
    t = FakeTime()
    limits = RateLimits(output_tokens_per_minute=150_000)
    server = ServerRateLimiter(limits, clock=t.clock, wall=lambda: 1_700_000_000.0 + t.now)
    b = buckets(t)
    first = await b.admit(SONNET, 400, 1024)
    b.sending(first)
    counted = server.admit(SONNET, input_tokens=100, max_tokens=1024)
    assert not isinstance(counted, Rejection)
    server.settle(counted, input_tokens=100, output_tokens=50)
    b.settle(first, Usage(input_tokens=100, output_tokens=50), server.headers(SONNET))
    answer = Usage(input_tokens=100, output_tokens=50)
    for _ in range(3):
        tickets = [await b.admit(SONNET, 400, 1024) for _ in range(100)]
        for ticket in tickets:
            b.sending(ticket)
        head = server.admit(SONNET, input_tokens=100, max_tokens=1024)
        assert not isinstance(head, Rejection)
        t.now += 0.01
        server.settle(head, input_tokens=100, output_tokens=50)
        b.settle(tickets[0], answer, server.headers(SONNET))
        for ticket in tickets[1:]:  # each reaches the service just before its answer
            decision = server.admit(SONNET, input_tokens=100, max_tokens=1024)
            assert not isinstance(decision, Rejection)
            t.now += 0.01
            server.settle(decision, input_tokens=100, output_tokens=50)
            b.settle(ticket, answer, server.headers(SONNET))
    assert unseen(b, "output-tokens") < 0.02


async def test_a_burst_long_past_does_not_slow_learning_a_neighbour() -> None:
    """200 attempts once in flight at the same time; a minute later a neighbour takes 30%
    of the refill: it is learned as fast as without the burst (a peak that never decayed
    made it ten times slower, with ten times the 429s)."""
    t = FakeTime()
    server = limiter(t, 0.0)
    b = buckets(t)
    await closed_loop(t, server, b, 1.0)
    tickets = [await b.admit(SONNET, 40, 10) for _ in range(200)]
    for ticket in tickets:
        b.sending(ticket)
    for ticket in tickets:
        decision = server.admit(SONNET, input_tokens=10, max_tokens=10)
        assert not isinstance(decision, Rejection)
        t.now += 0.001
        server.settle(decision, input_tokens=10, output_tokens=5)
        b.settle(ticket, Usage(input_tokens=10, output_tokens=5), server.headers(SONNET))
    t.now += 60.0
    server._classes["sonnet"]["input-tokens"].rate = 1000.0 * 0.7  # the neighbour arrives
    refused = await closed_loop(t, server, b, 60.0)
    assert refused <= 6
    assert unseen(b) == pytest.approx(0.3, abs=0.05)


def test_the_rate_limit_line_is_compact() -> None:
    state = {
        "concurrency_limit": 5,
        "max_concurrent": 10,
        "classes": {
            "sonnet": {
                "state": "known",
                "buckets": {
                    "requests": {"limit": 50, "level": 48.4, "unseen_share": 0.0},
                    "input-tokens": {"limit": 40_000, "level": 31_200, "unseen_share": 0.3},
                    "output-tokens": {"limit": 8_000, "level": -120, "unseen_share": 0.01},
                },
            },
            "haiku": {"state": "unknown", "buckets": {}},
        },
    }
    assert rate_limit_line(state) == (
        "limits sonnet: req 48/50 · in 31k/40k (others 30%) · out 0/8k; haiku: learning"
        " · concurrency 5/10"
    )
    assert rate_limit_line({"classes": {}, "concurrency_limit": 10, "max_concurrent": 10}) == ""
    # A service that states only the combined token family has a `tokens` bucket.
    combined = {"requests": {"limit": 50, "level": 50}, "tokens": {"limit": 2e6, "level": 1.5e6}}
    state["classes"] = {"opus": {"state": "known", "buckets": combined}}
    assert rate_limit_line(state) == "limits opus: req 50/50 · tok 1.5M/2M · concurrency 5/10"


async def test_classes_are_separate() -> None:
    t = FakeTime()
    b = await learned(t, requests=(60, 0))
    await b.admit("claude-haiku-4-5", 400, 10)
    assert t.sleeps == []


@pytest.mark.parametrize(
    ("model", "expected"),
    [("claude-opus-4-1", "opus"), ("claude-3-5-sonnet", "sonnet"), ("gpt-x", "gpt-x")],
)
def test_model_class(model: str, expected: str) -> None:
    assert model_class(model) == expected


@pytest.mark.parametrize("kwargs", [{"requests_per_minute": 0}, {"input_tokens_per_minute": 2.5}])
def test_bad_limits_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError, match="Limits"):
        Limits(**kwargs)


def test_bad_unknown_in_flight_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown_in_flight"):
        TokenBuckets(unknown_in_flight=0)


# -- against the simulator, through the real SDK ---------------------------------------------

_ATTEMPT_HEADERS: contextvars.ContextVar[list[Mapping[str, str]]] = contextvars.ContextVar(
    "attempt_headers"
)


async def _keep_headers(response: Any) -> None:
    # The hook runs in the task that made the call, so the context tells whose answer it is.
    box = _ATTEMPT_HEADERS.get(None)
    if box is not None:
        box.append(response.headers)


async def send_through(
    client: anthropic.AsyncAnthropic, b: TokenBuckets, t: WireTime, text: str, max_tokens: int
) -> tuple[Message, int]:
    """What the transport does per request: every attempt, retries too, passes the buckets.
    Each attempt is on the wire for ``t`` until the buckets have taken in its answer."""
    attempts = 0
    while True:
        attempts += 1
        ticket = await b.admit(SONNET, len(text), max_tokens)
        box: list[Mapping[str, str]] = []
        token = _ATTEMPT_HEADERS.set(box)
        with t.on_the_wire():
            b.sending(ticket)
            try:
                message = await client.messages.create(
                    model=SONNET,
                    max_tokens=max_tokens,
                    messages=[{"role": "user", "content": text}],
                )
            except anthropic.RateLimitError as exc:
                b.on_rate_limited(ticket, exc.response.headers)
                continue
            finally:
                _ATTEMPT_HEADERS.reset(token)
            b.settle(ticket, Usage.from_api(message.usage), box[-1] if box else None)
        return message, attempts


async def test_the_buckets_keep_a_limited_simulator_from_refusing() -> None:
    t = WireTime()
    limits = RateLimits(input_tokens_per_minute=20_000, output_tokens_per_minute=8_000)
    # Chinese text: a token a character, four times the characters/4 first guess, so the
    # buckets must learn the ratio from usage to stay under the limit.
    texts = ["审查这个模块的线程安全问题" * (40 + 17 * i) for i in range(40)]
    async with Simulator(rate_limits=limits, clock=t.clock) as sim:
        b = buckets(t, rand=0.5)
        async with anthropic.AsyncAnthropic(
            base_url=sim.base_url,
            api_key="test-key",
            max_retries=0,
            http_client=anthropic.DefaultAioHttpClient(event_hooks={"response": [_keep_headers]}),
        ) as client:
            results = await asyncio.gather(*(send_through(client, b, t, x, 300) for x in texts))
        stats = sim.rate_limit_stats
    assert all(m.content for m, _ in results)
    assert stats["admitted"] == len(texts)
    # Without the buckets most of the 40 would bounce at least once (the limit holds 3 to 10
    # of them); with them, at most one (measured), when an answer's `remaining` overtakes a
    # request still on its way. On FakeTime, where time moved while answers were on their
    # way, 1 to 18 were measured, and more than 20 elsewhere.
    rejected: Any = stats["rejected"]
    assert rejected <= len(texts) // 2
    snap: Any = b.snapshot()
    assert snap["sonnet"]["input_ratio"] == pytest.approx(4.0, rel=0.05)
    needed = sum(len(x) for x in texts) / 20_000 * 60  # minutes of allowance, in seconds
    assert needed * 0.8 < t.now - 100.0 < needed * 2


# -- services that state their limits differently -----------------------------------------


@pytest.mark.parametrize(
    "odd",
    [
        {"anthropic-ratelimit-input-tokens-limit": "inf"},
        {"anthropic-ratelimit-input-tokens-limit": "nan", "retry-after": "soon"},
        {"anthropic-ratelimit-input-tokens-limit": "1e400"},
        {"anthropic-ratelimit-input-tokens-limit": "", "anthropic-ratelimit-requests-limit": "0"},
        {"anthropic-ratelimit-input-tokens-remaining": "-40"},
        {"anthropic-ratelimit-input-tokens-remaining": "lots"},
        {"anthropic-ratelimit-input-tokens-reset": "not a time"},
        {"anthropic-ratelimit-input-tokens-reset": "2030-01-01T00:00:00.123456+02:00"},
        {"anthropic-ratelimit-unknown-limit": "5"},
    ],
)
async def test_odd_rate_limit_headers_never_fail_and_never_invent_a_limit(
    odd: dict[str, str],
) -> None:
    t = FakeTime()
    b = await learned(t, requests=(60, 59), input_tokens=(6_000, 5_900))
    for refused in (False, True):
        ticket = await b.admit(SONNET, 400, 10)
        if refused:
            b.on_rate_limited(ticket, odd)
        else:
            b.settle(ticket, Usage(input_tokens=100, output_tokens=10), odd)
    snap: Any = b.snapshot()
    bucket = snap["sonnet"]["buckets"]["input-tokens"]
    assert set(snap["sonnet"]["buckets"]) == {"requests", "input-tokens"}
    assert bucket["limit"] == 6_000  # nothing odd replaced what was learned
    assert bucket["level"] <= 6_000
    ticket = await asyncio.wait_for(b.admit(SONNET, 400, 10), 1)  # and requests still go
    assert ticket.charged == frozenset({"requests", "input-tokens"})


async def test_only_the_combined_tokens_family_makes_one_bucket_of_input_and_output() -> None:
    t = FakeTime()
    b = await learned(t, requests=(60, 59), tokens=(1_000, 1_000))
    snap: Any = b.snapshot()
    assert set(snap["sonnet"]["buckets"]) == {"requests", "tokens"}
    ticket = await b.admit(SONNET, 1_600, 200)  # about 400 in, 200 reserved out
    assert 350 < 1_000 - level(b, "tokens") < 700
    b.settle(ticket, Usage(input_tokens=400, output_tokens=50), None)
    assert 1_000 - level(b, "tokens") == pytest.approx(450, abs=1)  # corrected to what was used
    # 500 in and 200 out need 700 of the 550 left: 150 more, 9 s of a 1,000-a-minute refill.
    waiting = asyncio.ensure_future(b.admit(SONNET, 2_000, 200))
    await asyncio.wait_for(waiting, 1)
    assert 8.9 <= sum(t.sleeps) <= 9.1


async def test_the_tokens_family_beside_input_and_output_is_not_a_bucket() -> None:
    t = FakeTime()
    b = await learned(t, input_tokens=(6_000, 5_900), output_tokens=(800, 790), tokens=(9, 0))
    snap: Any = b.snapshot()
    assert set(snap["sonnet"]["buckets"]) == {"input-tokens", "output-tokens"}
    await asyncio.wait_for(b.admit(SONNET, 400, 10), 1)
    assert t.sleeps == []


async def test_a_remaining_without_its_limit_lowers_a_known_bucket_only() -> None:
    t = FakeTime()
    b = await learned(t, input_tokens=(6_000, 6_000))
    ticket = await b.admit(SONNET, 400, 10)
    only = {"anthropic-ratelimit-input-tokens-remaining": "1000"}
    b.settle(ticket, Usage(input_tokens=100, output_tokens=10), only)
    assert level(b, "input-tokens") == pytest.approx(1_000, abs=1)
    fresh = buckets(t)
    ticket = await fresh.admit(SONNET, 400, 10)
    fresh.settle(ticket, Usage(input_tokens=100, output_tokens=10), only)
    snap: Any = fresh.snapshot()
    assert snap["sonnet"]["buckets"] == {}  # a level alone states no limit


async def test_a_limit_that_changes_mid_run_is_followed() -> None:
    t = FakeTime()
    b = await learned(t, input_tokens=(6_000, 5_900))
    ticket = await b.admit(SONNET, 400, 10)
    b.settle(ticket, Usage(input_tokens=100, output_tokens=10), headers(input_tokens=(600, 500)))
    snap: Any = b.snapshot()
    assert snap["sonnet"]["buckets"]["input-tokens"]["limit"] == 600
    assert level(b, "input-tokens") <= 600
    t.now += 60.0  # refilled to the new limit, not the old one
    assert level(b, "input-tokens") == pytest.approx(600)
    ticket = await b.admit(SONNET, 400, 10)
    b.settle(
        ticket, Usage(input_tokens=100, output_tokens=10), headers(input_tokens=(60_000, 59_000))
    )
    t.now += 60.0
    assert level(b, "input-tokens") == pytest.approx(60_000)


async def test_a_429_stating_no_bucket_empties_the_buckets_and_is_not_paced() -> None:
    t = FakeTime()
    b = await learned(t, requests=(60, 59), input_tokens=(6_000, 5_900))
    ticket = await b.admit(SONNET, 400, 10)
    assert b.on_rate_limited(ticket, {"retry-after": "1"}) is False  # retry-after applies
    assert level(b, "input-tokens") <= 0.0 and level(b, "requests") <= 0.0
    await asyncio.wait_for(b.admit(SONNET, 400, 10), 1)
    assert t.sleeps and sum(t.sleeps) >= 1.0  # the next attempt waited for the refill


async def test_an_attempt_leaving_during_the_recovery_refills_the_buckets_at_that_moment() -> None:
    """After a 429 the refill speeds up over ``recovery_seconds``, so a level depends on when
    the refills fall: an attempt leaving refills at that moment (the level below is what
    refilling at the admission, the sending and the answer gives; once at the answer gives
    6.2555)."""
    t = FakeTime()
    b = TokenBuckets(clock=t.clock, sleep=t.sleep, rand=lambda: 0.5, recovery_seconds=10.0)

    def stating(requests_left: int) -> dict[str, str]:
        limits = (4_000_000, 4_000_000), (800_000, 800_000)
        return headers(
            requests=(600, requests_left), input_tokens=limits[0], output_tokens=limits[1]
        )

    ticket = await b.admit(SONNET, 400, 50)
    b.sending(ticket)
    t.now += 1.0
    b.settle(ticket, Usage(input_tokens=100, output_tokens=20), stating(599))
    ticket = await b.admit(SONNET, 400, 50)
    b.sending(ticket)
    t.now += 0.5
    b.on_rate_limited(ticket, stating(0))
    ticket = await b.admit(SONNET, 400, 50)
    t.now += 2.0  # waiting for a slot, within the recovery
    b.sending(ticket)
    t.now += 5.0
    b.settle(ticket, Usage(input_tokens=100, output_tokens=20), stating(600))
    assert level(b, "requests") == pytest.approx(6.6655, abs=1e-3)
