"""Token buckets shared through the real Redis: the Lua script, and the buckets around it.

The script's arithmetic runs on the server's clock; tests move that clock by rewriting the
time a bucket was last updated (never by sleeping). The Python side runs on FakeTime.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from claude_force import _shared_limits as shared_mod
from claude_force._admission import AdmissionDeadlineError, Limits
from claude_force._metrics import Metrics
from claude_force._shared_limits import (
    BOOK_AHEAD,
    KEY_TTL_MS,
    PREDICTED_REFILL,
    UNKNOWN_MAX_WAIT_S,
    RedisBuckets,
    SharedRedis,
    SharedTicket,
    SharedTokenBuckets,
    learned,
    organisation,
)
from claude_force._usage import Usage
from claude_force.cache import _redis as redis_tier
from claude_force.cache._redis import Resting

from ._support import FakeTime, scratch_namespace
from .test_cache_redis import URL, server  # noqa: F401  (the fixtures)


@pytest.fixture
def space(server: redis.Redis) -> Iterator[str]:  # noqa: F811
    yield from scratch_namespace(server)


LIMITS = {"requests": 60.0, "input-tokens": 6000.0, "output-tokens": 600.0}


class Since:
    """Real time since a test began. The server's clock keeps refilling the buckets while a
    test runs, so levels are checked between what was set and that plus the refill since:
    bounds that hold however slow the machine is."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def seconds(self) -> float:
        return time.monotonic() - self.start

    def near(self, value: float, expected: float, per_minute: float) -> bool:
        return expected - 0.01 <= value <= expected + per_minute / 60 * self.seconds() + 0.01


def store(space: str, org: str = "org") -> RedisBuckets:
    return RedisBuckets(SharedRedis(URL, namespace=space), org)


def costs(requests: float = 1, inp: float = 0, out: float = 0) -> dict[str, float]:
    return {"requests": requests, "input-tokens": inp, "output-tokens": out}


async def learn(buckets: RedisBuckets, **left: float) -> None:
    remaining = {k.replace("_", "-"): v for k, v in left.items()}
    await buckets.update("sonnet", limits=LIMITS, left=remaining)


async def learn_and_take(space: str) -> Any:
    """A fresh store learns the limits, then takes one request of 100 in and 50 out."""
    buckets = store(space)
    await learn(buckets)
    return await buckets.take(
        "sonnet", costs(1, 100, 50), costs(1, 100, 50), caps={}, init={}, ahead=1.0
    )


def move_server_time(server: redis.Redis, key: str, kind: str, seconds: float) -> None:  # noqa: F811
    """Pretend the bucket was last updated ``seconds`` earlier on the server's clock."""
    updated = float(server.hget(key, f"{kind}.t") or 0)
    server.hset(key, f"{kind}.t", repr(updated - seconds))


def test_take_charges_every_bucket_in_one_step(space: str, server: redis.Redis) -> None:  # noqa: F811
    since = Since()

    verdict = asyncio.run(learn_and_take(space))
    assert verdict.verdict == "ok" and verdict.wait == 0.0
    assert verdict.charged == frozenset(LIMITS)
    level = {k: v["level"] for k, v in verdict.levels.items()}
    expected = {"requests": 59, "input-tokens": 5900, "output-tokens": 550}
    assert all(since.near(level[k], expected[k], LIMITS[k]) for k in LIMITS), level
    key = f"{space}:limits:org:sonnet"
    assert since.near(float(server.hget(key, "i.lvl") or 0), 5900, 6000)
    assert 0 < server.pttl(key) <= KEY_TTL_MS


def test_take_is_all_or_nothing_and_says_how_long_to_wait(
    space: str,
    server: redis.Redis,  # noqa: F811
) -> None:
    since = Since()

    async def main() -> Any:
        buckets = store(space)
        await learn(buckets, input_tokens=1000)
        return await buckets.take(
            "sonnet", costs(1, 2000), costs(1, 2000), caps={}, init={}, ahead=1.0
        )

    verdict = asyncio.run(main())
    # 1,000 tokens missing at 6,000 a minute (100 a second, predicted a little short).
    assert verdict.verdict == "wait"
    wait = 10.0 / PREDICTED_REFILL
    assert wait - since.seconds() - 0.01 <= verdict.wait <= wait + 0.01
    key = f"{space}:limits:org:sonnet"
    assert float(server.hget(key, "r.lvl") or 0) == 60  # not charged (and full)
    assert since.near(float(server.hget(key, "i.lvl") or 0), 1000, 6000)


