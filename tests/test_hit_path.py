"""The memos and batches that make a response-cache hit cheap never change what a call sends,
returns or records: a built request is reused only for the same inputs and unchanged agent
files, the ledger and Prometheus count every hit exactly, and the cheaper ``__init__`` of the
values made on every call builds what the dataclass one builds."""

from __future__ import annotations

import dataclasses
import hashlib
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from claude_force import AgentResult, AsyncAgentOrchestrator, InvalidArgumentError, load_config
from claude_force._frozen import quick_init
from claude_force._ledger import task_hash
from claude_force._metrics import HIT_BATCH
from claude_force._record import CallContext
from claude_force._request import RequestBuilder, RequestMemo, TaskSpec, cache_key
from claude_force.testing import Simulator

from .conftest import API_KEY

AGENT = "code-reviewer"


def builder(project: Path, **kw: Any) -> RequestBuilder:
    kw.setdefault("default_model", "claude-sonnet-4-5")
    kw.setdefault("prompt_cache_ttl", "5m")
    kw.setdefault("max_task_chars", 10_000)
    return RequestBuilder(load_config(project), **kw)


def test_a_repeat_is_the_memoised_request_and_an_edit_is_a_new_one(project: Path) -> None:
    b = builder(project)
    first = b.build(TaskSpec(AGENT, "Review utils.py"))
    assert b.build(TaskSpec(AGENT, "Review utils.py")) is first
    spec = b.config.agent(AGENT)
    spec.file.write_text(spec.file.read_text() + "\nAlso check logging.\n")
    edited = b.build(TaskSpec(AGENT, "Review utils.py"))
    assert edited is not first and cache_key(edited) != cache_key(first)
    assert "Also check logging." in edited.system.text
    assert spec.contract is not None
    spec.contract.write_text(spec.contract.read_text() + "\nNew rule.\n")
    contract_edit = b.build(TaskSpec(AGENT, "Review utils.py"))
    assert cache_key(contract_edit) not in (cache_key(first), cache_key(edited))


@pytest.mark.parametrize(
    "other",
    [
        TaskSpec(AGENT, "Review utils.py", temperature=1.0),  # 1 and 1.0 encode differently
        TaskSpec(AGENT, "Review utils.py", max_tokens=100),
        TaskSpec(AGENT, "Review utils.py", model="claude-haiku-4-5"),
        TaskSpec(AGENT, "Review utils.py", prompt_cache_ttl=None),
        TaskSpec(AGENT, "Review utils.py", prompt_cache_ttl="1h"),
        TaskSpec(AGENT, "Review utils.py "),
    ],
)
def test_other_options_never_reuse_a_request(project: Path, other: TaskSpec) -> None:
    b = builder(project)
    base = b.build(TaskSpec(AGENT, "Review utils.py", temperature=1))
    fresh = builder(project).build(other)  # what a builder without a memo makes
    got = b.build(other)
    assert got is not base and cache_key(got) == cache_key(fresh) != cache_key(base)


def test_minus_zero_temperature_is_zero_whichever_comes_first(project: Path) -> None:
    for order in ((0.0, -0.0), (-0.0, 0.0)):
        b = builder(project)
        keys = {
            cache_key(b.build(TaskSpec(AGENT, "Review utils.py", temperature=t))) for t in order
        }
        fresh = builder(project).build(TaskSpec(AGENT, "Review utils.py", temperature=-0.0))
        assert keys == {cache_key(fresh)}


def test_a_model_name_that_is_not_text_is_refused(project: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="model must be a model name"):
        builder(project).build(TaskSpec(AGENT, "Review utils.py", model="claude\udc80"))


def test_memory_blocks_and_builder_settings_are_part_of_the_memo_key(project: Path) -> None:
    b = builder(project)
    plain = b.build(TaskSpec(AGENT, "Review utils.py"))
    remembered = b.build(TaskSpec(AGENT, "Review utils.py"), memory=("earlier work",))
    assert cache_key(remembered) != cache_key(plain)
    b.default_model = "claude-haiku-4-5"
    assert b.build(TaskSpec(AGENT, "Review utils.py")).model == "claude-haiku-4-5"
    b.max_task_chars = 5
    with pytest.raises(InvalidArgumentError, match="over the limit"):
        b.build(TaskSpec(AGENT, "Review utils.py"))  # validated again, not served


def test_another_config_of_the_same_agent_is_not_served(project: Path) -> None:
    b = builder(project)
    first = b.build(TaskSpec(AGENT, "Review utils.py"))
    b.config = load_config(project)  # equal files, but another definition object
    again = b.build(TaskSpec(AGENT, "Review utils.py"))
    assert again is not first and cache_key(again) == cache_key(first)


def test_an_invalid_option_is_refused_even_after_a_valid_twin(project: Path) -> None:
    b = builder(project)
    b.build(TaskSpec(AGENT, "t", use_memory=True))
    with pytest.raises(InvalidArgumentError, match="use_memory"):
        b.build(TaskSpec(AGENT, "t", use_memory=1))  # type: ignore[arg-type]


