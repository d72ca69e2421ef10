"""What a row of the disk tier's table must hold, checked column by column on every read.

The file is on disk, so any column can hold anything: a foreign tool, an older version or an
attacker can write text where a time belongs or a size that is not the envelope's length.
The signature covers the key, ``created_at`` and the payload; these checks cover the rest, so
a row that fails any of them is a bad row (a counted miss, deleted) and never a hit.

The running totals in ``meta`` are kept by triggers from the ``size`` column, so a tampered
size (or a tampered ``meta`` row) makes them wrong: ``plausible`` tells, and the writer then
deletes the mis-sized rows and recounts (``REPAIR``).
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard

from .._errors import CacheIntegrityError, InvalidArgumentError
from ._envelope import decode_payload, open_envelope
from ._limits import LARGEST_ENTRY
from ._types import check_key

__all__ = [
    "COLUMNS",
    "RECOUNT",
    "REPAIR",
    "column_problem",
    "plausible",
    "row_ok",
]

# CAST: a text envelope with invalid UTF-8 would otherwise fail the whole read.
COLUMNS = "CAST(envelope AS BLOB), typeof(envelope), size, created_at, expires_at, last_access"
_MISSIZED = "typeof(envelope) != 'blob' OR typeof(size) != 'integer' OR size != length(envelope)"
# Deleting fires the triggers with the bad sizes, hence the recount after it.
REPAIR = (
    f"DELETE FROM entries WHERE {_MISSIZED}",
    "INSERT OR IGNORE INTO meta (id, total_bytes, entries) VALUES (0, 0, 0)",
    "UPDATE meta SET total_bytes = (SELECT coalesce(sum(size), 0) FROM entries), "
    "entries = (SELECT count(*) FROM entries) WHERE id = 0",
)
# The totals from the rows themselves, for stats while ``meta`` is wrong (a full scan).
RECOUNT = (
    f"SELECT coalesce(sum(length(envelope)), 0), count(*) FROM entries WHERE NOT ({_MISSIZED})"
)


def _is_time(value: object) -> TypeGuard[float]:
    # REAL columns store every number as a float: an int here was written by someone else.
    return type(value) is float and math.isfinite(value)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def column_problem(
    envelope: bytes | None,
    kind: str,
    size: object,
    created_at: object,
    expires_at: object,
    last_access: object,
) -> str | None:
    """What is wrong with a row's columns, or None; the signature is checked after this.

    ``envelope`` is the column cast to bytes and ``kind`` its SQLite ``typeof``.
    """
    if kind != "blob" or envelope is None:
        return f"holds {kind}, not bytes"
    if type(size) is not int or size != len(envelope):
        return f"has a size of {_shown(size)}, not its envelope's {len(envelope)} bytes"
    if not _is_time(created_at):
        return f"has a created_at of {_shown(created_at)}, not a time"
    if not _is_time(expires_at) or expires_at < created_at:
        return f"has an expires_at of {_shown(expires_at)}, not a time after its created_at"
    if not _is_time(last_access):
        return f"has a last_access of {_shown(last_access)}, not a time"
    return None


def plausible(total: object, entries: object) -> bool:
    """True when ``meta``'s byte total and entry count can describe real rows."""
    if type(total) is not int or type(entries) is not int:
        return False
    return entries >= 0 and 0 <= total <= entries * LARGEST_ENTRY


def row_ok(secret: bytes, row: tuple[Any, ...]) -> bool:
    """True when a row read as (rowid, CAST(key AS BLOB), COLUMNS...) is one a lookup would
    serve: every column right, the signature valid for its key, the JSON an object."""
    _, raw_key, envelope, *columns = row
    if type(raw_key) is not bytes or column_problem(envelope, *columns) is not None:
        return False
    try:
        key = raw_key.decode()
        check_key(key)
        opened = open_envelope(secret, key, envelope)
        decode_payload(key, opened.payload)
    except (UnicodeDecodeError, CacheIntegrityError, InvalidArgumentError):
        return False
    return bool(opened.created_at == columns[2])