def test_tokens_within_the_booking_horizon_are_booked_with_their_wait(space: str) -> None:
    since = Since()

    async def main() -> Any:
        buckets = store(space)
        await learn(buckets, input_tokens=0)
        return await buckets.take("sonnet", costs(1, 50), costs(1, 50), caps={}, init={}, ahead=1.0)

    verdict = asyncio.run(main())
    assert verdict.verdict == "ok"
    wait = 0.5 / PREDICTED_REFILL  # 50 tokens at 100 a second, predicted a little short
    assert wait - since.seconds() - 0.01 <= verdict.wait <= wait + 0.01
    assert since.near(verdict.levels["input-tokens"]["level"], -50, 6000)


def test_refill_follows_the_servers_clock(space: str, server: redis.Redis) -> None:  # noqa: F811
    key = f"{space}:limits:org:sonnet"
    since = Since()

    async def setup() -> None:
        await learn(store(space), input_tokens=0)

    async def take() -> Any:
        return await store(space).take(
            "sonnet", costs(0, 3000), costs(0, 3000), caps={}, init={}, ahead=0.0
        )

    asyncio.run(setup())
    # Half a minute (as predicted between reports): half the limit refilled.
    move_server_time(server, key, "i", 30.0 / PREDICTED_REFILL)
    verdict = asyncio.run(take())
    assert verdict.verdict == "ok"
    assert since.near(verdict.levels["input-tokens"]["level"], 0, 6000)
    move_server_time(server, key, "i", 600.0)  # never above the limit
    verdict = asyncio.run(take())
    assert verdict.levels["input-tokens"]["level"] == pytest.approx(3000)


def test_calibration_written_by_one_process_is_read_by_another(space: str) -> None:
    since = Since()

    async def first() -> None:
        await learn(store(space), input_tokens=4000)

    async def second() -> Any:
        # A fresh client knowing nothing: no caps, nothing to create buckets with.
        return await store(space).take(
            "sonnet", costs(1, 10), costs(1, 10), caps={}, init={}, ahead=1.0
        )

    asyncio.run(first())
    verdict = asyncio.run(second())
    assert verdict.verdict == "ok"
    assert verdict.levels["input-tokens"]["limit"] == 6000
    assert since.near(verdict.levels["input-tokens"]["level"], 3990, 6000)


def test_nothing_known_one_probe_at_a_time_and_a_cap_creates_the_bucket(space: str) -> None:
    async def main() -> list[Any]:
        buckets = store(space)
        probe = await buckets.take("haiku", costs(), costs(), caps={}, init={}, ahead=1.0)
        unknown = await buckets.take("haiku", costs(), costs(), caps={}, init={}, ahead=1.0)
        await buckets.update("haiku", probed=True)  # the probe's answer stated no limit
        again = await buckets.take("haiku", costs(), costs(), caps={}, init={}, ahead=1.0)
        capped = await buckets.take(
            "haiku", costs(), costs(), caps={"requests": 5}, init={"requests": 5}, ahead=1.0
        )
        return [probe, unknown, again, capped]

    probe, unknown, again, capped = asyncio.run(main())
    assert [probe.verdict, unknown.verdict, again.verdict] == ["probe", "unknown", "probe"]
    assert not probe.charged and not unknown.charged
    assert capped.verdict == "ok" and capped.charged == {"requests"}
    assert capped.levels["requests"] == pytest.approx(
        {"limit": 5, "level": 4, "refill_factor": 1.0, "unseen_share": 0.0}, abs=0.01
    )


def test_a_report_sets_the_level_up_or_down_and_429s_slow_the_refill(space: str) -> None:
    since = Since()

    async def main() -> list[dict[str, dict[str, float]]]:
        buckets = store(space)
        await learn(buckets, input_tokens=3000)
        lowered = await buckets.update("sonnet", left={"input-tokens": 1000})
        # Nothing is on its way: what the service reports is what there is, even if more.
        raised = await buckets.update("sonnet", left={"input-tokens": 5000})
        slowed = await buckets.update("sonnet", slow=frozenset({"input-tokens"}))
        again = await buckets.update("sonnet", slow=frozenset({"input-tokens"}))
        return [lowered, raised, slowed, again]

    lowered, raised, slowed, again = asyncio.run(main())
    assert lowered["input-tokens"]["level"] == pytest.approx(1000)
    assert since.near(raised["input-tokens"]["level"], 5000, 6000)
    assert slowed["input-tokens"]["refill_factor"] == pytest.approx(0.75)
    # A second 429 within the cooldown does not slow it again (it recovers over 30 s).
    assert 0.75 <= again["input-tokens"]["refill_factor"] <= 0.75 + since.seconds() / 30


