"""The in-process tier on its own: LRU by bytes, TTL, use reports, what it really holds."""

from __future__ import annotations

import gc
import hashlib
import json
import sys
import tracemalloc

from claude_force.cache._memory import ENTRY_OVERHEAD, MemoryTier, deep_size
from claude_force.cache._types import MISS

T0 = 1_000.0
UNIT = 400 + ENTRY_OVERHEAD  # the default entry's charge


def payload(n: int, size: int = UNIT) -> bytes:
    """JSON of ``{"n": n, "p": "x..."}`` that the tier charges exactly ``size`` bytes for.

    An ASCII string's objects grow by one byte per character.
    """
    pad = size - ENTRY_OVERHEAD - deep_size({"n": n, "p": ""})
    assert pad >= 0
    return json.dumps({"n": n, "p": "x" * pad}, separators=(",", ":")).encode()


def put(tier: MemoryTier, key: str, n: int, size: int = UNIT) -> None:
    tier.put(key, payload(n, size), T0)


def test_lru_by_bytes_evicts_least_recently_used() -> None:
    tier = MemoryTier(max_bytes=3 * UNIT, ttl=3600)
    for n in (1, 2, 3):
        put(tier, f"k{n}", n)
    assert tier.get("k1", T0) is not MISS  # k2 is now the least recently used
    put(tier, "k4", 4)
    assert tier.get("k2", T0) is MISS
    assert all(tier.get(f"k{n}", T0) is not MISS for n in (1, 3, 4))
    stats = tier.snapshot()
    assert (stats["entries"], stats["size_bytes"], stats["evictions"]) == (3, 3 * UNIT, 1)


def test_a_big_entry_evicts_as_many_as_needed() -> None:
    tier = MemoryTier(max_bytes=3 * UNIT, ttl=3600)
    for n in range(3):
        put(tier, f"k{n}", n)
    put(tier, "big", 9, size=int(2.5 * UNIT))
    assert [k for k in ("k0", "k1", "k2", "big") if tier.get(k, T0) is not MISS] == ["big"]
    assert tier.snapshot()["size_bytes"] == int(2.5 * UNIT)


def test_entry_larger_than_the_tier_is_not_kept_and_replaces_nothing_stale() -> None:
    tier = MemoryTier(max_bytes=3 * UNIT, ttl=3600)
    put(tier, "k", 1)
    put(tier, "k", 2, size=3 * UNIT + 1)
    assert tier.get("k", T0) is MISS
    assert tier.snapshot()["size_bytes"] == 0


def test_replacing_a_key_adjusts_the_byte_count() -> None:
    tier = MemoryTier(max_bytes=10 * UNIT, ttl=3600)
    put(tier, "k", 1, size=UNIT + 60)
    put(tier, "k", 2)
    got = tier.get("k", T0)
    assert got is not MISS and got.value["n"] == 2
    assert tier.snapshot()["size_bytes"] == UNIT


def test_a_value_is_parsed_once_not_on_every_hit() -> None:
    tier = MemoryTier(max_bytes=10 * UNIT, ttl=3600)
    put(tier, "k", 1)
    first, again = tier.get("k", T0), tier.get("k", T0)
    assert first is not MISS and again is not MISS
    assert first.value is again.value and first.value["n"] == 1


def test_deep_size_counts_every_object_once_per_occurrence() -> None:
    value = {"a": [1, 2.5, "text", None, True], "b": {"c": 1000}}
    expected = sum(
        sys.getsizeof(o) for o in (value, "a", value["a"], 2.5, "text", "b", value["b"], "c", 1000)
    )
    assert deep_size(value) == expected


def test_ttl_expiry_counts_and_frees() -> None:
    tier = MemoryTier(max_bytes=10 * UNIT, ttl=60)
    put(tier, "k", 1)
    assert tier.get("k", T0 + 59.9) is not MISS
    assert tier.get("k", T0 + 60) is MISS
    stats = tier.snapshot()
    assert (stats["expirations"], stats["entries"], stats["size_bytes"]) == (1, 0, 0)
    assert (stats["hits"], stats["misses"]) == (1, 1)


def test_prune_drops_only_expired() -> None:
    tier = MemoryTier(max_bytes=10 * UNIT, ttl=60)
    tier.put("old", payload(1), T0)
    tier.put("new", payload(2), T0 + 30)
    assert tier.prune(T0 + 60) == 1
    assert tier.get("new", T0 + 60) is not MISS


def test_use_is_reported_at_most_once_per_interval() -> None:
    reports: list[tuple[str, float]] = []
    tier = MemoryTier(
        max_bytes=10 * UNIT, ttl=3600, on_use=lambda k, now: reports.append((k, now)), use_every=60
    )
    put(tier, "k", 1)
    for dt in (10, 59, 60, 61, 119, 120):
        tier.get("k", T0 + dt)
    assert reports == [("k", T0 + 60), ("k", T0 + 120)]


def test_the_limit_is_what_the_process_pays() -> None:
    # Responses of ~2 KB and of ~300 bytes, with fresh 64-hex keys, as the orchestrator
    # stores them: Python's own allocation count (tracemalloc) stays within the limit.
    limit = 1024 * 1024
    for text in ("a" * 1800, "b" * 150):
        tier = MemoryTier(max_bytes=limit, ttl=3600)
        gc.collect()
        tracemalloc.start()
        try:
            for n in range(4000):
                key = hashlib.sha256(str(n).encode()).hexdigest()
                value = {"id": f"msg_{n}", "content": [{"type": "text", "text": text}]}
                tier.put(key, json.dumps(value, separators=(",", ":")).encode(), T0)
                tier.get(key, T0 + 3600 - 1)  # every entry also noted as used once
            held = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        stats = tier.snapshot()
        assert stats["evictions"] > 0 and stats["size_bytes"] <= limit
        assert 0.75 * limit < held <= 1.05 * limit, (len(text), held / limit)
