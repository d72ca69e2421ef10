"""How the simulator counts tokens and finds prompt-cache breakpoints (pure functions).

Token approximation
-------------------
The simulator runs no tokenizer. It counts a text's tokens by script, so that a budget which
assumes four characters a token visibly undershoots on Chinese or Russian, as it does on the
real service:

=============================================  ====================  ==================
characters                                     characters per token  UTF-8 bytes each
=============================================  ====================  ==================
ASCII (English, code, JSON, hex)               4                     1
CJK: Han, Hiragana, Katakana, Hangul           1                     3 (4 beyond BMP)
any other (Cyrillic, Greek, Arabic, emoji...)  2                     2 to 4
=============================================  ====================  ==================

* the tokens of a text = the sum of those shares, rounded up once: 0 for ``""``, at least 1
  otherwise, and never more than the text's UTF-8 bytes (each character's share is below its
  byte count), just as a byte-level BPE token always covers at least one byte;
* input tokens = the tokens of every tool definition (its JSON) + every system text block +
  every message content block (a text block by its text, any other block by its JSON);
  ``cache_control`` markers are left out of every JSON counted;
* output tokens = one per word of the reply (each word with its trailing space).

Prompt caching
--------------
Blocks are read in the order the real service reads them: ``tools``, then ``system`` blocks,
then the content blocks of each message. A block may carry
``cache_control: {"type": "ephemeral", "ttl": "5m" | "1h"}`` (ttl defaults to ``"5m"``); each
such block ends a cacheable prefix (a *breakpoint*, at most 4 per request). A prefix is cached
only when it holds at least the model's minimum cacheable length:

======================  =============================
model name contains      minimum cacheable tokens
======================  =============================
``haiku``                2048
anything else            1024
======================  =============================

``Simulator(min_cacheable_tokens=N)`` replaces the whole table with ``N``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CACHE_TTL_SECONDS",
    "DEFAULT_MIN_CACHEABLE_TOKENS",
    "MAX_CACHE_BREAKPOINTS",
    "MIN_CACHEABLE_TOKENS_BY_MODEL",
    "Breakpoint",
    "PromptShape",
    "canonical_bytes",
    "canonical_json",
    "eligible_breakpoints",
    "min_cacheable_tokens",
    "prompt_shape",
    "text_tokens",
]

#: First matching substring of the model name wins; the table is data so it can follow the API.
MIN_CACHEABLE_TOKENS_BY_MODEL: tuple[tuple[str, int], ...] = (("haiku", 2048),)
DEFAULT_MIN_CACHEABLE_TOKENS = 1024
CACHE_TTL_SECONDS: Mapping[str, float] = {"5m": 300.0, "1h": 3600.0}
MAX_CACHE_BREAKPOINTS = 4


def canonical_json(value: object) -> str:
    """The one JSON spelling used for hashing and counting: sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_bytes(value: object) -> bytes:
    """:func:`canonical_json` as bytes; lone surrogates (legal in JSON escapes) pass through."""
    return canonical_json(value).encode("utf-8", "surrogatepass")


# Runs of characters counted as one token each: Hangul Jamo, Hiragana and Katakana, Hangul
# compatibility Jamo, Katakana extensions, CJK extension A, unified ideographs, Hangul
# syllables, compatibility ideographs, halfwidth Katakana, and the supplementary ideographic
# planes (extensions B and later).
_CJK_RUNS = re.compile(
    r"[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf"
    r"\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003ffff]+"
)
_ASCII_RUNS = re.compile(r"[\x00-\x7f]+")


def text_tokens(text: str) -> int:
    """A text's tokens by script (see the table above): 0 for ``""``, at least 1 otherwise.

    >>> text_tokens("abcdefgh"), text_tokens("中文"), text_tokens("мир")
    (2, 2, 2)
    """
    if text.isascii():
        return (len(text) + 3) // 4
    # Counted in quarter tokens: ASCII 1, CJK 4, anything else 2; rounded up once.
    cjk = len(text) - len(_CJK_RUNS.sub("", text))
    ascii_chars = len(text) - len(_ASCII_RUNS.sub("", text))
    other = len(text) - cjk - ascii_chars
    return (ascii_chars + 2 * other + 4 * cjk + 3) // 4


