"""The ``claude-force`` console script; it lives outside the ``claude_force`` package on purpose.

Importing ``claude_force`` takes a few hundred milliseconds, and a Ctrl-C in that time used to
escape as a KeyboardInterrupt traceback (the script's own import runs before any of our code).
This module imports nothing heavy, so the whole start-up runs under the same Ctrl-C handling
as a command: ``stopped: interrupted`` on stderr and exit code 130.
"""

from __future__ import annotations

import contextlib
import sys
from typing import NoReturn

__all__ = ["main"]

EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> NoReturn:
    """Import the CLI and run it; Ctrl-C at any moment is one line and exit code 130."""
    try:
        from claude_force.cli import main as run_cli

        run_cli(argv)
    except KeyboardInterrupt:
        _interrupted()
    raise SystemExit(0)  # run_cli always exits; this keeps the NoReturn promise for mypy


def _interrupted() -> NoReturn:
    with contextlib.suppress(OSError, ValueError, AttributeError):  # stderr closed too
        print("stopped: interrupted", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_INTERRUPTED)
