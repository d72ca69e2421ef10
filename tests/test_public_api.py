"""The public surface: derived from the modules, so it cannot drift."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import types
import typing
from typing import Any

import pytest

import claude_force
from claude_force import AgentOrchestrator, AsyncAgentOrchestrator, OrchestratorOptions


def _public_names(module: types.ModuleType) -> set[str]:
    """Names a user can import that are not submodules or ``annotations``."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }


def test_all_lists_every_public_name_sorted() -> None:
    assert set(claude_force.__all__) == _public_names(claude_force)
    assert claude_force.__all__ == sorted(claude_force.__all__, key=lambda n: (not n.isupper(), n))


def test_internal_helpers_are_not_exported() -> None:
    for name in ("retry_delay", "should_retry", "Request", "SystemPrompt", "RequestBuilder"):
        assert name not in claude_force.__all__


def test_public_classes_say_they_live_in_claude_force() -> None:
    classes = [getattr(claude_force, n) for n in claude_force.__all__]
    for cls in (c for c in classes if isinstance(c, type)):
        assert cls.__module__ == "claude_force", cls


def test_one_exception_root() -> None:
    errors = [getattr(claude_force, n) for n in claude_force.__all__]
    for cls in (e for e in errors if isinstance(e, type) and issubclass(e, BaseException)):
        assert issubclass(cls, claude_force.ClaudeForceError), cls
    assert issubclass(claude_force.ConfigError, claude_force.UsageError)
    assert issubclass(claude_force.APIError, claude_force.RunError)
    assert issubclass(claude_force.BudgetExceeded, claude_force.RunError)


def _public_members(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") or name in ("__enter__", "__exit__")
    }


def _params(fn: Any) -> list[tuple[str, Any, Any]]:
    sig = inspect.signature(fn)
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


ASYNC_MEMBERS = sorted(
    name for name in _public_members(AsyncAgentOrchestrator) if not name.startswith("_")
)


@pytest.mark.parametrize("name", ASYNC_MEMBERS)
def test_sync_door_offers_every_async_member(name: str) -> None:
    async_member = inspect.getattr_static(AsyncAgentOrchestrator, name)
    assert hasattr(AgentOrchestrator, name), f"AgentOrchestrator lacks {name}"
    sync_member = inspect.getattr_static(AgentOrchestrator, name)
    if isinstance(async_member, property):
        assert isinstance(sync_member, property), name
        return
    assert callable(sync_member), name
    assert _params(sync_member) == _params(async_member), name


def test_sync_door_has_the_seeds_aliases() -> None:
    # run_agent keeps 1.x's failed result for an undefined agent (tests/test_compat_1x.py).
    assert callable(AgentOrchestrator.run_agent)
    assert AgentOrchestrator.run_multiple is AgentOrchestrator.execute_multiple


def test_instance_attributes_of_the_core_are_reachable_from_the_sync_door(
    tmp_path: Any,
) -> None:
    claude_force.init_project(tmp_path)
    core = AsyncAgentOrchestrator(tmp_path / ".claude/claude.json", api_key="k")
    door = AgentOrchestrator(tmp_path / ".claude/claude.json", api_key="k")
    public = [n for n in vars(core) if not n.startswith("_")]
    assert public, "the core has public attributes"
    for name in public:
        assert hasattr(door, name), f"AgentOrchestrator lacks attribute {name}"
    door.close()


def test_constructor_keywords_are_the_option_fields() -> None:
    sig = inspect.signature(AsyncAgentOrchestrator.__init__)
    keywords = {p.name: p.default for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}
    fields = {f.name: f.default for f in dataclasses.fields(OrchestratorOptions)}
    assert keywords == fields


