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
import re
from collections.abc import Mapping
from typing import Any

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


# The headers ``stated`` reads, by lower-cased name: (bucket kind, 0 for the limit or 1 for
# the remaining level). ``-reset`` and other names are not read.
_READ = {
    f"{PREFIX}{kind}-{field}": (kind, i)
    for kind in KINDS
    for i, field in enumerate(("limit", "remaining"))
}
_READ_BYTES = {name.encode(): slot for name, slot in _READ.items()}
_READ_NAMES = frozenset(_READ_BYTES)
_SPLIT_LIMITS = tuple((kind, 0) for kind in _SPLIT)


def _read_values(headers: Mapping[str, str]) -> dict[tuple[str, int], object]:
    """The values of the headers in :data:`_READ`, by slot, in one pass (raw bytes from
    httpx): what :func:`limit_headers` finds, less the names nobody reads. Settling every
    answer reads these: a name is looked up as sent, and lower-cased only when that misses."""
    found: dict[tuple[str, int], object] = {}
    raw = getattr(headers, "raw", None)  # httpx: [(name, value)] as bytes
    if isinstance(raw, list) and (plain := _read_plain(raw)) is not None:
        return plain
    if isinstance(raw, list):
        table = _READ_BYTES
        for name, value in raw:
            if not (isinstance(name, bytes) and isinstance(value, bytes)):
                continue
            slot = table.get(name)
            if slot is None:
                if name[:_PREFIX_LEN].lower() != _PREFIX_BYTES:
                    continue
                slot = table.get(name.lower())
                if slot is None:
                    continue
            # A name stated twice with different values states neither: see limit_headers.
            found[slot] = value if found.get(slot, value) == value else b""
    else:
        for key, text in headers.items():
            slot = _READ.get(str(key).lower())
            if slot is not None:
                found[slot] = text if found.get(slot, text) == text else ""
    return found


# A rate-limit name (its prefix in any case) with an upper-case letter anywhere in it, at the
# start of a line of joined names.
_UNUSUAL_NAME = re.compile(rb"\n(?=(?i:" + re.escape(_PREFIX_BYTES) + rb"))[^\n]*[A-Z]")


def _read_plain(raw: list[Any]) -> dict[tuple[str, int], object] | None:
    """:func:`_read_values` of raw pairs in the usual case, looked up in C: every name once,
    the rate-limit names in lower case (as the service sends them). None otherwise (a name
    twice, other cases, not bytes): then the pairs are read one by one."""
    try:
        by_name = dict(raw)
        names = b"\n" + b"\n".join(by_name)
    except (TypeError, ValueError):
        return None
    if len(by_name) != len(raw) or _UNUSUAL_NAME.search(names) is not None:
        return None
    found: dict[tuple[str, int], object] = {
        _READ_BYTES[name]: by_name[name] for name in _READ_NAMES.intersection(by_name)
    }
    for value in found.values():
        if not isinstance(value, bytes):
            return None
    return found


def _value(raw: object) -> float | None:
    """:func:`_number` of a raw value, bytes read as latin-1 (as httpx decodes them)."""
    if raw is None:
        return None
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        # float() reads ASCII bytes as their text; other bytes only as decoded text can be
        # (a no-break space around the number, say).
        if not isinstance(raw, bytes):
            return None
        return _number(raw.decode("latin-1"))
    if not math.isfinite(value):
        return None
    return value if value > 0.0 else 0.0


def stated(
    headers: Mapping[str, str] | None, caps: Mapping[str, int] | None = None
) -> dict[str, tuple[float | None, float | None]]:
    """Per bucket kind the headers state: ``(limit, remaining)``, either None when absent.

    A limit below 1 is not a limit. ``caps`` (configured limits) lower a stated limit, and
    the remaining level in proportion: a cap leaves the rest of the limit to others.
    """
    if not headers:
        return {}
    found = _read_values(headers)
    if not found:
        return {}
    # ``tokens`` repeats input or output where those are stated (even unreadably).
    split = _SPLIT_LIMITS[0] in found or _SPLIT_LIMITS[1] in found
    out: dict[str, tuple[float | None, float | None]] = {}
    for kind in KINDS:
        if split and kind == "tokens":
            continue
        raw_limit, raw_left = found.get((kind, 0)), found.get((kind, 1))
        if raw_limit is None and raw_left is None:
            continue
        limit, remaining = _value(raw_limit), _value(raw_left)
        if limit is not None and limit < 1:
            limit = None
        if limit is None and remaining is None:
            continue
        cap = caps.get(kind) if caps else None
        if limit is not None and cap is not None and cap < limit:
            if remaining is not None:
                remaining = remaining * cap / limit
            limit = float(cap)
        out[kind] = (limit, remaining)
    return out
