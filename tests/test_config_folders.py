"""``.claude/`` folders as other teams write them load and run; a bad one says what to fix.

Each folder is written the way a real project has it (comments, nulls, Windows paths and
line endings, names in other scripts, a file missing on this machine, a stale workflow) and
run through the CLI or the orchestrator against ``tests/standin.py``, a server written apart
from the project's simulator.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from claude_force import ConfigError, load_config
from claude_force._config import read_agent_prompt
from claude_force.cli import cli
from claude_force.cli._common import run_guarded

from .conftest import production_orchestrator
from .standin import StandIn


def write_folder(
    root: Path, config: dict[str, Any] | bytes, files: Mapping[str, str | bytes]
) -> Path:
    folder = root / ".claude"
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode() if isinstance(text, str) else text)
    data = config if isinstance(config, bytes) else json.dumps(config, ensure_ascii=False).encode()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "claude.json").write_bytes(data)
    return folder / "claude.json"


def cli_run(*argv: str) -> int:
    return run_guarded(cli, list(argv))


def test_comment_keys_nulls_and_loose_metadata_load(tmp_path: Path) -> None:
    config = {
        "_comment": "team config",
        "$schema": "https://example.invalid/claude.schema.json",
        "agents": {
            "_comment": "agents below are owned by the platform team",
            "// note": "kept alphabetical",
            "backend": {
                "file": "agents/backend.md",
                "contract": None,
                "model": None,
                "max_tokens": None,
                "description": None,
                "domains": "python",
                "priority": 1.5,
                "_comment": "x",
                "tools": ["bash"],
            },
        },
        "workflows": {"_comment": "wf", "w": ["backend"]},
        "rate_limits": {"_comment": "caps", "sonnet": {"requests_per_minute": 5}},
    }
    loaded = load_config(write_folder(tmp_path, config, {"agents/backend.md": "B"}))
    assert list(loaded.agents) == ["backend"]
    spec = loaded.agent("backend")
    assert (spec.contract, spec.model, spec.max_tokens, spec.description) == (None,) * 4
    assert spec.domains == ("python",)
    assert spec.priority == 1.5
    assert dict(spec.extra) == {"_comment": "x", "tools": ["bash"]}
    assert list(loaded.workflows) == ["w"]
    assert list(loaded.rate_limits) == ["sonnet"]
    assert loaded.extra["_comment"] == "team config"


def test_a_windows_path_and_line_endings_load(tmp_path: Path) -> None:
    raw = json.dumps({"agents": {"a": {"file": "agents\\team\\a.md"}}}, indent=2)
    data = b"\xef\xbb\xbf" + raw.replace("\n", "\r\n").encode()
    path = write_folder(tmp_path, data, {"agents/team/a.md": "\ufeff# A\r\nDo things.\r\n"})
    spec = load_config(path).agent("a")
    assert spec.file == (tmp_path / ".claude" / "agents" / "team" / "a.md").resolve()
    # The byte order mark is not sent; the line endings are the author's and stay.
    assert read_agent_prompt(spec) == ("# A\r\nDo things.\r\n", None)


@pytest.mark.parametrize("value", ["..\\..\\secret.md", "\\agents\\a.md", "C:\\agents\\a.md"])
def test_a_windows_path_still_stays_inside_the_folder(tmp_path: Path, value: str) -> None:
    path = write_folder(tmp_path, {"agents": {"a": {"file": value}}}, {"agents/a.md": "A"})
    why = load_config(path).unusable_agents["a"]
    assert why.startswith("agents.a.file: agent 'a' file ")
    assert "use a path relative to it" in why


def test_a_missing_contract_is_a_warning_and_the_agent_runs_without_it(
    tmp_path: Path, standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    config = {"agents": {"a": {"file": "agents/a.md", "contract": "contracts/a.contract"}}}
    path = write_folder(tmp_path, config, {"agents/a.md": "Agent A role."})
    with caplog.at_level(logging.WARNING, logger="claude_force"):
        loaded = load_config(path)
    assert loaded.agent("a").contract is None
    assert "agents.a.contract: agent 'a' contract 'contracts/a.contract': " in caplog.text
    assert "running the agent without a contract" in caplog.text
    assert cli_run("run", "a", "Do it", "-c", str(path), "--no-cache") == 0
    (sent,) = standin.messages()
    assert "Agent A role." in json.dumps(sent.body)


def test_several_missing_contracts_are_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An upstream 1.x layout lists many contracts that are not there: one line names them
    all, on every command that loads the folder."""
    agents = {n: {"file": "agents/a.md", "contract": f"contracts/{n}.md"} for n in "abc"}
    path = write_folder(tmp_path, {"agents": agents}, {"agents/a.md": "Agent A role."})
    with caplog.at_level(logging.WARNING, logger="claude_force"):
        loaded = load_config(path)
    assert all(loaded.agent(n).contract is None for n in "abc")
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "3 agents run without their contract, the files are missing: " in line
    assert "'a' ('contracts/a.md'), 'b' ('contracts/b.md'), 'c' ('contracts/c.md')" in line


