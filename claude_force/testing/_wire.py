"""What goes over the wire: request checks, Message and error JSON, rate-limit headers.

Checks are pure and return the problem as text (``None`` when the body is fine), so the
server turns them into a 400 ``invalid_request_error`` without any exception plumbing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ._prompt_cache import CacheUsage
from ._text import Reply

__all__ = [
    "check_count_tokens_body",
    "check_messages_body",
    "error_body",
    "message_body",
    "new_id",
]

_ROLES = frozenset({"user", "assistant"})


def new_id(prefix: str) -> str:
    """``msg_…`` or ``req_…`` followed by 24 random hex digits."""
    return prefix + os.urandom(12).hex()


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_content(path: str, content: object) -> str | None:
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return f"{path}: must be a string or a list of content blocks, got {_describe(content)}"
    for i, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return f'{path}.{i}: must be a content block like {{"type": "text", "text": "..."}}'
        if block["type"] == "text" and not isinstance(block.get("text"), str):
            return f"{path}.{i}.text: must be a string, got {_describe(block.get('text'))}"
    return None


def _check_messages(messages: object) -> str | None:
    if not isinstance(messages, list) or not messages:
        return f"messages: must be a non-empty list of messages, got {_describe(messages)}"
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages.{i}: must be an object with role and content"
        if message.get("role") not in _ROLES:
            role = _describe(message.get("role"))
            return f"messages.{i}.role: must be 'user' or 'assistant', got {role}"
        if "content" not in message:
            return f"messages.{i}.content: Field required"
        problem = _check_content(f"messages.{i}.content", message["content"])
        if problem is not None:
            return problem
    return None


def _check_prompt(body: Mapping[str, Any]) -> str | None:
    """The checks shared by /v1/messages and /v1/messages/count_tokens."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return f"model: must be a non-empty string naming a model, got {_describe(model)}"
    problem = _check_messages(body.get("messages"))
    if problem is not None:
        return problem
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        if not isinstance(system, list):
            return f"system: must be a string or a list of text blocks, got {_describe(system)}"
        for i, block in enumerate(system):
            if not isinstance(block, dict) or block.get("type") != "text":
                return f'system.{i}: must be a text block {{"type": "text", "text": "..."}}'
            if not isinstance(block.get("text"), str):
                return f"system.{i}.text: must be a string, got {_describe(block.get('text'))}"
    tools = body.get("tools")
    if tools is not None and (
        not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)
    ):
        return f"tools: must be a list of tool definitions, got {_describe(tools)}"
    return None


def check_messages_body(body: object) -> str | None:
    """The problem with a ``/v1/messages`` body, or None; minimal, like the API's first pass."""
    if not isinstance(body, dict):
        return "request body must be a JSON object with model, max_tokens and messages"
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        return f"max_tokens: must be an integer >= 1, got {_describe(max_tokens)}"
    if body.get("stream"):
        return "stream: the simulator does not stream; send the request with stream=false"
    return _check_prompt(body)


def check_count_tokens_body(body: object) -> str | None:
    """The problem with a ``/v1/messages/count_tokens`` body, or None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object with model and messages"
    return _check_prompt(body)


def error_body(error_type: str, message: str, request_id: str) -> dict[str, Any]:
    """The API's error JSON."""
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": request_id,
    }


def message_body(
    *, model: str, reply: Reply, input_tokens: int, cache: CacheUsage
) -> dict[str, Any]:
    """A ``Message`` as the API returns it; ``input_tokens`` excludes cached prefix tokens."""
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": reply.text}],
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": reply.output_tokens,
            "cache_creation_input_tokens": cache.written_5m + cache.written_1h,
            "cache_read_input_tokens": cache.read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": cache.written_5m,
                "ephemeral_1h_input_tokens": cache.written_1h,
            },
            "service_tier": "standard",
        },
    }
