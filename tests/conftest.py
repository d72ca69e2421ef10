"""Shared fixtures: the simulator over real loopback HTTP, a scaffolded project, and
isolation from the user's real cache, config and data folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from claude_force import AsyncAgentOrchestrator, init_project
from claude_force.testing import Simulator

from .standin import StandIn

API_KEY = "sk-test-secret-key-0123456789"


@pytest.fixture(autouse=True)
def _isolate(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("CLAUDE_CACHE_SECRET", "test-cache-secret")
    for name in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_AUTH_TOKEN",
        "CLAUDE_FORCE_PRICING",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def _session_sim() -> Iterator[Simulator]:
    with Simulator() as sim:
        yield sim


@pytest.fixture
def sim(_session_sim: Simulator) -> Iterator[Simulator]:
    """The shared simulator (no latency) with clean recordings and no faults."""
    _session_sim.clear_faults()
    _session_sim.reset_stats()
    _session_sim.clear_prompt_cache()
    yield _session_sim
    _session_sim.clear_faults()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A scaffolded .claude/ folder; returns the path of its claude.json."""
    init_project(tmp_path)
    return tmp_path / ".claude" / "claude.json"


def production_orchestrator() -> AsyncAgentOrchestrator:
    """The production configuration, exactly as users write it (run inside the project)."""
    return AsyncAgentOrchestrator(
        config_path=Path(".claude/claude.json"),
        max_concurrent=10,
        timeout_seconds=120,
        max_retries=3,
        enable_cache=True,
        cache_ttl_hours=24,
        cache_max_size_mb=1000,
        enable_tracking=True,
    )


@pytest.fixture
def production_env(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> Simulator:
    """The environment of the production configuration, pointed at the simulator."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", sim.base_url)
    monkeypatch.setenv("CLAUDE_CACHE_SECRET", "production-secret")
    return sim


@pytest.fixture(scope="session")
def _session_standin() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


@pytest.fixture
def standin(_session_standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> StandIn:
    """``tests/standin.py``, a server written apart from the simulator, with the key set."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", _session_standin.base_url)
    _session_standin.reset()
    return _session_standin
