"""Commands that read the config and run agents: agents, workflows, run, workflow."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from .. import AgentResult, AsyncAgentOrchestrator, InvalidArgumentError, StepEvent, WorkflowResult
from ._common import RunFailed, config_option, console, err_console, print_json


@click.command("agents")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def agents_cmd(config_path: Path | None, as_json: bool) -> None:
    """List the agents defined in claude.json."""
    orch = AsyncAgentOrchestrator(config_path, api_key="")
    infos = [orch.get_agent_info(name) for name in orch.list_agents()]
    if as_json:
        print_json(infos)
        return
    table = Table(title=f"Agents in {orch.config.path}")
    for col in ("name", "model", "priority", "domains"):
        table.add_column(col)
    for info in infos:
        priority = "" if info["priority"] is None else str(info["priority"])
        table.add_row(info["name"], info["model"], priority, ", ".join(info["domains"]))
    console.print(table)


@click.command("workflows")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def workflows_cmd(config_path: Path | None, as_json: bool) -> None:
    """List the workflows; [a, b] marks a stage whose agents run concurrently."""
    orch = AsyncAgentOrchestrator(config_path, api_key="")
    flows = {
        name: [list(stage) for stage in orch.config.workflow(name)]
        for name in orch.list_workflows()
    }
    if as_json:
        print_json(flows)
        return
    table = Table(title=f"Workflows in {orch.config.path}")
    table.add_column("name")
    table.add_column("stages")
    for name, stages in flows.items():
        shown = " -> ".join(s[0] if len(s) == 1 else "[" + ", ".join(s) + "]" for s in stages)
        table.add_row(name, escape(shown))
    console.print(table)


def read_task(task: str | None, task_file: Path | None) -> str:
    """The task from the argument, -f FILE, or standard input ('-' or piped)."""
    if task is not None and task_file is not None:
        raise InvalidArgumentError("give the task either as an argument or with -f FILE, not both")
    if task_file is not None:
        try:
            return task_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidArgumentError(f"cannot read task file {task_file}: {exc}") from exc
    if task == "-" or (task is None and not sys.stdin.isatty()):
        return sys.stdin.read()
    if task is None:
        raise InvalidArgumentError(
            "no task: pass TASK, -f FILE, or pipe the task on standard input"
        )
    return task


@click.command("run")
@click.argument("agent")
@click.argument("task", required=False)
@click.option(
    "-f",
    "--file",
    "task_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the task from FILE.",
)
@click.option("--model", default=None, help="Model id for this call (overrides config).")
@click.option("--max-tokens", type=int, default=None, help="Maximum output tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@config_option
def run_cmd(
    agent: str,
    task: str | None,
    task_file: Path | None,
    model: str | None,
    max_tokens: int | None,
    as_json: bool,
    config_path: Path | None,
) -> None:
    """Run AGENT on TASK."""
    text = read_task(task, task_file)
    orch = AsyncAgentOrchestrator(config_path)

    async def go() -> AgentResult:
        async with orch:
            return await orch.execute_agent(agent, text, model=model, max_tokens=max_tokens)

    result = asyncio.run(go())
    if as_json:
        print_json(result.to_dict())
    elif result.success:
        console.print(result.output, highlight=False, markup=False)
        err_console.print(_usage_line(result.metadata), highlight=False)
    else:
        err_console.print(
            f"[bold red]failed:[/] {escape('; '.join(result.errors))}", highlight=False
        )
    if not result.success:
        raise RunFailed


def _usage_line(meta: Mapping[str, Any]) -> str:
    cost = meta.get("estimated_cost")
    cost_text = "unpriced" if cost is None else f"${cost:.6f}"
    cached = " (cached)" if meta.get("cached") else ""
    return (
        f"{meta.get('model')}: {meta.get('input_tokens', 0)} in"
        f" / {meta.get('output_tokens', 0)} out"
        f" tokens, cache read {meta.get('cache_read_input_tokens', 0)},"
        f" {meta.get('execution_time_ms', 0):.0f} ms, {cost_text}{cached}"
    )


class WorkflowProgress:
    """A live table of workflow steps, fed by StepEvent callbacks."""

    def __init__(self, title: str, stages: Sequence[Sequence[str]] = ()) -> None:
        self.title = title
        # Keyed by (stage, agent): one agent may appear in several stages.
        self.rows: dict[tuple[int, str], tuple[str, str]] = {
            (number, agent): ("pending", "")
            for number, stage in enumerate(stages, 1)
            for agent in stage
        }

    def __call__(self, event: StepEvent) -> None:
        if event.status == "started":
            self.rows[(event.stage, event.agent)] = ("running", "")
        else:
            meta = event.result.metadata if event.result else {}
            detail = (
                _usage_line(meta)
                if event.status == "succeeded"
                else "; ".join(event.result.errors if event.result else [])
            )
            self.rows[(event.stage, event.agent)] = (event.status, detail)

    def render(self) -> Table:
        table = Table(title=self.title)
        table.add_column("stage", justify="right")
        table.add_column("agent")
        table.add_column("status")
        table.add_column("detail")
        colours = {"pending": "dim", "running": "yellow", "succeeded": "green", "failed": "red"}
        for (stage, agent), (status, detail) in self.rows.items():
            table.add_row(str(stage), agent, f"[{colours[status]}]{status}[/]", escape(detail))
        return table


async def run_workflow_live(
    orch: AsyncAgentOrchestrator, name: str, task: str, *, live: bool
) -> WorkflowResult:
    progress = WorkflowProgress(f"workflow {name}", orch.config.workflow(name))
    if not live:
        return await orch.run_workflow(name, task)
    with Live(
        progress.render(), console=err_console, refresh_per_second=8, transient=False
    ) as view:

        def on_step(event: StepEvent) -> None:
            progress(event)
            view.update(progress.render())

        return await orch.run_workflow(name, task, on_step=on_step)


def print_workflow_result(result: WorkflowResult) -> None:
    for step in result.steps:
        console.rule(f"{step.agent_name}")
        console.print(
            step.output if step.success else "; ".join(step.errors), highlight=False, markup=False
        )
    console.rule()
    status = "succeeded" if result.success else f"failed: {result.error}"
    cost = result.total_cost
    cost_text = "unpriced" if cost is None else f"${cost:.6f}"
    console.print(
        f"workflow {result.workflow_name} {status} in {result.execution_time_ms / 1000:.2f} s; "
        f"{len(result.steps)} steps, {result.total_input_tokens} input + "
        f"{result.total_output_tokens} output tokens, {cost_text}",
        highlight=False,
        markup=False,
    )


@click.command("workflow")
@click.argument("name")
@click.argument("task", required=False)
@click.option(
    "-f",
    "--file",
    "task_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the task from FILE.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@config_option
def workflow_cmd(
    name: str, task: str | None, task_file: Path | None, as_json: bool, config_path: Path | None
) -> None:
    """Run workflow NAME on TASK, showing each step live."""
    text = read_task(task, task_file)
    orch = AsyncAgentOrchestrator(config_path)

    async def go() -> WorkflowResult:
        async with orch:
            return await run_workflow_live(orch, name, text, live=not as_json)

    result = asyncio.run(go())
    if as_json:
        print_json(result.to_dict())
    else:
        print_workflow_result(result)
    if not result.success:
        raise RunFailed


COMMANDS = [agents_cmd, workflows_cmd, run_cmd, workflow_cmd]
