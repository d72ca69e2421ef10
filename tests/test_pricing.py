"""Prices as data: every expected cost below was worked out by hand from the published rates."""

from __future__ import annotations

import json
import logging
import typing
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from anthropic.types.model_param import ModelParam

from claude_force._errors import ConfigError
from claude_force._pricing import PRICING_ENV_VAR, PriceTable, round_usd
from claude_force._usage import Usage

PLAIN_COUNTS = {"input_tokens": 1000, "output_tokens": 500}
PLAIN = Usage(**PLAIN_COUNTS)
WRITE_5M = Usage(input_tokens=100, cache_write_5m_tokens=2000, output_tokens=50)
WRITE_1H = Usage(input_tokens=100, cache_write_1h_tokens=2000, output_tokens=50)
READ = Usage(input_tokens=100, cache_read_tokens=10_000, output_tokens=50)
MIXED = Usage(
    input_tokens=300,
    cache_write_5m_tokens=1000,
    cache_write_1h_tokens=2000,
    cache_read_tokens=50_000,
    output_tokens=800,
)

# (model, usage, batch, expected USD). Rates per MTok used for the arithmetic:
#   sonnet-4-5  3 / 15,   5m 3.75,  1h 6,  read 0.30   (> 200k prompt: 6 / 22.50, 7.50, 12, 0.60)
#   opus-4-6    5 / 25,   5m 6.25,  1h 10, read 0.50
#   haiku-4-5   1 / 5,    5m 1.25,  1h 2,  read 0.10
#   opus-5-5    4 / 20,   5m 5,     1h 8,  read 0.20   (read = 0.05x input)
#   fable-5-1   10 / 50,  5m 12.50, 1h 20, read 0.25   (read = 0.025x input)
#   haiku-5-5   0.10 / 0.50, 5m 0.125, 1h 0.20, read 0.01
#               (> 100k prompt: 0.50 / 2.50, 0.625, 1, 0.05)
COST_CASES: list[tuple[str, Usage, bool, str]] = [
    # plain: 1000 in, 500 out
    ("claude-sonnet-4-5", PLAIN, False, "0.0105"),
    ("claude-opus-4-6", PLAIN, False, "0.0175"),
    ("claude-haiku-4-5", PLAIN, False, "0.0035"),
    ("claude-opus-5-5", PLAIN, False, "0.014"),
    ("claude-fable-5-1", PLAIN, False, "0.035"),
    ("claude-haiku-5-5", PLAIN, False, "0.00035"),
    # 5-minute cache write: 100 in, 2000 written, 50 out
    ("claude-sonnet-4-5", WRITE_5M, False, "0.00855"),
    ("claude-opus-4-6", WRITE_5M, False, "0.01425"),
    ("claude-haiku-4-5", WRITE_5M, False, "0.00285"),
    ("claude-opus-5-5", WRITE_5M, False, "0.0114"),
    ("claude-fable-5-1", WRITE_5M, False, "0.0285"),
    ("claude-haiku-5-5", WRITE_5M, False, "0.000285"),
    # 1-hour cache write: 100 in, 2000 written, 50 out
    ("claude-sonnet-4-5", WRITE_1H, False, "0.01305"),
    ("claude-opus-4-6", WRITE_1H, False, "0.02175"),
    ("claude-haiku-4-5", WRITE_1H, False, "0.00435"),
    ("claude-opus-5-5", WRITE_1H, False, "0.0174"),
    ("claude-fable-5-1", WRITE_1H, False, "0.0435"),
    ("claude-haiku-5-5", WRITE_1H, False, "0.000435"),
    # cache read: 100 in, 10000 read, 50 out
    ("claude-sonnet-4-5", READ, False, "0.00405"),
    ("claude-opus-4-6", READ, False, "0.00675"),
    ("claude-haiku-4-5", READ, False, "0.00135"),
    ("claude-opus-5-5", READ, False, "0.0034"),
    ("claude-fable-5-1", READ, False, "0.006"),
    ("claude-haiku-5-5", READ, False, "0.000135"),
    ("claude-sonnet-5-5", READ, False, "0.0017"),  # 2 / 10, read 0.10
    ("claude-fable-5", READ, False, "0.0135"),  # 10 / 50, read 1
    # mixed: 300 in, 1000 5m, 2000 1h, 50000 read, 800 out (53,300 prompt tokens)
    ("claude-sonnet-4-5", MIXED, False, "0.04365"),
    ("claude-opus-4-6", MIXED, False, "0.07275"),
    ("claude-haiku-4-5", MIXED, False, "0.01455"),
    ("claude-opus-5-5", MIXED, False, "0.0482"),
    ("claude-fable-5-1", MIXED, False, "0.108"),
    ("claude-haiku-5-5", MIXED, False, "0.001455"),
    # batch: half of every kind
    ("claude-sonnet-4-5", PLAIN, True, "0.00525"),
    ("claude-opus-4-6", PLAIN, True, "0.00875"),
    ("claude-haiku-4-5", PLAIN, True, "0.00175"),
    ("claude-opus-5-5", PLAIN, True, "0.007"),
    ("claude-fable-5-1", PLAIN, True, "0.0175"),
    ("claude-haiku-5-5", PLAIN, True, "0.000175"),
    ("claude-sonnet-4-5", MIXED, True, "0.021825"),
    ("claude-fable-5-1", MIXED, True, "0.054"),
    ("claude-haiku-5-5", MIXED, True, "0.0007275"),
    # long context: the whole request moves to the higher tier, output included
    ("claude-haiku-5-5", Usage(input_tokens=100_001, output_tokens=1000), False, "0.0525005"),
    ("claude-haiku-5-5", Usage(input_tokens=100_001, output_tokens=1000), True, "0.02625025"),
    # exactly at the threshold is not above it
    ("claude-haiku-5-5", Usage(input_tokens=100_000, output_tokens=1000), False, "0.0105"),
    # cache writes and reads count toward the threshold: 1000 + 20000 + 30000 + 60000 = 111,000
    (
        "claude-haiku-5-5",
        Usage(
            input_tokens=1000,
            cache_write_5m_tokens=20_000,
            cache_write_1h_tokens=30_000,
            cache_read_tokens=60_000,
            output_tokens=2000,
        ),
        False,
        "0.051",
    ),
    (
        "claude-sonnet-4-5",
        Usage(input_tokens=150_000, cache_read_tokens=60_000, output_tokens=1000),
        False,
        "0.9585",
    ),
    # a model without a long-context tier stays at its standard rates
    (
        "claude-sonnet-4-6",
        Usage(input_tokens=150_000, cache_read_tokens=60_000, output_tokens=1000),
        False,
        "0.483",
    ),
]


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.from_dict(
        json.loads(resources.files("claude_force").joinpath("pricing.json").read_text())
    )


