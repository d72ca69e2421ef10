"""Rate limits: many requests against a server with per-minute token buckets, side by side.

The simulator runs in its own process with an input-tokens-per-minute limit (the binding
one) and 300 ms service time; 1,000 requests with prompts of 400-6,000 tokens, scaled so a
run lasts about a minute. Each client sends the same request bodies (the orchestrator's own):

- the raw SDK under an ``asyncio.Semaphore(10)`` with its own retries (``max_retries=2``, its
  default, then 10): it waits the server's whole-second ``retry-after`` inside the semaphore;
- claude-force with default options (``max_concurrent=10``, ``max_retries=3``), whose token
  buckets learn the limits from the response headers and hold every attempt until it fits
  (its response cache in a fresh folder, so that no answer comes from an earlier run).

Then the same again while an unseen neighbour takes 30% of every refill. Printed per run:
requests failed, share of HTTP attempts answered 429 (counted by the server), p50 and p99 of
the time from a request's first attempt to its answer (retries and the waits between them
included; for the raw SDK from the moment it holds the semaphore, for claude-force from the
first time its transport sends it), seconds from the run's start to the first request the
server admitted (the client's own preparation: importing the SDK, building the requests),
wall time, input tokens per minute achieved, the limit, and the share of the allowance used
while the run was bound by the limit: what the server charged divided by what it made
available from its first admission to its last (the full bucket at the start plus the refill
over that span, less the neighbour's share). Before the first admission nothing was asked of
the limit, and after the last there was nothing left to send (only the last answers on the
wire), so neither counts; a client that holds requests back anywhere in between loses that
share. The goals of issue 9 are printed beside the table.

Then 4 processes sharing one Redis (``redis_url``, a private ``redis-server`` started for the
run) against the same limit, each sending a quarter of the requests, all starting together:
the same columns, plus p50/p99 time from a request's first attempt to its answer.

Run: python benchmarks/bench_ratelimit.py [--requests N] [--limit TOKENS_PER_MINUTE] [--quick]
     [--only redis]
(``--quick``: claude-force only, no raw-SDK runs, about a third of the time; ``--only redis``:
only the 4-process rows).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import anthropic
from _common import demo_project, free_port, simulator_process

from claude_force import AsyncAgentOrchestrator, TaskSpec
from claude_force._transport import Transport
from claude_force.testing import RateLimits

LATENCY_MS = 300.0
CONCURRENCY = 10
WORDS = [
    "review",
    "the",
    "module",
    "for",
    "thread",
    "safety",
    "and",
    "explain",
    "each",
    "finding",
    "with",
    "a",
    "short",
    "patch",
    "covering",
    "error",
    "paths",
    "tests",
    "naming",
    "style",
    "performance",
    "and",
    "the",
    "public",
    "interface",
]


@dataclass
class Run:
    name: str
    requests: int
    failed: int
    wall: float
    stats: dict[str, Any]
    limit: int
    share: float
    latencies: list[float] = field(default_factory=list)

    began: float = 0.0  # time.monotonic() at the run's start (the server's clock too)

    def row(self) -> str:
        admitted = int(self.stats.get("admitted", 0))
        rejected = int(self.stats.get("rejected", 0))
        attempts = admitted + rejected
        tokens = int(self.stats.get("input_tokens", 0))
        first = float(self.stats.get("first_admitted") or self.began)
        bound = float(self.stats.get("last_admitted") or first) - first  # limit-bound seconds
        available = self.limit + self.limit * (1.0 - self.share) * bound / 60.0
        p50, p99 = percentile(self.latencies, 50), percentile(self.latencies, 99)
        return (
            f"{self.name:<28} {self.failed:>6} {100.0 * rejected / max(1, attempts):>8.1f}% "
            f"{1000 * p50:>8.0f} {1000 * p99:>8.0f} {first - self.began:>7.1f} "
            f"{self.wall:>7.1f} {tokens / (self.wall / 60.0):>12,.0f} {self.limit:>11,} "
            f"{100.0 * tokens / available:>8.1f}%"
        )


HEADER = (
    f"{'client':<28} {'failed':>6} {'429s':>9} {'p50 ms':>8} {'p99 ms':>8} {'start s':>7} "
    f"{'wall s':>7} {'tokens/min':>12} {'limit/min':>11} {'used':>9}"
)
GOALS = (
    "goals (claude-force defaults): 0 failed; 429s <= 0.5% alone, <= 2% beside the neighbour; "
    f"p99 <= {2 * LATENCY_MS:.0f} ms (2x the service time); used >= 98%"
)


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def prompts(n: int, seed: int) -> list[str]:
    """``n`` prompts of 400 to 6,000 tokens (the simulator counts 4 ASCII chars a token)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        chars = rng.randint(400, 6000) * 4
        words: list[str] = [f"request {i}:"]
        size = len(words[0])
        while size < chars:
            word = rng.choice(WORDS)
            words.append(word)
            size += len(word) + 1
        out.append(" ".join(words)[:chars])
    return out


