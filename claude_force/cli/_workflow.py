"""``claude-force workflow``: run a workflow with a live table of its steps."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Literal

import click
from rich.console import Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .. import APIError, AsyncAgentOrchestrator, StepEvent, WorkflowResult
from ._agents import cache_options, make_orchestrator
from ._common import (
    EXIT_CODES_HELP,
    RunFailed,
    api_error_hint,
    cache_kept,
    config_option,
    console,
    cost_text,
    deliver,
    err_console,
    one_line,
    print_json,
    require_stdout,
    result_line,
    run_async,
    say,
    show_error,
    stop_note,
    task_file_option,
    task_from,
    task_option,
    usd,
    write_text,
)
from ._limits_line import rate_limit_line
from ._task import read_task

Outcome = Literal["done", "cancelled", "error"]

_COLOURS = {
    "pending": "dim",
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
    "skipped": "dim",
    "cancelled": "magenta",
    "reused": "cyan",
}


class WorkflowProgress:
    """A table of a workflow's steps on stderr, fed by StepEvent callbacks.

    Nothing is drawn until the first step starts, so input the library refuses (an unknown
    workflow, an empty task, no API key) gives its one-line error and no empty table.
    """

    def __init__(
        self,
        title: str,
        stages: Sequence[Sequence[str]],
        *,
        live: bool,
        limits: Callable[[], str] | None = None,
    ) -> None:
        self.title = title
        self.live = live
        self.limits = limits  # the rate-limit line under the table, read at each redraw
        # Keyed by (stage, agent): one agent may appear in several stages.
        self.rows: dict[tuple[int, str], tuple[str, str]] = {
            (number, agent): ("pending", "")
            for number, stage in enumerate(stages, 1)
            for agent in stage
        }
        self._view: Live | None = None
        self._started = False

    def __call__(self, event: StepEvent) -> None:
        if event.status == "started":
            self.rows[(event.stage, event.agent)] = ("running", "")
        elif event.result is not None and event.result.reused:
            self.rows[(event.stage, event.agent)] = ("reused", "kept output of an earlier run")
        elif event.result is not None and event.status == "succeeded":
            self.rows[(event.stage, event.agent)] = ("succeeded", result_line(event.result))
        else:
            errors = event.result.errors if event.result is not None else []
            self.rows[(event.stage, event.agent)] = (event.status, one_line("; ".join(errors)))
        self._draw()

    def _draw(self) -> None:
        self._started = True
        if not self.live or not _animated():
            return  # a pipe or a file gets the final table once, from finish()
        if self._view is None:
            # Re-rendered at every refresh, so the rate-limit line moves between steps too.
            self._view = Live(
                console=err_console,
                refresh_per_second=8,
                transient=True,
                get_renderable=self.render,
            )
            self._view.start()
        else:
            self._view.refresh()

    def finish(self, outcome: Outcome) -> None:
        """Mark the steps that never ran, draw the final table once and stop. Idempotent.

        After a failed stage the later steps are "skipped"; after Ctrl-C or an error, what
        had not finished is "cancelled". An error before any step finished (a config or
        cache problem found by the first call) leaves no table, only its one-line message.
        """
        for key, (status, _detail) in self.rows.items():
            if status == "running" or (status == "pending" and outcome != "done"):
                self.rows[key] = ("cancelled", "")
            elif status == "pending":
                self.rows[key] = ("skipped", "an earlier stage failed")
        view, self._view = self._view, None
        if view is not None:
            view.stop()  # transient: the live table goes, the final one is printed below
        started, self._started = self._started, False
        finished = any(
            status in ("succeeded", "failed", "reused") for status, _ in self.rows.values()
        )
        if self.live and started and (finished or outcome == "cancelled"):
            err_console.print(self.render())

    def render(self) -> RenderableType:
        """The table, and under it the rate-limit line once anything is known."""
        table = Table(title=self.title)
        table.add_column("stage", justify="right")
        table.add_column("agent")
        table.add_column("status")
        table.add_column("detail")
        for (stage, agent), (status, detail) in self.rows.items():
            table.add_row(str(stage), agent, f"[{_COLOURS[status]}]{status}[/]", escape(detail))
        limits = self.limits() if self.limits is not None else ""
        return Group(table, Text(limits, style="dim", no_wrap=True)) if limits else table


def _animated() -> bool:
    """Redraw in place only on a real terminal; elsewhere the cursor cannot move back."""
    return err_console.is_terminal and not err_console.is_dumb_terminal


async def run_with_progress(
    orch: AsyncAgentOrchestrator,
    name: str,
    task: str,
    *,
    live: bool,
    use_cache: bool = True,
    refresh: bool = False,
    resume: bool = False,
) -> WorkflowResult:
    """Run workflow ``name``, drawing its progress table on stderr when ``live``."""
    progress = WorkflowProgress(
        f"workflow {name}",
        orch.config.workflow(name),
        live=live,
        limits=lambda: rate_limit_line(orch.rate_limit_state),
    )
    outcome: Outcome = "error"
    try:
        result = await orch.run_workflow(
            name, task, on_step=progress, use_cache=use_cache, refresh=refresh, resume=resume
        )
        outcome = "done"
        return result
    except (asyncio.CancelledError, KeyboardInterrupt):
        outcome = "cancelled"
        raise
    finally:
        progress.finish(outcome)


def print_workflow_result(result: WorkflowResult, *, all_steps: bool) -> None:
    """The answer on stdout, the summary on stderr.

    ``all_steps``: every step's output under a header (for a terminal); otherwise only the
    workflow's final output, byte for byte, so that it can be piped or saved.
    """
    if all_steps:
        for number, step in enumerate(result.steps, 1):
            state = "" if step.success else " (failed)"
            console.rule(f"step {number}: {escape(step.agent_name)}{state}")
            if step.success:
                write_text(step.output)
    elif result.success:
        write_text(result.final_output)
    if not result.success:
        show_failure(result)
    show_flags(result)
    say(summary_line(result))


def show_flags(result: WorkflowResult) -> None:
    """Name the steps whose input looked like an attempt to override instructions, and the
    steps whose answer ended before the model finished."""
    for step in result.steps:
        note = stop_note(step, f"step {step.step} ({step.agent_name}): ") if step.success else None
        if note:
            say(note)
        if step.injection_flags:
            flags = ", ".join(step.injection_flags)
            say(
                f"note: step {step.step} ({step.agent_name}) input flagged as possible "
                f"prompt injection ({flags}); it was sent unchanged"
            )


def show_failure(result: WorkflowResult) -> None:
    # A step's API error is the service's text: shown as it came, never reworded.
    api_errors = [step.error for step in result.steps if isinstance(step.error, APIError)]
    hint = api_error_hint(api_errors[0]) if len(api_errors) == 1 else ""
    show_error(
        f"workflow {result.workflow_name} failed: {result.error}{hint}", rewrite=not api_errors
    )


def summary_line(result: WorkflowResult) -> str:
    """Status, time, tokens and cost; steps answered from the cache say what they saved."""
    status = "succeeded" if result.success else "failed"
    head = (
        f"workflow {result.workflow_name} {status} in {result.execution_time_ms / 1000:.2f} s; "
        f"{len(result.steps)} step{'' if len(result.steps) == 1 else 's'}"
    )
    if result.reused:
        head += f" ({len(result.reused)} reused from run {result.resumed_from})"
    hits = [step for step in result.steps if step.cached]
    saved_known = [step.cost_saved for step in hits if step.cost_saved is not None]
    saved = f"saved {usd(sum(saved_known, Decimal(0)))}" if saved_known else "cost unknown"
    if hits and len(hits) == len(result.steps):
        return f"{head}, all cached, {saved}"
    paid = (
        f"{result.total_input_tokens} input + {result.total_output_tokens} output tokens, "
        f"{cost_text(result.total_cost)}"
    )
    if hits:
        return f"{head}, {paid} ({len(hits)} cached, {saved})"
    return f"{head}, {paid}"


@click.command("workflow", epilog=EXIT_CODES_HELP)
@click.argument("name")
@click.argument("task", required=False)
@task_file_option
@task_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--resume",
    is_flag=True,
    help="Reuse the unchanged successful steps of the latest run of this workflow and task; "
    "only the failed and later steps are sent.",
)
@cache_options
@config_option
def workflow_cmd(
    name: str,
    task: str | None,
    task_file: Path | None,
    as_json: bool,
    resume: bool,
    no_cache: bool,
    refresh: bool,
    cache_dir: Path | None,
    config_path: Path | None,
    task_option: str | None = None,
) -> None:
    """Run workflow NAME on TASK, showing each step live on standard error.

    On a terminal every step's output is shown under a header; piped or redirected, standard
    output gets only the workflow's final output, byte for byte (--json gives every step).
    A failed run's successful steps are kept in .claude/data/ until a run succeeds, so that
    --resume sends only what is left.
    """
    name, task = task_from(name, task, task_option, word="", has_file=False)
    text = read_task(task, task_file)
    require_stdout()
    orch = make_orchestrator(config_path, no_cache=no_cache, refresh=refresh, cache_dir=cache_dir)
    # Opened now: a cache problem is reported before any table.
    in_cache = orch.response_cache is not None

    async def go() -> WorkflowResult:
        async with orch:
            result = await run_with_progress(
                orch,
                name,
                text,
                live=not as_json,
                use_cache=not no_cache,
                refresh=refresh,
                resume=resume,
            )
            show(result)  # now: closing can wait on another process's lock
            return result

    def kept() -> bool:
        return in_cache and cache_kept(orch.response_cache)

    def show(result: WorkflowResult) -> None:
        if resume and not result.reused:
            say(
                "--resume: no unchanged step of an earlier run of this workflow and task was "
                "kept; every step ran"
            )
        if as_json:
            deliver(lambda: print_json(result.to_dict()), in_cache=kept)
            if not result.success:
                show_failure(result)
        else:
            all_steps = sys.stdout is not None and sys.stdout.isatty()
            deliver(lambda: print_workflow_result(result, all_steps=all_steps), in_cache=kept)

    if not run_async(go()).success:
        raise RunFailed


COMMANDS = [workflow_cmd]
