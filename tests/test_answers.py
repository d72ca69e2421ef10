"""Reading a Messages answer from its JSON body (``_answers.message_answer``), the way every
direct call reads it, against the SDK's model that the Message Batches path still reads."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any, cast

import pytest
from anthropic._models import construct_type
from anthropic.types import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from claude_force._answers import Answer, _NotAnAnswer, message_answer
from claude_force._errors import InvalidArgumentError
from claude_force._usage import Usage

BODY: dict[str, Any] = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-5-5",
    "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "s"},
        {"type": "text", "text": "Hello, "},
        {"type": "tool_use", "id": "t1", "name": "f", "input": {"text": "not output"}},
        {"type": "text", "text": "world", "citations": [{"type": "char_location"}]},
    ],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 3, "cache_read_input_tokens": 4},
}


def _as_sdk_reads(body: dict[str, Any]) -> Message:
    """``body`` as the SDK builds its model of a result (leniently, nothing checked)."""
    return cast(Message, construct_type(type_=Message, value=body))


def test_an_answer_is_read_from_its_body() -> None:
    answer, usage = message_answer(json.dumps(BODY).encode(), "req_1")
    assert (answer.id, answer.model, answer.stop_reason) == ("msg_1", BODY["model"], "end_turn")
    assert answer.request_id == "req_1"
    assert answer.text == "Hello, world"  # text blocks only
    assert answer.content == BODY["content"]  # every block as sent: the cache stores them
    assert Usage.from_api(usage) == Usage(input_tokens=12, output_tokens=3, cache_read_tokens=4)


def test_a_batch_result_reads_as_the_same_answer() -> None:
    """Message Batches results arrive as the SDK's models: the same body gives the same
    answer (and so the same result; the cached blocks add the SDK's defaults) either way."""
    direct, _ = message_answer(json.dumps(BODY).encode(), None)
    batch = Answer.of_message(_as_sdk_reads(BODY))
    assert (batch.id, batch.model, batch.stop_reason, batch.text) == (
        direct.id,
        direct.model,
        direct.stop_reason,
        direct.text,
    )
    for sent, read in zip(direct.content, batch.content, strict=True):
        fields = ("type", "text", "input", "thinking")
        assert [read.get(f) for f in fields] == [sent.get(f) for f in fields]


def test_a_batch_result_is_checked_as_a_body_is() -> None:
    """A block without a ``type``, or a text block without its text, is not an answer in a
    batch result either (the SDK builds them without complaint)."""
    for content, said in (([{"text": "hello"}], "has no type"), ([{"type": "text"}], "text is")):
        message = _as_sdk_reads({**BODY, "content": content})
        with pytest.raises(_NotAnAnswer, match=said):
            Answer.of_message(message)


def test_numbers_json_cannot_carry_read_as_null() -> None:
    """NaN, Infinity and a float too large read as null, as the SDK's models give them in
    JSON form: the answer can be cached (the cache's JSON refuses them)."""
    body = json.dumps({**BODY, "content": [{"type": "tool_use", "input": "X"}]})
    body = body.replace('"X"', '{"a": NaN, "b": -Infinity, "c": 1e400, "d": 2.5}')
    answer, _ = message_answer(body.encode(), None)
    assert answer.content[0]["input"] == {"a": None, "b": None, "c": None, "d": 2.5}
    json.dumps(answer.content, allow_nan=False)
    usage = json.dumps(BODY).replace('"output_tokens": 3', '"output_tokens": NaN')
    with pytest.raises(_NotAnAnswer, match="'output_tokens' is null"):
        message_answer(usage.encode(), None)  # a required count cannot be null


def test_an_odd_stop_reason_is_kept_as_text() -> None:
    answer, _ = message_answer(json.dumps({**BODY, "stop_reason": 7}).encode(), None)
    assert answer.stop_reason == "7"
    answer, _ = message_answer(json.dumps({**BODY, "stop_reason": None}).encode(), None)
    assert answer.stop_reason is None


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"", "an empty body instead of a Message"),
        (b"<html>502</html>", "not JSON (Expecting value, byte 0): '<html>502</html>'"),
        (b'{"a": "\xff"}', "not JSON (not UTF-8 text)"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON (nested too deep to read)"),
        (b"1" * 5000, "not JSON (Exceeds the limit"),  # more digits than Python reads
        (json.dumps(BODY).encode()[:-2], "not JSON (Expecting ',' delimiter, byte"),
        (b'"hello"', "'hello' instead of a Message"),
        (b"[1]", "an array instead of a Message"),
        (json.dumps({**BODY, "id": 5}).encode(), "a Message whose 'id' is an integer"),
        (
            json.dumps({**BODY, "usage": {"input_tokens": 1.5, "output_tokens": 1}}).encode(),
            "a Usage whose 'input_tokens' is a float",
        ),
        (json.dumps({**BODY, "usage": None}).encode(), "Message.usage: null instead of a Usage"),
        (
            json.dumps({k: v for k, v in BODY.items() if k != "role"}).encode(),
            "a Message without 'role'",
        ),
        (json.dumps({**BODY, "content": [{"text": "x"}]}).encode(), "content[0] has no type"),
        (json.dumps({**BODY, "content": [[]]}).encode(), "content[0] is an array, not a block"),
    ],
)
def test_a_body_that_is_not_an_answer_says_what_is_wrong(body: bytes, said: str) -> None:
    with pytest.raises(_NotAnAnswer) as caught:
        message_answer(body, None)
    assert said in str(caught.value)


_counts = st.one_of(
    st.none(),
    st.integers(min_value=-3, max_value=10**12),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
)
_keys = [
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
]
_usage_dicts = st.fixed_dictionaries(
    {},
    optional={
        **{key: _counts for key in _keys},
        "cache_creation": st.one_of(
            st.none(),
            st.integers(),
            st.fixed_dictionaries(
                {},
                optional={
                    "ephemeral_5m_input_tokens": _counts,
                    "ephemeral_1h_input_tokens": _counts,
                },
            ),
        ),
        "server_tool_use": st.one_of(st.none(), st.just({"web_search_requests": 2})),
    },
)


def _read(usage: Any) -> Usage | str:
    try:
        return Usage.from_api(usage)
    except (InvalidArgumentError, TypeError, ValueError, AttributeError) as exc:
        return type(exc).__name__


@settings(deadline=None)  # the first example may pay for imports
@given(_usage_dicts)
def test_a_decoded_usage_reads_as_the_field_by_field_reading_does(usage: dict[str, Any]) -> None:
    """The plain-counts reading of a body's usage dict (every answer) gives what the general
    reading gives (a read-only mapping takes it), or refuses what it refuses."""
    assert _read(usage) == _read(MappingProxyType(usage))
