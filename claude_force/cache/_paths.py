"""Where the cache and its secret live, and whether a directory is safe to use.

A cache directory that another user can write to would let them plant entries or replace
the database, so such a directory is refused instead of being used.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .._errors import CacheDirectoryError

__all__ = [
    "CACHE_DIR_ENV",
    "OTHER_DIR",
    "default_cache_dir",
    "default_config_dir",
    "ensure_private_dir",
]

_APP = "claude-force"
CACHE_DIR_ENV = "CLAUDE_FORCE_CACHE_DIR"
# The fix offered when a cache directory cannot be used: every way to name another one.
OTHER_DIR = (
    f"choose another cache_dir (or set {CACHE_DIR_ENV} in the environment), "
    "or run without the cache (enable_cache=False)"
)


def _xdg(variable: str, fallback: str) -> Path:
    # The XDG spec says relative values are invalid and must be ignored.
    value = os.environ.get(variable, "")
    base = Path(value) if value and os.path.isabs(value) else Path.home() / fallback
    return base / _APP


def default_cache_dir() -> Path:
    """``$CLAUDE_FORCE_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/claude-force``, else
    ``~/.cache/claude-force``.

    ``CLAUDE_FORCE_CACHE_DIR`` names the cache folder itself (``~`` is expanded; a relative
    path is taken from the current directory), e.g. a per-project or per-CI-job cache.
    """
    chosen = os.environ.get(CACHE_DIR_ENV, "")
    if chosen:
        return Path(chosen).expanduser()
    return _xdg("XDG_CACHE_HOME", ".cache")


def default_config_dir() -> Path:
    """``$XDG_CONFIG_HOME/claude-force``, else ``~/.config/claude-force``."""
    return _xdg("XDG_CONFIG_HOME", ".config")


def _check(path: Path, what: str, other: str) -> None:
    def refuse(problem: str, fix: str) -> CacheDirectoryError:
        return CacheDirectoryError(f"{what} {path} {problem}; {fix}")

    try:
        info = path.stat()
    except OSError as exc:
        raise refuse(f"cannot be read ({exc.strerror})", other) from exc
    if not stat.S_ISDIR(info.st_mode):
        raise refuse("is not a directory", other)
    if info.st_uid != os.getuid():
        raise refuse(
            f"is owned by uid {info.st_uid}, not by you (uid {os.getuid()})",
            f"run `chown {os.getuid()} {path}` or {other}",
        )
    if info.st_mode & stat.S_IWOTH:
        # A shared folder (/tmp, /dev/shm: sticky, everyone's) or a link is not made private:
        # `chmod` on it would break every other user of the machine, or change the target.
        shared = info.st_mode & stat.S_ISVTX or path.is_symlink()
        raise refuse(
            "is writable by every user, who could plant or replace cache entries",
            f"choose a folder of your own: {other}"
            if shared
            else f"run `chmod 700 {path}` or {other}",
        )


def ensure_private_dir(
    path: Path,
    *,
    what: str = "cache directory",
    other: str = OTHER_DIR,
) -> Path:
    """Create ``path`` (and missing parents) with mode 0700, or check the existing one.

    Returns the absolute path. Raises CacheDirectoryError naming the path, the problem and
    the fix when the directory is not a directory, not ours, or world-writable. ``what``
    names the directory in messages and ``other`` is the alternative fix offered.
    """
    path = path.expanduser().absolute()
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue  # another process created it between our check and mkdir
        except OSError as exc:
            raise CacheDirectoryError(
                f"{what} {directory} cannot be created ({exc.strerror}); {other}"
            ) from exc
        # mkdir's mode is filtered by the umask; set it exactly so the result never depends
        # on the caller's environment.
        os.chmod(directory, 0o700)
    _check(path, what, other)
    return path