def test_a_report_counts_only_the_charges_that_left_before_its_attempt(space: str) -> None:
    since = Since()

    async def main() -> list[dict[str, dict[str, float]]]:
        buckets = store(space)
        await learn(buckets, input_tokens=3000)
        take = [
            await buckets.take("sonnet", costs(0, n), costs(0, n), caps={}, init={}, ahead=0.0)
            for n in (100, 200, 400)
        ]
        assert [t.verdict for t in take] == ["ok"] * 3 and len({t.entry for t in take}) == 3
        await buckets.sent("sonnet", take[0].entry, 5.0)  # left before the reporting attempt
        # The attempt of 200 left 1 s ago and its answer reports 2700 left: the service had
        # counted it and the 100, not the 400 (not sent yet).
        before = await buckets.update(
            "sonnet", left={"input-tokens": 2700}, entry=take[1].entry, sent_ago=1.0
        )
        await buckets.sent("sonnet", take[2].entry, 0.0)
        refused = await buckets.update(  # the 400 is refused: it was never counted
            "sonnet", deltas={"input-tokens": 400}, entry=take[2].entry, counted=False
        )
        return [before, refused]

    before, refused = asyncio.run(main())
    assert since.near(before["input-tokens"]["level"], 2700 - 400, 6000)
    assert since.near(refused["input-tokens"]["level"], 2700, 6000)


def test_bookings_not_yet_due_are_allowed_for_in_what_the_service_reports(space: str) -> None:
    since = Since()

    async def main() -> dict[str, dict[str, float]]:
        buckets = store(space)
        await learn(buckets, input_tokens=0)
        booked = await buckets.take("sonnet", costs(0, 50), costs(0, 50), caps={}, init={}, ahead=1)
        assert booked.verdict == "ok" and booked.wait > 0.4
        # The service has not seen the booked request: it still reports 0 left. That is no
        # reason to lower the level (0 - 50 booked is where it already stands).
        return await buckets.update("sonnet", left={"input-tokens": 0})

    levels = asyncio.run(main())
    assert since.near(levels["input-tokens"]["level"], -50, 6000)
    # Nor to learn that others took it (the model's refill while the test ran aside).
    assert levels["input-tokens"]["unseen_share"] <= 0.2 * since.seconds() + 0.001


def test_the_share_of_the_refill_left_by_an_unseen_workload_is_learned(space: str) -> None:
    since = Since()

    async def main() -> list[dict[str, dict[str, float]]]:
        one = store(space)  # one connection; the script's state is all in Redis
        processes = [RedisBuckets(one.shared, "org") for _ in range(3)]
        await learn(one, input_tokens=3000)
        # Three processes send 50 tokens each; one is refused (a 429 gives back what the
        # service never counted). The service then reports exactly what was sent.
        entries = []
        for process in processes:
            taken = await process.take(
                "sonnet", costs(0, 50), costs(0, 50), caps={}, init={}, ahead=0.0
            )
            assert taken.verdict == "ok" and taken.wait == 0.0
            await process.sent("sonnet", taken.entry, 0.0)
            entries.append(taken.entry)
        await processes[2].update(
            "sonnet", deltas={"input-tokens": 50}, entry=entries[2], counted=False
        )
        explained = await processes[0].update(
            "sonnet", left={"input-tokens": 2900}, entry=entries[0], sent_ago=0.0
        )
        # Then 300 tokens go missing that no process sent: someone else took them.
        unseen = await processes[1].update("sonnet", left={"input-tokens": 2600})
        return [explained, unseen]

    explained, unseen = asyncio.run(main())
    # The model refills at 100 tokens a second meanwhile, read as others' use over the 5 s
    # horizon (500 tokens): at most 0.2 of a share per second the test took.
    slack = 0.2 * since.seconds() + 0.001
    assert 0.0 <= explained["input-tokens"]["unseen_share"] <= slack
    share = unseen["input-tokens"]["unseen_share"]
    assert 0.6 - 0.001 <= share <= 0.6 + 2 * slack  # 300 of the 500 tokens of the horizon
    assert unseen["input-tokens"]["refill_factor"] == pytest.approx(1.0 - share)
    assert unseen["input-tokens"]["level"] == pytest.approx(2600)


