"""The task of ``run`` and ``workflow``: an argument, ``-f FILE``, or standard input.

Reading is bounded: at most the task limit plus one character is read, so ``-f /dev/zero`` or
``yes | claude-force run AGENT -`` end in a usage error instead of filling memory. A pipe or
FIFO is read the way ``cat`` reads it (``-f <(git diff)`` works), but a FIFO that nothing
writes to does not block silently: after a moment a note on stderr says what is awaited, and
Ctrl-C stops the wait.
"""

from __future__ import annotations

import os
import select
import stat
import sys
from pathlib import Path
from typing import TextIO

from .. import InvalidArgumentError, OrchestratorOptions
from ._common import path_shown, say

__all__ = ["TASK_LIMIT", "read_task"]

TASK_LIMIT = OrchestratorOptions.max_task_chars
"""Characters a task may have: the library's ``max_task_chars`` default (the CLI keeps it)."""

# Long enough that a prompt writer (`<(git diff)`, a pipe) never triggers the note.
_QUIET_WAIT_MS = 1000


def read_task(task: str | None, task_file: Path | None, *, limit: int = TASK_LIMIT) -> str:
    """The task from the argument, -f FILE, or standard input ('-' or piped), at most ``limit``
    characters; anything longer is an InvalidArgumentError (a usage error, exit 2)."""
    if task is not None and task_file is not None:
        raise InvalidArgumentError("give the task either as an argument or with -f FILE, not both")
    if task_file is not None:
        text, where = _read_file(task_file, limit), f"the task file {path_shown(task_file)}"
    elif task == "-" or (task is None and sys.stdin is not None and not sys.stdin.isatty()):
        text, where = _read_stdin(limit), "the task on standard input"
    elif task is None:
        raise InvalidArgumentError(
            "no task: pass TASK, -f FILE, or pipe the task on standard input"
        )
    else:
        text, where = task, "the task"
    if len(text) > limit:
        raise InvalidArgumentError(
            f"{where} is longer than the limit of {limit:,} characters; split it into smaller tasks"
        )
    return text


def _read_stdin(limit: int) -> str:
    stream = sys.stdin
    if stream is None or stream.closed:
        raise InvalidArgumentError(
            "the task is '-' (standard input), but standard input is closed; "
            "pipe the task in, or pass it as TASK or with -f FILE"
        )
    try:
        fd: int | None = stream.fileno()
    except (OSError, ValueError):  # a stream without a file descriptor (an embedding host)
        fd = None
    if fd is not None:
        _wait_for_data(
            fd, "waiting for the task on standard input (end it with Ctrl-D, stop with Ctrl-C)"
        )
    return _bounded_read(stream, limit, "standard input")


def _read_file(path: Path, limit: int) -> str:
    # O_NONBLOCK: opening a FIFO that has no writer returns at once instead of blocking in
    # open(), where no note could be printed.
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise InvalidArgumentError(
            f"cannot read the task file {path_shown(path)} ({_reason(exc)}); "
            "check the path and its permissions"
        ) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise InvalidArgumentError(
                f"the task file {path_shown(path)} is a folder; pass a file, e.g. -f notes.md"
            )
        if not stat.S_ISREG(mode):
            # Only a FIFO or a character device (a terminal) can keep a reader waiting here:
            # opening a socket fails, and a block device has data at once.
            what = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device"
            _wait_for_data(
                fd,
                f"waiting for something to write to {path_shown(path)}, {what} (Ctrl-C to stop)",
            )
        os.set_blocking(fd, True)
        with open(fd, encoding="utf-8", closefd=False) as stream:
            return _bounded_read(stream, limit, f"the task file {path_shown(path)}")
    except OSError as exc:
        raise InvalidArgumentError(
            f"cannot read the task file {path_shown(path)} ({_reason(exc)}); "
            "check that it is the right file"
        ) from None
    finally:
        os.close(fd)


def _bounded_read(stream: TextIO, limit: int, what: str) -> str:
    """At most ``limit + 1`` characters: one more than allowed tells "too long" apart."""
    try:
        return stream.read(limit + 1)
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(
            f"{what} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x}: {exc.reason}); "
            "save it as UTF-8"
        ) from None


def _wait_for_data(fd: int, note: str) -> None:
    """Return once ``fd`` has data or its end; print ``note`` if that takes a while.

    A FIFO that no writer has opened yet reads as empty, so reading before this returns would
    lose a writer that comes later. Ctrl-C interrupts the wait (KeyboardInterrupt, exit 130).
    """
    if not hasattr(select, "poll"):  # no poll (Windows): read at once, as before
        return
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    try:
        if poller.poll(_QUIET_WAIT_MS):
            return
        say(note)
        poller.poll()
    except (OSError, ValueError):  # a descriptor poll cannot watch: read and see
        return


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
