"""The ledger's table and the statements that insert queued rows into it.

A queued row is either a row's parameters in :data:`COLUMNS` order (:func:`to_params`) or
a :class:`RowTemplate` row (the template, then its values). :func:`insert` writes a batch
of them in one transaction, in the order queued, binding as little as it can: binding
dominates what a row costs the writer thread, and it holds the GIL while it binds.
"""

from __future__ import annotations

import functools
import itertools
import operator
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

from ._ledger_row import COLUMNS, Params, RowTemplate

__all__ = ["ADDED_COLUMNS", "SCHEMA", "insert"]

# message_id is unique among *upstream* calls only: a response-cache hit replays the original
# message id for tracing, and each hit must still be recorded. NULL ids (failures) never collide.
SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    message_id TEXT,
    request_id TEXT,
    agent TEXT NOT NULL,
    model TEXT NOT NULL,
    workflow_run TEXT,
    workflow_step INTEGER,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_5m_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    web_search_requests INTEGER NOT NULL DEFAULT 0,
    cost_usd TEXT,
    cost_saved_usd TEXT,
    latency_ms REAL,
    attempts INTEGER NOT NULL DEFAULT 1,
    cached INTEGER NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL CHECK (outcome IN ('success', 'error')),
    error_type TEXT,
    task_hash TEXT,
    task_text TEXT,
    batch INTEGER NOT NULL DEFAULT 0,
    injection_flags TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS calls_message_id ON calls(message_id) WHERE cached = 0;
