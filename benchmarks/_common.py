"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from claude_force.testing import RateLimits


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def simulator_process(
    *,
    latency_ms: float = 0.0,
    rate_limits: RateLimits | None = None,
    stats_out: dict[str, Any] | None = None,
) -> Iterator[str]:
    """Run the simulator in its own process, so it does not share our GIL.

    With ``rate_limits`` it enforces them; ``stats_out`` (a dict) receives its
    ``rate_limit_stats`` (admitted and rejected requests, tokens charged) once it stops.
    """
    port = free_port()
    code = (
        "import json, signal, threading\n"
        "from claude_force.testing import RateLimits, serve\n"
        "stop = threading.Event()\n"
        "signal.signal(signal.SIGTERM, lambda *_: stop.set())\n"
        "box = []\n"
        f"serve('127.0.0.1', {port}, latency_ms={latency_ms}, rate_limits={rate_limits!r}, "
        "on_ready=box.append, stop_event=stop)\n"
        "print(json.dumps(box[0].rate_limit_stats), flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
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
        out, _ = proc.communicate(timeout=10)
        if stats_out is not None and out.strip():
            stats_out.update(json.loads(out.strip().splitlines()[-1]))


def demo_project(tmp: Path) -> Path:
    from claude_force import init_project

    init_project(tmp)
    return tmp / ".claude" / "claude.json"


def median(values: list[float]) -> float:
    return statistics.median(values)


def env_without_cache_secret() -> dict[str, str]:
    return dict(os.environ)
