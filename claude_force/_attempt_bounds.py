"""What bounds an attempt and what its errors may show: the whole-response timeout (an
answer whose headers came in time gets as long again for its body) and the API key's
redaction from error texts. Split from :mod:`._transport`. :func:`bounded` is the same
timeout for any other call (a Redis command), and :func:`cancels_requested` tells when a
cancellation was lost inside one."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

__all__ = ["bounded", "cancels_requested", "redact_key", "within"]

T = TypeVar("T")


async def within(
    awaitable: Awaitable[T],
    seconds: float,
    answered: Callable[[], bool],
    more: Callable[[], float],
) -> T:
    """``awaitable``, or asyncio.TimeoutError once ``seconds`` have passed; when by then
    ``answered()`` (the response's headers came), once ``more()`` seconds later."""
    if sys.version_info < (3, 11):  # pragma: no cover - Python 3.10
        return await _within_310(awaitable, seconds, answered, more)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(None) as window:
        # A function of the module, not a closure: its cells would live as long as the call.
        handle = loop.call_at(loop.time() + seconds, _check, loop, window, answered, more)
        try:
            return await awaitable
        finally:
            handle.cancel()


class _Window(Protocol):
    """``asyncio.Timeout`` (Python 3.11 and later)."""

    def reschedule(self, when: float | None) -> None: ...


def _check(
    loop: asyncio.AbstractEventLoop,
    window: _Window,
    answered: Callable[[], bool],
    more: Callable[[], float],
) -> None:
    """``seconds`` have passed: time out now, or ``more()`` seconds later if answered."""
    window.reschedule(loop.time() + (more() if answered() else 0.0))


async def bounded(awaitable: Awaitable[T], seconds: float) -> T:
    """``awaitable`` in the calling task, or asyncio.TimeoutError once ``seconds`` have passed.

    Not ``asyncio.wait_for``: before Python 3.12 it returns the result of an awaitable that
    finished just as the caller was cancelled, and the cancellation is lost."""
    return await within(awaitable, seconds, _unanswered, _no_more)


def cancels_requested() -> int:
    """The running task's cancellations requested and not handled (0 on Python 3.10, which
    does not count them): a count that grew over an await that returned means a cancellation
    was lost inside it (``asyncio.wait_for``, before Python 3.12, drops one that comes as
    its awaitable finishes)."""
    task = asyncio.current_task()
    if sys.version_info < (3, 11) or task is None:  # pragma: no cover - Python 3.10
        return 0
    return task.cancelling()


def _unanswered() -> bool:
    return False


def _no_more() -> float:
    return 0.0


async def _within_310(
    awaitable: Awaitable[T],
    seconds: float,
    answered: Callable[[], bool],
    more: Callable[[], float],
) -> T:  # pragma: no cover - Python 3.10
    """:func:`within` without ``asyncio.timeout``: the current task is cancelled when the
    time is up (``wait_for`` would run the call in a task of its own, and aiohttp reads a
    streamed body only in the task that opened it)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    extended = fired = False
    handle: asyncio.TimerHandle | None = None

    def expire() -> None:
        nonlocal extended, fired, handle
        if answered() and not extended:
            extended = True  # once: as long again for the body
            handle = loop.call_at(loop.time() + more(), expire)
            return
        fired = True
        task.cancel()

    handle = loop.call_at(loop.time() + seconds, expire)
    try:
        return await awaitable
    except asyncio.CancelledError:
        if fired:
            raise asyncio.TimeoutError from None
        raise
    finally:
        if handle is not None:
            handle.cancel()


_KEY_PROBE = 16  # characters of the key in a row that mark an echo of it


def redact_key(text: str, key: str) -> str:
    """``text`` with the API key, and any run of 16 or more of its characters in a row (a
    server or proxy quoting a header cut short, its start or its end), as ``***``."""
    if not key:
        return text
    if len(key) <= _KEY_PROBE:
        return text.replace(key, "***")
    pieces = _key_pieces(key)
    out, start, at = [], 0, 0
    while at + _KEY_PROBE <= len(text):
        if text[at : at + _KEY_PROBE] not in pieces:
            at += 1
            continue
        end = at + _KEY_PROBE
        while end < len(text) and text[at : end + 1] in key:
            end += 1
        out += [text[start:at], "***"]
        start = at = end
    return "".join([*out, text[start:]])


@functools.lru_cache(maxsize=4)
def _key_pieces(key: str) -> frozenset[str]:
    return frozenset(key[i : i + _KEY_PROBE] for i in range(len(key) - _KEY_PROBE + 1))
