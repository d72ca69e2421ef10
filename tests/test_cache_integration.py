"""The response cache inside the orchestrator: hits, misses, single-flight, CLI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from claude_force import AsyncAgentOrchestrator
from claude_force.cli import cli
from claude_force.cli._common import run_guarded
from claude_force.testing import Fault, Simulator

from .conftest import API_KEY, production_orchestrator


def make(project: Path, sim: Simulator, **kw: Any) -> AsyncAgentOrchestrator:
    kw.setdefault("cache_dir", project.parent.parent / "cache")
    return AsyncAgentOrchestrator(project, api_key=API_KEY, base_url=sim.base_url, **kw)


def test_production_snippet_second_call_cached_edit_misses(
    project: Path, production_env: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project.parent.parent)
    sim = production_env

    async def main() -> list[Mapping[str, Any]]:
        orchestrator = production_orchestrator()
        async with orchestrator:
            first = await orchestrator.execute_agent("code-reviewer", "Review auth.py")
            second = await orchestrator.execute_agent("code-reviewer", "Review auth.py")
            agent_file = Path(".claude/agents/code-reviewer.md")
            agent_file.write_text(agent_file.read_text() + "\nAlso check logging.\n")
            third = await orchestrator.execute_agent("code-reviewer", "Review auth.py")
            rows = orchestrator.usage_rows()
        assert [r.cached for r in rows] == [False, True, False]
        return [first.metadata, second.metadata, third.metadata]

    first, second, third = asyncio.run(main())
    assert (first["cached"], second["cached"], third["cached"]) == (False, True, False)
    assert len(sim.message_requests) == 2
    assert second["estimated_cost"] == Decimal(0)
    assert second["cost_saved"] == first["estimated_cost"] > 0
    assert second["cache_age_seconds"] >= 0
    assert second["input_tokens"] == 0 and second["attempts"] == 0


async def test_fifty_identical_concurrent_requests_reach_upstream_once(
    project: Path,
) -> None:
    async with Simulator(latency_ms=50) as slow, make(project, slow) as orch:
        results = await orch.execute_multiple([("code-reviewer", "same")] * 50)
        assert len(slow.message_requests) == 1
        rows = orch.usage_rows()
    assert all(r.success for r in results)
    assert len({r.output for r in results}) == 1
    assert sum(not r.metadata["cached"] for r in results) == 1
    paid = [r.metadata["estimated_cost"] for r in results if not r.metadata["cached"]]
    assert paid[0] > 0
    assert sum(r.metadata["estimated_cost"] for r in results) == paid[0]
    assert sum(row.cost_usd or 0 for row in rows) == paid[0]  # the cost is recorded once


async def test_error_reaches_every_waiter_and_is_not_cached(project: Path) -> None:
    async with Simulator(latency_ms=30) as slow, make(project, slow) as orch:
        slow.script(Fault.status(400))
        results = await orch.execute_multiple([("code-reviewer", "bad")] * 5)
        assert len(slow.message_requests) == 1
        assert not any(r.success for r in results)
        rows = orch.usage_rows()
        again = await orch.execute_agent("code-reviewer", "bad")
    assert again.success and not again.metadata["cached"]
    # Every call has its row; only the leader's made an attempt and has a request id; the
    # waiters were served by the shared call, as they are when it succeeds.
    assert [row.outcome for row in rows] == ["error"] * 5
    assert sorted((row.attempts, row.cached) for row in rows) == [(0, True)] * 4 + [(1, False)]
    assert sorted(r.attempts for r in results) == [0, 0, 0, 0, 1]
    assert sum(r.request_id is not None for r in results) == 1
    assert sorted(str(r.cache_tier) for r in results) == ["None"] + ["in-flight"] * 4


async def test_hit_never_waits_for_a_slot(project: Path, sim: Simulator) -> None:
    async with make(project, sim, max_concurrent=1, timeout_seconds=30) as orch:
        await orch.execute_agent("code-reviewer", "cached task")
        sim.script(Fault.hang())
        blocker = asyncio.create_task(orch.execute_agent("code-reviewer", "slow task"))
        # Wait (in a thread, so the loop keeps running) until the blocker holds the only slot.
        assert await asyncio.to_thread(sim.wait_for_in_flight, 1)
        hit = await asyncio.wait_for(orch.execute_agent("code-reviewer", "cached task"), 5)
        assert hit.metadata["cached"] is True
        assert sim.in_flight == 1
        blocker.cancel()
        await asyncio.gather(blocker, return_exceptions=True)


async def test_use_cache_false_refresh_and_excluded_agents(project: Path, sim: Simulator) -> None:
    async with make(project, sim, cache_exclude_agents=["doc-writer"]) as orch:
        await orch.execute_agent("code-reviewer", "t")
        assert not (await orch.execute_agent("code-reviewer", "t", use_cache=False)).metadata[
            "cached"
        ]
        refreshed = await orch.execute_agent("code-reviewer", "t", refresh=True)
        assert not refreshed.metadata["cached"]
        assert (await orch.execute_agent("code-reviewer", "t")).metadata["cached"]
        await orch.execute_agent("doc-writer", "t")
        assert not (await orch.execute_agent("doc-writer", "t")).metadata["cached"]
    assert len(sim.message_requests) == 5


async def test_every_request_field_splits_the_key(project: Path, sim: Simulator) -> None:
    async with make(project, sim) as orch:
        base = await orch.execute_agent("code-reviewer", "t")
        variants = [
            await orch.execute_agent("code-reviewer", "t", model="claude-haiku-4-5"),
            await orch.execute_agent("code-reviewer", "t", max_tokens=100),
            await orch.execute_agent("code-reviewer", "t", temperature=0.5),
            await orch.execute_agent("code-reviewer", "t", prompt_cache_ttl="1h"),
            await orch.execute_agent("test-writer", "t"),
        ]
    assert not base.metadata["cached"]
    assert not any(v.metadata["cached"] for v in variants)


async def test_timeouts_and_retries_do_not_split_the_key(project: Path, sim: Simulator) -> None:
    async with make(project, sim, timeout_seconds=30, max_retries=1) as orch:
        await orch.execute_agent("code-reviewer", "t")
    async with make(project, sim, timeout_seconds=90, max_retries=5) as other:
        assert (await other.execute_agent("code-reviewer", "t")).metadata["cached"]


def test_cache_cli(
    project: Path,
    sim: Simulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", sim.base_url)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        '{"agent": "code-reviewer", "task": "a"}\n{"agent": "doc-writer", "task": "b"}\n',
        encoding="utf-8",
    )

    def run(*argv: str) -> int:
        return run_guarded(cli, list(argv))

    assert run("cache", "warm", str(tasks), "--json", "-c", str(project)) == 0
    assert json.loads(capsys.readouterr().out) == {"already_cached": 0, "stored": 2, "failed": 0}
    assert run("cache", "warm", str(tasks), "--json", "-c", str(project)) == 0
    assert json.loads(capsys.readouterr().out)["already_cached"] == 2
    assert run("cache", "stats", "--json") == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 2
    assert run("cache", "verify", "--json") == 0
    assert json.loads(capsys.readouterr().out)["bad"] == 0
    assert run("cache", "prune", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"removed": 0}
    assert run("cache", "clear", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"removed": 2}
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{nope\n", encoding="utf-8")
    assert run("cache", "warm", str(bad), "-c", str(project)) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err


async def test_two_machines_share_answers_through_redis(
    project: Path, sim: Simulator, tmp_path: Path
) -> None:
    import uuid

    import redis

    from claude_force import ResponseCache

    namespace = f"cf-test-{uuid.uuid4().hex}"
    url = "redis://127.0.0.1:6379/0"
    caches = [
        ResponseCache(cache_dir=tmp_path / name, redis_url=url, namespace=namespace)
        for name in ("machine-a", "machine-b")
    ]
    try:
        results = []
        for cache in caches:
            async with make(project, sim, response_cache=cache) as orch:
                results.append(await orch.execute_agent("code-reviewer", "shared task"))
        assert len(sim.message_requests) == 1
        assert results[1].metadata["cached"] is True
        assert results[1].metadata["cache_tier"] == "redis"
        assert results[1].output == results[0].output
    finally:
        for cache in caches:
            cache.close()
        server = redis.Redis.from_url(url)
        for stored in server.scan_iter(f"{namespace}:*"):
            server.delete(stored)
        server.close()
