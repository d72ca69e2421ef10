"""Loading and validating ``.claude/claude.json``.

The format is the one existing Claude Force projects use::

    {
      "agents": {
        "code-reviewer": {"file": "agents/code-reviewer.md",
                          "contract": "contracts/code-reviewer.contract",
                          "domains": ["code-quality"], "priority": 1}
      },
      "workflows": {"ship": ["code-reviewer", ["test-writer", "doc-writer"]]},
      "default_model": "claude-sonnet-5-5",
      "rate_limits": {"default": {"input_tokens_per_minute": 400000},
                      "sonnet": {"requests_per_minute": 50}}
    }

A nested list in a workflow is a stage whose agents run concurrently. ``rate_limits`` sets or
caps the per-minute limits the client keeps to, per model family (or model) and ``default``
for the rest, e.g. to leave room for other tools of the same organisation. Unknown keys, at the top
level or inside an agent, are kept in ``extra`` and otherwise ignored, so older projects load.

A workflow may also take the extended form, with its policies and per-step overrides::

    "ship": {"steps": ["code-reviewer",
                       [{"agent": "test-writer", "model": "claude-haiku-4-5"}, "doc-writer"]],
             "handoff": "previous", "on_failure": "continue"}

``handoff`` is ``"all"`` (every earlier output, the default) or ``"previous"`` (the previous
stage's outputs only); ``on_failure`` is ``"stop"`` (the default) or ``"continue"``. A step
object has ``agent`` and any of ``model``, ``max_tokens`` and ``temperature``. This form is new,
so its unknown keys are errors (with a suggestion), not kept.
Paths are relative to the folder holding ``claude.json`` and must stay inside it, at load
and again at every read (an agent file swapped for a link leaving the folder is refused).

A malformed file is always a :class:`ConfigError` whose problems each start with a JSON path
(``agents.reviewer.file: ...``) or a position (``line 3, column 7: ...``). Limits keep a hostile
file from hanging or crashing the loader: 10 MiB per config, 4 MiB per agent file, 10,000
agents, nesting 64 deep, integers of at most 640 digits, and text that is valid Unicode.

Validation is hand-written rather than pydantic: it keeps the CLI's start fast and lets every
problem be reported at once as ``"<json path>: <message>"``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import stat
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import MappingProxyType
from typing import Any, Literal, cast

from ._errors import AgentNotFoundError, ConfigError, InvalidArgumentError, WorkflowNotFoundError
from ._files import FileProblem, describe_mode, read_beneath, read_regular, shown

__all__ = [
    "DEFAULT_MODEL",
    "AgentSpec",
    "ProjectConfig",
    "StepSpec",
    "WorkflowSpec",
    "find_config",
    "load_config",
    "read_agent_prompt",
    "validate_agent_name",
]

# Must appear in the installed SDK's ModelParam literal and not in its DEPRECATED_MODELS;
# tests/test_config.py checks both, so an SDK upgrade that retires it fails loudly.
DEFAULT_MODEL: str = "claude-sonnet-5-5"

CONFIG_DIR = ".claude"
CONFIG_FILE = "claude.json"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_NAME_RULE = (
    "names are 1-64 characters of letters, digits, '_', '.' or '-', starting with a letter or digit"
)
_MAX_TOKENS_LIMIT = 128_000
CacheTTL = Literal["5m", "1h"]
_CACHE_TTLS: tuple[CacheTTL, ...] = ("5m", "1h")
_INIT_HINT = "run `claude-force init` in your project folder to create one"
_MAX_CONFIG_BYTES = 10 * 1024 * 1024
# Far beyond any useful system prompt, and bounded so a huge file cannot exhaust memory.
_MAX_AGENT_FILE_BYTES = 4 * 1024 * 1024
_MAX_DEPTH = 64
# Each agent costs a few file-system calls at load; this keeps any file's load near a second.
_MAX_AGENTS = 10_000
# The smallest limit Python's int() may be configured with (sys.set_int_max_str_digits).
_MAX_DIGITS = 640
_MAX_SHOWN = 50  # problems listed in one error; the count of the rest is given
_SHOWN_CHARS = 60  # a value or key quoted in a message is cut to this length
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_PROBLEM = (
    "contains an unpaired surrogate escape (\\ud800-\\udfff), which is not valid Unicode; "
    "fix or remove the escape"
)
_TOO_DEEP = f"nested more than {_MAX_DEPTH} levels deep; flatten it"


@dataclass(frozen=True, kw_only=True)
class AgentSpec:
    """One agent as declared in the config; ``file`` and ``contract`` are resolved paths.

    ``root`` is the folder the files must stay inside (the config folder); a hand-made spec
    without one keeps each file inside its own folder.
    """

    name: str
    file: Path
    contract: Path | None = None
    domains: tuple[str, ...] = ()
    priority: int | str | None = None
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    cache_ttl: CacheTTL | None = None
    description: str | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    root: Path | None = None


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


@dataclass(frozen=True, kw_only=True)
class ProjectConfig:
    """A validated project: agents in file order, workflows as stages of agent names.

    ``workflow_specs`` holds each workflow with its policies and per-step overrides;
    ``workflows`` the same stages as plain agent names.
    """

    path: Path
    root: Path
    agents: Mapping[str, AgentSpec] = field(hash=False)
    workflows: Mapping[str, Workflow] = field(hash=False)
    default_model: str | None = None
    # Per model family (or model, or "default"): the fields of claude_force.Limits. Plain
    # integers here, so that loading a config does not import the admission machinery.
    rate_limits: Mapping[str, Mapping[str, int]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    workflow_specs: Mapping[str, WorkflowSpec] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )

    def agent(self, name: str) -> AgentSpec:
        """Return the agent called ``name`` or raise AgentNotFoundError with a suggestion."""
        try:
            return self.agents[name]
        except KeyError:
            raise AgentNotFoundError(_not_defined("agent", name, self.agents, self.path)) from None

    def workflow(self, name: str) -> Workflow:
        """Return the stages of workflow ``name`` or raise WorkflowNotFoundError."""
        try:
            return self.workflows[name]
        except KeyError:
            raise WorkflowNotFoundError(
                _not_defined("workflow", name, self.workflows, self.path)
            ) from None

    def workflow_spec(self, name: str) -> WorkflowSpec:
        """Return workflow ``name`` with policies and overrides, or raise WorkflowNotFoundError."""
        spec = self.workflow_specs.get(name)
        if spec is not None:
            return spec
        stages = self.workflow(name)  # a hand-made config may give only the list form
        return WorkflowSpec(
            name=name, stages=tuple(tuple(StepSpec(a) for a in stage) for stage in stages)
        )


# --------------------------------------------------------------------------- names and messages


def validate_agent_name(name: str) -> str:
    """Return ``name`` if it is a valid agent name, else raise InvalidArgumentError.

    >>> validate_agent_name("code-reviewer")
    'code-reviewer'
    """
    problem = _name_problem("agent", name)
    if problem is not None:
        raise InvalidArgumentError(problem)
    return name


def _name_problem(kind: str, name: object) -> str | None:
    if not isinstance(name, str):
        return f"{kind} name must be a string, got {_json_type(name)}"
    if _NAME_RE.fullmatch(name):
        return None
    fix = re.sub(r"[^A-Za-z0-9_.-]+", "-", name[:256]).lstrip("_.-")[:64]
    hint = f"; rename it, e.g. {fix!r}" if fix and _NAME_RE.fullmatch(fix) else ""
    return f"invalid {kind} name {_show_text(name)}: {_NAME_RULE}{hint}"


def _not_defined(kind: str, name: str, defined: Collection[str], config_path: Path) -> str:
    message = f"{kind} {name!r} is not defined in {config_path}"
    close = difflib.get_close_matches(str(name), list(defined), n=1)
    message += f"; did you mean {close[0]!r}?" if close else "."
    if defined:
        return f"{message} Defined {kind}s: {', '.join(defined)}"
    return f"{message} No {kind}s are defined."


def _json_type(value: object) -> str:
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


def _key_path(parent: str, key: str) -> str:
    # Plain names read as `agents.reviewer`; anything odd is quoted so the path stays unambiguous.
    if len(key) <= _SHOWN_CHARS and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", key):
        return f"{parent}.{key}" if parent else key
    if len(key) <= _SHOWN_CHARS:
        return f"{parent}[{json.dumps(key)}]"
    return f'{parent}[{json.dumps(key[:_SHOWN_CHARS])[:-1]}..."]'


def _show_text(text: str) -> str:
    """``repr`` of a user's string, cut to a readable length."""
    if len(text) <= _SHOWN_CHARS:
        return repr(text)
    return f"{text[:_SHOWN_CHARS]!r}... ({len(text)} characters)"