def test_public_attributes_have_public_types(tmp_path: Any) -> None:
    claude_force.init_project(tmp_path)
    orch = AsyncAgentOrchestrator(tmp_path / ".claude/claude.json", api_key="k")
    exported = {getattr(claude_force, n) for n in claude_force.__all__}
    for name, value in vars(orch).items():
        if name.startswith("_") or value is None or isinstance(value, (str, int, float)):
            continue
        if type(value).__module__ in ("pathlib", "posixpath"):
            continue
        assert type(value) in exported, f"{name}: {type(value)} is not public"


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("claude_force.async_orchestrator", {"AsyncAgentOrchestrator", "AsyncAgentResult"}),
        ("claude_force.orchestrator", {"AgentOrchestrator", "AgentResult"}),
        ("claude_force.response_cache", {"ResponseCache"}),
    ],
)
def test_seed_module_paths_reexport_the_public_names(module: str, names: set[str]) -> None:
    mod = importlib.import_module(module)
    assert set(mod.__all__) == names == _public_names(mod)
    for name in names:
        public = name.replace("AsyncAgentResult", "AgentResult")
        assert getattr(mod, name) is getattr(claude_force, public)


def test_the_batch_run_takes_and_calls_back_with_public_types() -> None:
    # Resolved against the package: a name only imported for type checkers is public there.
    run = typing.get_type_hints(claude_force.run_batch_file, localns=vars(claude_force))
    settings = typing.get_type_hints(claude_force.BatchesSettings)
    assert claude_force.BatchesSettings in typing.get_args(run["batches"])
    callback = typing.get_args(settings["on_progress"])[0]  # Callable[[BatchProgress], None]
    assert typing.get_args(callback)[0] == [claude_force.BatchProgress]
    # The CLI's defaults come from the class, not from private module constants.
    assert claude_force.BatchesSettings().poll_initial == claude_force.BatchesSettings.POLL_INITIAL
    assert claude_force.BatchesSettings().poll_max == claude_force.BatchesSettings.POLL_MAX


def test_type_hints_of_public_classes_resolve() -> None:
    for name in claude_force.__all__:
        value = getattr(claude_force, name)
        if isinstance(value, type):
            assert isinstance(typing.get_type_hints(value), dict), name


def _classes_in(hint: object) -> typing.Iterator[type]:
    """Every class a type hint names, through unions, generics and aliases."""
    if isinstance(hint, type) and not typing.get_args(hint):
        yield hint
    origin = typing.get_origin(hint)
    if isinstance(origin, type):
        yield origin
    for arg in typing.get_args(hint):
        yield from _classes_in(arg)


def _every_name() -> dict[str, Any]:
    """The globals of every module of the package: names imported only for type checkers
    resolve through the module that defines them."""
    import pkgutil

    names: dict[str, Any] = {}
    for info in pkgutil.walk_packages(claude_force.__path__, "claude_force."):
        if ".cli" not in info.name:
            names.update(vars(importlib.import_module(info.name)))
    return names


def _public_signatures() -> typing.Iterator[tuple[str, dict[str, Any]]]:
    """(where, resolved hints) for each public function, and each public method, property
    and annotated attribute of each public class."""
    every = _every_name()

    def hints_of(obj: Any) -> dict[str, Any]:
        return typing.get_type_hints(obj, localns=every)

    for name in claude_force.__all__:
        value = getattr(claude_force, name)
        if inspect.isfunction(value):
            yield name, hints_of(value)
        if not isinstance(value, type):
            continue
        hints = hints_of(value)
        yield name, {k: v for k, v in hints.items() if not k.startswith("_")}
        for attr, member in vars(value).items():
            if attr.startswith("_") and attr != "__init__":
                continue
            func = member.fget if isinstance(member, property) else member
            func = getattr(func, "__func__", func)
            if inspect.isfunction(func):
                yield f"{name}.{attr}", hints_of(func)


def test_public_signatures_name_only_public_classes_of_the_package() -> None:
    # Derived from the module: a public method that takes or returns one of the package's
    # classes must take or return an exported one (``__module__ == "claude_force"``).
    private = sorted(
        f"{where}: {cls.__module__}.{cls.__qualname__}"
        for where, hints in _public_signatures()
        for hint in hints.values()
        for cls in _classes_in(hint)
        if cls.__module__.startswith("claude_force.")
    )
    assert private == []
