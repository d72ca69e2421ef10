"""Reports over ledger rows: pure functions, no I/O (except loading default prices if asked).

Counting rules:

* ``calls`` counts every row; a response-cache hit is a call that cost ``$0``.
* Tokens and cost come from upstream calls only (``cached=False``): a cache hit replays a stored
  response and consumes nothing.
* Savings: the response cache saved the ``cost_saved_usd`` of its hits; prompt caching saved, on
  upstream calls, what their cache-read tokens would have cost at the full input rate.
* Latency percentiles use the nearest-rank method, over all calls and over upstream calls.
* A call's cost is ``None`` only when its price is unknown; a failed request the service did not
  bill costs ``$0`` and is not "unpriced".

:class:`UsageReports` ties these to a ledger file: what the orchestrators' ``usage_*`` methods
and the ``metrics`` command show.
"""

from __future__ import annotations

import abc
import csv
import io
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from ._errors import InvalidArgumentError
from ._ledger import Ledger, LedgerRow, read_rows
from ._pricing import PriceTable, format_usd
from ._usage import Usage

__all__ = [
    "EMPTY_MESSAGE",
    "Report",
    "UsageReportMethods",
    "UsageReports",
    "by_agent",
    "by_model",
    "by_run",
    "export_csv",
    "export_json",
    "parse_since",
    "percentile",
    "render_breakdown",
    "render_text",
    "summary",
]

EMPTY_MESSAGE = (
    "No calls recorded yet. Run an agent and its calls, tokens and cost will show up here."
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """Totals for a set of ledger rows. Rates are ``None`` when there is nothing to divide."""

    calls: int = 0
    successes: int = 0
    errors: int = 0
    tokens: Usage = field(default_factory=Usage)
    cost_usd: Decimal = Decimal(0)
    unpriced_calls: int = 0
    saved_by_response_cache_usd: Decimal = Decimal(0)
    saved_by_prompt_cache_usd: Decimal = Decimal(0)
    cache_hits: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    upstream_latency_p50_ms: float | None = None
    upstream_latency_p95_ms: float | None = None
    first_ts: float | None = None
    last_ts: float | None = None

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.calls if self.calls else None

    @property
    def cache_hit_rate(self) -> float | None:
        return self.cache_hits / self.calls if self.calls else None

    @property
    def saved_usd(self) -> Decimal:
        return self.saved_by_response_cache_usd + self.saved_by_prompt_cache_usd

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; money as decimal strings."""
        t = self.tokens
        return {
            "calls": self.calls,
            "successes": self.successes,
            "errors": self.errors,
            "success_rate": self.success_rate,
            "tokens": {
                "input": t.input_tokens,
                "output": t.output_tokens,
                "cache_write_5m": t.cache_write_5m_tokens,
                "cache_write_1h": t.cache_write_1h_tokens,
                "cache_read": t.cache_read_tokens,
            },
            "server_tool_use": {"web_search_requests": t.web_search_requests},
            "cost_usd": str(self.cost_usd),
            "unpriced_calls": self.unpriced_calls,
            "saved_by_response_cache_usd": str(self.saved_by_response_cache_usd),
            "saved_by_prompt_cache_usd": str(self.saved_by_prompt_cache_usd),
            "cache_hits": self.cache_hits,
            "cache_hit_rate": self.cache_hit_rate,
            "latency_ms": {"p50": self.latency_p50_ms, "p95": self.latency_p95_ms},
            "upstream_latency_ms": {
                "p50": self.upstream_latency_p50_ms,
                "p95": self.upstream_latency_p95_ms,
            },
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
        }


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (``p`` in 0..100) of ``values``; ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(rows: Iterable[LedgerRow], *, price_table: PriceTable | None = None) -> Report:
    """Totals for ``rows``. ``price_table`` prices prompt-cache savings (packaged if omitted)."""
    rows = list(rows)
    if not rows:
        return Report()
    prices = price_table if price_table is not None else PriceTable.load()
    upstream = [r for r in rows if not r.cached]
    hits = [r for r in rows if r.cached]
    tokens = sum((r.usage for r in upstream), Usage())
    prompt_saved = Decimal(0)
    for r in upstream:
        if r.cache_read_tokens:
            prompt_saved += prices.prompt_cache_savings(r.model, r.usage, batch=r.batch) or Decimal(
                0
            )
    all_latency = [r.latency_ms for r in rows if r.latency_ms is not None]
    up_latency = [r.latency_ms for r in upstream if r.latency_ms is not None]
    stamps = [r.ts for r in rows if r.ts is not None]
    return Report(
        calls=len(rows),
        successes=sum(r.outcome == "success" for r in rows),
        errors=sum(r.outcome == "error" for r in rows),
        tokens=tokens,
        cost_usd=sum((r.cost_usd for r in upstream if r.cost_usd is not None), Decimal(0)),
        unpriced_calls=sum(r.cost_usd is None and _consumed(r) for r in upstream),
        saved_by_response_cache_usd=sum(
            (r.cost_saved_usd for r in hits if r.cost_saved_usd is not None), Decimal(0)
        ),
        saved_by_prompt_cache_usd=prompt_saved,
        cache_hits=len(hits),
        latency_p50_ms=percentile(all_latency, 50),
        latency_p95_ms=percentile(all_latency, 95),
        upstream_latency_p50_ms=percentile(up_latency, 50),
        upstream_latency_p95_ms=percentile(up_latency, 95),
        first_ts=min(stamps) if stamps else None,
        last_ts=max(stamps) if stamps else None,
    )


def _consumed(row: LedgerRow) -> bool:
    """True when the call used something billable, so a missing cost means an unknown price."""
    return row.usage.total_tokens > 0 or row.web_search_requests > 0


def _group(
    rows: Iterable[LedgerRow], key: Callable[[LedgerRow], str], price_table: PriceTable | None
) -> dict[str, Report]:
    groups: dict[str, list[LedgerRow]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    if price_table is None and groups:
        price_table = PriceTable.load()  # once for all groups, not once per group
    return {name: summary(groups[name], price_table=price_table) for name in sorted(groups)}


def by_agent(
    rows: Iterable[LedgerRow], *, price_table: PriceTable | None = None
) -> dict[str, Report]:
    """One :class:`Report` per agent, sorted by agent name."""
    return _group(rows, lambda r: r.agent, price_table)


def by_model(
    rows: Iterable[LedgerRow], *, price_table: PriceTable | None = None
) -> dict[str, Report]:
    """One :class:`Report` per model id as recorded, sorted by model id."""
    return _group(rows, lambda r: r.model, price_table)


def by_run(
    rows: Iterable[LedgerRow], *, price_table: PriceTable | None = None
) -> dict[str, Report]:
    """One :class:`Report` per workflow run (single calls are left out), oldest first."""
    runs = [r for r in rows if r.workflow_run]
    first: dict[str, float] = {}
    for r in runs:
        first[r.workflow_run or ""] = min(first.get(r.workflow_run or "", r.ts or 0.0), r.ts or 0.0)
    grouped = _group(runs, lambda r: r.workflow_run or "", price_table)
    return {name: grouped[name] for name in sorted(grouped, key=lambda n: first[n])}


# -- exports ----------------------------------------------------------------------------------


def export_json(rows: Iterable[LedgerRow]) -> str:
    """The rows as a JSON array; money as decimal strings, ``null`` for unknown."""
    return json.dumps([r.to_dict() for r in rows], indent=2)


def export_csv(rows: Iterable[LedgerRow]) -> str:
    """The rows as CSV with a header; empty cell for unknown, ``true``/``false`` for flags."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_ROW_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _csv_cell(v) for k, v in r.to_dict().items()})
    return out.getvalue()


_ROW_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(LedgerRow))


