"""Rich tables for usage reports and cache figures (the CLI's own rendering)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone

import click
from rich.table import Table
from rich.text import Text

from .. import Report
from ._common import console, usd

__all__ = [
    "EMPTY_MESSAGE",
    "breakdown_table",
    "pairs_table",
    "percent",
    "report_table",
    "show",
]

EMPTY_MESSAGE = (
    "No calls recorded yet. Run an agent and its calls, tokens and cost will show up here."
)


def percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _cost(report: Report) -> str:
    # Nothing priced at all: "$0.00" would read as free, so say it is unknown.
    if report.unpriced_calls and not report.cost_usd:
        return "unknown"
    text = usd(report.cost_usd)
    if report.unpriced_calls:
        text += f" (+ {report.unpriced_calls} call(s) to unpriced models, cost unknown)"
    return text


def pairs_table(title: str | None, rows: Mapping[str, str]) -> Table:
    """A two-column table of labels and values."""
    table = Table(title=title, show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows.items():
        table.add_row(label, Text(value))
    return table


def report_table(report: Report) -> Table | Text:
    """The usage summary; a friendly note when the ledger has no calls yet."""
    if report.calls == 0:
        return Text(EMPTY_MESSAGE)
    t = report.tokens
    return pairs_table(
        None,
        {
            "Calls": f"{report.calls:,}  ({report.successes:,} succeeded, "
            f"{report.errors:,} failed)",
            "Success rate": percent(report.success_rate),
            "Cost": _cost(report),
            "Saved by response cache": usd(report.saved_by_response_cache_usd),
            "Saved by prompt caching": usd(report.saved_by_prompt_cache_usd),
            "Cache hit rate": f"{percent(report.cache_hit_rate)}  ({report.cache_hits:,} hits)",
            "Input tokens": f"{t.input_tokens:,}",
            "Output tokens": f"{t.output_tokens:,}",
            "Cache writes": f"{t.cache_write_5m_tokens:,} (5m)  {t.cache_write_1h_tokens:,} (1h)",
            "Cache reads": f"{t.cache_read_tokens:,}",
            "Latency p50 / p95": f"{_ms(report.latency_p50_ms)} / {_ms(report.latency_p95_ms)}",
            "  upstream calls only": f"{_ms(report.upstream_latency_p50_ms)} / "
            f"{_ms(report.upstream_latency_p95_ms)}",
            "Period": f"{_when(report.first_ts)} to {_when(report.last_ts)}",
        },
    )


def breakdown_table(reports: Mapping[str, Report], *, key: str) -> Table | Text:
    """One row per agent, model or run: calls, success, cost, cache hits, latency."""
    if not reports:
        return Text(EMPTY_MESSAGE)
    table = Table()
    table.add_column(key)
    for column in ("calls", "success", "cost", "cache hits", "p50", "p95"):
        table.add_column(column, justify="right")
    for name, r in reports.items():
        table.add_row(
            Text(name),
            f"{r.calls:,}",
            percent(r.success_rate),
            _cost(r) if not r.unpriced_calls or not r.cost_usd else usd(r.cost_usd) + "*",
            percent(r.cache_hit_rate),
            _ms(r.latency_p50_ms),
            _ms(r.latency_p95_ms),
        )
    if any(r.unpriced_calls for r in reports.values()):
        table.caption = "* includes calls to unpriced models; their cost is unknown, not counted"
    return table


def show(renderable: Table | Text) -> None:
    """A table through rich; a plain message as one unwrapped line."""
    if isinstance(renderable, Text):
        click.echo(renderable.plain)
    else:
        console.print(renderable)
