"""Loading and validating .claude/claude.json."""

from __future__ import annotations

import ast
import doctest
import json
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from claude_force import (
    _config,
    _config_json,
    _config_limits,
    _config_text,
    _config_workflows,
    _files,
)
from claude_force._config import (
    DEFAULT_MODEL,
    AgentSpec,
    ProjectConfig,
    find_config,
    load_config,
    read_agent_prompt,
    validate_agent_name,
)
from claude_force._errors import (
    AgentNotFoundError,
    ConfigError,
    InvalidArgumentError,
    WorkflowNotFoundError,
)

LEGACY = Path(__file__).parent / "fixtures" / "legacy_project" / ".claude" / "claude.json"


def make_project(
    tmp_path: Path, config: dict[str, Any] | str, files: tuple[str, ...] = ("agents/a.md",)
) -> Path:
    """Write tmp_path/.claude/claude.json plus the given agent files; return the config path."""
    root = tmp_path / ".claude"
    root.mkdir(exist_ok=True)
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"You are {name}.\n", encoding="utf-8")
    config_path = root / "claude.json"
    text = config if isinstance(config, str) else json.dumps(config, indent=2)
    config_path.write_text(text, encoding="utf-8")
    return config_path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def unusable_agent(path: Path, name: str = "a") -> str:
    """Why agent ``name`` cannot be used: the config loads, and using the agent says why."""
    config = load_config(path)
    why = config.unusable_agents[name]
    with pytest.raises(ConfigError) as info:
        config.agent(name)
    assert str(info.value) == f"agent {name!r} in {config.path} cannot be used: {why}"
    return why


def one_agent(**fields: Any) -> dict[str, Any]:
    return {"agents": {"a": {"file": "agents/a.md", **fields}}}


# --------------------------------------------------------------------------- legacy format


def test_legacy_project_loads_with_agents_in_file_order() -> None:
    config = load_config(LEGACY)
    assert list(config.agents) == [
        "bug-investigator",
        "code-reviewer",
        "qc-automation-expert",
        "security-specialist",
    ]
    reviewer = config.agent("code-reviewer")
    assert reviewer.file == (LEGACY.parent / "agents" / "code-reviewer.md").resolve()
    assert reviewer.contract == (LEGACY.parent / "contracts" / "code-reviewer.contract").resolve()
    assert reviewer.domains == ("code-quality", "security")
    assert reviewer.priority == 1
    assert config.agent("security-specialist").priority == "high"
    assert config.path == LEGACY.absolute()
    assert config.root == LEGACY.parent.absolute()
    assert config.default_model is None


def test_legacy_project_workflows_become_single_agent_stages() -> None:
    config = load_config(LEGACY)
    assert config.workflow("bug-fix") == (
        ("bug-investigator",),
        ("code-reviewer",),
        ("qc-automation-expert",),
    )
    assert set(config.workflows) == {"bug-fix", "security-review", "pre-release"}


def test_legacy_project_keeps_unknown_top_level_sections() -> None:
    config = load_config(LEGACY)
    assert set(config.extra) == {
        "version",
        "name",
        "description",
        "governance",
        "skills_integration",
        "paths",
        "rules",
    }
    assert config.extra["governance"]["enforcement_level"] == "strict"


def test_legacy_agent_prompt_and_contract_are_read() -> None:
    definition, contract = read_agent_prompt(load_config(LEGACY).agent("bug-investigator"))
    assert definition.startswith("# Bug Investigator")
    assert contract is not None
    assert contract.startswith("agent: bug-investigator")


# --------------------------------------------------------------------------- fields


def test_optional_agent_fields_and_unknown_keys_are_kept(tmp_path: Path) -> None:
    path = make_project(
        tmp_path,
        one_agent(
            model="claude-haiku-4-5",
            max_tokens=128000,
            temperature=1,
            cache_ttl="1h",
            description="A",
            skills=["docx"],
        )
        | {"default_model": "claude-opus-4-7"},
    )
    config = load_config(path)
    spec = config.agent("a")
    assert spec == AgentSpec(
        name="a",
        file=(tmp_path / ".claude" / "agents" / "a.md").resolve(),
        model="claude-haiku-4-5",
        max_tokens=128000,
        temperature=1.0,
        cache_ttl="1h",
        description="A",
        extra={"skills": ["docx"]},
        root=tmp_path / ".claude",
    )
    assert isinstance(spec.temperature, float)
    assert config.default_model == "claude-opus-4-7"
    assert config.workflows == {}
    assert hash(spec) == hash(config.agent("a"))


