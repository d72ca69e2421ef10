"""The command line: exit codes, output, no tracebacks for user errors, fast --help."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from claude_force.cli import cli
from claude_force.cli._common import cli_message, one_line, run_guarded, write_text
from claude_force.testing import Fault, Simulator

from .conftest import API_KEY


@pytest.fixture
def env(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> Simulator:
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", sim.base_url)
    monkeypatch.delenv("CLAUDE_FORCE_CACHE_DIR", raising=False)
    return sim


def run(*argv: str) -> int:
    return run_guarded(cli, list(argv))


def test_help_documents_exit_codes_and_cache_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--help") == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit codes: 0 success; 1 the run failed" in text and "130 interrupted" in text
    for command in ("run", "workflow"):
        assert run(command, "--help") == 0
        text = capsys.readouterr().out
        for option in ("--no-cache", "--refresh", "--cache-dir", "CLAUDE_FORCE_CACHE_DIR"):
            assert option in text, (command, option)


def test_help_does_not_import_the_sdk() -> None:
    code = (
        "import sys\n"
        "from claude_force.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "assert 'anthropic' not in sys.modules, 'anthropic imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout


def test_init_agents_workflows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run("init") == 0
    assert (tmp_path / ".claude" / "claude.json").exists()
    assert run("init") == 2  # refuses to overwrite
    capsys.readouterr()
    assert run("agents", "--json") == 0
    agents = json.loads(capsys.readouterr().out)
    assert {a["name"] for a in agents} == {"code-reviewer", "test-writer", "doc-writer"}
    assert run("workflows", "--json") == 0
    flows = json.loads(capsys.readouterr().out)
    assert any(len(stage) > 1 for stages in flows.values() for stage in stages)


def test_run_json(project: Path, env: Simulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("run", "code-reviewer", "Review x.py", "--json", "-c", str(project)) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["success"] is True and out["output"]
    assert out["metadata"]["attempts"] == 1


def test_run_prints_the_answer_before_the_orchestrator_closes(
    project: Path,
    env: Simulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Closing writes what is queued and can wait on another process's lock: the answer and
    its line are out before that starts."""
    from claude_force import AsyncAgentOrchestrator

    env.script(Fault.reply("THE-ANSWER"))
    seen: list[tuple[str, str]] = []
    real = AsyncAgentOrchestrator.close

    async def close(self: AsyncAgentOrchestrator) -> None:
        captured = capsys.readouterr()
        seen.append((captured.out, captured.err))
        await real(self)

    monkeypatch.setattr(AsyncAgentOrchestrator, "close", close)
    assert run("run", "code-reviewer", "Review x.py", "-c", str(project)) == 0
    assert seen and seen[0][0] == "THE-ANSWER\n"
    assert "tokens" in seen[0][1]


