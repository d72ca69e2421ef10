"""What a hostile user found in the CLI, each pinned: bounded task input, Ctrl-C at any moment,
closed or full standard output, the cache folder from the environment, and messages that
speak the command line without rewording what the library did not write.

Process behaviour (exit codes, signals, file descriptors) is tested on real processes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from claude_force import APIError, ConfigError, InvalidArgumentError
from claude_force._ledger import _retry_message
from claude_force.cli import cli as cli_group
from claude_force.cli._common import (
    _library_worded,
    cli_message,
    config_message,
    error_line,
    one_line,
    run_guarded,
)
from claude_force.cli._task import TASK_LIMIT, read_task
from claude_force.testing import Fault, Simulator

from .conftest import API_KEY

CLI = [sys.executable, "-m", "claude_force.cli"]


@pytest.fixture
def env(sim: Simulator) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if k != "CLAUDE_FORCE_CACHE_DIR"}
    return {
        **inherited,
        "ANTHROPIC_API_KEY": API_KEY,
        "ANTHROPIC_BASE_URL": sim.base_url,
        "PYTHONUNBUFFERED": "1",
    }


def cli(*argv: str, env: dict[str, str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    options: dict[str, object] = {
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
        **kwargs,
    }
    return subprocess.run([*CLI, *argv], env=env, timeout=120, check=False, **options)  # type: ignore[call-overload, no-any-return]


def one_error(proc: subprocess.CompletedProcess[bytes], code: int) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# -- 1. the task is read with a bound -----------------------------------------------------------


def test_a_task_file_without_end_stops_at_the_limit(project: Path, env: dict[str, str]) -> None:
    proc = cli("run", "code-reviewer", "-f", "/dev/zero", "-c", str(project), env=env)
    line = one_error(proc, 2)
    assert line == (
        "error: the task file /dev/zero is longer than the limit of 500,000 characters; "
        "split it into smaller tasks"
    )


def test_endless_standard_input_stops_at_the_limit(
    project: Path, env: dict[str, str], sim: Simulator
) -> None:
    # `yes | claude-force run code-reviewer -`: the writer never ends by itself.
    script = 'yes | "$0" -m claude_force.cli run code-reviewer - -c "$1"'
    proc = subprocess.run(
        ["sh", "-c", script, sys.executable, str(project)],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    line = one_error(proc, 2)
    assert "the task on standard input is longer than the limit of 500,000" in line
    assert sim.message_requests == []


def test_the_limit_is_the_library_default() -> None:
    assert TASK_LIMIT == 500_000


@pytest.mark.parametrize(("size", "fits"), [(10, True), (11, False)])
def test_read_task_allows_exactly_the_limit(tmp_path: Path, size: int, fits: bool) -> None:
    task = tmp_path / "task.md"
    task.write_text("é" * size, encoding="utf-8")  # characters, not bytes
    if fits:
        assert read_task(None, task, limit=10) == "é" * 10
    else:
        with pytest.raises(InvalidArgumentError, match="longer than the limit of 10 characters"):
            read_task(None, task, limit=10)


def test_read_task_refuses_text_that_is_not_utf8(tmp_path: Path) -> None:
    task = tmp_path / "task.bin"
    task.write_bytes(b"ok \xff\xfe")
    with pytest.raises(InvalidArgumentError, match=r"is not UTF-8 text \(byte 0xff"):
        read_task(None, task)


def test_read_task_waits_for_a_fifo_writer_that_comes_later(tmp_path: Path) -> None:
    fifo = tmp_path / "task.fifo"
    os.mkfifo(fifo)

    def writer() -> None:
        with fifo.open("w", encoding="utf-8") as fh:  # blocks until the reader opens
            fh.write("review this diff\n")

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert read_task(None, fifo) == "review this diff\n"
    finally:
        thread.join(timeout=30)


def test_a_pipe_as_the_task_file_works(project: Path, env: dict[str, str], sim: Simulator) -> None:
    # What `-f <(git diff)` passes: /dev/fd/N, the read end of a pipe.
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [*CLI, "run", "code-reviewer", "-f", f"/dev/fd/{read_end}", "-c", str(project)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=(read_end,),
    )
    os.close(read_end)
    with os.fdopen(write_end, "wb") as writer:
        writer.write(b"diff --git a/x b/x\n")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert out.startswith(b"Simulated reply")
    (request,) = sim.message_requests
    assert "diff --git a/x b/x" in json.dumps(request.body)


def test_a_fifo_nobody_writes_to_says_so_and_ctrl_c_stops_it(
    project: Path, env: dict[str, str], tmp_path: Path
) -> None:
    fifo = tmp_path / "task.fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [*CLI, "run", "code-reviewer", "-f", str(fifo), "-c", str(project)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        note = proc.stderr.readline().decode()  # printed once the wait has lasted a moment
        assert note == (
            f"waiting for something to write to {fifo}, a FIFO (named pipe) (Ctrl-C to stop)\n"
        )
        proc.send_signal(signal.SIGINT)
        out, rest = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130
    assert rest.decode().strip() == "stopped: interrupted" and out == b""


# -- 2. the cache folder from the environment -----------------------------------------------


def test_a_cache_dir_env_naming_a_file_warns_and_runs(
    project: Path, env: dict[str, str], tmp_path: Path, sim: Simulator
) -> None:
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    proc = cli(
        "run",
        "code-reviewer",
        "x",
        "-c",
        str(project),
        env={**env, "CLAUDE_FORCE_CACHE_DIR": str(a_file)},
    )
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert proc.stdout.startswith(b"Simulated reply")
    assert err.startswith(f"warning: the response cache cannot be used (cache directory {a_file}")
    assert err.splitlines()[0].endswith("; running uncached")
    assert "choose another --cache-dir (or set CLAUDE_FORCE_CACHE_DIR in the environment)" in err
    assert "(--no-cache)" in err and "enable_cache" not in err
    assert len(sim.message_requests) == 1


def test_a_cache_dir_option_naming_a_file_is_a_usage_error(
    project: Path, env: dict[str, str], tmp_path: Path, sim: Simulator
) -> None:
    # Typed on the command line: refused before anything is sent (documented in --help).
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    proc = cli("run", "code-reviewer", "x", "-c", str(project), "--cache-dir", str(a_file), env=env)
    assert "Invalid value for '--cache-dir'" in one_error(proc, 2)
    assert sim.message_requests == []


# -- 3. messages: phrases reworded, paths and API text verbatim -----------------------------


@pytest.mark.parametrize(
    ("library", "cli_text"),
    [
        (
            "usage ledger folder /p/.claude/data cannot be created (a file is in the way); calls "
            "are not being recorded. Make it a writable folder, or pass ledger_path= naming a "
            "file in one",
            "usage ledger folder /p/.claude/data cannot be created (a file is in the way); calls "
            "are not being recorded. Make it a writable folder",
        ),
        (
            "usage ledger /p/u.db cannot be written (readonly); calls are not being recorded. "
            "Make the file and its folder writable, or pass ledger_path= naming a writable file",
            "usage ledger /p/u.db cannot be written (readonly); calls are not being recorded. "
            "Make the file and its folder writable",
        ),
        (
            "task is 600,000 characters, over the limit of 500,000; split it, or raise "
            "max_task_chars= on the orchestrator",
            "task is 600,000 characters, over the limit of 500,000; split it",
        ),
        (
            "cache secret directory /h is not a directory; set CLAUDE_CACHE_SECRET or pass "
            "cache_secret",
            "cache secret directory /h is not a directory; set CLAUDE_CACHE_SECRET",
        ),
        (
            "cache directory /c is not a directory; choose another cache_dir (or set "
            "CLAUDE_FORCE_CACHE_DIR in the environment), or run without the cache "
            "(enable_cache=False)",
            "cache directory /c is not a directory; choose another --cache-dir (or set "
            "CLAUDE_FORCE_CACHE_DIR in the environment), or run without the cache (--no-cache)",
        ),
        # A bare keyword is left alone: it may be a JSON path or a claude.json key.
        (
            "agents.a.max_tokens: expected an integer",
            "agents.a.max_tokens: expected an integer",
        ),
        ("the cache_dir field of the report", "the cache_dir field of the report"),
    ],
)
def test_cli_words_replace_phrases_only(library: str, cli_text: str) -> None:
    assert cli_message(library) == cli_text


def test_a_config_error_keeps_its_json_paths(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads(project.read_text())
    data["agents"]["test-writer"]["max_tokens"] = True
    project.write_text(json.dumps(data))
    assert run_guarded(cli_group, ["agents", "-c", str(project)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: invalid configuration in {project}: agents.test-writer.max_tokens: "
        "expected an integer from 1 to 128000, got true\n"
    )


def test_api_error_text_is_never_reworded(
    project: Path, env: dict[str, str], sim: Simulator
) -> None:
    service_text = "max_tokens: 9 > 8, force=True and cache_dir are not allowed"
    sim.script(Fault.status(400, message=service_text))
    proc = cli("run", "code-reviewer", "x", "-c", str(project), env=env)
    line = one_error(proc, 1)
    assert service_text in line


def test_which_errors_are_reworded() -> None:
    assert _library_worded(InvalidArgumentError("x"))
    assert not _library_worded(ConfigError("x", problems=["a.force=True: bad"]))
    assert not _library_worded(APIError("force=True", status_code=400))
    assert not _library_worded(OSError("force=True"))
    assert "force=True" in error_line("force=True", rewrite=False)


def test_one_line_joins_a_head_without_colon_with_one() -> None:
    assert one_line("invalid configuration in /p\n  - a: x\n  - b: y") == (
        "invalid configuration in /p: a: x; b: y"
    )


@pytest.mark.parametrize(
    ("problems", "shown"),
    [
        (
            ["line 1, column 5: Expecting ','"],
            "invalid JSON in /p at line 1, column 5: Expecting ','",
        ),
        (
            ["agents.a: unknown"],
            "invalid JSON in /p at line 1, column 5: Expecting ','\n  - agents.a: unknown",
        ),
    ],
)
def test_a_config_error_does_not_repeat_its_only_problem(problems: list[str], shown: str) -> None:
    exc = ConfigError("invalid JSON in /p at line 1, column 5: Expecting ','", problems=problems)
    assert config_message(exc) == shown


def test_an_empty_claude_json_says_it_is_empty(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project.write_bytes(b"")
    assert run_guarded(cli_group, ["agents", "-c", str(project)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {project}: the file is empty; a claude.json holds a JSON object")
    assert err.count("the file is empty") == 1 and "Expecting value" not in err


# -- 4. Ctrl-C at any moment --------------------------------------------------------------------

# Sends SIGINT to itself while `claude_force` is being imported, as an early Ctrl-C would.
_EARLY_CTRL_C = """
import os, signal, sys
class Trip:
    def find_spec(self, name, path=None, target=None):
        if name == "claude_force._config":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Trip())
