"""Response cache benchmark: our tiers against a floor and against diskcache, side by side.

Run: ``python benchmarks/bench_cache.py`` (about a minute; ``--quick`` for a smoke run).

Every number is the median of several repetitions measured in this one run, and every ratio
compares two numbers from the same run on the same data, so the table holds on any machine.

* floor: a dict lookup + SHA-256 of the key + an HMAC check of a ~2 KB value, the least
  work any signed in-process cache must do per hit;
* memory hit: ``ResponseCache.get`` served by the memory tier;
* disk hit / disk set: ``ResponseCache`` with the memory tier off (``memory_max_mb=0``),
  against ``diskcache.Cache.get`` / ``set`` of the same dicts. ``set`` returns once the
  entry is committed, as diskcache's does: both use SQLite in WAL mode with
  ``synchronous=NORMAL`` (durable against a process crash at return, checkpoints fsync'd),
  so the two rows compare the same durability. Ours also serialises to JSON and signs
  (HMAC-SHA256) each value, where diskcache pickles it;
* disk aset: the caller's cost of ``aset`` (the write goes to the tier's writer thread),
  and a burst until ``aflush`` returns, when all of it is as durable as after ``set``;
* open and set p99 with 100,000 entries on disk and a limit that makes every set evict,
  beside diskcache's p99 on the same workload (its ``size_limit`` set to what it holds);
* execute_agent hit, memory on against off: the default options (ledger, metrics, agent
  memory), with agent memory on and off, alternated (which goes first alternates too),
  after the misses' entries are written and the first hits filled the recall memo;
  memory on recalls before each call;
* async: a disk hit through ``aget`` on the loop against ``get`` handed to a thread, and the
  event loop's worst stall while another process holds the database's write lock, during
  20 concurrent tasks each doing a miss, a write and a hit: ``aset`` against the sync
  ``set`` called on the loop.

To add a row (e.g. an end-to-end ``execute_agent`` row), write a function taking a
``Bench`` and returning a list of ``Row`` and append it to ``ROW_BUILDERS``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import random
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diskcache  # type: ignore[import-untyped]

from claude_force.cache import ResponseCache

SECRET = b"benchmark-secret-" + b"x" * 16
MIB = 1024 * 1024


@dataclass
class Row:
    """One line of the table: our measurement, what it is compared with, and the goal."""

    name: str
    value: float
    unit: str
    baseline_name: str = ""
    baseline: float | None = None
    goal: str = ""
    goal_ratio: float | None = None  # met when value / baseline <= goal_ratio
    goal_abs: float | None = None  # met when value <= goal_abs (same unit)

    @property
    def ratio(self) -> float | None:
        return None if self.baseline is None else self.value / self.baseline

    @property
    def met(self) -> str:
        if self.goal_ratio is not None and self.ratio is not None:
            return "yes" if self.ratio <= self.goal_ratio else "NO"
        if self.goal_abs is not None:
            return "yes" if self.value <= self.goal_abs else "NO"
        return ""


@dataclass
class Bench:
    """Shared settings and data for the row builders."""

    repeats: int
    hit_entries: int
    ops: int
    big_entries: int
    workdir: Path
    values: list[dict[str, Any]] = field(default_factory=list)


def make_value(rng: random.Random, size: int = 2048) -> dict[str, Any]:
    """A dict shaped like a Messages API response, about ``size`` bytes of JSON."""
    words = "".join(rng.choices(string.ascii_letters + "     ", k=size - 400))
    return {
        "id": "msg_" + "".join(rng.choices(string.ascii_letters, k=24)),
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": words}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": rng.randint(10, 5000), "output_tokens": rng.randint(10, 900)},
        "agent": "code-reviewer",
        "cached_at": time.time(),
    }


def key_of(i: int) -> str:
    return hashlib.sha256(f"request-{i}".encode()).hexdigest()


def per_op_us(run: Callable[[], int], repeats: int) -> float:
    """Median over ``repeats`` of (elapsed / ops) in microseconds; ``run`` returns ops."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        ops = run()
        samples.append((time.perf_counter_ns() - start) / ops / 1000)
    return statistics.median(samples)


