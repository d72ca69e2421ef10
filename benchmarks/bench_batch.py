"""Peak memory of ``claude-force batch`` is flat in the input's length.

Runs the real command as a child process against the simulator (its own process, zero
latency) on a generated JSONL input of each size, and reports the child's own peak RSS
(``os.wait4``'s ``ru_maxrss``) and lines per second, side by side::

    python benchmarks/bench_batch.py                      # 1,000 and 100,000 lines
    python benchmarks/bench_batch.py --lines 1000 20000 --cache

``--cache`` keeps the response cache on (a fresh folder per run); by default it is off.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import simulator_process

from claude_force import init_project


def write_input(path: Path, lines: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        for n in range(1, lines + 1):
            task = f"Classify ticket {n}: the export button does nothing"
            out.write(json.dumps({"agent": "code-reviewer", "task": task, "max_tokens": 16}))
            out.write("\n")


def run(base_url: str, root: Path, lines: int, *, cache: bool) -> dict[str, float]:
    src = root / f"in-{lines}.jsonl"
    out = root / f"out-{lines}-{cache}.jsonl"
    write_input(src, lines)
    env = {
        **os.environ,
        "ANTHROPIC_API_KEY": "bench-key",
        "ANTHROPIC_BASE_URL": base_url,
        "CLAUDE_FORCE_CACHE_DIR": str(root / f"cache-{lines}"),
        "CLAUDE_CACHE_SECRET": "bench-secret-0123456789abcdef",
    }
    argv = [sys.executable, "-m", "claude_force.cli", "batch", str(src), "--out", str(out)]
    argv += ["-c", str(root / ".claude/claude.json"), "--quiet", "--json", "--concurrency", "16"]
    if not cache:
        argv.append("--no-cache")
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    summary = json.loads(proc.stdout.read())
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    assert summary["succeeded"] == lines, summary
    with out.open("rb") as records:
        assert sum(1 for _ in records) == lines
    return {"lines": lines, "peak_rss_mib": usage.ru_maxrss / 1024, "lines_per_s": lines / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[1_000, 100_000])
    parser.add_argument("--cache", action="store_true", help="keep the response cache on")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp, simulator_process() as url:
        root = Path(tmp)
        init_project(root)
        rows = [run(url, root, n, cache=args.cache) for n in args.lines]
    print(f"claude-force batch, simulator at zero latency, cache {'on' if args.cache else 'off'}")
    for row in rows:
        print(
            f"{row['lines']:>9,} lines: peak RSS {row['peak_rss_mib']:7.1f} MiB, "
            f"{row['lines_per_s']:7.1f} lines/s"
        )
    if len(rows) > 1:
        ratio = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
        size = rows[-1]["lines"] / rows[0]["lines"]
        print(f"{size:,.0f}x the lines, {ratio:.2f}x the peak memory")


if __name__ == "__main__":
    main()
