"""One background thread per disk tier: it runs the tier's ``flush`` when woken.

Everything that must reach the database but must not make a caller wait goes through it:
``aset`` writes, entries found in Redis, access times from hits, deletions of bad rows.
The thread starts on first use (again after a fork, which leaves a dead Thread behind) and
``close()`` stops and joins it, so no thread outlives its cache.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Worker"]


class Worker:
    """Calls ``job()`` on a daemon thread after each ``wake()``; wakes coalesce."""

    def __init__(self, job: Callable[[], None], *, name: str) -> None:
        self._job = job
        self._name = name
        self._cond = threading.Condition()
        self._woken = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        with self._cond:
            if self._stopping:
                return
            self._woken = True
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()

    @property
    def alive(self) -> bool:
        """Whether its thread runs (not yet started, ended by an error or left dead by a
        fork: no)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def close(self) -> None:
        """Stop the thread after the job it is running, and wait for it."""
        with self._cond:
            self._stopping = True
            # Every waiter: a thread replaced as dead while it still waited (a test stands in
            # for a fork that way) would otherwise take the one wake-up and leave ours waiting.
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._woken or self._stopping)
                if self._stopping:
                    return  # the owner writes what is left itself, on close
                self._woken = False
            self._job()
