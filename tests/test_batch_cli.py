"""``claude-force batch`` as a real process: killed with SIGKILL or stopped with Ctrl-C, then
run again, against the shared simulator, whose request count shows what was sent twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from claude_force import BatchSummary
from claude_force._batch_io import RECORD_KEYS
from claude_force.cli import cli as cli_group
from claude_force.cli._common import err_console, run_guarded
from claude_force.testing import Fault, Simulator

from ._support import no_hang
from .conftest import API_KEY

AGENT = "code-reviewer"


@pytest.fixture
def env(sim: Simulator) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if k != "CLAUDE_FORCE_CACHE_DIR"}
    return {
        **inherited,
        "ANTHROPIC_API_KEY": API_KEY,
        "ANTHROPIC_BASE_URL": sim.base_url,
        "PYTHONUNBUFFERED": "1",
    }


def batch_argv(project: Path, src: Path, out: Path, *extra: str) -> list[str]:
    return ["batch", str(src), "--out", str(out), "-c", str(project), "--quiet", *extra]


@contextmanager
def running(argv: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """The CLI started in the background; killed and reaped (pipes closed) on the way out."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "claude_force.cli", *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.communicate(timeout=30)


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every line of the results file; each must be a whole record."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "the results file ends in a partial line"
    got = [json.loads(raw) for raw in data.splitlines()]
    assert all(tuple(record) == RECORD_KEYS for record in got)
    return got


def wait_for(done: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    """Poll (bounded) until ``done()``: what another process writes has no clock to share,
    so its files are watched; the child dying first fails at once with its stderr."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if done():
            return
        assert proc.poll() is None, proc.communicate()[1].decode()
        time.sleep(0.005)
    raise AssertionError(f"gave up waiting: {what}")


def wait_for_lines(path: Path, count: int, proc: subprocess.Popen[bytes]) -> None:
    """Wait until the results file has ``count`` lines."""
    has = lambda: path.exists() and path.read_bytes().count(b"\n") >= count  # noqa: E731
    wait_for(has, proc, f"{path} to reach {count} lines")


def fault_pattern(count: int) -> list[Fault | None]:
    """About 5% retryable 500/529 and 2% non-retryable 400 answers, spread out."""
    pattern: list[Fault | None] = []
    for i in range(1, count + 1):
        if i % 41 == 0:
            pattern.append(Fault.status(400))
        elif i % 37 == 0:
            pattern.append(Fault.status(529, retry_after_ms="1"))
        elif i % 23 == 0:
            pattern.append(Fault.status(500, retry_after_ms="1"))
        else:
            pattern.append(None)
    return pattern


def thousand_lines(path: Path) -> tuple[Path, set[str]]:
    """1,000 lines, 10 of them malformed; returns the file and the malformed lines' ids."""
    lines: list[str] = []
    malformed: set[str] = set()
    for n in range(1, 1001):
        if n % 100 == 7:
            lines.append('{"agent": "code-reviewer", "task": ' if n % 200 == 7 else '{"task": 1}')
            malformed.add(str(n))
        else:
            lines.append(json.dumps({"agent": AGENT, "task": f"Classify ticket {n}"}))
    path.write_text("\n".join(lines) + "\n")
    return path, malformed


def test_killed_half_way_a_batch_resumes_without_resending_finished_lines(
    project: Path, env: dict[str, str], sim: Simulator, tmp_path: Path
) -> None:
    src, malformed = thousand_lines(tmp_path / "tickets.jsonl")
    out = tmp_path / "results.jsonl"
    # Faults throughout; a wall of hangs after 600 arrivals, so the run cannot end before
    # the kill.
    sim.script(*fault_pattern(600), *[Fault.hang(60)] * 50)
    with running(batch_argv(project, src, out, "--concurrency", "8"), env) as proc:
        wait_for_lines(out, 300, proc)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    before = read_records(out)
    ids_before = {r["id"] for r in before}
    assert 300 <= len(before) < 1000 and len(ids_before) == len(before)

    sim.clear_faults()
    sim.reset_stats()
    sim.script(*fault_pattern(1000))  # faults after the restart too
    again = subprocess.run(
        [sys.executable, "-m", "claude_force.cli", *batch_argv(project, src, out, "--json")],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
    )
    after = read_records(out)[len(before) :]
    summary = json.loads(again.stdout)
    # Exactly one record per input line, the kill and the restart together.
    assert sorted(int(r["id"]) for r in before + after) == list(range(1, 1001))
    assert not ids_before & {r["id"] for r in after}
    # Only lines without a record at the kill were sent again: every request the
    # simulator saw after the restart is an attempt of a new record.
    requests_after = len(sim.message_requests)
    assert requests_after == sum(r["attempts"] for r in after)
    assert requests_after >= len(after) - len(malformed - ids_before) - summary["cached"]
    assert summary["skipped"] == len(before) and summary["total"] == 1000
    assert {r["id"] for r in before + after if r["error"] and r["attempts"] == 0} >= malformed
    failed = [r for r in before + after if not r["success"]]
    assert failed and again.returncode == 1  # the 400s and malformed lines failed
    assert again.stderr.decode().splitlines()[-1].startswith("error: ")


def test_ctrl_c_keeps_finished_records_and_says_how_to_resume(
    project: Path, env: dict[str, str], sim: Simulator, tmp_path: Path
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"agent": AGENT, "task": f"T{i}"}) + "\n" for i in range(40)))
    out = tmp_path / "out.jsonl"
    sim.script(*[None] * 10, *[Fault.hang(60)] * 40)
    with running(batch_argv(project, src, out, "--concurrency", "4"), env) as proc:
        wait_for_lines(out, 10, proc)
        assert sim.wait_for_in_flight(4, timeout=60)
        proc.send_signal(signal.SIGINT)
        _out, raw_err = proc.communicate(timeout=60)
    err = raw_err.decode()
    assert proc.returncode == 130, err
    assert err.splitlines() == [
        f"stopped: interrupted; 10 lines are done in {out}; run the same command again to resume"
    ]
    assert len(read_records(out)) == 10 and _out == b""

    sim.clear_faults()
    sim.reset_stats()
    proc2 = subprocess.run(
        [sys.executable, "-m", "claude_force.cli", *batch_argv(project, src, out)],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert proc2.returncode == 0, proc2.stderr.decode()
    assert len(read_records(out)) == 40 and len(sim.message_requests) == 30


def tasks_file(tmp_path: Path, count: int) -> Path:
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(json.dumps({"agent": AGENT, "task": f"T{i}"}) + "\n" for i in range(count))
    )
    return src


