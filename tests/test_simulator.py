"""The simulator, driven through the real anthropic SDK over loopback HTTP."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import Message, MessageParam, ToolParam
from hypothesis import given
from hypothesis import strategies as st

from claude_force._errors import InvalidArgumentError
from claude_force.testing import Fault, RecordedRequest, Simulator, serve, text_tokens
from claude_force.testing._text import (
    MAX_WORDS,
    MIN_WORDS,
    render_reply,
    reply_digest,
    reply_words,
)
from claude_force.testing._tokens import canonical_json, min_cacheable_tokens, prompt_shape

KEY = "test-key-never-recorded"
MODEL = "claude-sonnet-4-6"
HAIKU = "claude-haiku-4-5"
QUESTION = "Review the attached module for thread safety problems"
USER: list[MessageParam] = [{"role": "user", "content": QUESTION}]
# 28 characters x 160 = 4480 characters = 1120 tokens: over the 1024 minimum, under haiku's 2048.
LONG_SYSTEM = "You are a careful reviewer. " * 160


class FakeClock:
    """A clock the test moves by hand, so cache expiry needs no real waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def client(sim: Simulator) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=sim.base_url, api_key=KEY, max_retries=0) as c:
        yield c


@pytest.fixture
async def aclient(sim: Simulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=sim.base_url,
        api_key=KEY,
        max_retries=0,
        http_client=anthropic.DefaultAioHttpClient(),
    ) as c:
        yield c


def ask(client: anthropic.Anthropic, **overrides: Any) -> Message:
    params: dict[str, Any] = {"model": MODEL, "max_tokens": 200, "messages": USER}
    params.update(overrides)
    message: Message = client.messages.create(**params)
    return message


def text_of(message: Message) -> str:
    block = message.content[0]
    assert isinstance(block, anthropic.types.TextBlock)
    return block.text


def cached_system(ttl: str | None = None, text: str = LONG_SYSTEM) -> list[dict[str, Any]]:
    marker: dict[str, str] = {"type": "ephemeral"}
    if ttl is not None:
        marker["ttl"] = ttl
    return [{"type": "text", "text": text, "cache_control": marker}]


# -- answers -----------------------------------------------------------------------------------


def test_message_parses_with_usage_and_headers(client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=200, messages=USER)
    message = raw.parse()
    assert message.id.startswith("msg_")
    assert message.type == "message" and message.role == "assistant"
    assert message.model == MODEL
    assert text_of(message).startswith('Simulated reply to "Review the attached module for thread')
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    usage = message.usage
    assert usage.input_tokens == text_tokens(QUESTION)
    assert usage.output_tokens == len(text_of(message).split())
    assert MIN_WORDS <= usage.output_tokens <= MAX_WORDS
    assert usage.cache_creation_input_tokens == 0 and usage.cache_read_input_tokens == 0
    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_5m_input_tokens == 0
    assert usage.service_tier == "standard"
    request_id = raw.headers["request-id"]
    assert request_id.startswith("req_") and message._request_id == request_id
    for name in ("requests", "input-tokens", "output-tokens"):
        limit = int(raw.headers[f"anthropic-ratelimit-{name}-limit"])
        # A bucket refilled continuously: a small request's share is back within milliseconds.
        assert 0 <= int(raw.headers[f"anthropic-ratelimit-{name}-remaining"]) <= limit
        assert raw.headers[f"anthropic-ratelimit-{name}-reset"].endswith("Z")


def test_unenforced_rate_limit_headers_refill_continuously(clock: FakeClock) -> None:
    """The headers describe token buckets, as the service's do: what a request took comes
    back at the limit's per-minute rate, not all at once when a window ends."""
    sim, c = caching_client(clock=clock)
    try:

        def remaining(name: str) -> int:
            raw = c.messages.with_raw_response.create(model=MODEL, max_tokens=200, messages=USER)
            return int(raw.headers[f"anthropic-ratelimit-{name}-remaining"])

        first = remaining("requests")
        assert remaining("requests") == first - 1
        clock.now += 60 / 4000 * 1.5  # a request and a half's worth of refill
        assert remaining("requests") == first - 1  # 1.5 back, 1 taken: not first - 2
        clock.now += 3600
        assert remaining("requests") == 4000 - 1  # full, then this request taken
        two_taken = remaining("input-tokens")
        clock.now += 60
        one = (2_000_000 - two_taken) // 2
        assert remaining("input-tokens") == 2_000_000 - one  # full again, less this one
    finally:
        c.close()
        sim.stop()


