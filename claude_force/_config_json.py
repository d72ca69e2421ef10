"""Reading a ``claude.json`` document safely: repeated keys remembered, long numbers and deep
nesting caught before they can hang or crash the loader, the fix for a comment or a trailing
comma, and every problem that makes a document unsafe to validate, with its JSON path."""

from __future__ import annotations

import re
from typing import Any

from ._config_text import key_path

__all__ = [
    "MAX_DEPTH",
    "TOO_DEEP",
    "document_problems",
    "line_column",
    "object_hook",
    "parse_int",
    "syntax_hint",
    "too_deep_at",
]

MAX_DEPTH = 64
# The smallest limit Python's int() may be configured with (sys.set_int_max_str_digits).
MAX_DIGITS = 640
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_PROBLEM = (
    "contains an unpaired surrogate escape (\\ud800-\\udfff), which is not valid Unicode; "
    "fix or remove the escape"
)
TOO_DEEP = f"nested more than {MAX_DEPTH} levels deep; flatten it"


class _JsonObject(dict[str, Any]):
    """A decoded JSON object that remembers keys the file repeated (json keeps the last one)."""

    duplicates: tuple[str, ...] = ()


def object_hook(pairs: list[tuple[str, Any]]) -> _JsonObject:
    obj = _JsonObject(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        repeated: list[str] = []
        for key, _ in pairs:
            if key in seen:
                repeated.append(key)
            seen.add(key)
        obj.duplicates = tuple(repeated)
    return obj


class _LongNumber:
    """An integer literal too long to convert; reported with its JSON path, never used."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


def parse_int(text: str) -> int | _LongNumber:
    # int() refuses long literals with ValueError (and takes quadratic time below the limit).
    if len(text) > MAX_DIGITS:
        return _LongNumber(len(text.lstrip("-")))
    return int(text)


def syntax_hint(text: str, pos: int) -> str:
    """The fix for the two things editors allow and JSON does not: comments, trailing commas."""
    if text.startswith(("//", "/*"), pos):
        return '; JSON has no comments: remove it, or keep the note as a "_comment" key'
    if text[:pos].rstrip().endswith(",") and text.startswith(("}", "]"), pos):
        return "; JSON allows no comma after the last item: remove it"
    return ""


_BRACKETS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def too_deep_at(text: str) -> int:
    """The offset of the first bracket nested deeper than the limit (0 if none is)."""
    depth = 0
    for match in _BRACKETS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > MAX_DEPTH:
                return match.start()
        elif token in ("]", "}"):
            depth -= 1
    return 0


def line_column(text: str, offset: int) -> tuple[int, int]:
    return text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)


def document_problems(raw: object) -> list[str]:
    """What makes a document unsafe to validate: deep nesting, huge numbers, broken Unicode.

    Iterative, so no document can exhaust the stack; checked before any field is looked at.
    """
    problems: list[str] = []
    pending: list[tuple[object, str, int]] = [(raw, "", 0)]
    while pending:
        node, path, depth = pending.pop()
        where = path or "(top level)"
        if isinstance(node, _LongNumber):
            problems.append(
                f"{where}: a number of {node.digits} digits is too large; "
                f"use one of at most {MAX_DIGITS} digits"
            )
        elif isinstance(node, str) and _SURROGATE.search(node):
            problems.append(f"{where}: {_SURROGATE_PROBLEM}")
        elif isinstance(node, (dict, list)):
            if depth >= MAX_DEPTH:
                problems.append(f"{where}: {TOO_DEEP}")
                continue
            children: list[tuple[object, str, int]] = []
            for key, child in node.items() if isinstance(node, dict) else enumerate(node):
                child_path = key_path(path, key) if isinstance(key, str) else f"{path}[{key}]"
                if isinstance(key, str) and _SURROGATE.search(key):
                    problems.append(f"{child_path}: the key {_SURROGATE_PROBLEM}")
                children.append((child, child_path, depth + 1))
            pending.extend(reversed(children))
    return problems
