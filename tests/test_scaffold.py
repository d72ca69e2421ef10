"""`claude-force init`: the starter .claude/ folder."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from claude_force._config import load_config, read_agent_prompt
from claude_force._errors import InvalidArgumentError
from claude_force._scaffold import init_project
from claude_force.cli import cli
from claude_force.cli._common import run_guarded

EXPECTED = {
    "claude.json",
    "agents/code-reviewer.md",
    "agents/test-writer.md",
    "agents/doc-writer.md",
    "contracts/code-reviewer.contract",
    "contracts/test-writer.contract",
    "contracts/doc-writer.contract",
}


def relative(paths: list[Path], root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in paths}


def test_init_writes_the_template_and_returns_the_paths(tmp_path: Path) -> None:
    written = init_project(tmp_path)
    root = tmp_path / ".claude"
    assert relative(written, root) == EXPECTED
    assert written[-1] == root / "claude.json"  # written last so it never points at nothing
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert on_disk == EXPECTED  # no temporary files left behind


def test_scaffold_loads_and_has_a_parallel_stage(tmp_path: Path) -> None:
    init_project(tmp_path)
    config = load_config(tmp_path / ".claude" / "claude.json")
    assert list(config.agents) == ["code-reviewer", "test-writer", "doc-writer"]
    assert config.workflow("review") == (("code-reviewer",),)
    assert config.workflow("ship") == (("code-reviewer",), ("test-writer", "doc-writer"))


@pytest.mark.parametrize("name", ["code-reviewer", "test-writer", "doc-writer"])
def test_scaffold_agents_have_real_prompts_and_contracts(tmp_path: Path, name: str) -> None:
    init_project(tmp_path)
    spec = load_config(tmp_path / ".claude" / "claude.json").agent(name)
    definition, contract = read_agent_prompt(spec)
    assert 20 <= len(definition.splitlines()) <= 40
    assert contract is not None
    for section in ("## Inputs", "## Outputs", "## Quality bar"):
        assert section in contract


def test_init_creates_a_missing_destination(tmp_path: Path) -> None:
    dest = tmp_path / "new" / "project"
    init_project(dest)
    assert (dest / ".claude" / "claude.json").is_file()


def test_init_writes_files_with_normal_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        written = init_project(tmp_path)
    finally:
        os.umask(old)
    assert {stat.S_IMODE(p.stat().st_mode) for p in written} == {0o644}


def test_init_refuses_to_overwrite_an_existing_project(tmp_path: Path) -> None:
    init_project(tmp_path)
    config = tmp_path / ".claude" / "claude.json"
    config.write_text('{"agents": {}}', encoding="utf-8")
    with pytest.raises(InvalidArgumentError, match=r"already has a .*--force") as info:
        init_project(tmp_path)
    assert str(config) in str(info.value)
    assert config.read_text(encoding="utf-8") == '{"agents": {}}'


def test_init_into_an_existing_project_says_so_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The refusal is already an InvalidArgumentError: passed through, not re-wrapped as a
    # "not a valid file name" error (as `claude-force init` in a project once said).
    monkeypatch.chdir(tmp_path)
    init_project(Path("."))
    with pytest.raises(InvalidArgumentError) as info:
        init_project(Path("."))
    message = str(info.value)
    assert message.startswith(".claude already has a Claude Force project (.claude/claude.json, ")
    assert "cannot initialise" not in message and "not a valid file name" not in message


def test_init_refuses_when_only_an_agent_file_would_be_overwritten(tmp_path: Path) -> None:
    mine = tmp_path / ".claude" / "agents" / "code-reviewer.md"
    mine.parent.mkdir(parents=True)
    mine.write_text("my own reviewer\n", encoding="utf-8")
    with pytest.raises(InvalidArgumentError, match="nothing was written"):
        init_project(tmp_path)
    assert mine.read_text(encoding="utf-8") == "my own reviewer\n"
    assert not (tmp_path / ".claude" / "claude.json").exists()


def test_init_force_overwrites_templates_and_keeps_other_files(tmp_path: Path) -> None:
    init_project(tmp_path)
    root = tmp_path / ".claude"
    (root / "claude.json").write_text("{broken", encoding="utf-8")
    mine = root / "agents" / "my-agent.md"
    mine.write_text("keep me\n", encoding="utf-8")
    notes = root / "notes.txt"
    notes.write_text("keep me too\n", encoding="utf-8")
    written = init_project(tmp_path, force=True)
    assert relative(written, root) == EXPECTED
    assert mine.read_text(encoding="utf-8") == "keep me\n"
    assert notes.read_text(encoding="utf-8") == "keep me too\n"
    assert "code-reviewer" in load_config(root / "claude.json").agents


def test_init_force_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside.md"
    outside.write_text("not yours\n", encoding="utf-8")
    link = tmp_path / "proj" / ".claude" / "agents" / "doc-writer.md"
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    init_project(tmp_path / "proj", force=True)
    assert outside.read_text(encoding="utf-8") == "not yours\n"
    assert not link.is_symlink()
    assert link.read_text(encoding="utf-8").startswith("# Documentation Writer")


def test_init_refuses_a_file_as_destination(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x", encoding="utf-8")
    with pytest.raises(InvalidArgumentError, match="it is a file, not a folder"):
        init_project(target)


def test_init_refuses_when_dot_claude_is_a_file(tmp_path: Path) -> None:
    (tmp_path / ".claude").write_text("x", encoding="utf-8")
    with pytest.raises(InvalidArgumentError, match=r"\.claude is a file; move it away"):
        init_project(tmp_path, force=True)


# --------------------------------------------------------------------------- unwritable places


def init_refused(dest: Path) -> str:
    with pytest.raises(InvalidArgumentError) as info:
        init_project(dest)
    message = str(info.value)
    assert message.startswith(f"cannot initialise {dest}: ")
    return message


def test_init_below_a_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x", encoding="utf-8")
    message = init_refused(tmp_path / "file.txt" / "project")
    assert "a file stands where a folder is needed" in message


def test_init_with_a_file_where_the_agents_folder_goes(tmp_path: Path) -> None:
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".claude" / "agents").write_text("x", encoding="utf-8")
    message = init_refused(tmp_path)
    assert f"{tmp_path / '.claude' / 'agents'}: File exists" in message
    assert "move it away and run init again" in message
    assert not (tmp_path / ".claude" / "claude.json").exists()


def test_init_with_a_name_too_long(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        init_project(tmp_path / ("x" * 300))
    message = str(info.value)
    assert message.startswith(f"cannot initialise {tmp_path}/xxx")
    assert "... (" in message  # the path is cut to a readable length
    assert message.endswith(": File name too long; use a shorter path")


def test_init_with_a_nul_byte_in_the_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        init_project(tmp_path / "a\x00b")
    assert str(info.value) == (
        f"cannot initialise {tmp_path}/a\\x00b: the path is not a valid file name "
        "(embedded null byte); choose another folder"
    )


@pytest.mark.parametrize(
    ("code", "fix"),
    [
        (errno.EACCES, "check the folder's permissions"),
        (errno.EROFS, "the file system is read-only"),
        (errno.ENOSPC, "free some disk space"),
    ],
)
def test_init_when_the_disk_refuses_a_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, fix: str
) -> None:
    # Injected: the suite may run as root, for whom permissions never refuse a write.
    def refuse(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise OSError(code, os.strerror(code), dst)

    monkeypatch.setattr("claude_force._scaffold.os.replace", refuse)
    message = init_refused(tmp_path)
    assert f"{os.strerror(code)}; {fix}" in message
    assert not [p for p in (tmp_path / ".claude").rglob("*") if p.is_file()]  # no temp files


def test_cli_init_into_an_unwritable_place_prints_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file.txt").write_text("x", encoding="utf-8")
    assert run_guarded(cli, ["init", str(tmp_path / "file.txt" / "project")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("error: cannot initialise")
    assert "a file stands where a folder is needed" in " ".join(err.split())
