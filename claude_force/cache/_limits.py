"""How the disk tier splits its byte limit between the database, its WAL and its index.

Pure arithmetic, so the guarantee can be read (and tested) in one place:

    cache.db + cache.db-wal + cache.db-shm <= max(max_size_mb, 0.5 MiB) + 64 KiB

at every commit, after ``close()`` and after a crash, for any number of processes that use
the folder with the same limit. An SQLite cache cannot be much smaller than half a MiB (an
empty database, one transaction in the WAL and the WAL index already take ~100 KiB), so
smaller limits still bound the stored entries (sum of envelope sizes) but the folder may use
up to 0.5 MiB. The 64 KiB is slack for B-tree page splits that no estimate foresees.

How the ``effective`` limit is shared out:

* WAL: an eighth of it (128 KiB to 16 MiB). A background thread checkpoints once the WAL
  passes five eighths of that at most (earlier after a writer found it full; ``_wal``), and
  SQLite then starts it over, reusing the file; a writer begins a transaction only while the
  WAL is within the whole, checkpointing it all first otherwise, so with any number of
  writer processes it passes the budget by at most one transaction. Each time it starts
  over, a writer waits for the checkpoint's last pass (two fsyncs), so this share sets how
  often that happens: at a sixteenth, one set in a hundred would wait while every set
  evicts 2 KB entries, enough to decide a p99 of sets.
* one transaction's new pages: at most half the WAL budget, so the database file, whose
  free pages are reused but never returned, overshoots its budget by no more than that.
* the WAL index (-shm): 32 KiB while the WAL, one transaction past its budget, has fewer
  than 4062 frames (what the index's first 32 KiB holds), else 64 KiB (``shm_bytes``).
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
_MAX_WAL = 16 * MIB
# No limit stores a larger envelope on disk (``max_entry_bytes`` is at most a quarter WAL).
LARGEST_ENTRY = 2 * MIB
# Frames the WAL index's first 32 KiB holds (each further 32 KiB holds 4096), at 4 KiB pages.
_FIRST_INDEX_FRAMES = 4062
_FRAME_BYTES = PAGE_SIZE + 24


@dataclass(frozen=True, slots=True)
class DiskLimits:
    """The budgets derived from one ``max_bytes`` limit (see the module docstring)."""

    max_bytes: int  # sum of stored envelope sizes (what ``size_bytes`` reports)
    folder_bytes: int  # the guarantee: db + wal + shm stay within this
    wal_bytes: int  # the WAL file is truncated when it grows past this
    file_bytes: int  # pages in use in the database file, in bytes
    txn_bytes: int  # envelope bytes written in one transaction (at least one entry)
    max_entry_bytes: int  # a larger envelope is not stored on disk
    shm_bytes: int  # the WAL index's largest size

    @classmethod
    def for_limit(cls, max_bytes: int) -> DiskLimits:
        effective = max(max_bytes, MIN_EFFECTIVE)
        wal = min(max(effective // 8, 128 * KIB), _MAX_WAL)
        small = wal * 3 // 2 <= _FIRST_INDEX_FRAMES * _FRAME_BYTES
        shm = SHM_BYTES if small else 2 * SHM_BYTES
        return cls(
            max_bytes=max_bytes,
            folder_bytes=effective + SLACK,
            wal_bytes=wal,
            file_bytes=effective - wal - wal // 2 - shm,
            txn_bytes=wal // 8,
            # A 64th of the limit, 32 KiB to 2 MiB (as ResponseCache documents).
            max_entry_bytes=min(max_bytes, max(effective // 64, 32 * KIB), LARGEST_ENTRY),
            shm_bytes=shm,
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
