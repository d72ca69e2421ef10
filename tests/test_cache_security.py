"""Directory safety and the signing secret."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from claude_force._errors import CacheDirectoryError, InvalidArgumentError
from claude_force.cache import ResponseCache
from claude_force.cache._paths import default_cache_dir, default_config_dir, ensure_private_dir
from claude_force.cache._secret import ENV_VAR, SECRET_FILE_NAME, load_secret

SECRET = "security-test-secret-0123456789abcdef"
KEY = "ab" * 32


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cachehome"))


# -- directories ------------------------------------------------------------------------


def test_missing_dir_and_parents_are_created_0700(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c"
    assert ensure_private_dir(target) == target
    for path in (tmp_path / "a", tmp_path / "a" / "b", target):
        assert mode(path) == 0o700


def test_cache_creates_its_dir_0700_and_db_0600(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "cache"
    with ResponseCache(cache_dir=folder, cache_secret=SECRET) as cache:
        cache.set(KEY, {"a": 1})
    assert mode(folder) == 0o700
    assert mode(folder / "cache.db") == 0o600


def test_world_writable_dir_is_refused_with_the_fix(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(CacheDirectoryError) as info:
        ResponseCache(cache_dir=folder, cache_secret=SECRET)
    message = str(info.value)
    assert str(folder) in message
    assert "writable by every user" in message
    assert f"chmod 700 {folder}" in message
    assert not (folder / "cache.db").exists()


def test_sticky_world_writable_dir_is_still_refused(tmp_path: Path) -> None:
    folder = tmp_path / "tmpish"
    folder.mkdir()
    folder.chmod(0o1777)
    with pytest.raises(CacheDirectoryError, match="writable by every user") as info:
        ensure_private_dir(folder)
    # A shared folder like /tmp: never told to chmod it (that would break the machine).
    assert "chmod" not in str(info.value) and "choose a folder of your own" in str(info.value)
    link = tmp_path / "link"
    link.symlink_to(folder.parent / "open")
    (folder.parent / "open").mkdir()
    (folder.parent / "open").chmod(0o777)
    with pytest.raises(CacheDirectoryError) as through_link:
        ensure_private_dir(link)
    assert "chmod" not in str(through_link.value)


def test_group_writable_dir_is_accepted(tmp_path: Path) -> None:
    folder = tmp_path / "group"
    folder.mkdir()
    folder.chmod(0o770)
    assert ensure_private_dir(folder) == folder


@pytest.mark.skipif(os.getuid() != 0, reason="chown to another uid needs root")
def test_dir_owned_by_another_uid_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    os.chown(folder, 65534, 65534)
    with pytest.raises(CacheDirectoryError) as info:
        ResponseCache(cache_dir=folder, cache_secret=SECRET)
    assert str(folder) in str(info.value)
    assert "owned by uid 65534" in str(info.value)


@pytest.mark.skipif(os.getuid() == 0, reason="root owns the system directories")
def test_dir_owned_by_root_is_refused_for_a_normal_user() -> None:
    with pytest.raises(CacheDirectoryError, match="owned by uid 0"):
        ensure_private_dir(Path("/usr"))


def test_a_file_in_place_of_the_dir_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(CacheDirectoryError, match="is not a directory"):
        ensure_private_dir(target)


def test_default_dirs_follow_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_cache_dir() == tmp_path / "cachehome" / "claude-force"
    assert default_config_dir() == tmp_path / "config" / "claude-force"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "claude-force"


def test_cache_uses_the_default_dir(tmp_path: Path) -> None:
    with ResponseCache(cache_secret=SECRET) as cache:
        cache.set(KEY, {"a": 1})
        assert cache.cache_dir == tmp_path / "cachehome" / "claude-force"
    assert (tmp_path / "cachehome" / "claude-force" / "cache.db").exists()


# -- secret ---------------------------------------------------------------------------


def test_secret_file_is_created_0600_once_and_reused(tmp_path: Path) -> None:
    first = load_secret()
    path = tmp_path / "config" / "claude-force" / SECRET_FILE_NAME
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert len(first) == 32
    before = path.stat().st_mtime_ns, path.read_text()
    assert load_secret() == first
    assert (path.stat().st_mtime_ns, path.read_text()) == before


def test_generated_secret_lets_a_second_cache_read_the_first(tmp_path: Path) -> None:
    with ResponseCache(cache_dir=tmp_path / "c") as cache:
        cache.set(KEY, {"a": 1})
    with ResponseCache(cache_dir=tmp_path / "c", memory_max_mb=0) as cache:
        hit = cache.get(KEY)
        assert hit is not None and hit.value == {"a": 1}


def test_secret_creation_race_yields_one_secret(tmp_path: Path) -> None:
    results: list[bytes] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(load_secret())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert len(set(results)) == 1
    folder = tmp_path / "config" / "claude-force"
    assert sorted(p.name for p in folder.iterdir()) == [SECRET_FILE_NAME]


def test_env_secret_wins_over_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_VAR, "e" * 40)
    assert load_secret() == b"e" * 40
    assert not (tmp_path / "config").exists()


def test_argument_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "e" * 40)
    assert load_secret("a" * 20) == b"a" * 20
    assert load_secret(b"\x00" * 16) == b"\x00" * 16


@pytest.mark.parametrize("secret", ["", "short", b"0123456789abcde"])
def test_short_secret_is_refused(secret: str | bytes) -> None:
    with pytest.raises(InvalidArgumentError, match="at least 16"):
        load_secret(secret)


def test_readable_secret_file_is_refused(tmp_path: Path) -> None:
    load_secret()
    path = tmp_path / "config" / "claude-force" / SECRET_FILE_NAME
    path.chmod(0o644)
    with pytest.raises(CacheDirectoryError, match=r"chmod 600"):
        load_secret()


def test_garbled_secret_file_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "config" / "claude-force"
    folder.mkdir(parents=True, mode=0o700)
    path = folder / SECRET_FILE_NAME
    path.write_text("not hex")
    path.chmod(0o600)
    with pytest.raises(CacheDirectoryError, match="delete it"):
        load_secret()


def test_disabled_cache_touches_no_file(tmp_path: Path) -> None:
    cache = ResponseCache(cache_dir=tmp_path / "never", enabled=False)
    cache.set(KEY, {"a": 1})
    assert cache.get(KEY) is None
    cache.close()
    assert not (tmp_path / "never").exists()
    assert not (tmp_path / "config").exists()


def test_cache_dir_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_FORCE_CACHE_DIR", str(tmp_path / "chosen"))
    assert default_cache_dir() == tmp_path / "chosen"
    with ResponseCache(cache_secret=SECRET) as cache:
        cache.set(KEY, {"a": 1})
    assert (tmp_path / "chosen" / "cache.db").exists()


def test_a_cache_dir_under_a_regular_file_is_a_typed_error_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(CacheDirectoryError) as caught:
        ResponseCache(cache_dir=tmp_path / "file" / "cache", cache_secret=SECRET)
    message = str(caught.value)
    assert str(tmp_path / "file" / "cache") in message
    assert "cache_dir" in message and "CLAUDE_FORCE_CACHE_DIR" in message
    assert "enable_cache=False" in message


def test_a_regular_file_as_the_cache_dir_is_a_typed_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(CacheDirectoryError, match="is not a directory; choose another"):
        ResponseCache(cache_dir=tmp_path / "file", cache_secret=SECRET)


if os.getuid() != 0:  # permission bits do not stop root: the case exists for other users

    @pytest.mark.parametrize("mode", [0o500, 0o300])
    def test_an_unwritable_cache_dir_is_a_typed_error(tmp_path: Path, mode: int) -> None:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(mode)
        try:
            with pytest.raises(
                CacheDirectoryError, match=r"is not writable .*; make .*locked writable"
            ):
                ResponseCache(cache_dir=folder, cache_secret=SECRET)
        finally:
            folder.chmod(0o700)
