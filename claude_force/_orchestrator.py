"""The async core: every decision about a call is made here, once."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._admission import ConcurrencyGate
from ._budget import Budget, BudgetTracker, Reservation, estimate_input_tokens
from ._config import (
    DEFAULT_MODEL,
    AgentSpec,
    ProjectConfig,
    find_config,
    load_config,
    read_agent_prompt,
    validate_agent_name,
)
from ._errors import APIError, BudgetExceeded, InvalidArgumentError, UsageError
from ._ledger import Ledger, LedgerRow
from ._outcomes import (
    budget_result,
    failure_result,
    hit_result,
    ledger_row,
    shared_result,
    success_result,
)
from ._pricing import PriceTable
from ._reports import (
    Report,
    by_agent,
    by_model,
    by_run,
    export_csv,
    export_json,
    parse_since,
    summary,
)
from ._request import CacheTTL, Request, SystemPrompt, build_user_content, cache_key
from ._results import AgentResult, WorkflowResult
from ._transport import Transport
from ._usage import Usage
from ._workflow import StepEvent, run_stages
from .cache import ResponseCache, SingleFlight

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

    from ._metrics import Metrics

__all__ = ["AsyncAgentOrchestrator", "TaskSpec"]

_NO_USAGE = Usage()
DEFAULT_MAX_TOKENS = 4096
MAX_TOKENS_LIMIT = 128_000
DEFAULT_MAX_TASK_CHARS = 500_000


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One item of :meth:`AsyncAgentOrchestrator.execute_multiple`."""

    agent: str
    task: str
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    use_memory: bool = True
    use_cache: bool = True
    prompt_cache_ttl: CacheTTL | None = None


@dataclass(frozen=True, slots=True)
class _CallContext:
    """Where a call belongs: its task (for the ledger hash), workflow and budgets."""

    task: str
    budgets: tuple[BudgetTracker, ...] = ()
    workflow_run: str | None = None
    workflow_step: int | None = None
    use_cache: bool = True
    refresh: bool = False


@dataclass(slots=True)
class _LoopState:
    loop: asyncio.AbstractEventLoop
    client: AsyncAnthropic
    gate: ConcurrencyGate
    keeper: asyncio.Task[None]
    flights: SingleFlight


@dataclass(frozen=True, slots=True)
class _PromptEntry:
    stamp: tuple[int, ...]
    prompt: SystemPrompt


