"""claude-force: run specialised Claude agents one at a time, many at once, or as workflows."""

from __future__ import annotations

from ._admission import Limits
from ._budget import Budget, BudgetTracker
from ._config import DEFAULT_MODEL, AgentSpec, ProjectConfig, find_config, load_config
from ._errors import (
    AgentNotFoundError,
    APIError,
    BudgetExceeded,
    CacheDirectoryError,
    CacheIntegrityError,
    ClaudeForceError,
    ConfigError,
    InvalidArgumentError,
    RunError,
    UsageError,
    WorkflowNotFoundError,
)
from ._ledger import Ledger, LedgerRow
from ._options import OrchestratorOptions
from ._orchestrator import AsyncAgentOrchestrator
from ._pricing import PriceTable
from ._reports import Report, UsageReports
from ._request import CacheTTL, TaskSpec, cache_key
from ._results import AgentResult, CacheTier, WorkflowResult
from ._scaffold import init_project
from ._serve import serve_ledger_metrics
from ._sync import AgentOrchestrator
from ._usage import Usage
from ._workflow import StepEvent
from .cache import CacheHit, ResponseCache

__all__ = [
    "DEFAULT_MODEL",
    "APIError",
    "AgentNotFoundError",
    "AgentOrchestrator",
    "AgentResult",
    "AgentSpec",
    "AsyncAgentOrchestrator",
    "Budget",
    "BudgetExceeded",
    "BudgetTracker",
    "CacheDirectoryError",
    "CacheHit",
    "CacheIntegrityError",
    "CacheTTL",
    "CacheTier",
    "ClaudeForceError",
    "ConfigError",
    "InvalidArgumentError",
    "Ledger",
    "LedgerRow",
    "Limits",
    "OrchestratorOptions",
    "PriceTable",
    "ProjectConfig",
    "Report",
    "ResponseCache",
    "RunError",
    "StepEvent",
    "TaskSpec",
    "Usage",
    "UsageError",
    "UsageReports",
    "WorkflowNotFoundError",
    "WorkflowResult",
    "cache_key",
    "find_config",
    "init_project",
    "load_config",
    "serve_ledger_metrics",
]

# Public classes say where users import them from, in reprs, docs and tracebacks.
for _name in __all__:
    _value = globals()[_name]
    if isinstance(_value, type):
        _value.__module__ = __name__
del _name, _value