@pytest.mark.parametrize("contract", ["", "  \n\t\r\n"])
def test_a_blank_contract_adds_no_heading(tmp_path: Path, standin: StandIn, contract: str) -> None:
    config = {"agents": {"a": {"file": "agents/a.md", "contract": "contracts/a.contract"}}}
    files = {"agents/a.md": "Agent A role.", "contracts/a.contract": contract}
    path = write_folder(tmp_path, config, files)
    assert cli_run("run", "a", "Do it", "-c", str(path), "--no-cache") == 0
    (sent,) = standin.messages()
    assert "Agent A role." in json.dumps(sent.body)
    assert "Contract" not in json.dumps(sent.body["system"])


def broken_folder(tmp_path: Path) -> Path:
    """A folder whose agent 'gone' has no file here and whose workflow 'stale' is stale."""
    config = {
        "agents": {
            "ok": {"file": "agents/ok.md", "contract": "contracts/ok.contract"},
            "gone": {"file": "agents/gone.md"},
        },
        "workflows": {"good": ["ok"], "stale": ["ok", "ghost"], "uses-gone": ["ok", "gone"]},
    }
    return write_folder(tmp_path, config, {"agents/ok.md": "OK agent", "contracts/ok.contract": ""})


def test_a_missing_agent_file_or_a_stale_workflow_leaves_the_rest_usable(tmp_path: Path) -> None:
    loaded = load_config(broken_folder(tmp_path))
    assert list(loaded.agents) == ["ok"]
    assert list(loaded.workflows) == ["good", "uses-gone"]
    with pytest.raises(ConfigError, match=r"agent 'gone' in .* cannot be used: agents\.gone\.file"):
        loaded.agent("gone")
    with pytest.raises(ConfigError) as info:
        loaded.workflow("stale")
    assert "cannot run: workflows.stale[1]: agent 'ghost' is not defined; define it under" in str(
        info.value
    )
    with pytest.raises(ConfigError, match=r"workflow 'uses-gone' .* cannot run: agent 'gone': "):
        loaded.workflow_spec("uses-gone")


def test_confined_problems_are_all_reported_when_the_file_is_broken_anyway(tmp_path: Path) -> None:
    config = {
        "agents": {"gone": {"file": "agents/gone.md"}, "bad": {"file": 3}},
        "workflows": {"stale": ["ghost"]},
    }
    with pytest.raises(ConfigError) as info:
        load_config(write_folder(tmp_path, config, {}))
    assert [p.split(": ", 1)[0] for p in info.value.problems] == [
        "agents.gone.file",
        "agents.bad.file",
        "workflows.stale[0]",
    ]


