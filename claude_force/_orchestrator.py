"""The async core: every decision about a call is made here, once."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._admission import ConcurrencyGate
from ._config import (
    DEFAULT_MODEL,
    AgentSpec,
    ProjectConfig,
    find_config,
    load_config,
    read_agent_prompt,
    validate_agent_name,
)
from ._errors import APIError, InvalidArgumentError, UsageError
from ._request import CacheTTL, Request, SystemPrompt, build_user_content
from ._results import AgentResult, WorkflowResult
from ._transport import Sent, Transport
from ._workflow import StepEvent, run_stages

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

__all__ = ["AsyncAgentOrchestrator", "TaskSpec"]

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


@dataclass(slots=True)
class _LoopState:
    loop: asyncio.AbstractEventLoop
    client: AsyncAnthropic
    gate: ConcurrencyGate
    keeper: asyncio.Task[None]


@dataclass(frozen=True, slots=True)
class _PromptEntry:
    stamp: tuple[int, ...]
    prompt: SystemPrompt


class AsyncAgentOrchestrator:
    """Runs agents from ``.claude/claude.json`` against the Claude Messages API.

    >>> orch = AsyncAgentOrchestrator(config_path=".claude/claude.json")  # doctest: +SKIP
    >>> result = await orch.execute_agent("code-reviewer", "Review utils.py")  # doctest: +SKIP

    ``max_retries`` counts retries after the first attempt (3 = up to four attempts);
    ``timeout_seconds`` bounds each attempt and ``deadline_seconds`` (optional) the whole
    call including retries. Usable with ``async with`` and across separate
    ``asyncio.run`` calls. The response cache, usage tracking and memory flags are
    accepted; until those features are enabled in this version they are honoured as off.
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
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        _check_positive_int("max_concurrent", max_concurrent)
        _check_positive_int("max_task_chars", max_task_chars)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidArgumentError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        for name, value in (
            ("timeout_seconds", timeout_seconds),
            ("deadline_seconds", deadline_seconds),
        ):
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise InvalidArgumentError(f"{name} must be a number of seconds > 0, got {value!r}")
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
        self._prompts: dict[str, _PromptEntry] = {}

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
        """Close the HTTP client of the current event loop. Safe to call twice."""
        state, self._state = self._state, None
        if state is None:
            return
        state.keeper.cancel()
        if state.loop is asyncio.get_running_loop():
            await state.client.close()

    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._state
        if state is not None and state.loop is loop:
            return state
        if not self._api_key:
            raise UsageError(
                "no API key: set the ANTHROPIC_API_KEY environment variable or pass "
                "api_key=...; to try claude-force without a key, run `claude-force demo`"
            )
        client = self._transport.make_client()
        gate = ConcurrencyGate(self.max_concurrent, adaptive=self._adaptive)
        keeper = loop.create_task(_close_when_loop_ends(client))
        self._state = _LoopState(loop, client, gate, keeper)
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
    ) -> AgentResult:
        """Run one agent on a task. Usage errors raise; run failures return success=False."""
        item = TaskSpec(agent_name, task, model, max_tokens, temperature, use_memory, use_cache)
        request = self._build_request(item, previous=())
        return await self._run(item.agent, request)

    async def execute_multiple(
        self, tasks: Iterable[TaskSpec | tuple[str, str] | Mapping[str, Any]]
    ) -> list[AgentResult]:
        """Run many calls concurrently under ``max_concurrent``; results in input order.

        Every item is validated before anything is sent; one run failure never cancels
        the others.
        """
        items = [_to_task_spec(t, i) for i, t in enumerate(tasks)]
        requests = [self._build_request(item, previous=()) for item in items]
        coros = [self._run(item.agent, req) for item, req in zip(items, requests, strict=False)]
        return list(await asyncio.gather(*coros))

    async def run_workflow(
        self,
        workflow_name: str,
        task: str,
        *,
        on_step: Callable[[StepEvent], None] | None = None,
    ) -> WorkflowResult:
        """Run a workflow's stages in order, each stage's agents concurrently.

        Each step sees the original task and the outputs of all earlier steps. A failed
        step stops the workflow after its stage completes.
        """
        stages = self.config.workflow(workflow_name)
        self._check_task(task)
        run_id = uuid.uuid4().hex[:12]
        self._loop_state()  # client set-up (SDK import) is not part of the run's timing

        async def call(agent: str, previous: Sequence[tuple[str, str]]) -> AgentResult:
            request = self._build_request(TaskSpec(agent, task), previous=previous)
            return await self._run(agent, request)

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
            system=self._system_prompt(spec),
            messages=({"role": "user", "content": content},),
            max_tokens=max_tokens,
            temperature=temperature,
        )

    def _system_prompt(self, spec: AgentSpec) -> SystemPrompt:
        """The agent's system prompt; re-read only when its files changed (one stat each)."""
        stamp = _stamp(spec.file) + (_stamp(spec.contract) if spec.contract else ())
        entry = self._prompts.get(spec.name)
        if entry is not None and entry.stamp == stamp:
            return entry.prompt
        definition, contract = read_agent_prompt(spec)
        text = definition.strip()
        if contract:
            text += "\n\n## Contract\n\n" + contract.strip()
        ttl = spec.cache_ttl or self.prompt_cache_ttl
        prompt = SystemPrompt(text, cache_ttl=ttl)
        self._prompts[spec.name] = _PromptEntry(stamp, prompt)
        return prompt

    async def _run(self, agent: str, request: Request) -> AgentResult:
        state = self._loop_state()
        started = time.perf_counter()
        try:
            sent = await self._transport.send(state.client, request, state.gate)
        except APIError as err:
            return _failure(agent, request, err, started)
        return _success(agent, request, sent, started)


async def _close_when_loop_ends(client: AsyncAnthropic) -> None:
    """Sleeps until cancelled; ``asyncio.run`` cancels it at exit, closing the client."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        await client.close()
        raise


def _stamp(path: Path) -> tuple[int, ...]:
    try:
        st = path.stat()
    except OSError:
        return (-1,)
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


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


def _base_metadata(request: Request, started: float) -> dict[str, Any]:
    return {
        "model": request.model,
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "execution_time_ms": (time.perf_counter() - started) * 1000,
        "cached": False,
        "attempts": 0,
        "request_id": None,
        "stop_reason": None,
        "estimated_cost": None,
    }


def _success(agent: str, request: Request, sent: Sent, started: float) -> AgentResult:
    message = sent.message
    usage = message.usage
    text = "".join(getattr(block, "text", "") for block in message.content)
    meta = _base_metadata(request, started)
    meta.update(
        model=message.model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
        cache_read_input_tokens=usage.cache_read_input_tokens or 0,
        attempts=sent.attempts,
        request_id=sent.request_id,
        stop_reason=message.stop_reason,
        message_id=message.id,
    )
    return AgentResult(agent_name=agent, success=True, output=text, metadata=meta)


def _failure(agent: str, request: Request, err: APIError, started: float) -> AgentResult:
    meta = _base_metadata(request, started)
    meta.update(attempts=err.attempts, request_id=err.request_id, error=err.to_dict())
    return AgentResult(agent_name=agent, success=False, output="", metadata=meta, errors=[str(err)])
