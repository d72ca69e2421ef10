"""The one exception tree of claude-force.

::

    ClaudeForceError                 every error this package raises on purpose
    ├── UsageError                   the caller asked for something wrong; fix the input
    │   ├── ConfigError              .claude/claude.json or an agent file is invalid
    │   ├── AgentNotFoundError       an agent name that the config does not define
    │   ├── WorkflowNotFoundError    a workflow name that the config does not define
    │   ├── InvalidArgumentError     a bad argument value (empty task, bad option)
    │   └── CacheDirectoryError      an unsafe or unusable cache directory
    └── RunError                     the request was valid but the run failed
        ├── APIError                 the API failed after retries (status, request id)
        ├── BudgetExceeded           a budget would be crossed by the next request
        └── CacheIntegrityError      a cache entry failed its signature check

SDK exceptions are mapped to :class:`APIError` in exactly one place, the transport.
No message in this tree ever contains the API key.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

__all__ = [
    "APIError",
    "AgentNotFoundError",
    "BudgetExceeded",
    "CacheDirectoryError",
    "CacheIntegrityError",
    "ClaudeForceError",
    "ConfigError",
    "InvalidArgumentError",
    "RunError",
    "UsageError",
    "WorkflowNotFoundError",
]


class ClaudeForceError(Exception):
    """Root of every error claude-force raises on purpose."""


class UsageError(ClaudeForceError, ValueError):
    """The caller asked for something wrong; the message says how to fix it."""


class ConfigError(UsageError):
    """The configuration is invalid.

    ``problems`` lists every problem found, each as ``"<json path>: <message>"``.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems: list[str] = list(problems or [])
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


class AgentNotFoundError(UsageError, KeyError):
    """An agent name that the configuration does not define."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WorkflowNotFoundError(UsageError, KeyError):
    """A workflow name that the configuration does not define."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidArgumentError(UsageError):
    """An argument value that is not allowed."""


class CacheDirectoryError(UsageError):
    """The cache directory is unsafe (world-writable, another owner) or unusable."""


class RunError(ClaudeForceError):
    """A valid request whose run failed."""


class APIError(RunError):
    """The API call failed after every allowed retry.

    Carries the HTTP ``status_code`` (None for connection errors and timeouts), the
    server's ``request_id`` when it sent one, the ``error_type`` (``rate_limit_error``,
    ``timeout``, ``connection_error``...) and the number of ``attempts`` made.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        error_type: str = "api_error",
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.request_id = request_id
        self.error_type = error_type
        self.attempts = attempts

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.error_type,
            "status_code": self.status_code,
            "request_id": self.request_id,
            "message": self.message,
            "attempts": self.attempts,
        }


class BudgetExceeded(RunError):
    """The next request could cross a budget limit, so it was not sent.

    ``spent`` maps each budgeted quantity to what had been used when the check failed.
    """

    def __init__(self, message: str, *, spent: dict[str, Decimal | int] | None = None) -> None:
        super().__init__(message)
        self.spent: dict[str, Decimal | int] = dict(spent or {})
        # Set when only requests in flight kept this one out: (tracker, settlements seen).
        self._wait_for: tuple[Any, int] | None = None


class CacheIntegrityError(RunError):
    """A cache entry failed its signature check.

    Reported by ``verify``; an ordinary read treats such an entry as a miss.
    """
