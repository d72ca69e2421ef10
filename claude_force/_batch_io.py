"""Batch values and files: input items, result records, the JSONL reader and the results file.

The input is read one line at a time, so its size never shows in memory. The results file is
append-only and crash-safe by construction: each record is one ``write()`` of a whole line on
a descriptor opened with ``O_APPEND``, so a process killed at any instant (SIGKILL included)
leaves either the whole line or none of it. A trailing partial line, which only a full disk or
another writer can leave, is cut off when the file is opened again.

Bounds: no line is ever held whole past a limit. An input line longer than
:func:`max_line_bytes` (room for the longest task however it is escaped) is a malformed line;
the reader skips the rest of it without holding it, so ``/dev/zero`` as input keeps memory
flat. A results file must be a regular file (``/dev/null``, ``/dev/full``, a pipe are refused
by name), and a record line over :data:`MAX_RECORD_BYTES` means the file is not ours.

Poison lines: everything that can go wrong with one line (not JSON, nested past the parser's
depth, an unpaired surrogate such as the escape ``\\udc80`` that no request can carry,
anything else the parse or the checks raise) becomes that line's failed record; the other
lines run.

Durability: a line is in the kernel the moment its ``write()`` returns, which is what survives
a killed process. Surviving a power cut needs ``fsync``, which waits on the disk; the runner
asks for it at most once per :data:`FSYNC_INTERVAL` seconds (off the event loop) and at the
end, so a machine crash loses at most that last second of records, which a rerun redoes.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import stat
import sys
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, TypeAlias

from ._errors import InvalidArgumentError, UsageError
from ._files import shown
from ._request import DEFAULT_MAX_TASK_CHARS, Request, TaskSpec, unpaired_surrogate
from ._results import AgentResult
from ._usage import Usage

try:  # POSIX: one batch at a time per results file
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FSYNC_INTERVAL",
    "INPUT_KEYS",
    "MAX_RECORD_BYTES",
    "RECORD_KEYS",
    "AnyBatchItems",
    "BatchInput",
    "BatchItem",
    "BatchItems",
    "BatchRecord",
    "ResultsFile",
    "ResultsIndex",
    "aiter_items",
    "coerce_item",
    "count_input_lines",
    "item_from_fields",
    "max_line_bytes",
    "open_input",
    "prepare_item",
    "read_input",
    "scan_results",
]

INPUT_KEYS = ("agent", "task", "id", "model", "max_tokens", "temperature")
RECORD_KEYS = (
    "id",
    "agent",
    "success",
    "output",
    "usage",
    "cost",
    "cached",
    "attempts",
    "error",
)
FSYNC_INTERVAL = 1.0
MAX_RECORD_BYTES = 64 << 20
"""The longest results-file line :func:`scan_results` reads; a longer one is not a record."""
_LINE_SLACK = 64 << 10  # the keys, id, agent and model around the task, with room to spare
_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20
BatchInput: TypeAlias = "Mapping[str, Any] | TaskSpec | tuple[str, str]"
"""One item: a dict like a JSONL line (``id`` optional), a TaskSpec or an (agent, task) pair."""

BatchItems: TypeAlias = "Iterable[BatchInput] | AsyncIterable[BatchInput]"
"""What ``execute_batch`` takes: items one by one, or as a stream."""

AnyBatchItems: TypeAlias = (
    "Iterable[BatchItem | BatchInput] | AsyncIterable[BatchItem | BatchInput]"
)
"""Items as the runners take them: also :class:`BatchItem` (a file's lines, already read)."""

_ZERO = Decimal(0)
_log = logging.getLogger("claude_force")


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One input line: its id and the call, or why it cannot be run (``error``)."""

    id: str
    spec: TaskSpec | None
    where: str
    error: str | None = None
    agent: str = ""


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """What one batch line produced; :meth:`to_json` is its line in the results file.

    ``result`` is the call's :class:`AgentResult`, or None for a line that was never sent
    because it was malformed (``error`` then names the line and the reason).
    """

    id: str
    agent: str
    success: bool
    output: str
    usage: Usage = field(default_factory=Usage)
    cost: Decimal | None = _ZERO
    cached: bool = False
    attempts: int = 0
    error: str | None = None
    result: AgentResult | None = None

    @property
    def malformed(self) -> bool:
        return self.result is None and not self.success

    @classmethod
    def from_result(cls, item_id: str, result: AgentResult) -> BatchRecord:
        return cls(
            id=item_id,
            agent=result.agent_name,
            success=result.success,
            output=result.output,
            usage=result.usage,
            cost=result.cost,
            cached=result.cached,
            attempts=result.attempts,
            error=None if result.success else "; ".join(result.errors) or "failed",
            result=result,
        )

    @classmethod
    def _rejected(cls, item: BatchItem, error: str) -> BatchRecord:
        return cls(id=item.id, agent=item.agent, success=False, output="", error=error)

    def to_json(self) -> dict[str, Any]:
        """The record's line: exactly :data:`RECORD_KEYS`; cost a decimal string or null."""
        return {
            "id": self.id,
            "agent": self.agent,
            "success": self.success,
            "output": self.output,
            "usage": asdict(self.usage),
            "cost": None if self.cost is None else str(self.cost),
            "cached": self.cached,
            "attempts": self.attempts,
            "error": self.error,
        }


# -- the input -------------------------------------------------------------------------------


def item_from_fields(fields: object, default_id: str, where: str) -> BatchItem:
    """A :class:`BatchItem` from one JSON object; a problem makes it a failed item, not a raise.

    Types are checked here so the message names the key; ranges (max_tokens, temperature),
    unknown agents and empty tasks are checked when the request is built.
    """
    if not isinstance(fields, Mapping):
        return BatchItem(
            default_id, None, where, f"{where}: expected a JSON object, got {_kind(fields)}"
        )
    raw_id = fields.get("id", default_id)
    item_id = str(raw_id) if _is_int(raw_id) or (isinstance(raw_id, str) and raw_id) else None
    agent = fields.get("agent")
    name = agent if isinstance(agent, str) and unpaired_surrogate(agent) is None else ""
    # A lone surrogate cannot be sent (nor written as UTF-8): the line is malformed, and the
    # record must not carry it in its id or agent either.
    bad_text = next(
        (
            (key, text, at)
            for key, value in fields.items()
            for text in (key, value)
            if isinstance(text, str) and (at := unpaired_surrogate(text)) is not None
        ),
        None,
    )
    if bad_text is not None and bad_text[0] == "id":
        item_id = None

    def bad(reason: str) -> BatchItem:
        return BatchItem(item_id or default_id, None, where, f"{where}: {reason}", name)

    if bad_text is not None:
        key, text, at = bad_text
        return bad(
            f"{key!r} holds an unpaired surrogate ({text[at]!r} at character {at + 1}), which "
            "is not text and cannot be sent; fix that escape (a character outside the BMP "
            "is written as a pair, like \\ud83d\\ude00)"
        )
    if item_id is None:
        return bad(f"'id' must be a non-empty string or an integer, got {_kind(raw_id)}")
    unknown = [str(k) for k in fields if k not in INPUT_KEYS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], INPUT_KEYS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return bad(f"unknown key {unknown[0]!r}{hint} Allowed keys: {', '.join(INPUT_KEYS)}")
    for key in ("agent", "task"):
        if not isinstance(fields.get(key), str) or not str(fields.get(key)).strip():
            return bad(f"{key!r} must be a non-empty string, got {_kind(fields.get(key))}")
    model, max_tokens, temperature = (fields.get(k) for k in ("model", "max_tokens", "temperature"))
    if model is not None and not (isinstance(model, str) and model.strip()):
        return bad(f"'model' must be a non-empty string, got {_kind(model)}")
    if max_tokens is not None and not _is_int(max_tokens):
        return bad(f"'max_tokens' must be a whole number, got {_kind(max_tokens)}")
    if temperature is not None and not (_is_int(temperature) or isinstance(temperature, float)):
        return bad(f"'temperature' must be a number from 0 to 1, got {_kind(temperature)}")
    spec = TaskSpec(name, str(fields["task"]), model, max_tokens, temperature)
    return BatchItem(item_id, spec, where, None, name)


def coerce_item(item: object, position: int) -> BatchItem:
    """Any accepted item as a :class:`BatchItem`; the 1-based position is the default id."""
    if isinstance(item, BatchItem):
        return item
    where = f"item {position}"
    if isinstance(item, TaskSpec):
        return BatchItem(str(position), item, where, agent=item.agent)
    if isinstance(item, tuple) and len(item) == 2:
        return item_from_fields({"agent": item[0], "task": item[1]}, str(position), where)
    return item_from_fields(item, str(position), where)


async def aiter_items(
    source: Iterable[object] | AsyncIterable[object],
) -> AsyncGenerator[BatchItem, None]:
    """The items of a stream (sync or async), each coerced as it is taken."""
    position = 0
    if isinstance(source, AsyncIterable):
        async for item in source:
            position += 1
            yield coerce_item(item, position)
    else:
        for item in source:
            position += 1
            yield coerce_item(item, position)


def prepare_item(
    build: Callable[[TaskSpec], Request], item: BatchItem, seen: set[str]
) -> BatchRecord | Request:
    """The item's request, or the failed record of an item that cannot be sent.

    Both modes (one call per item, the Message Batches API) refuse the same items with the
    same words, so their records for malformed lines are identical.
    """
    if item.error is not None or item.spec is None:
        return BatchRecord._rejected(item, item.error or f"{item.where}: nothing to run")
    if item.id in seen:
        return BatchRecord._rejected(
            item, f"{item.where}: id {item.id!r} was used by an earlier item; ids must be unique"
        )
    seen.add(item.id)
    try:
        return build(item.spec)
    except UsageError as exc:
        return BatchRecord._rejected(item, f"{item.where}: {exc}")
    except Exception as exc:  # one item's problem is its record, not the batch's
        return BatchRecord._rejected(
            item, f"{item.where}: cannot be sent ({type(exc).__name__}: {exc})"
        )


def open_input(path: str | os.PathLike[str]) -> BinaryIO:
    """The batch input opened for reading; a problem is an :class:`InvalidArgumentError`.

    ``-`` is standard input (a copy of the descriptor, so closing it leaves stdin open).
    A pipe or FIFO is opened once and read once; a FIFO waits for its writer, as ``cat`` does.
    """
    try:
        if os.fspath(path) == "-":
            return os.fdopen(os.dup(sys.stdin.fileno()), "rb")
        return open(path, "rb")
    except OSError as exc:
        raise InvalidArgumentError(
            f"cannot read the batch input {shown(path)} ({exc.strerror or exc}); "
            "check the path and its permissions"
        ) from None


def max_line_bytes(max_task_chars: int = DEFAULT_MAX_TASK_CHARS) -> int:
    """The longest input line read: the longest task escaped at worst (12 bytes a character,
    a ``\\uXXXX`` surrogate pair) and room for the other keys. Longer lines are malformed."""
    return 12 * max_task_chars + _LINE_SLACK


def _lines(handle: BinaryIO, limit: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line) pairs; a line over ``limit`` bytes is ``None``, and only
    ``limit`` bytes of it are ever held: the rest is read in chunks and dropped, after the
    pair is handed over (so an endless line still gets its record first). A UTF-8 byte order
    mark opening the input is skipped."""
    number = 0
    while raw := handle.readline(limit + 1):
        number += 1
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        if raw.endswith(b"\n") or len(raw) <= limit:
            yield number, raw
            continue
        yield number, None
        while (rest := handle.readline(_CHUNK)) and not rest.endswith(b"\n"):
            pass


def read_input(handle: BinaryIO, *, max_line: int | None = None) -> Iterator[BatchItem]:
    """The items of a JSONL file, one line at a time; blank lines are skipped.

    A line without an ``id`` gets its 1-based line number. A line that is not a JSON object
    of the right shape, or is longer than ``max_line`` bytes (default :func:`max_line_bytes`),
    becomes an item with ``error`` set ("line 7: ..."); so does a line whose parse or checks
    fail in any other way: one line never stops the others.
    """
    limit = max_line or max_line_bytes()
    for number, raw in _lines(handle, limit):
        if raw is None:
            where = f"line {number}"
            yield BatchItem(
                str(number),
                None,
                where,
                f"{where}: longer than {limit:,} bytes, more than the longest task needs; "
                "split the task, or raise max_task_chars= on the orchestrator",
            )
        elif raw.strip():
            yield _parse_line(number, raw)


def _parse_line(number: int, raw: bytes) -> BatchItem:
    where = f"line {number}"

    def bad(reason: str) -> BatchItem:
        return BatchItem(str(number), None, where, f"{where}: {reason}")

    try:
        fields = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return bad(f"not UTF-8 text ({exc.reason})")
    except RecursionError:
        return bad("not usable JSON (nested too deeply for the parser)")
    except ValueError as exc:
        return bad(f"not valid JSON ({exc})")
    try:
        return item_from_fields(fields, str(number), where)
    except Exception as exc:  # one line's problem is its record, not the batch's
        return bad(f"cannot be read ({type(exc).__name__}: {exc})")


def count_input_lines(path: str | os.PathLike[str], *, max_line: int | None = None) -> int | None:
    """The items :func:`read_input` will make of ``path`` (one fast pass, for a progress
    bar's total): its non-blank lines, a line over ``max_line`` bytes counted once.

    None when the count is unknown: the input is not a regular file (``-``, a pipe, a FIFO,
    a device), which can be read only once, and the run must be the one that reads it.
    """
    try:
        if os.fspath(path) == "-" or not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as handle:
            count = 0
            for _number, raw in _lines(handle, max_line or max_line_bytes()):
                count += raw is None or bool(raw.strip())
            return count
    except OSError:
        return None  # read_input reports the problem in its own words


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return "an empty string" if not value.strip() else f"the string {value[:40]!r}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__


# -- the results file ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResultsIndex:
    """Ids found in an existing results file: ``succeeded``, and ``failed`` (never succeeded)."""

    succeeded: frozenset[str] = frozenset()
    failed: frozenset[str] = frozenset()


def scan_results(path: str | os.PathLike[str], *, max_line: int = MAX_RECORD_BYTES) -> ResultsIndex:
    """The ids of an existing results file, read a line at a time (only ids are kept).

    A trailing line without its newline is ignored (the results file cuts it off). A line that
    is not a record, or is longer than ``max_line`` bytes, raises :class:`InvalidArgumentError`:
    the file is not ours to append to. So does a file that is not a regular file.
    """
    succeeded: set[str] = set()
    failed: set[str] = set()
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return ResultsIndex()
    with handle:
        _check_regular(handle.fileno(), path)
        number = 0
        while raw := handle.readline(max_line + 1):
            number += 1
            if not raw.endswith(b"\n"):
                if len(raw) <= max_line:
                    break
                raise InvalidArgumentError(
                    f"line {number} of {shown(path)} is longer than {max_line:,} bytes, so it "
                    "is not a batch result record; pass another --out"
                )
            item_id, success = _record_id(raw, number, path)
            (succeeded if success else failed).add(item_id)
    return ResultsIndex(frozenset(succeeded), frozenset(failed - succeeded))


def _record_id(raw: bytes, number: int, path: str | os.PathLike[str]) -> tuple[str, bool]:
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        record = None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("id"), str)
        or not isinstance(record.get("success"), bool)
    ):
        raise InvalidArgumentError(
            f"line {number} of {shown(path)} is not a batch result record (a JSON object with "
            "'id' and 'success'); pass another --out, or remove that line"
        )
    return record["id"], record["success"]


def _check_regular(fd: int, path: str | os.PathLike[str]) -> None:
    """Refuse a results file that is not a regular file: a device or a pipe never holds
    records (``/dev/null`` drops them, ``/dev/zero`` and ``/dev/full`` read endless zeros)."""
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a device, pipe or socket"
        raise InvalidArgumentError(
            f"the results file {shown(path)} is not a regular file ({kind}); records are "
            "appended and read back to resume, so pass --out naming a regular file"
        )


class ResultsFile:
    """The append-only results file; one ``write()`` a record, so no line is ever half there.

    Opening takes an exclusive lock (a second batch writing the same file is refused) and cuts
    off a trailing partial line; ``repaired_bytes`` says how much was dropped.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync_interval: float = FSYNC_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._interval = fsync_interval
        # O_NONBLOCK: opening a FIFO must not wait for a peer; it is refused just below.
        nonblock = getattr(os, "O_NONBLOCK", 0)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | nonblock | getattr(os, "O_CLOEXEC", 0)
        try:
            self._fd: int | None = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise InvalidArgumentError(
                f"cannot open the results file {shown(path)} ({exc.strerror or exc}); "
                "pass --out naming a writable file"
            ) from None
        try:
            _check_regular(self._fd, self.path)
            if nonblock:
                os.set_blocking(self._fd, True)
            self._lock()
            self.repaired_bytes = self._cut_partial_line()
        except BaseException:
            self.close()
            raise
        self._size = os.fstat(self._fd).st_size
        self._synced_at = clock()
        self._dirty = False
        if self.repaired_bytes:
            _log.warning(
                "%s ended in a partial line (%d bytes, from a write that did not finish); "
                "removed it, its line will run again",
                shown(self.path),
                self.repaired_bytes,
            )

    def _lock(self) -> None:
        if fcntl is None or self._fd is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InvalidArgumentError(
                f"another batch is writing to {shown(self.path)}; wait for it to finish, "
                "or pass another --out"
            ) from None

    def _cut_partial_line(self) -> int:
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size == 0 or os.pread(self._fd, 1, size - 1) == b"\n":
            return 0
        end = size
        keep = 0
        while end > 0:  # back from the end, a chunk at a time, to the last newline
            start = max(0, end - 65536)
            cut = os.pread(self._fd, end - start, start).rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        os.ftruncate(self._fd, keep)
        return size - keep

    def append(self, record: BatchRecord) -> None:
        """Write ``record`` as one line with a single ``write()``."""
        try:
            data = (json.dumps(record.to_json(), ensure_ascii=False) + "\n").encode()
        except UnicodeEncodeError:  # an unpaired surrogate: escaped, so the file stays UTF-8
            data = (json.dumps(record.to_json()) + "\n").encode()
        if self._fd is None:
            raise InvalidArgumentError(f"the results file {shown(self.path)} is closed")
        try:
            written = os.write(self._fd, data)
            if written != len(data):  # a full disk: never leave the part behind
                raise OSError(28, "No space left on device (short write)")
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self._size += written
        self._dirty = True

    @property
    def sync_due(self) -> bool:
        """Whether the last fsync is older than the interval and there is something new."""
        return self._dirty and self._clock() - self._synced_at >= self._interval

    def sync(self) -> None:
        """``fsync`` the file (blocking: call it off the event loop)."""
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
            self._dirty = False
            self._synced_at = self._clock()

    def close(self) -> None:
        """Sync and close; safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if getattr(self, "_dirty", False):
                os.fsync(fd)
        finally:
            os.close(fd)
