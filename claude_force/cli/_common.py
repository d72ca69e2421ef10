"""Shared pieces of the CLI: exit codes, options, the two kinds of output, the top level.

Standard output carries what the user asked for (the model's text, JSON, a report), written
exactly; standard error carries decoration (progress, usage, timing), warnings and errors.
At the top level an exception becomes one line on stderr and an exit code; tracebacks are
for developers (``CLAUDE_FORCE_DEBUG=1`` prints them, and debug logging).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import signal
import sqlite3
import sys
import traceback
from collections.abc import Callable, Coroutine
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from .. import (
    AgentResult,
    APIError,
    ClaudeForceError,
    ConfigError,
    InvalidArgumentError,
    ResponseCache,
    RunError,
    UsageError,
)

EXIT_OK = 0
EXIT_RUN_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 the run failed (an API error after retries, a budget stop, a "
    "failed workflow step) or an unexpected error; 2 a usage or configuration error (bad "
    "argument, invalid claude.json, a file, folder, database or port that cannot be used); "
    "130 interrupted (Ctrl-C)."
)

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

CACHE_DIR_HELP = (
    "Response cache folder (default: $CLAUDE_FORCE_CACHE_DIR, else "
    "$XDG_CACHE_HOME/claude-force or ~/.cache/claude-force). A --cache-dir naming a file is a "
    "usage error; a folder the cache cannot use (from here, the environment or the default) is "
    "a warning, and the run goes on uncached."
)

# No envvar= here: the library reads CLAUDE_FORCE_CACHE_DIR itself, and an unusable folder
# from the environment must be a warning (run uncached), not a usage error from click.
task_file_option = click.option(
    "-f",
    "--file",
    "--task-file",
    "task_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the task from FILE.",
)

# Claude Force 1.x took the task as --task TEXT; scripts written for it keep working.
task_option = click.option(
    "--task", "task_option", default=None, help="The task (the same as TASK)."
)


def task_from(
    name: str, task: str | None, task_option: str | None, *, word: str, has_file: bool
) -> tuple[str, str | None]:
    """``(name, task)`` from TASK or ``--task``. ``run agent NAME --task T`` (Claude Force
    1.x's form, ``word`` being ``agent``) names NAME, as no other reading of it is valid."""
    if name == word and task is not None and (task_option is not None or has_file):
        return task, task_option
    if task_option is None:
        return name, task
    if task is None:
        return name, task_option
    raise click.UsageError("give the task either as TASK or with --task, not both")


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")

cache_dir_option = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=CACHE_DIR_HELP,
)


class RunFailed(Exception):
    """A command finished but what it ran failed: exit code 1, message already shown."""


def write_text(text: str) -> None:
    """Write ``text`` to standard output exactly, as UTF-8, plus a final newline if it lacks one.

    Nothing wraps, pads or re-encodes it, whether stdout is a terminal, a pipe or a file.
    A closed standard output raises OSError(EBADF) (see :func:`deliver`).
    """
    data = text if text.endswith("\n") else text + "\n"
    stream = sys.stdout
    if stream is None:  # started with fd 1 closed (`>&-`)
        raise OSError(errno.EBADF, "standard output is closed")
    stream.flush()  # anything rich or click wrote before comes first
    buffer = getattr(stream, "buffer", None)
    if buffer is None:  # a text-only stream (some embedding hosts)
        stream.write(data)
        stream.flush()
        return
    # A lone surrogate cannot be UTF-8; everything else goes out unchanged.
    buffer.write(data.encode("utf-8", errors="replace"))
    buffer.flush()


def require_stdout() -> None:
    """Refuse before a request is paid for when its answer would have nowhere to go.

    Python sets ``sys.stdout`` to None when fd 1 was closed at start; writing to fd 1 anyway
    is not safe, as a file opened since (the cache or the ledger) may have taken that number.
    """
    if sys.stdout is None or getattr(sys.stdout, "closed", False):
        raise InvalidArgumentError(
            "standard output is closed, so the answer would be lost; nothing was sent. "
            "Run the command with standard output open, e.g. `> answer.txt` "
            "(or `> /dev/null` to discard the answer)"
        )