def alternated(
    ours: Callable[[], int], theirs: Callable[[], int], repeats: int
) -> tuple[float, float]:
    """``per_op_us`` of both, one repetition of each in turn, so that a busy spell of the
    machine slows both alike instead of only the one measured during it."""
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for run, out in ((ours, samples[0]), (theirs, samples[1])):
            start = time.perf_counter_ns()
            ops = run()
            out.append((time.perf_counter_ns() - start) / ops / 1000)
    return statistics.median(samples[0]), statistics.median(samples[1])


def each(get: Callable[[str], object], keys: list[str]) -> Callable[[], int]:
    """A run for per_op_us: ``get`` every key once."""

    def run() -> int:
        for k in keys:
            get(k)
        return len(keys)

    return run


def floor_op(keys: list[str], blobs: dict[str, bytes]) -> Callable[[], int]:
    """A run for per_op_us: the floor's work for every key once."""
    macs = {k: hmac.digest(SECRET, blobs[k], "sha256") for k in keys}

    def run() -> int:
        for k in keys:
            blob = blobs[k]
            hashlib.sha256(k.encode()).digest()
            hmac.compare_digest(macs[k], hmac.digest(SECRET, blob, "sha256"))
        return len(keys)

    return run


def rows_hits(b: Bench) -> list[Row]:
    import json

    keys = [key_of(i) for i in range(b.hit_entries)]
    order = keys[:]
    random.Random(1).shuffle(order)
    blobs = {k: json.dumps(v).encode() for k, v in zip(keys, b.values, strict=True)}
    with ResponseCache(
        cache_dir=b.workdir / "hits", cache_secret=SECRET, memory_max_mb=256
    ) as cache:
        cache.warm(zip(keys, b.values, strict=True))
        mem, floor = alternated(each(cache.get, order), floor_op(order, blobs), b.repeats)
        assert cache.get_stats()["tiers"]["memory"]["hits"] >= len(order)
    rows = [Row("floor: dict + sha256 + hmac 2KB", floor, "us/op")]
    rows.append(Row("memory hit", mem, "us/op", "floor", floor, "<= 2x floor", goal_ratio=2))

    with (
        ResponseCache(cache_dir=b.workdir / "hits", cache_secret=SECRET, memory_max_mb=0) as c,
        diskcache.Cache(str(b.workdir / "dc-hits")) as dc,
    ):
        for k, v in zip(keys, b.values, strict=True):
            dc.set(k, v)
        disk, theirs = alternated(each(c.get, order), each(dc.get, order), b.repeats)
        assert c.get_stats()["tiers"]["disk"]["hits"] >= len(order)
    rows.append(Row("diskcache get", theirs, "us/op"))
    rows.append(Row("disk hit (memory off)", disk, "us/op", "diskcache get", theirs, "<= 2x", 2))
    return rows


def rows_sets(b: Bench) -> list[Row]:
    n = b.ops
    samples: dict[str, list[float]] = {"ours": [], "theirs": []}

    def ours(rep: int, keys: list[str], values: list[dict[str, Any]]) -> None:
        with ResponseCache(
            cache_dir=b.workdir / f"sets-{rep}", cache_secret=SECRET, memory_max_mb=0
        ) as cache:
            start = time.perf_counter_ns()
            for k, v in zip(keys, values, strict=True):
                cache.set(k, v)
            samples["ours"].append((time.perf_counter_ns() - start) / n / 1000)

    def theirs(rep: int, keys: list[str], values: list[dict[str, Any]]) -> None:
        with diskcache.Cache(str(b.workdir / f"dc-sets-{rep}")) as dc:
            start = time.perf_counter_ns()
            for k, v in zip(keys, values, strict=True):
                dc.set(k, v)
            samples["theirs"].append((time.perf_counter_ns() - start) / n / 1000)

    # Each repetition writes new keys to new folders with both; which goes first alternates,
    # as in bench_core (the second of a pair tends to run faster on this kind of machine).
    for rep in range(b.repeats):
        keys = [key_of(10_000_000 + rep * n + i) for i in range(n)]
        values = [b.values[i % len(b.values)] for i in range(n)]
        for run in (ours, theirs) if rep % 2 == 0 else (theirs, ours):
            run(rep, keys, values)
    mine, other = statistics.median(samples["ours"]), statistics.median(samples["theirs"])
    return [
        Row("diskcache set", other, "us/op"),
        Row("disk set (memory off)", mine, "us/op", "diskcache set", other, "<= 1x", 1),
    ]


