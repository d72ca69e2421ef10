"""Shared pieces of the cache tests: a hand-moved clock and request-like keys."""

from __future__ import annotations

import hashlib

T0 = 1_700_000_000.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def key(n: int) -> str:
    """A 64-hex-digit key, as the orchestrator computes for a request."""
    return hashlib.sha256(f"request {n}".encode()).hexdigest()
