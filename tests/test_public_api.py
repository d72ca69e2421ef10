"""The public surface changes only on purpose."""

from __future__ import annotations

import claude_force

EXPECTED = [
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


def test_all_is_pinned() -> None:
    assert claude_force.__all__ == EXPECTED


def test_every_name_exists() -> None:
    for name in claude_force.__all__:
        assert hasattr(claude_force, name), name


def test_one_exception_root() -> None:
    errors = [getattr(claude_force, n) for n in EXPECTED if n.endswith(("Error", "Exceeded"))]
    for cls in errors:
        assert issubclass(cls, claude_force.ClaudeForceError), cls
    assert issubclass(claude_force.ConfigError, claude_force.UsageError)
    assert issubclass(claude_force.APIError, claude_force.RunError)
    assert issubclass(claude_force.BudgetExceeded, claude_force.RunError)
