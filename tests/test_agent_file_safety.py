"""Agent files are checked at every read by the same rule as at load.

The rule: the file resolves to a regular file inside the config folder (symlinks are fine while
they stay inside), reached without following a link swapped in after the check, at most 4 MiB.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from claude_force import AsyncAgentOrchestrator
from claude_force._config import AgentSpec, load_config, read_agent_prompt
from claude_force._errors import ConfigError
from claude_force.testing import Simulator

from ._support import no_hang
from .conftest import API_KEY

SECRET_TEXT = "PRIVATE KEY MATERIAL"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside.txt"
    path.write_text(SECRET_TEXT + "\n", encoding="utf-8")
    return path


def reviewer(project: Path) -> AgentSpec:
    return load_config(project).agent("code-reviewer")


def read_refused(spec: AgentSpec) -> str:
    with no_hang(), pytest.raises(ConfigError) as info:
        read_agent_prompt(spec)
    message = str(info.value)
    assert message.startswith(f"cannot read agent 'code-reviewer' file {spec.file}: ")
    assert SECRET_TEXT not in message
    return message


def test_file_swapped_for_a_link_leaving_the_folder_is_refused(
    project: Path, outside: Path
) -> None:
    spec = reviewer(project)
    spec.file.unlink()
    spec.file.symlink_to(outside)
    message = read_refused(spec)
    assert f"goes through a symlink to {outside}, outside {project.parent}" in message
    assert "replace the link with the file itself" in message


def test_folder_swapped_for_a_link_leaving_the_folder_is_refused(
    project: Path, tmp_path: Path
) -> None:
    spec = reviewer(project)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(spec.file.parent, elsewhere)
    spec.file.parent.symlink_to(elsewhere, target_is_directory=True)
    assert "goes through a symlink" in read_refused(spec)


def test_file_swapped_for_a_fifo_is_refused_without_blocking(project: Path) -> None:
    spec = reviewer(project)
    spec.file.unlink()
    os.mkfifo(spec.file)
    assert "is a FIFO (named pipe), not a regular file" in read_refused(spec)


def test_file_swapped_for_a_folder_is_refused(project: Path) -> None:
    spec = reviewer(project)
    spec.file.unlink()
    spec.file.mkdir()
    assert "is a folder, not a regular file" in read_refused(spec)


def test_file_swapped_for_a_link_loop_is_refused(project: Path) -> None:
    spec = reviewer(project)
    spec.file.unlink()
    spec.file.symlink_to(spec.file.name)
    assert "symbolic link loop" in read_refused(spec)


def test_file_grown_past_the_limit_is_refused(project: Path) -> None:
    spec = reviewer(project)
    with spec.file.open("ab") as handle:
        handle.truncate(4 * 1024 * 1024 + 1)
    assert "is larger than the 4 MiB allowed" in read_refused(spec)


def test_link_inside_the_folder_is_allowed_at_read_as_at_load(project: Path) -> None:
    # The load rule allows a symlink that stays inside the config folder, so the read does too.
    spec = reviewer(project)
    other = spec.file.with_name("test-writer.md")
    spec.file.unlink()
    spec.file.symlink_to(other.name)
    definition, _ = read_agent_prompt(spec)
    assert definition == other.read_text(encoding="utf-8")


def test_contract_swapped_for_an_outside_link_is_refused(project: Path, outside: Path) -> None:
    spec = reviewer(project)
    assert spec.contract is not None
    spec.contract.unlink()
    spec.contract.symlink_to(outside)
    with pytest.raises(ConfigError, match=r"cannot read agent 'code-reviewer' contract .* goes"):
        read_agent_prompt(spec)


def test_hand_made_spec_keeps_its_file_inside_its_own_folder(tmp_path: Path, outside: Path) -> None:
    (tmp_path / "agents").mkdir()
    link = tmp_path / "agents" / "a.md"
    link.symlink_to(outside)
    with pytest.raises(ConfigError, match="outside"):
        read_agent_prompt(AgentSpec(name="a", file=link))
    link.unlink()
    link.write_text("You are a.\n", encoding="utf-8")
    assert read_agent_prompt(AgentSpec(name="a", file=link)) == ("You are a.\n", None)


async def test_swapped_file_is_never_sent_upstream(
    project: Path, sim: Simulator, outside: Path
) -> None:
    async with AsyncAgentOrchestrator(
        project, api_key=API_KEY, base_url=sim.base_url, enable_cache=False, enable_tracking=False
    ) as orch:
        first = await orch.execute_agent("code-reviewer", "before")
        assert first.success, first.errors
        spec = orch.config.agent("code-reviewer")
        spec.file.unlink()
        spec.file.symlink_to(outside)
        with pytest.raises(ConfigError, match="goes through a symlink"):
            await orch.execute_agent("code-reviewer", "after")
    assert len(sim.message_requests) == 1
    assert all(SECRET_TEXT not in str(request.body) for request in sim.message_requests)


@pytest.mark.parametrize("swap", ["file", "folder"])
def test_link_swapped_in_after_the_check_is_not_followed(
    project: Path, outside: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap: str
) -> None:
    # Injected: resolution sees the path as it was before the swap, as in a race where the
    # link appears between the check and the open. The open itself must refuse the link.
    spec = reviewer(project)
    if swap == "file":
        spec.file.unlink()
        spec.file.symlink_to(outside)
    else:
        shutil.move(spec.file.parent, tmp_path / "moved")
        spec.file.parent.symlink_to(tmp_path / "moved", target_is_directory=True)
    real = os.path.realpath
    before = {str(spec.file): str(spec.file)}
    monkeypatch.setattr("claude_force._files.os.path.realpath", lambda p: before.get(p, real(p)))
    message = read_refused(spec)
    assert "was replaced by a symbolic link while it was being opened" in message
