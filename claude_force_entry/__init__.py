"""The ``claude-force`` console script; it lives outside the ``claude_force`` package on purpose.

Importing ``claude_force`` takes a few hundred milliseconds, and a Ctrl-C in that time used to
escape as a KeyboardInterrupt traceback (the script's own import runs before any of our code).
This module imports nothing heavy, so the whole start-up runs under the same Ctrl-C handling
as a command: ``stopped: interrupted`` on stderr and exit code 130.

The very first statement is a ``try``, and its first act installs a SIGINT handler that stops
the process the same way: so a Ctrl-C while this module loads, or in the console script's own
lines between importing it and calling :func:`main`, is covered too. :func:`main` hands SIGINT
back to Python's KeyboardInterrupt (inside its ``try``) before importing the CLI, whose
commands clean up on KeyboardInterrupt. A SIGINT the parent set to be ignored stays ignored.
What runs before this module (the interpreter's own start-up, ``site`` and ``.pth`` files)
is Python's: a Ctrl-C there ends the process by the signal, which a shell reports as 130.
"""

try:
    import signal
    import sys

    EXIT_INTERRUPTED = 130

    def _interrupted() -> None:
        """Say so on stderr (if it is still there) and exit 130."""
        try:  # noqa: SIM105 - contextlib is not imported, to keep this window short
            print("stopped: interrupted", file=sys.stderr, flush=True)
        except (OSError, ValueError, AttributeError):  # stderr closed too
            pass
        raise SystemExit(EXIT_INTERRUPTED)

    def _on_early_sigint(signum: int, frame: object) -> None:
        """SIGINT before :func:`main` is inside its ``try``: stop at once, cleanly."""
        _interrupted()

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_early_sigint)

    def main(argv: list[str] | None = None) -> None:
        """Import the CLI and run it; Ctrl-C at any moment is one line and exit code 130.

        Never returns: the CLI always exits.
        """
        try:
            if signal.getsignal(signal.SIGINT) is _on_early_sigint:
                signal.signal(signal.SIGINT, signal.default_int_handler)
            from claude_force.cli import main as run_cli

            run_cli(argv)
        except KeyboardInterrupt:
            _interrupted()
        raise SystemExit(0)  # run_cli always exits

except KeyboardInterrupt:  # before the handler above was installed
    import sys

    try:  # noqa: SIM105 - as in _interrupted
        print("stopped: interrupted", file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):
        pass
    raise SystemExit(130) from None

__all__ = ["EXIT_INTERRUPTED", "main"]
