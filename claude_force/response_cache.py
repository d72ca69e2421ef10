"""The seed's module path for the response cache (Claude Force 1.x code imports it)."""

from __future__ import annotations

from . import ResponseCache

__all__ = ["ResponseCache"]
