"""``latency_ms`` measures the request, not the first call's SDK import and client."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from claude_force import AsyncAgentOrchestrator
from claude_force.testing import Simulator

from .conftest import API_KEY


async def no_wait(seconds: float) -> None:
    pass


@pytest.mark.parametrize("cached", [False, True])
async def test_the_first_calls_latency_starts_after_the_client_is_made(
    project: Path, sim: Simulator, tmp_path: Path, cached: bool
) -> None:
    orch = AsyncAgentOrchestrator(
        project, api_key=API_KEY, base_url=sim.base_url, sleep=no_wait,
        enable_cache=cached, cache_dir=tmp_path / "cache", enable_tracking=False,
    )  # fmt: skip
    made = orch._transport.make_client
    ready: list[float] = []

    def make_client() -> Any:
        client = made()
        ready.append(time.perf_counter())
        return client

    orch._transport.make_client = make_client  # type: ignore[method-assign]
    async with orch:
        result = await orch.execute_agent(orch.list_agents()[0], "Review x.py")
        returned = time.perf_counter()
    assert result.success and len(ready) == 1
    # Instants, not speed: the measured span lies inside [client ready, call returned].
    assert result.latency_ms <= (returned - ready[0]) * 1000
