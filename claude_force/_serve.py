"""A lazy front for the Prometheus endpoint, so importing claude_force stays fast."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

if TYPE_CHECKING:
    from ._ledger import Ledger
    from ._reports import UsageReports

__all__ = ["serve_ledger_metrics"]


def serve_ledger_metrics(
    ledger: Ledger | UsageReports, port: int, addr: str = "127.0.0.1"
) -> tuple[WSGIServer, threading.Thread]:
    """Serve Prometheus metrics computed from a ledger at ``/metrics`` (a daemon thread).

    ``ledger`` is a ``Ledger`` or the ``UsageReports`` of one (which reads without opening a
    writer). Every scrape re-reads it, so calls made by any process count. Returns
    ``(server, thread)``; stop with ``server.shutdown()``. ``port=0`` picks a free port. Binds
    to loopback by default: metrics name agents and models. A port in use (or otherwise
    unusable) raises :class:`~claude_force.InvalidArgumentError` naming it and the fix.
    """
    from ._metrics import serve_ledger

    return serve_ledger(ledger, port, addr)