class AsyncAgentOrchestrator:
    """Runs agents from ``.claude/claude.json`` against the Claude Messages API.

    ::

        async with AsyncAgentOrchestrator(config_path=".claude/claude.json") as orch:
            result = await orch.execute_agent("code-reviewer", "Review utils.py")

    ``max_retries`` counts retries after the first attempt (3 = up to four attempts);
    ``timeout_seconds`` bounds each attempt and ``deadline_seconds`` (optional) the whole
    call including retries. Usable with ``async with`` and across separate
    ``asyncio.run`` calls. ``enable_cache`` turns on the response cache, ``enable_tracking``
    the usage ledger; ``enable_memory`` is accepted but per-agent memory is not implemented
    in this version, so it is honoured as off.
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
        cache_dir: str | os.PathLike[str] | None = None,
        cache_exclude_agents: Iterable[str] | None = None,
        cache_redis_url: str | None = None,
        cache_secret: str | bytes | None = None,
        response_cache: ResponseCache | None = None,
        budget: Budget | None = None,
        ledger_path: str | os.PathLike[str] | None = None,
        pricing_path: str | os.PathLike[str] | None = None,
        enable_metrics: bool = True,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        _check_options(
            max_concurrent=max_concurrent,
            max_task_chars=max_task_chars,
            max_retries=max_retries,
            timeout_seconds=timeout_seconds,
            deadline_seconds=deadline_seconds,
            cache_ttl_hours=cache_ttl_hours,
            cache_max_size_mb=cache_max_size_mb,
        )
        path = Path(config_path) if config_path is not None else find_config()
        self.config: ProjectConfig = load_config(path)
        self.max_concurrent = max_concurrent
        self.enable_tracking = enable_tracking
        self.enable_memory = enable_memory
        self.enable_cache = enable_cache
        self.cache_ttl_hours = cache_ttl_hours
        self.cache_max_size_mb = cache_max_size_mb
        self.default_model = default_model or self.config.default_model or DEFAULT_MODEL
        self.prompt_cache_ttl: CacheTTL | None = prompt_cache_ttl
        self.max_task_chars = max_task_chars
        self._adaptive = adaptive_concurrency
        self._api_key = api_key if api_key is not None else os.environ.get("ANTHROPIC_API_KEY")
        self._transport = Transport(
            api_key=self._api_key or "",
            base_url=base_url,
            timeout_seconds=float(timeout_seconds),
            max_retries=max_retries,
            deadline_seconds=deadline_seconds,
            sleep=sleep,
        )
        self._state: _LoopState | None = None
        self._prompts: dict[tuple[str, CacheTTL | None], _PromptEntry] = {}
        self.prices = PriceTable.load(Path(pricing_path) if pricing_path is not None else None)
        self.budget = BudgetTracker(budget) if budget is not None else None
        self.ledger_path = (
            Path(ledger_path) if ledger_path is not None else default_ledger_path(self.config)
        )
        self._ledger: Ledger | None = None
        self._cache: ResponseCache | None = response_cache
        self._cache_options: dict[str, Any] = {
            "cache_dir": cache_dir,
            "ttl_hours": cache_ttl_hours,
            "max_size_mb": cache_max_size_mb,
            "exclude_agents": cache_exclude_agents,
            "redis_url": cache_redis_url,
            "cache_secret": cache_secret,
        }
        self.metrics: Metrics | None = None
        if enable_metrics:
            from ._metrics import Metrics

            self.metrics = Metrics()

    def __repr__(self) -> str:
        return f"AsyncAgentOrchestrator(config_path={str(self.config.path)!r}, api_key='***')"

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> AsyncAgentOrchestrator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Write pending ledger rows and cache access times, close the HTTP client.

        Safe to call twice; the orchestrator can still be used afterwards.
        """
        if self._ledger is not None:
            await _off_loop(self._ledger.flush)
        if self._cache is not None:
            await _off_loop(self._cache.flush)
        state, self._state = self._state, None
        if state is None:
            return
        state.keeper.cancel()
        if state.loop is asyncio.get_running_loop():
            await state.client.close()

    async def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._state
        if state is not None and state.loop is loop:
            return state
        if not self._api_key:
            raise UsageError(
                "no API key: set the ANTHROPIC_API_KEY environment variable or pass "
                "api_key=...; to try claude-force without a key, run `claude-force demo`"
            )
        if "anthropic" not in sys.modules:
            # Importing the SDK takes about a second: do it in a thread, not on the loop.
            await asyncio.to_thread(importlib.import_module, "anthropic")
        state = self._state
        if state is not None and state.loop is loop:  # another task finished first
            return state
        client = self._transport.make_client()
        gate = ConcurrencyGate(self.max_concurrent, adaptive=self._adaptive)
        keeper = loop.create_task(_close_when_loop_ends(client))
        self._state = _LoopState(loop, client, gate, keeper, SingleFlight())
        return self._state

    @property
    def peak_concurrency(self) -> int:
        """Most requests this orchestrator had in flight at once (current event loop)."""
        return self._state.gate.peak if self._state else 0

    # -- discovery ------------------------------------------------------------------

    def list_agents(self) -> list[str]:
        return list(self.config.agents)

    def list_workflows(self) -> list[str]:
        return list(self.config.workflows)

    def get_agent_info(self, agent_name: str) -> dict[str, Any]:
        spec = self.config.agent(validate_agent_name(agent_name))
        return {
            "name": spec.name,
            "file": str(spec.file),
            "contract": str(spec.contract) if spec.contract else None,
            "domains": list(spec.domains),
            "priority": spec.priority,
            "model": spec.model or self.default_model,
            "max_tokens": spec.max_tokens or DEFAULT_MAX_TOKENS,
            "temperature": spec.temperature,
            "description": spec.description,
        }

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
        prompt_cache_ttl: CacheTTL | None = None,
        budget: Budget | None = None,
        refresh: bool = False,
    ) -> AgentResult:
        """Run one agent on a task.

        With the response cache on, an identical earlier request is answered from the cache
        (``metadata["cached"]`` is True, cost $0, ``cost_saved`` what it would have cost);
        ``use_cache=False`` bypasses it, ``refresh=True`` asks upstream and stores the answer.

        Usage errors raise; :class:`BudgetExceeded` raises before a request that could cross
        a budget (this call's, or the orchestrator's); run failures return success=False.
        """
        item = TaskSpec(
            agent_name,
            task,
            model,
            max_tokens,
            temperature,
            use_memory,
            use_cache,
            prompt_cache_ttl,
        )
        request = self._build_request(item, previous=())
        budgets = self._budgets(BudgetTracker(budget) if budget is not None else None)
        ctx = _CallContext(task, budgets, use_cache=use_cache, refresh=refresh)
        return await self._run(item.agent, request, ctx)

    async def execute_multiple(
        self, tasks: Iterable[TaskSpec | tuple[str, str] | Mapping[str, Any]]
    ) -> list[AgentResult]:
        """Run many calls concurrently under ``max_concurrent``; results in input order.

        Every item is validated before anything is sent; one run failure never cancels
        the others.
        """
        items = [_to_task_spec(t, i) for i, t in enumerate(tasks)]
        requests = [self._build_request(item, previous=()) for item in items]
        budgets = self._budgets(None)
        coros = [
            self._run_isolated(
                item.agent, req, _CallContext(item.task, budgets, use_cache=item.use_cache)
            )
            for item, req in zip(items, requests, strict=True)
        ]
        return list(await asyncio.gather(*coros))

    async def warm(
        self, tasks: Iterable[TaskSpec | tuple[str, str] | Mapping[str, Any]]
    ) -> dict[str, int]:
        """Answer each task now unless the cache already holds it, so later calls hit.

        Returns counts: ``already_cached``, ``stored`` and ``failed``.
        """
        if self.response_cache is None:
            raise InvalidArgumentError(
                "the response cache is off (enable_cache=False); warming needs it on"
            )
        results = await self.execute_multiple(tasks)
        cached = sum(1 for r in results if r.success and r.metadata["cached"])
        failed = sum(1 for r in results if not r.success)
        return {
            "already_cached": cached,
            "stored": len(results) - cached - failed,
            "failed": failed,
        }

    async def run_workflow(
        self,
        workflow_name: str,
        task: str,
        *,
        on_step: Callable[[StepEvent], None] | None = None,
        budget: Budget | None = None,
        use_cache: bool = True,
        refresh: bool = False,
    ) -> WorkflowResult:
        """Run a workflow's stages in order, each stage's agents concurrently.

        Each step sees the original task and the outputs of all earlier steps. A failed
        step stops the workflow after its stage completes; so does a step whose request
        could cross ``budget`` (for this run) or the orchestrator's budget: it is not sent,
        and the result's ``error`` says which limit stopped the run. ``use_cache`` and
        ``refresh`` apply to every step, as in :meth:`execute_agent`.
        """
        stages = self.config.workflow(workflow_name)
        self._check_task(task)
        run_id = uuid.uuid4().hex[:12]
        await self._loop_state()  # client set-up (SDK import) is not part of the run's timing
        budgets = self._budgets(BudgetTracker(budget) if budget is not None else None)

        async def call(agent: str, previous: Sequence[tuple[str, str]], step: int) -> AgentResult:
            request = self._build_request(TaskSpec(agent, task), previous=previous)
            ctx = _CallContext(
                task,
                budgets,
                workflow_run=run_id,
                workflow_step=step,
                use_cache=use_cache,
                refresh=refresh,
            )
            return await self._run_isolated(agent, request, ctx)

        return await run_stages(workflow_name, stages, call, run_id=run_id, on_step=on_step)

    # -- internals -------------------------------------------------------------------

    def _check_task(self, task: object) -> str:
        if not isinstance(task, str):
            raise InvalidArgumentError(f"task must be a string, got {type(task).__name__}")
        if not task.strip():
            raise InvalidArgumentError("task is empty: give the agent something to do")
        if len(task) > self.max_task_chars:
            raise InvalidArgumentError(
                f"task is {len(task):,} characters, over the limit of {self.max_task_chars:,}; "
                "split it, or raise max_task_chars= on the orchestrator"
            )
        return task

    def _build_request(self, item: TaskSpec, *, previous: Sequence[tuple[str, str]]) -> Request:
        spec = self.config.agent(validate_agent_name(item.agent))
        task = self._check_task(item.task)
        given = item.max_tokens if item.max_tokens is not None else spec.max_tokens
        max_tokens = _check_max_tokens(given if given is not None else DEFAULT_MAX_TOKENS)
        temperature = item.temperature if item.temperature is not None else spec.temperature
        if temperature is not None and not (
            isinstance(temperature, (int, float)) and 0.0 <= temperature <= 1.0
        ):
            raise InvalidArgumentError(f"temperature must be between 0 and 1, got {temperature!r}")
        model = item.model or spec.model or self.default_model
        if not isinstance(model, str) or not model.strip():
            raise InvalidArgumentError(f"model must be a non-empty string, got {model!r}")
        content = build_user_content(task, previous=previous)
        return Request(
            model=model,
            system=self._system_prompt(spec, item.prompt_cache_ttl),
            messages=({"role": "user", "content": content},),
            max_tokens=max_tokens,
            temperature=temperature,
        )

    def _system_prompt(self, spec: AgentSpec, ttl: CacheTTL | None = None) -> SystemPrompt:
        """The agent's system prompt; re-read only when its files changed (one stat each).

        Prompt-cache TTL: per call, else per agent, else the orchestrator's (default 5m).
        """
        ttl = ttl or spec.cache_ttl or self.prompt_cache_ttl
        stamp = _stamp(spec.file) + (_stamp(spec.contract) if spec.contract else ())
        entry = self._prompts.get((spec.name, ttl))
        if entry is not None and entry.stamp == stamp:
            return entry.prompt
        definition, contract = read_agent_prompt(spec)
        text = definition.strip()
        if contract:
            text += "\n\n## Contract\n\n" + contract.strip()
        prompt = SystemPrompt(text, cache_ttl=ttl)
        self._prompts[(spec.name, ttl)] = _PromptEntry(stamp, prompt)
        return prompt

    def _budgets(self, extra: BudgetTracker | None) -> tuple[BudgetTracker, ...]:
        return tuple(b for b in (self.budget, extra) if b is not None)

    async def _run_isolated(self, agent: str, request: Request, ctx: _CallContext) -> AgentResult:
        """Like :meth:`_run`, but a budget stop becomes a failed result, not an exception."""
        try:
            return await self._run(agent, request, ctx)
        except BudgetExceeded as exc:
            return budget_result(agent, request, exc)

    # -- response cache ------------------------------------------------------------------

    @property
    def response_cache(self) -> ResponseCache | None:
        """The response cache (opened on first use), or None when disabled."""
        if not self.enable_cache:
            return None
        if self._cache is None:
            self._cache = ResponseCache(**self._cache_options)
        return self._cache

    async def _run(self, agent: str, request: Request, ctx: _CallContext) -> AgentResult:
        """Answer from the cache when allowed, else upstream; identical misses share a call."""
        cache = self.response_cache if ctx.use_cache else None
        if cache is None or cache.is_excluded(agent):
            return await self._upstream(agent, request, ctx)
        started = time.perf_counter()
        key = cache_key(request)
        if not ctx.refresh:
            # Checked before admission: a hit never waits for a concurrency slot.
            hit = cache.get(key)
            if hit is not None:
                result = hit_result(agent, request, hit, started)
                self._record(result, None, ctx)
                return result
        state = await self._loop_state()
        leader, shared = await state.flights.run(
            key, lambda: self._upstream(agent, request, ctx, store=(cache, key))
        )
        if not shared:
            return leader
        result = shared_result(agent, request, leader, started)
        if result.success:
            self._record(result, None, ctx)
        return result

    async def _upstream(
        self,
        agent: str,
        request: Request,
        ctx: _CallContext,
        *,
        store: tuple[ResponseCache, str] | None = None,
    ) -> AgentResult:
        state = await self._loop_state()
        reservations = self._reserve(request, ctx.budgets)
        started = time.perf_counter()
        try:
            sent = await self._transport.send(state.client, request, state.gate)
        except APIError as err:
            _release(reservations)
            result = failure_result(agent, request, err, started)
            self._record(result, None, ctx)
            return result
        except BaseException:
            _release(reservations)
            raise
        usage = Usage.from_api(sent.message.usage)
        cost = self.prices.cost(sent.message.model, usage)
        for tracker, reservation in reservations:
            tracker.commit(reservation, usage, cost)
        result = success_result(agent, request, sent, started, usage, cost)
        self._record(result, usage, ctx)
        if store is not None:
            cache, key = store
            value = {
                "message": sent.message.model_dump(mode="json"),
                "usage": asdict(usage),
                "cost": None if cost is None else str(cost),
            }
            cache.set(key, value)
        return result

    def _reserve(
        self, request: Request, budgets: tuple[BudgetTracker, ...]
    ) -> list[tuple[BudgetTracker, Reservation]]:
        """Set the worst case aside on every budget, or raise before anything is sent."""
        if not budgets:
            return []
        texts = [request.system.text]
        for message in request.messages:
            texts.extend(block.get("text", "") for block in message["content"])
        estimate = estimate_input_tokens(texts)
        taken: list[tuple[BudgetTracker, Reservation]] = []
        try:
            for tracker in budgets:
                reservation = tracker.reserve(
                    model=request.model,
                    estimated_input_tokens=estimate,
                    max_output_tokens=request.max_tokens,
                    price_table=self.prices,
                    prompt_cache_ttl=request.system.cache_ttl,
                )
                taken.append((tracker, reservation))
        except BudgetExceeded:
            _release(taken)
            raise
        return taken

    def _record(self, result: AgentResult, usage: Usage | None, ctx: _CallContext) -> None:
        """Ledger row and metrics for one completed call (queued; no disk I/O here)."""
        meta = result.metadata
        outcome = "success" if result.success else "error"
        if self.metrics is not None:
            self.metrics.observe_call(
                agent=result.agent_name,
                model=meta["model"],
                outcome=outcome,
                usage=usage,
                cost=meta["estimated_cost"],
                latency_s=meta["execution_time_ms"] / 1000,
                cached=bool(meta["cached"]),
                retries=max(0, int(meta["attempts"]) - 1),
            )
        if self.enable_tracking:
            self.ledger.record(
                ledger_row(
                    result,
                    usage or _NO_USAGE,
                    task=ctx.task,
                    workflow_run=ctx.workflow_run,
                    workflow_step=ctx.workflow_step,
                )
            )

    # -- usage reports (read the ledger; pending rows are written first) -------------------

    def usage_rows(self, since: float | str | None = None) -> list[LedgerRow]:
        """Ledger rows, optionally since an epoch time or a span like ``"24h"``."""
        start = parse_since(since) if isinstance(since, str) else since
        if self._ledger is not None:
            self._ledger.flush()
        if not self.ledger_path.exists():
            return []
        return self.ledger.rows(since=start)

    def usage_summary(self, since: float | str | None = None) -> Report:
        """Calls, success rate, tokens, cost, savings, latency and hit rate."""
        return summary(self.usage_rows(since), price_table=self.prices)

    def usage_by_agent(self, since: float | str | None = None) -> dict[str, Report]:
        return by_agent(self.usage_rows(since), price_table=self.prices)

    def usage_by_model(self, since: float | str | None = None) -> dict[str, Report]:
        return by_model(self.usage_rows(since), price_table=self.prices)

    def usage_by_run(self, since: float | str | None = None) -> dict[str, Report]:
        """One report per workflow run, oldest first."""
        return by_run(self.usage_rows(since), price_table=self.prices)

    def export_usage(self, fmt: str = "csv", since: float | str | None = None) -> str:
        """The ledger rows as ``csv`` or ``json`` text."""
        if fmt not in ("csv", "json"):
            raise InvalidArgumentError(f"export format must be 'csv' or 'json', got {fmt!r}")
        rows = self.usage_rows(since)
        return export_csv(rows) if fmt == "csv" else export_json(rows)

    @property
    def ledger(self) -> Ledger:
        """The usage ledger in the project's data folder (opened on first use)."""
        if self._ledger is None:
            _keep_out_of_git(self.ledger_path.parent)
            self._ledger = Ledger(self.ledger_path)
        return self._ledger


