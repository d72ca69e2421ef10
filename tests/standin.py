"""A small Anthropic-compatible server written apart from ``claude_force.testing``.

Acceptance tests point the orchestrator and the CLI at it to check that the project works
against a server it did not write: the Messages API's response and error shapes, rate-limit
headers present or not, and the ways a real network misbehaves (a reset connection, a cut
body, a proxy's HTML 502, gzip). Each request takes the next scripted :class:`Reply`; with the
script empty it answers a plain success. Only the standard library is used.
"""

from __future__ import annotations

import gzip
import itertools
import json
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ERROR_TYPES", "Recorded", "Reply", "StandIn"]

# The error type the service names for each status (the Messages API's error reference).
ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}

FULL_LIMIT_HEADERS: Mapping[str, str] = {
    "anthropic-ratelimit-requests-limit": "1000",
    "anthropic-ratelimit-requests-remaining": "999",
    "anthropic-ratelimit-requests-reset": "2030-01-01T00:00:00Z",
    "anthropic-ratelimit-input-tokens-limit": "400000",
    "anthropic-ratelimit-input-tokens-remaining": "399000",
    "anthropic-ratelimit-input-tokens-reset": "2030-01-01T00:00:00Z",
    "anthropic-ratelimit-output-tokens-limit": "80000",
    "anthropic-ratelimit-output-tokens-remaining": "79000",
    "anthropic-ratelimit-output-tokens-reset": "2030-01-01T00:00:00Z",
    "anthropic-ratelimit-tokens-limit": "480000",
    "anthropic-ratelimit-tokens-remaining": "478000",
    "anthropic-ratelimit-tokens-reset": "2030-01-01T00:00:00Z",
}


@dataclass(frozen=True, kw_only=True)
class Reply:
    """What the server does with one request.

    ``status`` 200 answers a message built from the request (``text``, ``stop_reason``,
    ``usage`` merged over defaults, ``thinking`` / ``tool_use`` blocks first); any other status
    answers the service's error body with ``ERROR_TYPES[status]`` unless ``body`` is given.
    ``action``: ``"reset"`` closes the connection without answering, ``"truncate"`` sends half
    the body, ``"gzip"`` compresses it, ``"trickle"`` sends it a byte every 20 ms,
    ``"slow-body"`` in 15 parts 0.1 s apart. ``hold`` is an Event the handler waits on first.
    """

    status: int = 200
    text: str = "stand-in answer"
    stop_reason: str = "end_turn"
    usage: Mapping[str, Any] = field(default_factory=dict)
    thinking: bool = False
    tool_use: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    limit_headers: Mapping[str, str] = field(default_factory=lambda: FULL_LIMIT_HEADERS)
    body: bytes | None = None
    content_type: str = "application/json"
    action: str | None = None
    hold: threading.Event | None = None
    message: str = "scripted failure"


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: Mapping[str, str]
    body: Any


