"""Core run path against the raw SDK, side by side in one run.

1. Throughput: 100 concurrent calls, zero simulated latency, cache off; the
   orchestrator's calls/s divided by the raw SDK's (aiohttp transport, same semaphore).
   Beside it, the process's CPU time per call on each side (all threads, the calls only):
   less noisy than wall time on a shared machine, and what the orchestrator adds. The
   orchestrator runs with its defaults (the goal's row), then with agent memory off, and
   with memory, ledger and metrics off: what each costs of the ratio.
2. Schedule: 100 calls x 200 ms latency at max_concurrent=10 (ideal 2.0 s); wall/ideal
   for both.

The sides take turns, and the order rotates from one repetition to the next (whichever
runs later tends to run faster); each row is the median over the repetitions. Every timed
window starts from a full garbage collection: importing the SDK leaves about 180,000
objects, so a full collection costs 100-250 ms, a whole window's worth of 100 calls, and
without it one came in a window or not by what the set-up before it left (building the
orchestrator or the request bodies), not by what the calls do. The calls' own collections
still fall in their window. Likewise the orchestrator's warm-up call is written to the
ledger and agent memory before the window (the writers open their files then, once per
orchestrator, as the raw SDK's warm-up opens its connection).

Requests ask for ``max_tokens=1024`` (the agent's default is 4096): 100 concurrent calls
of 4,096 would reserve more than the simulator's stated 400,000 output tokens a minute, and
the orchestrator would rightly pace them (the raw SDK ignores the limits). The rows
measure the orchestrator's own cost; ``bench_ratelimit.py`` measures pacing.

Run: python benchmarks/bench_core.py [--reps N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(kw) for kw in bodies))
        return timed_since(wall, cpu)


SIDES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "memory off": {"enable_memory": False},
    "memory, ledger, metrics off": {
        "enable_memory": False,
        "enable_tracking": False,
        "enable_metrics": False,
    },
}


def settle(orch: AsyncAgentOrchestrator) -> None:
    """Let the warm-up's ledger row and memory entry be written before the window: the
    writers open their files then, once per orchestrator, as the raw SDK's warm-up opens
    its connection. (Private handles: the orchestrator's own close() would end them.)"""
    orch._recorder.flush()
    if orch._recorder.memory is not None:
        orch._recorder.memory.flush()


async def orchestrator(
    config: Path, base_url: str, concurrency: int, tag: str, options: dict[str, Any]
) -> Timed:
    async with AsyncAgentOrchestrator(
        config,
        api_key="bench",
        base_url=base_url,
        max_concurrent=concurrency,
        enable_cache=False,
        ledger_path=config.parent / "data" / f"bench-{tag}.db",
        **options,
    ) as orch:
        agent = orch.list_agents()[0]
        await orch.execute_agent(agent, f"warm {tag}", max_tokens=MAX_TOKENS)
        settle(orch)
        tasks = [TaskSpec(agent, f"task {tag} {i}", max_tokens=MAX_TOKENS) for i in range(N)]
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        results = await orch.execute_multiple(tasks)
        elapsed = timed_since(wall, cpu)
        assert all(r.success for r in results), [r.errors for r in results if not r.success][:1]
        return elapsed


def one_round(
    config: Path, url: str, concurrency: int, tag: str, rep: int, sides: list[str]
) -> dict[str, Timed]:
    """One repetition of the raw SDK and of each orchestrator side in ``sides``, in an order
    that rotates with ``rep``."""
    names = ["raw", *sides]
    shift = rep % len(names)
    out = {}
    for name in names[shift:] + names[:shift]:
        label = f"{tag}{rep}{'raw' if name == 'raw' else sides.index(name)}"
        if name == "raw":
            out[name] = asyncio.run(raw_sdk(config, url, concurrency, label))
        else:
            out[name] = asyncio.run(orchestrator(config, url, concurrency, label, SIDES[name]))
    return out


class Throughput(NamedTuple):
    ours: float  # calls/s
    raw: float
    ratio: float  # median of the repetitions' ratios
    ours_cpu_ms: float  # CPU time per call
    raw_cpu_ms: float
    cpu_ratio: float  # median of the repetitions' ratios


def throughput(config: Path, reps: int) -> dict[str, Throughput]:
    sides = list(SIDES)
    runs: list[dict[str, Timed]] = []
    with simulator_process(latency_ms=0) as url:
        for rep in range(reps):
            runs.append(one_round(config, url, N, "t", rep, sides))
    out = {}
    for side in sides:
        out[side] = Throughput(
            median([N / r[side].wall for r in runs]),
            median([N / r["raw"].wall for r in runs]),
            median([r["raw"].wall / r[side].wall for r in runs]),
            median([r[side].cpu / N * 1e3 for r in runs]),
            median([r["raw"].cpu / N * 1e3 for r in runs]),
            median([r["raw"].cpu / r[side].cpu for r in runs]),
        )
    return out


def schedule(config: Path, reps: int) -> tuple[float, float]:
    ideal = N / 10 * 0.2
    ours, raws = [], []
    with simulator_process(latency_ms=200) as url:
        for rep in range(reps):
            got = one_round(config, url, 10, "s", rep, ["defaults"])
            raws.append(got["raw"].wall / ideal)
            ours.append(got["defaults"].wall / ideal)
    return median(ours), median(raws)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = demo_project(Path(tmp))
        sides = throughput(config, args.reps)
        s_ours, s_raw = schedule(config, max(4, args.reps // 2))
    print(f"{'measure':<50}{'claude-force':>14}{'raw SDK':>10}{'ratio':>9}  goal")
    print("throughput, 100 concurrent, calls/s (median)")
    for side, t in sides.items():
        goal = "  >= 0.90" if side == "defaults" else ""
        print(f"{'  ' + side:<50}{t.ours:>14.0f}{t.raw:>10.0f}{t.ratio:>9.2f}{goal}")
        print(
            f"{'    the same calls, process CPU ms per call':<50}"
            f"{t.ours_cpu_ms:>14.3f}{t.raw_cpu_ms:>10.3f}{t.cpu_ratio:>9.2f}"
        )
    print(
        f"{'100 x 200 ms at 10 concurrent, wall/ideal':<50}{s_ours:>14.3f}{s_raw:>10.3f}"
        f"{s_ours - s_raw:>+9.3f}  <= +0.02 over raw"
    )


if __name__ == "__main__":
    main()
