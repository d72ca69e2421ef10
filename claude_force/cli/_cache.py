"""``claude-force cache``: stats, clear, prune, verify and warm the response cache."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from .. import (
    AsyncAgentOrchestrator,
    ConfigError,
    InvalidArgumentError,
    Report,
    ResponseCache,
    find_config,
)
from ._common import cache_dir_option, config_option, console, print_json, run_async, usd
from ._tables import pairs_table, percent

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
_MIB = 1024 * 1024


def _show(data: dict[str, Any], as_json: bool, title: str | None = None) -> None:
    if as_json:
        print_json(data)
    else:
        console.print(pairs_table(title, {key: str(value) for key, value in data.items()}))


def _bytes(count: int) -> str:
    return f"{count:,} bytes ({count / _MIB:.1f} MiB)"


def _ledger_figures(config_path: Path | None) -> dict[str, Any] | None:
    """Hit rate and savings from the project's usage ledger; None outside a project."""
    if config_path is None:
        try:
            config_path = find_config()
        except ConfigError:
            return None  # no project here: the cache figures stand alone
    orch = AsyncAgentOrchestrator(config_path, api_key="", enable_metrics=False)
    report: Report = orch.usage_summary()
    return {
        "ledger": str(orch.ledger_path),
        "calls": report.calls,
        "cache_hits": report.cache_hits,
        "hit_rate": report.cache_hit_rate,
        "saved_usd": str(report.saved_by_response_cache_usd),
    }


@click.group("cache")
def cache_cmd() -> None:
    """Inspect and maintain the response cache."""


@cache_cmd.command("stats")
@cache_dir_option
@config_option
@json_option
def cache_stats(cache_dir: Path | None, config_path: Path | None, as_json: bool) -> None:
    """Entries, size and limit of the disk cache (shared by every process using the folder),
    and the hit rate of the project's calls from its usage ledger."""
    with ResponseCache(cache_dir=cache_dir) as cache:
        stats = cache.get_stats()
        data: dict[str, Any] = {
            "cache_dir": str(cache.cache_dir),
            "entries": int(stats["entries"]),
            "size_bytes": int(stats["size_bytes"]),
            "max_size_bytes": int(stats["max_size_bytes"]),
        }
    usage = _ledger_figures(config_path)
    if as_json:
        print_json({**data, "usage": usage})
        return
    console.print(
        pairs_table(
            "Response cache",
            {
                "folder": data["cache_dir"],
                "entries": f"{data['entries']:,}",
                "size": _bytes(data["size_bytes"]),
                "max size": _bytes(data["max_size_bytes"]),
            },
        )
    )
    if usage is None:
        console.print("hit rate: no .claude/ project here; pass -c PATH to read its usage ledger")
        return
    console.print(
        pairs_table(
            "Calls in the usage ledger",
            {
                "ledger": usage["ledger"],
                "calls": f"{usage['calls']:,}",
                "answered from the cache": f"{usage['cache_hits']:,}",
                "hit rate": percent(usage["hit_rate"]),
                "saved": usd(Decimal(usage["saved_usd"])),
            },
        )
    )


@cache_cmd.command("clear")
@cache_dir_option
@json_option
def cache_clear(cache_dir: Path | None, as_json: bool) -> None:
    """Delete every cached response."""
    with ResponseCache(cache_dir=cache_dir) as cache:
        before = int(cache.get_stats()["entries"])
        cache.clear()
        _show({"removed": before}, as_json)


@cache_cmd.command("prune")
@cache_dir_option
@click.option(
    "--ttl-hours", type=float, default=24.0, show_default=True, help="Entries older than this go."
)
@json_option
def cache_prune(cache_dir: Path | None, ttl_hours: float, as_json: bool) -> None:
    """Delete expired responses."""
    with ResponseCache(cache_dir=cache_dir, ttl_hours=ttl_hours) as cache:
        _show({"removed": cache.prune()}, as_json)


@cache_cmd.command("verify")
@cache_dir_option
@json_option
def cache_verify(cache_dir: Path | None, as_json: bool) -> None:
    """Check every entry's signature; delete the ones that fail."""
    with ResponseCache(cache_dir=cache_dir) as cache:
        _show(cache.verify(), as_json)


def _read_tasks(path: Path) -> list[dict[str, Any]]:
    """A JSON list of {"agent", "task", ...} objects, or one such object per line (JSONL)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"cannot read {path}: {exc}") from exc
    try:
        data = json.loads(text)
        items = data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        items = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InvalidArgumentError(
                    f"{path}:{number}: not JSON ({exc.msg}); give a JSON list of "
                    '{"agent": ..., "task": ...} objects or one object per line'
                ) from exc
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidArgumentError(f"{path}: item {i} is not an object with 'agent' and 'task'")
    return items


@cache_cmd.command("warm")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@cache_dir_option
@config_option
@json_option
def cache_warm(file: Path, cache_dir: Path | None, config_path: Path | None, as_json: bool) -> None:
    """Run the tasks in FILE now so later identical calls are answered from the cache."""
    tasks = _read_tasks(file)
    orch = AsyncAgentOrchestrator(config_path, cache_dir=cache_dir)

    async def go() -> dict[str, int]:
        async with orch:
            return await orch.warm(tasks)

    _show(run_async(go()), as_json)


COMMANDS = [cache_cmd]
