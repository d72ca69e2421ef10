"""The orchestrator's options: one keyword-only value shared by both front doors."""

from __future__ import annotations

import asyncio
import difflib
import os
import sqlite3
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from ._admission import Limits
from ._budget import Budget
from ._errors import CacheDirectoryError, InvalidArgumentError
from ._request import DEFAULT_MAX_TASK_CHARS, CacheTTL
from ._warnings import OnceLog
from .cache import ResponseCache
from .cache._secret import check_secret

__all__ = [
    "OPTION_NAMES",
    "OrchestratorOptions",
    "check_api_key",
    "check_option_names",
    "check_path",
]


@dataclass(frozen=True, kw_only=True)
class OrchestratorOptions:
    """How an orchestrator runs calls; every field has a safe default.

    ``max_retries`` counts retries after the first attempt (3 = up to four attempts);
    ``timeout_seconds`` bounds each attempt and ``deadline_seconds`` (optional) the whole
    call including retries. ``enable_cache`` turns on the response cache (``cache_*``
    options), ``enable_tracking`` the usage ledger, ``enable_metrics`` Prometheus counters.
    ``prompt_cache_ttl`` marks system prompts for prompt caching (None = off).
    ``enable_memory`` keeps per-agent memory in the project's data folder and injects an
    agent's relevant earlier answers into its requests (see :class:`AgentMemory`).
    ``adaptive_rate_limits`` keeps every attempt within the service's per-minute limits
    (learned from its ``anthropic-ratelimit-*`` headers); ``rate_limits`` sets or caps them,
    one :class:`Limits` for every model class or a mapping of model (or family) to
    :class:`Limits` (``"default"`` for every other class), e.g. to leave room for other
    tools of the same organisation; when given it replaces ``rate_limits`` in claude.json.
    ``redis_url`` is one Redis shared by several processes or machines: the response
    cache's shared tier (unless ``cache_redis_url`` names another), the rate-limit buckets
    (one organisation's limits, kept together) and single-flight across processes.
    ``cache_redis_url`` shares only cached answers.
    ``open_telemetry``: whether the SDK makes an OpenTelemetry span of each request; None
    (the default) when OpenTelemetry has a tracer provider as a session's client is made
    (each event loop's first call), so spans cost nothing where nothing records them.
    ``sleep`` is how retries wait (tests inject one).
    """

    max_concurrent: int = 10
    timeout_seconds: float = 120.0
    max_retries: int = 3
    deadline_seconds: float | None = None
    enable_tracking: bool = True
    enable_memory: bool = True
    enable_cache: bool = True
    cache_ttl_hours: float = 24
    cache_max_size_mb: float = 100
    default_model: str | None = None
    base_url: str | None = None
    prompt_cache_ttl: CacheTTL | None = "5m"
    max_task_chars: int = DEFAULT_MAX_TASK_CHARS
    adaptive_concurrency: bool = True
    adaptive_rate_limits: bool = True
    rate_limits: Limits | Mapping[str, Limits] | None = None
    cache_dir: str | os.PathLike[str] | None = None
    cache_exclude_agents: Iterable[str] | None = None
    cache_redis_url: str | None = field(default=None, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    cache_secret: str | bytes | None = field(default=None, repr=False)
    response_cache: ResponseCache | None = None
    budget: Budget | None = None
    ledger_path: str | os.PathLike[str] | None = None
    pricing_path: str | os.PathLike[str] | None = None
    enable_metrics: bool = True
    open_telemetry: bool | None = None
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep

    def __post_init__(self) -> None:
        """Refuse bad values at once, naming the option and what is allowed."""
        _positive_int("max_concurrent", self.max_concurrent)
        _positive_int("max_task_chars", self.max_task_chars)
        retries = self.max_retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidArgumentError(f"max_retries must be an integer >= 0, got {retries!r}")
        for name, what in _POSITIVE:
            value = getattr(self, name)
            if value is None and name == "deadline_seconds":
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 < value <= _MAX_AMOUNT
            ):
                raise InvalidArgumentError(
                    f"{name} must be a {what} > 0 and at most {_MAX_AMOUNT:g}, got {value!r}"
                )
        for name in _FLAGS:
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgumentError(
                    f"{name} must be True or False, got {getattr(self, name)!r}"
                )
        if self.open_telemetry is not None and not isinstance(self.open_telemetry, bool):
            raise InvalidArgumentError(
                "open_telemetry must be True, False or None (spans when OpenTelemetry has a "
                f"tracer provider), got {self.open_telemetry!r}"
            )
        for name in _TEXTS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                # Only the type is named: a Redis URL may hold a password.
                raise InvalidArgumentError(
                    f"{name} must be a non-empty string, got {type(value).__name__}"
                )
        for name in _PATHS:
            check_path(name, getattr(self, name))
        _check_base_url(self.base_url)
        self._check_cache_options()
        if self.prompt_cache_ttl not in ("5m", "1h", None):
            raise InvalidArgumentError(
                f"prompt_cache_ttl must be '5m', '1h' or None (off), got {self.prompt_cache_ttl!r}"
            )
        _check_rate_limits(self.rate_limits, adaptive=self.adaptive_rate_limits)
        if self.budget is not None and not isinstance(self.budget, Budget):
            raise InvalidArgumentError(
                f"budget must be a claude_force.Budget, got {type(self.budget).__name__}"
            )
        if not callable(self.sleep):
            raise InvalidArgumentError(f"sleep must be an async function, got {self.sleep!r}")

    def _check_cache_options(self) -> None:
        for name in ("cache_redis_url", "redis_url"):
            url = getattr(self, name)
            if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
                raise InvalidArgumentError(
                    f"{name} must be a Redis URL such as redis://localhost:6379/0 "
                    "(schemes redis://, rediss:// or unix://)"
                )
        secret = self.cache_secret
        if secret is not None and (not isinstance(secret, (str, bytes)) or not secret):
            raise InvalidArgumentError(
                "cache_secret must be a non-empty string or bytes; leave it out to use "
                "CLAUDE_CACHE_SECRET or the generated secret file"
            )
        if self.enable_cache and self.response_cache is None:
            check_secret(secret)  # at construction, not at every call's first cache use
        if self.response_cache is not None and not isinstance(self.response_cache, ResponseCache):
            raise InvalidArgumentError(
                "response_cache must be a claude_force.ResponseCache, got "
                f"{type(self.response_cache).__name__}"
            )
        agents = self.cache_exclude_agents
        if agents is None:
            return
        if isinstance(agents, (str, bytes)) or not isinstance(agents, Iterable):
            raise InvalidArgumentError(
                f"cache_exclude_agents must be a list of agent names, got {agents!r}"
            )
        names = tuple(agents)  # a generator is read once, here
        if not all(isinstance(n, str) for n in names):
            raise InvalidArgumentError(
                f"cache_exclude_agents must hold agent names (strings), got {names!r}"
            )
        object.__setattr__(self, "cache_exclude_agents", names)

    def _open_cache(self, log: OnceLog) -> ResponseCache | None:
        """The response cache these options describe (the given one, else a new one).

        A cache whose folder cannot be used is a warning and None: calls then run uncached.
        """
        if self.response_cache is not None:
            return self.response_cache
        try:
            return ResponseCache(
                cache_dir=None if self.cache_dir is None else Path(self.cache_dir),
                ttl_hours=self.cache_ttl_hours,
                max_size_mb=self.cache_max_size_mb,
                exclude_agents=self.cache_exclude_agents,
                redis_url=self.cache_redis_url or self.redis_url,
                cache_secret=self.cache_secret,
            )
        except (CacheDirectoryError, OSError, sqlite3.Error) as exc:
            log.warn("cache", f"the response cache cannot be used ({exc}); running uncached")
            return None


