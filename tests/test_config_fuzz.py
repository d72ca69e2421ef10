"""Fuzzing ``load_config``: any malformed project is a ConfigError naming where, never a crash.

Each example writes ``.claude/claude.json`` into one shared project folder that also holds
odd entries an agent may point at (a FIFO, a folder, symlink loops, links leaving the folder).
The outcome must be a valid ProjectConfig, or a ConfigError whose every problem starts with a
JSON path (``agents.a.file: ...``) or a JSON position (``line 3, column 7: ...``) and whose
message prints as UTF-8. ``CLAUDE_FORCE_FUZZ_EXAMPLES=20000`` runs a longer, random search.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claude_force._config import ProjectConfig, StepSpec, load_config
from claude_force._errors import ConfigError

from ._support import no_hang

_LONG_RUN = os.environ.get("CLAUDE_FORCE_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(_LONG_RUN) if _LONG_RUN else 800,
    derandomize=_LONG_RUN is None,  # the suite sees the same examples on every run
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Raw(str):
    """JSON text spliced into a document verbatim (numbers and nesting json.dumps refuses)."""


def dump(value: object) -> str:
    """Serialise like json.dumps, but splice Raw text and keep lone surrogates escaped."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{dump(str(k))}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)


# --------------------------------------------------------------------------- the project folder

AGENT_FILES = ("agents/a.md", "agents/b.md", "contracts/a.contract")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("fuzz")
    root = base / ".claude"
    for name in AGENT_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"You are {name}.\n", encoding="utf-8")
    (base / "outside.md").write_text("outside\n", encoding="utf-8")
    os.mkfifo(root / "agents" / "fifo")
    (root / "agents" / "folder").mkdir()
    (root / "agents" / "loop").symlink_to("loop")
    (root / "agents" / "dangling").symlink_to("missing.md")
    (root / "agents" / "outside").symlink_to(base / "outside.md")
    (root / "agents" / "inside").symlink_to("a.md")
    (root / "agents" / "zero").symlink_to("/dev/zero")
    return root / "claude.json"


# --------------------------------------------------------------------------- strategies

PATH_VALUES = [
    "agents/a.md",
    "agents/fifo",
    "agents/folder",
    "agents/loop",
    "agents/dangling",
    "agents/outside",
    "agents/inside",
    "agents/zero",
    "agents/a.md/x",
    "agents/../agents/a.md",
    "../outside.md",
    "agents/../../outside.md",
    "/etc/passwd",
    "C:\\Windows\\win.ini",
    "\\\\server\\share\\x.md",
    "~/x.md",
    "agents/",
    ".",
    "",
    " ",
    "agents/a\x00.md",
    "agents/" + "x" * 300 + ".md",
    "agents/" + "/".join(["d" * 200] * 30),
    "agents/\udc80.md",
    "agents/\ud800.md",
    "agents/\u00e9\u4e2d.md",
    "agents/a.md\n",
]

odd_text = st.one_of(
    st.sampled_from(PATH_VALUES),
    st.text(st.characters(exclude_categories=()), max_size=20),  # surrogates included
    st.integers(250, 5000).map(lambda n: "n" * n),
    st.sampled_from(["\ufeff", "\x00", "5m", "1h", "high", "a", "b", "zz", "-x", "a b"]),
    # near misses of the extended workflow form's keys and values
    st.sampled_from(["steps", "handof", "on_fail", "agnt", "previous", "continue", "stop"]),
)

HUGE = [
    Raw("9" * 5000),
    Raw("-" + "1" * 700),
    Raw("1" * 640),
    Raw("1e999"),
    Raw("-1e999"),
    Raw("NaN"),
    Raw("Infinity"),
    Raw("0." + "0" * 5000 + "1"),
]
DEEP = [
    Raw("[" * 100_000 + "]" * 100_000),
    Raw('{"a":' * 50_000 + "1" + "}" * 50_000),
    Raw("[" * 2_000 + "]" * 2_000),
    Raw("[" * 200 + "]" * 200),
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-5, 200_000),
    st.floats(allow_nan=True, allow_infinity=True),
    odd_text,
    st.sampled_from(HUGE),
)
odd_values = st.recursive(
    st.one_of(scalars, st.sampled_from(DEEP)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(odd_text, inner, max_size=4),
    ),
    max_leaves=12,
)


