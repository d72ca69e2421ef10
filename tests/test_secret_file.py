"""The cache secret file is our own small regular file, or a typed error naming the fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from claude_force._errors import CacheDirectoryError
from claude_force.cache._secret import ENV_VAR, SECRET_FILE_NAME, load_secret

from ._support import no_hang

FIX = "remove it (a new secret is generated"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture
def secret_path(tmp_path: Path) -> Path:
    folder = tmp_path / "config" / "claude-force"
    folder.mkdir(parents=True, mode=0o700)
    return folder / SECRET_FILE_NAME


def refused(secret_path: Path) -> str:
    with no_hang(), pytest.raises(CacheDirectoryError) as info:
        load_secret()
    message = str(info.value)
    assert message.startswith(f"cache secret file {secret_path} ")
    assert ENV_VAR in message
    return message


def test_a_symlink_to_another_file_of_the_user_is_refused(
    secret_path: Path, tmp_path: Path
) -> None:
    # Even a file that would pass every other check: a link lets the secret be any file.
    other = tmp_path / "other"
    other.write_text("ab" * 32 + "\n")
    other.chmod(0o600)
    secret_path.symlink_to(other)
    message = refused(secret_path)
    assert "is a symbolic link" in message
    assert FIX in message


def test_a_dangling_symlink_is_refused_and_not_followed(secret_path: Path, tmp_path: Path) -> None:
    target = tmp_path / "planted"
    secret_path.symlink_to(target)
    assert "is a symbolic link" in refused(secret_path)
    assert not target.exists()  # no secret was written through the link
    assert secret_path.is_symlink()


def test_a_symlink_loop_is_refused(secret_path: Path) -> None:
    secret_path.symlink_to(secret_path)
    assert "is a symbolic link" in refused(secret_path)


def test_a_folder_is_refused(secret_path: Path) -> None:
    secret_path.mkdir()
    message = refused(secret_path)
    assert "is a folder, not a regular file" in message
    assert FIX in message


def test_a_fifo_is_refused_without_blocking(secret_path: Path) -> None:
    os.mkfifo(secret_path, 0o600)
    assert "is a FIFO (named pipe), not a regular file" in refused(secret_path)


def test_an_oversized_file_is_refused(secret_path: Path) -> None:
    secret_path.write_text("ab" * 4096)
    secret_path.chmod(0o600)
    assert "is larger than the 4 KiB allowed" in refused(secret_path)


def test_a_file_that_is_not_ascii_is_refused(secret_path: Path) -> None:
    secret_path.write_bytes(b"\xff" * 40)
    secret_path.chmod(0o600)
    with pytest.raises(CacheDirectoryError, match="does not hold a hex secret"):
        load_secret()


def test_a_regular_file_is_created_0600_and_read_back(secret_path: Path) -> None:
    first = load_secret()
    assert secret_path.is_file() and not secret_path.is_symlink()
    assert secret_path.stat().st_mode & 0o777 == 0o600
    assert load_secret() == first


def test_processes_creating_at_once_agree_on_one_secret(secret_path: Path) -> None:
    code = "from claude_force.cache._secret import load_secret; print(load_secret().hex())"
    env = {**os.environ, "XDG_CONFIG_HOME": str(secret_path.parent.parent)}
    children = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
        for _ in range(4)
    ]
    outputs = {child.communicate(timeout=60)[0].strip() for child in children}
    assert all(child.returncode == 0 for child in children)
    assert len(outputs) == 1
    assert outputs == {secret_path.read_text().strip().encode()}
    assert sorted(p.name for p in secret_path.parent.iterdir()) == [SECRET_FILE_NAME]
