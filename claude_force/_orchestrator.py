"""The async core. One call goes build → cache → admission → transport → record."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from . import _outcomes as outcome
from ._admission import Limits, limits_from_config
from ._aio import off_loop
from ._batch import BatchMethods
from ._budget import Budget, BudgetTracker, release_all, reserve_for, trackers_for
from ._cache_use import CacheUse
from ._config import DEFAULT_MODEL, ProjectConfig, find_config, load_config
from ._errors import APIError, BudgetExceeded, InvalidArgumentError
from ._memory import AgentMemory
from ._options import (
    OPTION_NAMES,
    OrchestratorOptions,
    check_api_key,
    check_option_names,
    check_path,
)
from ._pricing import PriceTable
from ._record import CallContext, RecordedMethods, Recorder
from ._request import (
    DEFAULT_MAX_TASK_CHARS,
    NOT_GIVEN,
    CacheTTL,
    NotGiven,
    Request,
    RequestBuilder,
    TaskSpec,
    cache_key,
)
from ._results import AgentResult, WorkflowResult
from ._runs import RunStore
from ._transport import Transport
from ._warnings import OnceLog
from ._workflow import StepEvent, WorkflowRunner
from .cache import ResponseCache

__all__ = ["AsyncAgentOrchestrator"]

TaskLike = TaskSpec | tuple[str, str] | Mapping[str, Any]


class AsyncAgentOrchestrator(RecordedMethods, BatchMethods):
    """Runs agents from ``.claude/claude.json`` against the Claude Messages API.

    ::

        async with AsyncAgentOrchestrator(config_path=".claude/claude.json") as orch:
            result = await orch.execute_agent("code-reviewer", "Review utils.py")

    The keyword options are those of :class:`OrchestratorOptions` (kept as ``.options``);
    ``execute_batch`` comes from :class:`BatchMethods` (``_batch.py``).
    Usable with ``async with`` and across separate ``asyncio.run`` calls.
    """

    def __init__(
        self,
        config_path: str | os.PathLike[str] | None = None,
        api_key: str | None = None,
        *,
        max_concurrent: int = 10,
        timeout_seconds: float = 120.0,
        max_retries: int = 3,
        deadline_seconds: float | None = None,
        enable_tracking: bool = True,
        enable_memory: bool = True,
        enable_cache: bool = True,
        cache_ttl_hours: float = 24,
        cache_max_size_mb: float = 100,
        default_model: str | None = None,
        base_url: str | None = None,
        prompt_cache_ttl: CacheTTL | None = "5m",
        max_task_chars: int = DEFAULT_MAX_TASK_CHARS,
        adaptive_concurrency: bool = True,
        adaptive_rate_limits: bool = True,
        rate_limits: Limits | Mapping[str, Limits] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_exclude_agents: Iterable[str] | None = None,
        cache_redis_url: str | None = None,
        redis_url: str | None = None,
        cache_secret: str | bytes | None = None,
        response_cache: ResponseCache | None = None,
        budget: Budget | None = None,
        ledger_path: str | os.PathLike[str] | None = None,
        pricing_path: str | os.PathLike[str] | None = None,
        enable_metrics: bool = True,
        open_telemetry: bool | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        **unknown: NoReturn,  # a type checker flags any other name; at run time: a clear error
    ) -> None:
        check_option_names(unknown)
        check_path("config_path", config_path)
        key = check_api_key(api_key)  # before anything else: the key is the common mistake
        # The keyword parameters are exactly the option fields (a test pins that).
        given = {name: value for name, value in locals().items() if name in OPTION_NAMES}
        self.options = opts = OrchestratorOptions(**given)
        path = Path(config_path) if config_path is not None else find_config()
        self.config: ProjectConfig = load_config(path)
        self.default_model = default_model or self.config.default_model or DEFAULT_MODEL
        memory = AgentMemory.of_project(self.config) if opts.enable_memory else None
        self._requests = RequestBuilder(
            self.config,
            default_model=self.default_model,
            prompt_cache_ttl=prompt_cache_ttl,
            max_task_chars=max_task_chars,
            memory=memory,
        )
        limits = limits_from_config(rate_limits, self.config.rate_limits)
        self._transport = Transport.from_options(opts, key, limits)
        self.prices = PriceTable.load(Path(pricing_path) if pricing_path is not None else None)
        self.budget = BudgetTracker(budget) if budget is not None else None
        self.ledger_path = Path(ledger_path) if ledger_path else self.config.root / "data/usage.db"
        tracking, metrics = opts.enable_tracking, opts.enable_metrics
        self._recorder = Recorder(self.ledger_path, tracking=tracking, metrics=metrics)
        self._recorder.memory = memory
        if self._recorder.metrics is not None:  # the buckets' levels, read at each scrape
            self._recorder.metrics.watch_rate_limits(self._transport.rate_limit_state)
        log = OnceLog(logging.getLogger("claude_force"))
        self._cache = CacheUse(opts, log, self._recorder.metrics)
        self._transport.shared = self._cache.shared  # redis_url: limits shared by processes
        self._runs = RunStore(self.config.root / "data" / "runs.db")

    def __repr__(self) -> str:
        return f"AsyncAgentOrchestrator(config_path={str(self.config.path)!r}, api_key='***')"

    async def __aenter__(self) -> AsyncAgentOrchestrator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Write pending ledger rows and cache entries; release threads, files and clients.
        Safe to call twice; the orchestrator can still be used afterwards (it reopens)."""
        await off_loop(self._recorder.close)
        await self._cache.close()
        await self._transport.aclose()

    @property
    def peak_concurrency(self) -> int:
        """Most requests this orchestrator had in flight at once (current event loop)."""
        return self._transport.peak_concurrency

    @property
    def rate_limit_state(self) -> dict[str, object]:
        """The concurrency gate and, per model class, the client-side rate-limit buckets
        (current event loop): ``concurrency_limit``, ``in_flight`` and ``classes`` mapping
        ``sonnet``, ``haiku``... to their state, input-token ratio and buckets' limit, level
        and refill factor. Empty ``classes`` before the first request."""
        return self._transport.rate_limit_state()

    # -- discovery ------------------------------------------------------------------

    def list_agents(self) -> list[str]:
        return list(self.config.agents)

    def list_workflows(self) -> list[str]:
        return list(self.config.workflows)

    def get_agent_info(self, agent_name: str) -> dict[str, Any]:
        """The agent's settings as used for its calls (model and max_tokens resolved)."""
        return self._requests.agent_info(agent_name)

    # -- running ----------------------------------------------------------------------

    async def execute_agent(
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
        """Run one agent on a task.

        With the response cache on, an identical earlier request is answered from it
        (``cached`` True, cost $0, ``cost_saved`` what it would have cost); ``use_cache=False``
        bypasses it, ``refresh=True`` asks upstream and stores the answer.
        ``prompt_cache_ttl=None`` turns prompt caching off for this call.

        Usage errors raise; :class:`BudgetExceeded` raises before a request that could cross
        a budget (this call's, or the orchestrator's); run failures return success=False.
        """
        options = (model, max_tokens, temperature, use_memory, use_cache, prompt_cache_ttl)
        item = TaskSpec(agent_name, task, *options)
        ctx = CallContext.of(item, trackers_for(self.budget, budget), refresh)
        (request,) = await self._requests.abuild([item])
        return await self._run(agent_name, request, ctx)

    async def execute_multiple(
        self, tasks: Iterable[TaskLike], *, refresh: bool = False
    ) -> list[AgentResult]:
        """Run many calls concurrently under ``max_concurrent``; results in input order.

        Every item is validated before anything is sent; one run failure never cancels
        the others.
        """
        items = [TaskSpec.coerce(t, i) for i, t in enumerate(tasks)]
        requests = await self._requests.abuild(items)
        budgets = trackers_for(self.budget, None)
        calls = [
            self._run(item.agent, request, CallContext.of(item, budgets, refresh), isolated=True)
            for item, request in zip(items, requests, strict=True)
        ]
        return list(await asyncio.gather(*calls))

    async def warm(self, tasks: Iterable[TaskLike]) -> dict[str, int]:
        """Answer each task now unless the cache already holds it, so later calls hit.

        Returns counts: ``already_cached``, ``stored`` and ``failed``.
        """
        if await self._cache.aget() is None:
            what = (
                "the response cache is off or unusable (enable_cache=False, or a warning said why)"
            )
            raise InvalidArgumentError(f"{what}; warming needs it on")
        return outcome.warm_counts(await self.execute_multiple(tasks))

    async def run_workflow(
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
        """Run a workflow's stages in order, each stage's agents concurrently.

        Each step sees the task and earlier outputs (``handoff``); a failed step stops the run
        after its stage or is handed on as data (``on_failure``); a step whose request could
        cross ``budget`` or the orchestrator's budget is not sent and fails. ``resume=True``
        reuses the latest run's unchanged successful steps (``WorkflowResult.reused``).
        """
        spec = self.config.workflow_spec(workflow_name)
        self._requests.check_task(task)
        await self._transport.session()  # client set-up is not part of the run's timing
        budgets = trackers_for(self.budget, budget)

        async def send(agent: str, request: Request, run_id: str, step: int) -> AgentResult:
            ctx = CallContext(task, budgets, run_id, step, use_cache, refresh)
            return await self._run(agent, request, ctx, isolated=True)

        runs, recorded = self._runs, self._recorder.flush
        runner = WorkflowRunner(spec, task, self._requests, send, runs=runs, recorded=recorded)
        return await runner.run(resume=resume, on_step=on_step)

    # -- one call: build → cache → admission → transport → record ----------------------

    async def _run(
        self, agent: str, request: Request, ctx: CallContext, *, isolated: bool = False
    ) -> AgentResult:
        """Answer from the cache when allowed, else upstream; identical misses share a call.
        ``isolated``: a budget stop is a failed result, not an exception."""
        try:
            cache = await self._cache.aget() if ctx.use_cache else None
            if cache is None or cache.is_excluded(agent):
                return await self._send(agent, request, ctx, None)
            return await self._run_cached(agent, request, ctx, cache)
        except BudgetExceeded as exc:
            if not isolated:
                raise
            return outcome.budget_result(agent, request, exc)

    async def _run_cached(
        self, agent: str, request: Request, ctx: CallContext, cache: ResponseCache
    ) -> AgentResult:
        # Not in _run: its closures' cells would be made, and held, by every uncached call.
        started = time.perf_counter()
        key = cache_key(request)

        async def cached() -> AgentResult | None:
            hit = await cache.aget(key)
            result = outcome.hit_result(agent, request, hit, started) if hit is not None else None
            if result is not None:
                self._recorder.record_hit(result, ctx)
            return result

        # Checked before admission: a hit never waits for a concurrency slot.
        if not ctx.refresh and (result := await cached()) is not None:
            return result
        send = functools.partial(self._send, agent, request, ctx, (cache, key))
        leader, shared = await self._cache.flights().run(
            key, lambda: self._cache.across(key, send, None if ctx.refresh else cached)
        )
        if not shared:
            return leader
        result = outcome.shared_result(agent, request, leader, started)
        self._recorder.record(result, ctx)  # a failure too: every call has its row
        return result

    async def _send(
        self,
        agent: str,
        request: Request,
        ctx: CallContext,
        store: tuple[ResponseCache, str] | None,
    ) -> AgentResult:
        # Ready before the clock starts: the SDK import and the client are not the request.
        await self._transport.session()
        transport, begun = self._transport, self._transport.clock()  # a budget wait counts too
        reservations = await reserve_for(ctx.budgets, request, self.prices, transport, begun)
        started = time.perf_counter()
        try:
            sent = await transport.send(request, since=begun)
        except APIError as err:
            release_all(reservations)
            result = outcome.failure_result(agent, request, err, started)
            self._recorder.record(result, ctx)
            return result
        except BaseException:
            release_all(reservations)
            raise
        # The answer is paid for: everything below is best-effort and never loses it.
        usage = sent.usage
        cost = self.prices.cost(sent.answer.model, usage)
        for tracker, reservation in reservations:
            tracker.commit(reservation, usage, cost)
        result = outcome.success_result(agent, request, sent, started, usage, cost)
        self._recorder.record(result, ctx)  # first: a cancel never loses a paid answer
        if store is not None:  # with a held cancel, only the tiers that never wait
            value = outcome.cache_value(sent, usage, cost)
            await store[0].aset(store[1], value, wait=sent.cancelled is None)
        if sent.cancelled is not None:
            raise sent.cancelled
        return result

    @property
    def response_cache(self) -> ResponseCache | None:
        """The response cache (opened on first use), or None when disabled or unusable."""
        return self._cache.get()
