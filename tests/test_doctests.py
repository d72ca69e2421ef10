"""Docstring examples are run, so they stay true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import claude_force


def _with_examples() -> list[str]:
    # The package itself holds the doctests of the public classes re-homed to it.
    names = ["claude_force"]
    for info in pkgutil.walk_packages(claude_force.__path__, "claude_force."):
        if ".cli" in info.name or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        if any(t.examples for t in doctest.DocTestFinder().find(module)):
            names.append(info.name)
    return sorted(names)


MODULES = _with_examples()


def test_examples_exist() -> None:
    assert len(MODULES) >= 3


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
