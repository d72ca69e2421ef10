"""Reading the service's rate-limit headers: from httpx's raw pairs, whatever their case,
and the usual answer's by one lookup that states what reading the pairs one by one states."""

from __future__ import annotations

import random

import pytest
from httpx2 import Headers

import claude_force._limit_headers as lh
from claude_force._limit_headers import limit_headers, stated


def test_response_headers_are_read_from_their_raw_pairs_whatever_their_case() -> None:
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Anthropic-RateLimit-Requests-Limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "49"),
            ("ANTHROPIC-RATELIMIT-INPUT-TOKENS-LIMIT", "40000"),
            ("anthropic-ratelimit-input-tokens-remaining", "not a number"),
            ("request-id", "req_1"),
        ]
    )
    assert set(limit_headers(headers)) == {
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-input-tokens-limit",
        "anthropic-ratelimit-input-tokens-remaining",
    }
    twice = Headers(
        [
            ("anthropic-ratelimit-requests-limit", "100"),
            ("Anthropic-Ratelimit-Requests-Limit", "5"),
            ("anthropic-ratelimit-requests-remaining", "4"),
            ("anthropic-ratelimit-requests-remaining", "4"),
        ]
    )
    assert stated(twice) == {"requests": (None, 4.0)}  # conflicting limits state none
    # The same answer as from a plain mapping of the lower-cased names.
    plain = {name.lower(): value for name, value in headers.multi_items()}
    assert (
        stated(headers)
        == stated(plain)
        == {
            "requests": (50.0, 49.0),
            "input-tokens": (40000.0, None),
        }
    )


@pytest.mark.parametrize("seed", range(4))
def test_raw_header_pairs_read_in_one_lookup_state_what_reading_pair_by_pair_states(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usual answer's headers (every name once, rate-limit names in lower case) are read
    by a lookup in C; whatever the pairs (names twice, in other cases), the values read are
    those of reading the pairs one by one."""
    names = [
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-input-tokens-limit",
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-tokens-limit",
        "anthropic-ratelimit-tokens-remaining",
        "Anthropic-RateLimit-Requests-Limit",
        "anthropic-ratelimit-Input-Tokens-Limit",
        "Anthropic-Ratelimit-requests-remaining",  # only the prefix in capitals
        "ANTHROPIC-RATELIMIT-tokens-remaining",
        "x-anthropic-ratelimit-requests-limit",
        "content-type",
    ]
    values = ["5", "10", "-1", "abc", "1e9", "inf", "", "7"]
    rng = random.Random(seed)
    cases = [
        [(rng.choice(names), rng.choice(values)) for _ in range(rng.randint(0, 6))]
        for _ in range(2_000)
    ]
    fast = [lh._read_values(Headers(pairs)) for pairs in cases]
    looked_up = sum(lh._read_plain(Headers(pairs).raw) is not None for pairs in cases)
    monkeypatch.setattr(lh, "_read_plain", lambda raw: None)
    for pairs, read in zip(cases, fast, strict=True):
        assert read == lh._read_values(Headers(pairs)), pairs
    assert 200 < looked_up < 2_000  # both ways were taken
    only_prefix = Headers([("Anthropic-Ratelimit-requests-limit", "50")])
    assert lh.stated(only_prefix) == {"requests": (50.0, None)}