def test_config_mappings_are_read_only(tmp_path: Path) -> None:
    config = load_config(make_project(tmp_path, one_agent()))
    with pytest.raises(TypeError):
        config.agents["b"] = config.agent("a")  # type: ignore[index]


def test_nested_list_is_a_parallel_stage(tmp_path: Path) -> None:
    agents = {n: {"file": f"agents/{n}.md"} for n in ("a", "b", "c", "d")}
    path = make_project(
        tmp_path,
        {"agents": agents, "workflows": {"w": ["a", ["b", "c"], ["d"], "a"]}},
        files=tuple(f"agents/{n}.md" for n in agents),
    )
    assert load_config(path).workflow("w") == (("a",), ("b", "c"), ("d",), ("a",))


# --------------------------------------------------------------------------- problems


def test_every_problem_is_reported_at_once_with_its_path(tmp_path: Path) -> None:
    config = {
        "default_model": 5,
        "agents": {
            "reviewer": {"file": "agents/a.md"},
            "nofile": {"domains": "security"},
            "knobs": {
                "file": "agents/a.md",
                "max_tokens": 0,
                "temperature": 1.5,
                "cache_ttl": "10m",
                "priority": True,
            },
            "bad/name": {"file": "agents/a.md"},
            "gone": {"file": "agents/missing.md", "contract": "contracts/missing.contract"},
        },
        "workflows": {
            "review": ["reviewer", "reviewr"],
            "empty": [],
            "stages": [[], ["reviewer", "reviewer"], [["reviewer"]], 3],
            "-bad": ["reviewer"],
        },
    }
    problems = problems_of(make_project(tmp_path, config))
    root = (tmp_path / ".claude").resolve()
    assert [p.split(": ", 1)[0] for p in problems] == [
        "agents.nofile.file",
        "agents.knobs.priority",
        "agents.knobs.max_tokens",
        "agents.knobs.temperature",
        "agents.knobs.cache_ttl",
        'agents["bad/name"]',
        "agents.gone.file",
        "workflows.review[1]",
        "workflows.empty",
        "workflows.stages[0]",
        "workflows.stages[1][1]",
        "workflows.stages[2][0]",
        "workflows.stages[3]",
        'workflows["-bad"]',
        "default_model",
    ]
    text = "\n".join(problems)
    assert "agent 'reviewr' is not defined; did you mean 'reviewer'?" in text
    assert "field required" in text
    assert "expected an integer from 1 to 128000, got 0" in text
    assert "expected a number from 0 to 1, got 1.5" in text
    assert "expected one of '5m', '1h', got \"10m\"" in text
    missing = root / "agents" / "missing.md"
    assert f"agent 'gone' file 'agents/missing.md': {missing} does not exist; create it" in text
    assert "missing.contract" not in text  # a missing contract is a warning, see below
    assert "agent 'reviewer' appears twice in this stage" in text
    assert "invalid agent name 'bad/name'" in text
    assert "rename it, e.g. 'bad-name'" in text