def _show(value: object) -> str:
    """A JSON value as it appears in a message, cut to a readable length."""
    text = json.dumps(value)
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}..."


def _config_error(message: str, problems: list[str] | None = None) -> ConfigError:
    """A ConfigError whose text prints anywhere: undecodable bytes in paths become escapes."""
    return ConfigError(
        shown(message, limit=10_000), problems=[shown(p, limit=10_000) for p in problems or []]
    )


# --------------------------------------------------------------------------- finding and reading


def find_config(start: Path | None = None) -> Path:
    """Return ``.claude/claude.json`` in ``start`` (default: cwd) or its nearest parent.

    A ``claude.json`` that is there but is not a regular file (a folder, a FIFO, a device, a
    link to nothing) stops the search with a ConfigError saying so: reporting it as missing
    would send the user to ``claude-force init``, which then refuses because it exists.
    """
    try:
        origin = Path(os.path.abspath(start if start is not None else os.getcwd()))
    except OSError as exc:  # the current folder was deleted under us
        raise _config_error(
            f"cannot tell the current folder ({exc.strerror}); cd into your project and retry"
        ) from None
    for folder in (origin, *origin.parents):
        candidate = folder / CONFIG_DIR / CONFIG_FILE
        kind = _file_kind(candidate)
        if kind == "regular":
            return candidate
        if kind is not None:
            raise _config_error(
                f"{candidate} is {kind}, not a regular file; replace it with your "
                f"{CONFIG_FILE}, or move it away and run `claude-force init` to create one"
            )
    raise _config_error(
        f"no {CONFIG_DIR}/{CONFIG_FILE} found in {origin} or any parent folder; {_INIT_HINT}"
    )