def bodies(config: Path, texts: list[str]) -> tuple[str, list[dict[str, Any]]]:
    """The orchestrator's agent and the exact request bodies it sends for ``texts``."""
    orch = AsyncAgentOrchestrator(config, api_key="bench", enable_tracking=False)
    agent = orch.list_agents()[0]
    built = [orch._requests.build(TaskSpec(agent, t)).create_kwargs() for t in texts]
    return agent, built


Outcome = tuple[int, list[float]]  # failed requests; seconds from first attempt to answer


async def raw_sdk(base_url: str, requests: list[dict[str, Any]], max_retries: int) -> Outcome:
    """Failed requests of the raw SDK under a semaphore, with its own retries."""
    sem = asyncio.Semaphore(CONCURRENCY)
    latencies: list[float] = []
    async with anthropic.AsyncAnthropic(
        api_key="bench", base_url=base_url, max_retries=max_retries
    ) as client:

        async def one(kwargs: dict[str, Any]) -> bool:
            async with sem:
                start = time.perf_counter()
                try:
                    await client.messages.create(**kwargs)
                except anthropic.APIError:
                    return False
                latencies.append(time.perf_counter() - start)
                return True

        results = await asyncio.gather(*(one(kw) for kw in requests))
    return sum(1 for ok in results if not ok), latencies


def time_first_attempts(transport: Transport, latencies: list[float]) -> None:
    """Instrument ``transport`` (this benchmark only): each answered send appends the time
    from its first attempt to its answer. Each request runs in its own task, so the task
    tells whose attempt it is."""
    first: dict[asyncio.Task[Any] | None, float] = {}
    attempt = transport._attempt
    send = transport.send

    async def timed_attempt(call: Callable[[float], Awaitable[Any]], *args: Any) -> Any:
        first.setdefault(asyncio.current_task(), time.perf_counter())
        return await attempt(call, *args)

    async def timed_send(request: Any) -> Any:
        task = asyncio.current_task()
        try:
            sent = await send(request)
            latencies.append(time.perf_counter() - first[task])
            return sent
        finally:
            first.pop(task, None)

    transport._attempt = timed_attempt  # type: ignore[method-assign]
    transport.send = timed_send  # type: ignore[method-assign]


async def claude_force(base_url: str, agent: str, texts: list[str]) -> Outcome:
    """Failed requests of claude-force with default options, in a fresh project and with
    its response cache in a fresh folder, so that no answer comes from an earlier run."""
    latencies: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = demo_project(Path(tmp))
        async with AsyncAgentOrchestrator(
            config, api_key="bench", base_url=base_url, cache_dir=Path(tmp) / "cache"
        ) as orch:
            time_first_attempts(orch._transport, latencies)
            results = await orch.execute_multiple([(agent, t) for t in texts])
    return sum(1 for r in results if not r.success), latencies


def run(name: str, limits: RateLimits, go: Callable[[str], Awaitable[Outcome]]) -> Run:
    stats: dict[str, Any] = {}
    with simulator_process(latency_ms=LATENCY_MS, rate_limits=limits, stats_out=stats) as url:
        began, start = time.monotonic(), time.perf_counter()
        failed, latencies = asyncio.run(go(url))
        wall = time.perf_counter() - start
    limit = limits.input_tokens_per_minute or 0
    share = limits.neighbour_share
    result = Run(name, 0, failed, wall, stats, limit, share, latencies, began)
    print(result.row(), flush=True)
    return result


PROCESSES = 4


def first_attempt_latencies() -> list[float]:
    """Record, for every request this process sends, the seconds from its first attempt
    (after admission) to its answer; returns the list the records go to."""
    import contextvars

    from claude_force._transport import Transport

    box: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("first", default=None)
    out: list[float] = []
    send, attempt = Transport.send, Transport._attempt

    async def timed_send(self: Transport, request: Any) -> Any:
        mark: list[float] = []
        box.set(mark)
        sent = await send(self, request)
        if mark:
            out.append(time.perf_counter() - mark[0])
        return sent

    async def timed_attempt(
        self: Transport, call: Any, timeout: float, number: int, *rest: Any
    ) -> Any:
        mark = box.get()
        if number == 1 and mark is not None and not mark:
            mark.append(time.perf_counter())
        return await attempt(self, call, timeout, number, *rest)

    Transport.send = timed_send  # type: ignore[method-assign]
    Transport._attempt = timed_attempt  # type: ignore[method-assign]
    return out


