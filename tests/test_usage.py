from __future__ import annotations

from typing import Any

import pytest
from anthropic.types import CacheCreation, ServerToolUsage
from anthropic.types import Usage as SDKUsage
from hypothesis import given
from hypothesis import strategies as st

from claude_force._errors import InvalidArgumentError
from claude_force._usage import Usage

counts = st.integers(min_value=0, max_value=10**9)
usages = st.builds(
    Usage,
    input_tokens=counts,
    output_tokens=counts,
    cache_write_5m_tokens=counts,
    cache_write_1h_tokens=counts,
    cache_read_tokens=counts,
    web_search_requests=counts,
)


def test_defaults_are_zero() -> None:
    u = Usage()
    assert (u.prompt_tokens, u.cache_write_tokens, u.total_tokens) == (0, 0, 0)


def test_properties() -> None:
    u = Usage(
        input_tokens=1,
        output_tokens=2,
        cache_write_5m_tokens=30,
        cache_write_1h_tokens=400,
        cache_read_tokens=5000,
    )
    assert u.cache_write_tokens == 430
    assert u.prompt_tokens == 5431
    assert u.total_tokens == 5433


def test_add() -> None:
    a = Usage(input_tokens=1, output_tokens=2, cache_write_5m_tokens=3, web_search_requests=1)
    b = Usage(input_tokens=10, cache_write_1h_tokens=4, cache_read_tokens=5, web_search_requests=2)
    assert a + b == Usage(
        input_tokens=11,
        output_tokens=2,
        cache_write_5m_tokens=3,
        cache_write_1h_tokens=4,
        cache_read_tokens=5,
        web_search_requests=3,
    )
    assert sum([a, b], Usage()) == a + b


def test_add_other_type_is_type_error() -> None:
    with pytest.raises(TypeError):
        _ = Usage() + 1


@given(usages, usages, usages)
def test_addition_is_associative_and_commutative(a: Usage, b: Usage, c: Usage) -> None:
    assert (a + b) + c == a + (b + c)
    assert a + b == b + a
    assert (a + b).prompt_tokens == a.prompt_tokens + b.prompt_tokens


@pytest.mark.parametrize("field", ["input_tokens", "web_search_requests"])
@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", None])
def test_rejects_bad_counts(bad: Any, field: str) -> None:
    with pytest.raises(InvalidArgumentError, match=field):
        Usage(**{field: bad})


def test_whole_counts_sent_as_floats_are_read_and_others_refused() -> None:
    """A stand-in or proxy writing 100.0: the answer is paid for and its counts are whole."""
    usage = Usage.from_api({"input_tokens": 100.0, "output_tokens": 20.0})
    assert (usage.input_tokens, usage.output_tokens) == (100, 20)
    assert type(usage.input_tokens) is int
    for bad in (1.5, -1.0, float("inf"), float("nan")):
        with pytest.raises(InvalidArgumentError, match="input_tokens"):
            Usage.from_api({"input_tokens": bad, "output_tokens": 1})


def test_is_immutable() -> None:
    u = Usage()
    with pytest.raises(AttributeError):
        u.input_tokens = 3  # type: ignore[misc]


def test_from_sdk_object_with_split() -> None:
    sdk = SDKUsage(
        input_tokens=12,
        output_tokens=34,
        cache_creation_input_tokens=300,
        cache_read_input_tokens=5000,
        cache_creation=CacheCreation(ephemeral_5m_input_tokens=100, ephemeral_1h_input_tokens=200),
    )
    assert Usage.from_api(sdk) == Usage(
        input_tokens=12,
        output_tokens=34,
        cache_write_5m_tokens=100,
        cache_write_1h_tokens=200,
        cache_read_tokens=5000,
    )


def test_from_dict_form() -> None:
    raw = {
        "input_tokens": 7,
        "output_tokens": 8,
        "cache_creation_input_tokens": 9,
        "cache_read_input_tokens": 10,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 9},
    }
    assert Usage.from_api(raw) == Usage(
        input_tokens=7, output_tokens=8, cache_write_1h_tokens=9, cache_read_tokens=10
    )


def test_without_split_writes_count_as_5m() -> None:
    sdk = SDKUsage(input_tokens=1, output_tokens=2, cache_creation_input_tokens=250)
    assert Usage.from_api(sdk).cache_write_5m_tokens == 250
    assert Usage.from_api(sdk).cache_write_1h_tokens == 0


def test_split_short_of_total_keeps_remainder_as_5m() -> None:
    raw = {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_creation_input_tokens": 100,
        "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 40},
    }
    u = Usage.from_api(raw)
    assert (u.cache_write_5m_tokens, u.cache_write_1h_tokens) == (60, 40)


@pytest.mark.parametrize(
    ("api_usage", "searches"),
    [
        (  # the SDK's object
            SDKUsage(
                input_tokens=5,
                output_tokens=6,
                server_tool_use=ServerToolUsage(web_search_requests=3, web_fetch_requests=2),
            ),
            3,
        ),
        (SDKUsage(input_tokens=5, output_tokens=6, server_tool_use=None), 0),
        (  # its dict form
            {"input_tokens": 5, "output_tokens": 6, "server_tool_use": {"web_search_requests": 4}},
            4,
        ),
        # web fetches have no per-request fee, only their tokens
        ({"input_tokens": 5, "output_tokens": 6, "server_tool_use": {"web_fetch_requests": 1}}, 0),
        ({"input_tokens": 5, "output_tokens": 6}, 0),
    ],
)
def test_web_searches_come_from_server_tool_use(api_usage: Any, searches: int) -> None:
    usage = Usage.from_api(api_usage)
    assert usage == Usage(input_tokens=5, output_tokens=6, web_search_requests=searches)
    assert usage.total_tokens == 11  # searches are not tokens


def test_bad_web_search_count_names_field() -> None:
    raw = {"input_tokens": 1, "server_tool_use": {"web_search_requests": -2}}
    with pytest.raises(InvalidArgumentError, match="web_search_requests"):
        Usage.from_api(raw)


def test_nulls_and_missing_fields_are_zero() -> None:
    raw = {"input_tokens": 5, "output_tokens": None, "cache_read_input_tokens": None}
    assert Usage.from_api(raw) == Usage(input_tokens=5)


def test_bad_api_value_names_field() -> None:
    with pytest.raises(InvalidArgumentError, match="cache_read_input_tokens"):
        Usage.from_api({"cache_read_input_tokens": -3})