def valid_config() -> dict[str, Any]:
    return {
        "agents": {
            "a": {
                "file": "agents/a.md",
                "contract": "contracts/a.contract",
                "domains": ["code"],
                "priority": 1,
                "model": "claude-sonnet-5-5",
                "max_tokens": 1000,
                "temperature": 0.5,
                "cache_ttl": "5m",
                "description": "reviews",
            },
            "b": {"file": "agents/b.md", "priority": "high"},
        },
        "workflows": {
            "w": ["a", ["a", "b"]],
            "v": ["b"],
            "x": {
                "steps": [
                    {"agent": "a", "model": "claude-haiku-4-5"},
                    [{"agent": "b", "max_tokens": 100, "temperature": 0.2}, "a"],
                ],
                "handoff": "previous",
                "on_failure": "continue",
            },
        },
        "default_model": "claude-sonnet-5-5",
        "rate_limits": {
            "default": {"input_tokens_per_minute": 400_000},
            "sonnet": {"requests_per_minute": 50, "output_tokens_per_minute": 8_000},
        },
        "settings": {"keep": [1, 2, {"x": None}]},
    }


def _locations(node: object, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _locations(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _locations(child, (*prefix, index))


LOCATIONS = list(_locations(valid_config()))


@st.composite
def mutated_configs(draw: st.DrawFn) -> str:
    """A valid config with one to three places broken: a value replaced, a key renamed or gone."""
    config: Any = valid_config()
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(LOCATIONS))
        if not where:
            config = draw(odd_values)
            continue
        parent: Any = config
        try:
            for step in where[:-1]:
                parent = parent[step]
            last = where[-1]
            parent[last]  # the place may be gone after an earlier mutation
        except (KeyError, IndexError, TypeError):
            continue
        if not isinstance(parent, (dict, list)):  # an earlier mutation put text there
            continue
        action = draw(st.sampled_from(["replace", "replace", "rename", "delete"]))
        if action == "replace":
            parent[last] = draw(odd_values)
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(odd_text)] = parent.pop(last)
        elif isinstance(parent, dict):
            del parent[last]
        else:
            parent.pop(last)
    return dump(config)


INVALID_UTF8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80"]


@st.composite
def damaged_bytes(draw: st.DrawFn) -> bytes:
    """A config's bytes truncated, spliced with invalid UTF-8, or behind an odd BOM."""
    data = draw(mutated_configs()).encode("utf-8", "surrogatepass")
    kind = draw(st.sampled_from(["truncate", "splice", "bom", "utf16", "random", "empty"]))
    at = draw(st.integers(0, len(data)))
    if kind == "truncate":
        return data[:at]
    if kind == "splice":
        return data[:at] + draw(st.sampled_from(INVALID_UTF8)) + data[at:]
    if kind == "bom":
        return b"\xef\xbb\xbf" + data
    if kind == "utf16":
        return "\ufeff".encode("utf-16-le") + data.decode("utf-8", "replace").encode("utf-16-le")
    if kind == "random":
        return draw(st.binary(max_size=200))
    return b""


documents = st.one_of(
    mutated_configs().map(lambda text: text.encode("utf-8", "surrogatepass")),
    odd_values.map(lambda value: dump(value).encode("utf-8", "surrogatepass")),
    damaged_bytes(),
)


# --------------------------------------------------------------------------- the property

_JSON_PATH = re.compile(
    r"^(?:\(top level\)|line \d+, column \d+"
    r"|(?:[A-Za-z0-9][A-Za-z0-9_-]*|\[\d+\]|\[\"(?:[^\"\\]|\\.)*\"\])"
    r"(?:\.[A-Za-z0-9][A-Za-z0-9_-]*|\[\d+\]|\[\"(?:[^\"\\]|\\.)*\"\])*): "
)


