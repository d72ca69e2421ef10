"""A ledger row: the :class:`LedgerRow` value, its SQL parameters, and :class:`RowTemplate`
for the rows of response-cache hits; the task hash that groups calls without storing the task.

Nothing here touches SQLite: :mod:`._ledger` stores what these functions produce.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from ._errors import InvalidArgumentError
from ._usage import Usage

__all__ = [
    "COLUMNS",
    "OUTCOMES",
    "LedgerRow",
    "Params",
    "RowTemplate",
    "from_record",
    "storable",
    "task_hash",
    "to_params",
]

OUTCOMES = frozenset({"success", "error"})
_INT64 = range(-(2**63), 2**63)

_HASHED: dict[str, str] = {}
_HASHED_MAX = 4096  # tasks kept with their digest; then the dict starts again
_HASHED_CHARS = 1024  # longer tasks are hashed every time, not kept


def task_hash(text: str) -> str:
    """SHA-256 hex digest of a task's text, so calls can be grouped without storing the text.

    Short tasks' digests are kept (a repeated task is hashed once: every cache hit records
    one, and recall keys its memo by it)."""
    plain = type(text) is str  # a subclass could compare equal to another text
    found = _HASHED.get(text) if plain else None
    if found is not None:
        return found
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if plain and len(text) <= _HASHED_CHARS:
        if len(_HASHED) >= _HASHED_MAX:
            _HASHED.clear()
        _HASHED[text] = digest
    return digest


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerRow:
    """One completed call (success or failure), as stored in the ledger.

    ``ts`` is epoch seconds (UTC); ``None`` means "now" by the ledger's clock when recorded.
    ``cost_usd`` is ``None`` when the model is unpriced; a response-cache hit has ``cached=True``,
    ``cost_usd=Decimal("0")`` and what it saved in ``cost_saved_usd``. ``workflow_step`` is the
    0-based index of the step in its workflow. ``batch`` marks a call answered through the
    Message Batches API (billed at the batch discount). ``task_text`` is kept only when the
    ledger was opened with ``store_task_text=True``; ``task_hash`` is filled from it when
    missing.
    ``injection_flags``: the call's injection signals joined by commas (``"task:role-tag"``),
    None when nothing was flagged.
    """

    agent: str
    model: str
    outcome: str = "success"
    ts: float | None = None
    message_id: str | None = None
    request_id: str | None = None
    workflow_run: str | None = None
    workflow_step: int | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    web_search_requests: int = 0
    cost_usd: Decimal | None = None
    cost_saved_usd: Decimal | None = None
    latency_ms: float | None = None
    attempts: int = 1
    cached: bool = False
    error_type: str | None = None
    task_hash: str | None = None
    task_text: str | None = None
    batch: bool = False
    injection_flags: str | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise InvalidArgumentError(
                f"ledger outcome must be one of {sorted(OUTCOMES)}, got {self.outcome!r}"
            )
        for name in ("cost_usd", "cost_saved_usd"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Decimal):
                raise InvalidArgumentError(
                    f"LedgerRow.{name} must be a Decimal or None, got {value!r}; "
                    "use Decimal(str(x)) so money keeps exact cents"
                )

    @property
    def usage(self) -> Usage:
        return Usage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cache_write_5m_tokens=self.cache_write_5m_tokens,
            cache_write_1h_tokens=self.cache_write_1h_tokens,
            cache_read_tokens=self.cache_read_tokens,
            web_search_requests=self.web_search_requests,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: money as decimal strings, everything else as is."""
        out: dict[str, Any] = {}
        for name in COLUMNS:
            value = getattr(self, name)
            out[name] = str(value) if isinstance(value, Decimal) else value
        return out


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(LedgerRow))
Params = tuple[object, ...]


_GET_ALL = operator.attrgetter(*COLUMNS)
_TS_INDEX = COLUMNS.index("ts")
_PLAIN = (str, int, float, type(None))


def to_params(row: LedgerRow, ts: float | None = None) -> Params:
    """SQL parameters for ``row``; type errors surface here, on the caller, not in the writer.

    Runs on every upstream call's path: what to check and convert is planned once per
    combination of value types (a handful in practice), then done in a few C calls.
    """
    params = list(_GET_ALL(row))
    if ts is not None:
        params[_TS_INDEX] = ts
    plan = _PLANS.get(kinds := tuple(map(type, params)))
    if plan is None:
        plan = _plan(kinds, params)
    ints, decimals, bools = plan
    if ints is not None:
        counts = ints(params)
        if min(counts) < _INT64.start or max(counts) >= _INT64.stop:
            _check(params)  # raises, naming the column
    for i in decimals:
        params[i] = str(params[i])
    for i in bools:
        params[i] = int(params[i])
    return tuple(params)


