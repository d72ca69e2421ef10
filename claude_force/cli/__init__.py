"""The ``claude-force`` command line: a thin shell over the public API.

Start-up stays fast: the anthropic SDK is imported only by commands that send requests,
never for ``--help``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ._common import (
    EXIT_CODES_HELP,
    EXIT_INTERRUPTED,
    config_option,
    configure_logging,
    run_guarded,
    show_error,
)

__all__ = ["cli", "main"]


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    help=(
        "Run specialised Claude agents one at a time, many at once, or as workflows.\n\n"
        "The model's answer goes to standard output exactly as written; progress, usage, "
        "warnings and errors go to standard error. Set CLAUDE_FORCE_DEBUG=1 to see tracebacks."
    ),
    epilog=EXIT_CODES_HELP,
)
@click.version_option(package_name="claude-force", prog_name="claude-force")
@config_option
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    # `claude-force --config X list agents`, as Claude Force 1.x took it: the default of every
    # command's own --config, which still wins when given.
    if config_path is not None:
        ctx.default_map = _config_defaults(cli, str(config_path))


def _config_defaults(group: click.Group, path: str) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            defaults[name] = _config_defaults(command, path)
        elif any(param.name == "config_path" for param in command.params):
            defaults[name] = {"config_path": path}
    return defaults


def _register() -> None:
    from . import _agents, _batch, _cache, _memory, _metrics, _project, _sim, _workflow

    for module in (_project, _agents, _workflow, _batch, _sim, _cache, _metrics, _memory):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit. Exit codes: 0 ok, 1 run failed, 2 usage error, 130 Ctrl-C.

    The console script enters through ``claude_force_entry.main``, which also covers a Ctrl-C
    while this package is still being imported.
    """
    try:
        configure_logging()
        code = run_guarded(cli, argv)
    except KeyboardInterrupt:  # in the moments outside run_guarded's own handling
        show_error("interrupted", label="stopped")
        code = EXIT_INTERRUPTED
    sys.exit(code)
