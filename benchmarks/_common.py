"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def simulator_process(*, latency_ms: float = 0.0) -> Iterator[str]:
    """Run the simulator in its own process, so it does not share our GIL."""
    port = free_port()
    code = (
        "from claude_force.testing import serve; "
        f"serve('127.0.0.1', {port}, latency_ms={latency_ms})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("simulator did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def demo_project(tmp: Path) -> Path:
    from claude_force import init_project

    init_project(tmp)
    return tmp / ".claude" / "claude.json"


def median(values: list[float]) -> float:
    return statistics.median(values)


def env_without_cache_secret() -> dict[str, str]:
    return dict(os.environ)