@pytest.mark.parametrize(("model", "usage", "batch", "expected"), COST_CASES)
def test_cost_matches_hand_computed_value(
    table: PriceTable, model: str, usage: Usage, batch: bool, expected: str
) -> None:
    assert table.cost(model, usage, batch=batch) == Decimal(expected)


def test_breakdown_per_kind(table: PriceTable) -> None:
    b = table.cost_breakdown("claude-sonnet-4-5", MIXED)
    assert b is not None
    assert (b.input, b.cache_write_5m, b.cache_write_1h, b.cache_read, b.output) == (
        Decimal("0.0009"),
        Decimal("0.00375"),
        Decimal("0.012"),
        Decimal("0.015"),
        Decimal("0.012"),
    )
    assert not b.long_context and not b.batch
    assert b.as_dict()["total"] == "0.04365"


# Web search is $10 per 1,000 searches on every model, on top of tokens, never batch-discounted.
SEARCH_CASES = [
    ("claude-sonnet-4-5", Usage(web_search_requests=1), False, "0.01"),
    ("claude-haiku-4-5", Usage(web_search_requests=1000), False, "10"),
    # 1000 x 3 + 500 x 15 per million = 0.0105, plus 3 searches at 0.01
    ("claude-sonnet-4-5", Usage(**PLAIN_COUNTS, web_search_requests=3), False, "0.0405"),
    # batch: tokens at half price (0.00525), searches at full price
    ("claude-sonnet-4-5", Usage(**PLAIN_COUNTS, web_search_requests=3), True, "0.03525"),
    ("claude-sonnet-4-5", Usage(**PLAIN_COUNTS), False, "0.0105"),
]


@pytest.mark.parametrize(("model", "usage", "batch", "expected"), SEARCH_CASES)
def test_web_searches_are_priced_per_request(
    table: PriceTable, model: str, usage: Usage, batch: bool, expected: str
) -> None:
    breakdown = table.cost_breakdown(model, usage, batch=batch)
    assert breakdown is not None
    assert breakdown.total == Decimal(expected)
    assert breakdown.web_search == Decimal(usage.web_search_requests) / 100
    assert breakdown.as_dict()["web_search"] == str(breakdown.web_search)


def test_web_search_without_a_rate_is_unknown_not_free(
    table: PriceTable, caplog: pytest.LogCaptureFixture
) -> None:
    no_rate = PriceTable(models=table.models)
    with caplog.at_level(logging.WARNING, logger="claude_force.pricing"):
        assert no_rate.cost("claude-sonnet-4-5", Usage(web_search_requests=1)) is None
        assert no_rate.cost("claude-sonnet-4-5", Usage(web_search_requests=2)) is None
        assert no_rate.cost("claude-sonnet-4-5", PLAIN) == Decimal("0.0105")  # tokens still priced
    (message,) = [r.getMessage() for r in caplog.records]
    assert "server_tool_use.web_search_requests" in message and "not $0" in message


