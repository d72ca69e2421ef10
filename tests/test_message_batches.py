"""The Message Batches engine against the simulator: records, prices, cache, chunks, resuming."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from claude_force import AsyncAgentOrchestrator, Budget, run_batch_file
from claude_force._batch_io import BatchRecord
from claude_force._errors import APIError, BudgetExceeded, InvalidArgumentError
from claude_force._message_batches import (
    BatchesSettings,
    BatchProgress,
    custom_id_for,
    run_message_batches,
)
from claude_force._request import TaskSpec, cache_key
from claude_force._results import AgentResult
from claude_force.testing import Fault, Simulator

from ._support import FakeTime
from .conftest import API_KEY

DAY = 24 * 3600.0


Item = dict[str, Any]


def item(item_id: str, agent: str, task: str) -> Item:
    return {"id": item_id, "agent": agent, "task": task}


def items(n: int, agent: str = "code-reviewer") -> list[Item]:
    return [item(f"line-{i}", agent, f"Review module number {i}") for i in range(n)]


def res(record: BatchRecord) -> AgentResult:
    """The call's result behind a record (a sent item has one)."""
    assert record.result is not None
    return record.result


@pytest.fixture
def time_() -> FakeTime:
    return FakeTime()


@pytest.fixture
def bsim(time_: FakeTime) -> Iterator[Simulator]:
    """A simulator whose batches take an hour of the fake clock the engine's polls move."""
    with Simulator(clock=time_.clock, batch_delay=3600.0) as sim:
        yield sim


def make(project: Path, sim: Simulator, time_: FakeTime, **kw: object) -> AsyncAgentOrchestrator:
    kw.setdefault("enable_cache", False)
    # Batch requests are built without memory; direct calls compared with them must be too.
    kw.setdefault("enable_memory", False)
    return AsyncAgentOrchestrator(
        project,
        api_key=API_KEY,
        base_url=sim.base_url,
        sleep=time_.sleep,
        **kw,  # type: ignore[arg-type]
    )


async def run(
    orch: AsyncAgentOrchestrator,
    todo: list[Item],
    state: Path,
    time_: FakeTime,
    **kw: Any,
) -> dict[str, BatchRecord]:
    got: dict[str, BatchRecord] = {}
    kw.setdefault("poll_initial", 60.0)
    kw.setdefault("poll_max", 600.0)
    settings = BatchesSettings(sleep=time_.sleep, **kw)
    async for record in run_message_batches(orch, todo, state_path=state, settings=settings):
        assert record.id not in got
        got[record.id] = record
    return got


