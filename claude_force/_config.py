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
level or inside an agent, are kept in ``extra`` and otherwise ignored, so older projects load;
keys starting with ``_``, ``$``, ``#`` or ``//`` are notes, skipped where names are expected.

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

A problem confined to one agent or workflow (an agent file missing on this machine, a workflow
naming an undefined agent) makes only that one unusable: ``unusable_agents`` and
``unusable_workflows`` say why, a warning is logged, and using it raises ConfigError. A missing
contract file is a warning and the agent runs without one, as in Claude Force 1.x.

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
import logging
import os
import stat
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import MappingProxyType
from typing import Any, Literal, cast

from ._config_json import (
    TOO_DEEP,
    document_problems,
    line_column,
    object_hook,
    parse_int,
    syntax_hint,
    too_deep_at,
)
from ._config_limits import parse_rate_limits
from ._config_text import (
    MAX_SHOWN,
    Confined,
    check_max_tokens,
    check_temperature,
    check_text,
    expected_text,
    is_comment_key,
    is_text,
    json_type,
    key_path,
    name_problem,
    report_duplicates,
    show,
    show_text,
)
from ._config_workflows import StepSpec, Workflow, WorkflowSpec, parse_workflows
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

_log = logging.getLogger("claude_force")

CONFIG_DIR = ".claude"
CONFIG_FILE = "claude.json"

CacheTTL = Literal["5m", "1h"]
_CACHE_TTLS: tuple[CacheTTL, ...] = ("5m", "1h")
_INIT_HINT = "run `claude-force init` in your project folder to create one"
_MAX_CONFIG_BYTES = 10 * 1024 * 1024
# Far beyond any useful system prompt, and bounded so a huge file cannot exhaust memory.
_MAX_AGENT_FILE_BYTES = 4 * 1024 * 1024
# Each agent costs a few file-system calls at load; this keeps any file's load near a second.
_MAX_AGENTS = 10_000


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
    priority: int | float | str | None = None
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    cache_ttl: CacheTTL | None = None
    description: str | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    root: Path | None = None


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
    # Declared but unusable (a file missing on this machine, a workflow naming an undefined
    # agent): name -> the problem. Claude Force 1.x ran the rest of such a folder, so do we.
    unusable_agents: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    unusable_workflows: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )

    def agent(self, name: str) -> AgentSpec:
        """Return the agent called ``name`` or raise AgentNotFoundError with a suggestion.

        A declared agent that cannot be used raises ConfigError naming the problem.
        """
        try:
            return self.agents[name]
        except KeyError:
            pass
        if name in self.unusable_agents:
            raise _config_error(
                f"agent {name!r} in {self.path} cannot be used: {self.unusable_agents[name]}"
            )
        raise AgentNotFoundError(_not_defined("agent", name, self.agents, self.path))

    def workflow(self, name: str) -> Workflow:
        """Return the stages of workflow ``name`` or raise WorkflowNotFoundError."""
        try:
            return self.workflows[name]
        except KeyError:
            pass
        if name in self.unusable_workflows:
            raise _config_error(
                f"workflow {name!r} in {self.path} cannot run: {self.unusable_workflows[name]}"
            )
        raise WorkflowNotFoundError(_not_defined("workflow", name, self.workflows, self.path))

    def workflow_spec(self, name: str) -> WorkflowSpec:
        """Return workflow ``name`` with policies and overrides, or raise WorkflowNotFoundError.

        A workflow using an agent that cannot be used raises ConfigError before any step runs.
        """
        spec = self.workflow_specs.get(name)
        if spec is None:
            stages = self.workflow(name)  # a hand-made config may give only the list form
            spec = WorkflowSpec(
                name=name, stages=tuple(tuple(StepSpec(a) for a in stage) for stage in stages)
            )
        broken = [a for stage in spec.agents for a in stage if a in self.unusable_agents]
        if broken:
            why = "; ".join(
                f"agent {a!r}: {self.unusable_agents[a]}" for a in dict.fromkeys(broken)
            )
            raise _config_error(f"workflow {name!r} in {self.path} cannot run: {why}")
        return spec


# --------------------------------------------------------------------------- names and messages


def validate_agent_name(name: str) -> str:
    """Return ``name`` if it is a valid agent name, else raise InvalidArgumentError.

    >>> validate_agent_name("code-reviewer")
    'code-reviewer'
    """
    problem = name_problem("agent", name)
    if problem is not None:
        raise InvalidArgumentError(problem)
    return name


