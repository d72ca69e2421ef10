from __future__ import annotations

import socket
import threading
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from claude_force import serve_ledger_metrics
from claude_force._errors import InvalidArgumentError
from claude_force._ledger import Ledger, LedgerRow
from claude_force._metrics import (
    CALL_BATCH,
    HIT_BATCH,
    MODEL_LABELS,
    OTHER_MODEL,
    Metrics,
    metrics_from_rows,
)
from claude_force._pricing import PriceTable
from claude_force._reports import UsageReports
from claude_force._usage import Usage


def _observe_some(m: Metrics) -> None:
    m.observe_call(
        agent="reviewer",
        model="claude-haiku-4-5",
        outcome="success",
        usage=Usage(input_tokens=100, output_tokens=20, cache_read_tokens=1000),
        cost=Decimal("0.0025"),
        latency_s=1.5,
        cached=False,
        retries=2,
    )
    m.observe_call(
        agent="reviewer",
        model="claude-haiku-4-5",
        outcome="success",
        usage=Usage(input_tokens=100, output_tokens=20, cache_read_tokens=1000),
        cost=Decimal(0),
        latency_s=0.01,
        cached=True,
    )
    m.observe_call(
        agent="writer",
        model="claude-sonnet-4-5",
        outcome="error",
        usage=None,
        cost=None,
        latency_s=30.0,
        cached=False,
        retries=1,
    )
    m.observe_call(
        agent="writer",
        model="claude-mythos-5-2",
        outcome="success",
        usage=Usage(input_tokens=5, output_tokens=5),
        cost=None,
        latency_s=2.0,
        cached=False,
    )


def _fetch(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as resp:
        assert resp.status == 200
        body: bytes = resp.read()
    return body.decode()


def test_metrics_served_over_loopback_http() -> None:
    m = Metrics()
    server, thread = m.serve(0)
    try:
        _observe_some(m)
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        text = _fetch(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    lines = set(text.splitlines())
    rv = {"agent": "reviewer", "model": "claude-haiku-4-5"}
    wr = {"agent": "writer", "model": "claude-sonnet-4-5"}
    expected = {
        _sample("claude_force_requests_total", "2.0", **rv, outcome="success"),
        _sample("claude_force_requests_total", "1.0", **wr, outcome="error"),
        _sample("claude_force_tokens_total", "200.0", **rv, kind="input"),
        _sample("claude_force_tokens_total", "2000.0", **rv, kind="cache_read"),
        _sample("claude_force_cost_usd_total", "0.0025", **rv),
        _sample(
            "claude_force_unpriced_requests_total", "1.0", agent="writer", model="claude-mythos-5-2"
        ),
        _sample("claude_force_cache_total", "1.0", result="hit"),
        _sample("claude_force_cache_total", "3.0", result="miss"),
        _sample("claude_force_retries_total", "2.0", **rv),
        _sample("claude_force_retries_total", "1.0", **wr),
        _sample("claude_force_request_latency_seconds_count", "2.0", **rv),
        _sample("claude_force_request_latency_seconds_bucket", "0.0", **wr, le="20.0"),
        _sample("claude_force_request_latency_seconds_bucket", "1.0", **wr, le="30.0"),
    }
    missing = expected - {_normalise(x) for x in lines}
    assert not missing, missing
    # a failed call with no usage is neither priced nor "unpriced"
    assert 'model="claude-sonnet-4-5"' not in "".join(
        x for x in lines if x.startswith("claude_force_unpriced_requests_total")
    )


def _sample(name: str, value: str, **labels: str) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}} {value}"


def _normalise(line: str) -> str:
    """Compare sample lines regardless of label order."""
    if "{" not in line:
        return line
    name, rest = line.split("{", 1)
    labels, value = rest.rsplit("} ", 1)
    return f"{name}{{{','.join(sorted(labels.split(',')))}}} {value}"


def test_each_instance_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    _observe_some(a)
    assert b"claude_force_requests_total{" in a.render()
    assert b"claude_force_requests_total{" not in b.render()


def test_accepts_a_given_registry() -> None:
    reg = CollectorRegistry()
    m = Metrics(reg)
    _observe_some(m)
    assert (
        reg.get_sample_value(
            "claude_force_tokens_total",
            {"agent": "reviewer", "model": "claude-haiku-4-5", "kind": "output"},
        )
        == 40.0
    )
    assert (
        reg.get_sample_value(
            "claude_force_cost_usd_total", {"agent": "writer", "model": "claude-mythos-5-2"}
        )
        is None
    )