def deliver(write: Callable[[], None], *, in_cache: Callable[[], bool]) -> None:
    """Run ``write`` (which puts a paid answer on stdout); a failure says whether a rerun is free.

    ``in_cache`` is asked only then: whether the answer is stored (see :func:`cache_kept`).
    A reader that went away (BrokenPipeError, `| head`) is left to the top level.
    """
    try:
        write()
    except BrokenPipeError:
        raise
    except (OSError, ValueError) as exc:  # ValueError: "I/O operation on closed file"
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        again = (
            "the answer is in the response cache: run the same command again to get it at no cost"
            if in_cache()
            else "the answer was not cached, so running again sends (and pays for) a new request"
        )
        show_error(f"cannot write the answer to standard output ({reason}); {again}")
        _silence_stdout()  # or Python's flush at exit fails again, with a traceback
        raise RunFailed from None


def cache_kept(cache: ResponseCache | None) -> bool:
    """Whether everything handed to ``cache`` so far is stored: its queued writes are made
    now (blocking), and none of them failed (another process holding the lock, say)."""
    if cache is None:
        return False
    before = cache.get_stats()["errors"]
    cache.flush()
    return bool(cache.get_stats()["errors"] == before)


def print_json(data: Any) -> None:
    write_text(json.dumps(data, indent=2, default=str))


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def path_shown(path: str | os.PathLike[str]) -> str:
    """A path as click shows it (undecodable bytes replaced), control characters escaped:
    a newline or an escape sequence in a file name never breaks or colours a line."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], click.format_filename(path))


def say(message: str) -> None:
    """One line of decoration on standard error (never wrapped)."""
    click.echo(message, err=True)


_LABEL_COLOURS = {"error": "red", "critical": "red", "warning": "yellow"}


def error_line(message: str, *, label: str = "error", rewrite: bool = True) -> str:
    """``label: message`` on one line, the label coloured (click drops colour off a terminal).

    ``rewrite=False`` for text the library did not write (API errors, JSON paths of a config
    file): it is joined onto one line but never reworded.
    """
    styled = click.style(label + ":", fg=_LABEL_COLOURS.get(label), bold=True)
    return f"{styled} {cli_message(message) if rewrite else one_line(message)}"


def show_error(message: str, *, label: str = "error", rewrite: bool = True) -> None:
    click.echo(error_line(message, label=label, rewrite=rewrite), err=True)


def one_line(text: str) -> str:
    """A multi-line message on one line: ``head: a; b; c`` (lists keep their items)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    rest = [line[2:] if line.startswith("- ") else line for line in lines[1:]]
    head = lines[0] if lines[0].endswith(":") else lines[0] + ":"
    return f"{head} {'; '.join(rest)}"


# The library speaks Python (keyword arguments); the command line speaks options. Only whole
# phrases the library writes are replaced, never a bare word: a JSON path such as
# `agents.a.max_tokens` or an API error must reach the user unchanged.
_CLI_WORDS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"\s*\((?:force=True|use force=True)\)", ""),
        (r"\bforce=True\b", "--force"),
        (r"\bport=(\d+)", r"--port \1"),
        (r"^max_tokens must be an integer\b", "--max-tokens must be an integer"),
        (r"\bchoose another cache_dir\b", "choose another --cache-dir"),
        (r"\benable_cache=False\b", "--no-cache"),
        (r"\buse_cache=False\b", "--no-cache"),
        (r"\brefresh=True\b", "--refresh"),
        (r" or pass api_key=\.\.\.", ""),
        (r"\bapi_key=\.\.\.", "ANTHROPIC_API_KEY"),
        # Python-only ways out that the command line has no option for.
        (r",? or pass ledger_path= naming (?:a file in one|a writable file)\b", ""),
        (r", or raise max_task_chars= on the orchestrator\b", ""),
        (r" or pass cache_secret\b", ""),
    )
)


