"""Commands that read the config and run one agent: agents, workflows, run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import click
from rich.markup import escape
from rich.table import Table

from .. import (
    AgentResult,
    APIError,
    AsyncAgentOrchestrator,
    InvalidArgumentError,
    OrchestratorOptions,
)
from ._common import (
    EXIT_CODES_HELP,
    RunFailed,
    api_error_hint,
    cache_dir_option,
    cache_kept,
    config_option,
    console,
    deliver,
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
    write_text,
)
from ._limits_line import rate_limit_line
from ._task import read_task

P = ParamSpec("P")
R = TypeVar("R")


@click.command("agents")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def agents_cmd(config_path: Path | None, as_json: bool) -> None:
    """List the agents defined in claude.json."""
    orch = AsyncAgentOrchestrator(config_path, api_key="", enable_metrics=False)
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
    orch = AsyncAgentOrchestrator(config_path, api_key="", enable_metrics=False)
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


@click.command("info")
@click.argument("agent")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info_cmd(agent: str, config_path: Path | None, as_json: bool) -> None:
    """Show one agent's settings as its calls use them, and the workflows that run it."""
    orch = AsyncAgentOrchestrator(config_path, api_key="", enable_metrics=False)
    info = orch.get_agent_info(agent)
    info["workflows"] = [
        name
        for name in orch.list_workflows()
        if any(agent in stage for stage in orch.config.workflow(name))
    ]
    if as_json:
        print_json(info)
        return
    table = Table(title=f"Agent {escape(agent)} in {escape(str(orch.config.path))}")
    table.add_column("setting")
    table.add_column("value")
    for key, value in info.items():
        shown = ", ".join(value) if isinstance(value, list) else "" if value is None else value
        table.add_row(key, escape(str(shown)))
    console.print(table)


@click.group("list")
def list_group() -> None:
    """List agents or workflows (Claude Force 1.x's `list agents`)."""


list_group.add_command(agents_cmd)
list_group.add_command(workflows_cmd)


def cache_options(fn: Callable[P, R]) -> Callable[P, R]:
    """``--no-cache``, ``--refresh`` and ``--cache-dir`` for commands that send requests."""
    fn = click.option(
        "--refresh",
        is_flag=True,
        help="Ask the API even when the cache holds the answer, and store the new answer.",
    )(fn)
    fn = click.option(
        "--no-cache", is_flag=True, help="Neither read nor write the response cache."
    )(fn)
    return cache_dir_option(fn)


def make_orchestrator(
    config_path: Path | None,
    *,
    no_cache: bool,
    refresh: bool,
    cache_dir: Path | None,
    max_concurrent: int = OrchestratorOptions.max_concurrent,
) -> AsyncAgentOrchestrator:
    if no_cache and refresh:
        raise InvalidArgumentError(
            "--refresh stores the new answer in the cache and --no-cache turns the cache off; "
            "give one of them"
        )
    return AsyncAgentOrchestrator(
        config_path, enable_cache=not no_cache, cache_dir=cache_dir, max_concurrent=max_concurrent
    )


@click.command("run", epilog=EXIT_CODES_HELP)
@click.argument("agent")
@click.argument("task", required=False)
@task_file_option
@task_option
@click.option("--model", default=None, help="Model id for this call (overrides config).")
@click.option(
    "--max-tokens", type=click.IntRange(min=1), default=None, help="Maximum output tokens."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@cache_options
@config_option
def run_cmd(
    agent: str,
    task: str | None,
    task_file: Path | None,
    task_option: str | None,
    model: str | None,
    max_tokens: int | None,
    as_json: bool,
    no_cache: bool,
    refresh: bool,
    cache_dir: Path | None,
    config_path: Path | None,
) -> None:
    """Run AGENT on TASK (an argument, -f FILE, or '-' / piped standard input).

    The answer is written to standard output byte for byte (UTF-8, plus a final newline if it
    has none); model, tokens, time and cost go to standard error.
    `run agent NAME --task T` and `run workflow NAME --task T` (Claude Force 1.x) also work.
    """
    if agent == "workflow" and task is not None and (task_option or task_file) is not None:
        from ._workflow import workflow_cmd  # here: _workflow imports this module

        workflow_cmd.callback(  # type: ignore[misc]
            name=task,
            task=None,
            task_file=task_file,
            as_json=as_json,
            resume=False,
            no_cache=no_cache,
            refresh=refresh,
            cache_dir=cache_dir,
            config_path=config_path,
            task_option=task_option,
        )
        return
    agent, task = task_from(agent, task, task_option, word="agent", has_file=task_file is not None)
    text = read_task(task, task_file)
    require_stdout()
    orch = make_orchestrator(config_path, no_cache=no_cache, refresh=refresh, cache_dir=cache_dir)
    in_cache = False
    limits = ""

    async def go() -> AgentResult:
        nonlocal in_cache, limits
        async with orch:
            result = await orch.execute_agent(
                agent, text, model=model, max_tokens=max_tokens, refresh=refresh
            )
            cache = orch.response_cache
            in_cache = result.success and cache is not None and not cache.is_excluded(agent)
            limits = rate_limit_line(orch.rate_limit_state)  # empty when nothing was sent
            # The answer goes out now: closing can wait on another process's lock.
            show(result)
            return result

    def kept() -> bool:
        return in_cache and cache_kept(orch.response_cache)

    def show(result: AgentResult) -> None:
        if as_json:
            deliver(lambda: print_json(result.to_dict()), in_cache=kept)
        elif result.success:
            deliver(lambda: write_text(result.output), in_cache=kept)
            say(result_line(result))
            if limits:
                say(limits)
        note = stop_note(result) if result.success else None
        if note:
            say(note)

    result = run_async(go())
    if not result.success:
        # An API error's text is the service's: shown as it came, never reworded.
        show_error(
            f"agent '{agent}' failed: {'; '.join(result.errors)}{api_error_hint(result.error)}",
            rewrite=not isinstance(result.error, APIError),
        )
        raise RunFailed


COMMANDS = [agents_cmd, workflows_cmd, run_cmd, info_cmd, list_group]
