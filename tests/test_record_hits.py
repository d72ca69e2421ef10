"""The fast paths that record response-cache hits and answered calls write exactly what the
general one does."""

from __future__ import annotations

import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

from claude_force import _outcomes as outcome
from claude_force._ledger import Ledger, read_rows, task_hash
from claude_force._metrics import Metrics
from claude_force._record import CallContext, Recorder
from claude_force._request import Request, SystemPrompt
from claude_force._results import AgentResult
from claude_force._usage import Usage
from claude_force.cache import CacheHit

_REQUEST = Request("claude-haiku-4-5", SystemPrompt("You review."), (), 100)


def _hit(message_id: object = "msg_1", cost: str | None = "0.0125") -> AgentResult:
    value = {
        "message": {
            "id": message_id,
            "model": "claude-haiku-4-5",
            "stop_reason": "end_turn",
            "content": [{"type": "text", "text": "fine"}],
        },
        "usage": {},
        "cost": cost,
    }
    result = outcome.hit_result(
        "reviewer", _REQUEST, CacheHit(value, 1.0, "memory", 2.0), time.perf_counter()
    )
    assert result is not None
    return result


def _recorder(path: Path) -> Recorder:
    recorder = Recorder(path, tracking=True, metrics=True)
    recorder._ledger = Ledger(path, clock=lambda: 1234.5)
    return recorder


def _samples(metrics: Metrics) -> list[str]:
    """The exposition without ``_created`` lines (when each series was first made)."""
    lines = metrics.render().decode().splitlines()
    return [line for line in lines if "_created{" not in line]


def _contexts() -> list[CallContext]:
    return [
        CallContext("task one"),
        CallContext("task two", workflow_run="run1", workflow_step=2, batch=True),
        CallContext("task three"),
        CallContext("task four"),
    ]


def _results() -> list[AgentResult]:
    # Another message id, no cost recorded, injection flags, and a message id of the wrong
    # type (general path).
    flagged = replace(_hit("msg_3"), injection_flags=("task:role-tag", "task:ignore"))
    return [_hit(), _hit("msg_2", None), flagged, _hit(17)]


def test_hit_rows_and_counters_equal_the_general_path(tmp_path: Path) -> None:
    general, fast = _recorder(tmp_path / "a.db"), _recorder(tmp_path / "b.db")
    for _ in range(2):  # the second round runs on the per-agent templates
        for result, ctx in zip(_results(), _contexts(), strict=True):
            general.record(result, ctx)
            fast.record_hit(result, ctx)
    assert general.metrics is not None and fast.metrics is not None
    assert _samples(fast.metrics) == _samples(general.metrics)
    general.close()
    fast.close()
    expected = read_rows(tmp_path / "a.db")
    assert len(expected) == 8
    got = read_rows(tmp_path / "b.db")
    assert [r.to_dict() for r in got] == [r.to_dict() for r in expected]
    assert got[1].workflow_run == "run1" and got[1].cost_saved_usd is None and got[1].batch
    assert got[2].injection_flags == "task:role-tag,task:ignore"
    assert got[0].cost_saved_usd == Decimal("0.0125") and got[0].cached


def test_a_result_that_is_not_a_plain_hit_takes_the_general_path(tmp_path: Path) -> None:
    recorder = _recorder(tmp_path / "c.db")
    paid = AgentResult("reviewer", True, "x", model="claude-haiku-4-5", cost=Decimal("0.5"))
    recorder.record_hit(paid, CallContext("t"))
    recorder.close()
    [row] = read_rows(tmp_path / "c.db")
    assert row.cost_usd == Decimal("0.5") and not row.cached


def test_many_hits_in_one_batch_are_all_written_in_order(tmp_path: Path) -> None:
    # More rows than one statement takes, of two agents' templates and runs of shared values.
    recorder = Recorder(tmp_path / "d.db", tracking=True, metrics=False)
    recorder._ledger = Ledger(tmp_path / "d.db", batch_size=1000, flush_interval=3600)
    sent = []
    for i in range(300):
        result = replace(_hit(f"msg_{i}"), agent_name="writer") if i % 7 == 3 else _hit(f"msg_{i}")
        run = "run1" if 100 <= i < 150 else None
        recorder.record_hit(result, CallContext(f"task {i}", workflow_run=run, workflow_step=i))
        sent.append((result.agent_name, f"msg_{i}", run, i, task_hash(f"task {i}")))
    recorder.close()
    got = [
        (r.agent, r.message_id, r.workflow_run, r.workflow_step, r.task_hash)
        for r in read_rows(tmp_path / "d.db")
    ]
    assert got == sent