def rows_async_sets(b: Bench) -> list[Row]:
    """``aset`` from async code, as the orchestrator stores answers: what the caller waits
    for, and the whole burst until ``aflush`` returns (everything durable, as after
    diskcache's ``set``). The writer thread commits whatever is queued in one transaction
    (up to ``txn_bytes``), so a burst costs far fewer commits than one per entry."""
    n = b.ops
    caller: list[float] = []
    durable: list[float] = []
    theirs: list[float] = []

    async def burst(cache: ResponseCache, keys: list[str], values: list[dict[str, Any]]) -> None:
        start = time.perf_counter_ns()
        for k, v in zip(keys, values, strict=True):
            await cache.aset(k, v)
        caller.append((time.perf_counter_ns() - start) / n / 1000)
        await cache.aflush()
        durable.append((time.perf_counter_ns() - start) / n / 1000)

    for rep in range(b.repeats):
        keys = [key_of(30_000_000 + rep * n + i) for i in range(n)]
        values = [b.values[i % len(b.values)] for i in range(n)]
        with ResponseCache(
            cache_dir=b.workdir / f"asets-{rep}", cache_secret=SECRET, memory_max_mb=0
        ) as cache:
            asyncio.run(burst(cache, keys, values))
        with diskcache.Cache(str(b.workdir / f"dc-asets-{rep}")) as dc:
            start = time.perf_counter_ns()
            for k, v in zip(keys, values, strict=True):
                dc.set(k, v)
            theirs.append((time.perf_counter_ns() - start) / n / 1000)
    other = statistics.median(theirs)
    return [
        Row("disk aset, caller's cost", statistics.median(caller), "us/op"),
        Row(
            "disk aset burst, durable at aflush",
            statistics.median(durable),
            "us/op",
            "diskcache set",
            other,
        ),
    ]


def rows_big(b: Bench) -> list[Row]:
    folder = b.workdir / "big"
    n = b.big_entries
    # Room for all of them: under the default limit (100 MB) the fill would evict to
    # about a fifth of them, and each open below would evict to that limit again.
    room = n * 8192 / MIB
    with ResponseCache(
        cache_dir=folder, cache_secret=SECRET, memory_max_mb=0, max_size_mb=room
    ) as cache:
        for start in range(0, n, 5000):
            chunk = range(start, min(n, start + 5000))
            cache.warm((key_of(i), b.values[i % len(b.values)]) for i in chunk)
        full = cache.get_stats()["size_bytes"]
    # Let the kernel write back the fill's ~200 MB first: measured sets should pay for
    # their own I/O, not the fill's.
    os.sync()
    opens = []
    for _ in range(b.repeats):
        start = time.perf_counter_ns()
        cache = ResponseCache(
            cache_dir=folder, cache_secret=SECRET, memory_max_mb=0, max_size_mb=room
        )
        opens.append((time.perf_counter_ns() - start) / 1e6)
        cache.close()
    latencies = []
    # The limit equals what is stored now, so every further set must evict to fit.
    with ResponseCache(
        cache_dir=folder, cache_secret=SECRET, memory_max_mb=0, max_size_mb=full / MIB
    ) as cache:
        for i in range(b.ops):
            start = time.perf_counter_ns()
            cache.set(key_of(20_000_000 + i), b.values[i % len(b.values)])
            latencies.append((time.perf_counter_ns() - start) / 1e6)
        stats = cache.get_stats()
        assert stats["evictions"] >= b.ops, stats
        assert stats["size_bytes"] <= stats["max_size_bytes"], stats
    p99 = statistics.quantiles(latencies, n=100)[98]
    theirs = _diskcache_evicting_p99(b)
    return [
        Row(f"open, {n:,} entries", statistics.median(opens), "ms", goal="<= 50 ms", goal_abs=50),
        Row("diskcache set p99, every set evicts", theirs, "ms"),
        Row(
            "set p99, every set evicts",
            p99,
            "ms",
            "diskcache p99",
            theirs,
            goal="<= 1 ms",
            goal_abs=1,
        ),
    ]


