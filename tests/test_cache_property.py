"""Property: under any mix of sets and gets the byte limits hold and the stats add up."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claude_force.cache import ResponseCache

from ._cache_support import Clock

SECRET = "property-test-secret-0123456789abcdef"
MIB = 1024 * 1024
DISK_LIMIT = 12_000
MEMORY_LIMIT = 6_000
KEYS = [f"{n:02x}" * 16 for n in range(12)]


operation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, len(KEYS) - 1), st.integers(0, 9000)),
    st.tuples(st.just("get"), st.integers(0, len(KEYS) - 1), st.just(0)),
    st.tuples(st.just("tick"), st.just(0), st.integers(1, 40_000)),
)


def check_invariants(cache: ResponseCache, folder: Path, gets: int) -> None:
    # An expired row that a get found is deleted by the cache's thread: written first, so
    # the stats and the count below read the same state (one could land between them).
    cache.flush()
    stats = cache.get_stats()
    memory, disk = stats["tiers"]["memory"], stats["tiers"]["disk"]
    assert disk["size_bytes"] <= DISK_LIMIT
    assert memory["size_bytes"] <= MEMORY_LIMIT
    assert stats["hits"] + stats["misses"] == gets
    assert memory["hits"] + memory["misses"] == gets
    assert disk["hits"] + disk["misses"] == memory["misses"]
    with sqlite3.connect(folder / "cache.db") as db:
        total, count = db.execute("SELECT coalesce(sum(size), 0), count(*) FROM entries").fetchone()
    db.close()
    assert (disk["size_bytes"], disk["entries"]) == (total, count)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, max_size=40))
def test_limits_hold_and_stats_agree(ops: list[tuple[str, int, int]]) -> None:
    clock = Clock()
    with (
        tempfile.TemporaryDirectory() as tmp,
        ResponseCache(
            cache_dir=tmp,
            cache_secret=SECRET,
            max_size_mb=DISK_LIMIT / MIB,
            memory_max_mb=MEMORY_LIMIT / MIB,
            ttl_hours=24,
            clock=clock,
        ) as cache,
    ):
        latest: dict[int, dict[str, object]] = {}
        gets = 0
        for kind, index, amount in ops:
            if kind == "set":
                # Incompressible-ish text, so the stored size tracks ``amount``.
                value = {
                    "i": index,
                    "text": "".join(chr(33 + (j * 7919) % 90) for j in range(amount)),
                }
                cache.set(KEYS[index], value)
                latest[index] = value
                hit = cache.get(KEYS[index])
                gets += 1
                if amount < 4000:  # small enough for both tiers: must be served right away
                    assert hit is not None and hit.value == value
            elif kind == "get":
                hit = cache.get(KEYS[index])
                gets += 1
                if hit is not None:
                    assert hit.value == latest[index]  # never a stale or foreign value
            else:
                clock.now += amount
            check_invariants(cache, Path(tmp), gets)
