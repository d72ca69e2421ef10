"""The sync door, the production configuration, legacy projects and workflows."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from claude_force import AgentOrchestrator, AsyncAgentOrchestrator, StepEvent, UsageError
from claude_force.testing import Fault, Simulator

from .conftest import API_KEY, production_orchestrator

LEGACY = Path(__file__).parent / "fixtures" / "legacy_project"


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    shutil.copytree(LEGACY, tmp_path / "legacy")
    return tmp_path / "legacy"


def test_production_snippet_runs_verbatim(
    legacy: Path, production_env: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(legacy)
    sim = production_env

    async def main() -> list[bool]:
        orchestrator = production_orchestrator()
        async with orchestrator:
            results = await orchestrator.execute_multiple(
                [("code-reviewer", "Review auth.py"), ("bug-investigator", "Login fails")]
            )
        return [r.success for r in results]

    assert asyncio.run(main()) == [True, True]
    assert len(sim.message_requests) >= 1


def test_legacy_project_loads_and_runs_a_workflow(legacy: Path, sim: Simulator) -> None:
    config = legacy / ".claude" / "claude.json"
    with AgentOrchestrator(
        config, api_key=API_KEY, base_url=sim.base_url, enable_cache=False
    ) as orch:
        assert "bug-fix" in orch.list_workflows()
        assert {"governance", "rules", "paths"} <= set(orch.core.config.extra)
        result = orch.run_workflow("bug-fix", "Users are logged out every five minutes")
    assert result.success, result.error
    assert [s.agent_name for s in result.steps] == [
        "bug-investigator",
        "code-reviewer",
        "qc-automation-expert",
    ]
    contract = (legacy / ".claude" / "contracts").glob("code-reviewer*")
    contract_text = next(contract).read_text(encoding="utf-8").strip()
    second = sim.message_requests[1].body
    assert contract_text[:80] in second["system"][0]["text"]


def test_sync_door(project: Path, sim: Simulator) -> None:
    with AgentOrchestrator(
        project, api_key=API_KEY, base_url=sim.base_url, enable_cache=False
    ) as orch:
        assert orch.list_agents() == orch.core.list_agents()
        assert set(orch.list_workflows()) == set(orch.core.list_workflows())
        info = orch.get_agent_info("code-reviewer")
        assert info["name"] == "code-reviewer" and info["model"]
        result = orch.run_agent("code-reviewer", "Review main.py")
        again = orch.run_agent("code-reviewer", "Review main.py")
        assert result.success and again.output == result.output
        many = orch.run_multiple([("code-reviewer", "a"), ("test-writer", "b")])
        assert [r.agent_name for r in many] == ["code-reviewer", "test-writer"]
    orch.close()  # twice is fine


async def test_sync_door_works_inside_a_running_loop(project: Path, sim: Simulator) -> None:
    with AgentOrchestrator(
        project, api_key=API_KEY, base_url=sim.base_url, enable_cache=False
    ) as orch:
        assert orch.run_agent("code-reviewer", "inside a loop").success


async def test_workflow_stages_handoff_and_parallelism(project: Path) -> None:
    events: list[StepEvent] = []
    async with Simulator(latency_ms=30) as slow:
        async with AsyncAgentOrchestrator(
            project, api_key=API_KEY, base_url=slow.base_url, enable_cache=False
        ) as orch:
            name = next(
                n for n in orch.list_workflows() if any(len(s) > 1 for s in orch.config.workflow(n))
            )
            stages = orch.config.workflow(name)
            result = await orch.run_workflow(name, "Add a retry helper", on_step=events.append)
        assert slow.peak_in_flight >= 2  # the parallel stage ran concurrently
        bodies = slow.message_requests
    assert result.success
    flat = [a for stage in stages for a in stage]
    assert sorted(s.agent_name for s in result.steps) == sorted(flat)
    assert result.total_output_tokens == sum(s.metadata["output_tokens"] for s in result.steps)
    first_agent = stages[0][0]
    first_output = result.steps[0].output
    later = [b.body for b in bodies[1:]]
    for body in later:
        texts = " ".join(block["text"] for block in body["messages"][0]["content"])
        assert first_agent in texts and first_output in texts
        assert "Add a retry helper" in texts
    statuses = [(e.agent, e.status) for e in events]
    assert statuses.count((first_agent, "started")) == 1
    assert sum(1 for _, s in statuses if s == "succeeded") == len(flat)


async def test_failed_step_stops_the_workflow(project: Path, sim: Simulator) -> None:
    sim.script(Fault.status(400))
    async with AsyncAgentOrchestrator(
        project, api_key=API_KEY, base_url=sim.base_url, enable_cache=False
    ) as orch:
        name = orch.list_workflows()[-1]
        result = await orch.run_workflow(name, "task")
    assert not result.success
    assert len(result.steps) == 1
    assert result.error and "400" in result.error
    assert len(sim.message_requests) == 1


def test_environment_is_not_required_for_listing(project: Path) -> None:
    assert "ANTHROPIC_API_KEY" not in os.environ
    orch = AgentOrchestrator(project)
    assert orch.list_agents()


EXIT_SCRIPT = """
import asyncio, sys
from claude_force import AgentOrchestrator, AsyncAgentOrchestrator
config = sys.argv[1]

async def main() -> None:
    orch = AsyncAgentOrchestrator(config)  # never closed on purpose
    print((await orch.execute_agent("code-reviewer", "async, not closed")).success)

asyncio.run(main())
sync = AgentOrchestrator(config)  # never closed on purpose
print(sync.run_agent("doc-writer", "sync, not closed").success)
"""


def test_unclosed_orchestrators_exit_cleanly(project: Path, sim: Simulator, tmp_path: Path) -> None:
    import subprocess
    import sys

    env = dict(os.environ, ANTHROPIC_API_KEY=API_KEY, ANTHROPIC_BASE_URL=sim.base_url)
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", EXIT_SCRIPT, str(project)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"]
    for trouble in ("Unclosed", "destroyed but it is pending", "Traceback", "Exception ignored"):
        assert trouble not in proc.stderr, proc.stderr
    # Neither was closed, yet both calls reached the ledger before the process ended.
    rows = AgentOrchestrator(project).core.usage_rows()
    assert sorted(r.agent for r in rows) == ["code-reviewer", "doc-writer"]


def test_the_sync_door_refuses_calls_from_its_own_loop(project: Path, sim: Simulator) -> None:
    seen: list[str] = []
    with AgentOrchestrator(project, api_key=API_KEY, base_url=sim.base_url) as orch:

        def on_step(event: StepEvent) -> None:
            if event.status == "started":
                with pytest.raises(UsageError, match="its own event loop"):
                    orch.execute_agent("code-reviewer", "nested")
                seen.append(event.agent)

        flow = orch.run_workflow("review", "Review a.py", on_step=on_step)
    assert flow.success and seen