def test_web_searches_are_counted_per_tool() -> None:
    m = Metrics()
    usage = Usage(input_tokens=10, output_tokens=5, web_search_requests=3)
    for _ in range(2):
        m.observe_call(
            agent="researcher",
            model="claude-haiku-4-5",
            outcome="success",
            usage=usage,
            cost=Decimal("0.03"),
            latency_s=1.0,
            cached=False,
        )
    labels = {"agent": "researcher", "model": "claude-haiku-4-5", "tool": "web_search"}
    value = m.registry.get_sample_value("claude_force_server_tool_requests_total", labels)
    assert value == 6.0


def test_a_busy_port_is_a_usage_error_naming_it_and_the_fix(tmp_path: Path) -> None:
    reports = UsageReports(tmp_path / "usage.db", prices=PriceTable.load())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for serve in (Metrics().serve, lambda p: serve_ledger_metrics(reports, p)):
            with pytest.raises(InvalidArgumentError) as info:
                serve(port)
            message = str(info.value)
            assert f"127.0.0.1:{port}" in message and "already in use" in message
            assert "--port 0" in message
            assert isinstance(info.value.__cause__, OSError)


@pytest.mark.parametrize(
    ("port", "addr", "expected"),
    [
        (0, "192.0.2.1", "not an address of this machine"),  # TEST-NET-1: never local
        (70_000, "127.0.0.1", "ports run from 0 to 65535"),
    ],
)
def test_unusable_address_or_port_is_a_usage_error(port: int, addr: str, expected: str) -> None:
    with pytest.raises(InvalidArgumentError, match=expected):
        Metrics().serve(port, addr)


