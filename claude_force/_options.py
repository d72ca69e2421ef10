"""The orchestrator's options: one keyword-only value shared by both front doors."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from ._admission import Limits
from ._budget import Budget
from ._errors import CacheDirectoryError, InvalidArgumentError
from ._request import DEFAULT_MAX_TASK_CHARS, CacheTTL
from ._warnings import OnceLog
from .cache import ResponseCache

__all__ = ["OPTION_NAMES", "OrchestratorOptions"]


@dataclass(frozen=True, kw_only=True)
class OrchestratorOptions:
    """How an orchestrator runs calls; every field has a safe default.

    ``max_retries`` counts retries after the first attempt (3 = up to four attempts);
    ``timeout_seconds`` bounds each attempt and ``deadline_seconds`` (optional) the whole
    call including retries. ``enable_cache`` turns on the response cache (``cache_*``
    options), ``enable_tracking`` the usage ledger, ``enable_metrics`` Prometheus counters.
    ``prompt_cache_ttl`` marks system prompts for prompt caching (None = off).
    ``enable_memory`` is accepted; per-agent memory is not built yet, so it is off.
    ``adaptive_rate_limits`` keeps every attempt within the service's per-minute limits
    (learned from its ``anthropic-ratelimit-*`` headers); ``rate_limits`` sets or caps them,
    one :class:`Limits` for every model class or a mapping of model (or family) to
    :class:`Limits`, e.g. to leave room for other tools of the same organisation.
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
    cache_secret: str | bytes | None = field(default=None, repr=False)
    response_cache: ResponseCache | None = None
    budget: Budget | None = None
    ledger_path: str | os.PathLike[str] | None = None
    pricing_path: str | os.PathLike[str] | None = None
    enable_metrics: bool = True
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep

    def __post_init__(self) -> None:
        """Refuse bad values at once, naming the option and what is allowed."""
        _positive_int("max_concurrent", self.max_concurrent)
        _positive_int("max_task_chars", self.max_task_chars)
        retries = self.max_retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidArgumentError(f"max_retries must be an integer >= 0, got {retries!r}")
        positive = (
            ("timeout_seconds", self.timeout_seconds, "a number of seconds"),
            ("deadline_seconds", self.deadline_seconds, "a number of seconds"),
            ("cache_ttl_hours", self.cache_ttl_hours, "a number of hours"),
            ("cache_max_size_mb", self.cache_max_size_mb, "a number of megabytes"),
        )
        for name, value, what in positive:
            if value is None and name == "deadline_seconds":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InvalidArgumentError(f"{name} must be {what} > 0, got {value!r}")
        if self.prompt_cache_ttl not in ("5m", "1h", None):
            raise InvalidArgumentError(
                f"prompt_cache_ttl must be '5m', '1h' or None (off), got {self.prompt_cache_ttl!r}"
            )
        _check_rate_limits(self.rate_limits, adaptive=self.adaptive_rate_limits)
        if self.budget is not None and not isinstance(self.budget, Budget):
            raise InvalidArgumentError(
                f"budget must be a claude_force.Budget, got {type(self.budget).__name__}"
            )

    def open_cache(self, log: OnceLog) -> ResponseCache | None:
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
                redis_url=self.cache_redis_url,
                cache_secret=self.cache_secret,
            )
        except (CacheDirectoryError, OSError, sqlite3.Error) as exc:
            log.warn("cache", f"the response cache cannot be used ({exc}); running uncached")
            return None


OPTION_NAMES: frozenset[str] = frozenset(f.name for f in fields(OrchestratorOptions))


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
