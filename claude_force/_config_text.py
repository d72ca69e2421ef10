"""How ``claude.json`` problems are worded: names, JSON paths, values quoted and cut short.

Shared by the loader (``_config``), its workflow section (``_config_workflows``) and its
rate-limit section (``_config_limits``), so every problem reads ``"<json path>: <message>"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Letters and digits of any script (\w is Unicode-aware), so "revisor-código" and "审查" are
# names; single spaces between words, as a dict key of Claude Force 1.x could have them.
NAME_RE = re.compile(r"[^\W_][\w.-]*(?: [\w.-]+)*")
NAME_MAX = 64
NAME_RULE = (
    "names are 1-64 letters, digits, '_', '.' or '-' (single spaces between words), "
    "starting with a letter or digit"
)
MAX_TOKENS_LIMIT = 128_000

MAX_SHOWN = 50  # problems listed in one error; the count of the rest is given
SHOWN_CHARS = 60  # a value or key quoted in a message is cut to this length


def name_problem(kind: str, name: object) -> str | None:
    if not isinstance(name, str):
        return f"{kind} name must be a string, got {json_type(name)}"
    if len(name) <= NAME_MAX and NAME_RE.fullmatch(name):
        return None
    fix = re.sub(r"[^\w.-]+", "-", name[:256]).lstrip("_.-")[:NAME_MAX].rstrip("-")
    hint = f"; rename it, e.g. {fix!r}" if fix and NAME_RE.fullmatch(fix) else ""
    return f"invalid {kind} name {show_text(name)}: {NAME_RULE}{hint}"


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def key_path(parent: str, key: str) -> str:
    # Plain names read as `agents.reviewer`; anything odd is quoted so the path stays unambiguous.
    if len(key) <= SHOWN_CHARS and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", key):
        return f"{parent}.{key}" if parent else key
    if len(key) <= SHOWN_CHARS:
        return f"{parent}[{json.dumps(key)}]"
    return f'{parent}[{json.dumps(key[:SHOWN_CHARS])[:-1]}..."]'


def show_text(text: str) -> str:
    """``repr`` of a user's string, cut to a readable length."""
    if len(text) <= SHOWN_CHARS:
        return repr(text)
    return f"{text[:SHOWN_CHARS]!r}... ({len(text)} characters)"


def show(value: object) -> str:
    """A JSON value as it appears in a message, cut to a readable length."""
    text = json.dumps(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}..."


def report_duplicates(obj: Mapping[str, Any], path: str, problems: list[str]) -> None:
    for key in getattr(obj, "duplicates", ()):
        problems.append(f"{path}: duplicate key {key!r}; JSON keeps only the last one, remove one")


def is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def expected_text(value: object) -> str:
    return f"expected a non-empty string, got {json_type(value)} {show(value)}"


def check_max_tokens(v: object) -> str | None:
    if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_TOKENS_LIMIT:
        return None
    return f"expected an integer from 1 to {MAX_TOKENS_LIMIT}, got {show(v)}"


def check_temperature(v: object) -> str | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1:
        return None
    return f"expected a number from 0 to 1, got {show(v)}"


def check_text(v: object) -> str | None:
    return None if is_text(v) else expected_text(v)


def is_comment_key(key: str) -> bool:
    """``_comment``, ``$schema``, ``#note``, ``//``: notes beside agents and workflows, never names.

    None of them can be a valid name, so skipping them loses nothing.
    """
    return key.startswith(("_", "$", "#", "//"))


@dataclass
class Confined:
    """Problems that make only one agent or workflow unusable, not the whole file.

    A file missing on this machine, or a workflow naming an agent that is not defined: Claude
    Force 1.x loaded such a folder and failed only when that agent or workflow ran, so a
    config whose every problem is of this kind still loads. ``marks`` maps the index of such
    a problem in the shared list to ``(section, name)``; ``notes`` are warnings to log.
    """

    marks: dict[int, tuple[str, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Agents whose contract file is missing: (the whole warning, "'agent' (path)").
    contracts: list[tuple[str, str]] = field(default_factory=list)

    def contract_notes(self) -> list[str]:
        """One warning for a missing contract; one line naming them all for several (an
        upstream 1.x layout lists many that are not there, and every command loads it)."""
        if len(self.contracts) <= 1:
            return [whole for whole, _ in self.contracts]
        named = ", ".join(short for _, short in self.contracts)
        return [
            f"{len(self.contracts)} agents run without their contract, the files are missing: "
            f"{named}. Create the files or remove 'contract'"
        ]

    def add(self, problems: list[str], section: str, name: str, message: str) -> None:
        self.marks[len(problems)] = (section, name)
        problems.append(message)

    def split(self, problems: list[str]) -> dict[str, dict[str, str]] | None:
        """Per section, name -> its problems joined; None while any problem is not confined."""
        if any(i not in self.marks for i in range(len(problems))):
            return None
        found: dict[str, dict[str, str]] = {"agents": {}, "workflows": {}}
        for i, (section, name) in sorted(self.marks.items()):
            known = found[section].get(name)
            found[section][name] = problems[i] if known is None else f"{known}; {problems[i]}"
        return found
