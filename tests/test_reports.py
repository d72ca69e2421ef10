from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from claude_force._errors import InvalidArgumentError
from claude_force._ledger import Ledger, LedgerRow
from claude_force._pricing import PriceTable
from claude_force._reports import (
    EMPTY_MESSAGE,
    Report,
    UsageReports,
    by_agent,
    by_model,
    export_csv,
    export_json,
    parse_since,
    percentile,
    render_breakdown,
    render_text,
    summary,
)
from claude_force._usage import Usage

ROWS = [
    LedgerRow(
        ts=100.0,
        agent="reviewer",
        model="claude-sonnet-4-5",
        message_id="msg_a",
        input_tokens=1000,
        output_tokens=500,
        cache_read_tokens=10_000,
        cost_usd=Decimal("0.0135"),
        latency_ms=1000.0,
    ),
    # a response-cache hit replaying msg_a: free, and its tokens were not consumed again
    LedgerRow(
        ts=200.0,
        agent="reviewer",
        model="claude-sonnet-4-5",
        message_id="msg_a",
        input_tokens=1000,
        output_tokens=500,
        cache_read_tokens=10_000,
        cost_usd=Decimal(0),
        cost_saved_usd=Decimal("0.0135"),
        latency_ms=10.0,
        cached=True,
    ),
    LedgerRow(
        ts=300.0,
        agent="writer",
        model="claude-haiku-4-5",
        outcome="error",
        error_type="overloaded_error",
        attempts=5,
        latency_ms=30_000.0,
    ),
    LedgerRow(
        ts=400.0,
        agent="writer",
        model="claude-mythos-5-2",
        input_tokens=5,
        output_tokens=5,
        cost_usd=None,
        latency_ms=2000.0,
    ),
    LedgerRow(
        ts=500.0,
        agent="writer",
        model="claude-haiku-4-5",
        input_tokens=200,
        output_tokens=100,
        cache_write_5m_tokens=300,
        cache_write_1h_tokens=400,
        cache_read_tokens=2000,
        cost_usd=Decimal("0.5"),
        latency_ms=500.0,
    ),
]


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return PriceTable.load()


def test_summary_totals(prices: PriceTable) -> None:
    r = summary(ROWS, price_table=prices)
    assert (r.calls, r.successes, r.errors, r.success_rate) == (5, 4, 1, 0.8)
    assert r.tokens == Usage(
        input_tokens=1205,
        output_tokens=605,
        cache_write_5m_tokens=300,
        cache_write_1h_tokens=400,
        cache_read_tokens=12_000,
    )
    assert r.cost_usd == Decimal("0.5135")
    assert r.unpriced_calls == 1
    assert r.saved_by_response_cache_usd == Decimal("0.0135")
    # sonnet-4-5: 10,000 x (3 - 0.30) = 0.027; haiku-4-5: 2,000 x (1 - 0.10) = 0.0018
    assert r.saved_by_prompt_cache_usd == Decimal("0.0288")
    assert r.saved_usd == Decimal("0.0423")
    assert (r.cache_hits, r.cache_hit_rate) == (1, 0.2)
    assert (r.latency_p50_ms, r.latency_p95_ms) == (1000.0, 30_000.0)
    assert (r.upstream_latency_p50_ms, r.upstream_latency_p95_ms) == (1000.0, 30_000.0)
    assert (r.first_ts, r.last_ts) == (100.0, 500.0)


def test_upstream_latency_excludes_cache_hits(prices: PriceTable) -> None:
    r = summary([ROWS[0], ROWS[1]], price_table=prices)
    assert r.latency_p50_ms == 10.0  # nearest rank of [10, 1000]
    assert r.upstream_latency_p50_ms == r.upstream_latency_p95_ms == 1000.0


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([], 50, None),
        ([7.0], 95, 7.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([float(v) for v in range(1, 101)], 95, 95.0),
        ([float(v) for v in range(1, 21)], 95, 19.0),
        ([5.0, 1.0, 3.0], 0, 1.0),
        ([5.0, 1.0, 3.0], 100, 5.0),
    ],
)
def test_percentile_nearest_rank(values: list[float], p: float, expected: float | None) -> None:
    assert percentile(values, p) == expected


