"""How the disk tier splits its byte limit between the database, its WAL and its index.

Pure arithmetic, so the guarantee can be read (and tested) in one place:

    cache.db + cache.db-wal + cache.db-shm <= max(max_size_mb, 0.5 MiB) + 64 KiB

at every commit, after ``close()`` and after a crash, for any number of processes that use
the folder with the same limit. An SQLite cache cannot be much smaller than half a MiB (an
empty database, one transaction in the WAL and the WAL index already take ~100 KiB), so
smaller limits still bound the stored entries (sum of envelope sizes) but the folder may use
up to 0.5 MiB. The 64 KiB is slack for B-tree page splits that no estimate foresees.

How the ``effective`` limit is shared out:

* WAL: a sixteenth of it (128 KiB to 8 MiB). A background thread checkpoints once the WAL
  passes five eighths of that at most (earlier after a writer found it full; ``_wal``), and
  SQLite then starts it over, reusing the file; a writer begins a transaction only while the
  WAL is within the whole, checkpointing it all first otherwise, so with any number of
  writer processes it passes the budget by at most one transaction.
* one transaction's new pages: at most half the WAL budget, so the database file, whose
  free pages are reused but never returned, overshoots its budget by no more than that.
* the WAL index (-shm): 32 KiB, its size while the WAL has fewer than 4096 frames.
* the database file: the rest, counted in pages in use (``page_count - freelist_count``),
  so page headers, index pages and half-empty pages are paid for, not only payload bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LARGEST_ENTRY", "PAGE_SIZE", "DiskLimits"]

KIB = 1024
MIB = 1024 * KIB
PAGE_SIZE = 4096
MIN_EFFECTIVE = 512 * KIB
SLACK = 64 * KIB
SHM_BYTES = 32 * KIB
_MAX_WAL = 8 * MIB
# No limit stores a larger envelope on disk (``max_entry_bytes`` is at most a quarter WAL).
LARGEST_ENTRY = _MAX_WAL // 4


@dataclass(frozen=True, slots=True)
class DiskLimits:
    """The budgets derived from one ``max_bytes`` limit (see the module docstring)."""

    max_bytes: int  # sum of stored envelope sizes (what ``size_bytes`` reports)
    folder_bytes: int  # the guarantee: db + wal + shm stay within this
    wal_bytes: int  # the WAL file is truncated when it grows past this
    file_bytes: int  # pages in use in the database file, in bytes
    txn_bytes: int  # envelope bytes written in one transaction (at least one entry)
    max_entry_bytes: int  # a larger envelope is not stored on disk

    @classmethod
    def for_limit(cls, max_bytes: int) -> DiskLimits:
        effective = max(max_bytes, MIN_EFFECTIVE)
        wal = min(max(effective // 16, 128 * KIB), _MAX_WAL)
        return cls(
            max_bytes=max_bytes,
            folder_bytes=effective + SLACK,
            wal_bytes=wal,
            file_bytes=effective - wal - wal // 2 - SHM_BYTES,
            txn_bytes=wal // 8,
            max_entry_bytes=min(max_bytes, wal // 4),
        )

    @property
    def checkpoint_at(self) -> int:
        """The latest point at which the background thread checkpoints: five eighths of the
        budget, the rest absorbing what writers add while it runs (it starts earlier once a
        writer has found the WAL full)."""
        return self.wal_bytes * 5 // 8

    @property
    def journal_limit(self) -> int:
        """On open, a WAL file larger than this (what a crash or a higher limit left) is
        checkpointed and truncated; while open, SQLite keeps it within the budget itself
        (``journal_size_limit``) and reuses it from the start after each checkpoint."""
        return self.wal_bytes // 2

    @property
    def touches_per_txn(self) -> int:
        """Access-time updates per transaction: each dirties about three pages."""
        return max(8, self.wal_bytes // 2 // (3 * PAGE_SIZE))
