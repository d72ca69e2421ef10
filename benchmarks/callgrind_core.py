"""Instructions per call, orchestrator against the raw SDK, counted by valgrind's callgrind.

Wall time and CPU time on a shared machine move from run to run; an instruction count does
not (the same program, inputs and environment give the same count whatever else the machine
does). Each side runs twice under ``valgrind --tool=callgrind``, once with ``N`` calls and
once with ``3 N``; the difference divided by ``2 N`` is what one call costs, start-up and
imports cancelled out. The simulator runs in a process of its own, outside valgrind.

Sides: the raw SDK (aiohttp transport, a semaphore), and the orchestrator with its defaults,
with agent memory off, with tracking (ledger and metrics) off, and with both off; cache off
throughout, ``max_tokens=1024`` as in ``bench_core.py``. Thread scheduling under valgrind is
serialised, so writer threads batch differently than in a real run: the memory and ledger
rows are indications, the totals are exact for the run they describe.

Run: python benchmarks/callgrind_core.py [--calls N] [--jobs J]   (about 10 minutes, needs valgrind)
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import demo_project, simulator_process

SIDES: dict[str, dict[str, Any] | None] = {
    "raw SDK": None,
    "orchestrator, defaults": {},
    "memory off": {"enable_memory": False},
    "tracking off": {"enable_tracking": False, "enable_metrics": False},
    "memory and tracking off": {
        "enable_memory": False,
        "enable_tracking": False,
        "enable_metrics": False,
    },
}
MAX_TOKENS = 1024


async def _child(side: str, url: str, calls: int) -> None:
    """One side's run (inside valgrind): a warm-up call, then ``calls`` concurrent calls."""
    import anthropic

    from claude_force import AsyncAgentOrchestrator, TaskSpec

    with tempfile.TemporaryDirectory() as tmp:
        config = demo_project(Path(tmp))
        options = SIDES[side]
        if options is None:
            orch = AsyncAgentOrchestrator(config, api_key="bench", enable_tracking=False)
            agent = orch.list_agents()[0]
            bodies = [
                orch._requests.build(
                    TaskSpec(agent, f"task {i}", max_tokens=MAX_TOKENS)
                ).create_kwargs()
                for i in range(-1, calls)
            ]
            sem = asyncio.Semaphore(100)
            async with anthropic.AsyncAnthropic(
                api_key="bench",
                base_url=url,
                max_retries=0,
                http_client=anthropic.DefaultAioHttpClient(),
            ) as client:

                async def one(kwargs: dict[str, Any]) -> None:
                    async with sem:
                        await client.messages.create(**kwargs)

                await one(bodies[0])
                await asyncio.gather(*(one(b) for b in bodies[1:]))
            return
        async with AsyncAgentOrchestrator(
            config,
            api_key="bench",
            base_url=url,
            max_concurrent=100,
            enable_cache=False,
            ledger_path=config.parent / "data" / "bench.db",
            **options,
        ) as orch:
            agent = orch.list_agents()[0]
            await orch.execute_agent(agent, "warm", max_tokens=MAX_TOKENS)
            tasks = [TaskSpec(agent, f"task {i}", max_tokens=MAX_TOKENS) for i in range(calls)]
            results = await orch.execute_multiple(tasks)
            assert all(r.success for r in results), results[0].errors


def _count(side: str, url: str, calls: int) -> int:
    """Instructions of one run of ``side`` under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--child",
                side,
                url,
                str(calls),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        found = re.search(r"Collected : (\d+)", proc.stderr)
        if proc.returncode != 0 or found is None:
            raise RuntimeError(f"{side}: the run under valgrind failed:\n{proc.stderr[-2000:]}")
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, url, calls = args.child
        asyncio.run(_child(side, url, int(calls)))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt install valgrind)")
    n = args.calls
    with simulator_process(latency_ms=0) as url, ThreadPoolExecutor(args.jobs) as pool:
        runs = {
            (side, calls): pool.submit(_count, side, url, calls)
            for side in SIDES
            for calls in (n, 3 * n)
        }
        per_call = {
            side: (runs[side, 3 * n].result() - runs[side, n].result()) / (2 * n) for side in SIDES
        }
    raw = per_call["raw SDK"]
    print(f"{'side':<28}{'instructions per call':>24}{'raw SDK / side':>16}")
    for side, count in per_call.items():
        print(f"{side:<28}{count / 1e6:>22.2f} M{raw / count:>16.2f}")


if __name__ == "__main__":
    main()
