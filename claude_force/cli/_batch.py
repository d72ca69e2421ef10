"""``claude-force batch``: a JSONL file of tasks, results appended as they finish, resumable."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
from rich.console import RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from .. import (
    BatchesSettings,
    BatchProgress,
    BatchSummary,
    Budget,
    InvalidArgumentError,
    OrchestratorOptions,
    run_batch_file,
)
from ._agents import cache_options, make_orchestrator
from ._common import (
    EXIT_INTERRUPTED,
    RunFailed,
    config_option,
    err_console,
    path_shown,
    print_json,
    run_async,
    say,
    show_error,
    usd,
)

BATCH_EXIT_CODES = (
    "Exit codes: 0 every line of INPUT has a successful record in RESULTS; 1 some line failed "
    "or was malformed (its record says why; --retry-failed reruns it), or --max-cost stopped "
    "the run (the rest is unsent: run again to continue); 2 a usage error (INPUT unreadable, "
    "RESULTS not a results file or in use, a bad option, invalid claude.json); 130 interrupted "
    "(Ctrl-C): finished records are kept, run the same command again to resume."
)


class _Rate(ProgressColumn):
    """Lines per second, as rich measures it over the last moments."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        return Text("" if speed is None else f"{speed:,.1f} lines/s", style="cyan")


class _Bar(Progress):
    """The progress row, then the service's counts (``--mode batches``) on a line below."""

    service = ""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        if self.service:
            yield Text(self.service)


class ProgressBar:
    """The bar on stderr: done/total, rate, ETA, failures, cost so far and cache hits."""

    def __init__(self, *, quiet: bool, retry_failed: bool, batches: bool = False) -> None:
        self.quiet = quiet
        self.retry_failed = retry_failed
        self.summary: BatchSummary | None = None
        # Lines of --mode batches finish together when a batch ends: a rate and an ETA say
        # nothing there. The service's counts get a line of their own (_Bar), so on a narrow
        # stderr (80 columns when it is not a terminal) nothing is cut.
        timing = [] if batches else [_Rate(), TimeRemainingColumn()]
        self.bar = _Bar(
            TextColumn("batch"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            *timing,
            TextColumn("{task.fields[failed]} failed"),
            TextColumn("{task.fields[cost]}"),
            TextColumn("{task.fields[cached]} cached"),
            console=err_console,
            disable=quiet,
        )
        # The total comes with the first summary, before the first line: the library counts
        # the input's lines when it is a regular file.
        self.task = self.bar.add_task("batch", total=None, failed=0, cost="$0.00", cached=0)

    def service(self, counts: BatchProgress) -> None:
        """``--mode batches``: the service's request counts over the batches waited for."""
        self.bar.service = (
            f"{counts.batches} batch{'es' if counts.batches != 1 else ''} at the service: "
            f"{counts.processing} processing, "
            f"{counts.succeeded} succeeded, {counts.errored} errored, {counts.expired} expired"
            + (f", {counts.canceled} canceled" if counts.canceled else "")
        )
        self.bar.refresh()

    def __call__(self, summary: BatchSummary) -> None:
        if self.summary is None:
            self.summary = summary
            self._resuming(summary)
            self.bar.update(self.task, total=summary.expected or None)
        self.bar.update(
            self.task,
            completed=summary.done,
            failed=summary.failed,
            cost=usd(summary.cost),
            cached=summary.cached,
        )

    def _resuming(self, summary: BatchSummary) -> None:
        if self.quiet or not (summary.found_succeeded or summary.found_failed):
            return
        failed = summary.found_failed
        what = (
            f"{failed} failed, running them again"
            if self.retry_failed
            else f"{failed} failed, left as they are (--retry-failed reruns them)"
        )
        say(
            f"resuming {path_shown(summary.output)}: "
            f"skipping {summary.found_succeeded} finished" + (f"; {what}" if failed else "")
        )


def _budget(max_cost: str | None) -> Budget | None:
    if max_cost is None:
        return None
    try:
        return Budget(max_cost_usd=max_cost)
    except InvalidArgumentError:
        raise InvalidArgumentError(
            f"--max-cost {max_cost!r} is not an amount of dollars; write it like 2.50"
        ) from None


@click.command("batch", epilog=BATCH_EXIT_CODES)
@click.argument(
    "input_path",
    metavar="INPUT.jsonl",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
)
@click.option(
    "--out",
    "-o",
    "output_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Results file (JSONL); records are appended, and ids already in it are skipped.",
)
@click.option("--retry-failed", is_flag=True, help="Run again the ids whose record failed.")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=OrchestratorOptions.max_concurrent,
    show_default=True,
    help="At most N requests in flight; rate limits and overload may hold it lower.",
)
@click.option(
    "--max-cost",
    metavar="USD",
    default=None,
    help="Stop before the request that could take the run's cost past USD; the rest stays "
    "unsent, and a rerun continues.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no notes.")
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON on stdout.")
@click.option(
    "--mode",
    type=click.Choice(["messages", "batches"]),
    default="messages",
    show_default=True,
    help="messages: one Messages API call per line; batches: the Message Batches API at half "
    "price (answers within 24 hours; batch ids kept in RESULTS.batches.json).",
)
@click.option(
    "--poll-interval",
    metavar="SECONDS",
    type=click.FloatRange(min=0.01),
    default=BatchesSettings.POLL_INITIAL,
    show_default=True,
    help="--mode batches: the first wait between looks at the batches; it doubles up to "
    "10 minutes.",
)
@cache_options
@config_option
def batch_cmd(
    input_path: Path,
    output_path: Path,
    retry_failed: bool,
    concurrency: int,
    max_cost: str | None,
    quiet: bool,
    as_json: bool,
    mode: str,
    poll_interval: float,
    no_cache: bool,
    refresh: bool,
    cache_dir: Path | None,
    config_path: Path | None,
) -> None:
    """Run every line of INPUT.jsonl, appending one record a line to RESULTS as each finishes.

    A line is {"agent": ..., "task": ..., "id"?, "model"?, "max_tokens"?, "temperature"?};
    without an id the line number is the id. A record has the keys id, agent, success, output,
    usage, cost, cached, attempts and error. Stopped or killed, the same command resumes.
    INPUT may be - (standard input) or a pipe: it is read once, and the bar has no ETA.
    """
    budget = _budget(max_cost)
    orch = make_orchestrator(
        config_path,
        no_cache=no_cache,
        refresh=refresh,
        cache_dir=cache_dir,
        max_concurrent=concurrency,
    )
    progress = ProgressBar(quiet=quiet, retry_failed=retry_failed, batches=mode == "batches")
    options: dict[str, Any] = {
        "retry_failed": retry_failed,
        "concurrency": concurrency,
        "budget": budget,
        "use_cache": not no_cache,
        "refresh": refresh,
        "on_progress": progress,
        "mode": mode,
        "batches": BatchesSettings(
            poll_initial=min(poll_interval, BatchesSettings.POLL_MAX),
            on_progress=progress.service,
        ),
    }

    async def go() -> BatchSummary:
        async with orch:
            return await run_batch_file(orch, input_path, output_path, **options)

    try:
        with progress.bar:
            summary = run_async(go())
    except KeyboardInterrupt:
        done = progress.summary.done if progress.summary is not None else 0
        show_error(
            f"interrupted; {done} lines are done in {path_shown(output_path)}; "
            "run the same command again to resume",
            label="stopped",
        )
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    _finish(summary, quiet=quiet, as_json=as_json)