async def _off_loop(fn: Callable[[], object]) -> None:
    """Run blocking ``fn`` in a thread; inline once the executor is gone (interpreter exit)."""
    try:
        await asyncio.to_thread(fn)
    except RuntimeError:
        fn()


async def _close_when_loop_ends(client: AsyncAnthropic) -> None:
    """Sleeps until cancelled; ``asyncio.run`` cancels it at exit, closing the client."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        await client.close()
        raise


def default_ledger_path(config: ProjectConfig) -> Path:
    """``<.claude folder>/data/usage.db``: the project's data folder."""
    return config.root / "data" / "usage.db"


def _keep_out_of_git(folder: Path) -> None:
    """The data folder lives inside .claude/, which projects commit: ignore its contents."""
    marker = folder / ".gitignore"
    if not marker.exists():
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text("# the usage ledger and caches of claude-force\n*\n", encoding="utf-8")


def _stamp(path: Path) -> tuple[int, ...]:
    try:
        st = path.stat()
    except OSError:
        return (-1,)
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


def _check_options(
    *,
    max_concurrent: object,
    max_task_chars: object,
    max_retries: object,
    timeout_seconds: object,
    deadline_seconds: object,
    cache_ttl_hours: object,
    cache_max_size_mb: object,
) -> None:
    """Refuse bad constructor values at once, naming the option and what is allowed."""
    _check_positive_int("max_concurrent", max_concurrent)
    _check_positive_int("max_task_chars", max_task_chars)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise InvalidArgumentError(f"max_retries must be an integer >= 0, got {max_retries!r}")
    positive = (
        ("timeout_seconds", timeout_seconds, "a number of seconds"),
        ("deadline_seconds", deadline_seconds, "a number of seconds"),
        ("cache_ttl_hours", cache_ttl_hours, "a number of hours"),
        ("cache_max_size_mb", cache_max_size_mb, "a number of megabytes"),
    )
    for name, value, what in positive:
        if value is None and name == "deadline_seconds":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise InvalidArgumentError(f"{name} must be {what} > 0, got {value!r}")


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{name} must be an integer >= 1, got {value!r}")


def _check_max_tokens(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOKENS_LIMIT:
        raise InvalidArgumentError(
            f"max_tokens must be an integer from 1 to {MAX_TOKENS_LIMIT:,}, got {value!r}"
        )
    return value


def _to_task_spec(item: object, index: int) -> TaskSpec:
    if isinstance(item, TaskSpec):
        return item
    if isinstance(item, tuple) and len(item) == 2:
        return TaskSpec(agent=item[0], task=item[1])
    if isinstance(item, Mapping):
        allowed = set(TaskSpec.__dataclass_fields__)
        unknown = set(item) - allowed
        if unknown or "agent" not in item or "task" not in item:
            raise InvalidArgumentError(
                f"tasks[{index}]: a task dict needs 'agent' and 'task' and may have "
                f"{sorted(allowed - {'agent', 'task'})}; got keys {sorted(item)}"
            )
        return TaskSpec(**item)
    raise InvalidArgumentError(
        f"tasks[{index}]: expected an (agent, task) pair, a dict or a TaskSpec, "
        f"got {type(item).__name__}"
    )


def _release(reservations: list[tuple[BudgetTracker, Reservation]]) -> None:
    for tracker, reservation in reservations:
        tracker.release(reservation)
