"""The CLI as a real process: exact answers on stdout, one-line failures, exit codes.

Each test starts ``python -m claude_force.cli`` against the shared simulator over loopback
HTTP and looks only at what a user sees: the bytes on stdout and stderr and the exit code.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import socket
import subprocess
import sys
import threading
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from claude_force.cli import cli as cli_group
from claude_force.cli._common import run_guarded
from claude_force.testing import Fault, Simulator

from .conftest import API_KEY

# Long lines, trailing spaces, tabs, a bare CR and CRLF, CJK, emoji, combining marks, and a
# zero-width joiner: everything a terminal-width renderer would rewrap, pad or strip.
AWKWARD_TEXT = (
    "x" * 300
    + "   \n"
    + "\tindented with a tab\tand one inside   \n"
    + "carriage\rreturn and crlf\r\n"
    + "中文的回答很长" * 30
    + "\n"
    + "emoji \U0001f600\U0001f469‍\U0001f4bb and combining e\u0301 a\u0308 n\u0303  \n"
    + "last line without newline  "
)


@pytest.fixture
def env(sim: Simulator, tmp_path: Path) -> dict[str, str]:
    """The environment of a user pointed at the simulator, with a wide 'terminal'."""
    inherited = {k: v for k, v in os.environ.items() if k != "CLAUDE_FORCE_CACHE_DIR"}
    return {
        **inherited,
        "ANTHROPIC_API_KEY": API_KEY,
        "ANTHROPIC_BASE_URL": sim.base_url,
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
    }


def cli(
    *argv: str, env: dict[str, str], stdout: int | object = subprocess.PIPE
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "claude_force.cli", *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,  # type: ignore[arg-type]
        stderr=subprocess.PIPE,
        timeout=120,
    )


def in_process(*argv: str, env: dict[str, str]) -> None:
    """Run a command in this process (to prepare state quickly); it must succeed."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
            patch.setenv(name, env[name])
        assert run_guarded(cli_group, list(argv)) == 0


def assert_clean_failure(proc: subprocess.CompletedProcess[bytes], code: int) -> str:
    """Exit ``code``, no traceback, and stderr is exactly one ``error:`` line."""
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


# -- the answer, byte for byte ---------------------------------------------------------------


def test_run_to_a_file_and_a_pipe_is_byte_for_byte(
    project: Path, env: dict[str, str], sim: Simulator, tmp_path: Path
) -> None:
    sim.script(Fault.reply(AWKWARD_TEXT))
    expected = (AWKWARD_TEXT + "\n").encode("utf-8")  # one final newline, added
    out = tmp_path / "out.txt"
    with out.open("wb") as fh:
        first = cli("run", "code-reviewer", "Review x.py", "-c", str(project), env=env, stdout=fh)
    assert first.returncode == 0, first.stderr.decode()
    assert out.read_bytes() == expected
    err = first.stderr.decode()
    summary, limits = err.splitlines()  # decoration on stderr: the call, the rate limits
    assert "tokens" in summary and "$" in summary
    assert limits.startswith("limits sonnet: req ")
    again = cli("run", "code-reviewer", "Review x.py", "-c", str(project), env=env)
    assert again.stdout == expected  # from the cache, through a pipe
    assert len(sim.message_requests) == 1
    assert "cached, saved $0.0" in again.stderr.decode()


def test_run_to_a_terminal_is_byte_for_byte(
    project: Path, env: dict[str, str], sim: Simulator
) -> None:
    sim.script(Fault.reply(AWKWARD_TEXT))
    controller, terminal = pty.openpty()
    tty.setraw(terminal)  # no newline translation: what the program writes is what we read
    received = bytearray()

    def read_all() -> None:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's last writer closed it
                return
            if not chunk:
                return
            received.extend(chunk)

    reader = threading.Thread(target=read_all)
    reader.start()
    try:
        proc = cli(
            "run", "code-reviewer", "Review z.py", "-c", str(project), env=env, stdout=terminal
        )
    finally:
        os.close(terminal)
        reader.join(timeout=30)
        os.close(controller)
    assert proc.returncode == 0, proc.stderr.decode()
    assert bytes(received) == (AWKWARD_TEXT + "\n").encode("utf-8")


# -- failures: one line, the fix, a documented exit code -------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        yield int(held.getsockname()[1])


def test_metrics_serve_on_a_busy_port(project: Path, env: dict[str, str], busy_port: int) -> None:
    proc = cli("metrics", "serve", "--port", str(busy_port), "-c", str(project), env=env)
    line = assert_clean_failure(proc, 2)
    assert str(busy_port) in line and "--port 0" in line and "port=" not in line


def test_init_into_an_unwritable_folder(env: dict[str, str]) -> None:
    # /sys refuses new folders to every user, root included.
    proc = cli("init", "/sys/claude-force-project", env=env)
    line = assert_clean_failure(proc, 2)
    assert "/sys/claude-force-project" in line


