"""Warnings for degraded runs: logged once per cause, never raised.

A ledger that cannot be written, a cache folder that cannot be used, a Redis server that went
away: the call still returns its answer, and the user is told once per cause (not once per
call) on the ``claude_force`` logger, which the CLI prints as ``warning: ...`` lines.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref

__all__ = ["OnceLog"]

_ALL: weakref.WeakSet[OnceLog] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A parent's thread may have held a log's lock at the fork: it would never be released.
    for log in list(_ALL):
        log._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class OnceLog:
    """Logs a warning the first time each cause is seen; later ones go to debug.

    >>> log = OnceLog(logging.getLogger("claude_force.example"))
    >>> log.warn("readonly", "the ledger is read-only")
    True
    >>> log.warn("readonly", "the ledger is read-only")
    False
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        _ALL.add(self)

    def warn(self, cause: str, message: str) -> bool:
        """Log ``message`` at WARNING if ``cause`` is new, else at DEBUG; True if it was new."""
        with self._lock:
            first = cause not in self._seen
            self._seen.add(cause)
        self.logger.log(logging.WARNING if first else logging.DEBUG, "%s", message)
        return first

    def clear(self, cause: str) -> None:
        """Forget ``cause`` (it recovered), so a later failure warns again."""
        with self._lock:
            self._seen.discard(cause)
