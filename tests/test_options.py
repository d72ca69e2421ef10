"""Orchestrator options: every bad value is refused at construction, naming the option."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from claude_force import (
    AgentOrchestrator,
    AsyncAgentOrchestrator,
    InvalidArgumentError,
    OrchestratorOptions,
    ResponseCache,
)

BAD = [
    ({"max_concurent": 3}, "did you mean 'max_concurrent'"),
    ({"timeout_seconds": math.inf}, "timeout_seconds must be a number of seconds > 0"),
    ({"cache_ttl_hours": math.nan}, "cache_ttl_hours must be a number of hours > 0"),
    ({"deadline_seconds": 0}, "deadline_seconds"),
    ({"max_retries": -1}, "max_retries"),
    ({"max_concurrent": True}, "max_concurrent"),
    ({"enable_cache": "no"}, "enable_cache must be True or False"),
    ({"enable_tracking": None}, "enable_tracking must be True or False"),
    ({"cache_exclude_agents": 5}, "cache_exclude_agents must be a list"),
    ({"cache_exclude_agents": "code-reviewer"}, "cache_exclude_agents must be a list"),
    ({"cache_exclude_agents": [1]}, "agent names"),
    ({"cache_dir": 5}, "cache_dir must be a path"),
    ({"ledger_path": ""}, "ledger_path must be a usable path"),
    ({"cache_redis_url": "http://localhost"}, "cache_redis_url must be a Redis URL"),
    ({"cache_redis_url": 5}, "cache_redis_url must be a non-empty string"),
    ({"response_cache": "x"}, "response_cache must be a claude_force.ResponseCache"),
    ({"cache_secret": 5}, "cache_secret must be a non-empty"),
    ({"cache_secret": ""}, "cache_secret must be a non-empty"),
    ({"default_model": 5}, "default_model must be a non-empty string"),
    ({"base_url": " "}, "base_url must be a non-empty string"),
    ({"deadline_seconds": 10**400}, "deadline_seconds must be a number of seconds > 0 and at most"),
    ({"rate_limits": None, "timeout_seconds": 1e10}, "timeout_seconds must be a number of seconds"),
    ({"base_url": "not a url"}, "base_url must be an http:// or https:// URL"),
    ({"base_url": "localhost:8080"}, "base_url must be an http:// or https:// URL"),
    ({"base_url": "http://"}, "base_url must be an http:// or https:// URL"),
    ({"prompt_cache_ttl": "2h"}, "prompt_cache_ttl"),
    ({"sleep": 5}, "sleep must be"),
    ({"budget": {"max_cost_usd": 1}}, "budget must be a claude_force.Budget"),
    ({"api_key": 5}, "api_key must be a string"),
]


@pytest.mark.parametrize("door", [AsyncAgentOrchestrator, AgentOrchestrator])
@pytest.mark.parametrize(("options", "message"), BAD)
def test_bad_options_are_refused_at_construction(
    project: Path, door: Any, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        door(project, **options)


def test_a_bad_config_path_type_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="config_path must be a path"):
        AsyncAgentOrchestrator(5)  # type: ignore[arg-type]


def test_exclusions_given_as_a_generator_are_kept(project: Path) -> None:
    orch = AsyncAgentOrchestrator(
        project, api_key="k", cache_exclude_agents=(n for n in ["doc-writer"])
    )
    assert orch.options.cache_exclude_agents == ("doc-writer",)


def test_options_hide_secrets_in_repr() -> None:
    text = repr(OrchestratorOptions(cache_secret="hunter2-secret-of-some-length"))
    assert "hunter2" not in text


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_size_mb": "big"}, "max_size_mb='big' is not allowed"),
        ({"redis_url": 5}, "redis_url=5 is not allowed"),
        ({"enabled": "no"}, "enabled='no' is not allowed"),
        ({"ttl_hours": True}, "ttl_hours=True is not allowed"),
    ],
)
def test_bad_cache_arguments_are_refused(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        ResponseCache(cache_dir=tmp_path, cache_secret="s" * 32, **options)


# A key pasted with a newline or a control character: refused at construction, never echoed.
BAD_KEYS = [
    ("sk-ant-SECRET-MARKER\n", "has leading/trailing whitespace (a newline from a file?)"),
    (" sk-ant-SECRET-MARKER", "has leading/trailing whitespace"),
    ("sk-ant-SECRET-MARKER\r\nX-Evil: 1", "contains a control character"),
    ("sk-ant-SECRET\tMARKER\x7f", "contains a control character"),
    # Bytes that are not UTF-8 in the environment (Python keeps them as lone surrogates).
    ("sk-ant-SECRET-MARKER\udcff\udcfe", "holds bytes that are not UTF-8 text"),
]


@pytest.mark.parametrize("door", [AsyncAgentOrchestrator, AgentOrchestrator])
@pytest.mark.parametrize(("key", "message"), BAD_KEYS)
def test_a_malformed_api_key_is_refused_without_showing_it(
    project: Path, door: Any, key: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InvalidArgumentError, match="^api_key " + re.escape(message)) as e:
        door(project, api_key=key)
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    with pytest.raises(InvalidArgumentError, match=r"^ANTHROPIC_API_KEY ") as from_env:
        door(project)
    for raised in (e.value, from_env.value):
        assert "SECRET" not in str(raised) and "MARKER" not in str(raised)


def test_a_well_formed_key_is_kept_exactly(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
    assert AsyncAgentOrchestrator(project)._transport._api_key == "sk-ant-from-env"
    assert AsyncAgentOrchestrator(project, api_key="sk-ant-x")._transport._api_key == "sk-ant-x"
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    assert AsyncAgentOrchestrator(project)._transport._api_key == ""  # "no API key" on first use


@pytest.mark.parametrize("door", [AsyncAgentOrchestrator, AgentOrchestrator])
def test_a_short_cache_secret_is_refused_at_construction(
    project: Path, door: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAUDE_CACHE_SECRET", "changeme")
    with pytest.raises(InvalidArgumentError, match=r"^CLAUDE_CACHE_SECRET is 8 bytes long"):
        door(project, api_key="k")
    with pytest.raises(InvalidArgumentError, match=r"^cache_secret is 5 bytes long"):
        door(project, api_key="k", cache_secret="short")
    with pytest.raises(InvalidArgumentError, match=r"^cache_secret holds a lone surrogate"):
        door(project, api_key="k", cache_secret="\ud800" * 20)
    orch = door(project, api_key="k", enable_cache=False)  # no cache: no secret needed
    if isinstance(orch, AgentOrchestrator):
        orch.close()


def test_a_cache_secret_of_raw_bytes_from_the_environment_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``$(head -c 32 /dev/urandom)``: bytes that are not UTF-8 are the secret's bytes."""
    raw = bytes(range(200, 232))
    monkeypatch.setenv("CLAUDE_CACHE_SECRET", raw.decode("utf-8", "surrogateescape"))
    with ResponseCache(cache_dir=tmp_path / "c") as cache:
        cache.set("ab" * 32, {"v": 1})
    with ResponseCache(cache_dir=tmp_path / "c", cache_secret=raw, memory_max_mb=0) as cache:
        hit = cache.get("ab" * 32)  # signed with exactly those bytes
        assert hit is not None and hit.value == {"v": 1}