@pytest.mark.parametrize(
    ("fault", "code", "needle"),
    [
        ("OSError(28, 'No space left on device', '/data/usage.db')", 2, "No space left"),
        ("sqlite3.OperationalError('database is locked')", 2, "move it aside"),
        ("sqlite3.DatabaseError('file is not a database')", 2, "file is not a database"),
        ("RuntimeError('something nobody expected')", 1, "CLAUDE_FORCE_DEBUG=1"),
    ],
)
def test_any_exception_is_one_line(
    project: Path, env: dict[str, str], fault: str, code: int, needle: str
) -> None:
    # The fault is injected into the library call the command makes; the CLI is unchanged.
    script = (
        "import sqlite3, sys\n"
        "import claude_force\n"
        "def broken(self, *args, **kwargs):\n"
        f"    raise {fault}\n"
        "claude_force.AsyncAgentOrchestrator.list_agents = broken\n"
        "from claude_force.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "agents", "-c", str(project)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    line = assert_clean_failure(proc, code)
    assert needle in line


def test_debug_shows_the_traceback(project: Path, env: dict[str, str]) -> None:
    script = (
        "import sys\n"
        "import claude_force\n"
        "def broken(self):\n"
        "    raise RuntimeError('boom')\n"
        "claude_force.AsyncAgentOrchestrator.list_agents = broken\n"
        "from claude_force.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "agents", "-c", str(project)],
        env={**env, "CLAUDE_FORCE_DEBUG": "1"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr.decode() and "RuntimeError: boom" in proc.stderr.decode()


def test_a_damaged_ledger_never_shows_a_traceback(project: Path, env: dict[str, str]) -> None:
    ledger = project.parent / "data" / "usage.db"
    ledger.parent.mkdir(parents=True, exist_ok=True)
    ledger.write_bytes(b"this is not a database, just bytes " * 200)
    proc = cli("metrics", "-c", str(project), env=env)
    err = proc.stderr.decode()
    assert "Traceback" not in err
    # Either the ledger is set aside with a warning and the report runs, or the command
    # stops with one error line saying how to recover.
    assert proc.returncode in (0, 2), err
    assert all(line.startswith(("warning: ", "error: ")) for line in err.splitlines()), err


def test_a_damaged_cache_warns_in_one_line(
    project: Path, env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    (folder / "cache.db").write_bytes(b"garbage, not SQLite " * 500)
    proc = cli("cache", "stats", "--json", "--cache-dir", str(folder), env=env)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    warnings = err.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: cache database"), err
    assert json.loads(proc.stdout)["entries"] == 0


def test_library_warnings_are_warning_lines(
    project: Path, env: dict[str, str], sim: Simulator
) -> None:
    proc = cli(
        "run", "code-reviewer", "x", "--model", "claude-unheard-of-9", "-c", str(project), env=env
    )
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    lines = err.splitlines()
    assert lines[0].startswith("warning: model 'claude-unheard-of-9' is not in the price table")
    assert lines[1].endswith("unpriced")  # the usage line: unknown, never $0
    assert lines[2].startswith("limits claude-unheard-of-9: ")  # the model's own class
    assert len(lines) == 3


# -- workflows: the table, its states, its cost ----------------------------------------------


def test_unknown_workflow_draws_no_table(project: Path, env: dict[str, str]) -> None:
    proc = cli("workflow", "shipp", "x", "-c", str(project), env=env)
    line = assert_clean_failure(proc, 2)
    assert "'shipp'" in line and "ship" in line


def test_failed_stage_skips_later_steps_and_costs_what_ran(
    project: Path, env: dict[str, str], sim: Simulator
) -> None:
    sim.script(Fault.status(400))  # stage 1 fails; stage 2 never starts
    proc = cli("workflow", "ship", "Ship it", "-c", str(project), env=env)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err
    rows = {line.split("│")[2].strip(): line for line in err.splitlines() if line.count("│") > 4}
    assert "failed" in rows["code-reviewer"]
    assert "skipped" in rows["test-writer"] and "skipped" in rows["doc-writer"]
    assert "┘\n" in err  # the table ends with a newline, not glued to the next line
    assert err.splitlines()[-1].endswith("$0.00")  # nothing was billed: zero, not unpriced


def test_cached_steps_show_the_cost_saved(
    project: Path, env: dict[str, str], sim: Simulator
) -> None:
    argv = ("workflow", "ship", "Ship the thing", "-c", str(project))
    in_process(*argv, env=env)  # fills the cache
    again = cli(*argv, env=env)
    assert again.returncode == 0
    assert again.stderr.decode().count("cached, saved $0.0") == 4  # 3 rows, the summary
    assert again.stdout.decode().startswith("Simulated reply")  # the final output
    assert len(sim.message_requests) == 3


def test_ctrl_c_cancels_the_workflow(project: Path, env: dict[str, str], sim: Simulator) -> None:
    sim.script(Fault.hang(60))
    proc = subprocess.Popen(
        [sys.executable, "-m", "claude_force.cli", "workflow", "ship", "x", "-c", str(project)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert sim.wait_for_in_flight(1, timeout=60)
        proc.send_signal(signal.SIGINT)
        _out, raw_err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    err = raw_err.decode()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.count("cancelled") == 3
    assert err.splitlines()[-1] == "stopped: interrupted"


def test_ctrl_c_stops_a_run(project: Path, env: dict[str, str], sim: Simulator) -> None:
    sim.script(Fault.hang(60))
    proc = subprocess.Popen(
        [sys.executable, "-m", "claude_force.cli", "run", "code-reviewer", "x", "-c", str(project)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert sim.wait_for_in_flight(1, timeout=60)
        proc.send_signal(signal.SIGINT)
        out, raw_err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert raw_err.decode().strip() == "stopped: interrupted" and out == b""


# -- cache stats from a fresh process --------------------------------------------------------


def test_cache_stats_are_persistent(project: Path, env: dict[str, str], sim: Simulator) -> None:
    for _ in range(2):  # one miss, one hit
        in_process("run", "code-reviewer", "Review a.py", "-c", str(project), env=env)
    proc = cli("cache", "stats", "--json", "-c", str(project), env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    stats = json.loads(proc.stdout)
    assert stats["entries"] == 1 and stats["size_bytes"] > 0 and stats["max_size_bytes"] > 0
    usage = stats["usage"]
    assert (usage["calls"], usage["cache_hits"], usage["hit_rate"]) == (2, 1, 0.5)
    assert float(usage["saved_usd"]) > 0
    table = cli("cache", "stats", "-c", str(project), env=env).stdout.decode()
    assert "50.0%" in table and "entries" in table