def _not_defined(kind: str, name: str, defined: Collection[str], config_path: Path) -> str:
    message = f"{kind} {name!r} is not defined in {config_path}"
    close = difflib.get_close_matches(str(name), list(defined), n=1)
    message += f"; did you mean {close[0]!r}?" if close else "."
    if defined:
        return f"{message} Defined {kind}s: {', '.join(defined)}"
    return f"{message} No {kind}s are defined."


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
    loose = next(
        (f / CONFIG_FILE for f in (origin, *origin.parents) if _is_file(f / CONFIG_FILE)), None
    )
    hint = (
        _INIT_HINT
        if loose is None
        else f"{shown(loose)} is outside a {CONFIG_DIR}/ folder: pass it with "
        f"`--config {shown(loose)}` (config_path= in Python), or move it into {CONFIG_DIR}/"
    )
    raise _config_error(
        f"no {CONFIG_DIR}/{CONFIG_FILE} found in {origin} or any parent folder; {hint}"
    )


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


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
        return json.loads(text, object_pairs_hook=object_hook, parse_int=parse_int)
    except json.JSONDecodeError as exc:
        at = f"line {exc.lineno}, column {exc.colno}: {exc.msg}{syntax_hint(text, exc.pos)}"
        raise _config_error(f"invalid JSON in {path} at {at}", problems=[at]) from None
    except RecursionError:
        line, column = line_column(text, too_deep_at(text))
        raise _invalid(path, [f"line {line}, column {column}: {TOO_DEEP}"]) from None


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
        # A byte order mark (Notepad writes one) is encoding, not text: it is not sent.
        return data.decode("utf-8").removeprefix("\ufeff")
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
    problems = document_problems(raw) if isinstance(raw, dict) else []
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
    if len(problems) > MAX_SHOWN:
        message += f" ({len(problems)} problems; the first {MAX_SHOWN} are listed)"
    return _config_error(message, problems[:MAX_SHOWN])


def _build_config(raw: object, config_path: Path, problems: list[str]) -> ProjectConfig | None:
    if not isinstance(raw, dict):
        problems.append(f"(top level): expected a JSON object, got {json_type(raw)}")
        return None
    report_duplicates(raw, "(top level)", problems)
    root = config_path.parent
    agents: dict[str, AgentSpec] = {}
    confined = Confined()
    raw_agents = raw.get("agents")
    if "agents" not in raw:
        problems.append("agents: field required (an object mapping agent names to definitions)")
    elif not isinstance(raw_agents, dict):
        problems.append(f"agents: expected an object, got {json_type(raw_agents)}")
    elif len(raw_agents) > _MAX_AGENTS:
        problems.append(
            f"agents: {len(raw_agents)} agents are defined, more than the {_MAX_AGENTS} "
            "supported; split the project into several folders"
        )
    else:
        report_duplicates(raw_agents, "agents", problems)
        agents = _parse_agents(raw_agents, root, problems, confined)
    # Workflows are checked against every declared name, even a broken agent's, so one typo
    # in an agent does not also produce "not defined" noise in every workflow using it.
    declared = (
        [k for k in raw_agents if not is_comment_key(k)] if isinstance(raw_agents, dict) else ()
    )
    specs = parse_workflows(raw.get("workflows", {}), declared, problems, confined)
    default_model = raw.get("default_model")
    if default_model is not None and not is_text(default_model):
        problems.append(f"default_model: {expected_text(default_model)}")
    rate_limits = parse_rate_limits(raw.get("rate_limits", {}), problems)
    known = ("agents", "workflows", "default_model", "rate_limits")
    extra = {k: v for k, v in raw.items() if k not in known}
    unusable = confined.split(problems)
    if unusable is None:
        return None  # every problem is reported, confined ones too
    problems.clear()
    for name, why in unusable["agents"].items():
        confined.notes.append(f"agent {show_text(name)} cannot be used: {why}")
    for name, why in unusable["workflows"].items():
        confined.notes.append(f"workflow {show_text(name)} cannot run: {why}")
    for note in [*confined.contract_notes(), *confined.notes]:
        _log.warning("%s: %s", config_path, note)
    return ProjectConfig(
        path=config_path,
        root=root,
        agents=MappingProxyType(agents),
        workflows=MappingProxyType({name: spec.agents for name, spec in specs.items()}),
        default_model=default_model if isinstance(default_model, str) else None,
        rate_limits=MappingProxyType(rate_limits),
        extra=MappingProxyType(extra),
        workflow_specs=MappingProxyType(specs),
        unusable_agents=MappingProxyType(unusable["agents"]),
        unusable_workflows=MappingProxyType(unusable["workflows"]),
    )


# Optional agent fields: each checker returns None when the value is fine, else the message.
def _check_domains(v: object) -> str | None:
    if (isinstance(v, list) and all(is_text(d) for d in v)) or is_text(v):
        return None  # a single string is one domain
    return f"expected an array of non-empty strings, got {show(v)}"


