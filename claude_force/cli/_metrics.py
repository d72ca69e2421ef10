"""``claude-force metrics``: usage reports from the ledger, exports, a Prometheus endpoint."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import click

from .. import AsyncAgentOrchestrator, InvalidArgumentError, Report, serve_ledger_metrics
from ._common import config_option, console, print_json
from ._tables import breakdown_table, report_table, show

since_option = click.option(
    "--since", default=None, help="Only calls since: 30m, 24h, 7d, or a date like 2026-11-01."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _orchestrator(config_path: Path | None) -> AsyncAgentOrchestrator:
    return AsyncAgentOrchestrator(config_path, api_key="", enable_metrics=False)


def _show_breakdown(reports: dict[str, Report], key: str, as_json: bool) -> None:
    if as_json:
        print_json({name: r.to_dict() for name, r in reports.items()})
    else:
        show(breakdown_table(reports, key=key))


@click.group("metrics", invoke_without_command=True)
@config_option
@since_option
@json_option
@click.pass_context
def metrics_cmd(
    ctx: click.Context, config_path: Path | None, since: str | None, as_json: bool
) -> None:
    """Usage summary: calls, success rate, tokens, cost, savings, latency, hit rate."""
    ctx.obj = {"config_path": config_path}
    if ctx.invoked_subcommand is not None:
        return
    report = _orchestrator(config_path).usage_summary(since)
    if as_json:
        print_json(report.to_dict())
    else:
        show(report_table(report))


def _config(ctx: click.Context, config_path: Path | None) -> Path | None:
    parent: dict[str, Any] = ctx.obj or {}
    return config_path or parent.get("config_path")


@metrics_cmd.command("agents")
@config_option
@since_option
@json_option
@click.pass_context
def metrics_agents(
    ctx: click.Context, config_path: Path | None, since: str | None, as_json: bool
) -> None:
    """Usage per agent."""
    _show_breakdown(
        _orchestrator(_config(ctx, config_path)).usage_by_agent(since), "agent", as_json
    )


@metrics_cmd.command("models")
@config_option
@since_option
@json_option
@click.pass_context
def metrics_models(
    ctx: click.Context, config_path: Path | None, since: str | None, as_json: bool
) -> None:
    """Usage per model."""
    _show_breakdown(
        _orchestrator(_config(ctx, config_path)).usage_by_model(since), "model", as_json
    )


@metrics_cmd.command("runs")
@config_option
@since_option
@json_option
@click.pass_context
def metrics_runs(
    ctx: click.Context, config_path: Path | None, since: str | None, as_json: bool
) -> None:
    """Usage per workflow run, oldest first."""
    _show_breakdown(_orchestrator(_config(ctx, config_path)).usage_by_run(since), "run", as_json)


@metrics_cmd.command("export")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True
)
@config_option
@since_option
@click.pass_context
def metrics_export(
    ctx: click.Context, fmt: str, config_path: Path | None, since: str | None
) -> None:
    """Every ledger row, as CSV or JSON on standard output."""
    click.echo(_orchestrator(_config(ctx, config_path)).export_usage(fmt, since), nl=False)


@metrics_cmd.command("serve")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=9464,
    show_default=True,
    help="Port (0 = any free port).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@config_option
@click.pass_context
def metrics_serve(ctx: click.Context, port: int, host: str, config_path: Path | None) -> None:
    """Serve Prometheus metrics computed from the ledger at /metrics until Ctrl-C."""
    orch = _orchestrator(_config(ctx, config_path))
    try:
        server, _thread = serve_ledger_metrics(orch.reports, port, addr=host)
    except OSError as exc:  # the port is taken, or the address is not ours
        raise InvalidArgumentError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port, "
            "or --port 0 for any free port"
        ) from exc
    console.print(
        f"metrics on http://{host}:{server.server_port}/metrics  (Ctrl-C to stop)", highlight=False
    )
    try:
        threading.Event().wait()
    finally:
        server.shutdown()


COMMANDS = [metrics_cmd]