def test_lone_surrogates_in_hit_rows_are_stored_replaced(tmp_path: Path) -> None:
    # A "\udc80" escape in the service's JSON decodes to text SQLite cannot encode: in the
    # template's fixed part (the model), a per-hit value and a shared one.
    recorder = _recorder(tmp_path / "e.db")
    result = replace(_hit("msg_\udc80"), model="claude\udc80")
    recorder.record_hit(result, CallContext("one"))
    recorder.record_hit(result, CallContext("two", workflow_run="run\udc80"))
    recorder.record_hit(_hit("msg_ok"), CallContext("three"))
    recorder.close()
    got = [(r.model, r.message_id, r.workflow_run) for r in read_rows(tmp_path / "e.db")]
    assert got == [
        ("claude?", "msg_?", None),
        ("claude?", "msg_?", "run?"),
        ("claude-haiku-4-5", "msg_ok", None),
    ]


# -- answered calls: the same per-agent templates for what success_result makes -------------


def _answer(message_id: object = "msg_a", **changes: object) -> AgentResult:
    result = AgentResult(
        "reviewer",
        True,
        "fine",
        model="claude-haiku-4-5",
        usage=Usage(input_tokens=120, output_tokens=30, cache_read_tokens=7),
        cost=Decimal("0.000271"),
        attempts=1,
        latency_ms=12.5,
        request_id="req_1",
        message_id=message_id,  # type: ignore[arg-type]
        stop_reason="end_turn",
    )
    return replace(result, **changes)  # type: ignore[arg-type]


def test_answer_rows_equal_the_general_path(tmp_path: Path) -> None:
    general, fast = Ledger(tmp_path / "a.db", clock=lambda: 99.5), _recorder(tmp_path / "b.db")
    answers = [
        (_answer(), CallContext("task one")),
        (_answer("msg_b", cost=None, request_id=None), CallContext("task two")),
        (_answer("msg_c", attempts=3), CallContext("t", workflow_run="run1", workflow_step=2)),
        (_answer("msg_d", injection_flags=("task:role-tag",)), CallContext("t", batch=True)),
        (
            _answer("msg_e", agent_name="writer", usage=Usage(web_search_requests=2)),
            CallContext("five"),
        ),
        (_answer("msg_\udc80", model="claude\udc80"), CallContext("surrogates")),
    ]
    for result, ctx in answers:
        assert fast._record_answer(result, ctx)
        general.record(
            outcome.ledger_row(
                result,
                task=ctx.task,
                workflow_run=ctx.workflow_run,
                workflow_step=ctx.workflow_step,
                batch=ctx.batch,
            )
        )
    fast.close()
    general.close()
    expected = read_rows(tmp_path / "a.db")
    got = read_rows(tmp_path / "b.db")
    assert len(got) == len(answers)
    assert [r.to_dict() for r in got] == [replace(r, ts=1234.5).to_dict() for r in expected]
    assert got[1].cost_usd is None and got[3].batch and got[5].message_id == "msg_?"


def test_other_results_take_the_general_path(tmp_path: Path) -> None:
    recorder = _recorder(tmp_path / "f.db")
    others = [
        _answer(cost_saved=Decimal(1)),
        _answer(cached=True),
        _answer(success=False),
        _answer(latency_ms=3),  # an int: the general path stores it as given
        _answer(message_id=17),  # the general path checks the type
    ]
    for result in others:
        assert not recorder._record_answer(result, CallContext("t"))
    huge = _answer(usage=Usage(input_tokens=2**63))
    assert not recorder._record_answer(huge, CallContext("t"))
    recorder.record(huge, CallContext("t"))  # stored clamped: recording never fails a call
    recorder.close()
    assert [row.input_tokens for row in read_rows(tmp_path / "f.db")] == [2**63 - 1]