def _check_priority(v: object) -> str | None:
    # Only listed and sorted by, never sent: any number or label a team uses is fine.
    if (isinstance(v, (int, float)) and not isinstance(v, bool)) or is_text(v):
        return None
    return f'expected a number or a string like "high", got {json_type(v)} {show(v)}'


def _check_cache_ttl(v: object) -> str | None:
    if v in _CACHE_TTLS:
        return None
    return f"expected one of {', '.join(map(repr, _CACHE_TTLS))}, got {show(v)}"


def _check_string(v: object) -> str | None:
    return None if isinstance(v, str) else f"expected a string, got {json_type(v)}"


_OPTIONAL_FIELDS: Mapping[str, Callable[[object], str | None]] = {
    "domains": _check_domains,
    "priority": _check_priority,
    "model": check_text,
    "max_tokens": check_max_tokens,
    "temperature": check_temperature,
    "cache_ttl": _check_cache_ttl,
    "description": _check_string,
}
_PATH_FIELDS = ("file", "contract")


def _parse_agents(
    raw_agents: Mapping[str, Any], root: Path, problems: list[str], confined: Confined
) -> dict[str, AgentSpec]:
    agents: dict[str, AgentSpec] = {}
    for name, raw in raw_agents.items():
        if is_comment_key(name):
            continue
        path = key_path("agents", name)
        bad_name = name_problem("agent", name)
        if bad_name is not None:
            problems.append(f"{path}: {bad_name}")
        spec = _parse_agent(name, raw, path, root, problems, confined)
        if spec is not None and bad_name is None:
            agents[name] = spec
    return agents


def _parse_agent(
    name: str, raw: object, path: str, root: Path, problems: list[str], confined: Confined
) -> AgentSpec | None:
    if not isinstance(raw, dict):
        problems.append(f"{path}: expected an object with at least a 'file', got {json_type(raw)}")
        return None
    before = len(problems)
    report_duplicates(raw, path, problems)
    # null is how many tools write "not given"; only 'file' cannot be absent.
    raw = {k: v for k, v in raw.items() if v is not None or k == "file"}
    if "file" not in raw:
        problems.append(f"{path}.file: field required (the agent's definition, e.g. agents/x.md)")
    files: dict[str, Path] = {}
    for key in _PATH_FIELDS:
        if key not in raw:
            continue
        where = f"{path}.{key}"
        found = _agent_path(name, key, raw[key], where, root, problems)
        if found is None or isinstance(found, Path):
            files.update({key: found} if found else {})
            continue
        subject = f"{where}: agent {show_text(name)} {key} {show_text(raw[key])}: "
        if key == "contract" and found.kind == "missing":
            # Claude Force 1.x ran without a contract it could not find; so do we, aloud.
            confined.contracts.append(
                (
                    f"{subject}{found.summary}; running the agent without a contract. Create "
                    "the file or remove 'contract'",
                    f"{show_text(name)} ({show_text(raw[key])})",
                )
            )
        else:
            confined.add(problems, "agents", name, f"{subject}{found}")
    for key, check in _OPTIONAL_FIELDS.items():
        message = check(raw[key]) if key in raw else None
        if message is not None:
            problems.append(f"{path}.{key}: {message}")
    if len(problems) != before:
        return None
    temperature = raw.get("temperature")
    domains = raw.get("domains", ())
    known = {*_PATH_FIELDS, *_OPTIONAL_FIELDS}
    return AgentSpec(
        name=name,
        file=files["file"],
        contract=files.get("contract"),
        domains=(domains,) if isinstance(domains, str) else tuple(domains),
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
) -> Path | FileProblem | None:
    """Resolve an agent's file or contract, which must be a regular file inside ``root``.

    A path that is wrong as written is a problem (None); a file that cannot be used as it
    stands on disk (missing, too large, a link leaving ``root``) is returned as its
    FileProblem, for the caller to word. The same check runs again at every
    read (:func:`read_agent_prompt`).
    """
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{path}: {expected_text(value)}")
        return None
    # Outside the folder: this agent cannot be used (the others can), and the message
    # shows the whole path, so the relative one to write can be read off it.
    rule = (
        f"agent files must live inside {shown(root)}: move the file there and use a path "
        "relative to it"
    )
    if PureWindowsPath(value).drive:
        return FileProblem("outside", f"{shown(value)} is an absolute path", rule)
    value = value.replace("\\", "/")  # a path written on Windows: agents\\x.md
    if PurePosixPath(value).is_absolute():
        return FileProblem("outside", f"{shown(value)} is an absolute path", rule)
    if not Path(os.path.normpath(root / value)).is_relative_to(root):
        return FileProblem("outside", f"{shown(value)} uses '..' to leave {shown(root)}", rule)
    try:
        _, resolved = read_beneath(root / value, root, limit=_MAX_AGENT_FILE_BYTES)
    except FileProblem as problem:
        return problem
    return resolved
