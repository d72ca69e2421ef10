"""The sync door: every method is one call into the async core.

The core runs on a private event loop in a daemon thread, so connections are reused
between calls and the sync API also works where an event loop is already running
(notebooks, async frameworks).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from ._batch import BatchItems, BatchMode, BatchRecord
from ._budget import Budget, BudgetTracker
from ._config import ProjectConfig
from ._errors import AgentNotFoundError, UsageError
from ._ledger import Ledger
from ._message_batches import BatchesSettings
from ._metrics import Metrics
from ._options import OrchestratorOptions
from ._orchestrator import AsyncAgentOrchestrator, TaskLike
from ._pricing import PriceTable
from ._reports import UsageReportMethods, UsageReports
from ._request import NOT_GIVEN, CacheTTL, NotGiven
from ._results import AgentResult, WorkflowResult
from ._workflow import StepEvent
from .cache import ResponseCache

__all__ = ["AgentOrchestrator"]

T = TypeVar("T")


class AgentOrchestrator(UsageReportMethods):
    """Synchronous front door over :class:`AsyncAgentOrchestrator`.

    Takes the same arguments and offers every public method of the async core under the same
    name, blocking until done; ``run_agent`` and ``run_multiple`` are the seed's names.
    """

    def __init__(
        self,
        config_path: str | os.PathLike[str] | None = None,
        api_key: str | None = None,
        **options: Any,
    ) -> None:
        self._core = AsyncAgentOrchestrator(config_path, api_key, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._pid = os.getpid()  # of the process that runs the loop thread

    @property
    def core(self) -> AsyncAgentOrchestrator:
        """The async orchestrator this door calls into."""
        return self._core

    def __repr__(self) -> str:
        return f"AgentOrchestrator({self._core!r})"

    def __enter__(self) -> AgentOrchestrator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP client and stop the private loop. Safe to call twice.

        Also runs by itself when the object is collected or the interpreter exits.
        """
        with self._lock:
            finalizer = self._finalizer
            self._loop = self._thread = self._finalizer = None
        if finalizer is not None:
            finalizer()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            # Waiting here would block the very loop that must run the call.
            raise UsageError(
                "AgentOrchestrator was called from its own event loop (from an on_step "
                "callback?); call it from another thread, or use orch.core (the async "
                "orchestrator) and await"
            )
        with self._lock:
            if self._loop is not None and self._pid != os.getpid():
                coro.close()
                # The loop's thread did not cross fork(): the call would wait forever.
                raise UsageError(
                    f"this AgentOrchestrator was made in process {self._pid}, before fork(); "
                    "its event loop thread does not exist here: make an AgentOrchestrator "
                    "in each process after it starts"
                )
            if self._loop is None:
                self._pid = os.getpid()
                self._loop = asyncio.new_event_loop()
                # Our own executor, so that closing can join its threads (loop.close() does
                # not wait for them, and at interpreter exit no thread can be started to).
                executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="claude-force")
                self._loop.set_default_executor(executor)
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="claude-force-loop", daemon=True
                )
                self._thread.start()
                self._finalizer = weakref.finalize(
                    self, _stop_loop, self._core, self._loop, self._thread, executor, self._pid
                )
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    # -- the same public surface as AsyncAgentOrchestrator (a test derives the list) ------

    @property
    def options(self) -> OrchestratorOptions:
        return self._core.options

    @property
    def config(self) -> ProjectConfig:
        return self._core.config

    @property
    def prices(self) -> PriceTable:
        return self._core.prices

    @property
    def budget(self) -> BudgetTracker | None:
        return self._core.budget

    @property
    def ledger_path(self) -> Path:
        return self._core.ledger_path

    @property
    def ledger(self) -> Ledger:
        return self._core.ledger

    @property
    def metrics(self) -> Metrics | None:
        return self._core.metrics

    @property
    def reports(self) -> UsageReports:
        return self._core.reports

    @property
    def response_cache(self) -> ResponseCache | None:
        return self._core.response_cache

    @property
    def peak_concurrency(self) -> int:
        return self._core.peak_concurrency

    @property
    def rate_limit_state(self) -> dict[str, object]:
        return self._core.rate_limit_state

    @property
    def default_model(self) -> str:
        return self._core.default_model

    def list_agents(self) -> list[str]:
        return self._core.list_agents()

    def list_workflows(self) -> list[str]:
        return self._core.list_workflows()

    def get_agent_info(self, agent_name: str) -> dict[str, Any]:
        return self._core.get_agent_info(agent_name)

    def execute_agent(
        self,
        agent_name: str,
        task: str,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        use_memory: bool = True,
        use_cache: bool = True,
        prompt_cache_ttl: CacheTTL | NotGiven | None = NOT_GIVEN,
        budget: Budget | None = None,
        refresh: bool = False,
    ) -> AgentResult:
        return self._call(
            self._core.execute_agent(
                agent_name,
                task,
                model=model,
                max_tokens=max_tokens,
                temperature=temperature,
                use_memory=use_memory,
                use_cache=use_cache,
                prompt_cache_ttl=prompt_cache_ttl,
                budget=budget,
                refresh=refresh,
            )
        )

    def run_agent(self, agent_name: str, task: str, **options: Any) -> AgentResult:
        """Claude Force 1.x's name for :meth:`execute_agent` (the same keywords), with 1.x's
        answer to a name the config does not define: a failed result whose ``errors`` name
        the agents that exist, not :class:`AgentNotFoundError`. Other mistakes still raise."""
        try:
            return self.execute_agent(agent_name, task, **options)
        except AgentNotFoundError as exc:
            # 1.x code checks `result.success` in a loop over names; raising would end it.
            return AgentResult(agent_name=agent_name, success=False, output="", errors=[str(exc)])

    def execute_multiple(
        self, tasks: Iterable[TaskLike], *, refresh: bool = False
    ) -> list[AgentResult]:
        return self._call(self._core.execute_multiple(tasks, refresh=refresh))

    run_multiple = execute_multiple
    """The seed's name for :meth:`execute_multiple`."""

    def execute_batch(
        self,
        items: BatchItems,
        *,
        mode: BatchMode = "messages",
        concurrency: int | None = None,
        budget: Budget | None = None,
        use_cache: bool = True,
        refresh: bool = False,
        state_path: str | Path | None = None,
        batches: BatchesSettings | None = None,
    ) -> Iterator[BatchRecord]:
        """The records as a plain iterator, in completion order; each step runs on the loop."""
        records = self._core.execute_batch(
            items,
            mode=mode,
            concurrency=concurrency,
            budget=budget,
            use_cache=use_cache,
            refresh=refresh,
            state_path=state_path,
            batches=batches,
        )
        try:
            while (record := self._call(_next(records))) is not None:
                yield record
        finally:  # stopping early cancels the calls in flight
            self._call(_close(records))

    def warm(self, tasks: Iterable[TaskLike]) -> dict[str, int]:
        return self._call(self._core.warm(tasks))

    def run_workflow(
        self,
        workflow_name: str,
        task: str,
        *,
        on_step: Callable[[StepEvent], None] | None = None,
        budget: Budget | None = None,
        use_cache: bool = True,
        refresh: bool = False,
        resume: bool = False,
    ) -> WorkflowResult:
        return self._call(
            self._core.run_workflow(
                workflow_name,
                task,
                on_step=on_step,
                budget=budget,
                use_cache=use_cache,
                refresh=refresh,
                resume=resume,
            )
        )


async def _next(records: AsyncIterator[BatchRecord]) -> BatchRecord | None:
    return await anext(records, None)


async def _close(records: AsyncIterator[BatchRecord]) -> None:
    close = getattr(records, "aclose", None)
    if close is not None:
        await close()


def _stop_loop(
    core: AsyncAgentOrchestrator,
    loop: asyncio.AbstractEventLoop,
    thread: threading.Thread,
    executor: concurrent.futures.ThreadPoolExecutor,
    pid: int,
) -> None:
    """Close the core's client on its loop, then stop the loop and its threads (in the
    process that started them: a forked child has none of them to stop)."""
    if pid != os.getpid():
        return
    asyncio.run_coroutine_threadsafe(core.close(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    executor.shutdown(wait=True)
    loop.close()