def test_problems_appear_in_the_error_message(tmp_path: Path) -> None:
    path = make_project(tmp_path, {"agents": {"a": {}}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"invalid configuration in {path}\n")
    assert "  - agents.a.file: field required" in str(info.value)


def test_broken_agent_is_not_also_reported_as_undefined(tmp_path: Path) -> None:
    path = make_project(tmp_path, {"agents": {"a": {}}, "workflows": {"w": ["a"]}})
    assert [p.split(":")[0] for p in problems_of(path)] == ["agents.a.file"]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ([], "(top level): expected a JSON object, got array"),
        ({}, "agents: field required"),
        ({"agents": []}, "agents: expected an object, got array"),
        ({"agents": {"a": "agents/a.md"}}, "agents.a: expected an object"),
        ({"agents": {}, "workflows": ["a"]}, "workflows: expected an object, got array"),
        (one_agent(file=""), "agents.a.file: expected a non-empty string"),
        (one_agent(domains=["x", 1]), "agents.a.domains: expected an array of non-empty strings"),
        (one_agent(max_tokens=128001), "agents.a.max_tokens: expected an integer from 1"),
        (one_agent(max_tokens=1.0), "agents.a.max_tokens: expected an integer from 1"),
        (one_agent(temperature=True), "agents.a.temperature: expected a number from 0 to 1"),
        (one_agent(model=" "), "agents.a.model: expected a non-empty string"),
        (one_agent(description=1), "agents.a.description: expected a string, got integer"),
    ],
)
def test_single_problem_messages(tmp_path: Path, config: Any, expected: str) -> None:
    problems = problems_of(make_project(tmp_path, config))
    assert len(problems) == 1
    assert problems[0].startswith(expected)


def test_duplicate_json_keys_are_reported(tmp_path: Path) -> None:
    text = '{"agents": {"a": {"file": "agents/a.md"}, "a": {"file": "agents/a.md"}}}'
    problems = problems_of(make_project(tmp_path, text))
    assert problems == ["agents: duplicate key 'a'; JSON keeps only the last one, remove one"]


def test_json_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    text = '{\n  "agents": {\n    "a": {"file": "agents/a.md"},,\n  }\n}\n'
    path = make_project(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"invalid JSON in {path} at line 3, column 34:")
    assert info.value.problems == [
        "line 3, column 34: Expecting property name enclosed in double quotes"
    ]


def test_config_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = make_project(tmp_path, "{}")
    path.write_bytes(b'{"agents": {"\xff": {}}}')
    assert problems_of(path) == [
        "line 1, column 14: byte 0xff is not valid UTF-8; save the file as UTF-8"
    ]


def test_missing_config_suggests_init(tmp_path: Path) -> None:
    path = tmp_path / ".claude" / "claude.json"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "claude-force init" in str(info.value)


def test_config_path_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder; pass the configuration file"):
        load_config(tmp_path)


# --------------------------------------------------------------------------- path safety


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("../x.md", "uses '..' to leave"),
        ("agents/../../x.md", "uses '..' to leave"),
        ("/etc/passwd", "is an absolute path"),
        ("C:\\Windows\\win.ini", "is an absolute path"),
    ],
)
def test_paths_outside_the_config_folder_are_refused(tmp_path: Path, value: str, rule: str) -> None:
    """The agent naming such a path cannot be used; the others can (a 1.x folder with one
    such agent still runs the rest), and the message shows the whole path."""
    (tmp_path / "x.md").write_text("outside\n", encoding="utf-8")
    config = one_agent(contract=value)
    config["agents"]["b"] = {"file": "agents/a.md"}
    path = make_project(tmp_path, config)
    why = unusable_agent(path)
    assert why.startswith(f"agents.a.contract: agent 'a' contract {value!r}: {value} {rule}")
    assert f"agent files must live inside {path.parent}: move the file there" in why
    assert load_config(path).agent("b").name == "b"


def test_an_outside_path_is_shown_whole(tmp_path: Path) -> None:
    value = "/" + "/".join(["a-rather-long-folder-name"] * 6) + "/agent.md"
    why = unusable_agent(make_project(tmp_path, one_agent(file=value)))
    assert f"{value} is an absolute path" in why


def test_symlink_escaping_the_config_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("secret\n", encoding="utf-8")
    path = make_project(tmp_path, one_agent(file="agents/link.md"), files=())
    (path.parent / "agents").mkdir()
    (path.parent / "agents" / "link.md").symlink_to(outside)
    problem = unusable_agent(path)
    assert problem.startswith("agents.a.file: agent 'a' file 'agents/link.md': ")
    assert f"goes through a symlink to {outside.resolve()}, outside" in problem