CREATE INDEX IF NOT EXISTS calls_ts ON calls(ts);
"""
# Columns added after the first release, with their definitions: an older ledger gains them
# when a writer opens it; a reader of an older ledger sees their defaults.
ADDED_COLUMNS = {
    "web_search_requests": "INTEGER NOT NULL DEFAULT 0",
    "batch": "INTEGER NOT NULL DEFAULT 0",
    "injection_flags": "TEXT",
}
# Columns the schema gives a DEFAULT: leaving one out of an INSERT would not store NULL.
_DEFAULTED = frozenset(line.split()[0] for line in SCHEMA.splitlines() if " DEFAULT " in line)


# Rows per INSERT statement: each statement is one sqlite3_step, and each step hands the GIL
# back and forth; one per row cost a busy event loop more than the rows themselves. A full
# batch of the ledger's (1024 rows) fits one. Kept within SQLite's oldest limit of 999
# parameters before 3.32, 32,766 since (less a row's worth for the values bound once).
# Preparing a statement costs about as much as running it, so counts are powers of two:
# each text is prepared once, then found in the connection's statement cache.
_MAX_PARAMS = (32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999) - len(COLUMNS)
_ROWS_PER_INSERT = 1024

# Binding a None costs the sqlite3 module an adapter lookup, about ten times an int: a row
# leaves its None values out of the INSERT instead, where leaving one out stores NULL (a
# column without a DEFAULT).
_MAY_OMIT = tuple(i for i, name in enumerate(COLUMNS) if name not in _DEFAULTED)
_OMITTABLE = operator.itemgetter(*_MAY_OMIT)
_NONES = (None,) * len(_MAY_OMIT)

_Statement = tuple[str, list[object]]


def insert(conn: sqlite3.Connection, queued: Iterable[Params]) -> int:
    """Insert ``queued`` rows in one transaction, in runs of rows of the same form; returns
    how many were distinct calls given a message id already in the ledger (kept without it,
    see :func:`_keep_distinct`)."""
    rows = list(queued)
    statements = list(_statements(rows))
    if len(statements) == 1:
        # One statement is a transaction of its own: BEGIN and COMMIT would be two more
        # GIL hand-offs between this thread and a busy event loop.
        before = conn.total_changes
        conn.execute(*statements[0])
        if conn.total_changes - before == len(rows):
            return 0
        statements = []  # written; what is left is the rows the message id left out
    return _in_transaction(conn, statements, rows)


def _in_transaction(
    conn: sqlite3.Connection, statements: list[_Statement], rows: list[Params]
) -> int:
    kept = 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        before = conn.total_changes
        for sql, params in statements:
            conn.execute(sql, params)
        if conn.total_changes - before < len(rows):
            kept = _keep_distinct(conn, rows)
    except BaseException:
        # SQLite has already rolled back after some errors (SQLITE_FULL, SQLITE_IOERR).
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return kept


_MESSAGE_ID = COLUMNS.index("message_id")
_CACHED = COLUMNS.index("cached")
_BATCH = COLUMNS.index("batch")
_SAME_CALL = ("ts", "request_id", "task_hash", "model", "input_tokens", "output_tokens")
_SAME_CALL_AT = tuple(COLUMNS.index(name) for name in _SAME_CALL)


def _keep_distinct(conn: sqlite3.Connection, rows: list[Params]) -> int:
    """Rows the unique message id left out (rare: run only when some were): a Message
    Batches result that is the same answer as the row already there (a run collected
    again) stays out; any other call the service gave the same id (a stand-in or proxy
    with fixed ids, a direct call being recorded once) is inserted without its id, so the
    ledger counts every paid call."""
    kept = 0
    columns = ", ".join(_SAME_CALL)
    find = f"SELECT {columns} FROM calls WHERE message_id = ? AND cached = 0"
    for row in map(_full, rows):
        if row[_MESSAGE_ID] is None or row[_CACHED]:
            continue
        there = conn.execute(find, (row[_MESSAGE_ID],)).fetchone()
        mine = tuple(row[i] for i in _SAME_CALL_AT)
        if there is None or tuple(there) == mine:
            continue  # inserted just now
        if row[_BATCH] and tuple(there)[1:] == mine[1:]:
            continue  # a Message Batches result collected again, at another time
        alone = [*row]
        alone[_MESSAGE_ID] = None
        names = ", ".join(COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        conn.execute(f"INSERT INTO calls ({names}) VALUES ({marks})", alone)
        kept += 1
    return kept


def _full(row: Params) -> Params:
    """A queued row as every column's value (a template row's fixed values filled in)."""
    head = row[0]
    if type(head) is not RowTemplate:
        return row
    values = dict(head.fixed)
    values.update(zip(head.each, head.values(row), strict=True))
    values.update(zip(head.shared, head.key(row)[1], strict=True))
    return tuple(values[name] for name in COLUMNS)


def _statements(rows: list[Params]) -> Iterator[_Statement]:
    for key, run in itertools.groupby(rows, _run_key):
        same = list(run)
        head = same[0][0]
        if type(head) is RowTemplate:
            yield from _from_template(head, key[1], same)
        else:
            yield from _from_rows(key, same)


def _run_key(row: Params) -> Any:
    """Rows with equal keys go in one statement: a template and its shared values, or which
    columns of a plain row are None. (A plain row never starts with a template.)"""
    head = row[0]
    if type(head) is RowTemplate:
        return head.key(row)
    return tuple(map(operator.is_, _NONES, _OMITTABLE(row)))


def _counts(rows: int, width: int) -> Iterator[int]:
    """Rows per statement for ``rows`` rows of ``width`` values: powers of two."""
    largest = 1 << (min(_ROWS_PER_INSERT, _MAX_PARAMS // max(1, width)).bit_length() - 1)
    while rows:
        count = largest if rows >= largest else 1 << (rows.bit_length() - 1)
        yield count
        rows -= count


def _chunks(rows: list[Params], width: int) -> Iterator[tuple[int, list[Params]]]:
    start = 0
    for count in _counts(len(rows), width):
        yield count, rows[start : start + count]
        start += count


# -- plain rows -------------------------------------------------------------------------------


def _from_rows(shape: tuple[bool, ...], rows: list[Params]) -> Iterator[_Statement]:
    kept = _kept(shape)
    for count, chunk in _chunks(rows, sum(kept)):
        values = map(itertools.compress, chunk, itertools.repeat(kept))
        yield _rows_sql(shape, count), list(itertools.chain.from_iterable(values))


@functools.lru_cache(maxsize=32)
def _kept(shape: tuple[bool, ...]) -> tuple[bool, ...]:
    """Per column: True when a row of ``shape`` binds it."""
    omitted = {i for i, none in zip(_MAY_OMIT, shape, strict=True) if none}
    return tuple(i not in omitted for i in range(len(COLUMNS)))


@functools.lru_cache(maxsize=64)
def _rows_sql(shape: tuple[bool, ...], count: int) -> str:
    names = list(itertools.compress(COLUMNS, _kept(shape)))
    row = f"({', '.join('?' for _ in names)})"
    return f"INSERT OR IGNORE INTO calls ({', '.join(names)}) VALUES {', '.join([row] * count)}"


# -- template rows ----------------------------------------------------------------------------


def _from_template(
    template: RowTemplate, shared: tuple[object, ...], rows: list[Params]
) -> Iterator[_Statement]:
    """``INSERT ... SELECT <fixed and shared values>, <per-row values> FROM (VALUES ...)``."""
    present = tuple(not _omitted(n, v) for n, v in zip(template.shared, shared, strict=True))
    once = [*_fixed(template)[1], *itertools.compress(shared, present)]
    for count, chunk in _chunks(rows, len(template.each)):
        each = itertools.chain.from_iterable(map(template.values, chunk))
        yield _template_sql(template, present, count), [*once, *each]


def _omitted(name: str, value: object) -> bool:
    return value is None and name not in _DEFAULTED


@functools.lru_cache(maxsize=64)
def _fixed(template: RowTemplate) -> tuple[list[str], list[object]]:
    """The template's fixed columns that are bound, and their values."""
    kept = [(n, v) for n, v in template.fixed if not _omitted(n, v)]
    return [n for n, _ in kept], [v for _, v in kept]


@functools.lru_cache(maxsize=64)
def _template_sql(template: RowTemplate, present: tuple[bool, ...], count: int) -> str:
    once = [*_fixed(template)[0], *itertools.compress(template.shared, present)]
    names = ", ".join([*once, *template.each])
    columns = (f"column{i}" for i in range(1, len(template.each) + 1))  # the VALUES' names
    picked = ", ".join([*("?" for _ in once), *columns])
    row = f"({', '.join('?' for _ in template.each)})"
    values = ", ".join([row] * count)
    return f"INSERT OR IGNORE INTO calls ({names}) SELECT {picked} FROM (VALUES {values})"