def test_identical_requests_give_identical_text(client: anthropic.Anthropic) -> None:
    assert text_of(ask(client)) == text_of(ask(client))


@pytest.mark.parametrize(
    "change",
    [
        {"messages": [{"role": "user", "content": "Something else entirely"}]},
        {"model": HAIKU},
        {"system": "You are terse."},
        {"stop_sequences": ["END"]},
    ],
)
def test_different_requests_give_different_text(
    client: anthropic.Anthropic, change: dict[str, Any]
) -> None:
    assert text_of(ask(client, **change)) != text_of(ask(client))


def test_max_tokens_cuts_the_same_text(client: anthropic.Anthropic) -> None:
    full = ask(client, max_tokens=500)
    cut = ask(client, max_tokens=5)
    assert cut.stop_reason == "max_tokens" and full.stop_reason == "end_turn"
    assert cut.usage.output_tokens == 5
    assert text_of(cut).split() == text_of(full).split()[:5]


def test_count_tokens_matches_the_input_of_a_message(client: anthropic.Anthropic) -> None:
    tool: ToolParam = {
        "name": "lookup",
        "description": "Find a file",
        "input_schema": {"type": "object"},
    }
    counted = client.messages.count_tokens(
        model=MODEL, system="Be brief.", messages=USER, tools=[tool]
    )
    expected = text_tokens(canonical_json(tool)) + text_tokens("Be brief.") + text_tokens(QUESTION)
    assert counted.input_tokens == expected
    assert ask(client, system="Be brief.", tools=[tool]).usage.input_tokens == expected


def test_count_tokens_and_usage_agree_on_every_script(client: anthropic.Anthropic) -> None:
    # English, Chinese, Japanese, Korean, Russian, an emoji and JSON with hex
    mixed = (
        "Review \u4e2d\u6587 \u65e5\u672c\u8a9e \ud55c\uad6d\uc5b4 "
        '\u041f\u0440\u0438\u0432\u0435\u0442 \U0001f600 {"k":"0xff"}'
    )
    messages: list[MessageParam] = [{"role": "user", "content": mixed * 50}]
    system = "\u4f60\u662f\u4e00\u4e2a\u7ec6\u5fc3\u7684\u5ba1\u67e5\u8005\u3002"
    counted = client.messages.count_tokens(model=MODEL, system=system, messages=messages)
    expected = text_tokens(system) + text_tokens(mixed * 50)
    assert counted.input_tokens == expected
    assert ask(client, system=system, messages=messages).usage.input_tokens == expected
    # Han text counts about four times what a quarter of its characters would say
    assert text_tokens("\u4e2d" * 1_000) == 1_000 == 4 * math.ceil(1_000 / 4)


