"""claude-force: run specialised Claude agents one at a time, many at once, or as workflows."""

from __future__ import annotations

import inspect
import typing

from ._admission import Limits
from ._batch import BatchRecord, BatchSummary, run_batch_file
from ._budget import Budget, BudgetTracker, Reservation
from ._config import DEFAULT_MODEL, AgentSpec, ProjectConfig, find_config, load_config
from ._config_workflows import StepSpec, WorkflowSpec
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
from ._memory import AgentMemory, MemoryEntry
from ._message_batches import BatchesSettings, BatchProgress
from ._metrics import Metrics
from ._options import OrchestratorOptions
from ._orchestrator import AsyncAgentOrchestrator
from ._pricing import CostBreakdown, LongContextPrice, ModelPrice, PriceTable, TierPrice
from ._reports import Report, UsageReports
from ._request import NOT_GIVEN, CacheTTL, NotGiven, TaskSpec
from ._results import AgentResult, CacheTier, WorkflowResult
from ._scaffold import init_project
from ._serve import serve_ledger_metrics
from ._sync import AgentOrchestrator
from ._usage import Usage
from ._workflow import StepEvent
from .cache import CacheHit, ResponseCache

__all__ = [
    "DEFAULT_MODEL",
    "NOT_GIVEN",
    "APIError",
    "AgentMemory",
    "AgentNotFoundError",
    "AgentOrchestrator",
    "AgentResult",
    "AgentSpec",
    "AsyncAgentOrchestrator",
    "BatchProgress",
    "BatchRecord",
    "BatchSummary",
    "BatchesSettings",
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
    "CostBreakdown",
    "InvalidArgumentError",
    "Ledger",
    "LedgerRow",
    "Limits",
    "LongContextPrice",
    "MemoryEntry",
    "Metrics",
    "ModelPrice",
    "NotGiven",
    "OrchestratorOptions",
    "PriceTable",
    "ProjectConfig",
    "Report",
    "Reservation",
    "ResponseCache",
    "RunError",
    "StepEvent",
    "StepSpec",
    "TaskSpec",
    "TierPrice",
    "Usage",
    "UsageError",
    "UsageReports",
    "WorkflowNotFoundError",
    "WorkflowResult",
    "WorkflowSpec",
    "find_config",
    "init_project",
    "load_config",
    "run_batch_file",
    "serve_ledger_metrics",
]


def _rehome(cls: type) -> None:
    """Report ``cls`` as ``claude_force.<name>``, in reprs, docs and tracebacks.

    Its string annotations are resolved first, in the module that defined them, so that
    ``typing.get_type_hints`` still works once the class says it lives here.
    """
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except NameError:  # a name imported only for type checkers: leave the strings
        hints = None
    own = inspect.get_annotations(cls)
    if hints is not None and own:
        cls.__annotations__ = {name: hints.get(name, own[name]) for name in own}
    cls.__module__ = __name__


for _name in __all__:
    _value = globals()[_name]
    if isinstance(_value, type):
        _rehome(_value)
del _name, _value