def in_process(argv: list[str], env: dict[str, str]) -> int:
    with pytest.MonkeyPatch.context() as patch:
        for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
            patch.setenv(name, env[name])
        return run_guarded(cli_group, argv)


def test_json_summary_and_max_cost(
    project: Path,
    env: dict[str, str],
    sim: Simulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = tasks_file(tmp_path, 20)
    out = tmp_path / "out.jsonl"
    # A line's worst case is about $0.047 and its real cost about $0.002: lines wait for the
    # one in flight to settle rather than being refused, and the run stops once what was
    # spent leaves no room for another worst case.
    code = in_process([*batch_argv(project, src, out, "--json", "--max-cost", "0.05")], env)
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert code == 1 and summary["succeeded"] >= 2
    assert set(summary) == {
        "total",
        "complete",
        "succeeded",
        "failed",
        "malformed",
        "skipped",
        "skipped_failed",
        "unsent",
        "cached",
        "cost",
        "unpriced",
        "stopped",
        "output",
    }
    assert summary["total"] == 20 and summary["unsent"] > 0 and summary["failed"] == 0
    assert Decimal(summary["cost"]) <= Decimal("0.08")
    assert "--max-cost stopped the run" in captured.err and "unsent" in captured.err
    assert len(sim.message_requests) == summary["succeeded"]
    code = in_process([*batch_argv(project, src, out, "--json")], env)
    finished = json.loads(capsys.readouterr().out)
    assert code == 0 and finished["skipped"] == summary["succeeded"]
    assert finished["succeeded"] == summary["unsent"]


def wait_for_batch(state: Path, proc: subprocess.Popen[bytes]) -> None:
    """Wait until the state file names a created batch."""
    named = lambda: state.exists() and bool(json.loads(state.read_bytes())["batches"])  # noqa: E731
    wait_for(named, proc, f"{state} to name a batch")


def test_mode_batches_same_records_at_half_price_and_a_restart_collects(
    project: Path, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, malformed = thousand_lines(tmp_path / "tickets.jsonl")
    # A 400 for every 41st request sent, in input order in both modes (one call at a time).
    errors = [Fault.status(400) if n % 41 == 0 else None for n in range(1, 991)]
    # The batch takes 1.5 s of real time, so the kill below lands while it is processing.
    with Simulator(batch_delay=1.5) as bsim:
        benv = {**env, "ANTHROPIC_BASE_URL": bsim.base_url}
        bsim.script(*errors)
        direct_out = tmp_path / "messages.jsonl"
        argv = batch_argv(project, src, direct_out, "--no-cache", "--concurrency", "1")
        assert in_process(argv, benv) == 1
        capsys.readouterr()
        assert len(bsim.message_requests) == 990

        bsim.script_batch(*errors)
        out = tmp_path / "batches.jsonl"
        batches = ("--no-cache", "--mode", "batches", "--poll-interval", "0.2")
        with running(batch_argv(project, src, out, *batches), benv) as proc:
            wait_for_batch(out.with_name("batches.jsonl.batches.json"), proc)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        assert bsim.batches_created == 1
        # Only the malformed lines were answered before the kill: the batch was still out.
        assert {r["id"] for r in read_records(out)} == malformed
        json_out = (*batches, "--json")
        again = subprocess.run(
            [sys.executable, "-m", "claude_force.cli", *batch_argv(project, src, out, *json_out)],
            env=benv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
        )
        # Collected, not created again; no request went out one call at a time.
        assert (bsim.batches_created, bsim.batch_requests_submitted) == (1, 990)
        assert len(bsim.message_requests) == 990
    assert again.returncode == 1, again.stderr.decode()
    summary = json.loads(again.stdout)
    assert (summary["total"], summary["skipped"], summary["failed"]) == (1000, 10, 24)
    direct = {r["id"]: r for r in read_records(direct_out)}
    batched = {r["id"]: r for r in read_records(out)}
    assert len(read_records(out)) == 1000 and set(batched) == set(direct)
    for item_id, d in direct.items():
        b = batched[item_id]
        assert b["success"] == d["success"], item_id
        if item_id in malformed:
            assert b == d  # the same failed record, word for word
        elif d["success"]:
            assert (b["output"], b["usage"], b["cached"]) == (d["output"], d["usage"], False)
            assert Decimal(b["cost"]) == Decimal(d["cost"]) / 2
        else:
            assert "invalid_request_error" in b["error"] and b["cost"] == "0"
    assert sum(not r["success"] for r in batched.values()) == 10 + 24


def test_mode_batches_max_cost_leaves_the_rest_unsent_and_json_has_one_shape(
    project: Path,
    env: dict[str, str],
    sim: Simulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = tasks_file(tmp_path, 20)
    out = tmp_path / "out.jsonl"
    argv = [
        *batch_argv(project, src, out, "--json", "--mode", "batches", "--poll-interval", "0.01")
    ]
    assert in_process([*argv, "--max-cost", "0.08"], env) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert set(summary) == set(BatchSummary(out).to_dict())
    # Worst cases are reserved at full price for the whole batch, so fewer fit than cost.
    assert 0 < summary["succeeded"] < 20 and summary["unsent"] == 20 - summary["succeeded"]
    assert Decimal(summary["cost"]) <= Decimal("0.08") and summary["failed"] == 0
    assert "--max-cost stopped the run" in captured.err
    assert sim.batch_requests_submitted == summary["succeeded"] and sim.batches_created == 1
    assert in_process(argv, env) == 0
    finished = json.loads(capsys.readouterr().out)
    assert (
        finished["skipped"] == summary["succeeded"] and finished["succeeded"] == summary["unsent"]
    )
    assert sim.batch_requests_submitted == 20 and len(sim.message_requests) == 0


def test_bad_options_are_usage_errors(
    project: Path, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("{}\n")
    out = tmp_path / "o.jsonl"
    assert in_process(batch_argv(project, src, out, "--max-cost", "lots"), env) == 2
    assert "--max-cost 'lots' is not an amount of dollars" in capsys.readouterr().err
    assert in_process(batch_argv(project, tmp_path / "nope.jsonl", out), env) == 2
    assert "cannot read the batch input" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["-", "/dev/stdin"])
def test_input_from_a_pipe_is_read_once_and_runs(
    project: Path, env: dict[str, str], sim: Simulator, tmp_path: Path, name: str
) -> None:
    lines = "".join(json.dumps({"agent": AGENT, "task": f"Piped {i}"}) + "\n" for i in range(3))
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "claude_force.cli", *batch_argv(project, Path(name), out)],
        env=env,
        input=lines.encode(),
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert sorted(r["id"] for r in read_records(out)) == ["1", "2", "3"]
    assert len(sim.message_requests) == 3


def test_input_from_a_fifo_whose_writer_closed_runs(
    project: Path, env: dict[str, str], sim: Simulator, tmp_path: Path
) -> None:
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "w", encoding="utf-8") as handle:  # waits for the one reader
            handle.write(json.dumps({"agent": AGENT, "task": "Through a FIFO"}) + "\n")

    writer = threading.Thread(target=write)
    writer.start()
    out = tmp_path / "out.jsonl"
    with no_hang(30):
        code = in_process(batch_argv(project, fifo, out), env)
    writer.join()
    assert code == 0 and [r["id"] for r in read_records(out)] == ["1"]


@dataclass
class BatchRun:
    """``claude-force batch`` run in this process on the project: exit code, stdout, stderr."""

    project: Path
    env: dict[str, str]
    capsys: pytest.CaptureFixture[str]

    def __call__(self, src: Path, out: Path, *extra: str) -> tuple[int, str, str]:
        argv = ["batch", str(src), "--out", str(out), "-c", str(self.project), *extra]
        code = in_process(argv, self.env)
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err


@pytest.fixture
def batch_run(project: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> BatchRun:
    return BatchRun(project, env, capsys)


def test_a_resumed_run_with_earlier_failures_says_so_in_its_summary(
    batch_run: BatchRun, sim: Simulator, tmp_path: Path
) -> None:
    src, out = tasks_file(tmp_path, 6), tmp_path / "out.jsonl"
    sim.script(None, None, *[Fault.status(400)] * 4)
    options = ("--no-cache", "--concurrency", "1")
    assert batch_run(src, out, *options, "--json", "-q")[0] == 1
    code, stdout, err = batch_run(src, out, *options, "--json", "-q")
    summary = json.loads(stdout)  # nothing was sent again: the four failures are skipped
    assert code == 1 and len(sim.message_requests) == 6
    assert (summary["complete"], summary["skipped"], summary["skipped_failed"]) == (False, 6, 4)
    assert summary["failed"] + summary["skipped_failed"] == 4
    assert "4 of 6 lines failed (4 skipped, failed in an earlier run)" in err
    code, _, err = batch_run(src, out, *options)
    assert code == 1 and "6 skipped (4 of them failed), 0 unsent" in err
    code, stdout, _ = batch_run(src, out, *options, "--json", "-q", "--retry-failed")
    finished = json.loads(stdout)
    assert code == 0
    assert (finished["complete"], finished["succeeded"], finished["skipped_failed"]) == (True, 4, 0)


def test_batches_progress_is_whole_on_an_80_column_stderr(
    batch_run: BatchRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(err_console, "_width", 80)  # stderr is not a terminal here
    src, out = tasks_file(tmp_path, 6), tmp_path / "out.jsonl"
    options = ("--no-cache", "--mode", "batches", "--poll-interval", "0.01")
    code, _, err = batch_run(src, out, *options)
    assert code == 0 and "…" not in err
    assert "6/6 0 failed $" in err and " 0 cached\n" in err
    assert "1 batch at the service: 0 processing, 6 succeeded, 0 errored, 0 expired\n" in err
    assert max(len(line) for line in err.splitlines()[:2]) <= 80


def test_lines_refused_before_sending_are_named_so(
    batch_run: BatchRun, sim: Simulator, tmp_path: Path
) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = [{"agent": AGENT, "task": "fine"}, {"agent": "no-such-agent", "task": "x"}]
    src.write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, _, err = batch_run(src, out, "--no-cache", "-q")
    assert code == 1 and len(sim.message_requests) == 1
    assert "1 of 2 lines failed (1 refused before sending)" in err
    assert "fix them (or the config)" in err