def cli_message(text: str) -> str:
    """A library message as the command line says it: one line, options not keywords."""
    text = one_line(text)
    for pattern, replacement in _CLI_WORDS:
        text = pattern.sub(replacement, text)
    return text


def usd(value: Decimal) -> str:
    """``$0.0123``, ``$1.50``: to the micro-dollar, at least two decimals (a sum beyond any
    real bill, from a server's impossible counts, in scientific notation)."""
    if not value.is_finite() or value.adjusted() >= 15:
        return f"${value:.6e}"
    whole, _, frac = f"{value.quantize(Decimal('0.000001')):f}".partition(".")
    return f"${whole}.{frac.rstrip('0').ljust(2, '0')}"


def cost_text(cost: Decimal | None) -> str:
    return "unpriced" if cost is None else usd(cost)


def result_line(result: AgentResult) -> str:
    """Model, tokens, time and cost of one call; a cache hit says what it saved."""
    meta = result.metadata
    ms = f"{meta.get('execution_time_ms', 0):.0f} ms"
    if meta.get("cached"):
        saved = meta.get("cost_saved")
        saved_text = "cost unknown" if saved is None else f"saved {usd(saved)}"
        return f"{meta.get('model')}: cached, {saved_text}, {ms}"
    return (
        f"{meta.get('model')}: {meta.get('input_tokens', 0)} in"
        f" / {meta.get('output_tokens', 0)} out tokens,"
        f" cache read {meta.get('cache_read_input_tokens', 0)}, {ms},"
        f" {cost_text(meta.get('estimated_cost'))}"
    )


# Why an answer ended early, for the stop reasons after which the text is not the whole answer.
_STOP_NOTES = {
    "max_tokens": "the answer was cut at the max_tokens limit; raise --max-tokens (or the "
    "agent's max_tokens) for the rest",
    "refusal": "the model declined to answer this task (stop_reason refusal)",
    "pause_turn": "the model paused a long turn (stop_reason pause_turn); the answer may be "
    "incomplete: run the task again to continue",
    "model_context_window_exceeded": "the answer stopped at the model's context window; "
    "shorten the task or the agent file",
}


def stop_note(result: AgentResult, who: str = "") -> str | None:
    """A ``note:`` line when the answer ended before the model finished, else None."""
    text = _STOP_NOTES.get(result.stop_reason or "")
    return None if text is None else f"note: {who}{text}"


# What to do about an API error that survived the retries, by status (None: connection).
_API_FIXES = {
    401: "check the API key (ANTHROPIC_API_KEY)",
    403: "this API key may not use this model or feature; check its workspace and permissions",
    404: "check the model name (--model, the agent's 'model', 'default_model') and "
    "ANTHROPIC_BASE_URL",
    413: "the request is too large: shorten the task or the agent file",
    429: "rate limited after every retry; wait a minute, or send fewer requests at once",
    529: "the service is overloaded; try again in a few minutes",
}


def api_error_hint(error: object) -> str:
    """`` (request-id ...); <fix>`` for an APIError, to follow the service's own message."""
    if not isinstance(error, APIError):
        return ""
    status = error.status_code
    if status is None:
        fix: str | None = "check the network and ANTHROPIC_BASE_URL, or raise the timeout"
    else:
        fix = _API_FIXES.get(
            status, "the service failed; try again later" if status >= 500 else None
        )
    request = f" (request-id {error.request_id})" if error.request_id else ""
    return request + (f"; {fix}" if fix else "")


# -- the top level ------------------------------------------------------------------------

DEBUG_ENV = "CLAUDE_FORCE_DEBUG"
_DEBUG_HINT = f"run with {DEBUG_ENV}=1 for the traceback"


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