def test_count_tokens_takes_its_own_faults(client: anthropic.Anthropic, sim: Simulator) -> None:
    sim.script_count_tokens(Fault.status(500), Fault.status(400, message="bad count"))
    with pytest.raises(anthropic.InternalServerError):
        client.messages.count_tokens(model=MODEL, messages=USER)
    with pytest.raises(anthropic.BadRequestError, match="bad count"):
        client.messages.count_tokens(model=MODEL, messages=USER)
    assert ask(client).usage.input_tokens == text_tokens(QUESTION)  # messages unaffected
    assert client.messages.count_tokens(model=MODEL, messages=USER).input_tokens == text_tokens(
        QUESTION
    )
    sim.script_count_tokens(Fault.status(529))
    sim.clear_faults()
    assert client.messages.count_tokens(model=MODEL, messages=USER).input_tokens > 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"model": ""}, "model"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ({"system": [{"type": "text", "text": "x", "cache_control": {"type": "x"}}]}, "system.0"),
    ],
)
def test_invalid_request_names_the_field(
    client: anthropic.Anthropic, change: dict[str, Any], field: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        ask(client, **change)
    assert info.value.type == "invalid_request_error"
    assert str(info.value.api_message).startswith(field)


# -- auth, unknown paths, recording ------------------------------------------------------------


def test_request_without_key_is_refused(sim: Simulator) -> None:
    body = {"model": MODEL, "max_tokens": 10, "messages": USER}
    with httpx2.Client(base_url=sim.base_url) as http:
        refused = http.post("/v1/messages", json=body)
        with_x_api_key = http.post("/v1/messages", json=body, headers={"x-api-key": KEY})
        empty_bearer = http.post("/v1/messages", json=body, headers={"authorization": "Bearer"})
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "authentication_error"
    assert refused.headers["request-id"] == refused.json()["request_id"]
    assert with_x_api_key.status_code == 200
    assert empty_bearer.status_code == 401


def test_key_is_optional_when_not_required() -> None:
    with Simulator(require_api_key=False) as open_sim, httpx2.Client() as http:
        response = http.post(
            f"{open_sim.base_url}/v1/messages",
            json={"model": MODEL, "max_tokens": 10, "messages": USER},
        )
    assert response.status_code == 200


def test_unknown_path_is_not_found(sim: Simulator) -> None:
    with httpx2.Client(base_url=sim.base_url, headers={"x-api-key": KEY}) as http:
        response = http.get("/v1/models")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    assert [r.path for r in sim.requests] == ["/v1/models"]
    assert sim.message_requests == []


def test_recordings_redact_credentials(sim: Simulator, client: anthropic.Anthropic) -> None:
    ask(client)
    with httpx2.Client(base_url=sim.base_url, headers={"x-api-key": KEY}) as http:
        http.post("/v1/messages/count_tokens", json={"model": MODEL, "messages": USER})
    first, second = sim.requests
    assert first == RecordedRequest(first.path, first.body, first.headers)
    assert first.path == "/v1/messages" and first.body["messages"] == USER
    assert first.headers["authorization"] == "<redacted>"
    assert second.headers["x-api-key"] == "<redacted>"
    assert all(KEY not in value for r in sim.requests for value in r.headers.values())
    assert len(sim.message_requests) == 1


# -- faults --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "error_class", "error_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (403, anthropic.PermissionDeniedError, "permission_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (408, anthropic.RequestTimeoutError, "timeout_error"),
        (409, anthropic.ConflictError, "conflict_error"),
        (413, anthropic.ContentTooLargeError, "request_too_large"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (503, anthropic.ServiceUnavailableError, "api_error"),
        (504, anthropic.GatewayTimeoutError, "timeout_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
async def test_status_fault_surfaces_as_the_sdk_error(
    sim: Simulator,
    aclient: anthropic.AsyncAnthropic,
    code: int,
    error_class: type[anthropic.APIStatusError],
    error_type: str,
) -> None:
    sim.script(Fault.status(code, retry_after="7", retry_after_ms="6500", should_retry=False))
    with pytest.raises(error_class) as info:
        await aclient.messages.create(model=MODEL, max_tokens=10, messages=USER)
    err = info.value
    assert err.status_code == code and err.type == error_type
    assert err.request_id is not None and err.request_id.startswith("req_")
    assert err.response.headers["retry-after"] == "7"
    assert err.response.headers["retry-after-ms"] == "6500"
    assert err.response.headers["x-should-retry"] == "false"


async def test_retry_headers_are_sent_only_when_given(
    sim: Simulator, aclient: anthropic.AsyncAnthropic
) -> None:
    sim.script(Fault.status(429, message="slow down", should_retry=True))
    with pytest.raises(anthropic.RateLimitError) as info:
        await aclient.messages.create(model=MODEL, max_tokens=10, messages=USER)
    headers = info.value.response.headers
    assert "retry-after" not in headers and "retry-after-ms" not in headers
    assert headers["x-should-retry"] == "true"
    assert info.value.api_message == "slow down"


def test_script_applies_faults_in_order(sim: Simulator, client: anthropic.Anthropic) -> None:
    sim.script(Fault.status(429), None, Fault.status(529))
    outcomes: list[str] = []
    for _ in range(4):
        try:
            ask(client)
            outcomes.append("ok")
        except anthropic.APIStatusError as err:
            outcomes.append(str(err.status_code))
    assert outcomes == ["429", "ok", "529", "ok"]
    assert len(sim.message_requests) == 4


async def test_reset_is_a_connection_error(
    sim: Simulator, aclient: anthropic.AsyncAnthropic, client: anthropic.Anthropic
) -> None:
    sim.script(Fault.reset(), Fault.reset())
    with pytest.raises(anthropic.APIConnectionError) as info:
        await aclient.messages.create(model=MODEL, max_tokens=10, messages=USER)
    assert not isinstance(info.value, anthropic.APITimeoutError)
    with pytest.raises(anthropic.APIConnectionError):
        ask(client)
    # The connection pool recovers: the next request is answered.
    assert (await aclient.messages.create(model=MODEL, max_tokens=10, messages=USER)).content


async def test_hang_times_out_on_the_client(
    sim: Simulator, aclient: anthropic.AsyncAnthropic
) -> None:
    sim.script(Fault.hang())
    started = time.perf_counter()
    with pytest.raises(anthropic.APITimeoutError):
        await aclient.messages.create(model=MODEL, max_tokens=10, messages=USER, timeout=0.2)
    assert time.perf_counter() - started < 5.0


def test_stop_cancels_a_hung_request() -> None:
    errors: list[BaseException] = []
    sim = Simulator().start()
    sim.script(Fault.hang())

    def call() -> None:
        with anthropic.Anthropic(base_url=sim.base_url, api_key=KEY, max_retries=0) as c:
            try:
                ask(c, timeout=60.0)
            except anthropic.APIError as err:
                errors.append(err)

    caller = threading.Thread(target=call)
    caller.start()
    assert sim.wait_for_in_flight(1, timeout=10.0)
    started = time.perf_counter()
    sim.stop()
    sim.stop()  # idempotent
    assert time.perf_counter() - started < 5.0
    caller.join(10.0)
    assert not caller.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], anthropic.APIConnectionError)


def fault_pattern(seed: int, probability: float) -> list[bool]:
    with (
        Simulator() as sim,
        anthropic.Anthropic(base_url=sim.base_url, api_key=KEY, max_retries=0) as c,
    ):
        sim.set_fault_rate(probability, Fault.status(503), seed=seed)
        pattern: list[bool] = []
        for _ in range(20):
            try:
                ask(c, max_tokens=1)
                pattern.append(False)
            except anthropic.ServiceUnavailableError:
                pattern.append(True)
        return pattern


def test_fault_rate_is_random_but_seeded() -> None:
    first = fault_pattern(seed=3, probability=0.5)
    assert 0 < sum(first) < 20
    assert fault_pattern(seed=3, probability=0.5) == first
    assert fault_pattern(seed=3, probability=1.0) == [True] * 20


def test_script_runs_before_the_fault_rate(sim: Simulator, client: anthropic.Anthropic) -> None:
    sim.set_fault_rate(1.0, Fault.status(503))
    sim.script(None)
    assert ask(client).content
    with pytest.raises(anthropic.ServiceUnavailableError):
        ask(client)
    sim.clear_faults()
    assert ask(client).content


@pytest.mark.parametrize(
    "build",
    [
        lambda: Fault.status(200),
        lambda: Fault.status(600),
        lambda: Fault.hang(-1.0),
        lambda: Simulator(latency_ms=-5),
        lambda: Simulator(port=70000),
        lambda: Simulator(min_cacheable_tokens=0),
    ],
)
def test_bad_arguments_are_usage_errors(build: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        build()


def test_bad_fault_arguments_name_the_value(sim: Simulator) -> None:
    with pytest.raises(InvalidArgumentError, match=r"1\.5"):
        sim.set_fault_rate(1.5, Fault.reset())
    with pytest.raises(InvalidArgumentError, match="429"):
        sim.script(429)  # type: ignore[arg-type]


# -- concurrency and latency -------------------------------------------------------------------


async def test_peak_in_flight_with_latency() -> None:
    async with (
        Simulator(latency_ms=50) as slow,
        anthropic.AsyncAnthropic(
            base_url=slow.base_url,
            api_key=KEY,
            max_retries=0,
            http_client=anthropic.DefaultAioHttpClient(),
        ) as c,
    ):
        started = time.perf_counter()
        tasks = [
            c.messages.create(
                model=MODEL, max_tokens=5, messages=[{"role": "user", "content": f"task {i}"}]
            )
            for i in range(20)
        ]
        results = await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        assert len(results) == 20
        assert 1 < slow.peak_in_flight <= 20
        assert slow.in_flight == 0
        assert elapsed >= 0.05  # every request waited its latency
        slow.reset_stats()
        assert slow.peak_in_flight == 0 and slow.requests == []


def test_per_token_latency_scales_with_output() -> None:
    with (
        Simulator(per_token_latency_ms=5) as slow,
        anthropic.Anthropic(base_url=slow.base_url, api_key=KEY, max_retries=0) as c,
    ):
        started = time.perf_counter()
        message = ask(c, max_tokens=10)
        elapsed = time.perf_counter() - started
    assert message.usage.output_tokens == 10
    assert elapsed >= 0.05


# -- prompt caching ------------------------------------------------------------------------------


def caching_client(**options: Any) -> tuple[Simulator, anthropic.Anthropic]:
    sim = Simulator(**options).start()
    return sim, anthropic.Anthropic(base_url=sim.base_url, api_key=KEY, max_retries=0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache_sim(clock: FakeClock) -> Iterator[tuple[Simulator, anthropic.Anthropic]]:
    sim, c = caching_client(clock=clock)
    try:
        yield sim, c
    finally:
        c.close()
        sim.stop()


def test_prompt_cache_writes_reads_and_expires(
    cache_sim: tuple[Simulator, anthropic.Anthropic], clock: FakeClock
) -> None:
    sim, c = cache_sim
    prefix = text_tokens(LONG_SYSTEM)
    user_tokens = text_tokens(QUESTION)

    first = ask(c, system=cached_system()).usage
    assert first.cache_creation_input_tokens == prefix and first.cache_read_input_tokens == 0
    assert first.cache_creation is not None
    assert first.cache_creation.ephemeral_5m_input_tokens == prefix
    assert first.cache_creation.ephemeral_1h_input_tokens == 0
    assert first.input_tokens == user_tokens

    clock.now += 200  # a read refreshes the entry's five minutes
    second = ask(c, system=cached_system()).usage
    assert second.cache_read_input_tokens == prefix and second.cache_creation_input_tokens == 0
    assert second.input_tokens == user_tokens
    clock.now += 200
    assert ask(c, system=cached_system()).usage.cache_read_input_tokens == prefix

    clock.now += 301
    expired = ask(c, system=cached_system()).usage
    assert expired.cache_creation_input_tokens == prefix and expired.cache_read_input_tokens == 0

    sim.reset_stats()  # keeps the cache
    assert ask(c, system=cached_system()).usage.cache_read_input_tokens == prefix
    sim.clear_prompt_cache()
    assert ask(c, system=cached_system()).usage.cache_creation_input_tokens == prefix


def test_one_hour_ttl(cache_sim: tuple[Simulator, anthropic.Anthropic], clock: FakeClock) -> None:
    _, c = cache_sim
    prefix = text_tokens(LONG_SYSTEM)
    written = ask(c, system=cached_system("1h")).usage
    assert written.cache_creation is not None
    assert written.cache_creation.ephemeral_1h_input_tokens == prefix
    assert written.cache_creation.ephemeral_5m_input_tokens == 0
    clock.now += 3000
    assert ask(c, system=cached_system("1h")).usage.cache_read_input_tokens == prefix
    clock.now += 3601
    assert ask(c, system=cached_system("1h")).usage.cache_creation_input_tokens == prefix


def test_below_the_minimum_nothing_is_cached(
    cache_sim: tuple[Simulator, anthropic.Anthropic],
) -> None:
    _, c = cache_sim
    short = "Be brief. " * 40
    for _ in range(2):
        usage = ask(c, system=cached_system(text=short)).usage
        assert usage.cache_creation_input_tokens == 0 and usage.cache_read_input_tokens == 0
        assert usage.input_tokens == text_tokens(short) + text_tokens(QUESTION)
    # Haiku needs 2048 tokens, so the long system prompt is not cached there either.
    assert ask(c, model=HAIKU, system=cached_system()).usage.cache_creation_input_tokens == 0


def test_min_cacheable_tokens_overrides_the_table() -> None:
    sim, c = caching_client(min_cacheable_tokens=10)
    with sim, c:
        short = "Be brief. " * 5
        usage = ask(c, model=HAIKU, system=cached_system(text=short)).usage
        assert usage.cache_creation_input_tokens == text_tokens(short)


def test_longest_cached_breakpoint_is_read_and_the_rest_written(
    cache_sim: tuple[Simulator, anthropic.Anthropic],
) -> None:
    _, c = cache_sim
    system_tokens = text_tokens(LONG_SYSTEM)

    def turn(question: str) -> anthropic.types.Usage:
        block = {"type": "text", "text": question, "cache_control": {"type": "ephemeral"}}
        return ask(c, system=cached_system(), messages=[{"role": "user", "content": [block]}]).usage

    first = turn("First question about the module?")
    assert first.cache_creation_input_tokens == system_tokens + text_tokens(
        "First question about the module?"
    )
    second = turn("A different question")
    assert second.cache_read_input_tokens == system_tokens
    assert second.cache_creation_input_tokens == text_tokens("A different question")
    assert second.input_tokens == 0


def test_cache_control_does_not_change_the_text(client: anthropic.Anthropic) -> None:
    plain = [{"type": "text", "text": LONG_SYSTEM}]
    assert text_of(ask(client, system=plain)) == text_of(ask(client, system=cached_system()))


# -- lifecycle and serve() -----------------------------------------------------------------------


def test_start_is_idempotent_and_port_errors_are_usage_errors() -> None:
    with Simulator() as sim:
        assert sim.start() is sim
        assert sim.base_url == f"http://127.0.0.1:{sim.port}"
        with pytest.raises(InvalidArgumentError, match=str(sim.port)):
            Simulator(port=sim.port).start()
    with pytest.raises(InvalidArgumentError, match="not running"):
        _ = sim.port


def test_serve_runs_until_stopped() -> None:
    stop = threading.Event()
    ready: list[Simulator] = []

    def on_ready(sim: Simulator) -> None:
        ready.append(sim)
        stop.set()  # asks serve() to return as soon as it is up

    runner = threading.Thread(
        target=serve, args=("127.0.0.1", 0), kwargs={"on_ready": on_ready, "stop_event": stop}
    )
    runner.start()
    runner.join(10.0)
    assert not runner.is_alive()
    assert len(ready) == 1 and not ready[0].running


def test_serve_answers_while_running() -> None:
    stop = threading.Event()
    up = threading.Event()
    urls: list[str] = []

    def on_ready(sim: Simulator) -> None:
        urls.append(sim.base_url)
        up.set()

    runner = threading.Thread(
        target=serve,
        args=("127.0.0.1", 0),
        kwargs={"on_ready": on_ready, "stop_event": stop, "require_api_key": False},
    )
    runner.start()
    try:
        assert up.wait(10.0)
        with httpx2.Client() as http:
            response = http.post(
                f"{urls[0]}/v1/messages/count_tokens",
                json={"model": MODEL, "messages": [{"role": "user", "content": "abcdefgh"}]},
            )
        assert response.json() == {"input_tokens": 2}
    finally:
        stop.set()
        runner.join(10.0)
    assert not runner.is_alive()


# -- pure parts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("a", 1),
        ("Review the module", 5),  # 17 ASCII characters, 4 a token
        ('{"id":"0x1f"}', 4),  # JSON and hex are ASCII too
        ("\u4e2d\u6587\u6587\u672c", 4),  # Han: one a character
        ("\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8", 8),  # Kanji, Hiragana, Katakana
        ("\ud55c\uad6d\uc5b4", 3),  # Hangul
        ("\u041f\u0440\u0438\u0432\u0435\u0442", 3),  # Cyrillic: two a token
        ("\u03b1\u03b2\u03b3", 2),  # Greek, rounded up
        ("\U0001f600\U0001f600", 1),  # emoji
        ("ab\u4e2d\u043c", 2),  # 2 x 1/4 + 1 + 1/2, rounded up once
        ("\U00020000", 1),  # an ideograph beyond the BMP
    ],
)
def test_text_tokens_by_script(text: str, tokens: int) -> None:
    assert text_tokens(text) == tokens


@given(st.text(max_size=400))
def test_text_tokens_is_between_a_quarter_of_the_characters_and_the_bytes(text: str) -> None:
    tokens = text_tokens(text)
    assert math.ceil(len(text) / 4) <= tokens <= len(text.encode("utf-8"))
    assert (tokens >= 1) == (text != "")
    if text.isascii():
        assert tokens == math.ceil(len(text) / 4)


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_count_tokens_never_exceeds_the_bytes_of_any_text(text: str) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    }
    shape = prompt_shape(body)
    assert not isinstance(shape, str)
    assert shape.input_tokens == text_tokens(text) <= len(text.encode("utf-8"))


@given(st.text(max_size=80), st.integers(min_value=1, max_value=200))
def test_reply_length_and_cut(question: str, max_tokens: int) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": question}]}
    words = reply_words(body, reply_digest(body))
    assert MIN_WORDS <= len(words) <= MAX_WORDS
    reply = render_reply(words, max_tokens)
    assert reply.output_tokens == min(len(words), max_tokens)
    assert reply.stop_reason == ("max_tokens" if len(words) > max_tokens else "end_turn")
    assert reply.text.split(" ") == words[: reply.output_tokens]


@pytest.mark.parametrize(
    ("model", "override", "expected"),
    [(MODEL, None, 1024), (HAIKU, None, 2048), ("claude-3-5-HAIKU", None, 2048), (HAIKU, 5, 5)],
)
def test_min_cacheable_table(model: str, override: int | None, expected: int) -> None:
    assert min_cacheable_tokens(model, override) == expected
