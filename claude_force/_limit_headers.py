"""What a response's ``anthropic-ratelimit-*`` headers say, read defensively.

The service states, per bucket family, ``-limit``, ``-remaining`` and ``-reset``. Services
that speak the same protocol vary: a family may be missing, only ``-tokens-*`` (input and
output together) may be stated, values may be fractional, negative, huge or not numbers at
all. None of that may fail a request: what cannot be read is treated as not stated.

Families, as bucket kinds: ``requests``, ``input-tokens``, ``output-tokens``, and
``tokens`` (input plus output in one bucket), which is used only when neither
``input-tokens`` nor ``output-tokens`` is stated: where the service states those too, its
``tokens`` values repeat whichever of them binds. ``-reset`` is not read: the buckets refill
continuously, and a reset rounded to the second says less than ``remaining`` does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["KINDS", "PREFIX", "header_number", "stated"]

PREFIX = "anthropic-ratelimit-"
KINDS = ("requests", "input-tokens", "output-tokens", "tokens")
_SPLIT = ("input-tokens", "output-tokens")


def header_number(headers: Mapping[str, str] | None, name: str) -> float | None:
    """The finite, non-negative number a header states, or None (absent or unreadable).

    >>> header_number({"x": " 12.5 "}, "x"), header_number({"x": "inf"}, "x")
    (12.5, None)
    """
    raw = (headers or {}).get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    return max(0.0, value)


def stated(
    headers: Mapping[str, str] | None, caps: Mapping[str, int] | None = None
) -> dict[str, tuple[float | None, float | None]]:
    """Per bucket kind the headers state: ``(limit, remaining)``, either None when absent.

    A limit below 1 is not a limit. ``caps`` (configured limits) lower a stated limit, and
    the remaining level in proportion: a cap leaves the rest of the limit to others.
    """
    out: dict[str, tuple[float | None, float | None]] = {}
    for kind in KINDS:
        if kind == "tokens" and any(f"{PREFIX}{k}-limit" in (headers or {}) for k in _SPLIT):
            continue
        limit = header_number(headers, f"{PREFIX}{kind}-limit")
        remaining = header_number(headers, f"{PREFIX}{kind}-remaining")
        if limit is not None and limit < 1:
            limit = None
        if limit is None and remaining is None:
            continue
        cap = (caps or {}).get(kind)
        if limit is not None and cap is not None and cap < limit:
            if remaining is not None:
                remaining = remaining * cap / limit
            limit = float(cap)
        out[kind] = (limit, remaining)
    return out
