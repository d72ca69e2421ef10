"""Cost truth end to end: prompt caching, the ledger, reports, budgets and the metrics endpoint."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from claude_force import AsyncAgentOrchestrator, Budget, BudgetExceeded
from claude_force.cli import cli
from claude_force.cli._common import run_guarded
from claude_force.testing import Simulator

from .conftest import API_KEY

# Long enough to pass the simulator's 1024-token minimum cacheable prefix (4 chars a token).
STYLE_GUIDE = "\n".join(
    f"Rule {i}: prefer small, well-named functions and explain why in comments." for i in range(80)
)


def _long_prompts(project: Path) -> None:
    for agent in (project.parent / "agents").glob("*.md"):
        agent.write_text(agent.read_text(encoding="utf-8") + "\n\n" + STYLE_GUIDE, encoding="utf-8")


def make(project: Path, sim: Simulator, **kw: object) -> AsyncAgentOrchestrator:
    kw.setdefault("enable_cache", False)
    return AsyncAgentOrchestrator(project, api_key=API_KEY, base_url=sim.base_url, **kw)  # type: ignore[arg-type]


def cli_run(*argv: str) -> int:
    return run_guarded(cli, list(argv))


def test_cost_matches_hand_computed_price(project: Path, sim: Simulator) -> None:
    async def go() -> Mapping[str, Any]:
        async with make(project, sim) as orch:
            r = await orch.execute_agent("code-reviewer", "Review a.py", model="claude-haiku-4-5")
            return r.metadata

    import asyncio

    meta = asyncio.run(go())
    # claude-haiku-4-5: $1 input, $5 output per million tokens.
    expected = (
        Decimal(meta["input_tokens"]) * Decimal("1") / 10**6
        + Decimal(meta["output_tokens"]) * Decimal("5") / 10**6
    )
    assert meta["estimated_cost"] == expected
    assert isinstance(meta["estimated_cost"], Decimal)


async def test_unknown_model_is_unpriced_not_free(
    project: Path, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    async with make(project, sim) as orch:
        r = await orch.execute_agent("code-reviewer", "x", model="claude-future-9")
        assert r.success
        assert r.metadata["estimated_cost"] is None
        rows = orch.usage_rows()
    assert rows[-1].cost_usd is None
    assert "claude-future-9" in caplog.text


def test_prompt_cache_reads_on_second_run_lower_cost_in_metrics(
    project: Path,
    sim: Simulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _long_prompts(project)
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", sim.base_url)
    runs = []
    # Two different tasks: the response cache misses, the shared system prompts hit the
    # prompt cache.
    for task in ("Ship the retry helper", "Ship the rate limiter"):
        assert cli_run("workflow", "ship", task, "--json", "-c", str(project)) == 0
        runs.append(json.loads(capsys.readouterr().out))
    first, second = runs
    assert all(
        s["metadata"]["cache_creation"]["ephemeral_5m_input_tokens"] > 0 for s in first["steps"]
    )
    assert all(s["metadata"]["cache_read_input_tokens"] > 0 for s in second["steps"])
    assert Decimal(second["total_cost"]) < Decimal(first["total_cost"])

    assert cli_run("metrics", "runs", "--json", "-c", str(project)) == 0
    per_run = json.loads(capsys.readouterr().out)
    costs = [Decimal(r["cost_usd"]) for r in per_run.values()]
    assert costs == [Decimal(first["total_cost"]), Decimal(second["total_cost"])]
    assert costs[1] < costs[0]

    assert cli_run("metrics", "--json", "-c", str(project)) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["calls"] == 6
    assert Decimal(report["saved_by_prompt_cache_usd"]) > 0
    assert report["tokens"]["cache_read"] > 0
    assert cli_run("metrics", "-c", str(project)) == 0
    assert "Saved by prompt caching" in capsys.readouterr().out


async def test_budget_stops_workflow_before_crossing(project: Path, sim: Simulator) -> None:
    # Worst case of code-reviewer (4,096 output tokens at $10/M on claude-sonnet-5-5) fits in
    # $0.05; test-writer's (8,192 output tokens) no longer does after it.
    async with make(project, sim) as orch:
        result = await orch.run_workflow("ship", "Ship it", budget=Budget(max_cost_usd="0.05"))
    assert not result.success
    assert result.error is not None and "budget" in result.error.lower()
    failed = [s for s in result.steps if not s.success]
    assert [s.agent_name for s in failed] == ["test-writer"]
    assert failed[0].metadata["error"]["type"] == "budget_exceeded"
    assert "0.05" in failed[0].errors[0]
    sent_prompts = [r.body["system"][0]["text"] for r in sim.message_requests]
    writer = (project.parent / "agents" / "test-writer.md").read_text(encoding="utf-8").strip()
    assert len(sent_prompts) == 2
    assert not any(writer[:100] in p for p in sent_prompts)


async def test_call_budget_raises_with_what_was_spent(project: Path, sim: Simulator) -> None:
    async with make(project, sim, budget=Budget(max_requests=1)) as orch:
        assert (await orch.execute_agent("code-reviewer", "one")).success
        with pytest.raises(BudgetExceeded) as info:
            await orch.execute_agent("code-reviewer", "two")
    assert info.value.spent["requests"] == 1
    assert len(sim.message_requests) == 1


async def test_retries_count_once_in_budget_and_ledger(project: Path, sim: Simulator) -> None:
    from claude_force.testing import Fault

    async def no_wait(_: float) -> None:
        return None

    sim.script(Fault.status(529), Fault.status(500), None)
    async with make(project, sim, budget=Budget(max_requests=5), sleep=no_wait) as orch:
        r = await orch.execute_agent("code-reviewer", "t")
        assert r.metadata["attempts"] == 3
        assert orch.budget is not None and orch.budget.spent["requests"] == 1
        rows = orch.usage_rows()
    assert len(rows) == 1 and rows[0].attempts == 3


async def test_ledger_rows_complete_and_private(project: Path, sim: Simulator) -> None:
    task = "Review the secret roadmap in plans.md"
    async with make(project, sim) as orch:
        flow = await orch.run_workflow("ship", task)
        ledger_path = orch.ledger_path
        rows = orch.usage_rows()
    assert flow.success
    assert len(rows) == 3
    assert {r.workflow_run for r in rows} == {flow.run_id}
    assert sorted(r.workflow_step for r in rows if r.workflow_step is not None) == [0, 1, 2]
    assert all(r.message_id and r.request_id and r.cost_usd is not None for r in rows)
    raw = ledger_path.read_bytes() + b"".join(
        p.read_bytes() for p in ledger_path.parent.glob("usage.db*") if p != ledger_path
    )
    assert task.encode() not in raw
    assert API_KEY.encode() not in raw
    assert (ledger_path.parent / ".gitignore").read_text(encoding="utf-8").endswith("*\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_endpoint_after_demo_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_run("demo", "--dir", str(tmp_path), "--latency-ms", "0", "--no-live") == 0
    capsys.readouterr()
    port = _free_port()
    config = tmp_path / ".claude" / "claude.json"
    cmd = [sys.executable, "-m", "claude_force.cli", "metrics", "serve", "--port", str(port)]
    with subprocess.Popen(
        [*cmd, "-c", str(config)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            proc.stdout.readline()  # printed once the server is listening
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                body = resp.read().decode()
        finally:
            proc.terminate()
    assert 'claude_force_requests_total{agent="code-reviewer"' in body
    assert 'outcome="success"' in body
    assert "claude_force_tokens_total" in body and 'kind="output"' in body
    assert "claude_force_cost_usd_total" in body
    assert "claude_force_request_latency_seconds_bucket" in body
    assert 'claude_force_cache_total{result="miss"} 3.0' in body
    assert 'claude_force_cache_total{result="hit"} 3.0' in body
