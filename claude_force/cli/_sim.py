"""``claude-force simulate`` and ``claude-force demo``: the local Anthropic-compatible server."""

from __future__ import annotations

import secrets
import tempfile
import threading
from decimal import Decimal
from pathlib import Path

import click

from .. import AsyncAgentOrchestrator, WorkflowResult, init_project
from ._common import RunFailed, console, cost_text, run_async, usd
from ._workflow import print_workflow_result, run_with_progress

DEMO_TASK = (
    "Add a retry helper to http_client.py: retry idempotent requests up to three times "
    "with exponential backoff, and never retry a 4xx other than 408 and 429."
)


@click.command("simulate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port to listen on (0 = any free port).",
)
@click.option(
    "--latency-ms", type=float, default=0.0, show_default=True, help="Fixed latency per response."
)
@click.option(
    "--per-token-ms",
    type=float,
    default=0.0,
    show_default=True,
    help="Extra latency per output token.",
)
def simulate_cmd(host: str, port: int, latency_ms: float, per_token_ms: float) -> None:
    """Serve the Anthropic-compatible simulator until Ctrl-C (exit code 130, like every
    command stopped by Ctrl-C).

    Point any client at it with ANTHROPIC_BASE_URL=http://HOST:PORT (any API key works).
    """
    from ..testing import Simulator

    # Not testing.serve(): it treats Ctrl-C as a normal end, and the CLI reports it as 130.
    with Simulator(
        host=host, port=port, latency_ms=latency_ms, per_token_latency_ms=per_token_ms
    ) as sim:
        console.print(
            f"simulator on {sim.base_url}  (Ctrl-C to stop)", highlight=False, soft_wrap=True
        )
        never = threading.Event()
        while not never.wait(0.5):  # a timed wait keeps Ctrl-C prompt on every platform
            pass


@click.command("demo")
@click.option(
    "--latency-ms",
    type=float,
    default=150.0,
    show_default=True,
    help="Simulated latency per response.",
)
@click.option("--no-live", is_flag=True, help="Do not draw the live progress table.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the demo project (and its usage ledger) in DIR instead of a temporary folder.",
)
def demo_cmd(latency_ms: float, no_live: bool, directory: Path | None) -> None:
    """Run a real workflow end to end against the embedded simulator (no API key needed)."""
    from ..testing import Simulator

    with (
        tempfile.TemporaryDirectory(prefix="claude-force-demo-") as tmp,
        Simulator(latency_ms=latency_ms, per_token_latency_ms=1.0) as sim,
    ):
        root = directory if directory is not None else Path(tmp)
        if directory is not None:
            _check_demo_folder(directory)
        if not (root / ".claude" / "claude.json").exists():
            init_project(root)
            (root / ".claude" / DEMO_MARK).write_text(DEMO_MARK_TEXT, encoding="utf-8")
        orch = AsyncAgentOrchestrator(
            root / ".claude" / "claude.json",
            api_key="demo-key-not-secret",
            base_url=sim.base_url,
            cache_dir=root / ".claude" / "data" / "cache",
            # A throwaway project gets a throwaway cache key; a kept one uses the usual secret.
            cache_secret=None if directory is not None else secrets.token_bytes(32),
        )
        name = _demo_workflow(orch)
        console.print(
            f"demo: workflow '{name}' on the local simulator at {sim.base_url} "
            f"({latency_ms:g} ms latency per call)",
            highlight=False,
            soft_wrap=True,
        )

        async def go() -> tuple[WorkflowResult, WorkflowResult]:
            async with orch:
                first = await run_with_progress(orch, name, DEMO_TASK, live=not no_live)
                again = await orch.run_workflow(name, DEMO_TASK)
                return first, again

        result, again = run_async(go())
        print_workflow_result(result, all_steps=True)
        console.print(
            f"{len(sim.message_requests)} requests reached the simulator; "
            f"peak in flight {sim.peak_in_flight}",
            highlight=False,
            soft_wrap=True,
        )
        _print_second_run(again)
        if directory is not None:
            console.print(
                f"usage recorded in {orch.ledger_path}; see: claude-force metrics -c "
                f"{root / '.claude' / 'claude.json'}",
                highlight=False,
                soft_wrap=True,
            )
    if not result.success:
        raise RunFailed


DEMO_MARK = "demo-project"
DEMO_MARK_TEXT = "Made by `claude-force demo --dir`: its answers come from the simulator.\n"


def _check_demo_folder(directory: Path) -> None:
    """The demo writes simulated answers into its project's agent memory, usage ledger and
    response cache: it keeps a project only in a folder it made itself."""
    claude = directory / ".claude"
    if claude.exists() and not (claude / DEMO_MARK).is_file():
        raise click.UsageError(
            f"{directory} already holds a project ({claude}); the demo would write simulated "
            "answers into its agent memory, usage ledger and response cache. Pass --dir a "
            "new or empty folder (or one an earlier `claude-force demo --dir` made)"
        )


def _print_second_run(again: WorkflowResult) -> None:
    hits = sum(1 for step in again.steps if step.metadata.get("cached"))
    saved = sum((step.metadata.get("cost_saved") or Decimal(0) for step in again.steps), Decimal(0))
    console.print(
        f"the same workflow again: {hits} of {len(again.steps)} steps answered from the "
        f"response cache in {again.execution_time_ms:.0f} ms, cost "
        f"{cost_text(again.total_cost)}, saved {usd(saved)}",
        highlight=False,
        soft_wrap=True,
    )


def _demo_workflow(orch: AsyncAgentOrchestrator) -> str:
    """The first workflow with a parallel stage, else the first workflow."""
    names = orch.list_workflows()
    for name in names:
        if any(len(stage) > 1 for stage in orch.config.workflow(name)):
            return name
    return names[0]


COMMANDS = [simulate_cmd, demo_cmd]
