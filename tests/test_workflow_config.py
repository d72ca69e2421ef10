"""The extended workflow form in claude.json: policies, per-step overrides, every problem
reported with its JSON path; the list form loads unchanged beside it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from claude_force import load_config
from claude_force._config import StepSpec, WorkflowSpec
from claude_force._results import AgentResult
from claude_force._runs import MAX_AGE_SECONDS, RunStore

from .test_config import make_project, problems_of

AGENTS = {"a": {"file": "agents/a.md"}, "b": {"file": "agents/a.md"}}


def with_workflows(tmp_path: Path, workflows: dict[str, Any]) -> Path:
    return make_project(tmp_path, {"agents": AGENTS, "workflows": workflows})


def test_extended_form_beside_the_list_form(tmp_path: Path) -> None:
    config = load_config(
        with_workflows(
            tmp_path,
            {
                "plain": ["a", ["a", "b"]],
                "ship": {
                    "steps": [
                        {"agent": "a", "model": "claude-haiku-4-5", "temperature": 1},
                        [{"agent": "b", "max_tokens": 50}, "a"],
                    ],
                    "handoff": "previous",
                    "on_failure": "continue",
                },
                "defaults": {"steps": ["b"]},
            },
        )
    )
    assert config.workflow("plain") == (("a",), ("a", "b"))
    assert config.workflow("ship") == (("a",), ("b", "a"))  # the names, as before
    assert config.workflow_spec("ship") == WorkflowSpec(
        name="ship",
        stages=(
            (StepSpec("a", model="claude-haiku-4-5", temperature=1.0),),
            (StepSpec("b", max_tokens=50), StepSpec("a")),
        ),
        handoff="previous",
        on_failure="continue",
    )
    plain = config.workflow_spec("plain")
    assert (plain.handoff, plain.on_failure) == ("all", "stop")
    defaults = config.workflow_spec("defaults")
    assert (defaults.handoff, defaults.on_failure) == ("all", "stop")


def test_every_problem_of_the_extended_form_has_its_path(tmp_path: Path) -> None:
    path = with_workflows(
        tmp_path,
        {
            "w": {
                "steps": [
                    {"agent": "a", "modle": "x"},
                    [{"agent": "c"}, {"model": "m"}, "a", {"agent": "a"}],
                    {"agent": "b", "max_tokens": 0, "temperature": "hot"},
                    {"agent": 7},
                    [[{"agent": "a"}]],
                ],
                "handof": "previous",
                "on_failure": "retry",
            },
            "x": {"handoff": "all"},
            "y": {"steps": []},
            "z": {"steps": ["a"], "handoff": 1},
            "v": "a",
        },
    )
    problems = problems_of(path)
    assert [p.split(": ", 1)[0] for p in problems] == [
        "workflows.w.handof",
        "workflows.w.on_failure",
        "workflows.w.steps[0].modle",
        "workflows.w.steps[1][0].agent",
        "workflows.w.steps[1][1].agent",
        "workflows.w.steps[1][3]",
        "workflows.w.steps[2].max_tokens",
        "workflows.w.steps[2].temperature",
        "workflows.w.steps[3].agent",
        "workflows.w.steps[4][0]",
        "workflows.x.steps",
        "workflows.y.steps",
        "workflows.z.handoff",
        "workflows.v",
    ]
    text = "\n".join(problems)
    assert "workflows.w.handof: unknown key; did you mean 'handoff'?" in text
    assert "workflows.w.steps[0].modle: unknown key; did you mean 'model'?" in text
    assert "workflows.w.on_failure: expected one of 'stop', 'continue', got \"retry\"" in text
    assert "agent 'c' is not defined" in text
    assert "workflows.w.steps[1][1].agent: field required" in text
    assert "agent 'a' appears twice in this stage" in text
    assert "expected an integer from 1 to 128000, got 0" in text
    assert 'expected a number from 0 to 1, got "hot"' in text
    assert "expected an agent name, got integer" in text
    assert "stages cannot be nested further" in text
    assert "workflows.z.handoff: expected one of 'all', 'previous', got 1" in text


def test_a_hand_made_config_gives_the_default_policies(tmp_path: Path) -> None:
    config = load_config(with_workflows(tmp_path, {"w": ["a"]}))
    bare = type(config)(
        path=config.path, root=config.root, agents=config.agents, workflows={"w": (("a",),)}
    )
    assert bare.workflow_spec("w") == WorkflowSpec(name="w", stages=((StepSpec("a"),),))


# -- the run store: superseded, finished and old runs leave nothing ------------------------


def test_the_run_store_keeps_the_latest_run_until_it_succeeds(tmp_path: Path) -> None:
    now = [time.time()]
    store = RunStore(tmp_path / "data" / "runs.db", clock=lambda: now[0])
    done = AgentResult(agent_name="a", success=True, output="out", model="m")
    assert store.latest("w", "t") == {}  # no file yet: nothing, and nothing created
    assert not (tmp_path / "data").exists()
    store.start("w", "t")
    store.keep("w", "t", "run1", 0, "key0", done)
    store.keep("w", "other task", "run9", 0, "key9", done)
    (kept,) = store.latest("w", "t").values()
    assert (kept.run_id, kept.step, kept.request_key) == ("run1", 0, "key0")
    assert kept.result.reused and kept.result.output == "out" and kept.result.cost == 0
    store.start("w", "t")  # a new run supersedes it
    assert store.latest("w", "t") == {}
    store.keep("w", "t", "run2", 0, "key0", done)
    store.finish("w", "t")  # the run succeeded
    assert store.latest("w", "t") == {}
    assert len(store.latest("w", "other task")) == 1
    now[0] += MAX_AGE_SECONDS + 1
    store.start("v", "t")  # any start prunes rows older than the limit
    assert store.latest("w", "other task") == {}
    assert (tmp_path / "data" / ".gitignore").exists()
