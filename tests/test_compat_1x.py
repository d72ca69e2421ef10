"""Code written for Claude Force 1.x keeps working through the sync door: ``run_workflow``'s
result iterates like 1.x's list, ``metadata["tokens_used"]`` is there, and ``run_agent`` with
an undefined agent returns 1.x's failed result."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from claude_force import AgentNotFoundError, AgentOrchestrator, WorkflowResult
from claude_force.testing import Simulator

from .conftest import API_KEY


def make(project: Path, sim: Simulator) -> AgentOrchestrator:
    return AgentOrchestrator(
        project, api_key=API_KEY, base_url=sim.base_url, enable_cache=False, enable_tracking=False
    )


def test_a_workflow_result_is_a_read_only_sequence_of_its_steps(
    project: Path, sim: Simulator
) -> None:
    with make(project, sim) as orch:
        results = orch.run_workflow("ship", "Add a login page")
    assert isinstance(results, WorkflowResult) and isinstance(results, Sequence)
    names = [r.agent_name for r in results]  # 1.x: `for result in results`
    assert sorted(names[1:]) == ["doc-writer", "test-writer"] and names[0] == "code-reviewer"
    assert len(results) == 3 and results[0] is results.steps[0]
    assert results[-1] is results.steps[-1] and results[1:] == results.steps[1:]
    assert all(r.success for r in results) and results.steps[0] in results
    assert results.final_output == results.steps[-1].output  # the current API is unchanged
    with pytest.raises(AttributeError):
        results.append(results[0])  # type: ignore[attr-defined]


def test_tokens_used_is_1x_total_of_input_and_output(project: Path, sim: Simulator) -> None:
    with make(project, sim) as orch:
        result = orch.run_agent("code-reviewer", "Review main.py")
    meta = result.metadata
    assert result.success and meta["output_tokens"] > 0
    assert meta["tokens_used"] == meta["input_tokens"] + meta["output_tokens"]
    assert result.to_dict()["metadata"]["tokens_used"] == meta["tokens_used"]


def test_run_agent_with_an_undefined_agent_returns_1x_failed_result(
    project: Path, sim: Simulator
) -> None:
    with make(project, sim) as orch:
        result = orch.run_agent("undefined", "Review main.py")
        with pytest.raises(AgentNotFoundError):  # the current name still raises
            orch.execute_agent("undefined", "Review main.py")
        again = orch.run_agent("code-reviewer", "Review main.py", use_cache=False)
    assert (result.agent_name, result.success, result.output) == ("undefined", False, "")
    assert len(result.errors) == 1 and "'undefined'" in result.errors[0]
    assert "code-reviewer" in result.errors[0]  # names the agents that exist
    assert again.success and len(sim.message_requests) == 1  # the undefined name sent nothing
