"""``claude-force memory``: list, search, show, forget, clear; JSON output; one-line errors."""

from __future__ import annotations

import io
import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from claude_force import AgentMemory, AgentResult, load_config
from claude_force.cli import cli
from claude_force.cli._common import run_guarded

TASKS = {
    "code-reviewer": ["Review the payment gateway retry logic", "Review the login form"],
    "test-writer": ["Write tests for the payment gateway retries"],
}


@pytest.fixture
def remembered(project: Path) -> Path:
    """A project whose memory holds three entries (ids 1 to 3, in TASKS order)."""
    with AgentMemory.of_project(load_config(project)) as memory:
        for agent, tasks in TASKS.items():
            for task in tasks:
                result = AgentResult(agent_name=agent, success=True, output=f"on {task}", model="m")
                memory.remember(result, task)
    return project


def edit_store(project: Path, *statements: str) -> None:
    """Change the project's memory file by hand, as a user with the sqlite3 shell might."""
    with closing(sqlite3.connect(load_config(project).root / "data" / "memory.db")) as db, db:
        for sql in statements:
            db.execute(sql)


def run(*argv: str) -> int:
    return run_guarded(cli, list(argv))


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert run(*argv, "--json") == 0
    return json.loads(capsys.readouterr().out)


def test_list_newest_first_and_by_agent(
    remembered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = run_json(capsys, "memory", "list", "-c", str(remembered))
    assert isinstance(rows, list)
    assert [r["id"] for r in rows] == [3, 2, 1]
    assert set(rows[0]) == {"id", "agent", "task", "excerpt", "ts", "model"}
    rows = run_json(capsys, "memory", "list", "--agent", "test-writer", "-c", str(remembered))
    assert [r["task"] for r in rows] == TASKS["test-writer"]
    assert run("memory", "list", "-c", str(remembered)) == 0
    out = capsys.readouterr().out
    assert "Review the login form" in out and "test-writer" in out


def test_search_marks_what_recall_would_use(
    remembered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    query = "payment gateway retry timeouts"
    rows = run_json(capsys, "memory", "search", query, "-c", str(remembered))
    assert isinstance(rows, list)
    assert {r["id"] for r in rows if r["relevant"]} == {1, 3}
    assert all(r["id"] != 2 for r in rows)  # shares no word with the query
    assert rows[0]["shared_terms"]
    scoped = run_json(
        capsys, "memory", "search", query, "-a", "code-reviewer", "-c", str(remembered)
    )
    assert [r["id"] for r in scoped] == [1]
    assert run_json(capsys, "memory", "search", 'NEAR("x" *', "-c", str(remembered)) == []


def test_show_and_forget(remembered: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entry = run_json(capsys, "memory", "show", "2", "-c", str(remembered))
    assert entry == {**entry, "id": 2, "task": "Review the login form"}
    assert run("memory", "show", "2", "-c", str(remembered)) == 0
    assert "on Review the login form" in capsys.readouterr().out
    assert run_json(capsys, "memory", "forget", "2", "-c", str(remembered)) == {
        "removed": 1,
        "id": 2,
    }
    assert run("memory", "show", "2", "-c", str(remembered)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no memory entry with id 2") and err.count("\n") == 1
    assert run("memory", "forget", "2", "-c", str(remembered)) == 2


def test_clear_asks_first(
    remembered: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert run("memory", "clear", "-c", str(remembered)) == 1
    assert "nothing was removed" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # no answer at all
    assert run("memory", "clear", "-c", str(remembered)) == 2
    assert "pass --yes" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert run("memory", "clear", "--agent", "test-writer", "-c", str(remembered)) == 0
    assert "removed 1 memory entries of agent 'test-writer'" in capsys.readouterr().err
    assert run_json(capsys, "memory", "clear", "--yes", "-c", str(remembered)) == {"removed": 2}
    assert run_json(capsys, "memory", "list", "-c", str(remembered)) == []


def test_outside_a_project_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run("memory", "list") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_an_empty_memory_says_so(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("memory", "list", "-c", str(project)) == 0
    assert "no memory entries yet" in capsys.readouterr().err
    assert not (project.parent / "data" / "memory.db").exists()


@pytest.mark.parametrize("entry_id", ["99999999999999999999999", str(2**63), "0"])
@pytest.mark.parametrize("command", ["show", "forget"])
def test_an_id_no_entry_can_have_is_no_memory_entry(
    remembered: Path, capsys: pytest.CaptureFixture[str], command: str, entry_id: str
) -> None:
    assert run("memory", command, entry_id, "-c", str(remembered)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no memory entry with id {entry_id} ") and "Overflow" not in err
    with AgentMemory.of_project(load_config(remembered)) as memory:
        assert len(memory.entries()) == 3  # nothing was lost


def test_list_shows_an_entry_whose_time_no_date_has(
    remembered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit_store(remembered, "UPDATE entries SET ts = 1e300 WHERE id = 1")
    assert run("memory", "list", "-c", str(remembered)) == 0
    out = capsys.readouterr().out
    assert "unknown" in out and "Review the login form" in out


def test_show_cuts_a_huge_excerpt_and_forget_says_when_nothing_was_deleted(
    remembered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit_store(remembered, f"UPDATE entries SET excerpt = '{'x' * 3_000_000}' WHERE id = 1")
    assert run("memory", "show", "1", "-c", str(remembered)) == 0
    assert "more characters]" in capsys.readouterr().out  # rich wrapped 3 MB for minutes
    # Its delete trigger now fails.
    edit_store(remembered, "DROP TABLE entries_terms", "DROP TABLE entries_fts")
    assert run("memory", "forget", "2", "-c", str(remembered)) != 0
    assert "could not be deleted" in capsys.readouterr().err
