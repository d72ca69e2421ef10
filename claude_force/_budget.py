"""Budgets: limits checked *before* each request, against a bound that cannot undershoot.

A :class:`BudgetTracker` holds what has been spent plus what requests in flight have reserved.
:meth:`BudgetTracker.reserve` checks a request's worst case against the limits and, if it fits,
sets that worst case aside atomically, so several requests of one workflow stage cannot all pass
the check together and then overspend. When a call ends, :meth:`BudgetTracker.commit` replaces its
reservation with the actual usage and cost (once per logical call, after all retries, so a retry
never counts twice), or :meth:`BudgetTracker.release` drops it when nothing was consumed.

The worst case of the input is :func:`input_token_bound`: the UTF-8 bytes of every text sent,
since a byte-level BPE token always covers at least one byte. Four characters a token, the
English rule of thumb, undershoots two to four times on Chinese, Japanese, Russian, JSON or hex;
bytes never do. When that bound does not fit what remains, :func:`reserve_all` asks the
service's free ``count_tokens`` endpoint for the exact figure and decides on that, re-checking
under the tracker's lock, so concurrent calls can never together reserve more than a limit.

Token limits compare *prompt* tokens (plain input + cache writes + cache reads) for input, since a
pre-request bound cannot know which part the prompt cache will serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Literal, Protocol

from ._attempt_bounds import bounded
from ._errors import APIError, BudgetExceeded, InvalidArgumentError
from ._pricing import ModelPrice, PriceTable, format_usd
from ._request import Request, canonical_json
from ._usage import Usage

__all__ = [
    "FRAMING_TOKENS_PER_MESSAGE",
    "FRAMING_TOKENS_PER_REQUEST",
    "TOOL_USE_TOKENS",
    "Budget",
    "BudgetTracker",
    "CallClock",
    "CountTokens",
    "Reservation",
    "input_token_bound",
    "release_all",
    "reserve_all",
    "reserve_for",
    "trackers_for",
    "utf8_bytes",
    "worst_case_cost",
]

CacheTTL = Literal["5m", "1h"]
CountTokens = Callable[[Request], Awaitable[int]]

#: Tokens the service adds around the text it is given (turn and block markers); generous,
#: because the bound must not undershoot.
FRAMING_TOKENS_PER_REQUEST = 16
FRAMING_TOKENS_PER_MESSAGE = 8
#: With tools, the service prepends its own tool-use instructions (a few hundred tokens).
TOOL_USE_TOKENS = 1024
# Blocks whose tokens their JSON cannot bound: an image or a PDF named by URL or file id is a
# few bytes of JSON but may be thousands of tokens. Only count_tokens can size them.
_UNBOUNDED_BLOCK_TYPES = frozenset({"image", "document", "container_upload"})


def utf8_bytes(text_parts: Iterable[str]) -> int:
    """Total UTF-8 bytes of ``text_parts``: an upper bound on their tokens.

    Byte-level BPE tokenizers (Claude's among them) never make a token of less than one byte.
    Lone surrogates, legal in JSON escapes, count as the three bytes they are sent as.

    >>> utf8_bytes(["abcd", "\u4e2d\u6587"])
    10
    """
    return sum(len(part.encode("utf-8", "surrogatepass")) for part in text_parts)


def input_token_bound(request: Request) -> int | None:
    """Prompt tokens ``request`` cannot exceed, or None when only ``count_tokens`` can tell.

    The UTF-8 bytes of the system prompt, of every tool definition (its JSON) and of every
    message block (a text block by its text, any other block by its JSON), plus the framing the
    service adds. None when a block holds an image or a document, whose size its JSON does
    not show.
    """
    parts = [request.system.text]
    parts.extend(canonical_json(tool) for tool in request.tools)
    for message in request.messages:
        content = message["content"]
        if isinstance(content, str):
            parts.append(content)
            continue
        for block in content:
            if _holds_unbounded_block(block):
                return None
            text = block.get("text")
            is_text = block.get("type") == "text" and isinstance(text, str)
            parts.append(text if is_text else canonical_json(block))
    framing = FRAMING_TOKENS_PER_REQUEST + FRAMING_TOKENS_PER_MESSAGE * len(request.messages)
    if request.tools:
        framing += TOOL_USE_TOKENS
    return utf8_bytes(parts) + framing


def _holds_unbounded_block(value: object) -> bool:
    if isinstance(value, Mapping):
        if value.get("type") in _UNBOUNDED_BLOCK_TYPES:
            return True
        return any(_holds_unbounded_block(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_unbounded_block(v) for v in value)
    return False


def worst_case_cost(
    price: ModelPrice,
    estimated_input_tokens: int,
    max_output_tokens: int,
    *,
    prompt_cache_ttl: CacheTTL | None = None,
) -> Decimal:
    """Upper bound for one request: every prompt token at the input rate, ``max_tokens`` output.

    The long-context tier applies when the estimate exceeds its threshold. With a prompt-cache
    breakpoint (``prompt_cache_ttl``), each prompt token is priced at the dearer of the input and
    cache-write rates, since the whole prefix may be written. Batch discounts are ignored.
    """
    tier = price.tier(estimated_input_tokens)
    input_rate = tier.input
    if prompt_cache_ttl == "5m":
        input_rate = max(input_rate, tier.cache_write_5m)
    elif prompt_cache_ttl == "1h":
        input_rate = max(input_rate, tier.cache_write_1h)
    total = Decimal(estimated_input_tokens) * input_rate + Decimal(max_output_tokens) * tier.output
    return total / Decimal(1_000_000)


@dataclass(frozen=True, kw_only=True)
class Budget:
    """Limits for a run; ``None`` means unlimited.

    ``max_cost_usd`` takes a ``Decimal``, a decimal string (``"2.50"``) or an int. Floats are
    refused: ``0.1`` is not exactly a tenth, and a budget should say exactly what it means.
    After construction ``max_cost_usd`` is always a ``Decimal`` or ``None``.
    """

    max_cost_usd: Decimal | str | int | None = None
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    max_requests: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_cost_usd", _money_limit(self.max_cost_usd))
        for name in ("max_input_tokens", "max_output_tokens", "max_requests"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 0
            ):
                raise InvalidArgumentError(
                    f"Budget.{name} must be a non-negative whole number or None, got {value!r}"
                )

    @property
    def cost_limit(self) -> Decimal | None:
        """``max_cost_usd`` as the ``Decimal`` it was normalised to."""
        value = self.max_cost_usd
        return value if isinstance(value, Decimal) else None

    @property
    def is_unlimited(self) -> bool:
        return (
            self.max_cost_usd is None
            and self.max_input_tokens is None
            and self.max_output_tokens is None
            and self.max_requests is None
        )


def _money_limit(value: object) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, float | bool):
        raise InvalidArgumentError(
            f"Budget.max_cost_usd must not be a {type(value).__name__} ({value!r}); "
            f'pass Decimal("{value}") or the string "{value}" so the limit is exact'
        )
    if not isinstance(value, Decimal | str | int):
        raise InvalidArgumentError(
            f"Budget.max_cost_usd must be a Decimal, a decimal string or an int, got {value!r}"
        )
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise InvalidArgumentError(
            f'Budget.max_cost_usd {value!r} is not a number; write dollars like "2.50"'
        ) from None
    if not amount.is_finite() or amount < 0:
        raise InvalidArgumentError(
            f"Budget.max_cost_usd must be a finite amount of at least 0, got {value!r}"
        )
    return amount


@dataclass(frozen=True, slots=True)
class Reservation:
    """The worst case set aside for one request in flight."""

    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal | None
    key: int = field(repr=False)


@dataclass(slots=True)
class _Totals:
    cost_usd: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    unpriced_requests: int = 0


class BudgetTracker:
    """Spending against one :class:`Budget`, safe to share between threads and tasks."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self._lock = threading.Lock()
        self._spent = _Totals()
        self._open: dict[int, Reservation] = {}
        self._keys = itertools.count(1)
        # Calls refused only because of what requests in flight set aside wait for one of
        # those to settle (their real cost is usually far below their worst case).
        self._settled = 0  # reservations committed or released so far
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    @property
    def spent(self) -> dict[str, Decimal | int]:
        """What completed calls used: cost_usd, input_tokens, output_tokens, requests."""
        with self._lock:
            return self._spent_dict()

    @property
    def reserved(self) -> dict[str, Decimal | int]:
        """What requests in flight have set aside (their worst cases)."""
        with self._lock:
            r = self._reserved_totals()
            return {
                "cost_usd": r.cost_usd,
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
                "requests": r.requests,
            }

    def check(
        self,
        *,
        model: str,
        estimated_input_tokens: int,
        max_output_tokens: int,
        price_table: PriceTable,
        prompt_cache_ttl: CacheTTL | None = None,
    ) -> None:
        """Raise :class:`BudgetExceeded` if this request's worst case could cross a limit."""
        with self._lock:
            self._check_locked(
                model, estimated_input_tokens, max_output_tokens, price_table, prompt_cache_ttl
            )

    def reserve(
        self,
        *,
        model: str,
        estimated_input_tokens: int,
        max_output_tokens: int,
        price_table: PriceTable,
        prompt_cache_ttl: CacheTTL | None = None,
    ) -> Reservation:
        """:meth:`check`, then set the worst case aside in the same atomic step."""
        with self._lock:
            cost = self._check_locked(
                model, estimated_input_tokens, max_output_tokens, price_table, prompt_cache_ttl
            )
            reservation = Reservation(
                model, estimated_input_tokens, max_output_tokens, cost, next(self._keys)
            )
            self._open[reservation.key] = reservation
            return reservation

    def commit(self, reservation: Reservation, usage: Usage, cost_usd: Decimal | None) -> None:
        """Replace ``reservation`` by what the call actually used (once per logical call).

        ``cost_usd`` is ``None`` for an unpriced model (only possible without a cost limit).
        """
        with self._lock:
            if self._open.pop(reservation.key, None) is None:
                raise InvalidArgumentError(
                    f"reservation for {reservation.model!r} was already committed or released; "
                    "commit once per logical call, after the last retry"
                )
            self._wake_locked()
            s = self._spent
            s.input_tokens += usage.prompt_tokens
            s.output_tokens += usage.output_tokens
            s.requests += 1
            if cost_usd is None:
                s.unpriced_requests += 1
            else:
                s.cost_usd += cost_usd

    def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose call consumed nothing; a no-op once settled."""
        with self._lock:
            if self._open.pop(reservation.key, None) is not None:
                self._wake_locked()

    async def settled_since(self, settled: int) -> None:
        """Return once a reservation settled after the count ``settled`` (at once if one
        already has): a refused call that only in-flight requests kept out tries again."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._settled > settled:
                return
            self._waiters.append((loop, waiter))
        await waiter

    # -- internals ----------------------------------------------------------------------------

    def _wake_locked(self) -> None:
        self._settled += 1
        waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                loop.call_soon_threadsafe(_set_done, waiter)

    def _spent_dict(self) -> dict[str, Decimal | int]:
        s = self._spent
        return {
            "cost_usd": s.cost_usd,
            "input_tokens": s.input_tokens,
            "output_tokens": s.output_tokens,
            "requests": s.requests,
        }

    def _reserved_totals(self) -> _Totals:
        r = _Totals(requests=len(self._open))
        for res in self._open.values():
            r.input_tokens += res.input_tokens
            r.output_tokens += res.output_tokens
            r.cost_usd += res.cost_usd or Decimal(0)
        return r

    def _check_locked(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        price_table: PriceTable,
        prompt_cache_ttl: CacheTTL | None,
    ) -> Decimal | None:
        for name, value in (
            ("estimated_input_tokens", input_tokens),
            ("max_output_tokens", output_tokens),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgumentError(f"{name} must be a non-negative int, got {value!r}")
        price = price_table.price(model)
        cost = (
            None
            if price is None
            else worst_case_cost(
                price, input_tokens, output_tokens, prompt_cache_ttl=prompt_cache_ttl
            )
        )
        b = self.budget
        reserved = self._reserved_totals()
        spent = self._spent
        limit = b.cost_limit
        if limit is not None:
            if cost is None:
                self._refuse_unpriced(model, price_table, limit)
            else:
                self._enforce("max_cost_usd", limit, spent.cost_usd, reserved.cost_usd, cost, model)
        self._enforce(
            "max_input_tokens",
            b.max_input_tokens,
            spent.input_tokens,
            reserved.input_tokens,
            input_tokens,
            model,
        )
        self._enforce(
            "max_output_tokens",
            b.max_output_tokens,
            spent.output_tokens,
            reserved.output_tokens,
            output_tokens,
            model,
        )
        self._enforce("max_requests", b.max_requests, spent.requests, reserved.requests, 1, model)
        return cost

    def _enforce(
        self,
        name: str,
        limit: Decimal | int | None,
        spent: Decimal | int,
        reserved: Decimal | int,
        estimate: Decimal | int,
        model: str,
    ) -> None:
        if limit is None or spent + reserved + estimate <= limit:
            return
        show = _usd if name == "max_cost_usd" else _count
        in_flight = f" (+ {show(reserved)} reserved by requests in flight)" if reserved else ""
        refused = BudgetExceeded(
            f"budget {name}={show(limit)} would be crossed: spent {show(spent)}{in_flight}, "
            f"and the next request to {model!r} could use up to {show(estimate)}. "
            f"Raise {name}, lower max_tokens, or shorten the task.",
            spent=self._spent_dict(),
        )
        if reserved and spent + estimate <= limit:
            refused._wait_for = (self, self._settled)  # fits once in-flight ones settle
        raise refused

    def _refuse_unpriced(self, model: str, price_table: PriceTable, limit: Decimal) -> None:
        reason = price_table.unpriced_reason(model) or "it is not in the price table"
        raise BudgetExceeded(
            f"cannot bound the cost of a request to {model!r}: it has no price ({reason}). "
            f"A cost limit is set (max_cost_usd={_usd(limit)}), so the request was not sent. "
            "Add the model's price to a JSON file named by CLAUDE_FORCE_PRICING, or run "
            "without max_cost_usd.",
            spent=self._spent_dict(),
        )


def trackers_for(mine: BudgetTracker | None, extra: Budget | None) -> tuple[BudgetTracker, ...]:
    """The trackers a call answers to: the orchestrator's (``mine``), and one for ``extra``."""
    own = () if mine is None else (mine,)
    return own if extra is None else (*own, BudgetTracker(extra))


class CallClock(Protocol):
    """What :func:`reserve_for` needs of the transport: its exact count and its clock."""

    async def count_tokens(self, request: Request) -> int: ...

    def clock(self) -> float: ...

    def deadline_from(self, since: float) -> float | None: ...


async def reserve_for(
    trackers: Sequence[BudgetTracker],
    request: Request,
    prices: PriceTable,
    sender: CallClock,
    begun: float,
) -> list[tuple[BudgetTracker, Reservation]]:
    """:func:`reserve_all` for a call begun at ``begun`` on ``sender``'s clock (its deadline
    bounds a wait), counting with ``sender``; no trackers: nothing to reserve, and no wait."""
    if not trackers:
        return []
    until = (sender.deadline_from(begun), sender.clock)
    return await reserve_all(trackers, request, prices, sender.count_tokens, until=until)


async def reserve_all(
    trackers: Sequence[BudgetTracker],
    request: Request,
    prices: PriceTable,
    count_tokens: CountTokens,
    *,
    wait: bool = True,
    until: tuple[float | None, Callable[[], float]] = (None, time.monotonic),
) -> list[tuple[BudgetTracker, Reservation]]:
    """Reserve ``request``'s worst case on every tracker, or raise before anything is sent.

    A request kept out only by what requests in flight set aside waits (``wait``) for one of
    them to settle, then tries again: their real cost is usually far below their worst case.
    It is refused at once when what was spent leaves no room for it, and when ``until`` (the
    call's deadline, or None, and the clock it is on) passes while it waits.

    The input is first taken at :func:`input_token_bound`. Only when that does not fit, and a
    smaller input would, is ``count_tokens`` awaited for the exact figure; the reservation is then
    checked again under each tracker's lock, so what others reserved meanwhile counts. If the
    count fails, the bound decides (the request is refused) and the error says so. Release the
    result with :func:`release_all`, or commit each reservation once the call ends.
    """
    while True:
        try:
            return await _reserve_all_once(trackers, request, prices, count_tokens)
        except BudgetExceeded as exc:
            if exc._wait_for is None or not wait:
                raise
            tracker, settled = exc._wait_for
            deadline, clock = until
            left = None if deadline is None else deadline - clock()
            if left is not None and left <= 0:
                raise
            try:
                # Not asyncio.wait_for: before Python 3.12 it can drop a cancel that comes as
                # the settlement does, and the cancelled call would go on to be sent.
                if left is None:
                    await tracker.settled_since(settled)
                else:
                    await bounded(tracker.settled_since(settled), left)
            except asyncio.TimeoutError:
                raise BudgetExceeded(
                    f"{exc} It waited for requests in flight to settle until the call's "
                    "deadline (deadline_seconds) passed.",
                    spent=exc.spent,
                ) from None


async def _reserve_all_once(
    trackers: Sequence[BudgetTracker],
    request: Request,
    prices: PriceTable,
    count_tokens: CountTokens,
) -> list[tuple[BudgetTracker, Reservation]]:
    if not trackers:
        return []
    bound = input_token_bound(request)
    refused: BudgetExceeded | None = None
    if bound is not None or not _limits_input(trackers):
        try:
            return _reserve_each(trackers, request, bound or 0, prices)
        except BudgetExceeded as exc:
            if not _smaller_input_could_fit(trackers, request, prices):
                raise
            refused = exc
    exact = await _count_exactly(trackers, request, count_tokens, refused, bound)
    if refused is not None and bound is not None and exact >= bound:
        raise refused
    try:
        return _reserve_each(trackers, request, exact, prices)
    except BudgetExceeded as exc:
        counted = BudgetExceeded(
            f"{exc} (The input was counted exactly by count_tokens: {exact:,} tokens.)",
            spent=exc.spent,
        )
        counted._wait_for = exc._wait_for
        raise counted from None


def _set_done(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def release_all(reservations: Iterable[tuple[BudgetTracker, Reservation]]) -> None:
    """Drop every reservation of a call that consumed nothing (idempotent)."""
    for tracker, reservation in reservations:
        tracker.release(reservation)


def _reserve_each(
    trackers: Sequence[BudgetTracker], request: Request, input_tokens: int, prices: PriceTable
) -> list[tuple[BudgetTracker, Reservation]]:
    """Reserve on each tracker in turn; on a refusal, give back what was already taken."""
    taken: list[tuple[BudgetTracker, Reservation]] = []
    try:
        for tracker in trackers:
            reservation = tracker.reserve(
                model=request.model,
                estimated_input_tokens=input_tokens,
                max_output_tokens=request.max_tokens,
                price_table=prices,
                prompt_cache_ttl=request.system.cache_ttl,
            )
            taken.append((tracker, reservation))
    except BudgetExceeded:
        release_all(taken)
        raise
    return taken


def _limits_input(trackers: Sequence[BudgetTracker]) -> bool:
    """Whether any limit depends on the input's size (cost or input tokens)."""
    return any(
        t.budget.cost_limit is not None or t.budget.max_input_tokens is not None for t in trackers
    )


def _smaller_input_could_fit(
    trackers: Sequence[BudgetTracker], request: Request, prices: PriceTable
) -> bool:
    """Whether an exact count could change the answer: the request fits with no input at all.

    When it does not (``max_requests`` reached, ``max_tokens`` too large, an unpriced model),
    asking ``count_tokens`` would only add a round trip.
    """
    try:
        for tracker in trackers:
            tracker.check(
                model=request.model,
                estimated_input_tokens=0,
                max_output_tokens=request.max_tokens,
                price_table=prices,
                prompt_cache_ttl=request.system.cache_ttl,
            )
    except BudgetExceeded:
        return False
    return True


async def _count_exactly(
    trackers: Sequence[BudgetTracker],
    request: Request,
    count_tokens: CountTokens,
    refused: BudgetExceeded | None,
    bound: int | None,
) -> int:
    """The exact input from ``count_tokens``; its failure is a refusal that says why."""
    try:
        exact = await count_tokens(request)
    except APIError as err:
        if refused is not None:
            raise BudgetExceeded(
                f"{refused} The exact input size could not be fetched from count_tokens ({err}), "
                f"so the request was judged by its safe bound of {bound:,} tokens (its UTF-8 "
                "bytes) and not sent; retry when count_tokens answers.",
                spent=refused.spent,
            ) from err
        raise BudgetExceeded(
            f"cannot bound the input of a request to {request.model!r}: it holds an image or a "
            f"document, whose size only count_tokens can tell, and count_tokens failed ({err}). "
            "A budget limits cost or input tokens, so the request was not sent; retry when "
            "count_tokens answers, or run without max_cost_usd and max_input_tokens.",
            spent=trackers[0].spent,
        ) from err
    if isinstance(exact, bool) or not isinstance(exact, int) or exact < 0:
        raise InvalidArgumentError(
            f"count_tokens must return a whole number of tokens >= 0, got {exact!r}"
        )
    return exact


def _usd(amount: Decimal | int) -> str:
    return format_usd(Decimal(amount))


def _count(amount: Decimal | int) -> str:
    return f"{int(amount):,}"