def _file_kind(path: Path) -> str | None:
    """``"regular"``, what else stands at ``path`` (``"a FIFO (named pipe)"``...), or None."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        try:  # a symlink whose target is gone is there, and cannot be used
            target = os.readlink(path)
        except (OSError, ValueError):
            return None
        return f"a symbolic link to {shown(target)}, which does not exist"
    except (OSError, ValueError):  # an unreadable folder or an impossible name: not here
        return None
    return "regular" if stat.S_ISREG(mode) else describe_mode(mode)


class _JsonObject(dict[str, Any]):
    """A decoded JSON object that remembers keys the file repeated (json keeps the last one)."""

    duplicates: tuple[str, ...] = ()


def _object_hook(pairs: list[tuple[str, Any]]) -> _JsonObject:
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


def _parse_int(text: str) -> int | _LongNumber:
    # int() refuses long literals with ValueError (and takes quadratic time below the limit).
    if len(text) > _MAX_DIGITS:
        return _LongNumber(len(text.lstrip("-")))
    return int(text)


def _read_json(path: Path) -> object:
    try:
        data, _ = read_regular(path, limit=_MAX_CONFIG_BYTES)
    except FileProblem as problem:
        raise _file_error(path, problem) from None
    text = _decode(data, path)
    if not text.strip():  # json would say "Expecting value", which reads as a syntax error
        raise _config_error(
            f"{path}: the file is empty; a {CONFIG_FILE} holds a JSON object with your agents: "
            "restore it (e.g. from version control), or move it away and run "
            "`claude-force init` to create one",
            problems=["(top level): the file is empty"],
        )
    try:
        return json.loads(text, object_pairs_hook=_object_hook, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise _config_error(
            f"invalid JSON in {path} at line {exc.lineno}, column {exc.colno}: {exc.msg}",
            problems=[f"line {exc.lineno}, column {exc.colno}: {exc.msg}"],
        ) from None
    except RecursionError:
        line, column = _line_column(text, _too_deep_at(text))
        raise _invalid(path, [f"line {line}, column {column}: {_TOO_DEEP}"]) from None


def _file_error(path: Path, problem: FileProblem) -> ConfigError:
    if problem.kind == "missing":
        return _config_error(f"configuration file not found: {path}; {_INIT_HINT}")
    if problem.kind == "not_regular" and os.path.isdir(path):
        return _config_error(
            f"{path} is a folder; pass the configuration file, e.g. {path / CONFIG_FILE}"
        )
    if problem.kind == "too_large":
        return _config_error(
            f"configuration file {path} is larger than {_MAX_CONFIG_BYTES >> 20} MiB; "
            "a claude.json is a few kilobytes: check that this is the right file"
        )
    return _config_error(f"cannot read configuration file {path}: {problem}")


def _decode(data: bytes, path: Path) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _invalid(path, ["line 1, column 1: the file is UTF-16; save it as UTF-8"])
    data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark, as Notepad writes
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        column = len(data[line_start : exc.start].decode("utf-8", "replace")) + 1
        raise _invalid(
            path,
            [
                f"line {line}, column {column}: byte 0x{data[exc.start]:02x} is not valid UTF-8; "
                "save the file as UTF-8"
            ],
        ) from None


_BRACKETS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _too_deep_at(text: str) -> int:
    """The offset of the first bracket nested deeper than the limit (0 if none is)."""
    depth = 0
    for match in _BRACKETS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > _MAX_DEPTH:
                return match.start()
        elif token in ("]", "}"):
            depth -= 1
    return 0


def _line_column(text: str, offset: int) -> tuple[int, int]:
    return text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)


def _document_problems(raw: object) -> list[str]:
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
                f"use one of at most {_MAX_DIGITS} digits"
            )
        elif isinstance(node, str) and _SURROGATE.search(node):
            problems.append(f"{where}: {_SURROGATE_PROBLEM}")
        elif isinstance(node, (dict, list)):
            if depth >= _MAX_DEPTH:
                problems.append(f"{where}: {_TOO_DEEP}")
                continue
            children: list[tuple[object, str, int]] = []
            for key, child in node.items() if isinstance(node, dict) else enumerate(node):
                child_path = _key_path(path, key) if isinstance(key, str) else f"{path}[{key}]"
                if isinstance(key, str) and _SURROGATE.search(key):
                    problems.append(f"{child_path}: the key {_SURROGATE_PROBLEM}")
                children.append((child, child_path, depth + 1))
            pending.extend(reversed(children))
    return problems


def read_agent_prompt(spec: AgentSpec) -> tuple[str, str | None]:
    """Return the agent's definition text and its contract text (None without a contract).

    The files are checked as at load, on every read: a regular file inside the config
    folder, reached without following a link that leaves it, of at most 4 MiB.
    """
    definition = _read_text(spec, "file", spec.file)
    if not definition.strip():
        raise _config_error(
            f"agent {spec.name!r} definition file {spec.file} is empty; "
            "write the agent's role prompt in it"
        )
    contract = None if spec.contract is None else _read_text(spec, "contract", spec.contract)
    return definition, contract


def _read_text(spec: AgentSpec, what: str, path: Path) -> str:
    root = spec.root if spec.root is not None else path.parent
    try:
        data, _ = read_beneath(path, root, limit=_MAX_AGENT_FILE_BYTES)
    except FileProblem as problem:
        raise _config_error(
            f"cannot read agent {spec.name!r} {what} {path}: {problem.summary}; {problem.fix}"
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _config_error(
            f"agent {spec.name!r} {what} {path} is not valid UTF-8 (byte {exc.start}); "
            "save it as UTF-8"
        ) from None


# --------------------------------------------------------------------------- validation


def load_config(path: str | os.PathLike[str]) -> ProjectConfig:
    """Load and validate a ``claude.json``; raise ConfigError listing every problem found.

    At most 50 problems are listed in ``ConfigError.problems``; the message gives the total.
    """
    config_path = _absolute(path)
    raw = _read_json(config_path)
    # A document that is not even an object gets that one problem, not a list of its contents.
    problems = _document_problems(raw) if isinstance(raw, dict) else []
    config = None if problems else _build_config(raw, config_path, problems)
    if problems or config is None:
        raise _invalid(config_path, problems)
    return config


def _absolute(path: object) -> Path:
    try:
        return Path(os.path.abspath(os.fspath(path)))  # type: ignore[call-overload]
    except TypeError:
        raise _config_error(
            f"the configuration path must be a str or os.PathLike, got {type(path).__name__}"
        ) from None
    except OSError as exc:  # abspath of a relative path needs the current folder
        raise _config_error(
            f"cannot tell the current folder ({exc.strerror}); pass an absolute path"
        ) from None


def _invalid(config_path: Path, problems: list[str]) -> ConfigError:
    message = f"invalid configuration in {config_path}"
    if len(problems) > _MAX_SHOWN:
        message += f" ({len(problems)} problems; the first {_MAX_SHOWN} are listed)"
    return _config_error(message, problems[:_MAX_SHOWN])


def _build_config(raw: object, config_path: Path, problems: list[str]) -> ProjectConfig | None:
    if not isinstance(raw, dict):
        problems.append(f"(top level): expected a JSON object, got {_json_type(raw)}")
        return None
    _report_duplicates(raw, "(top level)", problems)
    root = config_path.parent
    agents: dict[str, AgentSpec] = {}
    raw_agents = raw.get("agents")
    if "agents" not in raw:
        problems.append("agents: field required (an object mapping agent names to definitions)")
    elif not isinstance(raw_agents, dict):
        problems.append(f"agents: expected an object, got {_json_type(raw_agents)}")
    elif len(raw_agents) > _MAX_AGENTS:
        problems.append(
            f"agents: {len(raw_agents)} agents are defined, more than the {_MAX_AGENTS} "
            "supported; split the project into several folders"
        )
    else:
        _report_duplicates(raw_agents, "agents", problems)
        agents = _parse_agents(raw_agents, root, problems)
    # Workflows are checked against every declared name, even a broken agent's, so one typo
    # in an agent does not also produce "not defined" noise in every workflow using it.
    declared = raw_agents.keys() if isinstance(raw_agents, dict) else ()
    specs = _parse_workflows(raw.get("workflows", {}), declared, problems)
    default_model = raw.get("default_model")
    if default_model is not None and not _is_text(default_model):
        problems.append(f"default_model: {_expected_text(default_model)}")
    rate_limits = _parse_rate_limits(raw.get("rate_limits", {}), problems)
    known = ("agents", "workflows", "default_model", "rate_limits")
    extra = {k: v for k, v in raw.items() if k not in known}
    return ProjectConfig(
        path=config_path,
        root=root,
        agents=MappingProxyType(agents),
        workflows=MappingProxyType({name: spec.agents for name, spec in specs.items()}),
        default_model=default_model if isinstance(default_model, str) else None,
        rate_limits=MappingProxyType(rate_limits),
        extra=MappingProxyType(extra),
        workflow_specs=MappingProxyType(specs),
    )


def _report_duplicates(obj: Mapping[str, Any], path: str, problems: list[str]) -> None:
    for key in getattr(obj, "duplicates", ()):
        problems.append(f"{path}: duplicate key {key!r}; JSON keeps only the last one, remove one")


def _is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _expected_text(value: object) -> str:
    return f"expected a non-empty string, got {_json_type(value)} {_show(value)}"


# Optional agent fields: each checker returns None when the value is fine, else the message.
def _check_domains(v: object) -> str | None:
    if isinstance(v, list) and all(_is_text(d) for d in v):
        return None
    return f"expected an array of non-empty strings, got {_show(v)}"


def _check_priority(v: object) -> str | None:
    if (isinstance(v, int) and not isinstance(v, bool)) or _is_text(v):
        return None
    return f'expected an integer or a string like "high", got {_json_type(v)} {_show(v)}'


def _check_max_tokens(v: object) -> str | None:
    if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= _MAX_TOKENS_LIMIT:
        return None
    return f"expected an integer from 1 to {_MAX_TOKENS_LIMIT}, got {_show(v)}"


def _check_temperature(v: object) -> str | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1:
        return None
    return f"expected a number from 0 to 1, got {_show(v)}"


def _check_cache_ttl(v: object) -> str | None:
    if v in _CACHE_TTLS:
        return None
    return f"expected one of {', '.join(map(repr, _CACHE_TTLS))}, got {_show(v)}"


def _check_text(v: object) -> str | None:
    return None if _is_text(v) else _expected_text(v)


def _check_string(v: object) -> str | None:
    return None if isinstance(v, str) else f"expected a string, got {_json_type(v)}"


_OPTIONAL_FIELDS: Mapping[str, Callable[[object], str | None]] = {
    "domains": _check_domains,
    "priority": _check_priority,
    "model": _check_text,
    "max_tokens": _check_max_tokens,
    "temperature": _check_temperature,
    "cache_ttl": _check_cache_ttl,
    "description": _check_string,
}
_PATH_FIELDS = ("file", "contract")


def _parse_agents(
    raw_agents: Mapping[str, Any], root: Path, problems: list[str]
) -> dict[str, AgentSpec]:
    agents: dict[str, AgentSpec] = {}
    for name, raw in raw_agents.items():
        path = _key_path("agents", name)
        name_problem = _name_problem("agent", name)
        if name_problem is not None:
            problems.append(f"{path}: {name_problem}")
        spec = _parse_agent(name, raw, path, root, problems)
        if spec is not None and name_problem is None:
            agents[name] = spec
    return agents


def _parse_agent(
    name: str, raw: object, path: str, root: Path, problems: list[str]
) -> AgentSpec | None:
    if not isinstance(raw, dict):
        problems.append(f"{path}: expected an object with at least a 'file', got {_json_type(raw)}")
        return None
    before = len(problems)
    _report_duplicates(raw, path, problems)
    if "file" not in raw:
        problems.append(f"{path}.file: field required (the agent's definition, e.g. agents/x.md)")
    files: dict[str, Path] = {}
    for key in _PATH_FIELDS:
        if key in raw:
            resolved = _agent_path(name, key, raw[key], f"{path}.{key}", root, problems)
            if resolved is not None:
                files[key] = resolved
    for key, check in _OPTIONAL_FIELDS.items():
        message = check(raw[key]) if key in raw else None
        if message is not None:
            problems.append(f"{path}.{key}: {message}")
    if len(problems) != before:
        return None
    temperature = raw.get("temperature")
    known = {*_PATH_FIELDS, *_OPTIONAL_FIELDS}
    return AgentSpec(
        name=name,
        file=files["file"],
        contract=files.get("contract"),
        domains=tuple(raw.get("domains", ())),
        priority=raw.get("priority"),
        model=raw.get("model"),
        max_tokens=raw.get("max_tokens"),
        temperature=None if temperature is None else float(temperature),
        cache_ttl=cast("CacheTTL | None", raw.get("cache_ttl")),
        description=raw.get("description"),
        extra=MappingProxyType({k: v for k, v in raw.items() if k not in known}),
        root=root,
    )


def _agent_path(
    agent: str, key: str, value: object, path: str, root: Path, problems: list[str]
) -> Path | None:
    """Resolve an agent's file or contract, which must be a regular file inside ``root``.

    The same check runs again at every read (:func:`read_agent_prompt`).
    """
    subject = f"agent {_show_text(agent)} {key}"
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{path}: {_expected_text(value)}")
        return None
    rule = f"agent files must live inside {root}; use a path relative to it"
    if PurePosixPath(value).is_absolute() or PureWindowsPath(value).drive:
        problems.append(f"{path}: {subject} {_show_text(value)} is an absolute path; {rule}")
        return None
    if not Path(os.path.normpath(root / value)).is_relative_to(root):
        problems.append(f"{path}: {subject} {_show_text(value)} uses '..' to leave {root}; {rule}")
        return None
    try:
        _, resolved = read_beneath(root / value, root, limit=_MAX_AGENT_FILE_BYTES)
    except FileProblem as problem:
        problems.append(f"{path}: {subject} {_show_text(value)}: {problem}")
        return None
    return resolved


def _parse_workflows(
    raw: object, declared: Iterable[str], problems: list[str]
) -> dict[str, WorkflowSpec]:
    if not isinstance(raw, dict):
        problems.append(f"workflows: expected an object, got {_json_type(raw)}")
        return {}
    _report_duplicates(raw, "workflows", problems)
    # A dict: ordered for suggestions, O(1) membership for huge documents.
    defined = dict.fromkeys(declared)
    workflows: dict[str, WorkflowSpec] = {}
    for name, value in raw.items():
        path = _key_path("workflows", name)
        before = len(problems)
        name_problem = _name_problem("workflow", name)
        if name_problem is not None:
            problems.append(f"{path}: {name_problem}")
        settings = _workflow_settings(value, path, problems)
        if settings is None:
            continue
        steps, steps_path, handoff, on_failure = settings
        stages = [
            _parse_stage(step, f"{steps_path}[{i}]", defined, problems)
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
            f"'on_failure', got {_show(value)}"
        )
        return None
    _report_duplicates(value, path, problems)
    _report_unknown_keys(value, path, _WORKFLOW_KEYS, problems)
    handoff = _check_choice(value, "handoff", _HANDOFFS, path, problems)
    on_failure = _check_choice(value, "on_failure", _ON_FAILURE, path, problems)
    steps = value.get("steps")
    if "steps" not in value:
        problems.append(f"{path}.steps: field required ({_STEPS_RULE})")
    elif not isinstance(steps, list) or not steps:
        problems.append(f"{path}.steps: expected {_STEPS_RULE}, got {_show(steps)}")
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
        f"{path}.{key}: expected one of {', '.join(map(repr, allowed))}, got {_show(value)}"
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
        problems.append(f"{_key_path(path, key)}: unknown key; {hint}")


def _parse_stage(
    step: object, path: str, defined: Mapping[str, None], problems: list[str]
) -> tuple[StepSpec, ...]:
    """Normalise one workflow step to a stage tuple: ``"a"`` -> ``(StepSpec("a"),)``."""
    if not isinstance(step, list):
        single = _parse_step(step, path, defined, problems, in_stage=False)
        return (single,) if single is not None else ()
    if not step:
        problems.append(f"{path}: a stage needs at least one agent; remove the empty array")
        return ()
    stage: dict[str, StepSpec] = {}
    for i, item in enumerate(step):
        item_path = f"{path}[{i}]"
        parsed = _parse_step(item, item_path, defined, problems, in_stage=True)
        if parsed is None:
            continue
        if parsed.agent in stage:
            problems.append(
                f"{item_path}: agent {_show_text(parsed.agent)} appears twice in this stage; "
                "list it once"
            )
        else:
            stage[parsed.agent] = parsed
    return tuple(stage.values())


_STEP_OVERRIDES: Mapping[str, Callable[[object], str | None]] = {
    "model": _check_text,
    "max_tokens": _check_max_tokens,
    "temperature": _check_temperature,
}
_STEP_KEYS = ("agent", *_STEP_OVERRIDES)


def _parse_step(
    item: object, path: str, defined: Mapping[str, None], problems: list[str], *, in_stage: bool
) -> StepSpec | None:
    """An agent name or a step object ``{"agent": ..., "model": ...}``; None after a problem."""
    if isinstance(item, str):
        return StepSpec(item) if _check_reference(item, path, defined, problems) else None
    if not isinstance(item, dict):
        expected = (
            "an agent name or a step object (stages cannot be nested further)"
            if in_stage
            else "an agent name, a step object or an array of them"
        )
        problems.append(f"{path}: expected {expected}, got {_json_type(item)}")
        return None
    before = len(problems)
    _report_duplicates(item, path, problems)
    _report_unknown_keys(item, path, _STEP_KEYS, problems)
    agent = item.get("agent")
    if "agent" not in item:
        problems.append(f"{path}.agent: field required (the name of the agent to run)")
    elif not isinstance(agent, str):
        problems.append(f"{path}.agent: expected an agent name, got {_json_type(agent)}")
    else:
        _check_reference(agent, f"{path}.agent", defined, problems)
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


def _check_reference(
    name: str, path: str, defined: Mapping[str, None], problems: list[str]
) -> bool:
    if name in defined:
        return True
    message = f"{path}: agent {_show_text(name)} is not defined"
    # difflib is quadratic: suggest only for names that could be valid, in problems shown.
    useful = len(name) <= 64 and len(problems) < _MAX_SHOWN and len(defined) <= 1000
    close = difflib.get_close_matches(name, defined, n=1) if useful else []
    problems.append(message + (f"; did you mean {close[0]!r}?" if close else ""))
    return False


# --------------------------------------------------------------------------- rate limits

RATE_LIMIT_FIELDS = ("requests_per_minute", "input_tokens_per_minute", "output_tokens_per_minute")
MAX_RATE_LIMIT = 10**12  # as _admission.MAX_RATE_LIMIT (this module imports no siblings)
_RATE_LIMITS_EXAMPLE = '{"sonnet": {"input_tokens_per_minute": 400000}}'


def _parse_rate_limits(raw: object, problems: list[str]) -> dict[str, dict[str, int]]:
    """``rate_limits``: model family (or model, or ``default``) -> the fields of Limits."""
    if not isinstance(raw, dict):
        problems.append(
            f'rate_limits: expected an object mapping a model family (or "default") to '
            f"limits, e.g. {_RATE_LIMITS_EXAMPLE}; got {_json_type(raw)}"
        )
        return {}
    _report_duplicates(raw, "rate_limits", problems)
    parsed: dict[str, dict[str, int]] = {}
    for name, limits in raw.items():
        path = _key_path("rate_limits", name)
        if not _is_text(name):
            problems.append(f'{path}: expected a model family such as "sonnet" or "default"')
            continue
        if not isinstance(limits, dict):
            problems.append(
                f"{path}: expected an object with any of {', '.join(RATE_LIMIT_FIELDS)}, "
                f"got {_json_type(limits)} {_show(limits)}"
            )
            continue
        _report_duplicates(limits, path, problems)
        before = len(problems)
        for key, value in limits.items():
            key_path = _key_path(path, key)
            if key not in RATE_LIMIT_FIELDS:
                problems.append(f"{key_path}: unknown limit; use {', '.join(RATE_LIMIT_FIELDS)}")
            elif (
                not isinstance(value, int)
                or isinstance(value, bool)
                or not 1 <= value <= MAX_RATE_LIMIT
            ):
                problems.append(f"{key_path}: expected an integer >= 1, got {_show(value)}")
        if len(problems) == before:
            parsed[name] = dict(limits)
    return parsed
