"""The client-side rate-limit state as one compact line for the CLI's progress display."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["rate_limit_line"]

# The bucket kinds of ``rate_limit_state``, in the order shown, with their short labels;
# ``tokens`` (input and output in one bucket) appears only where the split ones do not.
_SHORT = {"requests": "req", "input-tokens": "in", "output-tokens": "out", "tokens": "tok"}


def rate_limit_line(state: Mapping[str, Any]) -> str:
    """A transport's :meth:`rate_limit_state` as one compact line for a progress display:
    ``limits sonnet: req 48/50 · in 31k/40k (others 30%) · out 7k/8k · concurrency 10``.

    Each bucket shows what is available now of its per-minute limit, and the share of the
    refill others are seen to take when it is noticeable; ``concurrency`` is the gate's
    limit (``5/10`` once overload has lowered it). Empty before anything is known.
    """
    parts = []
    classes: Mapping[str, Any] = state.get("classes") or {}
    for name, cls in classes.items():
        if cls.get("state") == "unknown":
            parts.append(f"{name}: learning")
            continue
        buckets: Mapping[str, Any] = cls.get("buckets") or {}
        shown = []
        for kind, label in _SHORT.items():
            bucket = buckets.get(kind)
            if bucket is None:
                continue
            text = f"{label} {_count(bucket['level'])}/{_count(bucket['limit'])}"
            others = float(bucket.get("unseen_share", 0.0))
            if others >= 0.05:
                text += f" (others {others:.0%})"
            shown.append(text)
        if shown:
            parts.append(f"{name}: " + " · ".join(shown))
    if not parts:
        return ""
    limit, most = state.get("concurrency_limit"), state.get("max_concurrent")
    concurrency = f"{limit}" if limit == most else f"{limit}/{most}"
    return "limits " + "; ".join(parts) + f" · concurrency {concurrency}"


def _count(value: float) -> str:
    """48, 950, 31k, 1.5k, 2M: short, and never a negative level."""
    value = max(0.0, float(value))
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size * 0.9995:  # 999,999 reads 1M, not 1000k
            scaled = value / size
            return (
                f"{scaled:.1f}".rstrip("0").rstrip(".") + unit
                if scaled < 10
                else f"{scaled:.0f}{unit}"
            )
    return f"{value:.0f}"