from claude_force_entry import main
main(["--version"])
"""


def test_ctrl_c_while_importing_exits_130_without_a_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _EARLY_CTRL_C], capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 130, proc.stderr.decode()
    assert proc.stderr == b"stopped: interrupted\n" and proc.stdout == b""


# Ctrl-C while claude_force_entry itself loads (its first import), before any handler of ours.
_CTRL_C_IN_THE_ENTRY_MODULE = """
import os, sys
class Trip:
    def find_spec(self, name, path=None, target=None):
        if name == "signal":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), 2)  # SIGINT; the signal module must not be loaded yet
        return None
assert "signal" not in sys.modules
sys.meta_path.insert(0, Trip())
from claude_force_entry import main
main(["--version"])
"""

# Ctrl-C after the import, in the console script's own lines before main() is called.
_CTRL_C_BEFORE_MAIN = """
import os, re, signal, sys
from claude_force_entry import main
os.kill(os.getpid(), signal.SIGINT)
sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
main(["--version"])
"""


@pytest.mark.parametrize(
    "script",
    [_CTRL_C_IN_THE_ENTRY_MODULE, _CTRL_C_BEFORE_MAIN],
    ids=["while-the-entry-module-loads", "before-main"],
)
def test_ctrl_c_before_main_runs_exits_130_without_a_traceback(script: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 130, proc.stderr.decode()
    assert proc.stderr == b"stopped: interrupted\n" and proc.stdout == b""


def test_ctrl_c_right_after_the_console_script_starts() -> None:
    # Whatever moment it lands in: exit 130 (or death by SIGINT, which a shell reports as 130
    # too, when it lands before Python installed its handler), never a traceback.
    script = Path(sys.executable).with_name("claude-force")
    for _ in range(5):
        proc = subprocess.Popen(
            [str(script), "--version"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode in (130, -signal.SIGINT), err.decode()
        assert b"Traceback" not in err


def test_a_ctrl_c_later_still_reaches_the_cli_as_keyboardinterrupt() -> None:
    # The early handler stops at once; main() gives SIGINT back to Python before the CLI
    # loads, so commands can still clean up. A parent's ignored SIGINT stays ignored.
    code = (
        "import signal, claude_force_entry as e\n"
        "assert signal.getsignal(signal.SIGINT) is e._on_early_sigint\n"
        "try:\n"
        "    e.main(['--version'])\n"
        "except SystemExit:\n"
        "    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "import importlib; importlib.reload(e)\n"
        "assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, capture_output=True)


def test_the_console_script_enters_through_the_light_module() -> None:
    from importlib.metadata import entry_points

    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "claude-force"]
    assert script.value == "claude_force_entry:main"
    code = "import sys, claude_force_entry; assert 'claude_force' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.fixture
def simulator_process(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [*CLI, "simulate", "--port", "0"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_simulate_exits_130_on_ctrl_c(simulator_process: subprocess.Popen[bytes]) -> None:
    assert simulator_process.stdout is not None
    assert simulator_process.stdout.readline().startswith(b"simulator on http://127.0.0.1:")
    simulator_process.send_signal(signal.SIGINT)
    _out, err = simulator_process.communicate(timeout=60)
    assert simulator_process.returncode == 130
    assert err.decode().strip() == "stopped: interrupted"


# -- 6. standard output closed or full ----------------------------------------------------------


def test_a_closed_stdout_is_refused_before_paying(
    project: Path, env: dict[str, str], sim: Simulator
) -> None:
    script = '"$0" -m claude_force.cli run --no-cache code-reviewer x -c "$1" >&-'
    proc = subprocess.run(
        ["sh", "-c", script, sys.executable, str(project)],
        env=env,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=120,
        check=False,
    )
    line = one_error(proc, 2)
    assert line.startswith("error: standard output is closed, so the answer would be lost;")
    assert "nothing was sent" in line
    assert sim.message_requests == []


def test_a_full_stdout_says_the_cached_answer_is_free_next_time(
    project: Path, env: dict[str, str], sim: Simulator
) -> None:
    with open("/dev/full", "wb") as full:
        proc = cli("run", "code-reviewer", "x", "-c", str(project), env=env, stdout=full)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "Exception ignored" not in err
    assert err.startswith(
        "error: cannot write the answer to standard output (No space left on device); "
        "the answer is in the response cache: run the same command again to get it at no cost"
    )
    again = cli("run", "code-reviewer", "x", "-c", str(project), env=env)
    assert again.returncode == 0 and again.stdout.startswith(b"Simulated reply")
    assert len(sim.message_requests) == 1  # the second run was free


def test_a_full_stdout_without_the_cache_says_a_rerun_pays(
    project: Path, env: dict[str, str]
) -> None:
    with open("/dev/full", "wb") as full:
        proc = cli(
            "run", "--no-cache", "code-reviewer", "x", "-c", str(project), env=env, stdout=full
        )
    assert "the answer was not cached, so running again sends (and pays for) a new request" in (
        one_error(proc, 1)
    )


# -- 8. wording -------------------------------------------------------------------------------


def test_a_locked_ledger_says_it_is_locked(tmp_path: Path) -> None:
    message = _retry_message(tmp_path / "u.db", sqlite3.OperationalError("database is locked"), 1)
    assert f"usage ledger {tmp_path / 'u.db'} is locked by another process" in message
    assert "dropping 1 row from the record" in message and "disk space" not in message
    full = _retry_message(tmp_path / "u.db", sqlite3.OperationalError("disk is full"), 2)
    assert "writing 2 rows failed" in full and "Check free disk space" in full


def test_init_hint_is_never_wrapped(tmp_path: Path, env: dict[str, str]) -> None:
    proc = cli("init", str(tmp_path), env={**env, "COLUMNS": "30"})
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    assert lines[-2:] == [
        "next: claude-force agents",
        "      claude-force run code-reviewer 'Review this diff'",
    ]
    assert all(line.startswith("wrote ") for line in lines[:-2])