def _diskcache_evicting_p99(b: Bench) -> float:
    """The same workload on diskcache, as this machine's reference: the same entries, then
    a size limit equal to what it holds, so each further set culls."""
    n = b.big_entries
    with diskcache.Cache(str(b.workdir / "dc-big"), size_limit=2**62) as dc:
        for start in range(0, n, 5000):
            with dc.transact():
                for i in range(start, min(n, start + 5000)):
                    dc.set(key_of(i), b.values[i % len(b.values)])
        dc.reset("size_limit", dc.volume())
        os.sync()
        latencies = []
        for i in range(b.ops):
            start_ns = time.perf_counter_ns()
            dc.set(key_of(20_000_000 + i), b.values[i % len(b.values)])
            latencies.append((time.perf_counter_ns() - start_ns) / 1e6)
    return statistics.quantiles(latencies, n=100)[98]


def rows_end_to_end(b: Bench) -> list[Row]:
    """``execute_agent`` answered from the memory tier, all of it: the agent files'
    freshness check (a stat per file), the request and its key (from the builder's memo on a
    repeat), the recall memo (agent memory is on in both rows), lookup, result; with tracking
    also the ledger row and the Prometheus counters."""
    import asyncio

    from claude_force import AsyncAgentOrchestrator, init_project
    from claude_force.testing import Simulator

    keys = [key_of(i) for i in range(b.hit_entries)]
    blobs = {k: json.dumps(v).encode() for k, v in zip(keys, b.values, strict=True)}
    floor_run = floor_op(keys, blobs)
    init_project(b.workdir / "project")
    config = b.workdir / "project" / ".claude" / "claude.json"
    tasks = [f"Review module {i}" for i in range(200)]

    async def measure(base_url: str, tracking: bool) -> tuple[float, float]:
        async with AsyncAgentOrchestrator(
            config,
            api_key="bench",
            base_url=base_url,
            cache_dir=b.workdir / "e2e-cache",
            cache_secret=SECRET.decode(),
            enable_tracking=tracking,
            enable_metrics=tracking,
        ) as orch:
            for task in tasks:
                await orch.execute_agent("code-reviewer", task)
            samples = []
            floors = []
            # The floor in turn with each repetition: both see the machine in the same state.
            for _ in range(b.repeats):
                start = time.perf_counter_ns()
                ops = floor_run()
                floors.append((time.perf_counter_ns() - start) / ops / 1000)
                start = time.perf_counter_ns()
                for task in tasks:
                    result = await orch.execute_agent("code-reviewer", task)
                samples.append((time.perf_counter_ns() - start) / len(tasks) / 1000)
                assert result.metadata["cached"]
            return statistics.median(samples), statistics.median(floors)

    rows = []
    with Simulator() as sim:
        for tracking, name in ((False, "tracking off"), (True, "ledger + metrics on")):
            e2e, floor = asyncio.run(measure(sim.base_url, tracking))
            rows.append(
                Row(
                    f"execute_agent hit, {name}",
                    e2e,
                    "us/op",
                    "floor",
                    floor,
                    "<= 10x floor",
                    goal_ratio=10,
                )
            )
    return rows


