"""Budgets: limits checked *before* each request, against a worst-case estimate.

A :class:`BudgetTracker` holds what has been spent plus what requests in flight have reserved.
:meth:`BudgetTracker.reserve` checks a request's worst case against the limits and, if it fits,
sets that worst case aside atomically, so several requests of one workflow stage cannot all pass
the check together and then overspend. When a call ends, :meth:`BudgetTracker.commit` replaces its
reservation with the actual usage and cost (once per logical call, after all retries, so a retry
never counts twice), or :meth:`BudgetTracker.release` drops it when nothing was consumed.

Token limits compare *prompt* tokens (plain input + cache writes + cache reads) for input, since a
pre-request estimate cannot know which part the prompt cache will serve.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Literal

from ._errors import BudgetExceeded, InvalidArgumentError
from ._pricing import ModelPrice, PriceTable, format_usd
from ._usage import Usage

__all__ = [
    "Budget",
    "BudgetTracker",
    "Reservation",
    "estimate_input_tokens",
    "worst_case_cost",
]

CacheTTL = Literal["5m", "1h"]
_CHARS_PER_TOKEN = 4


def estimate_input_tokens(text_parts: Iterable[str]) -> int:
    """Approximate prompt tokens as ``ceil(total characters / 4)``.

    Used when the exact ``count_tokens`` endpoint is not called. Four characters per token is
    Anthropic's rule of thumb for English prose; code, non-Latin scripts and the newer tokenizers
    (Claude 4.7 and later count about 30% more tokens for the same text) can exceed it, so prefer
    ``count_tokens`` when a tight cost limit matters.

    >>> estimate_input_tokens(["abcd", "e"])
    2
    """
    chars = sum(len(part) for part in text_parts)
    return math.ceil(chars / _CHARS_PER_TOKEN)


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
            self._open.pop(reservation.key, None)

    # -- internals ----------------------------------------------------------------------------

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
        raise BudgetExceeded(
            f"budget {name}={show(limit)} would be crossed: spent {show(spent)}{in_flight}, "
            f"and the next request to {model!r} could use up to {show(estimate)}. "
            f"Raise {name}, lower max_tokens, or shorten the task.",
            spent=self._spent_dict(),
        )

    def _refuse_unpriced(self, model: str, price_table: PriceTable, limit: Decimal) -> None:
        reason = price_table.unpriced_reason(model) or "it is not in the price table"
        raise BudgetExceeded(
            f"cannot bound the cost of a request to {model!r}: it has no price ({reason}). "
            f"A cost limit is set (max_cost_usd={_usd(limit)}), so the request was not sent. "
            "Add the model's price to a JSON file named by CLAUDE_FORCE_PRICING, or run "
            "without max_cost_usd.",
            spent=self._spent_dict(),
        )


def _usd(amount: Decimal | int) -> str:
    return format_usd(Decimal(amount))


def _count(amount: Decimal | int) -> str:
    return f"{int(amount):,}"
