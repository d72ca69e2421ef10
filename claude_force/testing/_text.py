"""The simulator's deterministic reply text (pure functions).

The reply is derived from a SHA-256 of the canonical JSON of the request (model, system,
messages, tools and every sampling parameter). ``max_tokens``, ``stream``, ``metadata``,
``service_tier``, ``speed``, ``inference_geo`` and ``cache_control`` markers are left out, as
they do not change what a real model writes: a smaller ``max_tokens`` cuts the same text
shorter. Identical requests get identical text; any other change gives another text.

The reply opens with a sentence quoting the first words of the last user message, followed by
pseudo-words; it is 20 to 120 words long (chosen by the hash), one output token per word.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._tokens import canonical_bytes

__all__ = ["MAX_WORDS", "MIN_WORDS", "Reply", "render_reply", "reply_digest", "reply_words"]

MIN_WORDS = 20
MAX_WORDS = 120
_QUOTED_WORDS = 6
_IGNORED_FIELDS = frozenset(
    {"max_tokens", "stream", "metadata", "service_tier", "speed", "inference_geo"}
)
# 32 syllables: one byte picks one, so the words need no other source of randomness.
_SYLLABLES = (
    "ka", "lo", "mi", "ren", "tu", "sa", "vel", "or", "ni", "da", "pe", "ri", "gon", "ta",
    "lu", "me", "an", "ci", "do", "fa", "ge", "hi", "jo", "ke", "la", "mo", "nu", "pa",
    "quo", "ro", "si", "te",
)  # fmt: skip


def _strip_cache_control(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip_cache_control(v) for v in value]
    return value


def reply_digest(body: Mapping[str, Any]) -> bytes:
    """The SHA-256 that decides the reply: the request minus fields that don't change it."""
    kept = {k: v for k, v in body.items() if k not in _IGNORED_FIELDS}
    return hashlib.sha256(canonical_bytes(_strip_cache_control(kept))).digest()


def _last_user_text(body: Mapping[str, Any]) -> str:
    for message in reversed(body.get("messages") or ()):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return " ".join(
            b["text"]
            for b in content or ()
            if b.get("type") == "text" and isinstance(b.get("text"), str)
        )
    return ""


def _expand(digest: bytes, size: int) -> bytes:
    """``size`` deterministic bytes expanded from the digest (SHA-256 in counter mode)."""
    blocks = (size + 31) // 32
    return b"".join(hashlib.sha256(digest + i.to_bytes(4, "big")).digest() for i in range(blocks))


def _opening(body: Mapping[str, Any]) -> list[str]:
    words = _last_user_text(body).split()
    if not words:
        return ["Simulated", "reply."]
    quoted = " ".join(words[:_QUOTED_WORDS]).replace('"', "'")
    if len(words) > _QUOTED_WORDS:
        quoted += "..."
    return f'Simulated reply to "{quoted}".'.split()


def reply_words(body: Mapping[str, Any], digest: bytes) -> list[str]:
    """All the words of the reply to ``body`` before any ``max_tokens`` cut."""
    count = MIN_WORDS + int.from_bytes(digest[:2], "big") % (MAX_WORDS - MIN_WORDS + 1)
    words = _opening(body)[:count]
    # Five bytes per word: sentence length, syllable count and up to three syllables.
    stream = _expand(digest, 5 * count)
    sentence_left = 0
    for at in range(0, 5 * (count - len(words)), 5):
        if sentence_left == 0:
            sentence_left = 4 + stream[at] % 11  # sentences of 4 to 14 words
        syllables = stream[at + 2 : at + 3 + stream[at + 1] % 3]
        word = "".join([_SYLLABLES[b % len(_SYLLABLES)] for b in syllables])
        if words[-1].endswith("."):
            word = word.capitalize()
        sentence_left -= 1
        words.append(word + "." if sentence_left == 0 else word)
    if not words[-1].endswith("."):
        words[-1] += "."
    return words


@dataclass(frozen=True, slots=True)
class Reply:
    """The text sent back, its output tokens and why it stopped."""

    text: str
    output_tokens: int
    stop_reason: str


def render_reply(words: list[str], max_tokens: int) -> Reply:
    """Join the words, cut at ``max_tokens`` (one token per word) like the real API."""
    if len(words) > max_tokens:
        return Reply(" ".join(words[:max_tokens]), max_tokens, "max_tokens")
    return Reply(" ".join(words), len(words), "end_turn")