def _csv_cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


# -- time windows -----------------------------------------------------------------------------

_RELATIVE = re.compile(r"^\s*(?P<n>\d+)\s*(?P<unit>[mhdw])\s*$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_FORMS = (
    "a duration such as 30m, 24h, 7d or 2w (minutes, hours, days, weeks), "
    "a date such as 2026-11-01 (midnight UTC), or an ISO timestamp such as 2026-11-01T09:30:00Z"
)


def parse_since(text: str, *, clock: Callable[[], float] = time.time) -> float:
    """Epoch seconds for ``--since``: ``"24h"`` means 24 hours before ``clock()``.

    Dates and timestamps without a zone are taken as UTC.
    """
    match = _RELATIVE.match(text)
    if match:
        n = int(match.group("n"))
        if n == 0:
            raise InvalidArgumentError(f"--since {text!r} is an empty window; accepted: {_FORMS}")
        return clock() - n * _UNIT_SECONDS[match.group("unit")]
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"  # fromisoformat accepts "Z" only from Python 3.11
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidArgumentError(
            f"--since {text!r} is not understood; accepted: {_FORMS}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


# -- text rendering ---------------------------------------------------------------------------


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _cost_cell(report: Report) -> str:
    # Nothing priced at all: "$0.00" would read as free, so say it is unknown.
    if report.unpriced_calls and not report.cost_usd:
        return "unknown"
    return format_usd(report.cost_usd)


def render_text(report: Report) -> str:
    """A short, aligned summary for people; a friendly note when there is nothing yet."""
    if report.calls == 0:
        return EMPTY_MESSAGE
    t = report.tokens
    cost = _cost_cell(report)
    if report.unpriced_calls:
        cost += f"  (+ {report.unpriced_calls} call(s) to unpriced models, cost unknown)"
    lines = [
        ("Calls", f"{report.calls:,}  ({report.successes:,} succeeded, {report.errors:,} failed)"),
        ("Success rate", _pct(report.success_rate)),
        ("Cost", cost),
        ("Saved by response cache", format_usd(report.saved_by_response_cache_usd)),
        ("Saved by prompt caching", format_usd(report.saved_by_prompt_cache_usd)),
        ("Cache hit rate", f"{_pct(report.cache_hit_rate)}  ({report.cache_hits:,} hits)"),
        ("Input tokens", f"{t.input_tokens:,}"),
        ("Output tokens", f"{t.output_tokens:,}"),
        ("Cache writes", f"{t.cache_write_5m_tokens:,} (5m)  {t.cache_write_1h_tokens:,} (1h)"),
        ("Cache reads", f"{t.cache_read_tokens:,}"),
        *([("Web searches", f"{t.web_search_requests:,}")] if t.web_search_requests else []),
        ("Latency p50 / p95", f"{_ms(report.latency_p50_ms)} / {_ms(report.latency_p95_ms)}"),
        (
            "  upstream calls only",
            f"{_ms(report.upstream_latency_p50_ms)} / {_ms(report.upstream_latency_p95_ms)}",
        ),
        ("Period", f"{_when(report.first_ts)} to {_when(report.last_ts)}"),
    ]
    width = max(len(label) for label, _ in lines)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in lines)


