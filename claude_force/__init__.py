"""claude-force: run specialised Claude agents one at a time, many at once, or as workflows."""

from __future__ import annotations

from ._budget import Budget
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
from ._orchestrator import AsyncAgentOrchestrator, TaskSpec
from ._pricing import PriceTable
from ._reports import Report
from ._request import Request, SystemPrompt, cache_key
from ._results import AgentResult, WorkflowResult
from ._scaffold import init_project
from ._serve import serve_ledger_metrics
from ._sync import AgentOrchestrator
from ._transport import retry_delay, should_retry
from ._usage import Usage
from ._workflow import StepEvent
from .cache import ResponseCache

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
    "CacheDirectoryError",
    "CacheIntegrityError",
    "ClaudeForceError",
    "ConfigError",
    "InvalidArgumentError",
    "Ledger",
    "LedgerRow",
    "PriceTable",
    "ProjectConfig",
    "Report",
    "Request",
    "ResponseCache",
    "RunError",
    "StepEvent",
    "SystemPrompt",
    "TaskSpec",
    "Usage",
    "UsageError",
    "WorkflowNotFoundError",
    "WorkflowResult",
    "cache_key",
    "find_config",
    "init_project",
    "load_config",
    "retry_delay",
    "serve_ledger_metrics",
    "should_retry",
]
