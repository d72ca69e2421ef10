"""Opening files that must be small regular files, without blocking or following planted links.

``open(path).read()`` on a FIFO waits forever, on ``/dev/zero`` never ends, and follows any
symlink someone put in place. Every file claude-force reads from the user's folders (the
config, agent files, the cache secret) goes through :func:`read_regular` or
:func:`read_beneath` instead: opened with ``O_NONBLOCK``, checked with ``fstat`` to be a
regular file, read up to a size limit. Problems are :class:`FileProblem` values that each
caller turns into its own typed error with its own fix.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path
from typing import Literal

__all__ = [
    "FileProblem",
    "describe_mode",
    "read_beneath",
    "read_regular",
    "replace_file",
    "shown",
]

ProblemKind = Literal["missing", "link", "not_regular", "too_large", "unreadable", "outside"]

_SHOWN_LIMIT = 300
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
# O_PATH opens a folder for openat() without needing read permission on it (Linux only).
_DIR_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)


class FileProblem(Exception):
    """Why a file cannot be used: ``kind`` for callers, ``summary`` and a generic ``fix``."""

    def __init__(self, kind: ProblemKind, summary: str, fix: str) -> None:
        super().__init__(f"{summary}; {fix}")
        self.kind: ProblemKind = kind
        self.summary = summary
        self.fix = fix


def shown(path: str | os.PathLike[str], *, limit: int = _SHOWN_LIMIT) -> str:
    """``path`` as printable text: undecodable bytes and NUL as escapes, cut past ``limit``."""
    text = os.fspath(path)
    if len(text) > limit:  # no real path is this long; a message should stay readable
        text = f"{text[: limit - 40]}... ({len(text)} characters)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def describe_mode(mode: int) -> str:
    """What kind of file ``mode`` is, as a noun phrase: ``a folder``, ``a FIFO``..."""
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISREG, "a regular file"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _os_problem(exc: OSError, path: str, *, no_follow: bool) -> FileProblem:
    where = shown(path)
    code = exc.errno
    if code == errno.ENOENT:
        return FileProblem("missing", f"{where} does not exist", "create it or fix the path")
    if code == errno.ELOOP and no_follow:
        return FileProblem(
            "link", f"{where} is a symbolic link", "replace the link with the file itself"
        )
    if code == errno.ELOOP:
        return FileProblem("link", f"{where} is a symbolic link loop", "fix or remove the link")
    if code == errno.ENOTDIR:
        return FileProblem(
            "missing",
            f"{where} cannot be reached: part of the path is a file, not a folder",
            "fix the path",
        )
    if code in (errno.EACCES, errno.EPERM):
        return FileProblem(
            "unreadable",
            f"{where} cannot be read (permission denied)",
            f"give yourself read access, e.g. `chmod u+r {where}`",
        )
    if code == errno.ENAMETOOLONG:
        return FileProblem(
            "unreadable", f"{where} cannot be opened: the name is too long", "use a shorter path"
        )
    if code == errno.ENXIO:  # a socket, or a device without a driver
        return FileProblem("not_regular", f"{where} is not a regular file", "use a regular file")
    reason = exc.strerror or type(exc).__name__
    return FileProblem("unreadable", f"{where} cannot be opened ({reason})", "check the path")


def _read_fd(fd: int, info: os.stat_result, path: str, limit: int) -> bytes:
    if not stat.S_ISREG(info.st_mode):
        raise FileProblem(
            "not_regular",
            f"{shown(path)} is {describe_mode(info.st_mode)}, not a regular file",
            "use a regular file",
        )
    too_large = FileProblem(
        "too_large",
        f"{shown(path)} is larger than the {_size(limit)} allowed",
        "check it is the right file, or shorten it",
    )
    if info.st_size > limit:
        raise too_large
    chunks: list[bytes] = []
    total = 0
    # Read until EOF but never past the limit: the file may grow after fstat.
    while chunk := os.read(fd, min(limit + 1 - total, 1 << 20)):
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise too_large
    return b"".join(chunks)


def _size(limit: int) -> str:
    if limit >= 1 << 20 and limit % (1 << 20) == 0:
        return f"{limit >> 20} MiB"
    if limit >= 1 << 10 and limit % (1 << 10) == 0:
        return f"{limit >> 10} KiB"
    return f"{limit} bytes"


def _checked_path(path: str | os.PathLike[str]) -> str:
    text = os.fspath(path)
    if "\x00" in text:
        raise FileProblem("unreadable", f"{shown(text)} contains a NUL byte", "fix the path")
    try:
        os.fsencode(text)
    except UnicodeError:
        raise FileProblem(
            "unreadable",
            f"{shown(text)} cannot be encoded as a file name (an unpaired surrogate)",
            "fix the path",
        ) from None
    return text


def read_regular(
    path: str | os.PathLike[str], *, limit: int, follow_links: bool = True
) -> tuple[bytes, os.stat_result]:
    """Read a regular file of at most ``limit`` bytes; never blocks on FIFOs or devices.

    With ``follow_links=False`` a symlink in the last component is refused (O_NOFOLLOW).
    Returns the contents and the ``fstat`` of the file read. Raises FileProblem.
    """
    text = _checked_path(path)
    flags = _READ_FLAGS | (0 if follow_links else os.O_NOFOLLOW)
    try:
        fd = os.open(text, flags)
    except OSError as exc:
        raise _os_problem(exc, text, no_follow=not follow_links) from None
    try:
        info = os.fstat(fd)
        return _read_fd(fd, info, text, limit), info
    except OSError as exc:
        raise _os_problem(exc, text, no_follow=not follow_links) from None
    finally:
        os.close(fd)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def read_beneath(path: Path, root: Path, *, limit: int) -> tuple[bytes, Path]:
    """Read ``path``, which must resolve to a regular file inside ``root``.

    Symlinks are allowed while they stay inside ``root``: the path is resolved, checked to be
    inside, then opened one component at a time from ``root`` with O_NOFOLLOW, so a link
    swapped in after the check is refused instead of followed. Returns the contents and the
    resolved path. Raises FileProblem.
    """
    text = _checked_path(path)
    real_root = os.path.realpath(_checked_path(root))
    resolved = os.path.realpath(text)
    if not _inside(resolved, real_root):
        raise FileProblem(
            "outside",
            f"{shown(text)} goes through a symlink to {shown(resolved)}, outside {shown(root)}",
            f"files must stay inside {shown(root)}: replace the link with the file itself",
        )
    parts = [part for part in resolved[len(real_root) :].split(os.sep) if part]
    if not parts:
        raise FileProblem("not_regular", f"{shown(resolved)} is a folder", "use a regular file")
    fds: list[int] = []
    try:
        fds.append(os.open(real_root, _DIR_FLAGS))
        for part in parts[:-1]:
            fds.append(os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fds[-1]))
        fd = os.open(parts[-1], _READ_FLAGS | os.O_NOFOLLOW, dir_fd=fds[-1])
        fds.append(fd)
        return _read_fd(fd, os.fstat(fd), resolved, limit), Path(resolved)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _has_link(real_root, parts):
            raise _link_problem(resolved) from None
        raise _os_problem(exc, resolved, no_follow=False) from None
    finally:
        for fd in fds:
            os.close(fd)


def _has_link(root: str, parts: list[str]) -> bool:
    path = root
    for part in parts:
        path = os.path.join(path, part)
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return True
        except OSError:
            return False
    return False


def _link_problem(resolved: str) -> FileProblem:
    """O_NOFOLLOW met a link on a path that had just resolved without one."""
    try:
        os.stat(resolved)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # realpath leaves a loop unresolved
            return FileProblem(
                "link", f"{shown(resolved)} is a symbolic link loop", "fix or remove it"
            )
    # Swapped in between the check and the open, maybe to point outside: refused, not followed.
    return FileProblem(
        "link",
        f"{shown(resolved)} was replaced by a symbolic link while it was being opened",
        "try again; if it persists, replace the link with the file itself",
    )


def replace_file(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to ``path`` all at once: readers see the old file or the new one.

    A sibling is written then renamed, so a crash never leaves a half-written file and an
    existing symlink at ``path`` is replaced rather than followed; mode "x" honours the user's
    umask. ``durable`` also syncs the data to disk before the rename, for a file whose loss
    after a power cut would cost money (the ids of submitted message batches).
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