def cli_process(*argv: str) -> subprocess.CompletedProcess[str]:
    """The real command in its own process, so its warning lines reach standard error."""
    return subprocess.run(
        [sys.executable, "-m", "claude_force.cli", *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )


def test_cli_runs_the_usable_part_of_a_broken_folder(tmp_path: Path, standin: StandIn) -> None:
    path = str(broken_folder(tmp_path))
    proc = cli_process("run", "ok", "Review it", "-c", path, "--no-cache")
    assert (proc.returncode, proc.stdout) == (0, "stand-in answer\n"), proc.stderr
    assert "warning: " in proc.stderr
    assert "agent 'gone' cannot be used: agents.gone.file" in proc.stderr
    assert "workflow 'stale' cannot run: workflows.stale[1]" in proc.stderr
    assert cli_run("workflow", "good", "Review it", "-c", path, "--no-cache") == 0
    sent = len(standin.messages())
    for argv in (("workflow", "stale", "x"), ("workflow", "uses-gone", "x"), ("run", "gone", "x")):
        proc = cli_process(*argv, "-c", path, "--no-cache")
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == "" and "Traceback" not in proc.stderr
        (error,) = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert "cannot run" in error or "cannot be used" in error
    assert len(standin.messages()) == sent  # nothing was sent for them


def test_agent_names_in_other_scripts_run_end_to_end(
    tmp_path: Path, standin: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    config = {
        "agents": {
            "revisor-código": {"file": "agents/revisor.md"},
            "审查": {"file": "agents/审查.md"},
            "Code Reviewer": {"file": "agents/revisor.md"},
        },
        "workflows": {"flujo": ["revisor-código", ["审查", "Code Reviewer"]]},
    }
    files = {"agents/revisor.md": "Eres un revisor. ñandú", "agents/审查.md": "你是代码审查员。"}
    path = str(write_folder(tmp_path, config, files))
    assert cli_run("agents", "--json", "-c", path) == 0
    names = [a["name"] for a in json.loads(capsys.readouterr().out)]
    assert names == ["revisor-código", "审查", "Code Reviewer"]
    assert cli_run("run", "审查", "检查这个函数", "-c", path, "--no-cache") == 0
    assert "你是代码审查员。" in json.dumps(standin.messages()[-1].body, ensure_ascii=False)
    assert capsys.readouterr().out == "stand-in answer\n"
    assert cli_run("workflow", "flujo", "revisa esto", "-c", path, "--no-cache", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["success"] is True
    assert len(standin.messages()) == 4


async def test_sixty_agents_with_a_parallel_stage_run_through_the_api(
    tmp_path: Path, standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    agents = {f"agent-{i:02d}": {"file": f"agents/n/agent-{i:02d}.md"} for i in range(60)}
    config = {"agents": agents, "workflows": {"wide": [list(agents)[:12], "agent-59"]}}
    files = {f"agents/n/agent-{i:02d}.md": f"Agent {i}" for i in range(60)}
    write_folder(tmp_path, config, files)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLAUDE_CACHE_SECRET", "a-strong-random-secret-for-tests")
    async with production_orchestrator() as orch:
        assert len(orch.list_agents()) == 60
        flow = await orch.run_workflow("wide", "Survey the code")
    assert flow.success
    assert len(standin.messages()) == 13


@pytest.mark.parametrize(
    ("text", "where", "hint"),
    [
        ('{"agents": {"a": {"file": "agents/a.md"},}}', "line 1, column 42", "no comma after"),
        ('{"agents": {"a": {"file": "agents/a.md"}}, "workflows": {"w": ["a",]}}', "", "no comma"),
        ('{\n  // our agents\n  "agents": {}\n}', "line 2, column 3", "JSON has no comments"),
        ('{"agents": {} /* none yet */}', "line 1, column 15", 'as a "_comment" key'),
    ],
)
def test_comments_and_trailing_commas_name_the_fix(
    tmp_path: Path, text: str, where: str, hint: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_folder(tmp_path, text.encode(), {"agents/a.md": "A"}))
    (problem,) = info.value.problems
    assert problem.startswith(where) and hint in problem