# Per tuple of value types: a getter of the int values (None if there are none), and the
# positions of Decimal and bool values.
_Plan = tuple[Callable[[list[object]], tuple[int, ...]] | None, tuple[int, ...], tuple[int, ...]]
_PLANS: dict[tuple[type, ...], _Plan] = {}


def _plan(kinds: tuple[type, ...], params: list[object]) -> _Plan:
    _check(params)  # unsupported types raise here, and are never planned
    ints = [i for i, kind in enumerate(kinds) if kind is int]
    # itemgetter of one position returns the value itself, not a tuple: ask for it twice.
    getter = operator.itemgetter(*ints, *ints[:1]) if ints else None
    decimals = tuple(i for i, kind in enumerate(kinds) if kind is Decimal)
    bools = tuple(i for i, kind in enumerate(kinds) if kind is bool)
    plan: _Plan = (getter, decimals, bools)
    if len(_PLANS) < 64:
        _PLANS[kinds] = plan
    return plan


def _check(params: list[object]) -> None:
    """Raise for the first value that cannot be stored."""
    for i, value in enumerate(params):
        kind = type(value)
        if kind is int and value not in _INT64:
            raise InvalidArgumentError(
                f"LedgerRow.{COLUMNS[i]} = {value!r} does not fit a 64-bit integer; "
                "record real counts"
            )
        if kind not in _PLAIN and kind is not Decimal and kind is not bool:
            raise InvalidArgumentError(
                f"LedgerRow.{COLUMNS[i]} must be a str, number or None, got {kind.__name__} "
                f"{value!r}; convert it before recording"
            )


class RowTemplate:
    """Rows that differ from one fixed row only in a few fields given as plain values (str,
    int, float or None). For response-cache hits, recorded on every call's fast path: a row
    is queued as one tuple, ``(template, ts, *each, *shared)`` (``width`` long), with
    nothing converted per row. The ledger's writer binds the fixed values once per statement, the
    ``shared`` ones once per run of rows where they are equal, and ``ts`` and ``each`` per
    row (binding is most of what a row costs the writer, and it holds the GIL)."""

    def __init__(self, row: LedgerRow, each: Sequence[str], shared: Sequence[str] = ()) -> None:
        self._setup(to_params(row, 0.0), tuple(each), tuple(shared))

    def _setup(self, base: Params, each: tuple[str, ...], shared: tuple[str, ...]) -> None:
        self._base = base
        self.each = ("ts", *each)
        self.shared = shared
        varying = {*self.each, *shared}
        self.fixed = tuple((n, v) for n, v in zip(COLUMNS, base, strict=True) if n not in varying)
        start = len(self.each) + 1
        # A queued row's run key (the template and its shared values) and per-row values.
        self.key = operator.itemgetter(0, slice(start, None))
        self.values = operator.itemgetter(slice(1, start))
        self.width = start + len(shared)  # of a queued row, the template included
        self._storable: RowTemplate | None = None

    def storable(self) -> RowTemplate:
        """This template with its fixed text made encodable (see :func:`storable`); made once,
        so the rows of a batch made storable still share one template."""
        if self._storable is None:
            self._storable = RowTemplate.__new__(RowTemplate)
            self._storable._setup(storable(self._base), self.each[1:], self.shared)
        return self._storable


def storable(values: Params) -> Params:
    """``values`` with every text encodable as UTF-8 (a lone surrogate becomes "?"); a
    queued template row has its template's fixed text made so too."""
    return tuple(
        v.encode("utf-8", "replace").decode("utf-8")
        if isinstance(v, str)
        else v.storable()
        if isinstance(v, RowTemplate)
        else v
        for v in values
    )


def from_record(names: Sequence[str], record: Sequence[Any]) -> LedgerRow:
    values = dict(zip(names, record, strict=True))
    for name in ("cost_usd", "cost_saved_usd"):
        if values.get(name) is not None:
            values[name] = Decimal(values[name])
    values["cached"] = bool(values.get("cached", False))
    values["batch"] = bool(values.get("batch", False))
    return LedgerRow(**values)
