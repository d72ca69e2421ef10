"""Several processes on one cache directory, and writers killed mid-write.

Children are plain ``python -c`` subprocesses. They load ``claude_force.cache`` without
running ``claude_force/__init__.py``, so their start-up does not pay for the SDK import.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import claude_force.cache
from claude_force.cache import ResponseCache

SECRET = "process-test-secret-0123456789abcdef"
MIB = 1024 * 1024
PACKAGE_PARENT = str(Path(claude_force.cache.__file__).resolve().parent.parent)

BOOT = f"""
import hashlib, json, random, sys, types
package = types.ModuleType("claude_force")
package.__path__ = [{PACKAGE_PARENT!r}]
sys.modules["claude_force"] = package
from claude_force.cache import ResponseCache
SECRET = {SECRET!r}
MIB = {MIB}
folder, seed, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
keys = [hashlib.sha256(f"k{{i}}".encode()).hexdigest() for i in range(40)]
"""

HAMMER = (
    BOOT
    + """
with ResponseCache(cache_dir=folder, cache_secret=SECRET, max_size_mb=limit / MIB,
                   memory_max_mb=0.01) as cache:
    for _ in range(200):
        key = rng.choice(keys)
        if rng.random() < 0.5:
            cache.set(key, {"k": key, "pad": "x" * rng.randint(100, 3000)})
        else:
            hit = cache.get(key)
            assert hit is None or hit.value["k"] == key, hit
    print(json.dumps(cache.get_stats()))
"""
)

WRITER = (
    BOOT
    + """
import os
with ResponseCache(cache_dir=folder, cache_secret=SECRET, max_size_mb=limit / MIB,
                   memory_max_mb=0) as cache:
    i = 0
    while True:
        key = keys[(seed * 7 + i) % len(keys)]
        blob = os.urandom(20_000).hex()
        print("writing", i, flush=True)
        cache.set(key, {"k": key, "blob": blob, "sha": hashlib.sha256(blob.encode()).hexdigest()})
        i += 1
"""
)


def run_child(script: str, folder: Path, seed: int, limit: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, str(folder), str(seed), str(limit)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_consistent(folder: Path, limit: int) -> None:
    with sqlite3.connect(folder / "cache.db") as db:
        stored = db.execute("SELECT coalesce(sum(size), 0), count(*) FROM entries").fetchone()
        meta = db.execute("SELECT total_bytes, entries FROM meta").fetchone()
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    assert tuple(stored) == tuple(meta)
    assert stored[0] <= limit


def test_four_processes_share_one_directory(tmp_path: Path) -> None:
    limit = 20_000
    children = [run_child(HAMMER, tmp_path, seed, limit) for seed in range(4)]
    outputs = [child.communicate(timeout=120) for child in children]
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
        assert err == ""  # no warnings either: no lock ever gave up
        stats = json.loads(out)
        assert stats["hits"] + stats["misses"] > 0
        assert stats["errors"] == 0 and stats["integrity_failures"] == 0
    assert sum(json.loads(out)["evictions"] for out, _ in outputs) > 0
    assert_consistent(tmp_path, limit)
    with ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, memory_max_mb=0) as cache:
        report = cache.verify()
    assert report["bad"] == 0 and report["ok"] == report["checked"] > 0


def test_writers_killed_mid_write_never_leave_a_corrupt_entry(tmp_path: Path) -> None:
    limit = 1_000_000
    for round_ in range(20):
        child = run_child(WRITER, tmp_path, round_, limit)
        assert child.stdout is not None
        # Kill after 1-3 reported writes: the child is then inside (or between) sets.
        for _ in range(1 + round_ % 3):
            assert child.stdout.readline().startswith("writing"), child.stderr
        child.kill()
        child.wait(timeout=30)
        assert child.returncode == -9
        child.stdout.close()
        assert child.stderr is not None
        child.stderr.close()
    assert_consistent(tmp_path, limit)
    with ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, memory_max_mb=0) as cache:
        assert cache.verify()["bad"] == 0
        served = 0
        for i in range(40):
            key = hashlib.sha256(f"k{i}".encode()).hexdigest()
            hit = cache.get(key)
            if hit is not None:
                served += 1
                blob = hit.value["blob"]
                assert hit.value["k"] == key
                assert hashlib.sha256(blob.encode()).hexdigest() == hit.value["sha"]
        stats = cache.get_stats()
    assert served > 0
    assert stats["integrity_failures"] == 0
