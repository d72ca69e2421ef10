"""A separate process running one orchestrator on its own event loop, driven over stdin.

Each line on stdin is a JSON command, answered by one JSON line on stdout:

- ``{"op": "open", "config": ..., "options": {...}, "cache": {...}}``: a new orchestrator
  (``cache`` describes a ResponseCache given to it, so its Redis namespace is the test's);
- ``{"op": "run", "tasks": [[agent, task], ...]}``: ``execute_multiple``; answers each
  result's success, cached flag and tier, with the cross-process flight's counts and the
  Redis warnings and fallbacks seen so far;
- ``{"op": "start", ...}`` like run, answered ``{"started": true}`` at once; ``{"op":
  "stats"}`` answers the counts meanwhile, ``{"op": "collect"}`` the results;
- ``{"op": "close"}``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
from typing import Any

import anthropic  # noqa: F401  (imported up front: a command must start at once)

from claude_force import AsyncAgentOrchestrator, ResponseCache


class Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.redis = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("redis at "):
            self.redis += 1


async def main() -> None:
    loop = asyncio.get_running_loop()
    warnings = Count()
    logging.getLogger("claude_force").addHandler(warnings)
    orch: AsyncAgentOrchestrator | None = None
    running: asyncio.Task[Any] | None = None

    def report(results: list[Any]) -> dict[str, Any]:
        assert orch is not None
        flight = orch._cache._across
        shared = orch._cache.shared
        return {
            "results": [
                {"success": r.success, "cached": r.cached, "tier": r.cache_tier, "error": r.error}
                for r in results
            ],
            "flight": dataclasses.asdict(flight.stats) if flight is not None else None,
            "fallbacks": shared.fallbacks if shared is not None else 0,
            "redis_warnings": warnings.redis,
        }

    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        cmd = json.loads(line)
        op = cmd["op"]
        answer: dict[str, Any]
        if op == "open":
            options = dict(cmd["options"])
            if cmd.get("cache"):
                options["response_cache"] = ResponseCache(**cmd["cache"])
            orch = AsyncAgentOrchestrator(cmd["config"], **options)
            await orch._transport.session()  # the client is ready before any command
            answer = {"opened": True}
        elif op in ("run", "start"):
            assert orch is not None
            tasks = [tuple(t) for t in cmd["tasks"]]
            running = asyncio.ensure_future(orch.execute_multiple(tasks))
            answer = {"started": True} if op == "start" else report(await running)
        elif op == "stats":
            answer = report([])
        elif op == "collect":
            assert running is not None
            answer = report(await running)
        elif op == "close":
            if orch is not None:
                await orch.close()
                if orch.response_cache is not None:
                    await orch.response_cache.aclose()
            answer = {"closed": True}
        else:
            answer = {"error": f"unknown op {op!r}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