def redis_worker(
    base_url: str, redis_url: str, agent: str, texts: list[str], start: Any, out: Any
) -> None:
    """One of the processes: claude-force defaults plus ``redis_url``, in a fresh project."""
    latencies = first_attempt_latencies()

    async def go() -> int:
        with tempfile.TemporaryDirectory() as tmp:
            config = demo_project(Path(tmp))
            async with AsyncAgentOrchestrator(
                config,
                api_key="bench",
                base_url=base_url,
                cache_dir=Path(tmp) / "cache",
                redis_url=redis_url,
            ) as orch:
                await orch._transport.session()  # the SDK client is ready before the start
                out.put("ready")
                start.wait()
                results = await orch.execute_multiple([(agent, t) for t in texts])
        return sum(1 for r in results if not r.success)

    failed = asyncio.run(go())
    out.put((failed, latencies))


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of the run's own: fresh buckets and cache, nothing left behind."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed; the 4-process rows need one")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait()


def redis_processes(limits: RateLimits, agent: str, texts: list[str]) -> None:
    """The row for :data:`PROCESSES` processes sharing one Redis, each a share of ``texts``."""
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    stats: dict[str, Any] = {}
    with (
        private_redis() as redis_url,
        simulator_process(latency_ms=LATENCY_MS, rate_limits=limits, stats_out=stats) as url,
    ):
        shares = [texts[i::PROCESSES] for i in range(PROCESSES)]
        procs = [
            ctx.Process(target=redis_worker, args=(url, redis_url, agent, share, start, out))
            for share in shares
        ]
        for proc in procs:
            proc.start()
        for _ in procs:
            assert out.get() == "ready"  # every process has its client before any starts
        began, started = time.monotonic(), time.perf_counter()
        start.set()
        answers = [out.get() for _ in procs]
        wall = time.perf_counter() - started
        for proc in procs:
            proc.join()
    failed = sum(a[0] for a in answers)
    latencies = sorted(x for a in answers for x in a[1])
    limit, share = limits.input_tokens_per_minute or 0, limits.neighbour_share
    run = Run(f"{PROCESSES} processes, shared Redis", 0, failed, wall, stats, limit, share,
              latencies, began)  # fmt: skip
    print(run.row(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=2_000_000, help="input tokens per minute")
    parser.add_argument("--only", choices=["redis"], help="run only these rows")
    parser.add_argument("--quick", action="store_true", help="claude-force only (no raw-SDK runs)")
    args = parser.parse_args()
    print(GOALS)
    texts = prompts(args.requests, seed=9)
    if args.only == "redis":
        main_redis(args.requests, args.limit, texts)
        return
    with tempfile.TemporaryDirectory() as tmp:
        config = demo_project(Path(tmp))
        agent, requests = bodies(config, texts)
        for share in (0.0, 0.3):
            limits = RateLimits(
                input_tokens_per_minute=args.limit,
                requests_per_minute=20_000,  # generous: input tokens bind
                neighbour_share=share,
            )
            print(f"\n{args.requests} requests, neighbour_share={share}, {LATENCY_MS:.0f} ms")
            print(HEADER)
            for retries in () if args.quick else (2, 10):

                async def sdk(url: str, retries: int = retries) -> Outcome:
                    return await raw_sdk(url, requests, retries)

                run(f"raw SDK, max_retries={retries}", limits, sdk)

            async def ours(url: str) -> Outcome:
                return await claude_force(url, agent, texts)

            run("claude-force defaults", limits, ours)
    main_redis(args.requests, args.limit, texts)


def main_redis(requests: int, limit: int, texts: list[str]) -> None:
    """The 4-process rows: alone, and beside the unseen neighbour."""
    with tempfile.TemporaryDirectory() as tmp:
        agent, _ = bodies(demo_project(Path(tmp)), texts[:1])
    for share in (0.0, 0.3):
        limits = RateLimits(
            input_tokens_per_minute=limit, requests_per_minute=20_000, neighbour_share=share
        )
        print(
            f"\n{requests} requests over {PROCESSES} processes sharing Redis, "
            f"neighbour_share={share}, {LATENCY_MS:.0f} ms"
        )
        print(HEADER)
        redis_processes(limits, agent, texts)


if __name__ == "__main__":
    main()
