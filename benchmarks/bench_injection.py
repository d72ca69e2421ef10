"""Injection scan benchmark: ``flag_injection`` beside the plain ``re.search`` of every pattern.

Run: ``python benchmarks/bench_injection.py`` (about half a minute; ``--quick`` for a smoke run).

Two kinds of engineering text without an attack, each at 1 KB, 14 KB (a long task) and
500 KB (the size the linear-time guarantee is stated for):

* ``docs``: the paragraphs of this project's README and architecture page that flag nothing,
  repeated (English prose, Markdown, code samples);
* ``dense``: sentences drawn from a vocabulary full of the patterns' first words ("you", "do",
  "new", "your", "print", "output", ...), with a code line with generics (``List<Task>``) every
  tenth line: the scan's bad case, where most words are places it must try.

Three columns, all giving the same flags: ``before`` is the scan as it was (``normalised`` with
``str.translate``, then ``re.search`` of every pattern), ``search`` the same searches on today's
``normalised`` (one regex pass), ``scan`` today's :func:`flag_injection` (each pattern tried only
where its declared starts are). They are timed alternately in one run; every figure is a
median, in milliseconds per call.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

from claude_force._injection import (
    _INVISIBLE,
    _LOOKALIKES,
    PATTERNS,
    flag_injection,
    normalised,
)

_WORD_TEXT = (
    "the a of to and in is it that for on with as this be are you your we do not can new "
    "print show output tell function test file cache request should will when then if each "
    "review code change error value return list build run from act real actual updated "
    "system prompt instructions previous rules data parser module handle retry token"
)
WORDS = _WORD_TEXT.split()
CODE = "    List<Task> tasks = new ArrayList<>(); // keep the order, see Map<String, Task>"

PLAIN = tuple((p.name, p.compiled()) for p in PATTERNS)
OLD_INVISIBLE = re.compile(f"[{_INVISIBLE}]")
OLD_TABLE = str.maketrans(_LOOKALIKES)


def docs(size: int) -> str:
    root = Path(__file__).resolve().parent.parent
    text = "\n\n".join((root / name).read_text() for name in ("README.md", "docs/architecture.md"))
    clean = [p for p in text.split("\n\n") if not plain(p, "docs")]
    out = "\n\n".join(clean)
    return (out * (size // len(out) + 1))[:size]


def dense(size: int, rng: random.Random) -> str:
    lines: list[str] = []
    total = 0
    while total < size:
        if len(lines) % 10 == 9:
            line = CODE
        else:
            words = rng.choices(WORDS, k=rng.randint(14, 22))
            line = " ".join(words).capitalize() + "."
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)[:size]


def plain(text: str, source: str) -> tuple[str, ...]:
    seen = normalised(text)
    return tuple(f"{source}:{name}" for name, regex in PLAIN if regex.search(seen))


def before(text: str, source: str) -> tuple[str, ...]:
    seen = text
    if not text.isascii():
        seen = OLD_INVISIBLE.sub("", unicodedata.normalize("NFKC", text)).translate(OLD_TABLE)
    return tuple(f"{source}:{name}" for name, regex in PLAIN if regex.search(seen))


def median_ms(fn: Callable[[str, str], tuple[str, ...]], text: str, runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn(text, "task")
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few runs, for a smoke test")
    args = parser.parse_args()
    rng = random.Random(7)
    sizes = {"1 KB": 1_000, "14 KB": 14_000, "500 KB": 500_000}
    rounds = 3 if args.quick else 15
    sides = {"before": before, "search": plain, "scan": flag_injection}
    print(f"{'text':>14}" + "".join(f"{name:>10}" for name in sides) + "  before/scan search/scan")
    texts = {f"docs {k}": docs(v) for k, v in sizes.items()}
    texts.update({f"dense {k}": dense(v, rng) for k, v in sizes.items()})
    for label, text in texts.items():
        assert before(text, "task") == plain(text, "task") == flag_injection(text, "task")
        runs = max(1, 200_000 // len(text))
        samples: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(rounds):  # alternated, so every side sees the same machine load
            for name, fn in sides.items():
                samples[name].append(median_ms(fn, text, runs))
        ms = {name: statistics.median(values) for name, values in samples.items()}
        row = "".join(f"{ms[name]:>10.3f}" for name in sides)
        ratios = f"{ms['before'] / ms['scan']:>12.1f}x {ms['search'] / ms['scan']:>10.1f}x"
        print(f"{label:>14}{row}  {ratios}")


if __name__ == "__main__":
    main()