def rows_memory_hits(b: Bench) -> list[Row]:
    """``execute_agent`` answered from the memory tier with the default options, agent memory
    on against off, one repetition of each in turn. Memory on recalls before every call (the
    recalled block is part of the cache key); a recall already made is answered by the
    in-process memo on the loop while the store is unchanged."""
    from claude_force import AsyncAgentOrchestrator, init_project
    from claude_force.testing import Simulator

    init_project(b.workdir / "memory-project")
    config = b.workdir / "memory-project" / ".claude" / "claude.json"
    tasks = [f"Review module {i}" for i in range(200)]

    async def measure(base_url: str) -> tuple[float, float]:
        samples: dict[bool, list[float]] = {True: [], False: []}
        orchs = {
            memory: AsyncAgentOrchestrator(
                config,
                api_key="bench",
                base_url=base_url,
                cache_dir=b.workdir / f"memory-cache-{memory}",
                cache_secret=SECRET.decode(),
                enable_memory=memory,
            )
            for memory in (True, False)
        }
        try:
            for orch in orchs.values():
                for task in tasks:  # the misses
                    await orch.execute_agent("code-reviewer", task)
                # Their entries written (a store being written is not read from the memo),
                # then the first hits fill the memo: the steady state of a long run.
                if orch._recorder.memory is not None:
                    orch._recorder.memory.flush()
                for task in tasks:
                    await orch.execute_agent("code-reviewer", task)
            # Short turns (20 calls), many of them: the difference is a few microseconds,
            # less than the machine's drift over a longer turn.
            turns = [tasks[i : i + 20] for i in range(0, len(tasks), 20)]
            for rep in range(b.repeats * len(turns)):
                chunk = turns[rep % len(turns)]
                for memory in (True, False) if rep % 2 == 0 else (False, True):
                    orch = orchs[memory]
                    start = time.perf_counter_ns()
                    for task in chunk:
                        result = await orch.execute_agent("code-reviewer", task)
                    samples[memory].append((time.perf_counter_ns() - start) / len(chunk) / 1000)
                    assert result.cached
        finally:
            for orch in orchs.values():
                await orch.close()
        return statistics.median(samples[True]), statistics.median(samples[False])

    with Simulator() as sim:
        on, off = asyncio.run(measure(sim.base_url))
    return [
        Row("execute_agent hit, memory off", off, "us/op"),
        Row(
            "execute_agent hit, memory on",
            on,
            "us/op",
            "memory off",
            off,
            "<= 1.2x",
            goal_ratio=1.2,
        ),
    ]


def rows_async_hits(b: Bench) -> list[Row]:
    """Disk hits from async code: on the loop (a WAL read takes no lock) or in a thread."""
    keys = [key_of(i) for i in range(min(b.hit_entries, 2000))]

    async def measure(cache: ResponseCache) -> tuple[float, float]:
        on_loop: list[float] = []
        threaded: list[float] = []
        for _ in range(b.repeats):
            start = time.perf_counter_ns()
            for k in keys:
                await cache.aget(k)
            on_loop.append((time.perf_counter_ns() - start) / len(keys) / 1000)
            start = time.perf_counter_ns()
            for k in keys:
                await asyncio.to_thread(cache.get, k)
            threaded.append((time.perf_counter_ns() - start) / len(keys) / 1000)
        return statistics.median(on_loop), statistics.median(threaded)

    with ResponseCache(cache_dir=b.workdir / "hits", cache_secret=SECRET, memory_max_mb=0) as c:
        loop_us, thread_us = asyncio.run(measure(c))
    return [
        Row("disk hit, get in to_thread", thread_us, "us/op"),
        Row("disk hit, aget on the loop", loop_us, "us/op", "to_thread", thread_us, "<= 1x", 1),
    ]


# Holds the database's write lock from another process, as a second claude-force would.
_LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


async def _loop_lag(work: Callable[[], Awaitable[object]]) -> float:
    """Worst event-loop lag (ms) seen by a 1 ms ticker while ``work`` runs."""
    worst = 0.0
    done = asyncio.Event()

    async def monitor() -> None:
        nonlocal worst
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - start - 0.001)

    watcher = asyncio.create_task(monitor())
    await asyncio.sleep(0.01)
    await work()
    done.set()
    await watcher
    return worst * 1000


async def _worst_stall(
    cache: ResponseCache, values: list[dict[str, Any]], async_set: bool
) -> float:
    """Worst event-loop lag (ms) while 20 tasks each miss, store and hit, until stored."""

    async def call(i: int) -> None:
        k = key_of(40_000_000 + i + (100 if async_set else 0))
        assert await cache.aget(k) is None
        if async_set:
            await cache.aset(k, values[i % len(values)])
        else:
            cache.set(k, values[i % len(values)])
        assert await cache.aget(k) is not None

    async def work() -> None:
        await asyncio.gather(*(call(i) for i in range(20)))
        await cache.aflush()  # off the loop: returns once the other process lets go

    return await _loop_lag(work)


def _hold_lock(database: Path, seconds: str) -> subprocess.Popen[str]:
    locker = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(database), seconds], stdout=subprocess.PIPE, text=True
    )
    assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
    return locker