async def test_same_records_as_direct_calls_at_half_price(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    todo = items(4)
    async with make(project, bsim, time_) as orch:
        direct = [await orch.execute_agent(i["agent"], i["task"]) for i in todo]
        progress: list[BatchProgress] = []
        got = await run(orch, todo, tmp_path / "s.json", time_, on_progress=progress.append)
        rows = orch.usage_rows()
    assert bsim.batches_created == 1 and bsim.batch_requests_submitted == 4
    assert len(bsim.message_requests) == 4  # the direct calls only
    for one, d in zip(todo, direct, strict=True):
        record = got[one["id"]]
        b = res(record)
        assert record.success and not record.cached and record.output == d.output
        assert (b.output, b.usage, b.model, b.stop_reason) == (
            d.output,
            d.usage,
            d.model,
            d.stop_reason,
        )
        assert d.cost is not None and b.cost == d.cost / 2 and record.cost == b.cost
        assert b.metadata["batch_id"].startswith("msgbatch_")
    # Polled with backoff until the hour passed: 60, 120, 240, 480, 600... (jittered down).
    assert time_.sleeps[0] <= 60.0 and max(time_.sleeps) <= 600.0 and len(time_.sleeps) >= 4
    assert progress[0] == BatchProgress(1, 0, 4, 0, 0, 0, 0)
    assert progress[-1] == BatchProgress(1, 1, 0, 4, 0, 0, 0)
    batch_rows = [r for r in rows if r.batch]
    assert len(batch_rows) == 4 and len([r for r in rows if not r.batch]) == 4
    assert sum(r.cost_usd or 0 for r in batch_rows) == sum(r.cost or 0 for r in got.values())


async def test_cache_hits_are_not_submitted_and_answers_are_cached(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    todo = items(3)
    async with make(project, bsim, time_, enable_cache=True) as orch:
        warm = await orch.execute_agent(todo[0]["agent"], todo[0]["task"])
        got = await run(orch, todo, tmp_path / "s.json", time_)
        assert got["line-0"].cached and got["line-0"].output == warm.output
        assert bsim.batch_requests_submitted == 2
        calls = len(bsim.message_requests)
        later = await orch.execute_agent(todo[2]["agent"], todo[2]["task"])
        assert later.cached and later.output == got["line-2"].output
        # What the cache remembers as saved is what the batch cost.
        assert later.cost_saved == got["line-2"].cost
        assert len(bsim.message_requests) == calls


async def test_chunks_within_request_and_byte_limits(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    async with make(project, bsim, time_) as orch:
        got = await run(orch, items(7), tmp_path / "a.json", time_, max_requests=3)
        assert (bsim.batches_created, bsim.batch_requests_submitted) == (3, 7)
        assert all(r.success for r in got.values()) and len(got) == 7
        # A byte limit below two requests' JSON puts each in a batch of its own.
        await run(orch, items(2, "test-writer"), tmp_path / "b.json", time_, max_bytes=100)
        assert bsim.batches_created == 5
    with pytest.raises(InvalidArgumentError, match="max_requests"):
        await run(orch, items(1), tmp_path / "c.json", time_, max_requests=0)


async def test_restart_during_polling_collects_instead_of_resubmitting(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    state = tmp_path / "RESULTS.jsonl.batches.json"
    todo = [*items(3), item("docs/a b.md", "code-reviewer", "Review the docs")]
    async with make(project, bsim, time_) as orch:
        polls: list[BatchProgress] = []

        def crash(progress: BatchProgress) -> None:
            polls.append(progress)
            task.cancel()  # dies during the poll's sleep, as a killed process would

        async def crashing_run() -> None:
            await run(orch, todo, state, time_, on_progress=crash)

        task = asyncio.create_task(crashing_run())
        with pytest.raises(asyncio.CancelledError):
            await task
        assert polls and polls[-1].processing == 4
        assert bsim.batches_created == 1
        saved = json.loads(state.read_text(encoding="utf-8"))
        assert saved["items"][custom_id_for("docs/a b.md")][0] == "docs/a b.md"
        assert API_KEY not in state.read_text(encoding="utf-8")

        got = await run(orch, todo, state, time_)
        assert bsim.batches_created == 1 and bsim.batch_requests_submitted == 4
        assert sorted(got) == sorted(i["id"] for i in todo)
        assert all(r.success for r in got.values())
        saved = json.loads(state.read_text(encoding="utf-8"))
        assert saved["items"] == {} and list(saved["batches"][0].values())[1] is True

        # Collected batches are never read again; what is asked again is sent again.
        again = await run(orch, todo[:1], state, time_)
        assert again["line-0"].success and bsim.batches_created == 2


async def test_an_edited_request_is_submitted_anew(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    state = tmp_path / "s.json"
    async with make(project, bsim, time_) as orch:
        agen = run_message_batches(orch, items(2), state_path=state)
        await agen.aclose()  # nothing submitted before the first step
        assert bsim.batches_created == 0

        def stop(progress: BatchProgress) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            await run(orch, items(2), state, time_, on_progress=stop)
        edited = [items(2)[0], item("line-1", "code-reviewer", "Something else")]
        got = await run(orch, edited, state, time_)
    assert bsim.batches_created == 2 and bsim.batch_requests_submitted == 3
    assert got["line-1"].success and got["line-0"].success


async def test_errored_expired_and_canceled_requests_fail_clearly(
    project: Path, time_: FakeTime, tmp_path: Path
) -> None:
    with Simulator(clock=time_.clock, batch_delay=2 * DAY) as sim:
        sim.script_batch(None, Fault.status(500, message="disk on fire"))
        async with make(project, sim, time_) as orch:
            got = await run(
                orch, items(4), tmp_path / "s.json", time_, poll_initial=3600.0, poll_max=4 * 3600.0
            )
            rows = orch.usage_rows()
    assert got["line-0"].success
    failed = res(got["line-1"])
    assert not failed.success and failed.cost == 0 and got["line-1"].cost == 0
    assert isinstance(failed.error, APIError)
    assert failed.error.error_type == "batch_errored:api_error"
    assert "disk on fire" in str(failed.error)
    for late in ("line-2", "line-3"):
        err = res(got[late]).error
        assert isinstance(err, APIError) and err.error_type == "batch_expired"
        assert "24 hours" in str(err)
    assert sorted(r.error_type or "" for r in rows) == [
        "",
        "batch_errored:api_error",
        "batch_expired",
        "batch_expired",
    ]


async def test_budget_refuses_items_that_could_cross_it(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    got: list[BatchRecord] = []
    async with make(project, bsim, time_, budget=Budget(max_requests=2)) as orch:
        settings = BatchesSettings(sleep=time_.sleep)
        agen = run_message_batches(
            orch, items(4), state_path=tmp_path / "s.json", settings=settings
        )
        with pytest.raises(BudgetExceeded, match="max_requests"):
            async for record in agen:
                got.append(record)
        assert orch.budget is not None
        spent = orch.budget.spent
    # As in the one-call mode: what could cross the budget is not sent and has no record (a
    # rerun sends it); what was submitted before the stop is collected first.
    assert bsim.batch_requests_submitted == 2
    assert [r.id for r in got] == ["line-0", "line-1"] and all(r.success for r in got)
    assert spent["requests"] == 2
    assert spent["cost_usd"] == got[0].cost + got[1].cost  # type: ignore[operator]


async def test_invalid_and_repeated_items_are_failed_results(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    todo = [*items(1), item("line-0", "code-reviewer", "x"), item("b", "nobody", "x")]
    async with make(project, bsim, time_) as orch:
        settings = BatchesSettings(sleep=time_.sleep)
        records = [
            r
            async for r in run_message_batches(
                orch, todo, state_path=tmp_path / "s.json", settings=settings
            )
        ]
    # Refused as the one-call-per-item mode refuses them: malformed records, nothing sent.
    assert [(r.id, r.success, r.malformed) for r in records][:2] == [
        ("line-0", False, True),
        ("b", False, True),
    ]
    assert records[0].error == "item 2: id 'line-0' was used by an earlier item; ids must be unique"
    assert records[1].error is not None and "nobody" in records[1].error
    assert records[2].id == "line-0" and records[2].success
    assert bsim.batch_requests_submitted == 1


async def test_refused_batch_creation_fails_its_items_and_keeps_state(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    state = tmp_path / "s.json"
    bsim.script_batch_api(Fault.status(401))
    async with make(project, bsim, time_) as orch:
        got = await run(orch, items(2), state, time_)
    # The attempt was recorded before the call and dropped once the refusal was certain.
    saved = json.loads(state.read_text(encoding="utf-8"))
    assert saved["batches"] == [] and saved["pending"] == {} and bsim.batches_created == 0
    err = res(got["line-0"]).error
    assert isinstance(err, APIError) and err.status_code == 401
    assert "refused a batch of 2 requests" in str(err) and API_KEY not in str(err)


async def test_poll_failures_retry_then_stop_resumably(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    state = tmp_path / "s.json"
    async with make(project, bsim, time_, max_retries=0) as orch:
        bsim.script_batch_api(None, Fault.status(500), Fault.reset(), None)
        got = await run(orch, items(2), state, time_)  # two failed polls, then fine
        assert len(got) == 2 and all(r.success for r in got.values())
        bsim.script_batch_api(None, *[Fault.status(503)] * 3)
        with pytest.raises(APIError, match="run again to collect"):
            await run(orch, items(2, "test-writer"), state, time_, max_poll_failures=3)
        again = await run(orch, items(2, "test-writer"), state, time_)
    assert len(again) == 2 and bsim.batches_created == 2


async def test_a_damaged_state_file_is_left_alone(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    state = tmp_path / "s.json"
    state.write_text("{not json", encoding="utf-8")
    async with make(project, bsim, time_) as orch:
        with pytest.raises(InvalidArgumentError, match="move it aside"):
            await run(orch, items(1), state, time_)
    assert state.read_text(encoding="utf-8") == "{not json"
    assert bsim.batches_created == 0


def test_custom_ids_are_valid_and_stable() -> None:
    assert custom_id_for("ok_ID-1") == "ok_ID-1"
    mapped = custom_id_for("x" * 65)
    assert mapped == custom_id_for("x" * 65) and len(mapped) <= 64
    assert custom_id_for("a b") != custom_id_for("a  b")


# -- a create whose answer is lost must not make a second paid batch ---------------------------


async def test_a_create_that_reached_the_service_is_adopted_not_repeated(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    state = tmp_path / "s.json"
    async with make(project, bsim, time_) as orch:
        # An unrelated batch of another size, made just before: never mistaken for ours.
        await run(orch, items(3, "test-writer"), tmp_path / "other.json", time_)
        assert bsim.batches_created == 1
        # The service makes the batch, then answers 500: the transport would retry it.
        bsim.script_batch_api(Fault.lost(500))
        got = await run(orch, items(2), state, time_)
        assert bsim.batches_created == 2 and bsim.batch_requests_submitted == 5
        assert all(r.success for r in got.values()) and len(got) == 2
        # The connection drops after the service made it, and no retry is left: the last
        # look before giving up finds it.
        bsim.script_batch_api(Fault.lost())
        async with make(project, bsim, time_, max_retries=0) as strict:
            again = await run(strict, items(2, "doc-writer"), state, time_)
        assert bsim.batches_created == 3 and all(r.success for r in again.values())
    saved = json.loads(state.read_text(encoding="utf-8"))
    assert saved["pending"] == {} and len(saved["batches"]) == 2


async def test_a_create_that_never_reached_the_service_is_made_once(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    async with make(project, bsim, time_) as orch:
        bsim.script_batch_api(Fault.status(500), Fault.reset())
        got = await run(orch, items(2), tmp_path / "s.json", time_)
    assert bsim.batches_created == 1 and all(r.success for r in got.values())
    # Each failure was followed by a look at the recent batches before the next create.
    lists = [r for r in bsim.requests if r.path == "/v1/messages/batches" and not r.body]
    assert len(lists) == 2


async def test_killed_between_accept_and_record_the_rerun_adopts_the_batch(
    project: Path,
    bsim: Simulator,
    time_: FakeTime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from claude_force import _message_batches as engine

    state = tmp_path / "s.json"
    real_save = engine._State.save
    saves: list[int] = []

    async def dies_on_the_second_save(self: Any) -> None:
        saves.append(1)
        if len(saves) == 2:  # the save that would name the accepted batch
            raise KeyboardInterrupt
        await real_save(self)

    async with make(project, bsim, time_) as orch:
        with monkeypatch.context() as patch:
            patch.setattr(engine._State, "save", dies_on_the_second_save)
            with pytest.raises(KeyboardInterrupt):
                await run(orch, items(3), state, time_)
        assert bsim.batches_created == 1
        saved = json.loads(state.read_text(encoding="utf-8"))
        assert saved["batches"] == [] and len(saved["pending"]) == 1
        got = await run(orch, items(3), state, time_)
    assert bsim.batches_created == 1 and bsim.batch_requests_submitted == 3
    assert sorted(got) == ["line-0", "line-1", "line-2"] and all(r.success for r in got.values())
    saved = json.loads(state.read_text(encoding="utf-8"))
    assert saved["pending"] == {} and saved["batches"][0]["collected"] is True


async def test_a_broken_results_stream_is_a_clear_error_and_a_rerun_finishes(
    project: Path, time_: FakeTime, tmp_path: Path
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(i) + "\n" for i in items(6)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    settings = BatchesSettings(sleep=time_.sleep, poll_initial=60.0)
    with Simulator(clock=time_.clock) as sim:
        # create, the poll, the look the SDK takes before the results; then half the stream.
        sim.script_batch_api(None, None, None, Fault.lost())
        async with make(project, sim, time_) as orch:
            with pytest.raises(APIError) as caught:
                await run_batch_file(orch, src, out, mode="batches", batches=settings)
            message = str(caught.value)
            assert message.startswith("reading the results of message batch msgbatch_")
            assert "broke off" in message and "run the same command again" in message
            assert API_KEY not in message
            first = [json.loads(line)["id"] for line in out.read_text().splitlines()]
            assert 0 < len(first) < 6, message  # the records read before the break are kept
            summary = await run_batch_file(orch, src, out, mode="batches", batches=settings)
        assert sim.batches_created == 1
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(i["id"] for i in items(6)) and ids[: len(first)] == first
    assert summary.skipped == len(first) and summary.succeeded == 6 - len(first)
    assert summary.complete


async def test_execute_batch_in_batches_mode(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    async with make(project, bsim, time_) as orch:
        with pytest.raises(InvalidArgumentError, match="needs state_path"):
            orch.execute_batch(items(1), mode="batches")
        settings = BatchesSettings(sleep=time_.sleep)
        state = tmp_path / "s.json"
        batch = orch.execute_batch(items(2), mode="batches", state_path=state, batches=settings)
        got = [r async for r in batch]
    assert sorted(r.id for r in got) == ["line-0", "line-1"] and all(r.success for r in got)
    assert bsim.batches_created == 1 and len(bsim.message_requests) == 0


# -- state the service or the file disagrees with ------------------------------------------------


async def test_a_batch_the_service_does_not_know_is_dropped_and_its_items_resubmitted(
    project: Path,
    bsim: Simulator,
    time_: FakeTime,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = tmp_path / "s.json"
    todo = items(2)
    async with make(project, bsim, time_) as orch:
        keys = [cache_key(orch._requests.build(TaskSpec(i["agent"], i["task"]))) for i in todo]
        doc = {
            "version": 1,
            "batches": [{"id": "msgbatch_gone", "collected": False}],
            "items": {
                i["id"]: [i["id"], k[:16], "msgbatch_gone"] for i, k in zip(todo, keys, strict=True)
            },
        }
        state.write_text(json.dumps(doc), encoding="utf-8")
        # One failed poll would stop the run: the unknown batch is never polled.
        got = await run(orch, todo, state, time_, max_poll_failures=1)
    assert all(r.success for r in got.values()) and len(got) == 2
    assert (bsim.batches_created, bsim.batch_requests_submitted) == (1, 2)
    saved = json.loads(state.read_text(encoding="utf-8"))
    assert "msgbatch_gone" not in {b["id"] for b in saved["batches"]}
    warnings = [r.getMessage() for r in caplog.records if "msgbatch_gone" in r.getMessage()]
    assert (
        len(warnings) == 1 and "and its 2 uncollected requests are submitted again" in warnings[0]
    )


async def test_a_batch_gone_while_waited_for_fails_its_items_at_once(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    state = tmp_path / "s.json"
    async with make(project, bsim, time_, max_retries=0) as orch:
        bsim.script_batch_api(None, Fault.status(404))  # created, then unknown at the poll
        got = await run(orch, items(2), state, time_, max_poll_failures=5)
        errors = [res(r).error for r in got.values()]
        assert [e.error_type for e in errors if isinstance(e, APIError)] == ["batch_gone"] * 2
        assert "--retry-failed" in (got["line-0"].error or "")
        assert json.loads(state.read_text(encoding="utf-8"))["batches"] == []
        again = await run(orch, items(2), state, time_)
    assert all(r.success for r in again.values()) and bsim.batches_created == 2


def test_custom_ids_are_one_to_one() -> None:
    hashed = custom_id_for("docs/a b.md")
    assert custom_id_for(hashed) not in (hashed, "docs/a b.md")
    assert custom_id_for(hashed) == custom_id_for(hashed) and custom_id_for("id-x") == "id-x"


async def test_an_id_shaped_like_a_hash_and_its_source_both_run(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path
) -> None:
    todo = [
        item("docs/a b.md", "code-reviewer", "A"),
        item(custom_id_for("docs/a b.md"), "code-reviewer", "B"),
    ]
    async with make(project, bsim, time_) as orch:
        got = await run(orch, todo, tmp_path / "s.json", time_)
    assert sorted(got) == sorted(i["id"] for i in todo) and all(r.success for r in got.values())


@pytest.mark.parametrize(
    "doc",
    [
        {"version": 1, "batches": [{"id": "msgbatch_x", "collected": "false"}], "items": {}},
        {"version": 1, "batches": [{"id": 7, "collected": False}], "items": {}},
        {"version": 1, "batches": [], "items": {"c": ["a", 1, "b"]}},
        {"version": 1, "batches": [], "items": {}, "pending": {"d": [True, 0.0]}},
        {"version": 1, "batches": [], "items": []},
        [],
    ],
)
async def test_a_state_file_with_wrong_types_is_refused_not_misread(
    project: Path, bsim: Simulator, time_: FakeTime, tmp_path: Path, doc: object
) -> None:
    state = tmp_path / "s.json"
    state.write_text(json.dumps(doc), encoding="utf-8")
    async with make(project, bsim, time_) as orch:
        with pytest.raises(InvalidArgumentError, match=rf"{state}.*move it aside") as caught:
            await run(orch, items(1), state, time_)
    assert "not one this version wrote" in str(caught.value)
    assert json.loads(state.read_text(encoding="utf-8")) == doc and bsim.batches_created == 0


def test_a_batch_result_without_details_or_of_an_unknown_type_is_a_named_failure() -> None:
    """A stand-in's ``errored`` result without its error object, or a result type the
    service may add later: a failure saying so, never a crash, never called canceled."""
    from types import SimpleNamespace

    from claude_force._batch_results import batch_error

    bare = batch_error(SimpleNamespace(type="errored", error=None), "msgbatch_1")
    assert bare.error_type == "batch_errored:unknown"
    assert "no error details were given" in bare.message
    odd = batch_error(SimpleNamespace(type="mystery"), "msgbatch_1")
    assert odd.error_type == "batch_unknown_result"
    assert "'mystery'" in odd.message and "canceled" not in odd.message