def test_the_learned_share_slows_admission_for_every_process(
    space: str,
    server: redis.Redis,  # noqa: F811
) -> None:
    key = f"{space}:limits:org:sonnet"
    since = Since()

    async def setup() -> dict[str, dict[str, float]]:
        buckets = store(space)
        await learn(buckets, input_tokens=1000)
        return await buckets.update("sonnet", left={"input-tokens": 750})

    async def take() -> Any:
        return await store(space).take(
            "sonnet", costs(0, 0), costs(0, 0), caps={}, init={}, ahead=0.0
        )

    share = asyncio.run(setup())["input-tokens"]["unseen_share"]
    assert share >= 0.5 - 0.001  # 250 of the 500 tokens of the horizon went elsewhere
    move_server_time(server, key, "i", 10.0)
    level = asyncio.run(take()).levels["input-tokens"]["level"]
    # Ten seconds of 100 tokens a second, of which others take their share.
    expected = 750 + 1000 * (1.0 - share) * PREDICTED_REFILL
    assert expected - 0.01 <= level <= expected + 100 * since.seconds() + 0.01


def test_a_retry_books_ahead_of_every_processs_first_attempts(space: str) -> None:
    time = FakeTime()

    async def main() -> tuple[Any, float, Any]:
        buckets = shared_buckets(space, time)
        process = RedisBuckets(buckets.shared, "org")  # another process's view of the buckets
        await buckets.store.update("sonnet", limits=LIMITS, left={"input-tokens": 0})
        # 1,000 tokens missing at 100 a second: ten seconds, far past BOOK_AHEAD.
        first = await process.take(
            "sonnet", costs(1, 1000), costs(1, 1000), caps={}, init={}, ahead=BOOK_AHEAD
        )
        start = time.now
        retry = await buckets.admit("claude-sonnet-4-5", 4000, 1, retry=True)
        slept = time.now - start
        # Another process's first attempt now finds the level the retry took.
        other = await process.take(
            "sonnet", costs(1, 10), costs(1, 10), caps={}, init={}, ahead=BOOK_AHEAD
        )
        return first, slept, (retry, other)

    first, slept, (retry, other) = asyncio.run(main())
    assert first.verdict == "wait"  # a first attempt does not book that far ahead
    assert isinstance(retry, SharedTicket) and "input-tokens" in retry.shared
    # The retry slept its booking (the server's clock ran meanwhile).
    assert 9.0 <= slept <= 10.01 / PREDICTED_REFILL
    assert other.verdict == "wait" and other.wait >= 9.0


def test_organisations_never_share_buckets() -> None:
    assert organisation("key-a", None) != organisation("key-b", None)
    assert organisation("key-a", "http://x") != organisation("key-a", "http://y")
    assert "key-a" not in organisation("key-a", None)


def test_learned_scales_remaining_to_a_configured_cap() -> None:
    headers = {
        "anthropic-ratelimit-input-tokens-limit": "10000",
        "anthropic-ratelimit-input-tokens-remaining": "5000",
        "anthropic-ratelimit-requests-limit": "50",
    }
    limits, left = learned(headers, {"input-tokens": 4000})
    assert limits == {"input-tokens": 4000, "requests": 50}
    assert left == {"input-tokens": 2000}


# -- SharedTokenBuckets on an injected clock -------------------------------------------------


def shared_buckets(space: str, time: FakeTime, **kwargs: Any) -> SharedTokenBuckets:
    return SharedTokenBuckets(
        SharedRedis(URL, namespace=space),
        "org",
        clock=time.clock,
        sleep=time.sleep,
        rand=lambda: 0.0,
        **kwargs,
    )


HEADERS = {
    "anthropic-ratelimit-requests-limit": "60",
    "anthropic-ratelimit-requests-remaining": "60",
    "anthropic-ratelimit-input-tokens-limit": "6000",
    "anthropic-ratelimit-input-tokens-remaining": "0",
    "anthropic-ratelimit-output-tokens-limit": "600",
    "anthropic-ratelimit-output-tokens-remaining": "600",
}