def check_outcome(config_path: Path) -> None:
    """Load and check the outcome; anything but ProjectConfig or ConfigError propagates."""
    try:
        with no_hang():
            result = load_config(config_path)
    except ConfigError as exc:
        message = str(exc)
        message.encode("utf-8")  # printable: no lone surrogates reach the terminal
        assert str(config_path) in message, message[:300]
        assert exc.problems, message[:300]
        for problem in exc.problems:
            assert _JSON_PATH.match(problem), f"problem without a JSON path: {problem[:300]!r}"
        return
    assert isinstance(result, ProjectConfig)
    # An agent or workflow that cannot be used says why, with its JSON path, when used.
    for name, why in result.unusable_agents.items():
        assert _JSON_PATH.match(why), why[:300]
        with pytest.raises(ConfigError, match="cannot be used"):
            result.agent(name)
    for name, why in result.unusable_workflows.items():
        assert _JSON_PATH.match(why), why[:300]
        with pytest.raises(ConfigError, match="cannot run"):
            result.workflow(name)


def write_config(config_path: Path, data: bytes) -> None:
    config_path.write_bytes(data)


@FUZZ
@given(data=documents)
def test_malformed_configs_are_config_errors_with_a_json_path(project: Path, data: bytes) -> None:
    write_config(project, data)
    check_outcome(project)


def test_the_valid_base_config_loads(project: Path) -> None:
    write_config(project, dump(valid_config()).encode())
    config = load_config(project)
    assert list(config.agents) == ["a", "b"]
    assert config.workflow("w") == (("a",), ("a", "b"))
    extended = config.workflow_spec("x")
    assert (extended.handoff, extended.on_failure) == ("previous", "continue")
    assert extended.stages[1][0] == StepSpec("b", max_tokens=100, temperature=0.2)
    assert config.workflow("x") == (("a",), ("b", "a"))
    assert config.rate_limits["sonnet"] == {
        "requests_per_minute": 50,
        "output_tokens_per_minute": 8_000,
    }
    assert "rate_limits" not in config.extra


# --------------------------------------------------------------------------- the cases seen


def problems_of(config_path: Path, text: str) -> list[str]:
    write_config(config_path, text.encode("utf-8", "surrogatepass"))
    with no_hang(), pytest.raises(ConfigError) as info:
        load_config(config_path)
    return info.value.problems


def agent_with(**fields: object) -> str:
    return dump({"agents": {"a": {"file": "agents/a.md", **fields}}})


def test_a_5000_digit_number_names_its_path(project: Path) -> None:
    assert problems_of(project, agent_with(max_tokens=Raw("9" * 5000))) == [
        "agents.a.max_tokens: a number of 5000 digits is too large; use one of at most 640 digits"
    ]


def test_100000_nested_brackets_give_the_position(project: Path) -> None:
    text = '{"agents": {}, "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert problems_of(project, text) == [
        "line 1, column 84: nested more than 64 levels deep; flatten it"
    ]


def test_nesting_below_the_parser_limit_names_its_path(project: Path) -> None:
    text = '{"agents": {}, "x": ' + "[" * 200 + "]" * 200 + "}"
    assert problems_of(project, text) == [
        "x" + "[0]" * 63 + ": nested more than 64 levels deep; flatten it"
    ]


def test_a_300_character_file_name_names_its_path(project: Path) -> None:
    name = "agents/" + "x" * 300 + ".md"
    write_config(project, agent_with(file=name).encode())
    problem = load_config(project).unusable_agents["a"]
    assert problem.startswith("agents.a.file: agent 'a' file 'agents/xxx")
    assert "the name is too long; use a shorter path" in problem


def test_a_lone_surrogate_names_its_path(project: Path) -> None:
    (problem,) = problems_of(project, agent_with(description="\ud800"))
    assert problem.startswith("agents.a.description: contains an unpaired surrogate escape")


def test_many_problems_are_counted_and_the_first_50_listed(project: Path) -> None:
    text = dump({"agents": {f"a{i}": {} for i in range(500)}})
    write_config(project, text.encode())
    with pytest.raises(ConfigError) as info:
        load_config(project)
    assert len(info.value.problems) == 50
    assert "(500 problems; the first 50 are listed)" in str(info.value)


