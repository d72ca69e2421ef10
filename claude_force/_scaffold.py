"""``claude-force init``: write a starter ``.claude/`` folder from the packaged templates."""

from __future__ import annotations

import errno
import os
import sys
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ._config import CONFIG_DIR, CONFIG_FILE
from ._errors import InvalidArgumentError
from ._files import replace_file, shown

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

__all__ = ["init_project"]

_TEMPLATE = "templates/claude"


def init_project(dest: Path, *, force: bool = False) -> list[Path]:
    """Write ``dest/.claude/`` (claude.json, agents, contracts) and return the paths written.

    Without ``force`` nothing is written if any template file already exists. With ``force``
    only the template files are overwritten; every other file the user has is left alone.
    Every failure is an InvalidArgumentError naming the folder, the cause and the fix.
    """
    dest = Path(dest)
    try:
        return _init(dest, force)
    except InvalidArgumentError:  # already says what is wrong and how to fix it
        raise
    except (OSError, ValueError) as exc:
        raise _init_error(dest, exc) from None


def _init(dest: Path, force: bool) -> list[Path]:
    if dest.exists() and not dest.is_dir():
        raise InvalidArgumentError(f"cannot initialise {dest}: it is a file, not a folder")
    target = dest / CONFIG_DIR
    if target.exists() and not target.is_dir():
        raise InvalidArgumentError(
            f"cannot initialise {dest}: {target} is a file; move it away and run init again"
        )
    plan = [(target.joinpath(*rel.parts), data) for rel, data in _template_files()]
    # claude.json last: if a write fails midway there is no config pointing at missing files.
    plan.sort(key=lambda item: item[0].name == CONFIG_FILE)
    existing = [path for path, _ in plan if path.exists() or path.is_symlink()]
    existing.sort(key=lambda path: path.name != CONFIG_FILE)  # name claude.json first
    if existing and not force:
        shown = ", ".join(str(p) for p in existing[:5]) + (" ..." if len(existing) > 5 else "")
        raise InvalidArgumentError(
            f"{target} already has a Claude Force project ({shown}); nothing was written. "
            "Use `claude-force init --force` (force=True) to overwrite the template files; "
            "other files in the folder are kept."
        )
    written: list[Path] = []
    for path, data in plan:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, data)
        written.append(path)
    return written


_FIXES = {
    errno.EACCES: "check the folder's permissions, or choose a folder you can write to",
    errno.EPERM: "check the folder's permissions, or choose a folder you can write to",
    errno.EROFS: "the file system is read-only; choose a folder on a writable disk",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.ENOTDIR: "a file stands where a folder is needed; move it away or choose another folder",
    errno.EEXIST: "a file stands where a folder is needed; move it away and run init again",
    errno.ENOSPC: "free some disk space and run init again",
    errno.EDQUOT: "free some of your disk quota and run init again",
}


def _init_error(dest: Path, exc: OSError | ValueError) -> InvalidArgumentError:
    if not isinstance(exc, OSError):  # a NUL byte or an unencodable name
        return InvalidArgumentError(
            f"cannot initialise {shown(dest)}: the path is not a valid file name ({exc}); "
            "choose another folder"
        )
    named = isinstance(exc.filename, (str, os.PathLike))
    where = shown(exc.filename) if named else shown(dest)
    reason = exc.strerror or type(exc).__name__
    fix = _FIXES.get(exc.errno or 0, "check the path and run init again")
    return InvalidArgumentError(f"cannot initialise {shown(dest)}: {where}: {reason}; {fix}")


def _template_files() -> list[tuple[PurePosixPath, bytes]]:
    """Every template file as (path relative to the template folder, contents)."""
    root = files("claude_force").joinpath(_TEMPLATE)
    found: list[tuple[PurePosixPath, bytes]] = []
    pending: list[tuple[PurePosixPath, Traversable]] = [(PurePosixPath(), root)]
    while pending:
        rel, node = pending.pop()
        for child in node.iterdir():
            if child.name.startswith((".", "__")):  # editor droppings, __pycache__
                continue
            if child.is_dir():
                pending.append((rel / child.name, child))
            else:
                found.append((rel / child.name, child.read_bytes()))
    return sorted(found)
