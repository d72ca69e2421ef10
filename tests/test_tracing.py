"""The SDK's OpenTelemetry spans: made where something records them, skipped (they cost CPU
on every call) where OpenTelemetry has no tracer provider; ``open_telemetry`` decides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace

from claude_force import AsyncAgentOrchestrator, InvalidArgumentError
from claude_force.testing import Simulator

from .conftest import API_KEY


class _Span(trace.NonRecordingSpan):
    def is_recording(self) -> bool:
        return True


class _Tracer(trace.NoOpTracer):
    def __init__(self, names: list[str]) -> None:
        self.names = names

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> trace.Span:
        self.names.append(name)
        return _Span(trace.INVALID_SPAN_CONTEXT)


class _Provider(trace.NoOpTracerProvider):
    """An application's tracer provider, as far as the SDK can tell: its spans record."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _Tracer(self.names)


async def _spans(project: Path, sim: Simulator, **options: Any) -> tuple[int, object]:
    async with AsyncAgentOrchestrator(
        project, api_key=API_KEY, base_url=sim.base_url, enable_cache=False, **options
    ) as orch:
        agent = orch.list_agents()[0]
        results = await orch.execute_multiple([(agent, f"task {i}") for i in range(3)])
        assert all(r.success for r in results)
        session = await orch._transport.session()
        return len(results), session.client._tracer


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> _Provider:
    """The application has set a tracer provider (the global one cannot be unset: patched)."""
    made = _Provider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: made)
    return made


async def test_calls_make_spans_when_the_application_has_a_tracer_provider(
    project: Path, sim: Simulator, provider: _Provider
) -> None:
    calls, _ = await _spans(project, sim)
    assert len(provider.names) == calls  # one span per request


async def test_open_telemetry_false_makes_none(
    project: Path, sim: Simulator, provider: _Provider
) -> None:
    await _spans(project, sim, open_telemetry=False)
    assert provider.names == []


async def test_without_a_tracer_provider_the_client_has_no_spans_unless_asked(
    project: Path, sim: Simulator
) -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    _, tracer = await _spans(project, sim)
    assert tracer is None
    _, tracer = await _spans(project, sim, open_telemetry=True)
    assert tracer is not None


async def test_a_provider_named_in_the_environment_counts_as_set(
    project: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_TRACER_PROVIDER", "sdk_tracer_provider")
    from claude_force._transport import tracing_configured

    assert tracing_configured()


def test_a_bad_value_is_refused_by_name(project: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="open_telemetry must be True, False or None"):
        AsyncAgentOrchestrator(project, api_key=API_KEY, open_telemetry="yes")  # type: ignore[arg-type]
