"""``claude-force init``: scaffold a .claude/ folder."""

from __future__ import annotations

from pathlib import Path

import click

from .. import InvalidArgumentError, init_project
from ._common import console


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=Path("."))
@click.option(
    "--force", is_flag=True, help="Overwrite the example files if .claude/claude.json exists."
)
def init_cmd(directory: Path, force: bool) -> None:
    """Create .claude/ with three example agents and two workflows in DIRECTORY."""
    try:
        written = init_project(directory, force=force)
    except OSError as exc:  # a folder that cannot be created or written
        where = exc.filename if exc.filename is not None else directory
        raise InvalidArgumentError(
            f"cannot create the project in {where}: {exc.strerror or exc}; "
            "choose a folder you can write to, or fix its permissions"
        ) from exc
    for path in written:
        console.print(f"wrote {path}", highlight=False)
    console.print(
        "next: claude-force agents   |   claude-force run code-reviewer 'Review this diff'",
        highlight=False,
    )


COMMANDS = [init_cmd]
