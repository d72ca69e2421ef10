"""The in-process tier on its own: LRU by bytes, TTL, and use reports."""

from __future__ import annotations

from claude_force.cache._memory import MemoryTier
from claude_force.cache._types import MISS, Found

T0 = 1_000.0


def found(n: int, size: int = 100, created_at: float = T0) -> Found:
    return Found({"n": n}, created_at, size)


def test_lru_by_bytes_evicts_least_recently_used() -> None:
    tier = MemoryTier(max_bytes=300, ttl=3600)
    for n in (1, 2, 3):
        tier.put(f"k{n}", found(n))
    assert tier.get("k1", T0) is not MISS  # k2 is now the least recently used
    tier.put("k4", found(4))
    assert tier.get("k2", T0) is MISS
    assert all(tier.get(f"k{n}", T0) is not MISS for n in (1, 3, 4))
    stats = tier.snapshot()
    assert (stats["entries"], stats["size_bytes"], stats["evictions"]) == (3, 300, 1)


def test_a_big_entry_evicts_as_many_as_needed() -> None:
    tier = MemoryTier(max_bytes=300, ttl=3600)
    for n in range(3):
        tier.put(f"k{n}", found(n))
    tier.put("big", found(9, size=250))
    assert [k for k in ("k0", "k1", "k2", "big") if tier.get(k, T0) is not MISS] == ["big"]
    assert tier.snapshot()["size_bytes"] == 250


def test_entry_larger_than_the_tier_is_not_kept_and_replaces_nothing_stale() -> None:
    tier = MemoryTier(max_bytes=300, ttl=3600)
    tier.put("k", found(1))
    tier.put("k", found(2, size=301))
    assert tier.get("k", T0) is MISS
    assert tier.snapshot()["size_bytes"] == 0


def test_replacing_a_key_adjusts_the_byte_count() -> None:
    tier = MemoryTier(max_bytes=1000, ttl=3600)
    tier.put("k", found(1, size=100))
    tier.put("k", found(2, size=40))
    got = tier.get("k", T0)
    assert got is not MISS and got.value == {"n": 2}
    assert tier.snapshot()["size_bytes"] == 40


def test_ttl_expiry_counts_and_frees() -> None:
    tier = MemoryTier(max_bytes=1000, ttl=60)
    tier.put("k", found(1))
    assert tier.get("k", T0 + 59.9) is not MISS
    assert tier.get("k", T0 + 60) is MISS
    stats = tier.snapshot()
    assert (stats["expirations"], stats["entries"], stats["size_bytes"]) == (1, 0, 0)
    assert (stats["hits"], stats["misses"]) == (1, 1)


def test_prune_drops_only_expired() -> None:
    tier = MemoryTier(max_bytes=1000, ttl=60)
    tier.put("old", found(1, created_at=T0))
    tier.put("new", found(2, created_at=T0 + 30))
    assert tier.prune(T0 + 60) == 1
    assert tier.get("new", T0 + 60) is not MISS


def test_envelopes_are_not_kept_in_memory() -> None:
    tier = MemoryTier(max_bytes=1000, ttl=60)
    tier.put("k", Found({}, T0, 10, envelope=b"x" * 10))
    got = tier.get("k", T0)
    assert got is not MISS and got.envelope is None and got.value == {}


def test_use_is_reported_at_most_once_per_interval() -> None:
    reports: list[tuple[str, float]] = []
    tier = MemoryTier(
        max_bytes=1000, ttl=3600, on_use=lambda k, now: reports.append((k, now)), use_every=60
    )
    tier.put("k", found(1))
    for dt in (10, 59, 60, 61, 119, 120):
        tier.get("k", T0 + dt)
    assert reports == [("k", T0 + 60), ("k", T0 + 120)]
