"""Whether a 2xx body is the answer its endpoint gives: checked on every answer.

The SDK builds its models without validating them (so that new fields and values pass) and
returns a body that is not JSON as text; :func:`expect_answer` keeps a proxy's page or an
empty object from reaching the caller as an answer. Split from :mod:`._transport`, which
maps :class:`_NotAnAnswer` to a retried ``invalid_response``.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import typing
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from anthropic.types import Message, MessageTokensCount

__all__ = ["Answer", "expect_answer", "message_answer"]


class _NotAnAnswer(Exception):
    """A 2xx body that is not what the endpoint answers; says what is wrong with it."""


M = TypeVar("M")


def expect_answer(value: object, model: type[M]) -> M:
    """``value`` when it is the ``model`` the endpoint answers; else :class:`_NotAnAnswer`.

    The SDK builds its models without validating them (so that new fields and values pass)
    and returns a body that is not JSON as text. Checking the fields every answer has, and
    their kinds, keeps a proxy's page or an empty object from reaching the caller as one.
    """
    problem = _answer_problem(value, model)
    if problem is None and model is _message_type():
        problem = _message_problem(value)
    if problem is not None:
        raise _NotAnAnswer(problem)
    return typing.cast(M, value)


@dataclass(frozen=True, slots=True)
class Answer:
    """A Messages answer: what a result, the response cache and the ledger read of it.

    Read from the JSON body itself (:func:`message_answer`): building the SDK's ``Message``
    model from the body costs about a sixth of a call's CPU time, for fields nothing here
    reads. ``content`` holds the content blocks as the body sent them."""

    id: str
    model: str
    stop_reason: str | None
    content: list[dict[str, Any]]
    request_id: str | None = None

    @property
    def text(self) -> str:
        """The text of the text blocks, joined."""
        return "".join([block["text"] for block in self.content if block["type"] == "text"])

    @classmethod
    def of_message(cls, message: Message) -> Answer:
        """The answer an SDK ``Message`` holds (a Message Batches result), checked as a
        direct call's body is; :class:`_NotAnAnswer` when it is not one. Read in JSON form:
        the SDK's defaults filled in, non-finite numbers as null, as a direct call's body
        reads them."""
        return _checked(message.model_dump(mode="json"), None)


def message_answer(body: bytes, request_id: str | None) -> tuple[Answer, dict[str, Any]]:
    """The :class:`Answer` and the ``usage`` object of a Messages body; :class:`_NotAnAnswer`
    when the body is not one: not JSON, or without the fields every answer has, of their
    kinds (the checks :func:`expect_answer` makes of the SDK's model).

    ``NaN``, ``Infinity`` and a number too large for a float read as null, as the SDK's
    models give them in JSON form: the answer can always be cached. A usage count that is
    one is then refused when required and 0 when not."""
    try:
        value = json.loads(body, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise _NotAnAnswer(_not_json(body, f"{exc.msg}, byte {exc.pos}")) from None
    except UnicodeDecodeError:
        raise _NotAnAnswer(_not_json(body, "not UTF-8 text")) from None
    except RecursionError:
        raise _NotAnAnswer(_not_json(body, "nested too deep to read")) from None
    except ValueError as exc:  # an integer of more digits than Python reads
        raise _NotAnAnswer(_not_json(body, str(exc)[:80])) from None
    answer = _checked(value, request_id)
    return answer, value["usage"]


def _checked(value: object, request_id: str | None) -> Answer:
    problem = _answer_problem(value, _message_type(), decoded=True)
    if problem is None:
        problem = _json_message_problem(typing.cast(dict[str, Any], value))
    if problem is not None:
        raise _NotAnAnswer(problem)
    body = typing.cast(dict[str, Any], value)
    stop = _stop_reason(body.get("stop_reason"))
    return Answer(body["id"], body["model"], stop, body["content"], request_id)


def _no_constant(name: str) -> None:
    """``NaN``, ``Infinity`` or ``-Infinity`` in a body: no JSON value, read as null."""
    return None


def _finite(text: str) -> float | None:
    number = float(text)
    return number if math.isfinite(number) else None


def _not_json(body: bytes, why: str) -> str:
    if not body:
        return "an empty body instead of a Message"
    return f"a body that is not JSON ({why}): {body[:60].decode('utf-8', 'replace')!r}"


def _stop_reason(value: object) -> str | None:
    """The stop reason as text (the SDK does not check it either: an odd one is kept)."""
    return value if value is None or isinstance(value, str) else str(value)


def _json_message_problem(value: dict[str, Any]) -> str | None:
    """:func:`_message_problem` of a decoded body that :func:`_answer_problem` passed: the
    model's name, each content block's type and a text block's text."""
    model = value["model"]
    if not isinstance(model, str):
        return f"a Message whose 'model' is {_json_kind(model)}"
    for i, block in enumerate(value["content"]):
        if type(block) is not dict:
            return f"a Message whose content[{i}] is {_json_kind(block)}, not a block"
        kind = block.get("type")
        if not isinstance(kind, str):
            return f"a Message whose content[{i}] has no type ({_json_kind(kind)})"
        if kind == "text" and not isinstance(text := block.get("text"), str):
            return f"a Message whose content[{i}] text is {_json_kind(text)}"
    return None


def _json_kind(value: object) -> str:
    """A decoded JSON value's kind, as a user reads it: ``null``, ``an integer``, ``a
    float``, ``a boolean``, ``a string``, ``an array``, ``an object``."""
    if value is None:
        return "null"
    return _JSON_KINDS.get(type(value), f"a {type(value).__name__}")


_JSON_KINDS: dict[type, str] = {
    bool: "a boolean",
    int: "an integer",
    float: "a float",
    str: "a string",
    list: "an array",
    dict: "an object",
}


def _message_problem(message: Any) -> str | None:
    """What the generic check leaves to the SDK's lenient reading and the caller reads: the
    model's name, and each content block's type (and a text block's text)."""
    if not isinstance(message.model, str):
        return f"a Message whose 'model' is a {type(message.model).__name__}"
    for i, block in enumerate(message.content):
        kind = getattr(block, "type", None)
        if not isinstance(kind, str):
            return f"a Message whose content[{i}] is a {type(block).__name__}, not a block"
        if kind == "text" and not isinstance(getattr(block, "text", None), str):
            text = getattr(block, "text", None)
            return f"a Message whose content[{i}] text is a {type(text).__name__}"
    return None


def _answer_problem(value: object, model: type, *, decoded: bool = False) -> str | None:
    """Whether ``value`` has ``model``'s required fields, of their kinds (nested models
    checked in turn); ``decoded``: ``value`` is decoded JSON, an object as a dict, not the
    SDK's model."""
    if not (type(value) is dict if decoded else isinstance(value, model)):
        shown = repr(value)[:60] if isinstance(value, str) else _kind(value, decoded)
        return f"{shown} instead of a {model.__name__}"
    present: AbstractSet[str]
    read: Callable[[Any, str], Any]
    if decoded:
        present, read = typing.cast(dict[str, Any], value).keys(), _item
    else:
        present, read = getattr(value, "model_fields_set", set()), getattr
    names, typed = _checks(model)
    if names <= present:  # every answer: checked at once; a problem is named in order below
        for name, want, nested in typed:
            field = read(value, name)
            if not (
                _answer_problem(field, want, decoded=decoded) is None
                if nested
                else isinstance(field, want)
            ):
                break
        else:
            return None
    for name, kind, nested in _required_fields(model):
        if name not in present:
            return f"a {model.__name__} without {name!r}"
        field = read(value, name)
        if nested and kind is not None:
            inner = _answer_problem(field, kind, decoded=decoded)
            if inner is not None:
                return f"{model.__name__}.{name}: {inner}"
        elif kind is not None and not isinstance(field, kind):
            return f"a {model.__name__} whose {name!r} is {_kind(field, decoded)}"
    return None


_item: Callable[[Any, str], Any] = operator.getitem


def _kind(value: object, decoded: bool) -> str:
    return _json_kind(value) if decoded else f"a {type(value).__name__}"


@functools.cache
def _required_fields(model: type) -> tuple[tuple[str, type | None, bool], ...]:
    """Each required field of a pydantic model, its plain kind (``list`` for list[X]; None
    for a Literal or a union, left to the SDK's lenient reading) and whether that kind is a
    model to check in turn. Worked out once per model: every answer is checked."""
    fields: dict[str, Any] = getattr(model, "model_fields", {})
    out: list[tuple[str, type | None, bool]] = []
    for name, f in fields.items():
        if not f.is_required():
            continue
        kind = typing.get_origin(f.annotation) or f.annotation
        if not isinstance(kind, type):
            out.append((name, None, False))
        else:
            out.append((name, kind, hasattr(kind, "model_fields")))
    return tuple(out)


@functools.cache
def _checks(model: type) -> tuple[frozenset[str], tuple[tuple[str, type, bool], ...]]:
    """The names of ``model``'s required fields, and those with a kind to check."""
    fields = _required_fields(model)
    typed = tuple((name, kind, nested) for name, kind, nested in fields if kind is not None)
    return frozenset(name for name, _, _ in fields), typed


@functools.cache  # once: a ``from`` import of a package's name costs a Python call
def _message_type() -> type[Message]:
    from anthropic.types import Message

    return Message


@functools.cache
def _tokens_count_type() -> type[MessageTokensCount]:
    from anthropic.types import MessageTokensCount

    return MessageTokensCount


def _complete_models(root: type) -> None:
    """Build the pydantic schemas of ``root`` and every model its fields hold, now.

    The SDK defers them to the first response it parses, which then holds the event loop
    for about 0.1 s; :meth:`Transport.make_client` runs in a thread, where it costs nothing.
    """
    seen: set[object] = set()
    todo: list[object] = [root]
    while todo:
        item = todo.pop()
        if item in seen:
            continue
        seen.add(item)
        todo.extend(typing.get_args(item))
        fields = getattr(item, "model_fields", None)
        if not isinstance(item, type) or not isinstance(fields, dict):
            continue
        rebuild = getattr(item, "model_rebuild", None)
        if not getattr(item, "__pydantic_complete__", True) and callable(rebuild):
            rebuild(raise_errors=False)
        todo.extend(field.annotation for field in fields.values())
