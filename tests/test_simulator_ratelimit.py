"""The simulator's server-side rate limits: token buckets per model class, on a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import anthropic
import pytest

from claude_force._errors import InvalidArgumentError
from claude_force.testing import RateLimits, Simulator, text_tokens
from claude_force.testing._ratelimit import (
    Admission,
    Rejection,
    ServerRateLimiter,
    model_class,
)

KEY = "test-key"
SONNET = "claude-sonnet-4-6"
HAIKU = "claude-haiku-4-5"
WALL = 1_700_000_000.0
# 28 characters x 160 = 1120 tokens, over sonnet's 1024-token cache minimum.
LONG_SYSTEM = "You are a careful reviewer. " * 160


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_sim(limits: RateLimits, clock: FakeClock) -> Simulator:
    return Simulator(rate_limits=limits, clock=clock, wall_clock=lambda: WALL + clock.now)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def client_for(sim: Simulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.base_url, api_key=KEY, max_retries=0)


def ask(client: anthropic.Anthropic, text: str = "hello", **overrides: Any) -> Any:
    params: dict[str, Any] = {
        "model": SONNET,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": text}],
    }
    params.update(overrides)
    return client.messages.with_raw_response.create(**params)


def refused(client: anthropic.Anthropic, text: str = "hello", **overrides: Any) -> Any:
    with pytest.raises(anthropic.RateLimitError) as info:
        ask(client, text, **overrides)
    return info.value


@pytest.fixture
def rpm3(clock: FakeClock) -> Iterator[tuple[Simulator, anthropic.Anthropic]]:
    with make_sim(RateLimits(requests_per_minute=3), clock) as sim, client_for(sim) as client:
        yield sim, client


def test_off_by_default_no_stats(sim: Simulator) -> None:
    assert sim.rate_limit_stats == {}


def test_requests_bucket_refuses_with_retry_after_and_headers(
    rpm3: tuple[Simulator, anthropic.Anthropic], clock: FakeClock
) -> None:
    sim, client = rpm3
    remaining = [int(ask(client).headers["anthropic-ratelimit-requests-remaining"]) for _ in "abc"]
    assert remaining == [2, 1, 0]
    err = refused(client)
    assert err.status_code == 429
    assert err.body["error"]["type"] == "rate_limit_error"
    assert "3 requests per minute" in err.message
    # One request refills every 20 s; whole seconds as the service sends them.
    assert err.response.headers["retry-after"] == "20"
    assert err.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert err.response.headers["anthropic-ratelimit-requests-limit"] == "3"
    clock.now += 19.5
    refused(client)
    clock.now += 0.5
    assert ask(client).parse().content
    stats = sim.rate_limit_stats
    assert stats["admitted"] == 4 and stats["rejected"] == 2
    assert stats["rejected_by"] == {"requests": 2, "input-tokens": 0, "output-tokens": 0}
    # The span a client kept to the limits: from the first admission to the last.
    first, last = stats["first_admitted"], stats["last_admitted"]
    assert isinstance(first, float) and isinstance(last, float) and last - first == 20.0


def test_refill_is_continuous_not_a_window(
    rpm3: tuple[Simulator, anthropic.Anthropic], clock: FakeClock
) -> None:
    _, client = rpm3
    for _ in range(3):
        ask(client)
    clock.now += 41.0  # two refills (20 s each), not a full reset
    ask(client)
    ask(client)
    assert refused(client).response.headers["retry-after"] == "19"


def test_only_configured_buckets_send_headers(
    rpm3: tuple[Simulator, anthropic.Anthropic],
) -> None:
    _, client = rpm3
    headers = ask(client).headers
    assert "anthropic-ratelimit-requests-limit" in headers
    assert "anthropic-ratelimit-input-tokens-limit" not in headers


def test_reset_is_when_the_bucket_is_full_again(
    rpm3: tuple[Simulator, anthropic.Anthropic], clock: FakeClock
) -> None:
    _, client = rpm3
    ask(client)
    reset = ask(client).headers["anthropic-ratelimit-requests-reset"]
    # Two requests used: full again in 40 s.
    expected = datetime.fromtimestamp(WALL + clock.now + 40, timezone.utc)
    assert reset == expected.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_input_tokens_bucket_counts_the_simulators_tokens(clock: FakeClock) -> None:
    text = "word " * 600
    tokens = text_tokens(text)
    limit = tokens + tokens // 2
    with (
        make_sim(RateLimits(input_tokens_per_minute=limit), clock) as sim,
        client_for(sim) as client,
    ):
        raw = ask(client, text)
        assert raw.parse().usage.input_tokens == tokens
        assert int(raw.headers["anthropic-ratelimit-input-tokens-remaining"]) == limit - tokens
        err = refused(client, text)
        assert "input tokens per minute" in err.message
        missing = tokens - (limit - tokens)
        seconds = missing / (limit / 60)
        assert int(err.response.headers["retry-after"]) == -int(-seconds // 1)
        clock.now += seconds
        ask(client, text)
        assert sim.rate_limit_stats["input_tokens"] == 2 * tokens


def test_prompt_cache_reads_do_not_count(clock: FakeClock) -> None:
    system = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}]
    with (
        make_sim(RateLimits(input_tokens_per_minute=100_000), clock) as sim,
        client_for(sim) as client,
    ):
        first = ask(client, system=system)
        second = ask(client, system=system)
        written = first.parse().usage
        read = second.parse().usage
        assert written.cache_creation_input_tokens > 1000
        assert read.cache_read_input_tokens == written.cache_creation_input_tokens
        spent_first = 100_000 - int(first.headers["anthropic-ratelimit-input-tokens-remaining"])
        assert spent_first == written.input_tokens + written.cache_creation_input_tokens
        left = int(second.headers["anthropic-ratelimit-input-tokens-remaining"])
        assert 100_000 - spent_first - left == read.input_tokens
        assert sim.rate_limit_stats["input_tokens"] == spent_first + read.input_tokens


def test_output_is_reserved_from_max_tokens_then_corrected(clock: FakeClock) -> None:
    with make_sim(RateLimits(output_tokens_per_minute=1000), clock) as sim, client_for(sim) as c:
        refused_before = sim.rate_limit_stats["rejected"]
        raw = ask(c, max_tokens=900)
        produced = raw.parse().usage.output_tokens
        assert produced < 900
        # Only what was produced stays charged once the answer is complete.
        assert int(raw.headers["anthropic-ratelimit-output-tokens-remaining"]) == 1000 - produced
        ask(c, max_tokens=900)  # fits again: the unused reservation came back
        assert sim.rate_limit_stats["rejected"] == refused_before


def test_reservation_blocks_while_a_request_runs() -> None:
    clock = FakeClock()
    limiter = ServerRateLimiter(
        RateLimits(output_tokens_per_minute=1000), clock=clock, wall=lambda: WALL
    )
    running = limiter.admit(SONNET, input_tokens=10, max_tokens=800)
    assert isinstance(running, Admission)
    blocked = limiter.admit(SONNET, input_tokens=10, max_tokens=800)
    assert isinstance(blocked, Rejection) and blocked.kind == "output-tokens"
    limiter.settle(running, input_tokens=10, output_tokens=100)
    limiter.settle(running, input_tokens=10, output_tokens=100)  # idempotent
    assert isinstance(limiter.admit(SONNET, input_tokens=10, max_tokens=800), Admission)
    assert limiter.stats()["output_tokens"] == 100


def test_a_request_larger_than_the_bucket_needs_a_full_bucket() -> None:
    clock = FakeClock()
    limiter = ServerRateLimiter(
        RateLimits(input_tokens_per_minute=600), clock=clock, wall=lambda: WALL
    )
    assert isinstance(limiter.admit(SONNET, input_tokens=1200, max_tokens=1), Admission)
    clock.now += 60  # repays the debt: back to 0, not full
    refusal = limiter.admit(SONNET, input_tokens=1, max_tokens=1)
    assert isinstance(refusal, Rejection)
    assert refusal.headers["retry-after"] == "1"
    clock.now += 60
    assert isinstance(limiter.admit(SONNET, input_tokens=1200, max_tokens=1), Admission)


def test_neighbour_takes_a_share_of_every_refill(clock: FakeClock) -> None:
    limits = RateLimits(requests_per_minute=60, neighbour_share=0.5)
    with make_sim(limits, clock) as sim, client_for(sim) as client:
        for _ in range(60):
            ask(client)
        err = refused(client)
        assert err.response.headers["retry-after"] == "2"  # one per 2 s instead of per 1 s
        assert err.response.headers["anthropic-ratelimit-requests-limit"] == "60"
        clock.now += 10
        for _ in range(5):
            ask(client)
        refused(client)


def test_model_classes_have_their_own_buckets(
    rpm3: tuple[Simulator, anthropic.Anthropic],
) -> None:
    _, client = rpm3
    for _ in range(3):
        ask(client)
    refused(client, model="claude-sonnet-4-5")  # same family, same buckets
    assert ask(client, model=HAIKU).headers["anthropic-ratelimit-requests-remaining"] == "2"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("claude-opus-4-1", "opus"),
        ("claude-3-5-Sonnet-latest", "sonnet"),
        ("claude-haiku-4-5", "haiku"),
        ("my-model", "my-model"),
    ],
)
def test_model_class(model: str, expected: str) -> None:
    assert model_class(model) == expected


def test_rate_limits_can_be_switched_on_and_off(clock: FakeClock) -> None:
    with Simulator(clock=clock) as sim, client_for(sim) as client:
        sim.set_rate_limits(RateLimits(requests_per_minute=1))
        ask(client)
        refused(client)
        sim.set_rate_limits(None)
        ask(client)
        assert sim.rate_limit_stats == {}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"requests_per_minute": 0},
        {"input_tokens_per_minute": 1.5},
        {"output_tokens_per_minute": True},
        {"neighbour_share": 1.0},
        {"neighbour_share": -0.1},
    ],
)
def test_bad_limits_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError, match="RateLimits"):
        RateLimits(**kwargs)


def test_set_rate_limits_needs_a_rate_limits() -> None:
    with pytest.raises(InvalidArgumentError, match="RateLimits"):
        Simulator(rate_limits={"requests_per_minute": 5})  # type: ignore[arg-type]
