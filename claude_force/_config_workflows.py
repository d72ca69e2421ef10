"""The ``workflows`` section of ``claude.json``: the list form and the extended form.

A workflow is a list of steps, a nested list being a stage whose agents run concurrently; or
an object with ``steps``, ``handoff`` (``"all"`` / ``"previous"``) and ``on_failure``
(``"stop"`` / ``"continue"``), whose steps may be objects overriding the agent's ``model``,
``max_tokens`` or ``temperature``. The extended form is new, so its unknown keys are errors.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ._config_text import (
    MAX_SHOWN,
    Confined,
    check_max_tokens,
    check_temperature,
    check_text,
    is_comment_key,
    json_type,
    key_path,
    name_problem,
    report_duplicates,
    show,
    show_text,
)

__all__ = ["Handoff", "OnFailure", "StepSpec", "Workflow", "WorkflowSpec", "parse_workflows"]

Workflow = tuple[tuple[str, ...], ...]
Handoff = Literal["all", "previous"]
OnFailure = Literal["stop", "continue"]
_HANDOFFS: tuple[Handoff, ...] = ("all", "previous")
_ON_FAILURE: tuple[OnFailure, ...] = ("stop", "continue")


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step of a workflow: an agent and the settings this step overrides (None: the agent's)."""

    agent: str
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None


@dataclass(frozen=True, kw_only=True)
class WorkflowSpec:
    """A workflow with its policies: stages of steps, run in order, a stage's steps concurrently.

    ``handoff``: which earlier outputs a step sees (``"all"``, or the ``"previous"`` stage's);
    ``on_failure``: ``"stop"`` after a failed stage, or ``"continue"`` with the failure noted.
    """

    name: str
    stages: tuple[tuple[StepSpec, ...], ...]
    handoff: Handoff = "all"
    on_failure: OnFailure = "stop"

    @property
    def agents(self) -> Workflow:
        """The stages as agent names, the list form's shape."""
        return tuple(tuple(step.agent for step in stage) for stage in self.stages)


class _Names:
    """The declared agent names, and where an undefined one is reported."""

    def __init__(self, declared: Iterable[str], confined: Confined) -> None:
        # A dict: ordered for suggestions, O(1) membership for huge documents.
        self.defined = dict.fromkeys(declared)
        self.confined = confined
        self.workflow = ""  # the workflow being parsed


def parse_workflows(
    raw: object, declared: Iterable[str], problems: list[str], confined: Confined
) -> dict[str, WorkflowSpec]:
    """The valid workflows. An undefined agent is a problem confined to its workflow."""
    if not isinstance(raw, dict):
        problems.append(f"workflows: expected an object, got {json_type(raw)}")
        return {}
    report_duplicates(raw, "workflows", problems)
    names = _Names(declared, confined)
    workflows: dict[str, WorkflowSpec] = {}
    for name, value in raw.items():
        if is_comment_key(name):
            continue
        names.workflow = name
        path = key_path("workflows", name)
        before = len(problems)
        bad_name = name_problem("workflow", name)
        if bad_name is not None:
            problems.append(f"{path}: {bad_name}")
        settings = _workflow_settings(value, path, problems)
        if settings is None:
            continue
        steps, steps_path, handoff, on_failure = settings
        stages = [
            _parse_stage(step, f"{steps_path}[{i}]", names, problems)
            for i, step in enumerate(steps)
        ]
        if len(problems) == before:
            workflows[name] = WorkflowSpec(
                name=name,
                stages=tuple(stage for stage in stages if stage),
                handoff=handoff,
                on_failure=on_failure,
            )
    return workflows


_WORKFLOW_KEYS = ("steps", "handoff", "on_failure")
_STEPS_RULE = "a non-empty array of agent names or stages (arrays of agent names run concurrently)"


def _workflow_settings(
    value: object, path: str, problems: list[str]
) -> tuple[list[Any], str, Handoff, OnFailure] | None:
    """The steps (and where they are) and the policies of the list or the extended form."""
    if isinstance(value, list):
        if value:
            return value, path, "all", "stop"
        problems.append(f"{path}: expected {_STEPS_RULE}, got []")
        return None
    if not isinstance(value, dict):
        problems.append(
            f"{path}: expected {_STEPS_RULE}, or an object with 'steps', 'handoff' and "
            f"'on_failure', got {show(value)}"
        )
        return None
    report_duplicates(value, path, problems)
    _report_unknown_keys(value, path, _WORKFLOW_KEYS, problems)
    handoff = _check_choice(value, "handoff", _HANDOFFS, path, problems)
    on_failure = _check_choice(value, "on_failure", _ON_FAILURE, path, problems)
    steps = value.get("steps")
    if "steps" not in value:
        problems.append(f"{path}.steps: field required ({_STEPS_RULE})")
    elif not isinstance(steps, list) or not steps:
        problems.append(f"{path}.steps: expected {_STEPS_RULE}, got {show(steps)}")
    else:
        return steps, f"{path}.steps", handoff, on_failure
    return None


