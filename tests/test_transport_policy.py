"""The retry policy as tables: should_retry, parse_retry_after, retry_delay."""

from __future__ import annotations

import dataclasses
import email.utils

import pytest

from claude_force._request import Request, SystemPrompt
from claude_force._retry_policy import (
    MAX_DELAY,
    MAX_RETRY_AFTER,
    has_rate_limit_headers,
    parse_retry_after,
    retry_delay,
    should_retry,
)
from claude_force._transport import input_chars

RETRYABLE = [408, 409, 429, 500, 502, 503, 504, 529]
NOT_RETRYABLE = [400, 401, 403, 404, 413, 422]


@pytest.mark.parametrize("status", RETRYABLE)
def test_retryable_statuses(status: int) -> None:
    assert should_retry(status, {}) is True


@pytest.mark.parametrize("status", NOT_RETRYABLE)
def test_non_retryable_statuses(status: int) -> None:
    assert should_retry(status, {}) is False


def test_connection_errors_and_timeouts_are_retried() -> None:
    assert should_retry(None) is True


@pytest.mark.parametrize(
    ("status", "hint", "expected"),
    [
        (500, "false", False),
        (529, "false", False),
        (429, "false", False),
        (400, "true", True),
        (409, "true", True),
    ],
)
def test_x_should_retry_header_wins(status: int, hint: str, expected: bool) -> None:
    assert should_retry(status, {"x-should-retry": hint}) is expected


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.75"}, 0.75),
        ({"retry-after": email.utils.formatdate(NOW + 20, usegmt=True)}, 20.0),
        ({"retry-after": email.utils.formatdate(NOW - 20, usegmt=True)}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after-ms": "abc", "retry-after": "2"}, 2.0),
        ({"retry-after": "0"}, None),
        ({"retry-after": "Fri, 31 Dec 99999 23:59:59 GMT"}, None),  # no calendar holds it
        ({"retry-after-ms": "nan", "retry-after": "2"}, 2.0),
        ({"retry-after-ms": "-5"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    got = parse_retry_after(headers, now=NOW)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_retry_delay_honours_server() -> None:
    assert retry_delay(0, {"retry-after": "7"}, now=NOW, jitter=0.0) == 7.0
    assert retry_delay(0, {"retry-after": "7"}, now=NOW, jitter=0.9) == pytest.approx(7 * 1.225)
    assert retry_delay(5, {"retry-after-ms": "10"}, now=NOW, jitter=0.0) == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("retries", "expected"),
    [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, MAX_DELAY), (10_000, MAX_DELAY)],
)
def test_backoff_is_exponential_and_capped(retries: int, expected: float) -> None:
    assert retry_delay(retries, None, now=NOW, jitter=0.0) == pytest.approx(expected)


@pytest.mark.parametrize("jitter", [0.0, 0.3, 0.999])
def test_jitter_reduces_by_at_most_a_quarter(jitter: float) -> None:
    delay = retry_delay(2, {}, now=NOW, jitter=jitter)
    assert 2.0 * 0.75 <= delay <= 2.0


@pytest.mark.parametrize(("asked", "jitter"), [("3600", 0.0), ("61", 0.5), ("86400", 0.999)])
def test_server_waits_are_capped_at_a_minute(asked: str, jitter: float) -> None:
    delay = retry_delay(0, {"retry-after": asked}, now=NOW, jitter=jitter)
    assert MAX_RETRY_AFTER * 0.75 < delay <= MAX_RETRY_AFTER


def test_server_waits_spread_with_jitter() -> None:
    delays = {retry_delay(0, {"retry-after": "2"}, now=NOW, jitter=j / 10) for j in range(10)}
    assert len(delays) == 10 and min(delays) == 2.0 and max(delays) < 2.5


def test_input_chars_counts_system_messages_and_tools() -> None:
    request = Request(
        model="claude-sonnet-4-6",
        system=SystemPrompt("s" * 100),
        messages=(
            {"role": "user", "content": [{"type": "text", "text": "u" * 40}]},
            {"role": "assistant", "content": "a" * 10},
        ),
        max_tokens=10,
    )
    assert input_chars(request) == 150
    with_tools = dataclasses.replace(request, tools=({"name": "t", "input_schema": {}},))
    assert input_chars(with_tools) > 150


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"anthropic-ratelimit-input-tokens-remaining": "5"}, True),
        ({"Anthropic-RateLimit-Requests-Limit": "50"}, True),
        ({"retry-after": "3"}, False),
        (None, False),
    ],
)
def test_has_rate_limit_headers(headers: dict[str, str] | None, expected: bool) -> None:
    assert has_rate_limit_headers(headers) is expected
