"""Kept step outputs of workflow runs, so that ``resume=True`` re-sends only what failed.

One SQLite file in the project's data folder (``.claude/data/runs.db``) holds, per workflow
and task (as a hash), the successful steps of the latest run: each step's output with the
key of the request that produced it. A run that succeeds deletes its rows; a new run of the
same workflow and task supersedes them; rows older than 30 days are pruned. The response
cache plays no part, so resume works with it off.

Like the ledger, the store is best-effort: a folder that cannot be created, a read-only or
damaged file, each is one warning per cause on the ``claude_force.runs`` logger and the run
goes on without it (a damaged file is moved aside and a fresh one started). Every method
blocks on the disk: callers run them off the event loop.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TypeVar

from ._ledger import _keep_out_of_git, _move_aside, task_hash
from ._results import AgentResult
from ._warnings import OnceLog
from .cache._sqlite import file_identity, is_corruption

__all__ = ["KeptStep", "RunStore"]

logger = logging.getLogger("claude_force.runs")
_log = OnceLog(logger)

T = TypeVar("T")

MAX_AGE_SECONDS = 30 * 24 * 3600
_BUSY_TIMEOUT_S = 5.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS steps (
    workflow TEXT NOT NULL,
    task_hash TEXT NOT NULL,
    step INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    request_key TEXT NOT NULL,
    created REAL NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (workflow, task_hash, step)
);
CREATE INDEX IF NOT EXISTS steps_created ON steps(created);
"""


@dataclass(frozen=True, slots=True)
class KeptStep:
    """A successful step of an earlier run: reusable when its request key is unchanged."""

    run_id: str
    step: int
    """0-based index of the step in its workflow."""
    request_key: str
    result: AgentResult


def _encode(result: AgentResult) -> str:
    """The row of a successful step; ``cost`` is what the call originally cost.

    A step reused from an earlier run or served by the response cache cost $0 this time, and
    carries the original cost in ``cost_saved``: that is kept, so ``cost_saved`` survives any
    number of resumes.
    """
    original = result.cost_saved if result.reused or result.cached else result.cost
    cost = None if original is None else str(original)
    return json.dumps(
        {
            "agent": result.agent_name,
            "output": result.output,
            "model": result.model,
            "cost": cost,
            "message_id": result.message_id,
            "stop_reason": result.stop_reason,
        }
    )


def _decode(text: str) -> AgentResult | None:
    """The kept step as this run's result: no call made, $0, the original cost saved."""
    try:
        data = json.loads(text)
        cost = data["cost"]
        return AgentResult(
            agent_name=str(data["agent"]),
            success=True,
            output=str(data["output"]),
            model=str(data["model"]),
            cost=Decimal(0),
            cost_saved=None if cost is None else Decimal(cost),
            message_id=data.get("message_id"),
            stop_reason=data.get("stop_reason"),
            reused=True,
        )
    except (ValueError, KeyError, TypeError, InvalidOperation):
        return None  # a row edited by hand: that step runs again


class RunStore:
    """The kept steps of workflow runs in one SQLite file; never raises for the disk."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock

    def latest(self, workflow: str, task: str) -> dict[int, KeptStep]:
        """The kept steps of the latest run of ``workflow`` on ``task``, by step index."""
        if not self.path.exists():
            return {}

        def read(conn: sqlite3.Connection) -> dict[int, KeptStep]:
            rows = conn.execute(
                "SELECT step, run_id, request_key, result FROM steps "
                "WHERE workflow = ? AND task_hash = ? ORDER BY step",
                (workflow, task_hash(task)),
            ).fetchall()
            kept: dict[int, KeptStep] = {}
            for step, run_id, key, text in rows:
                result = _decode(text)
                if result is not None and isinstance(step, int):
                    kept[step] = KeptStep(str(run_id), step, str(key), result)
            return kept

        return self._use(read, {})

    def start(self, workflow: str, task: str) -> None:
        """A new run begins: the earlier run's rows are superseded, old rows pruned."""

        def clear(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(
                    "DELETE FROM steps WHERE workflow = ? AND task_hash = ?",
                    (workflow, task_hash(task)),
                )
                conn.execute(
                    "DELETE FROM steps WHERE created < ?", (self._clock() - MAX_AGE_SECONDS,)
                )

        self._use(clear, None)

    def keep(
        self,
        workflow: str,
        task: str,
        run_id: str,
        step: int,
        request_key: str,
        result: AgentResult,
    ) -> None:
        """Keep one successful step of the current run."""
        row = (workflow, task_hash(task), step, run_id, request_key, self._clock(), _encode(result))

        def write(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(
                    "INSERT OR REPLACE INTO steps (workflow, task_hash, step, run_id, "
                    "request_key, created, result) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    row,
                )

        self._use(write, None)

    def finish(self, workflow: str, task: str) -> None:
        """The run succeeded: nothing is left to resume."""
        if self.path.exists():
            self.start(workflow, task)

    # -- the file -------------------------------------------------------------------------

    def _use(self, work: Callable[[sqlite3.Connection], T], fallback: T) -> T:
        """Run ``work`` on a fresh connection; a damaged file is set aside and tried once more."""
        for attempt in (1, 2):
            identity = file_identity(self.path)
            try:
                with self._connect() as conn:
                    value = work(conn)
            except sqlite3.Error as exc:
                if attempt == 1 and is_corruption(exc) and self._set_aside(exc, identity):
                    continue
                _log.warn(
                    f"runs:{self.path}",
                    f"workflow run store {self.path} cannot be used ({exc}); runs go on, but "
                    "--resume cannot reuse their steps. Check the file and its folder",
                )
            except OSError as exc:
                _log.warn(
                    f"runs-folder:{self.path}",
                    f"workflow run store folder {self.path.parent} cannot be used "
                    f"({exc.strerror or exc}); runs go on, but --resume cannot reuse their "
                    "steps. Make it a writable folder",
                )
            else:
                _log.clear(f"runs:{self.path}")
                return value
            break
        return fallback

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if not self.path.parent.is_dir():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _keep_out_of_git(self.path.parent)
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")  # reads the header: damage shows here
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            yield conn
        finally:
            conn.close()

    def _set_aside(self, exc: sqlite3.Error, identity: tuple[int, int] | None) -> bool:
        try:
            target = _move_aside(self.path, expected=identity)
        except OSError:
            return False
        if target is not None:
            _log.warn(
                f"runs-damaged:{target}",
                f"workflow run store {self.path} was damaged ({exc}); moved it to {target} "
                "and started a fresh one",
            )
        return True


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