OPTION_NAMES: frozenset[str] = frozenset(f.name for f in fields(OrchestratorOptions))


def check_option_names(given: Iterable[str]) -> None:
    """Refuse option names that do not exist, suggesting the nearest real one."""
    for name in given:
        if name not in OPTION_NAMES:
            near = difflib.get_close_matches(name, sorted(OPTION_NAMES), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise InvalidArgumentError(
                f"{name!r} is not an orchestrator option{hint} "
                "(the options are the fields of claude_force.OrchestratorOptions)"
            )


def check_api_key(api_key: object) -> str:
    """The key to use: ``api_key`` if given, else ``ANTHROPIC_API_KEY`` ("" when neither).

    A key with leading/trailing whitespace or a control character cannot be sent in a header
    (the HTTP library refuses it, and the failure used to read as a connection error after
    every retry); the usual cause is ``$(cat keyfile)`` keeping a newline. It is refused here,
    by its source's name: a secret is never changed silently, nor shown in the message.
    """
    if api_key is not None and not isinstance(api_key, str):
        raise InvalidArgumentError(f"api_key must be a string, got {type(api_key).__name__}")
    name = "api_key" if api_key is not None else "ANTHROPIC_API_KEY"
    key = api_key if api_key is not None else os.environ.get("ANTHROPIC_API_KEY", "")
    if key != key.strip():
        raise InvalidArgumentError(
            f"{name} has leading/trailing whitespace (a newline from a file?); strip it"
        )
    if any("\ud800" <= ch <= "\udfff" for ch in key):
        raise InvalidArgumentError(
            f"{name} holds bytes that are not UTF-8 text; an API key is letters, digits, "
            "'-' and '_': copy it again from the console"
        )
    if any(ch < " " or ch == "\x7f" for ch in key):
        raise InvalidArgumentError(
            f"{name} contains a control character (a carriage return, tab or the like); "
            "remove it: an API key is letters, digits, '-' and '_'"
        )
    return key


def check_path(name: str, value: object) -> None:
    """A path option is a string or a path-like object (or None)."""
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise InvalidArgumentError(
            f"{name} must be a path (str or pathlib.Path), got {type(value).__name__}"
        )
    if isinstance(value, str) and ("\0" in value or not value.strip()):
        raise InvalidArgumentError(f"{name} must be a usable path, got {value!r}")


_MAX_AMOUNT = 1e9  # a billion seconds, hours or megabytes: beyond it a value is a typo
_POSITIVE = (
    ("timeout_seconds", "number of seconds"),
    ("deadline_seconds", "number of seconds"),
    ("cache_ttl_hours", "number of hours"),
    ("cache_max_size_mb", "number of megabytes"),
)
_FLAGS = (
    "enable_tracking",
    "enable_memory",
    "enable_cache",
    "adaptive_concurrency",
    "enable_metrics",
)
_TEXTS = ("default_model", "base_url", "cache_redis_url", "redis_url")
_PATHS = ("cache_dir", "ledger_path", "pricing_path")


def _check_base_url(url: str | None) -> None:
    """The service's address: http(s) with a host, so a typo fails here, not at the first call."""
    if url is None:
        return
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgumentError(
            f"base_url must be an http:// or https:// URL with a host, such as "
            f"https://api.anthropic.com, got {url!r}"
        )


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{name} must be an integer >= 1, got {value!r}")


def _check_rate_limits(limits: object, *, adaptive: object) -> None:
    if not isinstance(adaptive, bool):
        raise InvalidArgumentError(f"adaptive_rate_limits must be True or False, got {adaptive!r}")
    if limits is None:
        return
    if isinstance(limits, Mapping):
        bad = [
            (k, v) for k, v in limits.items() if not isinstance(k, str) or not isinstance(v, Limits)
        ]
        if bad:
            key, value = bad[0]
            raise InvalidArgumentError(
                f"rate_limits maps a model or family name to claude_force.Limits(...), got "
                f"{key!r}: {value!r}; e.g. rate_limits={{'sonnet': Limits(input_tokens_per_minute"
                "=400_000)}"
            )
    elif not isinstance(limits, Limits):
        raise InvalidArgumentError(
            f"rate_limits must be claude_force.Limits(...), a mapping of model name to Limits, "
            f"or None (learn them from the service), got {limits!r}"
        )
    if not adaptive:
        raise InvalidArgumentError(
            "rate_limits needs adaptive_rate_limits=True (the client-side buckets that "
            "enforce them); drop rate_limits or set adaptive_rate_limits=True"
        )