def test_ledger_metrics_served_from_usage_reports(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    with Ledger(path) as led:
        led.record(LedgerRow(agent="a", model="claude-haiku-4-5", web_search_requests=2))
    reports = UsageReports(path, prices=PriceTable.load())
    server, thread = serve_ledger_metrics(reports, 0)
    try:
        text = _fetch(f"http://127.0.0.1:{server.server_address[1]}/metrics")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    expected = _sample(
        "claude_force_server_tool_requests_total",
        "2.0",
        agent="a",
        model="claude-haiku-4-5",
        tool="web_search",
    )
    assert expected in {_normalise(x) for x in text.splitlines()}


def _without_created(metrics: Metrics) -> list[str]:
    return [line for line in metrics.render().decode().splitlines() if "_created{" not in line]


@pytest.mark.parametrize("nan", [[], [float("nan")]], ids=["numbers", "with NaN"])
def test_hits_added_in_a_batch_equal_hits_observed_one_by_one(nan: list[float]) -> None:
    # Bounds themselves, between them, beyond the last one, zero, unsorted, and NaN (counted
    # in no bucket, as Prometheus' observe does).
    latencies = [0.1, 0.1, 0.25, 0.3, 0.0, 600.0, 601.0, 2.5, 0.05, *nan, 0.1, 1e-9, 30.0]
    batched, single = Metrics(), Metrics()
    for seconds in latencies * 3:
        batched.observe_hit(agent="a", model="m", latency_s=seconds)
        single.observe_call(
            agent="a",
            model="m",
            outcome="success",
            usage=Usage(),
            cost=Decimal(0),
            latency_s=seconds,
            cached=True,
        )
    assert _without_created(batched) == _without_created(single)


def test_hits_from_several_threads_are_all_counted() -> None:
    metrics = Metrics()
    per_thread = 3 * HIT_BATCH + 5

    def hit(agent: str) -> None:
        for _ in range(per_thread):
            metrics.observe_hit(agent=agent, model="m", latency_s=0.01)

    threads = [threading.Thread(target=hit, args=(f"a{i % 2}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    text = metrics.render().decode()
    assert f'claude_force_cache_total{{result="hit"}} {float(6 * per_thread)}' in text
    for agent in ("a0", "a1"):
        count = f'claude_force_request_latency_seconds_count{{agent="{agent}",model="m"}}'
        assert f"{count} {float(3 * per_thread)}" in text


def test_every_token_kind_is_exported_once_a_call_has_usage() -> None:
    metrics = Metrics()
    for _ in range(2):
        metrics.observe_call(
            agent="a",
            model="m",
            outcome="success",
            usage=Usage(input_tokens=7),
            cost=None,
            latency_s=0.5,
            cached=False,
        )
    text = metrics.render().decode()
    series = 'claude_force_tokens_total{agent="a",kind="%s",model="m"}'
    assert f"{series % 'input'} 14.0" in text
    for kind in ("output", "cache_write_5m", "cache_write_1h", "cache_read"):
        assert f"{series % kind} 0.0" in text


def _observe_mixed(metrics: Metrics, i: int) -> None:
    """Call ``i`` of a mixed run: two agents, retries, errors, unpriced and cached calls."""
    metrics.observe_call(
        agent=("a", "b")[i % 2],
        model="m",
        outcome="error" if i % 11 == 0 else "success",
        usage=None if i % 13 == 0 else Usage(input_tokens=i, output_tokens=i % 9),
        cost=None if i % 17 == 0 else Decimal(i) / 3_000_000,
        latency_s=i / 3,
        cached=i % 7 == 0,
        retries=i % 3 // 2,
    )


def test_calls_added_in_batches_equal_calls_added_one_by_one() -> None:
    # Rendering after every call adds each at once; the float sums (cost, latency) must
    # come out the same, so values are added in the order observed.
    batched, single = Metrics(), Metrics()
    for i in range(2 * CALL_BATCH + 9):
        _observe_mixed(batched, i)
        _observe_mixed(single, i)
        single.render()
    assert _without_created(batched) == _without_created(single)


def test_calls_from_several_threads_are_all_counted() -> None:
    metrics = Metrics()
    per_thread = 2 * CALL_BATCH + 3

    def call(agent: str) -> None:
        for _ in range(per_thread):
            metrics.observe_call(
                agent=agent,
                model="m",
                outcome="success",
                usage=Usage(input_tokens=2),
                cost=Decimal("0.5"),
                latency_s=0.25,
                cached=False,
            )

    threads = [threading.Thread(target=call, args=(f"a{i % 2}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reg = metrics.registry
    for agent in ("a0", "a1"):
        labels = {"agent": agent, "model": "m"}
        assert reg.get_sample_value("claude_force_cost_usd_total", labels) == 1.5 * per_thread
        tokens = reg.get_sample_value("claude_force_tokens_total", {**labels, "kind": "input"})
        assert tokens == 6 * per_thread
    assert reg.get_sample_value("claude_force_cache_total", {"result": "miss"}) == 6 * per_thread


def test_model_names_past_the_cap_count_under_other() -> None:
    # The model label is what each answer names: a server naming every answer anew made a
    # set of series per answer, held for the life of the process.
    metrics = Metrics()
    names = [f"model-{i}" for i in range(MODEL_LABELS + 40)]
    for name in names:
        for cached in (False, True):
            metrics.observe_call(
                agent="a",
                model=name,
                outcome="success",
                usage=Usage(input_tokens=3),
                cost=Decimal("0.25"),
                latency_s=0.5,
                cached=cached,
            )
        metrics.observe_hit(agent="a", model=name, latency_s=0.01)
        metrics.observe_hit(agent="a", model=name, latency_s=0.01)
    reg = metrics.registry
    labelled = {
        s.labels["model"] for family in reg.collect() for s in family.samples if "model" in s.labels
    }
    assert labelled == {*names[:MODEL_LABELS], OTHER_MODEL}
    other = {"agent": "a", "model": OTHER_MODEL}
    assert (
        reg.get_sample_value("claude_force_requests_total", {**other, "outcome": "success"})
        == 40 * 4
    )
    assert reg.get_sample_value("claude_force_cost_usd_total", other) == 40 * 0.5
    first = {"agent": "a", "model": names[0]}
    assert reg.get_sample_value("claude_force_requests_total", {**first, "outcome": "success"}) == 4
    assert len(metrics._hits) == MODEL_LABELS and len(metrics._shapes) <= 2 * (MODEL_LABELS + 1)


def test_metrics_from_the_ledger_label_every_model() -> None:
    # Rebuilt at each scrape: a cap by the rows' order moved a model to "other" between
    # scrapes when a row with an earlier time was written late.
    rows = [
        LedgerRow(
            agent="a",
            model=f"model-{i}",
            ts=float(i),
            input_tokens=1,
            cost_usd=Decimal("0.01"),
            latency_ms=5.0,
        )
        for i in range(MODEL_LABELS + 5)
    ]
    reg = metrics_from_rows(rows).registry
    for i in range(MODEL_LABELS + 5):
        labels = {"agent": "a", "model": f"model-{i}", "outcome": "success"}
        assert reg.get_sample_value("claude_force_requests_total", labels) == 1
