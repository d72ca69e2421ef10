"""The seed's module path for the async orchestrator (Claude Force 1.x code imports it)."""

from __future__ import annotations

from . import AgentResult as AsyncAgentResult
from . import AsyncAgentOrchestrator

__all__ = ["AsyncAgentOrchestrator", "AsyncAgentResult"]