def test_web_search_rate_can_be_overridden(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.json", {"server_tool_use": {"web_search_requests": "5"}})
    table = PriceTable.load(path)
    assert table.server_tool_use == {"web_search_requests": Decimal("5")}
    assert table.cost("claude-haiku-4-5", Usage(web_search_requests=2)) == Decimal("0.01")


def test_breakdown_flags_long_context(table: PriceTable) -> None:
    b = table.cost_breakdown("claude-haiku-5-5", Usage(input_tokens=100_001), batch=True)
    assert b is not None and b.long_context and b.batch


@pytest.mark.parametrize(
    ("model", "usage", "expected"),
    [
        ("claude-sonnet-4-5", READ, "0.027"),  # 10000 x (3 - 0.30)
        ("claude-fable-5-1", READ, "0.0975"),  # 10000 x (10 - 0.25)
        ("claude-opus-5-5", MIXED, "0.19"),  # 50000 x (4 - 0.20); writes are not subtracted
        ("claude-haiku-4-5", PLAIN, "0"),  # no reads, nothing saved
        (
            "claude-haiku-5-5",  # long-context tier: 60000 x (0.50 - 0.05)
            Usage(input_tokens=51_000, cache_read_tokens=60_000),
            "0.027",
        ),
    ],
)
def test_prompt_cache_savings(table: PriceTable, model: str, usage: Usage, expected: str) -> None:
    assert table.prompt_cache_savings(model, usage) == Decimal(expected)


def test_response_cache_savings_is_the_original_cost(table: PriceTable) -> None:
    assert table.response_cache_savings("claude-opus-4-6", PLAIN) == Decimal("0.0175")


def test_every_sdk_model_is_priced_or_explicitly_unpriced(table: PriceTable) -> None:
    literal = next(a for a in typing.get_args(ModelParam) if typing.get_origin(a) is typing.Literal)
    missing = [m for m in typing.get_args(literal) if table.resolve(m) is None]
    assert missing == [], f"add these SDK models to pricing.json (models or unpriced): {missing}"


def test_unpriced_models_have_reasons_and_no_cost(table: PriceTable) -> None:
    assert table.unpriced, "expected at least one explicitly unpriced model"
    for model, reason in table.unpriced.items():
        assert reason.strip()
        assert table.cost(model, PLAIN) is None
        assert not table.is_priced(model)
        assert table.unpriced_reason(model) == reason


def test_packaged_file_has_no_json_floats() -> None:
    def refuse(text: str) -> Any:
        raise AssertionError(f"float {text} in pricing.json; write prices as strings")

    json.loads(
        resources.files("claude_force").joinpath("pricing.json").read_text(), parse_float=refuse
    )


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-7-20260301", "claude-opus-4-7"),  # any dated suffix of a known id
        ("claude-haiku-4-5", "claude-haiku-4-5"),
        ("claude-mythos-5-2", "claude-mythos-5-2"),  # known, unpriced
        ("claude-opus-4-9", None),  # no prefix guessing
        ("claude-opus-4-9-20260101", None),
        ("gpt-5", None),
        ("claude-haiku-4-5-2025", None),  # not an 8-digit date
    ],
)
def test_resolve(table: PriceTable, given: str, canonical: str | None) -> None:
    assert table.resolve(given) == canonical


def test_dated_id_costs_the_same_as_its_model(table: PriceTable) -> None:
    assert table.cost("claude-haiku-4-5-20251001", PLAIN) == Decimal("0.0035")


def test_unknown_model_is_none_and_warns_once(
    table: PriceTable, caplog: pytest.LogCaptureFixture
) -> None:
    fresh = PriceTable(models=table.models, unpriced=table.unpriced)
    with caplog.at_level(logging.WARNING, logger="claude_force.pricing"):
        assert fresh.cost("claude-unknown-9", PLAIN) is None
        assert fresh.cost("claude-unknown-9", PLAIN) is None
        assert fresh.price("claude-unknown-9") is None
        assert fresh.cost("claude-mythos-5-2", PLAIN) is None
    messages = [r.getMessage() for r in caplog.records]
    assert sum("claude-unknown-9" in m for m in messages) == 1
    assert sum("claude-mythos-5-2" in m for m in messages) == 1
    assert all("not $0" in m for m in messages)


def test_round_usd_is_for_display() -> None:
    assert round_usd(Decimal("0.0000005")) == Decimal("0.000001")
    assert round_usd(Decimal("0.02625025")) == Decimal("0.026250")
    assert str(round_usd(Decimal("1"))) == "1.000000"


# -- loading and overrides ---------------------------------------------------------------------