def test_run_shows_the_rate_limits_on_stderr(
    project: Path, env: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("run", "code-reviewer", "Review x.py", "--no-cache", "-c", str(project)) == 0
    err = capsys.readouterr().err.splitlines()
    # The simulator states 4,000 requests a minute.
    assert any(
        # (earlier tests may have spent some of the simulator's minute: any level of 4k)
        re.fullmatch(r"limits sonnet: req [0-9.]+k?/4k · in .* · concurrency 10", line)
        for line in err
    ), err


def test_the_workflow_table_carries_the_rate_limit_line() -> None:
    from rich.console import Console

    from claude_force.cli._workflow import WorkflowProgress

    line = "limits sonnet: req 48/50 · concurrency 10"
    progress = WorkflowProgress("workflow w", [["a"]], live=False, limits=lambda: line)
    console = Console(record=True, width=120)
    console.print(progress.render())
    assert line in console.export_text()


def test_run_reads_task_from_file_and_stdin(
    project: Path, env: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = tmp_path / "task.txt"
    task.write_text("Review the file task", encoding="utf-8")
    assert run("run", "code-reviewer", "-f", str(task), "-c", str(project)) == 0
    assert (
        "Review the file task"
        in env.message_requests[-1].body["messages"][0]["content"][-1]["text"]
    )
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("task from stdin"))
    assert run("run", "code-reviewer", "-", "-c", str(project)) == 0
    assert "task from stdin" in env.message_requests[-1].body["messages"][0]["content"][-1]["text"]


def test_run_failure_exits_1(
    project: Path, env: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    env.script(Fault.status(400, message="prompt is too long"))
    assert run("run", "code-reviewer", "x", "-c", str(project)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: agent 'code-reviewer' failed: HTTP 400")
    assert "prompt is too long" in captured.err and captured.err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (("run", "code-reviewr", "x"), "did you mean 'code-reviewer'"),
        (("run", "code-reviewer", "   "), "empty"),
        (("workflow", "nope", "x"), "nope"),
        (("run", "code-reviewer", "x", "--max-tokens", "0"), "--max-tokens"),
        (("run",), "Missing argument"),
        (("frobnicate",), "No such command"),
    ],
)
def test_usage_errors_exit_2(
    project: Path,
    env: Simulator,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    needle: str,
) -> None:
    args = list(argv)
    if args[0] in ("run", "workflow") and len(args) > 1:
        args += ["-c", str(project)]
    assert run(*args) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err
    assert env.message_requests == []


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / ".claude" / "claude.json"
    bad.parent.mkdir()
    bad.write_text('{"agents": {"a": {"file": 5}}}', encoding="utf-8")
    assert run("agents", "-c", str(bad)) == 2
    err = capsys.readouterr().err
    assert "agents.a.file" in err and "Traceback" not in err


def test_missing_api_key_exits_2(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("run", "code-reviewer", "x", "-c", str(project)) == 2
    assert "ANTHROPIC_API_KEY" in capsys.readouterr().err


def test_workflow_command(
    project: Path, env: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("workflow", "ship", "Ship the retry helper", "--json", "-c", str(project)) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["success"] is True and len(out["steps"]) == 3


def test_workflow_live_display(
    project: Path, env: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("workflow", "ship", "Ship it", "-c", str(project)) == 0
    captured = capsys.readouterr()
    assert "succeeded" in captured.err  # the progress table
    assert "workflow ship succeeded" in captured.err


def test_demo_needs_no_api_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("demo", "--latency-ms", "0", "--no-live") == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "succeeded" in captured.err and "3 requests reached the simulator" in out
    assert "3 of 3 steps answered from the response cache" in out


def test_demo_keeps_a_project_only_in_a_folder_it_made(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Simulated answers never reach a user's project: its memory, ledger and cache."""
    data = project.parent / "data"
    before = sorted(p.name for p in data.iterdir()) if data.exists() else []
    root = project.parent.parent
    assert run("demo", "--latency-ms", "0", "--no-live", "--dir", str(root)) == 2
    err = capsys.readouterr().err
    assert "already holds a project" in err and "--dir a new or empty folder" in err
    assert (sorted(p.name for p in data.iterdir()) if data.exists() else []) == before
    kept = tmp_path / "kept-demo"
    for _ in range(2):  # a folder the demo made runs again
        assert run("demo", "--latency-ms", "0", "--no-live", "--dir", str(kept)) == 0
    assert "usage recorded in" in capsys.readouterr().out


def test_empty_ledger_prints_a_friendly_report(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("metrics", "-c", str(project)) == 0
    assert "No calls recorded yet" in capsys.readouterr().out
    assert run("metrics", "agents", "-c", str(project)) == 0
    assert "No calls recorded yet" in capsys.readouterr().out
    assert run("metrics", "--since", "yesterday", "-c", str(project)) == 2
    assert "24h" in capsys.readouterr().err


# -- output and messages -------------------------------------------------------------------


def test_write_text_adds_one_newline_only_when_missing(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    write_text("a\tb  \r\n中文 \U0001f600")
    write_text("ends with newline\n")
    write_text("")
    assert (
        capsysbinary.readouterr().out == "a\tb  \r\n中文 \U0001f600\nends with newline\n\n".encode()
    )


@pytest.mark.parametrize(
    ("library", "cli_text"),
    [
        (
            "cannot listen on 127.0.0.1:80; choose another port, or port=0 for a free one",
            "cannot listen on 127.0.0.1:80; choose another port, or --port 0 for a free one",
        ),
        (
            "Use `claude-force init --force` (force=True) to overwrite the template files",
            "Use `claude-force init --force` to overwrite the template files",
        ),
        (
            "max_tokens must be an integer from 1 to 128,000, got 200000",
            "--max-tokens must be an integer from 1 to 128,000, got 200000",
        ),
        (
            "no API key: set the ANTHROPIC_API_KEY environment variable or pass api_key=...; "
            "to try claude-force without a key, run `claude-force demo`",
            "no API key: set the ANTHROPIC_API_KEY environment variable; "
            "to try claude-force without a key, run `claude-force demo`",
        ),
        ("the cache folder /x is not ours; choose another cache_dir", None),
        ("invalid config:\n  - agents.a.file: outside\n  - x: bad", None),
    ],
)
def test_messages_speak_cli(library: str, cli_text: str | None) -> None:
    said = cli_message(library)
    if cli_text is not None:
        assert said == cli_text
    assert "\n" not in said and "=" not in said.replace("==", "")
    assert one_line("invalid config:\n  - a: x\n  - b: y") == "invalid config: a: x; b: y"


def test_max_tokens_over_the_limit_names_the_option(
    project: Path, env: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("run", "code-reviewer", "x", "--max-tokens", "999999", "-c", str(project)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --max-tokens must be") and "max_tokens" not in err


# -- cache options -------------------------------------------------------------------------


def test_no_cache_and_refresh(
    project: Path, env: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("run", "code-reviewer", "Review c.py", "-c", str(project))
    assert run(*args) == 0
    assert run(*args) == 0
    assert len(env.message_requests) == 1  # the second was a hit
    assert run(*args, "--no-cache") == 0
    assert len(env.message_requests) == 2
    assert run(*args, "--refresh") == 0
    assert len(env.message_requests) == 3
    capsys.readouterr()
    assert run(*args) == 0
    assert "cached, saved" in capsys.readouterr().err
    assert len(env.message_requests) == 3
    assert run(*args, "--no-cache", "--refresh") == 2
    assert "give one of them" in capsys.readouterr().err


def test_cache_dir_option_and_environment(
    project: Path, env: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = tmp_path / "chosen-cache"
    assert run("run", "code-reviewer", "x", "--cache-dir", str(chosen), "-c", str(project)) == 0
    assert (chosen / "cache.db").exists()
    from_env = tmp_path / "env-cache"
    monkeypatch.setenv("CLAUDE_FORCE_CACHE_DIR", str(from_env))
    assert run("workflow", "ship", "Ship it", "-c", str(project)) == 0
    assert (from_env / "cache.db").exists()
    monkeypatch.chdir(tmp_path)
    assert run("cache", "stats", "--json") == 0  # no project here: cache figures only


def test_workflow_no_cache_and_refresh(
    project: Path, env: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("workflow", "ship", "Ship it", "-c", str(project))
    assert run(*args) == 0
    assert run(*args) == 0
    assert len(env.message_requests) == 3
    assert run(*args, "--refresh") == 0
    assert len(env.message_requests) == 6
    assert run(*args, "--no-cache") == 0
    assert len(env.message_requests) == 9
    capsys.readouterr()
    assert run(*args) == 0
    err = capsys.readouterr().err
    assert err.count("cached, saved") == 4  # three table rows and the summary line
    assert "; 3 steps, all cached, saved $0.0" in err


def test_failed_workflow_costs_its_finished_steps(
    project: Path, env: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    env.script(None, Fault.status(400))  # stage 1 succeeds, one agent of stage 2 fails
    assert run("workflow", "ship", "Ship it", "-c", str(project)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # no final output from a failed workflow
    summary = captured.err.splitlines()[-1]
    assert summary.startswith("workflow ship failed") and "unpriced" not in summary
    cost = summary.rsplit("$", 1)[1]
    assert float(cost) > 0
    # The stage's two agents run in parallel: either request may be the second one.
    assert re.search(
        r"error: workflow ship failed: stage 2 failed at '(test|doc)-writer'", captured.err
    )


def test_a_key_with_a_trailing_newline_is_one_clear_error_before_any_call(
    project: Path,
    env: Simulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-SECRET-MARKER\n")  # as from $(cat keyfile)
    assert run("run", "code-reviewer", "Review a.py", "--no-cache", "-c", str(project)) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: ANTHROPIC_API_KEY has leading/trailing whitespace (a newline from a file?); "
        "strip it\n"
    )
    assert env.message_requests == []


def test_ctrl_c_cancels_the_main_task_and_leaves_no_task_holding_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncio
    import gc
    import os
    import signal

    from claude_force.cli._common import run_async

    cancelled: list[bool] = []

    async def main() -> None:
        async def child() -> None:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while another task runs
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        await asyncio.ensure_future(child())

    with caplog.at_level(logging.ERROR, logger="asyncio"), pytest.raises(KeyboardInterrupt):
        run_async(main())
    gc.collect()
    assert cancelled == [True]  # the work was cancelled, not left to hold the interrupt
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_paths_in_cli_lines_escape_control_characters() -> None:
    from claude_force.cli._common import path_shown

    odd = b"out-\xff\x1b[31mred\n.jsonl".decode("utf-8", "surrogateescape")
    assert path_shown(odd) == "out-\ufffd\\x1b[31mred\\n.jsonl"
    assert path_shown("plain/results.jsonl") == "plain/results.jsonl"


def test_usd_shows_any_amount() -> None:
    """A ledger sum from a server's impossible counts must not stop the reports."""
    from decimal import Decimal

    from claude_force.cli._common import usd

    assert usd(Decimal("0.0123")) == "$0.0123" and usd(Decimal("1.5")) == "$1.50"
    assert usd(Decimal("2E+24")) == "$2.000000e+24"
    assert usd(Decimal("1234567890123456.5")) == "$1.234568e+15"
    assert usd(Decimal("12345678901234.5")) == "$12345678901234.50"


def test_a_full_stdout_with_the_cache_locked_says_a_rerun_pays(
    project: Path,
    env: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The answer is printed before closing, when its cache write may still wait: the message
    says it is cached only once the write is made."""
    import sqlite3

    from claude_force.cache import _sqlite

    monkeypatch.setattr(_sqlite, "BUSY_TIMEOUT_S", 0.01)
    monkeypatch.setenv("CLAUDE_CACHE_SECRET", "s" * 32)
    cache_dir = tmp_path / "cache"
    assert (
        run("run", "code-reviewer", "warm up", "-c", str(project), "--cache-dir", str(cache_dir))
        == 0
    )
    holder = sqlite3.connect(cache_dir / "cache.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process, holding the write lock
    capsys.readouterr()
    try:
        with open("/dev/full", "w", encoding="utf-8") as full:
            monkeypatch.setattr("sys.stdout", full)
            code = run(
                "run", "code-reviewer", "x", "-c", str(project), "--cache-dir", str(cache_dir)
            )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    err = capsys.readouterr().err
    assert code == 1
    assert "the answer was not cached, so running again sends (and pays for) a new request" in err
