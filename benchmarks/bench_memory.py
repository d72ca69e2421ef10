"""Agent memory benchmark: what one recall costs on a 10,000-entry store, beside a thread hop.

Run: ``python benchmarks/bench_memory.py`` (about half a minute; ``--quick`` for a smoke run).

The store holds 10,000 entries of tasks drawn from a Zipf-like vocabulary (so some words are
in most tasks, as "review" is for a reviewer): 20 agents of 500 (the default cap per agent),
and one agent of 10,000 (the cap raised: the worst case). A recall is what a call does before
its request is built: the FTS5 query ranked by BM25, the common-word lookup, the threshold and
the block. Every figure is a median (and p99) of this run; the ratio compares recall with
handing work to a thread (``asyncio.to_thread``) in the same run. A recall above ~1 ms would
stall every other call on the event loop, which is why recall runs off the loop.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from claude_force import AgentMemory, AgentResult

VOCABULARY = [f"word{i}" for i in range(4000)]
WEIGHTS = [1 / (rank + 1) for rank in range(len(VOCABULARY))]


def task(rng: random.Random, words: int = 14) -> str:
    return " ".join(rng.choices(VOCABULARY, WEIGHTS, k=words))


def fill(path: Path, agents: int, per_agent: int, rng: random.Random) -> AgentMemory:
    memory = AgentMemory(path, max_entries_per_agent=per_agent)
    for a in range(agents):
        for _ in range(per_agent):
            result = AgentResult(
                agent_name=f"agent{a}", success=True, output=task(rng, 200), model="m"
            )
            memory.remember(result, task(rng))
        memory.flush()
    return memory


def timed(memory: AgentMemory, queries: list[str]) -> tuple[float, float]:
    """Median and p99 of ``context`` over ``queries``, in milliseconds."""
    samples = []
    for query in queries:
        started = time.perf_counter()
        memory.context("agent0", query)
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


async def hop_ms(runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await asyncio.to_thread(lambda: None)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller store, fewer runs")
    args = parser.parse_args()
    rng = random.Random(7)
    scale = 10 if args.quick else 1
    runs = 50 if args.quick else 300
    hop = asyncio.run(hop_ms(runs))
    print(f"asyncio.to_thread round trip: {hop:.3f} ms (median)")
    print(f"{'store':<34} {'recall p50':>11} {'p99':>9} {'p50 / hop':>10}")
    with tempfile.TemporaryDirectory() as folder:
        for label, agents, per_agent in (
            ("20 agents x 500 entries", 20, 500 // scale),
            ("1 agent x 10,000 entries", 1, 10_000 // scale),
        ):
            memory = fill(Path(folder) / f"{agents}.db", agents, per_agent, rng)
            p50, p99 = timed(memory, [task(rng) for _ in range(runs)])
            print(f"{label:<34} {p50:>8.2f} ms {p99:>6.2f} ms {p50 / hop:>9.1f}x")
            memory.close()


if __name__ == "__main__":
    main()