def min_cacheable_tokens(model: str, override: int | None = None) -> int:
    """The shortest prefix (in tokens) that ``model`` caches; ``override`` wins when given."""
    if override is not None:
        return override
    lowered = model.lower()
    for fragment, minimum in MIN_CACHEABLE_TOKENS_BY_MODEL:
        if fragment in lowered:
            return minimum
    return DEFAULT_MIN_CACHEABLE_TOKENS


@dataclass(frozen=True)
class Breakpoint:
    """A block with ``cache_control``: the prefix it ends, its size and its lifetime."""

    prefix_tokens: int
    key: str
    ttl: str


@dataclass(frozen=True)
class PromptShape:
    """What the cache and the usage numbers need from a request: its size and breakpoints."""

    input_tokens: int
    breakpoints: tuple[Breakpoint, ...]


def _without_cache_control(block: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k != "cache_control"}


def _block_tokens(block: Mapping[str, Any]) -> int:
    text = block.get("text")
    if block.get("type") == "text" and isinstance(text, str):
        return text_tokens(text)
    return text_tokens(canonical_json(_without_cache_control(block)))


def _ordered_blocks(body: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """Every block in reading order as (section for the hash, JSON path for errors, block)."""
    blocks: list[tuple[str, str, Mapping[str, Any]]] = []
    for i, tool in enumerate(body.get("tools") or ()):
        blocks.append(("tool", f"tools.{i}", tool))
    system = body.get("system")
    if isinstance(system, str):
        if system:
            blocks.append(("system", "system", {"type": "text", "text": system}))
    elif system:
        blocks.extend(("system", f"system.{i}", block) for i, block in enumerate(system))
    for m, message in enumerate(body["messages"]):
        content = message["content"]
        # The message index keeps two one-block messages apart from one two-block message.
        role = f"{message['role']}.{m}"
        if isinstance(content, str):
            blocks.append((role, f"messages.{m}.content", {"type": "text", "text": content}))
        else:
            blocks.extend(
                (role, f"messages.{m}.content.{i}", block) for i, block in enumerate(content)
            )
    return blocks


def _marker_problem(path: str, marker: object) -> str | None:
    """A message naming a bad ``cache_control`` marker, or None when it is valid."""
    if not isinstance(marker, Mapping) or marker.get("type") != "ephemeral":
        return f'{path}.cache_control: must be {{"type": "ephemeral"}}, got {marker!r}'
    ttl = marker.get("ttl", "5m")
    if ttl not in CACHE_TTL_SECONDS:
        return f"{path}.cache_control.ttl: must be '5m' or '1h', got {ttl!r}"
    return None


def prompt_shape(body: Mapping[str, Any]) -> PromptShape | str:
    """Count a validated request's input tokens and find its cache breakpoints.

    The breakpoint key hashes the model and every block up to it (markers left out), so the
    same prefix under another model, or with one changed block, is another cache entry.
    Returns a message naming the problem when a ``cache_control`` marker is invalid.
    """
    digest = hashlib.sha256(canonical_bytes(body["model"]))
    total = 0
    breakpoints: list[Breakpoint] = []
    for section, path, block in _ordered_blocks(body):
        total += _block_tokens(block)
        digest.update(canonical_bytes([section, _without_cache_control(block)]))
        marker = block.get("cache_control")
        if marker is None:
            continue
        problem = _marker_problem(path, marker)
        if problem is not None:
            return problem
        ttl = str(marker.get("ttl", "5m"))
        breakpoints.append(Breakpoint(prefix_tokens=total, key=digest.hexdigest(), ttl=ttl))
    if len(breakpoints) > MAX_CACHE_BREAKPOINTS:
        return (
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(breakpoints)}; remove cache_control from the earlier blocks."
        )
    return PromptShape(input_tokens=total, breakpoints=tuple(breakpoints))


def eligible_breakpoints(shape: PromptShape, minimum: int) -> Sequence[Breakpoint]:
    """The breakpoints whose prefix is long enough to cache (always a suffix of the list)."""
    return [bp for bp in shape.breakpoints if bp.prefix_tokens >= minimum]