def rows_stall_orchestrator(b: Bench) -> list[Row]:
    """20 concurrent ``execute_agent`` misses (cache on) while another process holds the
    cache's write lock: the answers are stored by the writer thread, never on the loop."""
    from claude_force import AsyncAgentOrchestrator, init_project

    sys.path.insert(0, str(Path(__file__).parent))
    from _common import simulator_process

    init_project(b.workdir / "stall-project")
    config = b.workdir / "stall-project" / ".claude" / "claude.json"
    folder = b.workdir / "stall-orch"
    hold = "0.5" if b.repeats < 7 else "1.0"

    async def run(base_url: str, locked: bool) -> float:
        async with AsyncAgentOrchestrator(
            config,
            api_key="bench",
            base_url=base_url,
            cache_dir=folder,
            cache_secret=SECRET.decode(),
        ) as orch:
            await orch.execute_agent("code-reviewer", "warm up")  # SDK import, files open
            locker = _hold_lock(folder / "cache.db", hold) if locked else None
            run_id = time.perf_counter_ns()  # every run misses

            async def work() -> None:
                tasks = [
                    orch.execute_agent("code-reviewer", f"stall {run_id} {i}") for i in range(20)
                ]
                results = await asyncio.gather(*tasks)
                assert all(r.success and not r.cached for r in results)

            lag = await _loop_lag(work)
        assert locker is None or locker.wait(30) == 0
        return lag

    with simulator_process(latency_ms=20) as base_url:
        free = statistics.median(asyncio.run(run(base_url, False)) for _ in range(3))
        held = statistics.median(asyncio.run(run(base_url, True)) for _ in range(3))
    return [
        Row("loop stall, 20 execute_agent, no lock", free, "ms"),
        Row(
            f"loop stall, 20 execute_agent, lock held {hold} s",
            held,
            "ms",
            "no lock",
            free,
            goal="<= 50 ms",
            goal_abs=50,
        ),
    ]


def rows_stall(b: Bench) -> list[Row]:
    folder = b.workdir / "stall"
    hold = "0.5" if b.repeats < 7 else "1.0"
    stalls = {}
    for async_set in (False, True):
        cache = ResponseCache(cache_dir=folder, cache_secret=SECRET)
        locker = _hold_lock(folder / "cache.db", hold)
        stalls[async_set] = asyncio.run(_worst_stall(cache, b.values, async_set))
        assert locker.wait(30) == 0
        if locker.stdout is not None:
            locker.stdout.close()
        assert cache.get_stats()["errors"] == 0
        cache.close()
    return [
        Row(f"loop stall, lock held {hold} s: sync set", stalls[False], "ms"),
        Row(
            f"loop stall, lock held {hold} s: aset",
            stalls[True],
            "ms",
            "sync set",
            stalls[False],
            "<= 50 ms",
            goal_abs=50,
        ),
    ]


# Add row builders here; each takes the Bench and returns rows appended to the table.
ROW_BUILDERS: list[Callable[[Bench], list[Row]]] = [
    rows_hits,
    rows_sets,
    rows_async_sets,
    rows_big,
    rows_async_hits,
    rows_stall,
    rows_stall_orchestrator,
    rows_end_to_end,
    rows_memory_hits,
]


def render(rows: list[Row]) -> str:
    header = ("benchmark", "measured", "baseline", "ratio", "goal", "met")
    lines = []
    for r in rows:
        base = f"{r.baseline_name} {r.baseline:.2f}" if r.baseline is not None else ""
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        goal = r.goal or (f"<= {r.goal_ratio:g}x" if r.goal_ratio is not None else "")
        lines.append((r.name, f"{r.value:.2f} {r.unit}", base, ratio, goal, r.met))
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(len(header))]
    fmt = " | ".join(f"{{:{w}}}" for w in widths)
    out = [fmt.format(*header), "-+-".join("-" * w for w in widths)]
    out += [fmt.format(*line) for line in lines]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", default="", help="run only row builders whose name has this")
    args = parser.parse_args(argv)
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        bench = Bench(
            repeats=3 if args.quick else 7,
            hit_entries=1000 if args.quick else 10_000,
            ops=500 if args.quick else 5000,
            big_entries=5000 if args.quick else 100_000,
            workdir=Path(tmp),
        )
        bench.values = [make_value(rng) for _ in range(bench.hit_entries)]
        rows: list[Row] = []
        for build in ROW_BUILDERS:
            if args.only in build.__name__:
                rows.extend(build(bench))
    print(f"python {sys.version.split()[0]}, medians of {bench.repeats} repetitions")
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