def test_empty_summary_is_friendly() -> None:
    r = summary([])
    assert r == Report()
    assert r.success_rate is None and r.cache_hit_rate is None
    assert render_text(r) == EMPTY_MESSAGE
    assert "No calls recorded yet" in EMPTY_MESSAGE and "Run an agent" in EMPTY_MESSAGE
    assert render_breakdown({}) == EMPTY_MESSAGE


def test_summary_loads_packaged_prices_when_none_given() -> None:
    assert summary([ROWS[0]]).saved_by_prompt_cache_usd == Decimal("0.027")


def test_by_agent_and_by_model(prices: PriceTable) -> None:
    agents = by_agent(ROWS, price_table=prices)
    assert list(agents) == ["reviewer", "writer"]
    assert (agents["reviewer"].calls, agents["reviewer"].cache_hits) == (2, 1)
    assert agents["reviewer"].cost_usd == Decimal("0.0135")
    assert (agents["writer"].errors, agents["writer"].unpriced_calls) == (1, 1)
    models = by_model(ROWS, price_table=prices)
    assert list(models) == ["claude-haiku-4-5", "claude-mythos-5-2", "claude-sonnet-4-5"]
    assert models["claude-haiku-4-5"].success_rate == 0.5


def test_report_to_dict_is_json_able(prices: PriceTable) -> None:
    data = json.loads(json.dumps(summary(ROWS, price_table=prices).to_dict()))
    assert data["cost_usd"] == "0.5135"
    assert data["saved_by_prompt_cache_usd"] == "0.0288"
    assert data["tokens"]["cache_read"] == 12_000
    assert data["latency_ms"] == {"p50": 1000.0, "p95": 30_000.0}


def test_render_text(prices: PriceTable) -> None:
    text = render_text(summary(ROWS, price_table=prices))
    assert "Cost" in text and "$0.5135" in text and "unpriced" in text
    assert "80.0%" in text and "20.0%  (1 hits)" in text
    assert "1,000 ms / 30,000 ms" in text
    assert "$0.0135" in text and "$0.0288" in text
    assert "1970-01-01 00:01 UTC to 1970-01-01 00:08 UTC" in text


def test_render_breakdown(prices: PriceTable) -> None:
    text = render_breakdown(by_agent(ROWS, price_table=prices), key="agent")
    lines = text.splitlines()
    assert lines[0].split() == ["agent", "calls", "success", "cost", "cache", "hits", "p50", "p95"]
    assert lines[1].split()[:4] == ["reviewer", "2", "100.0%", "$0.0135"]
    assert lines[2].split()[:4] == ["writer", "3", "66.7%", "$0.50*"]
    assert lines[-1].startswith("* includes calls to unpriced models")
    by_m = render_breakdown(by_model(ROWS, price_table=prices), key="model").splitlines()
    assert by_m[2].split()[:4] == ["claude-mythos-5-2", "1", "100.0%", "unknown*"]


def test_export_csv_round_trip() -> None:
    text = export_csv(ROWS)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert len(parsed) == 5
    assert parsed[0]["cost_usd"] == "0.0135" and parsed[0]["cached"] == "false"
    assert parsed[1]["cached"] == "true"
    assert parsed[3]["cost_usd"] == ""  # unknown, not 0
    assert parsed[2]["error_type"] == "overloaded_error"


def test_export_csv_empty_has_header() -> None:
    header = export_csv([]).strip().split(",")
    assert header[:3] == ["agent", "model", "outcome"] and "cost_usd" in header


def test_export_json() -> None:
    data = json.loads(export_json(ROWS))
    assert [d["ts"] for d in data] == [100.0, 200.0, 300.0, 400.0, 500.0]
    assert data[3]["cost_usd"] is None
    assert data[4]["cost_usd"] == "0.5"
    assert json.loads(export_json([])) == []