def render_breakdown(reports: Mapping[str, Report], *, key: str = "agent") -> str:
    """One line per agent or model: calls, success, cost, cache hits, latency."""
    if not reports:
        return EMPTY_MESSAGE
    header = (key, "calls", "success", "cost", "cache hits", "p50", "p95")
    body = [
        (
            name,
            f"{r.calls:,}",
            _pct(r.success_rate),
            _cost_cell(r) + ("*" if r.unpriced_calls else ""),
            _pct(r.cache_hit_rate),
            _ms(r.latency_p50_ms),
            _ms(r.latency_p95_ms),
        )
        for name, r in reports.items()
    ]
    widths = [max(len(row[i]) for row in (header, *body)) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in (header, *body)
    ]
    if any(r.unpriced_calls for r in reports.values()):
        lines.append("* includes calls to unpriced models; their cost is unknown and not counted")
    return "\n".join(lines)


# -- the reports of one ledger file -----------------------------------------------------------

_EXPORTS: dict[str, Callable[[Iterable[LedgerRow]], str]] = {
    "csv": export_csv,
    "json": export_json,
}


def _no_ledger() -> Ledger | None:
    return None


class UsageReports:
    """Reports over the ledger file at ``path``, priced with ``prices``.

    ``open_ledger`` returns the ledger this process writes to, if one is open, so rows it still
    holds are written before reading (it must not open one). Reading writes nothing: a
    read-only ledger reads, a missing one is empty, a damaged one is a warning and empty.
    ``since`` is epoch seconds or a ``--since`` text such as ``"24h"`` (see :func:`parse_since`).
    """

    def __init__(
        self,
        path: Path,
        *,
        prices: PriceTable,
        open_ledger: Callable[[], Ledger | None] = _no_ledger,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.prices = prices
        self._open_ledger = open_ledger
        self._clock = clock

    def rows(self, since: float | str | None = None) -> list[LedgerRow]:
        """Ledger rows with ``ts >= since`` (all when ``None``), oldest first."""
        start = parse_since(since, clock=self._clock) if isinstance(since, str) else since
        ledger = self._open_ledger()
        if ledger is not None:
            ledger.flush()
        return read_rows(self.path, start)

    def summary(self, since: float | str | None = None) -> Report:
        """Calls, success rate, tokens, cost, savings, latency and cache hit rate."""
        return summary(self.rows(since), price_table=self.prices)

    def by_agent(self, since: float | str | None = None) -> dict[str, Report]:
        return by_agent(self.rows(since), price_table=self.prices)

    def by_model(self, since: float | str | None = None) -> dict[str, Report]:
        return by_model(self.rows(since), price_table=self.prices)

    def by_run(self, since: float | str | None = None) -> dict[str, Report]:
        """One report per workflow run, oldest first."""
        return by_run(self.rows(since), price_table=self.prices)

    def export(self, fmt: str = "csv", since: float | str | None = None) -> str:
        """The rows as ``csv`` or ``json`` text."""
        render = _EXPORTS.get(fmt)
        if render is None:
            raise InvalidArgumentError(
                f"export format must be one of {sorted(_EXPORTS)}, got {fmt!r}"
            )
        return render(self.rows(since))


class UsageReportMethods(abc.ABC):
    """The orchestrators' report methods, one implementation for both doors.

    A class using it provides ``reports``; each method reads the ledger through it.
    """

    @property
    @abc.abstractmethod
    def reports(self) -> UsageReports: ...

    def usage_rows(self, since: float | str | None = None) -> list[LedgerRow]:
        """Ledger rows, optionally since an epoch time or a span like ``"24h"``."""
        return self.reports.rows(since)

    def usage_summary(self, since: float | str | None = None) -> Report:
        """Calls, success rate, tokens, cost, savings, latency and hit rate."""
        return self.reports.summary(since)

    def usage_by_agent(self, since: float | str | None = None) -> dict[str, Report]:
        return self.reports.by_agent(since)

    def usage_by_model(self, since: float | str | None = None) -> dict[str, Report]:
        return self.reports.by_model(since)

    def usage_by_run(self, since: float | str | None = None) -> dict[str, Report]:
        """One report per workflow run, oldest first."""
        return self.reports.by_run(since)

    def export_usage(self, fmt: str = "csv", since: float | str | None = None) -> str:
        """The ledger rows as ``csv`` or ``json`` text."""
        return self.reports.export(fmt, since)