def test_symlinked_folder_escaping_the_config_folder_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.md").write_text("x\n", encoding="utf-8")
    path = make_project(tmp_path, one_agent(), files=())
    (path.parent / "agents").symlink_to(elsewhere, target_is_directory=True)
    assert "goes through a symlink" in unusable_agent(path)


def test_symlink_inside_the_config_folder_is_allowed(tmp_path: Path) -> None:
    path = make_project(tmp_path, one_agent(file="agents/link.md"))
    (path.parent / "agents" / "link.md").symlink_to(path.parent / "agents" / "a.md")
    assert load_config(path).agent("a").file == (path.parent / "agents" / "a.md").resolve()


def test_folder_given_as_agent_file_is_refused(tmp_path: Path) -> None:
    path = make_project(tmp_path, one_agent(file="agents"))
    folder = (path.parent / "agents").resolve()
    assert unusable_agent(path) == (
        f"agents.a.file: agent 'a' file 'agents': {folder} is a folder, not a regular file; "
        "use a regular file"
    )


# --------------------------------------------------------------------------- lookups


def test_unknown_agent_suggests_a_close_name(tmp_path: Path) -> None:
    config = load_config(LEGACY)
    with pytest.raises(AgentNotFoundError) as info:
        config.agent("code-reviewr")
    assert str(info.value) == (
        f"agent 'code-reviewr' is not defined in {config.path}; did you mean 'code-reviewer'? "
        "Defined agents: bug-investigator, code-reviewer, qc-automation-expert, "
        "security-specialist"
    )


def test_unknown_agent_without_close_match_lists_agents() -> None:
    config = load_config(LEGACY)
    with pytest.raises(AgentNotFoundError, match=r"is not defined in .*\. Defined agents: bug-"):
        config.agent("zzz")


def test_unknown_workflow_suggests_a_close_name() -> None:
    config = load_config(LEGACY)
    with pytest.raises(WorkflowNotFoundError, match="did you mean 'bug-fix'"):
        config.workflow("bugfix")


def test_unknown_workflow_in_empty_project(tmp_path: Path) -> None:
    config = load_config(make_project(tmp_path, {"agents": {}}, files=()))
    with pytest.raises(WorkflowNotFoundError, match=r"\. No workflows are defined\.$"):
        config.workflow("ship")


def test_find_config_walks_up_from_a_subfolder(tmp_path: Path) -> None:
    path = make_project(tmp_path, one_agent())
    deep = tmp_path / "src" / "pkg"
    deep.mkdir(parents=True)
    assert find_config(deep) == path
    assert find_config(tmp_path) == path


def test_a_claude_json_outside_a_claude_folder_is_named_with_the_option(tmp_path: Path) -> None:
    (tmp_path / "claude.json").write_text('{"agents": {}}', encoding="utf-8")
    deep = tmp_path / "src"
    deep.mkdir()
    with pytest.raises(ConfigError) as info:
        find_config(deep)
    message = str(info.value)
    assert f"--config {tmp_path / 'claude.json'}" in message
    assert "claude-force init" not in message
    assert load_config(tmp_path / "claude.json").agents == {}


def test_find_config_defaults_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_project(tmp_path, one_agent())
    monkeypatch.chdir(tmp_path)
    assert find_config() == path


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (os.mkfifo, "a FIFO (named pipe)"),
        (os.mkdir, "a folder"),
        (lambda path: os.symlink("gone.json", path), "a symbolic link to gone.json, which does"),
        (lambda path: os.symlink("/dev/null", path), "a character device"),
    ],
)
def test_find_config_reports_a_claude_json_that_is_not_a_regular_file(
    tmp_path: Path, make: Callable[[Path], object], kind: str
) -> None:
    # Reporting it as missing would send the user to `init`, which then refuses: it exists.
    (tmp_path / ".claude").mkdir()
    candidate = tmp_path / ".claude" / "claude.json"
    make(candidate)
    deep = tmp_path / "src"
    deep.mkdir()
    with pytest.raises(ConfigError) as info:
        find_config(deep)
    assert str(info.value).startswith(f"{candidate} is {kind}")
    assert "not a regular file; replace it with your claude.json" in str(info.value)