def test_long_keys_and_values_are_cut_in_messages(project: Path) -> None:
    problems = problems_of(project, dump({"agents": {"n" * 10_000: 5}}))
    assert len(problems) == 2
    assert all(len(problem) < 400 for problem in problems)
    assert all(problem.startswith('agents["' + "n" * 60 + '..."]: ') for problem in problems)
    assert "(10000 characters)" in problems[0]


# --------------------------------------------------------------------------- the file itself


def file_error(config_path: Path) -> str:
    with no_hang(), pytest.raises(ConfigError) as info:
        load_config(config_path)
    return str(info.value)


def test_a_fifo_as_the_config_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "claude.json")
    message = file_error(tmp_path / "claude.json")
    assert "is a FIFO (named pipe), not a regular file" in message


def test_a_device_as_the_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "claude.json").symlink_to("/dev/zero")
    assert "is a character device, not a regular file" in file_error(tmp_path / "claude.json")


def test_a_symlink_loop_as_the_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "claude.json").symlink_to("claude.json")
    assert "symbolic link loop; fix or remove the link" in file_error(tmp_path / "claude.json")


def test_a_folder_as_the_config_is_refused(tmp_path: Path) -> None:
    assert "is a folder; pass the configuration file" in file_error(tmp_path)


def test_a_config_over_10_mib_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "claude.json"
    with path.open("wb") as handle:
        handle.truncate(10 * 1024 * 1024 + 1)
    assert "is larger than 10 MiB" in file_error(path)


def test_an_empty_config_says_it_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "claude.json"
    path.write_bytes(b"")
    assert f"{path}: the file is empty;" in file_error(path)


def test_a_utf16_config_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "claude.json"
    path.write_bytes('{"agents": {}}'.encode("utf-16"))
    assert "line 1, column 1: the file is UTF-16; save it as UTF-8" in file_error(path)


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "claude.json"
    path.write_bytes(b'\xef\xbb\xbf{"agents": {}}')
    assert load_config(path).agents == {}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a\x00b", "contains a NUL byte"),
        ("x" * 300, "the name is too long"),
        ("\ud800", "cannot be encoded as a file name"),
    ],
)
def test_impossible_config_paths_are_refused(tmp_path: Path, name: str, expected: str) -> None:
    assert expected in file_error(tmp_path / name)


def test_a_config_path_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"must be a str or os\.PathLike, got int"):
        load_config(3)  # type: ignore[arg-type]


def test_more_than_10000_agents_is_one_problem(project: Path) -> None:
    agents = {f"a{i}": {"file": "agents/a.md"} for i in range(10_001)}
    assert problems_of(project, dump({"agents": agents})) == [
        "agents: 10001 agents are defined, more than the 10000 supported; "
        "split the project into several folders"
    ]


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (5, "rate_limits: expected an object mapping a model family"),
        ({"sonnet": 50}, "rate_limits.sonnet: expected an object with any of requests_per_minute"),
        (
            {"sonnet": {"requests_per_min": 50}},
            "rate_limits.sonnet.requests_per_min: unknown limit; use requests_per_minute,",
        ),
        (
            {"default": {"input_tokens_per_minute": 0}},
            "rate_limits.default.input_tokens_per_minute: expected an integer >= 1, got 0",
        ),
        (
            {"opus": {"output_tokens_per_minute": 2.5}},
            "rate_limits.opus.output_tokens_per_minute: expected an integer >= 1, got 2.5",
        ),
        (
            {"opus": {"requests_per_minute": True}},
            "rate_limits.opus.requests_per_minute: expected an integer >= 1, got true",
        ),
        ({"": {}}, 'rate_limits[""]: expected a model family such as "sonnet"'),
    ],
)
def test_bad_rate_limits_name_their_path(project: Path, section: object, expected: str) -> None:
    text = dump({"agents": {"a": {"file": "agents/a.md"}}, "rate_limits": section})
    (problem,) = problems_of(project, text)
    assert problem.startswith(expected), problem
