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

__all__ = ["KINDS", "PREFIX", "header_number", "limit_headers", "stated"]

PREFIX = "anthropic-ratelimit-"
KINDS = ("requests", "input-tokens", "output-tokens", "tokens")
_SPLIT = ("input-tokens", "output-tokens")
_PREFIX_LEN = len(PREFIX)
_PREFIX_BYTES = PREFIX.encode()


def header_number(headers: Mapping[str, str] | None, name: str) -> float | None:
    """The finite, non-negative number a header states, or None (absent or unreadable).

    >>> header_number({"x": " 12.5 "}, "x"), header_number({"x": "inf"}, "x")
    (12.5, None)
    """
    return _number((headers or {}).get(name))


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    return max(0.0, value)


def limit_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The ``anthropic-ratelimit-*`` headers of ``headers``, names lower-cased, in one pass.

    A response's headers (httpx's) look a name up by scanning and decoding all of them;
    reading the dozen names below that way cost more than the rest of a call's own
    bookkeeping. Their raw pairs are filtered before anything is decoded.
    """
    if not headers:
        return {}
    raw = getattr(headers, "raw", None)  # httpx: [(name, value)] as bytes
    if isinstance(raw, list):
        pairs = [
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in raw
            if isinstance(name, bytes)
            and isinstance(value, bytes)
            and name[:_PREFIX_LEN].lower() == _PREFIX_BYTES
        ]
    else:
        pairs = [(str(k).lower(), v) for k, v in headers.items()]
    found: dict[str, str] = {}
    for name, value in pairs:
        if not name.startswith(PREFIX):
            continue
        # A name stated twice with different values states neither (httpx would join them
        # into one unreadable value): picking one would be a guess.
        found[name] = value if found.get(name, value) == value else ""
    return found


def stated(
    headers: Mapping[str, str] | None, caps: Mapping[str, int] | None = None
) -> dict[str, tuple[float | None, float | None]]:
    """Per bucket kind the headers state: ``(limit, remaining)``, either None when absent.

    A limit below 1 is not a limit. ``caps`` (configured limits) lower a stated limit, and
    the remaining level in proportion: a cap leaves the rest of the limit to others.
    """
    found = limit_headers(headers)
    read: dict[str, list[float | None]] = {}
    for name, raw in found.items():
        kind, _, field = name[_PREFIX_LEN:].rpartition("-")
        if field == "limit":
            read.setdefault(kind, [None, None])[0] = _number(raw)
        elif field == "remaining":
            read.setdefault(kind, [None, None])[1] = _number(raw)
    if any(f"{PREFIX}{k}-limit" in found for k in _SPLIT):
        read.pop("tokens", None)
    out: dict[str, tuple[float | None, float | None]] = {}
    for kind in KINDS:
        pair = read.get(kind)
        if pair is None:
            continue
        limit, remaining = pair
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