def test_one_request_at_a_time_learns_the_limits_for_every_process(
    space: str,
    server: redis.Redis,  # noqa: F811
) -> None:
    time = FakeTime()
    key = f"{space}:limits:org:sonnet"

    async def main() -> tuple[Any, Any, bool, bool]:
        buckets = shared_buckets(space, time)
        other = shared_buckets(space, time)  # another process
        probe = await buckets.admit("claude-sonnet-4-5", 400, 10)
        second = asyncio.ensure_future(other.admit("claude-sonnet-4-5", 400, 10))
        for _ in range(20):
            await asyncio.sleep(0)
        held = not second.done()
        buckets.settle(probe, Usage(input_tokens=100, output_tokens=10), HEADERS)
        await buckets.drain()
        probing = server.hexists(key, "probe")
        return probe, await second, held, bool(probing)

    probe, second, held, probing = asyncio.run(main())
    assert isinstance(probe, SharedTicket) and probe.probe and not probe.shared
    assert held  # the other process waited while the limits were unknown
    assert not probing  # the probe's answer ended it
    # The probe's headers, written to Redis, let the other process be charged there.
    assert second.shared == {"requests", "input-tokens", "output-tokens"}
    assert float(server.hget(key, "i.cap") or 0) == 6000


def test_a_probe_that_never_answers_holds_other_processes_only_briefly(
    space: str,
    server: redis.Redis,  # noqa: F811
) -> None:
    # The probing process may hang or die: the others wait a bounded time (and never past
    # their own deadline), then admit with their own cautious buckets.
    time = FakeTime()

    async def main() -> tuple[Any, float, Any, float]:
        buckets = shared_buckets(space, time)
        other = shared_buckets(space, time)  # another process
        probe = await buckets.admit("claude-sonnet-4-5", 400, 10)  # never settled: hangs
        assert isinstance(probe, SharedTicket) and probe.probe
        began = time.now
        waited = await other.admit("claude-sonnet-4-5", 400, 10)
        bounded = time.now - began
        began = time.now
        hurried = await other.admit("claude-sonnet-4-5", 400, 10, deadline=time.now + 1.0)
        return waited, bounded, hurried, time.now - began

    waited, bounded, hurried, quick = asyncio.run(main())
    assert not isinstance(waited, SharedTicket)  # admitted by the local buckets
    assert not isinstance(hurried, SharedTicket)
    assert bounded <= UNKNOWN_MAX_WAIT_S + 0.5
    assert quick <= 1.0  # within its deadline


def test_admit_sleeps_a_booked_wait_and_fails_fast_past_a_deadline(space: str) -> None:
    time = FakeTime()
    since = Since()

    async def main() -> None:
        buckets = shared_buckets(space, time, limits=Limits(input_tokens_per_minute=6000))
        await buckets.store.update("sonnet", limits=LIMITS, left={"input-tokens": 0})
        # 180 characters are 45 tokens: under half a second at 100 tokens a second.
        ticket = await buckets.admit("claude-sonnet-4-5", 180, 1)
        assert isinstance(ticket, SharedTicket) and "input-tokens" in ticket.shared
        assert len(time.sleeps) == 1
        wait = 0.45 / PREDICTED_REFILL
        assert wait - since.seconds() - 0.01 <= time.sleeps[0] <= wait + 0.01
        with pytest.raises(AdmissionDeadlineError, match="shared sonnet limit"):
            await buckets.admit("claude-sonnet-4-5", 40_000, 1, deadline=time.now + 5)

    asyncio.run(main())


