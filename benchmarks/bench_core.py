"""Core run path against the raw SDK, side by side in one run.

1. Throughput: 100 concurrent calls, zero simulated latency, cache off; the
   orchestrator's calls/s divided by the raw SDK's (aiohttp transport, same semaphore).
   Beside it, the process's CPU time per call on each side (all threads, the calls only):
   less noisy than wall time on a shared machine, and what the orchestrator adds.
2. Schedule: 100 calls x 200 ms latency at max_concurrent=10 (ideal 2.0 s); wall/ideal
   for both.

The two sides take turns, and which goes first alternates from one repetition to the next
(whichever runs second in a pair tends to run faster); each row is the median over the
repetitions.

Requests ask for ``max_tokens=1024`` (the agent's default is 4096): 100 concurrent calls
of 4,096 would reserve more than the simulator's stated 400,000 output tokens a minute, and
the orchestrator would rightly pace them (the raw SDK ignores the limits). The rows
measure the orchestrator's own cost; ``bench_ratelimit.py`` measures pacing.

Run: python benchmarks/bench_core.py [--reps N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).parent))

import anthropic
from _common import demo_project, median, simulator_process

from claude_force import AsyncAgentOrchestrator, TaskSpec

N = 100
MODEL = "claude-sonnet-5-5"
MAX_TOKENS = 1024  # 100 x 1,024 fits the stated output limit: nothing is paced


def same_requests(config: Path, tag: str) -> list[dict[str, Any]]:
    """The exact request bodies the orchestrator sends, built before any timing starts."""
    orch = AsyncAgentOrchestrator(config, api_key="bench", enable_tracking=False)
    agent = orch.list_agents()[0]
    return [
        orch._requests.build(
            TaskSpec(agent, f"task {tag} {i}", max_tokens=MAX_TOKENS)
        ).create_kwargs()
        for i in range(-1, N)
    ]


class Timed(NamedTuple):
    wall: float  # seconds
    cpu: float  # the process's CPU seconds (all threads) over the same span


def timed_since(wall: float, cpu: float) -> Timed:
    return Timed(time.perf_counter() - wall, time.process_time() - cpu)


async def raw_sdk(config: Path, base_url: str, concurrency: int, tag: str) -> Timed:
    sem = asyncio.Semaphore(concurrency)
    warm, *bodies = same_requests(config, tag)
    async with anthropic.AsyncAnthropic(
        api_key="bench",
        base_url=base_url,
        max_retries=0,
        http_client=anthropic.DefaultAioHttpClient(),
    ) as client:

        async def one(kwargs: dict[str, Any]) -> None:
            async with sem:
                await client.messages.create(**kwargs)

        await one(warm)  # warm the connection pool, as the orchestrator run does below
        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(kw) for kw in bodies))
        return timed_since(wall, cpu)


async def orchestrator(
    config: Path, base_url: str, concurrency: int, tag: str, *, tracking: bool = True
) -> Timed:
    async with AsyncAgentOrchestrator(
        config,
        api_key="bench",
        base_url=base_url,
        max_concurrent=concurrency,
        enable_cache=False,
        enable_tracking=tracking,
        enable_metrics=tracking,
        ledger_path=config.parent / "data" / f"bench-{tag}.db",
    ) as orch:
        agent = orch.list_agents()[0]
        await orch.execute_agent(agent, f"warm {tag}", max_tokens=MAX_TOKENS)
        tasks = [TaskSpec(agent, f"task {tag} {i}", max_tokens=MAX_TOKENS) for i in range(N)]
        wall, cpu = time.perf_counter(), time.process_time()
        results = await orch.execute_multiple(tasks)
        elapsed = timed_since(wall, cpu)
        assert all(r.success for r in results), [r.errors for r in results if not r.success][:1]
        return elapsed


def pair(config: Path, url: str, concurrency: int, tag: str, rep: int) -> tuple[Timed, Timed]:
    """One repetition of each side (raw SDK, orchestrator); the raw SDK goes first in even
    repetitions."""
    order = [("raw", raw_sdk), ("ours", orchestrator)]
    if rep % 2:
        order.reverse()
    out = {
        name: asyncio.run(run(config, url, concurrency, f"{tag}{name}{rep}")) for name, run in order
    }
    return out["raw"], out["ours"]


class Throughput(NamedTuple):
    ours: float  # calls/s
    raw: float
    ratio: float  # median of the repetitions' ratios
    ours_cpu_ms: float  # CPU time per call
    raw_cpu_ms: float


def throughput(config: Path, reps: int) -> Throughput:
    ratios, ours, raws, ours_cpu, raws_cpu = [], [], [], [], []
    with simulator_process(latency_ms=0) as url:
        for rep in range(reps):
            raw_t, our_t = pair(config, url, N, "t", rep)
            raws.append(N / raw_t.wall)
            ours.append(N / our_t.wall)
            ratios.append(raw_t.wall / our_t.wall)
            raws_cpu.append(raw_t.cpu / N * 1e3)
            ours_cpu.append(our_t.cpu / N * 1e3)
    return Throughput(
        median(ours), median(raws), median(ratios), median(ours_cpu), median(raws_cpu)
    )


def schedule(config: Path, reps: int) -> tuple[float, float]:
    ideal = N / 10 * 0.2
    ours, raws = [], []
    with simulator_process(latency_ms=200) as url:
        for rep in range(reps):
            raw_t, our_t = pair(config, url, 10, "s", rep)
            raws.append(raw_t.wall / ideal)
            ours.append(our_t.wall / ideal)
    return median(ours), median(raws)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=11)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = demo_project(Path(tmp))
        t = throughput(config, args.reps)
        s_ours, s_raw = schedule(config, max(4, args.reps // 2))
    print(f"{'measure':<46}{'claude-force':>14}{'raw SDK':>10}{'ratio':>9}  goal")
    print(
        f"{'throughput, 100 concurrent, calls/s (median)':<46}"
        f"{t.ours:>14.0f}{t.raw:>10.0f}{t.ratio:>9.2f}  >= 0.90"
    )
    print(
        f"{'  the same calls, process CPU ms per call':<46}"
        f"{t.ours_cpu_ms:>14.3f}{t.raw_cpu_ms:>10.3f}{t.raw_cpu_ms / t.ours_cpu_ms:>9.2f}"
    )
    print(
        f"{'100 x 200 ms at 10 concurrent, wall/ideal':<46}{s_ours:>14.3f}{s_raw:>10.3f}"
        f"{s_ours - s_raw:>+9.3f}  <= +0.02 over raw"
    )


if __name__ == "__main__":
    main()