def _finish(summary: BatchSummary, *, quiet: bool, as_json: bool) -> None:
    if as_json:
        print_json(summary.to_dict())
    elif not quiet:
        say(_summary_line(summary))
    if summary.stopped is not None:
        show_error(
            f"--max-cost stopped the run: {summary.stopped} {summary.unsent} lines are unsent; "
            "run the same command again (with a higher --max-cost) to continue",
            label="stopped",
        )
    if summary.failed or summary.skipped_failed:
        failed = summary.failed + summary.skipped_failed
        # Refused before sending: bad fields, a repeated id, an agent the config does not
        # define or cannot use; the record says which.
        notes = [f"{summary.malformed} refused before sending"] if summary.malformed else []
        if summary.skipped_failed:
            notes.append(f"{summary.skipped_failed} skipped, failed in an earlier run")
        shown_notes = f" ({'; '.join(notes)})" if notes else ""
        show_error(
            f"{failed} of {summary.total} lines failed{shown_notes}; their records in "
            f"{path_shown(summary.output)} say why; fix them (or the config) and run again "
            "with --retry-failed"
        )
    if not summary.complete:
        raise RunFailed


def _summary_line(summary: BatchSummary) -> str:
    cost = usd(summary.cost) + (f" (+{summary.unpriced} unpriced)" if summary.unpriced else "")
    return (
        f"{summary.total} lines: {summary.succeeded} succeeded, {summary.failed} failed, "
        f"{summary.skipped} skipped{_failed_before(summary)}, {summary.unsent} unsent; "
        f"{summary.cached} from the cache; "
        f"cost {cost}; results in {path_shown(summary.output)}"
    )


def _failed_before(summary: BatchSummary) -> str:
    # Skipped lines that failed before keep the run incomplete: say so beside the count.
    return f" ({summary.skipped_failed} of them failed)" if summary.skipped_failed else ""


COMMANDS = [batch_cmd]
