"""``claude-force cache``: stats, clear, prune, verify and warm the response cache."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from .. import AsyncAgentOrchestrator, InvalidArgumentError, ResponseCache
from ._common import config_option, console, print_json

cache_dir_option = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Cache folder (default: $XDG_CACHE_HOME/claude-force or ~/.cache/claude-force).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _show(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(data)
        return
    for key, value in data.items():
        if isinstance(value, dict):
            console.print(f"{key}:", highlight=False)
            for sub, inner in value.items():
                console.print(f"  {sub}: {inner}", highlight=False)
        else:
            console.print(f"{key}: {value}", highlight=False)


@click.group("cache")
def cache_cmd() -> None:
    """Inspect and maintain the response cache."""


@cache_cmd.command("stats")
@cache_dir_option
@json_option
def cache_stats(cache_dir: Path | None, as_json: bool) -> None:
    """Entries, size, limit and this process's counters, per tier."""
    with ResponseCache(cache_dir=cache_dir) as cache:
        _show(cache.get_stats(), as_json)


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
@config_option
@json_option
def cache_warm(file: Path, config_path: Path | None, as_json: bool) -> None:
    """Run the tasks in FILE now so later identical calls are answered from the cache."""
    tasks = _read_tasks(file)
    orch = AsyncAgentOrchestrator(config_path)

    async def go() -> dict[str, int]:
        async with orch:
            return await orch.warm(tasks)

    _show(asyncio.run(go()), as_json)


COMMANDS = [cache_cmd]