class StandIn:
    """``with StandIn() as server: ... server.base_url ...``; ``script(*replies)`` queues."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Reply] = []
        self.requests: list[Recorded] = []
        self.batches: dict[str, list[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: tests read what they need from ``requests``

            def do_POST(self) -> None:
                server._handle(self)

            def do_GET(self) -> None:
                server._handle(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> StandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def reset(self) -> None:
        """Forget the recorded requests and any replies still queued."""
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self.batches.clear()

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def messages(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith("/v1/messages")]

    def all_header_values(self) -> Iterator[str]:
        for r in self.requests:
            yield from r.headers.values()

    # ------------------------------------------------------------------ handling

    def _next(self) -> Reply:
        with self._lock:
            return self._queue.pop(0) if self._queue else Reply()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = h.path.split("?", 1)[0]
        with self._lock:
            headers = {k.lower(): v for k, v in h.headers.items()}
            self.requests.append(Recorded(h.command, path, headers, body))
        reply = self._next()
        if reply.hold is not None:
            reply.hold.wait(30)
        if reply.action == "reset":
            # SO_LINGER 0: the client sees a reset, not a clean close.
            h.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            h.close_connection = True
            h.connection.close()
            return
        request_id = f"req_standin{next(self._ids):06d}"
        status, payload = self._payload(path, body, reply, request_id)
        headers = {"content-type": reply.content_type, "request-id": request_id}
        if reply.limit_headers and path.startswith("/v1/messages"):
            headers.update(reply.limit_headers)
        headers.update(reply.headers)
        if reply.action == "gzip":
            payload = gzip.compress(payload)
            headers["content-encoding"] = "gzip"
        sent = payload[: len(payload) // 2] if reply.action == "truncate" else payload
        h.send_response(status)
        for name, value in headers.items():
            h.send_header(name, value)
        h.send_header("content-length", str(len(payload)))
        h.end_headers()
        try:
            if reply.action == "slow-body":  # the headers at once, the body over 1.5 s
                pause = threading.Event()
                step = -(-len(sent) // 15)
                for i in range(0, len(sent), step):
                    pause.wait(0.1)
                    h.wfile.write(sent[i : i + step])
                    h.wfile.flush()
            elif reply.action == "trickle":  # a byte at a time, every 20 ms, as long as read
                pause = threading.Event()
                for i in range(len(sent)):
                    h.wfile.write(sent[i : i + 1])
                    h.wfile.flush()
                    pause.wait(0.02)
            else:
                h.wfile.write(sent)
                h.wfile.flush()
        except OSError:
            return
        if reply.action == "truncate":
            h.close_connection = True

    def _payload(self, path: str, body: Any, reply: Reply, request_id: str) -> tuple[int, bytes]:
        if reply.body is not None:
            return reply.status, reply.body
        if reply.status != 200:
            error_type = ERROR_TYPES.get(reply.status, "api_error")
            return reply.status, json.dumps(
                {
                    "type": "error",
                    "error": {"type": error_type, "message": reply.message},
                    "request_id": request_id,
                }
            ).encode()
        if path.startswith("/v1/messages/batches"):
            return self._batches(path, body, request_id)
        if path == "/v1/messages/count_tokens":
            return 200, json.dumps({"input_tokens": _input_tokens(body)}).encode()
        if path != "/v1/messages":
            return 404, json.dumps(
                {
                    "type": "error",
                    "error": {"type": "not_found_error", "message": f"no route {path}"},
                    "request_id": request_id,
                }
            ).encode()
        return 200, json.dumps(self._message(body, reply, request_id)).encode()

    def _batches(self, path: str, body: Any, request_id: str) -> tuple[int, bytes]:
        """Message Batches: a batch ends as soon as it is created; each request is answered
        as ``/v1/messages`` would answer it (the script is not consulted for them)."""
        parts = path.removeprefix("/v1/messages/batches").strip("/").split("/")
        if parts == [""] and body is not None:  # create
            batch_id = f"msgbatch_{request_id}"
            created = [
                {
                    "custom_id": item["custom_id"],
                    "result": {
                        "type": "succeeded",
                        "message": self._message(item["params"], Reply(), f"{request_id}_{i}"),
                    },
                }
                for i, item in enumerate(body["requests"])
            ]
            with self._lock:
                self.batches[batch_id] = created
            return 200, json.dumps(self._batch_view(batch_id)).encode()
        if parts == [""]:  # list, newest first
            with self._lock:
                ids = list(reversed(self.batches))
            data = [self._batch_view(i) for i in ids]
            first, last = (ids[0], ids[-1]) if ids else (None, None)
            page = {"data": data, "has_more": False, "first_id": first, "last_id": last}
            return 200, json.dumps(page).encode()
        with self._lock:
            answers = self.batches.get(parts[0])
        if answers is None:
            error = {"type": "not_found_error", "message": f"no batch {parts[0]}"}
            return 404, json.dumps(
                {"type": "error", "error": error, "request_id": request_id}
            ).encode()
        if parts[1:] == ["results"]:
            return 200, "".join(json.dumps(a) + "\n" for a in answers).encode()
        return 200, json.dumps(self._batch_view(parts[0])).encode()

    def _batch_view(self, batch_id: str) -> dict[str, Any]:
        count = len(self.batches[batch_id])
        return {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": "ended",
            "request_counts": {
                "processing": 0,
                "succeeded": count,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": "2030-01-01T00:00:00Z",
            "ended_at": "2030-01-01T00:00:01Z",
            "expires_at": "2030-01-02T00:00:00Z",
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{self.base_url}/v1/messages/batches/{batch_id}/results",
        }

    def _message(self, body: Any, reply: Reply, request_id: str) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if reply.thinking:
            content.append({"type": "thinking", "thinking": "Let me see.", "signature": "c2ln"})
        content.append({"type": "text", "text": reply.text, "citations": None})
        if reply.tool_use:
            content.append(
                {"type": "tool_use", "id": "toolu_01", "name": "lookup", "input": {"q": "x"}}
            )
        usage: dict[str, Any] = {
            "input_tokens": _input_tokens(body),
            "output_tokens": 7,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
            "service_tier": "standard",
        }
        usage.update(reply.usage)
        return {
            "id": f"msg_{request_id}",
            "type": "message",
            "role": "assistant",
            "model": (body or {}).get("model", "claude-sonnet-5-5"),
            "content": content,
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }


def _input_tokens(body: Any) -> int:
    """A rough count (4 characters a token) of the request's text, at least 1."""
    return max(1, len(json.dumps(body or {})) // 4)
