"""Small values shared by the tiers: the miss sentinel, a found entry, and counters."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

from .._errors import InvalidArgumentError

__all__ = ["MISS", "Found", "Miss", "Tier", "TierStats", "check_key"]

Tier = Literal["memory", "disk", "redis"]

_KEY = re.compile(r"[0-9a-f]{16,128}")


class Miss(enum.Enum):
    """The type of :data:`MISS`; an enum so type checkers can narrow on ``is MISS``."""

    MISS = "MISS"


# A tier returns MISS, never None, so that an empty dict value is still a hit.
MISS: Final = Miss.MISS


class Found(NamedTuple):
    """An entry a tier returned: the value (freshly parsed), when it was made, its JSON.

    ``payload`` is the verified JSON the value was parsed from, so a hit can be copied to
    the memory tier as is; ``envelope`` is the signed bytes when the tier had them (disk,
    Redis), so a hit can be copied to another tier without signing again. A NamedTuple
    because one is built on every hit.
    """

    value: dict[str, Any]
    created_at: float
    payload: bytes
    envelope: bytes | None = None


@dataclass(slots=True)
class TierStats:
    """Counters of one tier in this process."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expirations: int = 0
    integrity_failures: int = 0
    errors: int = 0

    def as_dict(self, *, entries: int, size_bytes: int, max_size_bytes: int) -> dict[str, Any]:
        lookups = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / lookups if lookups else 0.0,
            "evictions": self.evictions,
            "expirations": self.expirations,
            "integrity_failures": self.integrity_failures,
            "errors": self.errors,
            "entries": entries,
            "size_bytes": size_bytes,
            "max_size_bytes": max_size_bytes,
        }


def check_key(key: object) -> str:
    """Return ``key`` if it is 16 to 128 lowercase hex characters, else raise."""
    if type(key) is str and _KEY.fullmatch(key):
        return key
    shown = repr(key) if len(repr(key)) <= 80 else repr(key)[:77] + "..."
    raise InvalidArgumentError(
        f"cache key {shown} is not 16-128 lowercase hex characters; "
        "pass the hex SHA-256 digest of the request (cache_key(request))"
    )
