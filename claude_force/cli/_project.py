"""``claude-force init``: scaffold a .claude/ folder."""

from __future__ import annotations

from pathlib import Path

import click

from .. import InvalidArgumentError, init_project


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
    # click.echo, not rich: a path or a command is never wrapped at the terminal's width.
    for path in written:
        click.echo(f"wrote {path}")
    click.echo("next: claude-force agents")
    click.echo("      claude-force run code-reviewer 'Review this diff'")


COMMANDS = [init_cmd]