def _check_choice(
    obj: Mapping[str, Any], key: str, allowed: tuple[Any, ...], path: str, problems: list[str]
) -> Any:
    """``obj[key]`` if it is one of ``allowed`` (the first is the default), else a problem."""
    value = obj.get(key, allowed[0])
    if value in allowed and isinstance(value, str):
        return value
    problems.append(
        f"{path}.{key}: expected one of {', '.join(map(repr, allowed))}, got {show(value)}"
    )
    return allowed[0]


def _report_unknown_keys(
    obj: Mapping[str, Any], path: str, known: tuple[str, ...], problems: list[str]
) -> None:
    for key in obj:
        if key in known:
            continue
        close = difflib.get_close_matches(key[:64], known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(known)}"
        problems.append(f"{key_path(path, key)}: unknown key; {hint}")


def _parse_stage(
    step: object, path: str, names: _Names, problems: list[str]
) -> tuple[StepSpec, ...]:
    """Normalise one workflow step to a stage tuple: ``"a"`` -> ``(StepSpec("a"),)``."""
    if not isinstance(step, list):
        single = _parse_step(step, path, names, problems, in_stage=False)
        return (single,) if single is not None else ()
    if not step:
        problems.append(f"{path}: a stage needs at least one agent; remove the empty array")
        return ()
    stage: dict[str, StepSpec] = {}
    for i, item in enumerate(step):
        item_path = f"{path}[{i}]"
        parsed = _parse_step(item, item_path, names, problems, in_stage=True)
        if parsed is None:
            continue
        if parsed.agent in stage:
            problems.append(
                f"{item_path}: agent {show_text(parsed.agent)} appears twice in this stage; "
                "list it once"
            )
        else:
            stage[parsed.agent] = parsed
    return tuple(stage.values())


_STEP_OVERRIDES: Mapping[str, Callable[[object], str | None]] = {
    "model": check_text,
    "max_tokens": check_max_tokens,
    "temperature": check_temperature,
}
_STEP_KEYS = ("agent", *_STEP_OVERRIDES)


def _parse_step(
    item: object, path: str, names: _Names, problems: list[str], *, in_stage: bool
) -> StepSpec | None:
    """An agent name or a step object ``{"agent": ..., "model": ...}``; None after a problem."""
    if isinstance(item, str):
        return StepSpec(item) if _check_reference(item, path, names, problems) else None
    if not isinstance(item, dict):
        expected = (
            "an agent name or a step object (stages cannot be nested further)"
            if in_stage
            else "an agent name, a step object or an array of them"
        )
        problems.append(f"{path}: expected {expected}, got {json_type(item)}")
        return None
    before = len(problems)
    report_duplicates(item, path, problems)
    _report_unknown_keys(item, path, _STEP_KEYS, problems)
    agent = item.get("agent")
    if "agent" not in item:
        problems.append(f"{path}.agent: field required (the name of the agent to run)")
    elif not isinstance(agent, str):
        problems.append(f"{path}.agent: expected an agent name, got {json_type(agent)}")
    else:
        _check_reference(agent, f"{path}.agent", names, problems)
    for key, check in _STEP_OVERRIDES.items():
        message = check(item[key]) if key in item else None
        if message is not None:
            problems.append(f"{path}.{key}: {message}")
    if len(problems) != before or not isinstance(agent, str):
        return None
    temperature = item.get("temperature")
    return StepSpec(
        agent=agent,
        model=item.get("model"),
        max_tokens=item.get("max_tokens"),
        temperature=None if temperature is None else float(temperature),
    )


def _check_reference(name: str, path: str, names: _Names, problems: list[str]) -> bool:
    if name in names.defined:
        return True
    message = f"{path}: agent {show_text(name)} is not defined"
    # difflib is quadratic: suggest only for names that could be valid, in problems shown.
    useful = len(name) <= 64 and len(problems) < MAX_SHOWN and len(names.defined) <= 1000
    close = difflib.get_close_matches(name, names.defined, n=1) if useful else []
    fix = f"did you mean {close[0]!r}?" if close else "define it under 'agents' or remove it"
    names.confined.add(problems, "workflows", names.workflow, f"{message}; {fix}")
    return False
