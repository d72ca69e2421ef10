"""ResponseCache as callers see it: arguments, hits, tiers, stats, lifecycle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from claude_force._errors import InvalidArgumentError
from claude_force.cache import CacheHit, ResponseCache

from ._cache_support import T0, Clock, key

SECRET = "front-test-secret-0123456789abcdef"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(tmp_path: Path, clock: Clock) -> Iterator[ResponseCache]:
    with ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, clock=clock) as cache:
        yield cache


def test_empty_dict_value_is_a_hit_in_every_tier(tmp_path: Path, cache: ResponseCache) -> None:
    cache.set(key(1), {})
    hit = cache.get(key(1))
    assert hit is not None and hit.value == {} and hit.tier == "memory"
    with ResponseCache(
        cache_dir=tmp_path, cache_secret=SECRET, memory_max_mb=0, clock=Clock()
    ) as other:
        hit = other.get(key(1))
        assert hit is not None and hit.value == {} and hit.tier == "disk"


def test_miss_then_hit_counts(cache: ResponseCache) -> None:
    assert cache.get(key(1)) is None
    cache.set(key(1), {"text": "hi"})
    assert cache.get(key(1)) == CacheHit({"text": "hi"}, T0, "memory", 0.0)
    stats = cache.get_stats()
    assert (stats["hits"], stats["misses"], stats["hit_rate"]) == (1, 1, 0.5)
    assert stats["entries"] == 1
    assert stats["tiers"]["memory"]["hits"] == 1


def test_age_is_measured_with_the_clock(cache: ResponseCache, clock: Clock) -> None:
    cache.set(key(1), {"a": 1})
    clock.now += 90.5
    hit = cache.get(key(1))
    assert hit is not None and hit.age_seconds == 90.5 and hit.created_at == T0


def test_disk_hit_is_promoted_to_memory(tmp_path: Path, cache: ResponseCache) -> None:
    cache.set(key(1), {"a": 1})
    with ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, clock=Clock()) as other:
        first, second = other.get(key(1)), other.get(key(1))
        assert first is not None and first.tier == "disk"
        assert second is not None and second.tier == "memory"
        assert other.get_stats()["tiers"]["disk"]["hits"] == 1


def test_callers_cannot_change_what_is_cached(cache: ResponseCache) -> None:
    value = {"text": "original", "list": [1]}
    cache.set(key(1), value)
    value["text"] = "changed by the caller after set"
    hit = cache.get(key(1))
    assert hit is not None and hit.value["text"] == "original"
    hit.value["text"] = "changed by a reader"
    again = cache.get(key(1))
    assert again is not None and again.value == {"text": "original", "list": [1]}


def test_memory_serves_the_json_shape_disk_would(cache: ResponseCache) -> None:
    cache.set(key(1), {"tuple": (1, 2), "n": 1.0})
    hit = cache.get(key(1))
    assert hit is not None and hit.value == {"tuple": [1, 2], "n": 1.0}


@pytest.mark.parametrize(
    "bad",
    ["", "ABCDEF0123456789", "g" * 64, "a" * 15, "a" * 129, "ab" * 32 + "\n", 12, None, b"ab" * 32],
)
def test_bad_keys_are_refused(cache: ResponseCache, bad: object) -> None:
    with pytest.raises(InvalidArgumentError, match="16-128 lowercase hex"):
        cache.get(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        cache.set(bad, {})  # type: ignore[arg-type]


@pytest.mark.parametrize("good", ["0" * 16, "f" * 128, key(3)])
def test_key_lengths_16_to_128_are_accepted(cache: ResponseCache, good: str) -> None:
    cache.set(good, {"k": good})
    hit = cache.get(good)
    assert hit is not None and hit.value == {"k": good}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl_hours": 0}, "ttl_hours=0"),
        ({"ttl_hours": float("nan")}, "ttl_hours=nan"),
        ({"max_size_mb": -1}, "max_size_mb=-1"),
        ({"memory_max_mb": float("inf")}, "memory_max_mb=inf"),
        ({"namespace": ""}, "namespace=''"),
        ({"exclude_agents": "reviewer"}, "single string"),
    ],
)
def test_bad_arguments_name_the_value(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, **kwargs)  # type: ignore[arg-type]


def test_arguments_are_keywords_only(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="positional"):
        ResponseCache(tmp_path, 1, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="verify_integrity"):
        ResponseCache(cache_dir=tmp_path, verify_integrity=False)  # type: ignore[call-arg]
    with ResponseCache(
        cache_dir=tmp_path,
        ttl_hours=1,
        max_size_mb=2,
        cache_secret=SECRET,
        exclude_agents=["secret-agent"],
    ) as cache:
        assert cache.ttl_seconds == 3600
        assert cache.max_size_bytes == 2 * 1024 * 1024
        assert cache.is_excluded("secret-agent")
        assert not cache.is_excluded("reviewer")


def test_disabled_cache_is_a_no_op(tmp_path: Path) -> None:
    cache = ResponseCache(cache_dir=tmp_path, enabled=False)
    cache.set(key(1), {"a": 1})
    assert cache.get(key(1)) is None
    assert cache.warm([(key(2), {})]) == 0
    assert cache.prune() == 0
    assert cache.verify() == {"checked": 0, "ok": 0, "bad": 0}
    stats = cache.get_stats()
    assert stats["hits"] == stats["misses"] == stats["entries"] == 0
    with pytest.raises(InvalidArgumentError):
        cache.get("nothex")
    cache.close()


def test_after_close_the_cache_is_inert_and_keeps_stats(cache: ResponseCache) -> None:
    cache.set(key(1), {"a": 1})
    assert cache.get(key(1)) is not None
    cache.close()
    assert cache.get(key(1)) is None
    cache.set(key(2), {"b": 2})
    assert cache.get_stats()["hits"] == 1
    cache.close()  # twice is fine


def test_delete_removes_from_every_tier(tmp_path: Path, cache: ResponseCache) -> None:
    cache.set(key(1), {"a": 1})
    cache.delete(key(1))
    assert cache.get(key(1)) is None
    with ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, clock=Clock()) as other:
        assert other.get(key(1)) is None


def test_clear_empties_everything(cache: ResponseCache) -> None:
    for n in range(5):
        cache.set(key(n), {"n": n})
    cache.clear()
    assert all(cache.get(key(n)) is None for n in range(5))
    stats = cache.get_stats()
    assert stats["entries"] == 0 and stats["size_bytes"] == 0
    assert stats["tiers"]["memory"]["entries"] == 0


def test_warm_stores_in_one_go(tmp_path: Path, cache: ResponseCache) -> None:
    assert cache.warm((key(n), {"n": n}) for n in range(50)) == 50
    assert cache.get_stats()["entries"] == 50
    with ResponseCache(
        cache_dir=tmp_path, cache_secret=SECRET, memory_max_mb=0, clock=Clock()
    ) as other:
        hit = other.get(key(7))
        assert hit is not None and hit.value == {"n": 7}


def test_warm_validates_every_key_before_writing(cache: ResponseCache) -> None:
    with pytest.raises(InvalidArgumentError):
        cache.warm([(key(1), {}), ("bad", {})])
    assert cache.get_stats()["entries"] == 0


def test_stats_are_numbers_only(cache: ResponseCache) -> None:
    cache.set(key(1), {"a": 1})
    cache.get(key(1))
    cache.get(key(2))
    stats = cache.get_stats()
    tiers = stats.pop("tiers")
    assert set(tiers) == {"memory", "disk"}
    expected = {
        "hits",
        "misses",
        "hit_rate",
        "evictions",
        "expirations",
        "integrity_failures",
        "errors",
        "entries",
        "size_bytes",
        "max_size_bytes",
    }
    for block in (stats, *tiers.values()):
        assert set(block) == expected
        assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in block.values())
        assert 0.0 <= block["hit_rate"] <= 1.0
    assert stats["max_size_bytes"] == 100 * 1024 * 1024
    assert tiers["memory"]["max_size_bytes"] == 16 * 1024 * 1024


def test_memory_tier_can_be_turned_off(tmp_path: Path) -> None:
    with ResponseCache(cache_dir=tmp_path, cache_secret=SECRET, memory_max_mb=0) as cache:
        cache.set(key(1), {"a": 1})
        hit = cache.get(key(1))
        assert hit is not None and hit.tier == "disk"
        assert cache.get_stats()["tiers"]["memory"]["entries"] == 0


def test_ttl_expiry_in_memory_and_disk(tmp_path: Path, cache: ResponseCache, clock: Clock) -> None:
    cache.set(key(1), {"a": 1})
    clock.now += 24 * 3600 - 1
    assert cache.get(key(1)) is not None
    clock.now += 1
    assert cache.get(key(1)) is None
    stats = cache.get_stats()
    assert stats["tiers"]["memory"]["expirations"] == 1
    assert stats["tiers"]["disk"]["expirations"] == 1
    assert stats["expirations"] == 2


def test_prune_removes_expired_entries(cache: ResponseCache, clock: Clock) -> None:
    cache.set(key(1), {"old": True})
    clock.now += 23 * 3600
    cache.set(key(2), {"new": True})
    clock.now += 2 * 3600
    assert cache.prune() == 1
    assert cache.get_stats()["entries"] == 1
    assert cache.get(key(2)) is not None
