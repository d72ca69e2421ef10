"""A lazy front for the Prometheus endpoint, so importing claude_force stays fast."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from ._ledger import Ledger

__all__ = ["serve_ledger_metrics"]


def serve_ledger_metrics(
    ledger: Ledger, port: int, addr: str = "127.0.0.1"
) -> tuple[WSGIServer, threading.Thread]:
    """Serve Prometheus metrics computed from ``ledger`` at ``/metrics`` (a daemon thread).

    Every scrape re-reads the ledger, so calls made by any process count. Returns
    ``(server, thread)``; stop with ``server.shutdown()``. ``port=0`` picks a free port.
    Binds to loopback by default: metrics name agents and models.
    """
    from ._metrics import serve_ledger

    return serve_ledger(ledger, port, addr)
