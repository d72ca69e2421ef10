"""The simulator's Message Batches API, driven through the real SDK over loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from anthropic.types import TextBlock

from claude_force._errors import InvalidArgumentError
from claude_force.testing import Fault, Simulator

KEY = "test-key-never-recorded"
MODEL = "claude-haiku-4-5"
DAY = 24 * 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def params(i: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 120,
        "system": [{"type": "text", "text": "You summarise files."}],
        "messages": [{"role": "user", "content": f"Summarise module number {i}"}],
    }


def requests(n: int, prefix: str = "r") -> list[Any]:
    return [{"custom_id": f"{prefix}{i}", "params": params(i)} for i in range(n)]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def bsim(clock: Clock) -> Iterator[Simulator]:
    with Simulator(clock=clock, batch_delay=60.0) as sim:
        yield sim


@pytest.fixture
def client(bsim: Simulator) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=bsim.base_url, api_key=KEY, max_retries=0) as c:
        yield c


def results(client: anthropic.Anthropic, batch_id: str) -> dict[str, Any]:
    return {line.custom_id: line.result for line in client.messages.batches.results(batch_id)}


def test_batch_runs_on_the_clock_and_answers_as_direct_calls(
    bsim: Simulator, clock: Clock, client: anthropic.Anthropic
) -> None:
    batch = client.messages.batches.create(requests=requests(3))
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 3 and batch.results_url is None
    assert batch.id.startswith("msgbatch_")
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        client.messages.batches.results(batch.id)
    clock.now += 59.0
    assert client.messages.batches.retrieve(batch.id).processing_status == "in_progress"
    clock.now += 1.0
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.ended_at is not None
    assert ended.request_counts.succeeded == 3 and ended.request_counts.processing == 0
    assert ended.results_url == f"{bsim.base_url}/v1/messages/batches/{batch.id}/results"
    got = results(client, batch.id)
    assert sorted(got) == ["r0", "r1", "r2"]
    for i in range(3):
        direct = client.messages.create(**params(i))
        result = got[f"r{i}"]
        assert result.type == "succeeded"
        block = result.message.content[0]
        assert isinstance(block, TextBlock) and isinstance(direct.content[0], TextBlock)
        assert block.text == direct.content[0].text
        assert result.message.usage.input_tokens == direct.usage.input_tokens
        assert result.message.usage.output_tokens == direct.usage.output_tokens
    # Batch work is not a /v1/messages call: only the three direct calls are.
    assert len(bsim.message_requests) == 3
    assert (bsim.batches_created, bsim.batch_requests_submitted) == (1, 3)


def test_zero_delay_ends_at_the_first_look(clock: Clock) -> None:
    with (
        Simulator(clock=clock) as sim,
        anthropic.Anthropic(base_url=sim.base_url, api_key=KEY, max_retries=0) as client,
    ):
        batch = client.messages.batches.create(requests=requests(2))
        assert batch.processing_status == "in_progress"
        assert client.messages.batches.retrieve(batch.id).request_counts.succeeded == 2


def test_scripted_faults_make_errored_and_custom_replies(
    bsim: Simulator, clock: Clock, client: anthropic.Anthropic
) -> None:
    bsim.script_batch(None, Fault.status(500, message="disk on fire"), Fault.reply("just this"))
    batch = client.messages.batches.create(requests=requests(3))
    clock.now += 60.0
    counts = client.messages.batches.retrieve(batch.id).request_counts
    assert (counts.succeeded, counts.errored) == (2, 1)
    got = results(client, batch.id)
    assert got["r1"].type == "errored"
    assert got["r1"].error.error.type == "api_error"
    assert got["r1"].error.error.message == "disk on fire"
    assert got["r2"].message.content[0].text == "just this"
    assert got["r2"].message.usage.output_tokens == 2


def test_fault_rate_and_refused_fault_kinds(
    bsim: Simulator, clock: Clock, client: anthropic.Anthropic
) -> None:
    bsim.set_batch_fault_rate(1.0, Fault.status(529))
    batch = client.messages.batches.create(requests=requests(4))
    clock.now += 60.0
    assert client.messages.batches.retrieve(batch.id).request_counts.errored == 4
    with pytest.raises(InvalidArgumentError, match="cannot reset or hang"):
        bsim.script_batch(Fault.reset())


def test_unfinished_requests_expire_after_24_hours(clock: Clock) -> None:
    with (
        Simulator(clock=clock, batch_delay=2 * DAY) as sim,
        anthropic.Anthropic(base_url=sim.base_url, api_key=KEY, max_retries=0) as client,
    ):
        batch = client.messages.batches.create(requests=requests(4))
        clock.now += DAY - 1
        assert client.messages.batches.retrieve(batch.id).processing_status == "in_progress"
        clock.now += 1
        counts = client.messages.batches.retrieve(batch.id).request_counts
        # Requests finish at 12 h, 24 h, 36 h, 48 h: two done, two expired.
        assert (counts.succeeded, counts.expired) == (2, 2)
        assert [r.type for _, r in sorted(results(client, batch.id).items())] == [
            "succeeded",
            "succeeded",
            "expired",
            "expired",
        ]


def test_cancel_moves_to_canceling_then_ends(
    bsim: Simulator, clock: Clock, client: anthropic.Anthropic
) -> None:
    batch = client.messages.batches.create(requests=requests(4))
    clock.now += 30.0
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert (ended.request_counts.succeeded, ended.request_counts.canceled) == (2, 2)
    with pytest.raises(anthropic.ConflictError, match="cannot be canceled"):
        client.messages.batches.cancel(batch.id)


def test_list_pages_newest_first(client: anthropic.Anthropic) -> None:
    made = [client.messages.batches.create(requests=requests(1)).id for _ in range(5)]
    newest = list(reversed(made))
    assert [b.id for b in client.messages.batches.list(limit=2)] == newest  # auto-paging
    first = client.messages.batches.list(limit=2)
    assert [b.id for b in first.data] == newest[:2] and first.has_more
    after = client.messages.batches.list(limit=2, after_id=newest[1])
    assert [b.id for b in after.data] == newest[2:4]
    before = client.messages.batches.list(limit=2, before_id=newest[4])
    assert [b.id for b in before.data] == newest[2:4]
    last = client.messages.batches.list(limit=2, after_id=newest[3])
    assert [b.id for b in last.data] == newest[4:] and not last.has_more
    with pytest.raises(anthropic.BadRequestError, match="limit"):
        client.messages.batches.list(limit=0)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([], "1 to 100,000"),
        ([{"custom_id": "a b", "params": params(0)}], "custom_id: must match"),
        ([{"custom_id": "x" * 65, "params": params(0)}], "custom_id: must match"),
        ([{"custom_id": "a", "params": params(0)}] * 2, "used twice"),
        ([{"custom_id": "a", "params": {**params(0), "max_tokens": 0}}], "params.max_tokens"),
        ([{"custom_id": "a", "params": {**params(0), "messages": []}}], "params.messages"),
        ([{"custom_id": "a"}], "exactly custom_id and params"),
    ],
)
def test_create_refuses_bad_requests(
    bsim: Simulator, client: anthropic.Anthropic, body: list[Any], problem: str
) -> None:
    with pytest.raises(anthropic.BadRequestError, match=problem):
        client.messages.batches.create(requests=body)
    assert bsim.batches_created == 0


def test_unknown_batch_and_batch_api_faults(bsim: Simulator, client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError, match="no message batch"):
        client.messages.batches.retrieve("msgbatch_nope")
    bsim.script_batch_api(Fault.status(401))
    with pytest.raises(anthropic.AuthenticationError):
        client.messages.batches.create(requests=requests(1))
    assert bsim.batches_created == 0
    assert client.messages.batches.create(requests=requests(1)).processing_status == "in_progress"
    assert bsim.batches_created == 1


def test_results_stream_many_lines(clock: Clock) -> None:
    with (
        Simulator(clock=clock) as sim,
        anthropic.Anthropic(base_url=sim.base_url, api_key=KEY, max_retries=0) as client,
    ):
        batch = client.messages.batches.create(requests=requests(700))
        client.messages.batches.retrieve(batch.id)
        ids = [line.custom_id for line in client.messages.batches.results(batch.id)]
        assert sorted(ids) == sorted(f"r{i}" for i in range(700))


def test_batch_delay_is_validated() -> None:
    with pytest.raises(InvalidArgumentError, match="batch_delay"):
        Simulator(batch_delay=-1)