def test_answers_correct_the_shared_charge(space: str) -> None:
    time = FakeTime()
    since = Since()

    async def main() -> dict[str, dict[str, float]]:
        buckets = shared_buckets(space, time)
        await buckets.store.update("sonnet", limits=LIMITS)
        ticket = await buckets.admit("claude-sonnet-4-5", 4000, 500)  # 1,000 in, 500 out
        answered = dict(HEADERS)
        del answered["anthropic-ratelimit-input-tokens-remaining"]  # only the correction
        buckets.settle(ticket, Usage(input_tokens=1200, output_tokens=100), answered)
        await buckets.drain()
        refused = await buckets.admit("claude-sonnet-4-5", 400, 10)
        assert isinstance(refused, SharedTicket) and refused.shared
        bounced = {**answered, "anthropic-ratelimit-output-tokens-remaining": "0"}
        buckets.on_rate_limited(refused, bounced)
        await buckets.drain()
        return await buckets.store.update("sonnet")

    levels = asyncio.run(main())
    assert since.near(levels["input-tokens"]["level"], 6000 - 1200, 6000)
    # Output: 500 reserved, 100 used; the refused request's 10 were given back, then the
    # server's remaining (0) taken and the refill slowed.
    assert since.near(levels["output-tokens"]["level"], 0, 600 * 0.75)
    # The reported 0 is 400 below what this client sent: read as others' share of the refill.
    others = levels["output-tokens"]["unseen_share"]
    assert others > 0.1
    factor = levels["output-tokens"]["refill_factor"] / (1.0 - others)
    assert 0.75 - 1e-6 <= factor <= 0.75 + since.seconds() / 30
    assert since.near(levels["requests"]["level"], 60, 60)  # as the service reported


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="Python 3.10 cannot tell a cancel that redis-py's wait_for dropped: the cancelled "
    "big request then runs on for the server's 63 s",
)
def test_a_retry_after_a_429_asks_before_the_requests_queued_since(space: str) -> None:
    time = FakeTime()

    async def main() -> tuple[bool, bool, list[Any]]:
        buckets = shared_buckets(space, time)
        await buckets.store.update("sonnet", limits=LIMITS, left={"input-tokens": 0})
        # 10,000 tokens, more than the bucket holds: it waits for a full bucket (63 s of the
        # server's clock), asking again after each pause, which takes no time on FakeTime.
        big = asyncio.ensure_future(buckets.admit("claude-sonnet-4-5", 40_000, 1))
        queued = asyncio.ensure_future(buckets.admit("claude-sonnet-4-5", 40, 1))

        async def bounced() -> Any:
            ticket = SharedTicket("sonnet", costs(1, 10, 1), 10, frozenset())
            buckets._class("sonnet").in_flight += 1
            buckets.on_rate_limited(ticket, None)
            return await buckets.admit("claude-sonnet-4-5", 40, 1, retry=True)

        retry = await asyncio.wait_for(bounced(), timeout=10)
        waiting = not queued.done()
        for task in (big, queued):
            task.cancel()
        ends = list(await asyncio.gather(big, queued, return_exceptions=True))
        return isinstance(retry, SharedTicket) and bool(retry.shared), waiting, ends

    admitted, waiting, ends = asyncio.run(main())
    assert admitted  # the retry was admitted...
    assert waiting  # ...while the request queued before it still waits behind the big one
    # Cancelled, not admitted once the big one's 63 s had passed (see the test below).
    assert all(isinstance(end, asyncio.CancelledError) for end in ends), ends


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10 does not count cancellations")
def test_an_admit_cancelled_as_redis_answers_ends_cancelled_and_gives_its_booking_back(
    space: str,
    server: redis.Redis,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    time = FakeTime()

    async def main() -> tuple[BaseException | Any, int]:
        buckets = shared_buckets(space, time)
        await buckets.store.update("sonnet", limits=LIMITS, left={"input-tokens": 0})
        take = buckets.store.take

        async def answered_as_the_caller_gives_up(*args: Any, **kwargs: Any) -> Any:
            async def write() -> Any:
                verdict = await take(*args, **kwargs)
                admitting.cancel()
                return verdict

            # As redis-py writes every command: under wait_for, which before Python 3.12
            # returns what finished as its caller was cancelled, and drops the cancellation.
            return await asyncio.wait_for(write(), 1.0)

        monkeypatch.setattr(buckets.store, "take", answered_as_the_caller_gives_up)
        # 10 tokens missing: Redis books them 0.1 s ahead, and the caller would sleep that.
        admitting = asyncio.ensure_future(buckets.admit("claude-sonnet-4-5", 40, 1))
        (outcome,) = await asyncio.gather(admitting, return_exceptions=True)
        await buckets.drain()
        return outcome, buckets._class("sonnet").in_flight

    outcome, in_flight = asyncio.run(main())
    # The cancellation lost, the request was admitted: sent although its caller was gone.
    assert isinstance(outcome, asyncio.CancelledError), outcome
    assert in_flight == 0
    assert server.zcard(f"{space}:limits:org:sonnet:ledger") == 0  # the booking given back


def test_an_answer_to_a_command_sent_before_a_failure_does_not_end_the_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Under load a command sent just before the server died can answer after another one
    # failed; that answer must not end the outage, or the next failure warns a second time.
    time = FakeTime()
    shared = SharedRedis("redis://127.0.0.1:1/0", clock=time.clock)
    with caplog.at_level(logging.INFO, logger="claude_force"):
        early = shared.fallbacks
        shared.failed("limits", ConnectionError("gone"))
        shared.succeeded(early)  # the earlier command's late answer
        assert not shared.usable()
        time.now += 6.0  # past the rest: Redis is tried again, and fails again
        shared.failed("limits", ConnectionError("gone"))
        late = shared.fallbacks
        shared.succeeded(late)  # a command sent after the failures answers: it is back
    assert shared.usable()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert any("answers again" in r.getMessage() for r in caplog.records)


def test_unreachable_redis_means_local_buckets_one_warning_and_a_metric(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = FakeTime()
    metrics = Metrics()
    dead = SharedRedis(
        "redis://127.0.0.1:1/0", clock=time.clock, on_fallback=metrics.redis_fallback
    )
    buckets = SharedTokenBuckets(
        dead, "org", limits=Limits(requests_per_minute=2), clock=time.clock, sleep=time.sleep
    )

    async def main() -> None:
        for _ in range(3):  # the third waits for the local bucket to refill
            ticket = await buckets.admit("claude-sonnet-4-5", 40, 1)
            assert not isinstance(ticket, SharedTicket) or not ticket.shared
            buckets.settle(ticket, Usage(input_tokens=10, output_tokens=1), None)
        await buckets.drain()

    with caplog.at_level(logging.WARNING, logger="claude_force"):
        asyncio.run(main())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "redis at redis://127.0.0.1:1/0" in warnings[0].getMessage()
    assert dead.fallbacks == 1
    assert time.sleeps and sum(time.sleeps) >= 29  # the local limit of 2 a minute held
    assert b'claude_force_redis_fallbacks_total{part="limits"} 1.0' in metrics.render()


def test_commands_beyond_the_pool_wait_for_a_connection_not_an_outage(
    space: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Two connections for twenty commands that each hold one for 0.25 s: the last waits
    # about 2.5 s for a connection, longer than a pool that gives up waiting ever allowed.
    monkeypatch.setattr(redis_tier, "_MAX_CONNECTIONS", 2)
    shared = SharedRedis(URL, namespace=space)

    async def main() -> list[Any]:
        held = [
            shared.run(lambda client: client.blpop([f"{space}:never"], timeout=0.25))
            for _ in range(20)
        ]
        return await asyncio.gather(*held)

    with caplog.at_level(logging.WARNING, logger="claude_force"):
        answers = asyncio.run(main())
    assert answers == [None] * 20
    assert shared.fallbacks == 0 and shared.usable()
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_a_connection_timed_out_is_tried_once_more_a_read_timed_out_is_an_outage(
    space: str,
) -> None:
    shared = SharedRedis(URL, namespace=space)
    calls: list[str] = []

    def failing_once(error: str) -> Any:
        async def command(client: Any) -> Any:
            calls.append(error)
            if calls.count(error) == 1:  # the fault: the first attempt times out
                raise redis.exceptions.TimeoutError(error)
            return await client.ping()

        return command

    async def main() -> tuple[Any, BaseException | None]:
        connected = await shared.run(failing_once("Timeout connecting to server"))
        try:
            await shared.run(failing_once("Timeout reading from 127.0.0.1:6379"))
        except redis.exceptions.TimeoutError as exc:
            return connected, exc
        return connected, None

    connected, read = asyncio.run(main())
    assert connected is True  # the command was never sent: sent again, and answered
    assert isinstance(read, redis.exceptions.TimeoutError)  # it may have run: not repeated
    assert calls.count("Timeout reading from 127.0.0.1:6379") == 1


def test_a_command_waiting_when_redis_goes_down_is_not_sent(space: str) -> None:
    time = FakeTime()
    shared = SharedRedis(URL, namespace=space, clock=time.clock)

    async def main() -> BaseException | None:
        shared.failed("limits", ConnectionError("gone"))
        try:
            await shared.run(lambda client: client.ping())
        except Resting as exc:
            return exc
        return None

    assert isinstance(asyncio.run(main()), Resting)
    assert shared.fallbacks == 1  # Resting itself is no new failure
    shared.failed("limits", Resting())
    assert shared.fallbacks == 1


def test_the_ledger_dates_a_charge_when_its_attempt_leaves(
    space: str,
    server: redis.Redis,  # noqa: F811
) -> None:
    time = FakeTime()
    ledger = f"{space}:limits:org:sonnet:ledger"

    async def main() -> tuple[float, float]:
        buckets = shared_buckets(space, time)
        await buckets.store.update("sonnet", limits=LIMITS)
        ticket = await buckets.admit("claude-sonnet-4-5", 400, 10)
        assert isinstance(ticket, SharedTicket) and ticket.entry
        unsent = float(server.zscore(ledger, ticket.entry) or 0)
        buckets.sending(ticket)
        await buckets.drain()
        return unsent, float(server.zscore(ledger, ticket.entry) or 0)

    unsent, sent = asyncio.run(main())
    now = float(server.time()[0]) + 1
    assert unsent > now + 20  # not left yet: every report counts it as unseen by the service
    assert sent <= now  # dated when it left


def test_a_process_admits_at_most_max_in_flight_attempts(
    space: str,
    server: redis.Redis,  # noqa: F811
) -> None:
    time = FakeTime()
    key = f"{space}:limits:org:sonnet"

    async def main() -> tuple[bool, Any, Any]:
        buckets = shared_buckets(space, time, max_in_flight=1)
        await buckets.store.update("sonnet", limits=LIMITS)
        first = await buckets.admit("claude-sonnet-4-5", 40, 1)
        second = asyncio.ensure_future(buckets.admit("claude-sonnet-4-5", 40, 1))
        for _ in range(5):  # round trips after the second began: its take would be in
            await buckets.shared.run(lambda client: client.ping())
        held = not second.done()
        taken = server.hget(key, "seq")  # the tokens are there; the slot is not
        # An answer stating the limits (one without would leave the class to the gate).
        buckets.settle(first, Usage(input_tokens=10, output_tokens=1), HEADERS)
        ticket = await asyncio.wait_for(second, 5)
        buckets.settle(ticket, Usage(input_tokens=10, output_tokens=1), HEADERS)
        await buckets.drain()
        return held, taken, server.hget(key, "seq")

    held, taken, after = asyncio.run(main())
    assert held and taken == b"1"
    assert after == b"2"  # admitted once the first was answered


@pytest.mark.parametrize("suffix", ["", ":ledger"])
def test_a_key_of_another_type_is_reset_not_an_outage(
    space: str,
    server: redis.Redis,  # noqa: F811
    suffix: str,
) -> None:
    key = f"{space}:limits:org:sonnet"
    server.set(key + suffix, "written by something else")

    verdict = asyncio.run(learn_and_take(space))
    assert verdict.verdict == "ok" and verdict.charged == frozenset(LIMITS)
    assert server.type(key) == b"hash"


@pytest.mark.parametrize("deadline", [None, 0.001])
def test_a_slow_redis_is_an_outage_and_never_holds_a_request_past_its_deadline(
    space: str, monkeypatch: pytest.MonkeyPatch, deadline: float | None
) -> None:
    # A server answering just inside its socket timeout: takes never return in time.
    monkeypatch.setattr(shared_mod, "SLOW_TAKE_S", 0.02)
    buckets = SharedTokenBuckets(
        SharedRedis(URL, namespace=space), "org", limits=Limits(requests_per_minute=600)
    )

    async def never(*args: Any, **kwargs: Any) -> Any:
        await asyncio.Event().wait()

    monkeypatch.setattr(buckets.store, "take", never)

    async def main() -> Any:
        ends = None if deadline is None else time.monotonic() + deadline
        try:
            return await buckets.admit("claude-sonnet-4-5", 40, 1, deadline=ends)
        except AdmissionDeadlineError as exc:
            return exc

    got = asyncio.run(main())
    assert not isinstance(got, SharedTicket) or not got.shared  # never a shared charge
    if deadline is None:
        assert buckets.shared.fallbacks == 1 and not buckets.shared.usable()
    else:  # its own deadline was short, Redis was not slow: no outage
        assert buckets.shared.fallbacks == 0 and buckets.shared.usable()