def test_reports_over_a_real_ledger(tmp_path: Path, prices: PriceTable) -> None:
    with Ledger(tmp_path / "l.db") as led:
        for row in ROWS:
            led.record(row)
        stored = led.rows(since=parse_since("1970-01-01T00:03:20Z"))
    assert summary(stored, price_table=prices).calls == 4


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", NOW - 86_400),
        ("30m", NOW - 1_800),
        ("7d", NOW - 604_800),
        ("2w", NOW - 1_209_600),
        (" 1h ", NOW - 3_600),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp()),
        ("2026-11-01T09:30:00Z", datetime(2026, 11, 1, 9, 30, tzinfo=timezone.utc).timestamp()),
        (
            "2026-11-01T09:30:00+02:00",
            datetime(2026, 11, 1, 7, 30, tzinfo=timezone.utc).timestamp(),
        ),
    ],
)
def test_parse_since(text: str, expected: float) -> None:
    assert parse_since(text, clock=lambda: NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "24", "0h", "-5h", "24x", "2026-13-01"])
def test_parse_since_rejects_with_accepted_forms(text: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        parse_since(text, clock=lambda: NOW)
    msg = str(info.value)
    assert repr(text) in msg and "30m, 24h, 7d" in msg and "2026-11-01" in msg


# -- money: $0 for a failure the service did not bill, None only for an unknown price ---------

HAIKU = "claude-haiku-4-5"


@pytest.mark.parametrize(
    ("row", "cost", "unpriced", "cell"),
    [
        # a failed request the service did not bill: free, and not "unpriced"
        (LedgerRow(agent="a", model=HAIKU, outcome="error", cost_usd=Decimal(0)), "0", 0, "$0.00"),
        # a failure recorded without a cost and without usage is not unpriced either
        (LedgerRow(agent="a", model=HAIKU, outcome="error"), "0", 0, "$0.00"),
        # tokens with no price: unknown
        (LedgerRow(agent="a", model="claude-x", input_tokens=5), "0", 1, "unknown"),
        # web searches alone with no price: unknown too
        (LedgerRow(agent="a", model="claude-x", web_search_requests=1), "0", 1, "unknown"),
        (
            LedgerRow(agent="a", model=HAIKU, web_search_requests=2, cost_usd=Decimal("0.02")),
            "0.02",
            0,
            "$0.02",
        ),
    ],
)
def test_cost_of_one_call(row: LedgerRow, cost: str, unpriced: int, cell: str) -> None:
    report = summary([row])
    assert (report.cost_usd, report.unpriced_calls) == (Decimal(cost), unpriced)
    assert render_breakdown({"a": report}).splitlines()[1].split()[3].rstrip("*") == cell


def test_failed_steps_cost_zero_beside_priced_ones_is_not_unknown() -> None:
    rows = [
        LedgerRow(agent="a", model=HAIKU, input_tokens=1000, cost_usd=Decimal("0.001")),
        LedgerRow(agent="b", model=HAIKU, outcome="error", cost_usd=Decimal(0)),
    ]
    text = render_text(summary(rows))
    assert "$0.001" in text and "unknown" not in text and "unpriced" not in text


def test_web_searches_are_reported() -> None:
    rows = [
        LedgerRow(agent="a", model=HAIKU, web_search_requests=2, cost_usd=Decimal("0.02")),
        LedgerRow(agent="a", model=HAIKU, web_search_requests=3, cost_usd=Decimal("0.03")),
        # a cache hit replays the searches but runs none
        LedgerRow(agent="a", model=HAIKU, web_search_requests=3, cached=True, cost_usd=Decimal(0)),
    ]
    report = summary(rows)
    assert report.tokens.web_search_requests == 5
    assert report.to_dict()["server_tool_use"] == {"web_search_requests": 5}
    assert "Web searches" in render_text(report) and "Web searches" not in render_text(
        summary(ROWS)
    )
    assert "web_search_requests" in export_csv(rows).splitlines()[0]


# -- UsageReports: the reports of one ledger file ---------------------------------------------


def test_usage_reports_flush_the_open_ledger_first(tmp_path: Path, prices: PriceTable) -> None:
    path = tmp_path / "usage.db"
    with Ledger(path, flush_interval=3600, batch_size=1000) as led:
        for row in ROWS:
            led.record(row)  # held in memory: the writer lingers for a full batch
        reports = UsageReports(path, prices=prices, open_ledger=lambda: led)
        assert len(reports.rows()) == 5
        assert reports.summary().cost_usd == Decimal("0.5135")
        assert list(reports.by_agent()) == ["reviewer", "writer"]
        assert "claude-mythos-5-2" in reports.by_model()


def test_usage_reports_since_accepts_epoch_and_text(tmp_path: Path, prices: PriceTable) -> None:
    path = tmp_path / "usage.db"
    with Ledger(path) as led:
        for row in ROWS:
            led.record(row)
    reports = UsageReports(path, prices=prices, clock=lambda: 500.0 + 60)
    assert [r.ts for r in reports.rows(300.0)] == [300.0, 400.0, 500.0]
    assert [r.ts for r in reports.rows("5m")] == [300.0, 400.0, 500.0]  # 560 - 300
    assert reports.summary("1m").calls == 1
    with pytest.raises(InvalidArgumentError, match="yesterday"):
        reports.rows("yesterday")


def test_usage_reports_by_run_and_export(tmp_path: Path, prices: PriceTable) -> None:
    path = tmp_path / "usage.db"
    with Ledger(path) as led:
        for i, run in enumerate(["r2", "r1", "r2"]):
            led.record(LedgerRow(agent="a", model=HAIKU, ts=float(i), workflow_run=run))
        led.record(LedgerRow(agent="solo", model=HAIKU, ts=9.0))
    reports = UsageReports(path, prices=prices)
    runs = reports.by_run()
    assert list(runs) == ["r2", "r1"] and runs["r2"].calls == 2
    assert len(json.loads(reports.export("json"))) == 4
    assert len(list(csv.DictReader(io.StringIO(reports.export("csv", 5.0))))) == 1
    with pytest.raises(InvalidArgumentError, match=r"\['csv', 'json'\].*'xml'"):
        reports.export("xml")


def test_usage_reports_of_a_missing_ledger_are_empty(tmp_path: Path, prices: PriceTable) -> None:
    reports = UsageReports(tmp_path / "data" / "usage.db", prices=prices)
    assert reports.summary() == Report()
    assert reports.by_agent() == {} and reports.by_run() == {}
    assert reports.export("json") == "[]"
    assert not (tmp_path / "data").exists()  # reading creates nothing


def test_usage_reports_of_a_damaged_ledger_warn_and_are_empty(
    tmp_path: Path, prices: PriceTable, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "usage.db"
    path.write_bytes(b"\x00garbage" * 512)
    reports = UsageReports(path, prices=prices)
    assert reports.summary() == Report()
    assert reports.export("csv").count("\n") == 1  # the header only
    messages = [r.getMessage() for r in caplog.records if r.name == "claude_force.ledger"]
    assert len(messages) == 1 and "is damaged" in messages[0] and str(path) in messages[0]


def test_cache_hit_rate_comes_from_the_ledger(tmp_path: Path, prices: PriceTable) -> None:
    path = tmp_path / "usage.db"
    with Ledger(path) as led:
        for row in ROWS:
            led.record(row)
    # what `cache stats` shows: persistent across processes, from the ledger
    report = UsageReports(path, prices=prices).summary()
    assert (report.cache_hits, report.calls, report.cache_hit_rate) == (1, 5, 0.2)
    assert report.saved_by_response_cache_usd == Decimal("0.0135")