class WarningLines(logging.Handler):
    """Records of the ``claude_force`` logger as ``warning: ...`` lines on standard error."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            label = logging.getLevelName(record.levelno).lower()
            show_error(record.getMessage(), label=label)
        except (OSError, ValueError, TypeError):
            self.handleError(record)


def configure_logging() -> None:
    """Send the library's warnings (debug records too under CLAUDE_FORCE_DEBUG) to stderr."""
    logger = logging.getLogger("claude_force")
    if any(isinstance(h, WarningLines) for h in logger.handlers):
        return
    level = logging.DEBUG if debug_enabled() else logging.WARNING
    logger.addHandler(WarningLines(level))
    logger.setLevel(level)
    logger.propagate = False  # printed once, by us, not again by a root handler


def run_guarded(cli: click.Group, argv: list[str] | None) -> int:
    """Run the click group; every way it can end becomes an exit code (see EXIT_CODES_HELP)."""
    try:
        returned = cli.main(args=argv, prog_name="claude-force", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        show_error("interrupted", label="stopped")
        return EXIT_INTERRUPTED
    except Exception as exc:  # the CLI's top level: nothing may escape as a traceback
        return _report(exc)
    return returned if isinstance(returned, int) else EXIT_OK


def _report(exc: Exception) -> int:
    """Print ``exc`` as one line; return its exit code."""
    if isinstance(exc, RunFailed):
        return EXIT_RUN_FAILURE  # already shown by the command
    if debug_enabled():
        traceback.print_exc()
    if isinstance(exc, BrokenPipeError):
        _silence_stdout()  # the reader went away (| head): nothing left to say
        return EXIT_RUN_FAILURE
    code, message = _describe(exc)
    # Only the library's own advice is reworded; API text and config paths stay verbatim.
    show_error(message, rewrite=_library_worded(exc))
    return code


def _library_worded(exc: Exception) -> bool:
    return isinstance(exc, ClaudeForceError) and not isinstance(exc, (ConfigError, APIError))


def _describe(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, click.ClickException):
        return EXIT_USAGE, _click_message(exc)
    if isinstance(exc, ConfigError):
        return EXIT_USAGE, config_message(exc)
    if isinstance(exc, UsageError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, (RunError, ClaudeForceError)):
        return EXIT_RUN_FAILURE, str(exc)
    if isinstance(exc, OSError):
        return EXIT_USAGE, _os_message(exc)
    if isinstance(exc, sqlite3.Error):
        return EXIT_USAGE, (
            f"a claude-force database cannot be used ({exc}); if .claude/data/usage.db or "
            "the cache folder's cache.db is damaged, move it aside and run again"
        )
    return EXIT_RUN_FAILURE, f"{type(exc).__name__}: {exc}; {_DEBUG_HINT}"


def config_message(exc: ConfigError) -> str:
    """The config error on one line, without a lone problem its first line already states."""
    head = str(exc).split("\n", 1)[0]
    if len(exc.problems) == 1:
        _where, _, what = exc.problems[0].partition(": ")
        if (what or exc.problems[0]) in head:
            return head
    return str(exc)


def _click_message(exc: click.ClickException) -> str:
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    if isinstance(ctx, click.Context):
        return f"{message} (see `{ctx.command_path} --help`)"
    return message


def _os_message(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    where = f": {exc.filename}" if exc.filename is not None else ""
    return f"{what}{where}; check the path and its permissions, or {_DEBUG_HINT}"


def _silence_stdout() -> None:
    # Python flushes stdout at exit; a closed pipe would raise again there.
    if sys.stdout is None:
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


T = TypeVar("T")


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` where Ctrl-C cancels the main task and then surfaces as
    :class:`KeyboardInterrupt`, as Python 3.11's runner does.

    On 3.10 the interrupt is raised inside whichever task happens to run; that task keeps it,
    and asyncio later logs "Task exception was never retrieved" with a traceback on stderr.
    """
    if sys.version_info >= (3, 11):
        return asyncio.run(main)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    task = loop.create_task(main)
    interrupted: list[bool] = []

    def on_sigint() -> None:
        interrupted.append(True)
        task.cancel()

    # Not in the main thread (ValueError, RuntimeError): the default behaviour stays.
    with contextlib.suppress(ValueError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        try:
            loop.remove_signal_handler(signal.SIGINT)
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for left in pending:
                left.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
