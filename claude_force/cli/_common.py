"""Shared pieces of the CLI: error handling, exit codes, output helpers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from .. import ClaudeForceError, RunError, UsageError

EXIT_OK = 0
EXIT_RUN_FAILURE = 1
EXIT_USAGE = 2

console = Console()
err_console = Console(stderr=True)

config_option = click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Path to claude.json (default: .claude/claude.json here or in a parent folder).",
)


class RunFailed(Exception):
    """A command finished but what it ran failed: exit code 1, message already shown."""


def run_guarded(cli: click.Group, argv: list[str] | None) -> int:
    """Run the click group, turning our errors into messages and exit codes."""
    try:
        cli.main(args=argv, prog_name="claude-force", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        err_console.print("aborted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except UsageError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return EXIT_USAGE
    except RunError as exc:
        err_console.print(f"[bold red]failed:[/] {escape(str(exc))}", highlight=False)
        return EXIT_RUN_FAILURE
    except RunFailed:
        return EXIT_RUN_FAILURE
    except ClaudeForceError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return EXIT_RUN_FAILURE
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    return EXIT_OK


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
