"""The CLI against a server the project did not write (``tests/standin.py``): what the user is
told about answers that ended early and about API errors, and that the key never shows."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from claude_force.cli import cli
from claude_force.cli._common import run_guarded

from .conftest import API_KEY
from .standin import Reply, StandIn


def run(project: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run_guarded(cli, [*argv, "-c", str(project), "--no-cache"])
    out, err = capsys.readouterr()
    assert API_KEY not in out + err
    return code, out, err


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("max_tokens", "note: the answer was cut at the max_tokens limit; raise --max-tokens"),
        ("refusal", "note: the model declined to answer this task (stop_reason refusal)"),
        ("pause_turn", "note: the model paused a long turn (stop_reason pause_turn)"),
        ("model_context_window_exceeded", "note: the answer stopped at the model's context"),
    ],
)
def test_an_answer_that_ended_early_says_so(
    project: Path,
    standin: StandIn,
    capsys: pytest.CaptureFixture[str],
    stop_reason: str,
    expected: str,
) -> None:
    standin.script(Reply(stop_reason=stop_reason, text="partial"))
    code, out, err = run(project, capsys, "run", "code-reviewer", "Review x.py")
    assert (code, out) == (0, "partial\n")
    assert expected in err
    standin.script(Reply(stop_reason=stop_reason, text="partial"))
    code, out, err = run(project, capsys, "workflow", "review", "Review x.py")
    assert code == 0
    assert f"note: step 1 (code-reviewer): {expected.removeprefix('note: ')}" in err


def test_a_finished_answer_has_no_note_and_thinking_and_tool_blocks_are_left_out(
    project: Path, standin: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    standin.script(Reply(thinking=True, tool_use=True, text="the text"))
    code, out, err = run(project, capsys, "run", "code-reviewer", "Review x.py")
    assert (code, out) == (0, "the text\n")
    assert "note:" not in err


@pytest.mark.parametrize(
    ("status", "fix"),
    [
        (400, None),
        (401, "check the API key (ANTHROPIC_API_KEY)"),
        (403, "this API key may not use this model or feature"),
        (404, "check the model name (--model, the agent's 'model', 'default_model')"),
        (413, "the request is too large: shorten the task or the agent file"),
    ],
)
def test_an_api_error_names_the_request_and_the_fix(
    project: Path,
    standin: StandIn,
    capsys: pytest.CaptureFixture[str],
    status: int,
    fix: str | None,
) -> None:
    standin.script(Reply(status=status, message=f"the service says {status}"))
    code, out, err = run(project, capsys, "run", "code-reviewer", "Review x.py")
    assert (code, out) == (1, "")
    (line,) = err.splitlines()
    (sent,) = standin.messages()  # one attempt: none of these is retried
    assert line.startswith(f"error: agent 'code-reviewer' failed: HTTP {status} "), line
    assert f"the service says {status} (request-id req_standin" in line
    assert f"); {fix}" in line if fix else line.endswith(")")
    assert any(API_KEY in value for value in sent.headers.values())  # sent, never shown


def test_errors_after_every_retry_say_to_wait(
    project: Path, standin: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    standin.script(*[Reply(status=529, headers={"retry-after-ms": "1"})] * 4)
    code, _, err = run(project, capsys, "run", "code-reviewer", "Review x.py")
    assert code == 1
    assert "overloaded_error" in err and err.rstrip().endswith("try again in a few minutes")
    assert len(standin.messages()) == 4


def test_the_cost_of_cache_writes_reads_and_web_searches(
    project: Path, standin: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    usage = {
        "input_tokens": 100,
        "output_tokens": 10,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 1000,
        "cache_creation": {"ephemeral_5m_input_tokens": 40, "ephemeral_1h_input_tokens": 60},
        "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 0},
        "service_tier": "standard",
    }
    standin.script(Reply(usage=usage))
    code, out, _ = run(project, capsys, "run", "code-reviewer", "Review x.py", "--json")
    assert code == 0
    meta = json.loads(out)["metadata"]
    # Prices of claude_force/pricing.json for the default model, per million tokens.
    prices = json.loads((Path(__file__).parents[1] / "claude_force" / "pricing.json").read_text())[
        "models"
    ][meta["model"]]
    expected = (
        100 * Decimal(prices["input"])
        + 10 * Decimal(prices["output"])
        + 40 * Decimal(prices["cache_write_5m"])
        + 60 * Decimal(prices["cache_write_1h"])
        + 1000 * Decimal(prices["cache_read"])
    ) / 1_000_000 + 2 * Decimal("0.01")
    assert Decimal(meta["estimated_cost"]) == expected


def test_the_commands_of_claude_force_1x_still_work(
    project: Path,
    standin: StandIn,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # the folder holding .claude/
    task_file = tmp_path / "task.md"
    task_file.write_text("Review the auth module\n", encoding="utf-8")
    config = ("--config", str(project))
    assert run_guarded(cli, [*config, "list", "agents", "--json"]) == 0
    assert "code-reviewer" in [a["name"] for a in json.loads(capsys.readouterr().out)]
    assert run_guarded(cli, [*config, "info", "code-reviewer", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["name"], info["workflows"]) == ("code-reviewer", ["review", "ship"])
    for argv in (
        ["run", "agent", "code-reviewer", "--task", "Review this code: def foo(): pass"],
        ["run", "agent", "code-reviewer", "--task-file", str(task_file)],
        ["run", "workflow", "review", "--task", "Investigate the 500 error"],
        ["run", "workflow", "review", "--task-file", str(task_file)],
        ["workflow", "review", "--task", "Investigate the 500 error"],
    ):
        assert run_guarded(cli, [*config, *argv, "--no-cache"]) == 0, argv
        assert capsys.readouterr().out == "stand-in answer\n"
    sent = [json.dumps(m.body) for m in standin.messages()]
    assert len(sent) == 5
    assert "def foo(): pass" in sent[0] and "Review the auth module" in sent[1]
    code = run_guarded(cli, ["run", "code-reviewer", "x", "--task", "y", *config])
    assert code == 2
    assert "give the task either as TASK or with --task, not both" in capsys.readouterr().err


def test_batches_mode_against_a_server_the_project_did_not_write(
    project: Path, standin: StandIn, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    lines = [{"id": f"m{i}", "agent": "code-reviewer", "task": f"Review {i}.py"} for i in range(3)]
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    out = tmp_path / "results.jsonl"
    code, _, _ = run(
        project, capsys, "batch", str(tasks), "--out", str(out), "--mode", "batches", "-q"
    )
    assert code == 0
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(records) == ["m0", "m1", "m2"]
    assert all(r["success"] and r["output"] == "stand-in answer" for r in records.values())
    paths = [(r.method, r.path) for r in standin.requests]
    assert paths[0] == ("POST", "/v1/messages/batches")
    assert paths[-1][1].endswith("/results")
    assert not standin.messages() or all("batches" in path for _, path in paths)
    # Half price: each record costs half of what a direct call with its usage would.
    prices = json.loads((Path(__file__).parents[1] / "claude_force" / "pricing.json").read_text())
    price = prices["models"]["claude-sonnet-5-5"]
    for record in records.values():
        usage = record["usage"]
        full = usage["input_tokens"] * Decimal(price["input"]) + usage["output_tokens"] * Decimal(
            price["output"]
        )
        assert Decimal(record["cost"]) == full / 1_000_000 * Decimal(price["batch_discount"])
