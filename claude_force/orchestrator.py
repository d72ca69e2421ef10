"""The seed's module path for the sync orchestrator (Claude Force 1.x code imports it)."""

from __future__ import annotations

from . import AgentOrchestrator, AgentResult

__all__ = ["AgentOrchestrator", "AgentResult"]
