"""``claude-force memory``: list, search, show, forget and clear what agents remember.

Exit codes as everywhere: 0 done; 1 ``clear`` declined at its question; 2 a usage error (no
project, an unknown entry id, ``clear`` without an answer or ``--yes``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from .. import AgentMemory, InvalidArgumentError, MemoryEntry, find_config, load_config
from ._common import RunFailed, config_option, console, json_option, print_json, say, show_error
from ._tables import pairs_table

agent_option = click.option("--agent", "-a", default=None, help="Only this agent's entries.")
limit_option = click.option(
    "--limit",
    "-n",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="At most this many entries.",
)


def _open(config_path: Path | None) -> AgentMemory:
    return AgentMemory.of_project(load_config(config_path or find_config()))


def _date(ts: float) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))
    except (OverflowError, OSError, ValueError):  # a time no calendar date has
        return "unknown"


def _shown(text: str, limit: int = 20_000) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]} [... {len(text) - limit:,} more characters]"


def _one_line(text: str, width: int = 70) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _table(rows: list[dict[str, Any]], extra: tuple[str, ...] = ()) -> Table:
    table = Table(box=None, padding=(0, 2, 0, 0))
    for column in ("id", "agent", "date", *extra, "task"):
        table.add_column(column, style="bold" if column == "id" else None)
    for row in rows:
        cells = [str(row["id"]), row["agent"], _date(row["ts"])]
        cells += [str(row[name]) for name in extra]
        table.add_row(*(Text(c) for c in cells), Text(_one_line(row["task"])))
    return table


def _entry(memory: AgentMemory, entry_id: int) -> MemoryEntry:
    entry = memory.get(entry_id)
    if entry is None:
        raise InvalidArgumentError(
            f"no memory entry with id {entry_id} in {memory.path}; "
            "`claude-force memory list` shows the ids"
        )
    return entry


@click.group("memory")
def memory_cmd() -> None:
    """What agents remember of earlier tasks (.claude/data/memory.db)."""


@memory_cmd.command("list")
@agent_option
@limit_option
@config_option
@json_option
def memory_list(agent: str | None, limit: int, config_path: Path | None, as_json: bool) -> None:
    """Remembered entries, newest first."""
    with _open(config_path) as memory:
        rows = [e.to_dict() for e in memory.entries(agent=agent, limit=limit)]
    if as_json:
        print_json(rows)
    elif rows:
        console.print(_table(rows))
    else:
        say("no memory entries yet: agents remember each successful task when memory is on")


@memory_cmd.command("search")
@click.argument("query")
@agent_option
@limit_option
@config_option
@json_option
def memory_search(
    query: str, agent: str | None, limit: int, config_path: Path | None, as_json: bool
) -> None:
    """Entries ranked for QUERY as recall ranks them; "relevant" marks the ones a task worded
    like QUERY would be given."""
    with _open(config_path) as memory:
        rows = memory.search(query, agent=agent, limit=limit)
    if as_json:
        print_json(rows)
    elif rows:
        for row in rows:
            row["relevant"] = "yes" if row["relevant"] else "no"
            row["shared_terms"] = ", ".join(row["shared_terms"]) or "-"
        console.print(_table(rows, ("relevant", "shared_terms")))
    else:
        say("no entry shares a word with the query")


@memory_cmd.command("show")
@click.argument("entry_id", metavar="ID", type=int)
@config_option
@json_option
def memory_show(entry_id: int, config_path: Path | None, as_json: bool) -> None:
    """One entry in full: its task and the kept excerpt of the answer."""
    with _open(config_path) as memory:
        entry = _entry(memory, entry_id)
    if as_json:
        print_json(entry.to_dict())
        return
    fields = {"id": str(entry.id), "agent": entry.agent, "date": _date(entry.ts)}
    console.print(pairs_table(None, {**fields, "model": entry.model}))
    # A kept excerpt is short; one edited by hand may be megabytes, which rich wraps slowly.
    task, excerpt = _shown(entry.task), _shown(entry.excerpt)
    console.print(Text("\nTask:\n" + task + "\n\nAnswer (excerpt):\n" + excerpt))


@memory_cmd.command("forget")
@click.argument("entry_id", metavar="ID", type=int)
@config_option
@json_option
def memory_forget(entry_id: int, config_path: Path | None, as_json: bool) -> None:
    """Delete one entry."""
    with _open(config_path) as memory:
        _entry(memory, entry_id)
        if not memory.forget(entry_id):
            raise InvalidArgumentError(
                f"memory entry {entry_id} could not be deleted from {memory.path} (a warning "
                "above says why); `claude-force memory clear` starts the store afresh"
            )
    if as_json:
        print_json({"removed": 1, "id": entry_id})
    else:
        say(f"forgot entry {entry_id}")


@memory_cmd.command("clear")
@agent_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@config_option
@json_option
def memory_clear(agent: str | None, yes: bool, config_path: Path | None, as_json: bool) -> None:
    """Delete every entry (of one agent with --agent); asks first unless --yes."""
    with _open(config_path) as memory:
        whose = f"agent '{agent}'" if agent else "every agent"
        if not yes:
            count = len(memory.entries(agent=agent))
            try:
                sure = click.confirm(f"Delete {count} memory entries of {whose}?", err=True)
            except click.Abort:  # no answer: standard input closed or not a terminal
                raise InvalidArgumentError(
                    "memory clear asks before deleting and got no answer; pass --yes to "
                    "clear without asking"
                ) from None
            if not sure:
                show_error("not confirmed; nothing was removed")
                raise RunFailed
        removed = memory.clear(agent=agent)
    if as_json:
        print_json({"removed": removed})
    else:
        say(f"removed {removed} memory entries of {whose}")


COMMANDS = [memory_cmd]