SONNET_OVERRIDE = {
    "input": "30",
    "output": "150",
    "cache_write_5m": "37.5",
    "cache_write_1h": "60",
    "cache_read": "3",
    "batch_discount": "0.5",
}


def _write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_env_file_overrides_and_extends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {
        "models": {"claude-sonnet-4-5": SONNET_OVERRIDE, "claude-mythos-5-2": SONNET_OVERRIDE},
        "aliases": {"house-model": "claude-sonnet-4-5"},
        "unpriced": {"claude-haiku-4-5": "negotiated, not public"},
    }
    monkeypatch.setenv(PRICING_ENV_VAR, str(_write(tmp_path / "p.json", doc)))
    t = PriceTable.load()
    assert t.cost("claude-sonnet-4-5", PLAIN) == Decimal("0.105")  # 1000x30 + 500x150
    assert t.cost("house-model", PLAIN) == Decimal("0.105")
    assert t.is_priced("claude-mythos-5-2") and "claude-mythos-5-2" not in t.unpriced
    assert t.cost("claude-haiku-4-5", PLAIN) is None
    assert t.cost("claude-opus-4-6", PLAIN) == Decimal("0.0175")  # untouched entries stay


def test_path_argument_wins_over_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PRICING_ENV_VAR, str(tmp_path / "does-not-exist.json"))
    path = _write(tmp_path / "p.json", {"models": {"claude-sonnet-4-5": SONNET_OVERRIDE}})
    assert PriceTable.load(path).cost("claude-sonnet-4-5", PLAIN) == Decimal("0.105")


def test_without_override_packaged_prices_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PRICING_ENV_VAR, raising=False)
    assert PriceTable.load().cost("claude-opus-4-5", PLAIN) == Decimal("0.0175")


def test_missing_env_file_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PRICING_ENV_VAR, str(tmp_path / "nope.json"))
    with pytest.raises(ConfigError, match=r"nope\.json.*CLAUDE_FORCE_PRICING"):
        PriceTable.load()


@pytest.mark.parametrize(
    ("doc", "json_path"),
    [
        ({"models": {"m": {**SONNET_OVERRIDE, "input": 3.0}}}, "$.models.m.input"),
        ({"models": {"m": {**SONNET_OVERRIDE, "output": "abc"}}}, "$.models.m.output"),
        ({"models": {"m": {**SONNET_OVERRIDE, "cache_read": "-1"}}}, "$.models.m.cache_read"),
        ({"models": {"m": {**SONNET_OVERRIDE, "cache_read": "NaN"}}}, "$.models.m.cache_read"),
        (
            {"models": {"m": {**SONNET_OVERRIDE, "batch_discount": "1"}}},
            "$.models.m.batch_discount",
        ),
        ({"models": {"m": {**SONNET_OVERRIDE, "cache_write5m": "1"}}}, "$.models.m.cache_write5m"),
        ({"models": {"m": {k: v for k, v in SONNET_OVERRIDE.items() if k != "input"}}}, "input"),
        (
            {"models": {"m": {**SONNET_OVERRIDE, "long_context": {**SONNET_OVERRIDE}}}},
            "$.models.m.long_context.threshold_input_tokens",
        ),
        (
            {"models": {"m": {**SONNET_OVERRIDE, "long_context": {"threshold_input_tokens": 5}}}},
            "$.models.m.long_context.input",
        ),
        ({"models": []}, "$.models"),
        ({"aliases": {"a": 1}}, "$.aliases.a"),
        ({"modles": {}}, "$.modles"),
        ({"aliases": {"a": "no-such-model"}}, "$.aliases.a"),
        ({"models": {"m": SONNET_OVERRIDE}, "unpriced": {"m": "why"}}, "$.unpriced.m"),
        ({"server_tool_use": []}, "$.server_tool_use"),
        (
            {"server_tool_use": {"web_search_requests": 10}},
            "$.server_tool_use.web_search_requests",
        ),
        ({"server_tool_use": {"web_search_requests": "-1"}}, "web_search_requests"),
        ({"server_tool_use": {"web_searches": "10"}}, "$.server_tool_use.web_searches"),
    ],
)
def test_malformed_file_names_file_and_json_path(
    tmp_path: Path, doc: object, json_path: str
) -> None:
    path = _write(tmp_path / "bad.json", doc)
    with pytest.raises(ConfigError) as info:
        PriceTable.load(path)
    assert "bad.json" in str(info.value)
    assert any(json_path in p for p in info.value.problems), info.value.problems


def test_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "models": {,}\n}', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.json.*line 2"):
        PriceTable.load(path)


def test_comment_keys_are_ignored(tmp_path: Path) -> None:
    doc = {"_note": "x", "models": {"_c": "x", "m": {**SONNET_OVERRIDE, "_src": "contract"}}}
    assert PriceTable.load(_write(tmp_path / "p.json", doc)).is_priced("m")
