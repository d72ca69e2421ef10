"""A paid answer is never thrown away: whatever fails after the response, the call returns it.

Each case breaks one thing the call writes to after the answer arrives (the data folder, the
ledger, the cache folder) and checks that the answer comes back, one warning is logged, and
the next identical call is answered from the cache wherever the cache still works.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from claude_force import AgentOrchestrator, AsyncAgentOrchestrator
from claude_force.testing import Simulator

from .conftest import API_KEY


def make(project: Path, sim: Simulator, **kw: Any) -> AsyncAgentOrchestrator:
    kw.setdefault("cache_dir", project.parent.parent / "cache")
    return AsyncAgentOrchestrator(project, api_key=API_KEY, base_url=sim.base_url, **kw)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def break_data_folder(project: Path) -> None:
    """The data folder cannot be created: a regular file stands where it should be."""
    (project.parent / "data").write_text("not a folder\n", encoding="utf-8")


def damage_ledger(project: Path) -> None:
    data = project.parent / "data"
    data.mkdir(exist_ok=True)
    (data / "usage.db").write_bytes(b"this is not a database" * 100)


async def twice(orch: AsyncAgentOrchestrator) -> tuple[Any, Any]:
    first = await orch.execute_agent("code-reviewer", "Review auth.py")
    second = await orch.execute_agent("code-reviewer", "Review auth.py")
    return first, second


@pytest.mark.parametrize("breakage", [break_data_folder, damage_ledger])
async def test_a_broken_ledger_never_loses_the_answer(
    project: Path, sim: Simulator, caplog: pytest.LogCaptureFixture, breakage: Any
) -> None:
    breakage(project)
    caplog.set_level(logging.WARNING, logger="claude_force")
    async with make(project, sim) as orch:
        first, second = await twice(orch)
        await orch.execute_agent("code-reviewer", "Review auth.py")
    assert first.success and first.output and not first.cached
    assert second.success and second.cached and second.output == first.output
    assert len(sim.message_requests) == 1
    assert len(warnings_of(caplog)) == 1, warnings_of(caplog)


async def test_a_damaged_ledger_is_set_aside_and_a_fresh_one_started(
    project: Path, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    damage_ledger(project)
    caplog.set_level(logging.WARNING, logger="claude_force")
    async with make(project, sim) as orch:
        await twice(orch)
    data = project.parent / "data"
    aside = [p for p in data.iterdir() if p.name.startswith("usage.db") and "damaged" in p.name]
    assert aside, sorted(p.name for p in data.iterdir())
    async with make(project, sim) as orch:
        assert len(orch.usage_rows()) == 2


async def test_an_unusable_cache_folder_runs_uncached_with_one_warning(
    project: Path, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = project.parent.parent / "blocker"
    blocker.write_text("a file, not a folder\n", encoding="utf-8")
    caplog.set_level(logging.WARNING, logger="claude_force")
    async with make(project, sim, cache_dir=blocker / "cache") as orch:
        first, second = await twice(orch)
    assert first.success and second.success and not second.cached
    assert len(sim.message_requests) == 2
    messages = warnings_of(caplog)
    assert len(messages) == 1 and "uncached" in messages[0], messages


def test_cli_prints_the_answer_when_the_data_folder_is_broken(
    project: Path, sim: Simulator, tmp_path: Path
) -> None:
    break_data_folder(project)
    env = dict(
        os.environ,
        ANTHROPIC_API_KEY=API_KEY,
        ANTHROPIC_BASE_URL=sim.base_url,
        CLAUDE_FORCE_CACHE_DIR=str(tmp_path / "cli-cache"),
    )
    argv = [sys.executable, "-m", "claude_force.cli", "run", "code-reviewer", "Review a.py"]
    argv += ["-c", str(project)]
    outs = [
        subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60) for _ in range(2)
    ]
    for out in outs:
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip(), "the answer is printed"
        assert "Traceback" not in out.stderr
        assert out.stderr.count("warning:") == 1, out.stderr
    assert outs[0].stdout == outs[1].stdout
    assert len(sim.message_requests) == 1, "the second run is a cache hit"


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_many_orchestrators_leak_no_threads_or_files(project: Path, sim: Simulator) -> None:
    async def one_async() -> None:
        async with make(project, sim) as orch:
            await orch.execute_agent("code-reviewer", "Review leak.py")

    def one_sync() -> None:
        with AgentOrchestrator(
            project, api_key=API_KEY, base_url=sim.base_url, cache_dir=project.parent / "c"
        ) as orch:
            assert orch.execute_agent("code-reviewer", "Review leak.py").success

    def one_async_run() -> None:
        asyncio.run(one_async())

    one_async_run()
    one_sync()  # warm up: imports, the SDK, the first cache and ledger files
    gc.collect()
    threads, fds = set(threading.enumerate()), _open_fds()
    for _ in range(25):
        one_async_run()
        one_sync()
    gc.collect()
    left = [t.name for t in set(threading.enumerate()) - threads]
    assert left == [], f"threads left running: {left}"
    assert _open_fds() <= fds + 2, "open file descriptors grew"


async def test_a_read_only_ledger_never_loses_the_answer_and_still_reports(
    project: Path, sim: Simulator, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    import claude_force._ledger as ledger_mod

    async with make(project, sim) as orch:
        await orch.execute_agent("code-reviewer", "Review before.py")  # one row, written
    real_connect = ledger_mod._connect

    def read_only(path: Path) -> sqlite3.Connection:  # the injected fault: SQLITE_READONLY
        conn = real_connect(path)
        conn.execute("PRAGMA query_only = ON")
        return conn

    monkeypatch.setattr(ledger_mod, "_connect", read_only)
    caplog.set_level(logging.WARNING, logger="claude_force")
    async with make(project, sim) as orch:
        first, second = await twice(orch)
        rows = orch.usage_rows()
    assert first.success and first.output and second.cached
    assert len(sim.message_requests) == 2  # before.py, then auth.py once
    assert len(warnings_of(caplog)) == 1, warnings_of(caplog)
    assert [r.cached for r in rows] == [False], "reports read the read-only ledger"
