"""The CLI is a shell over the public API: it imports nothing private of the library."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import claude_force

CLI = Path(claude_force.__file__).parent / "cli"
ALLOWED = {"claude_force", "claude_force.testing"}


def _imported(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """``(line, what)`` for every import in ``tree``, functions' lazy imports included:
    a module by its absolute name, a name taken from a module as ``module:name``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            # Every file of the CLI is in the package claude_force.cli: `.` is it, `..` is
            # claude_force.
            base = ["claude_force", "cli"][: max(0, 3 - node.level)] if node.level else []
            module = ".".join([*base, *(node.module or "").split(".")]).strip(".")
            yield from ((node.lineno, f"{module}:{alias.name}") for alias in node.names)


def _problem(what: str) -> str | None:
    """Why importing ``what`` breaks the rule, or None when it is allowed."""
    module, _, name = what.partition(":")
    if module != "claude_force" and not module.startswith("claude_force."):
        return None  # the standard library or a third-party package
    if module.startswith("claude_force.cli.") or module == "claude_force.cli":
        return None  # the CLI's own modules
    if module not in ALLOWED:
        return f"{module} is not public"
    public = name in claude_force.__all__ or f"{module}.{name}" in ALLOWED
    if module == "claude_force" and name and not public:
        return f"claude_force.{name} is not in claude_force.__all__"
    return None


CLI_FILES = sorted(CLI.glob("*.py"))


@pytest.mark.parametrize("path", CLI_FILES, ids=lambda p: p.name)
def test_the_cli_imports_only_the_public_api(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    problems = [
        f"{path.name}:{line}: {what.replace(':', ' import ')}: {why}"
        for line, what in _imported(tree)
        if (why := _problem(what)) is not None
    ]
    assert problems == []


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("from .._files import shown", True),
        ("from .. import _files", True),
        ("import claude_force._request", True),
        ("from claude_force.cache import ResponseCache", True),
        ("from .. import describe_mode", True),
        ("def f():\n    from .._batch_io import count_input_lines", True),
        ("from .. import BatchesSettings, InvalidArgumentError", False),
        ("from ..testing import Simulator", False),
        ("from .. import testing", False),
        ("from ._common import say", False),
        ("from . import _agents", False),
        ("import click", False),
    ],
)
def test_the_import_check_tells_private_from_public(source: str, bad: bool) -> None:
    found = [_problem(what) for _, what in _imported(ast.parse(source))]
    assert any(found) is bad