def test_an_empty_config_says_the_file_is_empty(tmp_path: Path) -> None:
    path = make_project(tmp_path, one_agent())
    path.write_text(" \n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: the file is empty; a claude.json holds a JSON")
    assert info.value.problems == ["(top level): the file is empty"]


def test_find_config_without_a_project_suggests_init(tmp_path: Path) -> None:
    # A real filesystem may have a .claude/claude.json above tmp_path; only run when it does not.
    if any((p / ".claude" / "claude.json").is_file() for p in tmp_path.parents):
        pytest.skip("a parent of tmp_path holds a Claude Force project")
    with pytest.raises(ConfigError, match=r"no \.claude/claude\.json found in .*claude-force init"):
        find_config(tmp_path)


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name",
    [
        *("a", "A1", "code-reviewer", "v1.2_beta", "x" * 64, "9lives"),
        *("é", "revisor-código", "审查", "Code Reviewer", "QA Lead 2"),
    ],
)
def test_valid_agent_names(name: str) -> None:
    assert validate_agent_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        *("", "-a", ".a", "_a", "a  b", "a ", " a", "x" * 65, "a\n", "a/b", "../x", "a:b"),
        *("a\u200bb", "a\u202eb", "e\u0301"),  # invisible, bidi and combining characters
    ],
)
def test_invalid_agent_names(name: str) -> None:
    with pytest.raises(InvalidArgumentError, match="names are 1-64 letters, digits"):
        validate_agent_name(name)


def test_non_string_agent_name_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="agent name must be a string, got integer"):
        validate_agent_name(3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- prompts


def test_agent_without_contract_reads_none(tmp_path: Path) -> None:
    spec = load_config(make_project(tmp_path, one_agent())).agent("a")
    assert read_agent_prompt(spec) == ("You are agents/a.md.\n", None)


def test_agent_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    spec = load_config(make_project(tmp_path, one_agent())).agent("a")
    spec.file.write_bytes(b"caf\xe9\n")
    with pytest.raises(ConfigError, match=rf"agent 'a' file {spec.file} is not valid UTF-8"):
        read_agent_prompt(spec)


def test_empty_agent_definition_is_refused(tmp_path: Path) -> None:
    spec = load_config(make_project(tmp_path, one_agent())).agent("a")
    spec.file.write_text("  \n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"definition file .* is empty"):
        read_agent_prompt(spec)


def test_agent_file_removed_after_load_is_reported(tmp_path: Path) -> None:
    spec = load_config(make_project(tmp_path, one_agent())).agent("a")
    spec.file.unlink()
    with pytest.raises(ConfigError, match=rf"cannot read agent 'a' file {spec.file}"):
        read_agent_prompt(spec)


# --------------------------------------------------------------------------- model and module


def test_default_model_is_current_in_the_installed_sdk() -> None:
    from anthropic._data import DEPRECATED_MODELS
    from anthropic.types.model_param import ModelParam

    literal = next(arg for arg in typing.get_args(ModelParam) if typing.get_origin(arg) is not None)
    assert DEFAULT_MODEL in typing.get_args(literal)
    assert DEFAULT_MODEL not in DEPRECATED_MODELS


def _imports_of(module: Any) -> set[str]:
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    return {name for name in imported if name.split(".")[0] not in sys.stdlib_module_names}


def test_config_module_imports_only_the_stdlib_and_errors() -> None:
    # The CLI loads the config before it needs the SDK, so this module must not pull it in
    # (a subprocess check would also see whatever claude_force/__init__.py imports).
    assert _imports_of(_config) == {
        "_errors",
        "_files",
        "_config_json",
        "_config_limits",
        "_config_text",
        "_config_workflows",
    }
    for section in (_config_json, _config_limits, _config_text, _config_workflows):
        assert _imports_of(section) <= {"_config_text"}
    assert _imports_of(_files) == set()


def test_docstring_examples_run() -> None:
    result = doctest.testmod(_config)
    assert result.attempted > 0
    assert result.failed == 0


def test_project_config_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        ProjectConfig(Path("x"), Path("."), {}, {})  # type: ignore[call-arg]