def test_the_request_memo_is_bounded_in_entries_and_characters(project: Path) -> None:
    b = builder(project)
    b.memo = RequestMemo(entries=3, chars=100)
    for i in range(5):
        b.build(TaskSpec(AGENT, f"task {i}"))
    assert len(b.memo) == 3
    b.build(TaskSpec(AGENT, "x" * 60))
    b.build(TaskSpec(AGENT, "y" * 60))  # together over 100 characters: the older one goes
    assert len(b.memo) == 1
    b.build(TaskSpec(AGENT, "z" * 101))  # larger than the whole memo: not kept
    assert len(b.memo) == 1


def _sample(text: str, name: str, labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} with {labels} in the exposition")


async def test_metrics_and_ledger_count_every_hit_exactly(
    project: Path, sim: Simulator, tmp_path: Path
) -> None:
    hits = 2 * HIT_BATCH + 7  # two batches added on the way, seven waiting at the scrape
    async with AsyncAgentOrchestrator(
        project, api_key=API_KEY, base_url=sim.base_url, cache_dir=tmp_path / "cache"
    ) as orch:
        await orch.execute_agent(AGENT, "Review utils.py")
        for i in range(hits):
            assert (await orch.execute_agent(AGENT, "Review utils.py")).cached, i
        metrics = orch.metrics
        assert metrics is not None
        server, thread = metrics.serve(0)
        try:
            url = f"http://127.0.0.1:{server.server_port}/metrics"
            cache_only = url + "?name[]=claude_force_cache_total"
            with urllib.request.urlopen(cache_only, timeout=10) as reply:
                filtered = reply.read().decode()
            with urllib.request.urlopen(url, timeout=10) as reply:
                scraped = reply.read().decode()
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
        rows = orch.usage_rows()
    assert _sample(filtered, "claude_force_cache_total", 'result="hit"') == hits
    assert _sample(scraped, "claude_force_cache_total", 'result="hit"') == hits
    assert _sample(scraped, "claude_force_cache_total", 'result="miss"') == 1
    assert _sample(scraped, "claude_force_requests_total", 'outcome="success"') == hits + 1
    count = "claude_force_request_latency_seconds_count"
    assert _sample(scraped, count, f'agent="{AGENT}"') == hits + 1
    assert [r.cached for r in rows] == [False] + [True] * hits


# -- quick_init: the same __init__ as dataclass writes, for less --------------------------------


def _reference(cls: type) -> type:
    """The class as ``dataclass(frozen=True, slots=True)`` alone would make it."""
    specs = [(f.name, f.type, f) for f in dataclasses.fields(cls)]
    made: type = dataclasses.make_dataclass("Ref", specs, frozen=True, slots=True)
    return made


def _values(obj: object) -> list[object]:
    return [getattr(obj, f.name) for f in dataclasses.fields(obj)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cls", "args", "kwargs"),
    [
        (AgentResult, ("a", True, "out"), {}),
        (AgentResult, ("a", False, "", ["e"]), {"model": "m", "cost": Decimal(1), "step": 2}),
        (TaskSpec, (AGENT, "t"), {"temperature": 0.5, "prompt_cache_ttl": None}),
        (CallContext, ("t",), {"workflow_run": "r", "batch": True}),
    ],
)
def test_quick_init_builds_what_dataclass_builds(
    cls: type, args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    ours, reference = cls(*args, **kwargs), _reference(cls)(*args, **kwargs)
    assert _values(ours) == _values(reference)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(ours, dataclasses.fields(ours)[0].name, "changed")
    with pytest.raises(TypeError):
        cls()
    with pytest.raises(TypeError):
        cls(*args, no_such_field=1)


def test_quick_init_gives_each_instance_its_own_default_and_runs_post_init() -> None:
    first, second = AgentResult("a", True, ""), AgentResult("a", True, "")
    assert first.errors == [] and first.errors is not second.errors

    @quick_init
    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        value: int

        def __post_init__(self) -> None:
            if self.value < 0:
                raise ValueError(f"value must be >= 0, got {self.value}")

    assert Checked(1).value == 1
    with pytest.raises(ValueError, match="got -1"):
        Checked(-1)


def test_quick_init_refuses_what_it_cannot_build_alike() -> None:
    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class KeywordOnly:
        value: int

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        value: int

    with pytest.raises(TypeError, match="positional"):
        quick_init(KeywordOnly)
    with pytest.raises(TypeError, match="slots"):
        quick_init(NoSlots)


def test_kept_task_hashes_are_the_hashes() -> None:
    class Loose(str):
        """Hashes and compares like a task already kept: must never get its digest."""

        def __hash__(self) -> int:
            return hash("Review utils.py")

        def __eq__(self, other: object) -> bool:
            return True

    for text in ("Review utils.py", "x" * 2000, "Review utils.py"):
        assert task_hash(text) == hashlib.sha256(text.encode()).hexdigest()
    odd = Loose("something else")
    assert task_hash(odd) == hashlib.sha256(b"something else").hexdigest()
