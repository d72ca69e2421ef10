"""Batches in process: execute_batch against the simulator through the real SDK, and the
results file (malformed lines, resume, --retry-failed, budget stops, torn lines)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from claude_force import (
    AgentOrchestrator,
    AsyncAgentOrchestrator,
    BatchRecord,
    BatchSummary,
    Budget,
    BudgetExceeded,
    InvalidArgumentError,
    run_batch_file,
)
from claude_force._batch_io import (
    RECORD_KEYS,
    ResultsFile,
    count_input_lines,
    item_from_fields,
    max_line_bytes,
    read_input,
    scan_results,
)
from claude_force._ledger import read_rows
from claude_force.testing import Fault, Simulator

from ._support import no_hang
from .conftest import API_KEY

AGENT = "code-reviewer"


async def no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


def make(project: Path, sim: Simulator, **kw: Any) -> AsyncAgentOrchestrator:
    kw.setdefault("enable_cache", False)
    return AsyncAgentOrchestrator(
        project, api_key=API_KEY, base_url=sim.base_url, sleep=no_wait, **kw
    )


def line(task: str, **extra: Any) -> str:
    return json.dumps({"agent": AGENT, "task": task, "max_tokens": 40, **extra})


def write_input(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def records(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "a partial last line"
    return [json.loads(raw) for raw in data.splitlines()]


# -- input lines -------------------------------------------------------------------------------

MALFORMED = [
    ("{not json", "line 1: not valid JSON"),
    ("[1, 2]", "line 2: expected a JSON object, got an array"),
    (json.dumps({"agent": AGENT, "taks": "x"}), "line 3: unknown key 'taks'; did you mean 'task'?"),
    (json.dumps({"agent": AGENT, "task": "  "}), "line 4: 'task' must be a non-empty string"),
    (json.dumps({"agent": AGENT, "task": "x", "max_tokens": "9"}), "line 5: 'max_tokens' must"),
    (json.dumps({"agent": AGENT, "task": "x", "id": True}), "line 6: 'id' must be"),
    (json.dumps({"agent": "code-reviewr", "task": "x"}), "did you mean 'code-reviewer'?"),
    (json.dumps({"agent": AGENT, "task": "x", "max_tokens": 0}), "line 8: max_tokens must be"),
    (json.dumps({"agent": AGENT, "task": "x", "temperature": 3}), "temperature must be between"),
]


async def test_malformed_lines_become_failed_records_and_the_rest_run(
    project: Path, sim: Simulator, tmp_path: Path
) -> None:
    good = [line(f"Review module {i}.py") for i in range(3)]
    dup = [line("first", id="same"), line("second", id="same")]
    src = write_input(tmp_path / "in.jsonl", [text for text, _ in MALFORMED] + [""] + good + dup)
    out = tmp_path / "out.jsonl"
    async with make(project, sim) as orch:
        summary = await run_batch_file(orch, src, out)
    got = records(out)
    assert all(tuple(r) == RECORD_KEYS for r in got)
    by_error = [r for r in got if not r["success"]]
    assert len(by_error) == len(MALFORMED) + 1 and summary.malformed == len(MALFORMED) + 1
    for (_text, expected), record in zip(MALFORMED, by_error[: len(MALFORMED)], strict=True):
        assert expected in record["error"], record["error"]
        assert record["attempts"] == 0 and record["cost"] == "0"
    assert by_error[-1]["id"] == "same" and "line 15: id 'same' was used" in by_error[-1]["error"]
    # The blank line 10 is skipped; lines without an id get their line number.
    assert sorted(r["id"] for r in got if r["success"]) == ["11", "12", "13", "same"]
    assert len(sim.message_requests) == 4  # nothing malformed was sent
    assert (summary.total, summary.succeeded, summary.failed) == (14, 4, 10)


async def test_the_first_progress_report_says_how_many_lines_to_expect(
    project: Path, sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [line("a"), "", line("b"), "{not json", "  "]
    src = write_input(tmp_path / "in.jsonl", lines)
    reports: list[tuple[int, int | None]] = []
    async with make(project, sim) as orch:
        summary = await run_batch_file(
            orch,
            src,
            tmp_path / "out.jsonl",
            on_progress=lambda s: reports.append((s.done, s.expected)),
        )
        assert reports[0] == (0, 3) and summary.total == summary.expected == 3
        # Standard input can be read only once, by the run: its count is unknown.
        read, write = os.pipe()
        os.write(write, "\n".join(lines).encode())
        os.close(write)
        with open(read, encoding="utf-8") as stdin:
            monkeypatch.setattr("sys.stdin", stdin)
            piped = await run_batch_file(orch, "-", tmp_path / "piped.jsonl")
    assert piped.expected is None and piped.total == 3


async def test_a_record_is_written_only_once_its_ledger_row_is(
    project: Path, sim: Simulator, tmp_path: Path
) -> None:
    """A rerun after kill -9 skips the ids that have a record: each one's ledger row must be
    on disk by then, or the money it cost is never reported."""
    src = write_input(tmp_path / "in.jsonl", [line(f"Review module {i}.py") for i in range(6)])
    out = tmp_path / "out.jsonl"
    seen: list[tuple[int, int]] = []

    def check(summary: BatchSummary) -> None:
        if out.exists():
            paid = sum(1 for r in records(out) if r["success"])
            seen.append((paid, len(read_rows(ledger))))

    async with make(project, sim, enable_tracking=True) as orch:
        ledger = orch.ledger_path
        await run_batch_file(orch, src, out, on_progress=check)
    assert seen and seen[-1][0] == 6
    assert all(rows >= paid for paid, rows in seen), seen


def test_item_fields_name_the_problem() -> None:
    item = item_from_fields({"agent": "a", "task": "t", "id": 7}, "3", "line 3")
    assert item.id == "7" and item.error is None
    bad = item_from_fields({"agent": 5, "task": "t"}, "3", "line 3")
    assert bad.error == "line 3: 'agent' must be a non-empty string, got the number 5"


# -- execute_batch -------------------------------------------------------------------------------


async def test_execute_batch_yields_in_completion_order(project: Path, sim: Simulator) -> None:
    items = [{"agent": AGENT, "task": f"Task {i}", "max_tokens": 20} for i in range(1, 9)]
    got = []
    async with make(project, sim) as orch:
        sim.script(Fault.hang())  # the first request to arrive is held until the rest are out
        async for r in orch.execute_batch(items, concurrency=4):
            got.append(r)
            if len(got) == 7:
                sim.release_hangs()
    assert sorted(r.id for r in got) == [str(i) for i in range(1, 9)]
    slow = got[-1]
    assert slow.id in {"1", "2", "3", "4"}  # one of the four sent first
    assert all(r.result is not None and r.result.success for r in got)
    assert [r.id for r in got] != [str(i) for i in range(1, 9)]


async def test_execute_batch_takes_items_only_as_fast_as_results_come(
    project: Path, sim: Simulator
) -> None:
    pulled = 0

    def stream() -> Iterator[tuple[str, str]]:
        nonlocal pulled
        for i in range(200):
            pulled += 1
            yield (AGENT, f"Task {i}")

    ahead: list[int] = []
    async with make(project, sim, max_concurrent=3) as orch:
        async for _record in orch.execute_batch(stream()):
            ahead.append(pulled - len(ahead) - 1)
    assert len(ahead) == 200 and pulled == 200
    assert max(ahead) <= 2 * 3  # never more than the window of twice the concurrency
    assert sim.peak_in_flight <= 3


async def test_execute_batch_accepts_an_async_stream_and_caps_concurrency(
    project: Path, sim: Simulator
) -> None:
    async def stream() -> AsyncIterator[dict[str, Any]]:
        for i in range(12):
            yield {"id": f"t{i}", "agent": AGENT, "task": f"Task {i}"}

    async with make(project, sim, max_concurrent=8) as orch:
        got = [r async for r in orch.execute_batch(stream(), concurrency=2)]
    assert sorted(r.id for r in got) == sorted(f"t{i}" for i in range(12))
    assert all(r.success for r in got) and sim.peak_in_flight <= 2


async def test_a_budget_stop_leaves_the_rest_unsent(project: Path, sim: Simulator) -> None:
    items = [(AGENT, f"Task {i}") for i in range(10)]
    got: list[BatchRecord] = []
    async with make(project, sim) as orch:
        with pytest.raises(BudgetExceeded):
            async for record in orch.execute_batch(
                items, concurrency=1, budget=Budget(max_requests=4)
            ):
                got.append(record)
    assert len(got) == 4 and all(r.success for r in got)
    assert len(sim.message_requests) == 4


def test_the_sync_door_iterates_the_same_records(project: Path, sim: Simulator) -> None:
    with AgentOrchestrator(
        project, api_key=API_KEY, base_url=sim.base_url, enable_cache=False
    ) as orch:
        got = list(orch.execute_batch([(AGENT, "one"), {"id": "x", "agent": AGENT, "task": "two"}]))
    assert sorted(r.id for r in got) == ["1", "x"] and all(r.success for r in got)


# -- the results file: resume, retry, budget, torn lines ------------------------------------------


async def test_resume_skips_finished_ids_and_retry_failed_reruns_failures(
    project: Path, sim: Simulator, tmp_path: Path
) -> None:
    src = write_input(tmp_path / "in.jsonl", [line(f"Task {i}") for i in range(10)])
    out = tmp_path / "out.jsonl"
    sim.script(*([None] * 3 + [Fault.status(400)] * 2))  # two lines fail (not retryable)
    async with make(project, sim, max_concurrent=1) as orch:
        first = await run_batch_file(orch, src, out)
        assert (first.succeeded, first.failed) == (8, 2)
        sim.reset_stats()
        again = await run_batch_file(orch, src, out)
        assert (again.skipped, again.skipped_failed, again.found_succeeded) == (10, 2, 8)
        assert len(sim.message_requests) == 0 and not again.complete
        retried = await run_batch_file(orch, src, out, retry_failed=True)
    assert (retried.succeeded, retried.skipped, retried.found_failed) == (2, 8, 2)
    assert len(sim.message_requests) == 2 and retried.complete
    latest = {r["id"]: r["success"] for r in records(out)}
    assert len(records(out)) == 12 and all(latest.values()) and len(latest) == 10


async def test_max_cost_stops_before_crossing_and_a_rerun_finishes(
    project: Path, sim: Simulator, tmp_path: Path
) -> None:
    src = write_input(tmp_path / "in.jsonl", [line(f"Task {i}") for i in range(30)])
    out = tmp_path / "out.jsonl"
    limit = Decimal("0.02")
    async with make(project, sim, max_concurrent=2) as orch:
        stopped = await run_batch_file(orch, src, out, budget=Budget(max_cost_usd=limit))
        assert stopped.stopped is not None and "max_cost_usd" in stopped.stopped
        assert stopped.unsent > 0 and stopped.succeeded > 0 and stopped.failed == 0
        assert stopped.total == 30 and stopped.cost <= limit
        assert sum(Decimal(r["cost"]) for r in records(out)) == stopped.cost
        sent_first = len(sim.message_requests)
        assert sent_first == stopped.succeeded  # a refused line is never sent
        finished = await run_batch_file(orch, src, out)
    assert finished.succeeded == stopped.unsent and finished.complete
    assert len(sim.message_requests) - sent_first == stopped.unsent
    assert sorted(int(r["id"]) for r in records(out)) == list(range(1, 31))


async def test_a_torn_last_line_is_cut_off_and_its_line_runs_again(
    project: Path, sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = write_input(tmp_path / "in.jsonl", [line("a"), line("b")])
    out = tmp_path / "out.jsonl"
    async with make(project, sim) as orch:
        await run_batch_file(orch, src, out)
        whole = out.read_bytes().splitlines(keepends=True)
        second = json.loads(whole[1])["id"]
        out.write_bytes(whole[0] + whole[1][:25])  # as if a write had been cut short
        sim.reset_stats()
        with caplog.at_level(logging.WARNING, logger="claude_force"):
            summary = await run_batch_file(orch, src, out)
    assert "ended in a partial line (25 bytes" in caplog.text
    assert (summary.skipped, summary.succeeded) == (1, 1)
    assert [r["id"] for r in records(out)][-1] == second
    assert len(sim.message_requests) == 1


def test_the_results_file_refuses_a_second_writer_and_foreign_files(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    first = ResultsFile(out)
    try:
        with pytest.raises(InvalidArgumentError, match="another batch is writing to"):
            ResultsFile(out)
    finally:
        first.close()
    first.close()  # twice is fine
    foreign = tmp_path / "notes.jsonl"
    foreign.write_text('{"id": "1", "success": true}\n{"title": "mine"}\n')
    with pytest.raises(InvalidArgumentError, match=r"line 2 of .* is not a batch result record"):
        asyncio.run(run_batch_file(_offline(tmp_path), write_input(tmp_path / "i", []), foreign))


def test_an_unreadable_input_is_a_usage_error_before_the_output_is_made(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with pytest.raises(InvalidArgumentError, match="cannot read the batch input"):
        asyncio.run(run_batch_file(_offline(tmp_path), tmp_path / "missing.jsonl", out))
    assert not out.exists()


def _offline(tmp_path: Path) -> AsyncAgentOrchestrator:
    from claude_force import init_project

    init_project(tmp_path / "p")
    return AsyncAgentOrchestrator(tmp_path / "p/.claude/claude.json", api_key="k")


# -- poison lines, endless lines, odd files ------------------------------------------------------


async def test_poison_lines_become_their_own_records_and_every_rerun_finishes(
    project: Path, sim: Simulator, tmp_path: Path
) -> None:
    good = [line(f"Review module {i}.py") for i in range(3)]
    deep = '{"agent": "code-reviewer", "task": ' + "[" * 20_000 + "]" * 20_000 + "}"
    poison = [
        (deep, "line 2: not usable JSON (nested too deeply"),
        ('{"agent": "code-reviewer", "task": "bad \\udc80 escape"}', "'task' holds an unpaired"),
        ('{"id": "x\\ud800", "agent": "code-reviewer", "task": "t"}', "'id' holds an unpaired"),
        ('{"agent": "code-reviewer", "task": "t", "k\\udfff": 1}', "holds an unpaired surrogate"),
        (line("x" * 80_000), f"line 6: longer than {max_line_bytes(1000):,} bytes"),
    ]
    src = tmp_path / "in.jsonl"
    # A byte order mark before line 1 is skipped, so line 1 runs.
    text = "\n".join([good[0], *(p for p, _ in poison), *good[1:]]) + "\n"
    src.write_bytes(b"\xef\xbb\xbf" + text.encode())
    out = tmp_path / "out.jsonl"
    for attempt in range(2):
        async with make(project, sim, max_task_chars=1000) as orch:
            summary = await run_batch_file(orch, src, out, retry_failed=bool(attempt))
        got = records(out)  # whole lines of valid UTF-8 JSON
        assert (summary.succeeded, summary.malformed) == ((3, 5) if attempt == 0 else (0, 5))
    by_id = {r["id"]: r for r in got}
    assert sorted(r["id"] for r in got if r["success"]) == ["1", "7", "8"]
    for number, (_text, expected) in enumerate(poison, 2):
        assert expected in by_id[str(number)]["error"], by_id[str(number)]
        assert by_id[str(number)]["attempts"] == 0
    assert len(sim.message_requests) == 3  # no poison line was sent


class _Endless(io.RawIOBase):
    """``/dev/zero`` that counts what it handed out."""

    def __init__(self) -> None:
        self.given = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = len(buffer)
        buffer[:size] = b"x" * size
        self.given += size
        return size


def test_an_endless_line_gets_its_record_without_being_held() -> None:
    raw = _Endless()
    items = read_input(io.BufferedReader(raw), max_line=4096)
    first = next(items)
    assert first.error is not None and "line 1: longer than 4,096 bytes" in first.error
    assert raw.given <= 4096 + io.DEFAULT_BUFFER_SIZE  # only the limit was ever read


def test_a_results_file_must_be_a_regular_file_of_records(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (Path("/dev/null"), Path("/dev/full"), fifo):
        with no_hang(), pytest.raises(InvalidArgumentError, match=f"{path} is not a regular"):
            ResultsFile(path)
    long = tmp_path / "long.jsonl"
    long.write_text('{"id": "1", "success": true}\n' + "x" * 5000 + "\n")
    with pytest.raises(InvalidArgumentError, match=r"line 2 of .* is longer than 1,000 bytes"):
        scan_results(long, max_line=1000)


def test_only_a_regular_input_is_counted_ahead(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\xef\xbb\xbf{}\n\n  \n" + b"x" * 3_000_000 + b"\n{}")
    assert count_input_lines(src) == 3
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with no_hang():  # never opened: its one reader is the run
        assert count_input_lines(fifo) is None and count_input_lines("-") is None
