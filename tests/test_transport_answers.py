"""A 2xx response whose body is not an answer (a proxy's page, a cut or empty object) against
``tests/standin.py``: it becomes our APIError, is retried like a 502, and is never cached."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from claude_force import APIError, AsyncAgentOrchestrator
from claude_force.cli import cli
from claude_force.cli._common import run_guarded

from .conftest import API_KEY
from .standin import Reply, StandIn

HTML = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


def message_body(**fields: object) -> bytes:
    base = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m"}
    return json.dumps({**base, **fields}).encode()


NOT_ANSWERS = {
    "html page": Reply(body=HTML, content_type="text/html"),
    "not json": Reply(body=b"<html>oops", content_type="application/json"),
    "empty message": Reply(body=b'{"type":"message"}'),
    "json string": Reply(body=b'"hello"'),
    "usage without tokens": Reply(body=message_body(content=[], usage={})),
    "content not a list": Reply(
        body=message_body(content="text", usage={"input_tokens": 1, "output_tokens": 1})
    ),
    "a negative count": Reply(usage={"output_tokens": -5}),
    "a boolean count": Reply(usage={"input_tokens": True}),
    # Paid for (usage given), but not an answer the caller can read.
    **{
        name: Reply(body=message_body(usage={"input_tokens": 100, "output_tokens": 20}, **f))
        for name, f in dict[str, dict[str, Any]](
            {
                "text null": {"content": [{"type": "text", "text": None}]},
                "text a number": {"content": [{"type": "text", "text": 5}]},
                "a null block": {"content": [None, {"type": "text", "text": "x"}]},
                "a string block": {"content": ["x"]},
                "model null": {"content": [{"type": "text", "text": "x"}], "model": None},
            }
        ).items()
    },
}


class NoSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def make(project: Path, standin: StandIn, **kw: Any) -> AsyncAgentOrchestrator:
    kw.setdefault("enable_tracking", False)
    return AsyncAgentOrchestrator(project, api_key=API_KEY, base_url=standin.base_url, **kw)


@pytest.mark.parametrize("reply", NOT_ANSWERS.values(), ids=NOT_ANSWERS.keys())
async def test_a_body_that_is_not_an_answer_is_an_api_error_after_the_retries(
    project: Path, standin: StandIn, reply: Reply
) -> None:
    standin.script(reply, reply, reply)
    sleep = NoSleep()
    async with make(project, standin, max_retries=2, sleep=sleep, enable_cache=False) as orch:
        result = await orch.execute_agent(orch.list_agents()[0], "Review x.py")
    err = result.error
    assert not result.success and isinstance(err, APIError)
    assert result.errors == [err.message]
    assert (err.status_code, err.error_type, err.attempts) == (200, "invalid_response", 3)
    assert err.request_id is not None and err.request_id.startswith("req_standin")
    assert "is not an API answer" in err.message
    assert "check base_url (ANTHROPIC_BASE_URL) and any proxy" in err.message
    assert API_KEY not in err.message
    assert len(standin.messages()) == 3 and len(sleep.delays) == 2


async def test_the_answer_after_a_proxy_page_is_returned_and_only_it_is_cached(
    project: Path, standin: StandIn, tmp_path: Path
) -> None:
    standin.script(NOT_ANSWERS["html page"], Reply(text="the real answer"))
    opts: dict[str, Any] = {"sleep": NoSleep(), "cache_dir": tmp_path / "cache"}
    async with make(project, standin, **opts) as orch:
        agent = orch.list_agents()[0]
        first = await orch.execute_agent(agent, "Review x.py")
        again = await orch.execute_agent(agent, "Review x.py")
    assert (first.output, first.attempts, first.cached) == ("the real answer", 2, False)
    assert (again.output, again.cached) == ("the real answer", True)
    assert len(standin.messages()) == 2


async def test_the_deadline_bounds_the_retries_of_a_proxy_page(
    project: Path, standin: StandIn
) -> None:
    standin.script(*[NOT_ANSWERS["html page"]] * 5)
    sleep = NoSleep()
    opts: dict[str, Any] = {"max_retries": 4, "deadline_seconds": 0.3, "sleep": sleep}
    async with make(project, standin, enable_cache=False, **opts) as orch:
        result = await orch.execute_agent(orch.list_agents()[0], "Review x.py")
    assert isinstance(result.error, APIError) and result.error.error_type == "invalid_response"
    # The first backoff (at least 0.375 s) would end past the deadline: no retry is made.
    assert (sleep.delays, len(standin.messages()), result.attempts) == ([], 1, 1)


def test_the_cli_names_the_proxy_and_the_fix(
    project: Path, standin: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    standin.script(*[NOT_ANSWERS["html page"]] * 4)
    code = run_guarded(
        cli, ["run", "code-reviewer", "Review x.py", "-c", str(project), "--no-cache"]
    )
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert "AttributeError" not in err
    assert "(text/html) is not an API answer" in err
    assert "check base_url (ANTHROPIC_BASE_URL) and any proxy" in err
    assert "request-id req_standin" in err


def test_a_proxy_page_for_a_batch_create_is_looked_for_then_created_once(
    project: Path, standin: StandIn, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps({"id": "m0", "agent": "code-reviewer", "task": "Review"}) + "\n")
    out = tmp_path / "results.jsonl"
    standin.script(NOT_ANSWERS["html page"])
    argv = ["batch", str(tasks), "--out", str(out), "--mode", "batches", "--poll-interval", "0.01"]
    code = run_guarded(cli, [*argv, "-c", str(project), "--no-cache"])
    assert code == 0, capsys.readouterr().err
    record = json.loads(out.read_text())
    assert (record["id"], record["success"]) == ("m0", True)
    paths = [(r.method, r.path) for r in standin.requests]
    # The page might have hidden a made batch: it is looked for before the create is retried.
    assert paths[:3] == [
        ("POST", "/v1/messages/batches"),
        ("GET", "/v1/messages/batches"),
        ("POST", "/v1/messages/batches"),
    ]
    assert len(standin.batches) == 1


async def test_counts_too_big_for_the_ledger_keep_the_answer_and_a_clamped_row(
    project: Path, standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    # A service may report any count; the answer was paid for, so the call succeeds and its
    # row holds the largest count the ledger's 64-bit columns take, with a warning.
    standin.script(Reply(usage={"input_tokens": 5, "cache_read_input_tokens": 2**64}))
    async with make(project, standin, enable_tracking=True, enable_cache=False) as orch:
        result = await orch.execute_agent(orch.list_agents()[0], "Review x.py")
        rows = orch.usage_rows()
    assert result.success and result.usage.cache_read_tokens == 2**64
    assert [(row.outcome, row.cache_read_tokens) for row in rows] == [("success", 2**63 - 1)]
    assert "does not fit a 64-bit integer" in caplog.text


async def test_a_body_sent_a_byte_at_a_time_is_cut_off_at_timeout_seconds(
    project: Path, standin: StandIn
) -> None:
    """The SDK's timeout bounds each wait for bytes; a response that keeps trickling in is
    still an attempt that timed out."""
    standin.script(Reply(action="trickle", text="x" * 400))
    async with make(project, standin, max_retries=0, timeout_seconds=0.5) as orch:
        result = await orch.execute_agent(orch.list_agents()[0], "Review x.py")
    err = result.error
    assert isinstance(err, APIError) and err.error_type == "timeout", result.errors
    assert "timed out after 0.5s (timeout_seconds=0.5)" in err.message


async def test_one_unreadable_answer_fails_its_task_only(project: Path, standin: StandIn) -> None:
    bad = NOT_ANSWERS["text null"]
    standin.script(Reply(), bad, Reply())
    async with make(project, standin, max_retries=0, enable_cache=False) as orch:
        agent = orch.list_agents()[0]
        results = await orch.execute_multiple([(agent, "one"), (agent, "two"), (agent, "three")])
    assert [r.success for r in results].count(True) == 2
    failed = next(r for r in results if not r.success)
    assert isinstance(failed.error, APIError) and failed.error.error_type == "invalid_response"
    assert "content[0]" in failed.error.message


async def test_an_answer_whose_headers_came_in_time_gets_as_long_again_for_its_body(
    project: Path, standin: StandIn
) -> None:
    """Its headers say it is answered (and paid for): cutting it off would pay it again."""
    standin.script(Reply(action="slow-body", text="the whole answer"))
    async with make(project, standin, max_retries=0, timeout_seconds=1.0) as orch:
        result = await orch.execute_agent(orch.list_agents()[0], "Review x.py")
    assert result.success and result.output == "the whole answer", result.errors
    assert len(standin.messages()) == 1


async def test_a_server_reusing_one_message_id_still_has_every_call_counted(
    project: Path, standin: StandIn
) -> None:
    body = message_body(
        content=[{"type": "text", "text": "ok"}],
        model="claude-haiku-4-5",
        stop_reason="end_turn",
        usage={"input_tokens": 100, "output_tokens": 20},
    )
    standin.script(*[Reply(body=body)] * 3)
    async with make(
        project, standin, enable_cache=False, enable_memory=False, enable_tracking=True
    ) as orch:
        tasks = ["Task number 1", "Task number 1", "Task number 2"]  # a repeat counts too
        results = [await orch.execute_agent("code-reviewer", task) for task in tasks]
        rows = orch.usage_rows()
    assert all(r.success for r in results)
    assert len([r for r in rows if r.outcome == "success"]) == 3
    assert sum(r.cost_usd or 0 for r in rows) == sum(r.cost or 0 for r in results)


async def test_an_answer_with_numbers_json_cannot_carry_is_returned_and_cached(
    project: Path, standin: StandIn, tmp_path: Path
) -> None:
    """NaN or a float too large in a paid answer (a tool's input): the cache's JSON refuses
    them, so they read as null, and the answer is returned and cached, not lost."""
    content = [{"type": "text", "text": "ok"}, {"type": "tool_use", "input": "X"}]
    body = message_body(content=content, usage={"input_tokens": 10, "output_tokens": 2})
    body = body.replace(b'"X"', b'{"n": NaN, "big": 1e400}')
    standin.script(Reply(body=body))
    async with make(project, standin, cache_dir=tmp_path / "cache") as orch:
        agent = orch.list_agents()[0]
        first = await orch.execute_agent(agent, "Review x.py")
        again = await orch.execute_agent(agent, "Review x.py")
    assert (first.success, first.output, again.cached, again.output) == (True, "ok", True, "ok")
    assert len(standin.messages()) == 1


def test_a_batch_result_that_is_not_an_answer_fails_its_item() -> None:
    """Checked as a direct call's body is: its item fails (a rerun submits it anew); the
    collection goes on."""
    from types import SimpleNamespace

    from anthropic._models import construct_type
    from anthropic.types import Message

    from claude_force._batch_results import succeeded

    body = json.loads(message_body(content=[{"type": "text"}], usage={"input_tokens": 1}))
    got = succeeded(SimpleNamespace(message=construct_type(type_=Message, value=body)), "b_1")
    assert isinstance(got, APIError) and got.error_type == "invalid_response"
    assert "message batch b_1" in got.message and "not an answer" in got.message
