from __future__ import annotations

import asyncio
import threading
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from claude_force._budget import (
    FRAMING_TOKENS_PER_MESSAGE,
    FRAMING_TOKENS_PER_REQUEST,
    TOOL_USE_TOKENS,
    Budget,
    BudgetTracker,
    input_token_bound,
    release_all,
    reserve_all,
    utf8_bytes,
    worst_case_cost,
)
from claude_force._errors import APIError, BudgetExceeded, InvalidArgumentError
from claude_force._pricing import PriceTable
from claude_force._request import Request, SystemPrompt, canonical_json
from claude_force._usage import Usage
from claude_force.testing._tokens import PromptShape, prompt_shape


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return PriceTable.load()


# -- Budget validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [("2.50", Decimal("2.50")), (3, Decimal(3)), (Decimal("0.1"), Decimal("0.1")), (None, None)],
)
def test_money_limit_normalised_to_decimal(given: Any, expected: Decimal | None) -> None:
    b = Budget(max_cost_usd=given)
    assert b.max_cost_usd == expected and b.cost_limit == expected
    assert b.max_cost_usd is None or isinstance(b.max_cost_usd, Decimal)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"max_cost_usd": 0.5}, r'Decimal\("0.5"\)'),
        ({"max_cost_usd": "-1"}, "at least 0"),
        ({"max_cost_usd": "ten"}, "not a number"),
        ({"max_cost_usd": "Infinity"}, "finite"),
        ({"max_cost_usd": True}, "bool"),
        ({"max_input_tokens": -1}, "max_input_tokens"),
        ({"max_output_tokens": 1.5}, "max_output_tokens"),
        ({"max_requests": -3}, "max_requests"),
    ],
)
def test_budget_rejects_bad_limits(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        Budget(**kw)


def test_budget_is_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        Budget("1")  # type: ignore[call-arg]
    b = Budget(max_requests=1)
    with pytest.raises(AttributeError):
        b.max_requests = 2  # type: ignore[misc]
    assert not b.is_unlimited and Budget().is_unlimited


# -- the input bound ---------------------------------------------------------------------------

FRAMING_ONE_MESSAGE = FRAMING_TOKENS_PER_REQUEST + FRAMING_TOKENS_PER_MESSAGE


def one_message(
    *content: dict[str, Any],
    system: str = "abcd",
    tools: tuple[dict[str, Any], ...] = (),
    model: str = "claude-haiku-4-5",
    max_tokens: int = 1_000,
) -> Request:
    return Request(
        model=model,
        system=SystemPrompt(system, cache_ttl=None),
        messages=({"role": "user", "content": list(content)},),
        max_tokens=max_tokens,
        tools=tools,
    )


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


@pytest.mark.parametrize(
    ("parts", "expected"),
    [([], 0), (["a"], 1), (["abcd", "e"], 5), (["\u4e2d\u6587"], 6), (["\u043c\u0438\u0440"], 6)],
)
def test_utf8_bytes(parts: list[str], expected: int) -> None:
    assert utf8_bytes(parts) == expected


def test_input_bound_counts_every_text_in_bytes_plus_framing() -> None:
    # system 4 bytes + "\u4e2d\u6587" 6 bytes
    assert input_token_bound(one_message(text("\u4e2d\u6587"))) == 10 + FRAMING_ONE_MESSAGE
    tool = {"name": "t", "input_schema": {"type": "object"}}
    with_tool = one_message(text("x"), tools=(tool,))
    tool_bytes = len(canonical_json(tool).encode())
    assert input_token_bound(with_tool) == 5 + tool_bytes + FRAMING_ONE_MESSAGE + TOOL_USE_TOKENS
    result = {"type": "tool_result", "tool_use_id": "tu_1", "content": "ok"}
    expected = 4 + len(canonical_json(result).encode()) + FRAMING_ONE_MESSAGE
    assert input_token_bound(one_message(result)) == expected


def test_an_image_or_document_has_no_bound() -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    assert input_token_bound(one_message(text("look"), image)) is None
    nested = {"type": "tool_result", "tool_use_id": "tu_1", "content": [image]}
    assert input_token_bound(one_message(nested)) is None


@given(st.text(max_size=300), st.text(max_size=100))
def test_the_bound_never_undershoots_the_simulator(task: str, system: str) -> None:
    request = one_message(text(task), system=system)
    shape = prompt_shape(request.create_kwargs())
    assert isinstance(shape, PromptShape)
    bound = input_token_bound(request)
    assert bound is not None and shape.input_tokens <= bound


def test_worst_case_cost_hand_computed(prices: PriceTable) -> None:
    sonnet = prices.models["claude-sonnet-4-5"]
    # 10,000 x $3 + 4,000 x $15 per MTok = 0.03 + 0.06
    assert worst_case_cost(sonnet, 10_000, 4_000) == Decimal("0.09")
    # a 1h cache breakpoint may write the whole prompt at $6: 0.06 + 0.06
    assert worst_case_cost(sonnet, 10_000, 4_000, prompt_cache_ttl="1h") == Decimal("0.12")
    # above 200k the long-context rates apply to input and output: 250,000 x 6 + 1,000 x 22.50
    assert worst_case_cost(sonnet, 250_000, 1_000) == Decimal("1.5225")
    haiku55 = prices.models["claude-haiku-5-5"]
    # 150,000 x $0.50 + 2,000 x $2.50 (above 100k)
    assert worst_case_cost(haiku55, 150_000, 2_000) == Decimal("0.08")


# -- tracker -----------------------------------------------------------------------------------

REQ: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "estimated_input_tokens": 10_000,
    "max_output_tokens": 4_000,
}


def test_unlimited_budget_always_passes(prices: PriceTable) -> None:
    t = BudgetTracker(Budget())
    for _ in range(3):
        r = t.reserve(**REQ, price_table=prices)
        t.commit(r, Usage(input_tokens=10_000, output_tokens=4_000), Decimal("0.09"))
    assert t.spent == {
        "cost_usd": Decimal("0.27"),
        "input_tokens": 30_000,
        "output_tokens": 12_000,
        "requests": 3,
    }


def test_request_whose_worst_case_alone_crosses_the_limit_is_refused(prices: PriceTable) -> None:
    t = BudgetTracker(Budget(max_cost_usd="0.089999"))  # the worst case is 0.09
    with pytest.raises(BudgetExceeded, match=r"spent \$0\.00"):
        t.reserve(**REQ, price_table=prices)
    assert t.reserved["requests"] == 0


def test_exceeded_message_names_limit_spent_and_estimate(prices: PriceTable) -> None:
    t = BudgetTracker(Budget(max_cost_usd="0.10"))
    r = t.reserve(**REQ, price_table=prices)
    t.commit(r, Usage(input_tokens=9_000, output_tokens=500), Decimal("0.0345"))
    with pytest.raises(BudgetExceeded) as info:
        t.check(**REQ, price_table=prices)
    msg = str(info.value)
    assert "max_cost_usd=$0.10" in msg
    assert "spent $0.0345" in msg
    assert "up to $0.09" in msg
    assert "claude-sonnet-4-5" in msg
    assert info.value.spent == {
        "cost_usd": Decimal("0.0345"),
        "input_tokens": 9_000,
        "output_tokens": 500,
        "requests": 1,
    }


def test_limit_reached_exactly_is_allowed(prices: PriceTable) -> None:
    t = BudgetTracker(Budget(max_cost_usd="0.09", max_requests=1))
    t.reserve(**REQ, price_table=prices)


def test_reservations_stop_a_stage_from_overspending_together(prices: PriceTable) -> None:
    # 0.09 each: two fit under 0.20, the third would not, even though nothing is spent yet.
    t = BudgetTracker(Budget(max_cost_usd="0.20"))
    first = t.reserve(**REQ, price_table=prices)
    t.reserve(**REQ, price_table=prices)
    with pytest.raises(BudgetExceeded, match="reserved by requests in flight"):
        t.reserve(**REQ, price_table=prices)
    assert t.reserved["cost_usd"] == Decimal("0.18")
    # the first finishes far under its worst case: its slack frees room for another
    t.commit(first, Usage(input_tokens=100, output_tokens=10), Decimal("0.00045"))
    t.reserve(**REQ, price_table=prices)
    assert t.reserved["requests"] == 2


def test_concurrent_reservations_never_exceed_the_limit(prices: PriceTable) -> None:
    t = BudgetTracker(Budget(max_cost_usd="0.90"))  # room for exactly 10 worst cases
    granted: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(5):
            try:
                t.reserve(**REQ, price_table=prices)
                ok = True
            except BudgetExceeded:
                ok = False
            with lock:
                granted.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sum(granted) == 10
    assert t.reserved["cost_usd"] == Decimal("0.90")


def test_release_frees_the_reservation_and_is_idempotent(prices: PriceTable) -> None:
    t = BudgetTracker(Budget(max_requests=1))
    r = t.reserve(**REQ, price_table=prices)
    with pytest.raises(BudgetExceeded, match="max_requests=1"):
        t.reserve(**REQ, price_table=prices)
    t.release(r)
    t.release(r)
    assert t.spent["requests"] == 0
    t.reserve(**REQ, price_table=prices)


def test_commit_once_per_logical_call(prices: PriceTable) -> None:
    t = BudgetTracker(Budget(max_output_tokens=10_000))
    r = t.reserve(**REQ, price_table=prices)
    t.commit(r, Usage(output_tokens=3_000), Decimal("0.045"))
    with pytest.raises(InvalidArgumentError, match="already committed"):
        t.commit(r, Usage(output_tokens=3_000), Decimal("0.045"))
    t.release(r)  # releasing a settled reservation changes nothing
    assert t.spent["output_tokens"] == 3_000
    assert t.spent["requests"] == 1


def test_token_limits_count_prompt_tokens(prices: PriceTable) -> None:
    t = BudgetTracker(Budget(max_input_tokens=25_000))
    r = t.reserve(**REQ, price_table=prices)
    # 2,000 plain + 5,000 written + 9,000 read = 16,000 prompt tokens
    usage = Usage(
        input_tokens=2_000, cache_write_5m_tokens=5_000, cache_read_tokens=9_000, output_tokens=1
    )
    t.commit(r, usage, Decimal("0.05"))
    with pytest.raises(BudgetExceeded, match=r"max_input_tokens=25,000.*spent 16,000.*10,000"):
        t.check(**REQ, price_table=prices)


def test_output_limit_uses_max_tokens(prices: PriceTable) -> None:
    t = BudgetTracker(Budget(max_output_tokens=3_999))
    with pytest.raises(BudgetExceeded, match="max_output_tokens"):
        t.check(**REQ, price_table=prices)


def test_unpriced_model_with_cost_limit_is_refused(prices: PriceTable) -> None:
    t = BudgetTracker(Budget(max_cost_usd="100"))
    with pytest.raises(BudgetExceeded) as info:
        t.check(
            model="claude-mythos-5-2",
            estimated_input_tokens=1,
            max_output_tokens=1,
            price_table=prices,
        )
    msg = str(info.value)
    assert "cannot bound the cost" in msg and "claude-mythos-5-2" in msg
    assert "CLAUDE_FORCE_PRICING" in msg and "max_cost_usd=$100.00" in msg
    with pytest.raises(BudgetExceeded, match="not in the price table"):
        t.check(
            model="claude-x-9", estimated_input_tokens=1, max_output_tokens=1, price_table=prices
        )


def test_unpriced_model_without_cost_limit_is_allowed(prices: PriceTable) -> None:
    t = BudgetTracker(Budget(max_requests=5))
    r = t.reserve(
        model="claude-mythos-5-2", estimated_input_tokens=1, max_output_tokens=1, price_table=prices
    )
    assert r.cost_usd is None
    t.commit(r, Usage(input_tokens=1, output_tokens=1), None)
    assert t.spent["requests"] == 1 and t.spent["cost_usd"] == Decimal(0)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"estimated_input_tokens": -1}, "estimated_input_tokens"),
        ({"max_output_tokens": 1.0}, "max_output_tokens"),
    ],
)
def test_check_rejects_bad_arguments(prices: PriceTable, kw: dict[str, Any], match: str) -> None:
    t = BudgetTracker(Budget())
    with pytest.raises(InvalidArgumentError, match=match):
        t.check(**{**REQ, **kw}, price_table=prices)


# -- reserve_all: the bound first, the exact count when it matters -----------------------------

HAN_TASK = "\u4e2d" * 10_000
# system "abcd" (4 bytes) + 10,000 Han characters (3 bytes each) + framing
HAN_BOUND = 4 + 30_000 + FRAMING_ONE_MESSAGE
HAN_EXACT = 10_001
# claude-haiku-4-5, no cache breakpoint: $1 input, $5 output per million tokens, 1,000 output
BOUND_COST = Decimal(HAN_BOUND) / 10**6 + Decimal("0.005")  # $0.035028
EXACT_COST = Decimal(HAN_EXACT) / 10**6 + Decimal("0.005")  # $0.015001


class CountTokens:
    """An injected count_tokens: answers ``tokens``, fails, or waits for ``release``."""

    def __init__(
        self,
        tokens: int = HAN_EXACT,
        *,
        fail: APIError | None = None,
        release: asyncio.Event | None = None,
    ) -> None:
        self.tokens, self.fail, self.release = tokens, fail, release
        self.calls = 0

    async def __call__(self, request: Request) -> int:
        self.calls += 1
        if self.release is not None:
            await self.release.wait()
        else:
            await asyncio.sleep(0)  # a real count is a round trip: others run meanwhile
        if self.fail is not None:
            raise self.fail
        return self.tokens


def han_request(**kw: Any) -> Request:
    return one_message(text(HAN_TASK), **kw)


async def test_a_bound_that_fits_needs_no_count(prices: PriceTable) -> None:
    tracker, count = BudgetTracker(Budget(max_cost_usd="0.04")), CountTokens()
    [(_, reservation)] = await reserve_all([tracker], han_request(), prices, count)
    assert count.calls == 0
    assert reservation.input_tokens == HAN_BOUND and reservation.cost_usd == BOUND_COST


async def test_a_bound_too_big_asks_count_tokens_and_reserves_the_exact_figure(
    prices: PriceTable,
) -> None:
    tracker, count = BudgetTracker(Budget(max_cost_usd="0.02")), CountTokens()
    assert BOUND_COST > Decimal("0.02") >= EXACT_COST
    [(_, reservation)] = await reserve_all([tracker], han_request(), prices, count)
    assert count.calls == 1
    assert reservation.input_tokens == HAN_EXACT and reservation.cost_usd == EXACT_COST
    assert tracker.reserved["cost_usd"] == EXACT_COST


async def test_an_exact_count_that_does_not_fit_is_refused_and_says_so(
    prices: PriceTable,
) -> None:
    tracker = BudgetTracker(Budget(max_cost_usd="0.015"))
    with pytest.raises(BudgetExceeded, match="counted exactly by count_tokens: 10,001 tokens"):
        await reserve_all([tracker], han_request(), prices, CountTokens())
    assert tracker.reserved["requests"] == 0


async def test_a_failed_count_refuses_with_the_bound(prices: PriceTable) -> None:
    tracker = BudgetTracker(Budget(max_cost_usd="0.02"))
    failure = APIError("HTTP 500 api_error: Internal server error", status_code=500)
    with pytest.raises(BudgetExceeded) as info:
        await reserve_all([tracker], han_request(), prices, CountTokens(fail=failure))
    message = str(info.value)
    assert "could not be fetched from count_tokens (HTTP 500 api_error" in message
    assert "safe bound of 30,028 tokens" in message and "max_cost_usd=$0.02" in message
    assert tracker.reserved["requests"] == 0


@pytest.mark.parametrize(
    "budget",
    [
        Budget(max_cost_usd="0.02", max_requests=0),
        Budget(max_cost_usd="0.02", max_output_tokens=999),
        Budget(max_cost_usd="0.0049"),  # the output alone costs $0.005
    ],
)
async def test_no_count_when_a_smaller_input_would_not_help(
    prices: PriceTable, budget: Budget
) -> None:
    count = CountTokens()
    with pytest.raises(BudgetExceeded):
        await reserve_all([BudgetTracker(budget)], han_request(), prices, count)
    assert count.calls == 0


async def test_max_input_tokens_uses_the_bound_then_the_exact_count(prices: PriceTable) -> None:
    roomy = BudgetTracker(Budget(max_input_tokens=20_000))
    [(_, reservation)] = await reserve_all([roomy], han_request(), prices, CountTokens())
    assert reservation.input_tokens == HAN_EXACT
    tight = BudgetTracker(Budget(max_input_tokens=10_000))
    with pytest.raises(BudgetExceeded, match=r"max_input_tokens=10,000.*counted exactly"):
        await reserve_all([tight], han_request(), prices, CountTokens())


async def settle(task: asyncio.Task[Any]) -> None:
    """Let ``task`` run until it waits on something outside the loop's ready queue."""
    for _ in range(50):
        if task.done():
            return
        await asyncio.sleep(0)


async def test_room_taken_while_counting_is_seen_by_the_recheck(prices: PriceTable) -> None:
    """The recheck after the exact count sees what another call reserved meanwhile; kept out
    only by that call in flight, this one waits for it to settle instead of failing."""
    tracker = BudgetTracker(Budget(max_cost_usd="0.02"))
    release = asyncio.Event()
    count = CountTokens(release=release)
    waiting = asyncio.create_task(reserve_all([tracker], han_request(), prices, count))
    while count.calls == 0:
        await asyncio.sleep(0)
    # Another call takes $0.015 of the $0.02 while the first awaits its exact count.
    other = tracker.reserve(
        model="claude-haiku-4-5",
        estimated_input_tokens=10_000,
        max_output_tokens=1_000,
        price_table=prices,
    )
    release.set()
    await settle(waiting)
    assert not waiting.done() and tracker.reserved["cost_usd"] == Decimal("0.015")
    # It settles for much less than its worst case: the waiting one now fits.
    tracker.commit(other, Usage(input_tokens=1_000, output_tokens=10), Decimal("0.001"))
    [(_, reservation)] = await waiting
    assert reservation.cost_usd == EXACT_COST
    assert tracker.spent["cost_usd"] + tracker.reserved["cost_usd"] <= Decimal("0.02")


async def test_kept_out_by_spending_itself_is_refused_at_once(prices: PriceTable) -> None:
    tracker = BudgetTracker(Budget(max_cost_usd="0.02"))
    first = tracker.reserve(
        model="claude-haiku-4-5",
        estimated_input_tokens=10_000,
        max_output_tokens=1_000,
        price_table=prices,
    )
    waiting = asyncio.create_task(reserve_all([tracker], han_request(), prices, CountTokens()))
    await settle(waiting)
    assert not waiting.done()
    tracker.commit(first, Usage(input_tokens=10_000, output_tokens=1_000), Decimal("0.015"))
    with pytest.raises(BudgetExceeded, match=r"spent \$0\.015,"):
        await waiting


async def test_concurrent_reservations_never_cross_and_leave_no_usable_room(
    prices: PriceTable,
) -> None:
    limit = Decimal("0.10")
    tracker, count = BudgetTracker(Budget(max_cost_usd=limit)), CountTokens()
    tasks = [
        asyncio.create_task(reserve_all([tracker], han_request(), prices, count)) for _ in range(20)
    ]
    for task in tasks:
        await settle(task)
    granted = [t.result() for t in tasks if t.done()]
    reserved = tracker.reserved["cost_usd"]
    assert reserved <= limit
    assert limit - reserved < EXACT_COST  # nobody waits who would have fit
    assert len(granted) == tracker.reserved["requests"] >= 3
    assert count.calls > 0
    # As calls settle, the waiting ones go; the spend never crosses the limit, and those
    # that can no longer fit are refused.
    while not all(t.done() for t in tasks):
        open_ = [r for t in tasks if t.done() and not t.exception() for _, r in t.result()]
        settled = [r for r in open_ if r.key in tracker._open]
        for reservation in settled:
            tracker.commit(reservation, Usage(input_tokens=1, output_tokens=1), Decimal("0.012"))
        for task in tasks:
            await settle(task)
        assert tracker.spent["cost_usd"] + tracker.reserved["cost_usd"] <= limit
    refused = [t for t in tasks if isinstance(t.exception(), BudgetExceeded)]
    assert refused and len(refused) < 20 - len(granted)


async def test_a_refusal_on_one_budget_gives_back_the_others(prices: PriceTable) -> None:
    roomy, full = BudgetTracker(Budget()), BudgetTracker(Budget(max_requests=0))
    with pytest.raises(BudgetExceeded, match="max_requests=0"):
        await reserve_all([roomy, full], han_request(), prices, CountTokens())
    assert roomy.reserved["requests"] == 0


async def test_images_are_counted_exactly_when_the_input_is_limited(prices: PriceTable) -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    request = one_message(text("what is this?"), image)
    count = CountTokens(1_600)
    limited = BudgetTracker(Budget(max_cost_usd="1"))
    [(_, reservation)] = await reserve_all([limited], request, prices, count)
    assert count.calls == 1 and reservation.input_tokens == 1_600
    await reserve_all([BudgetTracker(Budget(max_requests=5))], request, prices, count)
    assert count.calls == 1  # no input limit: nothing to count for
    failing = CountTokens(fail=APIError("connection error: refused", error_type="connection_error"))
    with pytest.raises(BudgetExceeded, match="holds an image or a document"):
        await reserve_all([limited], request, prices, failing)


async def test_release_all_is_idempotent(prices: PriceTable) -> None:
    tracker = BudgetTracker(Budget(max_requests=1))
    taken = await reserve_all([tracker], han_request(), prices, CountTokens())
    release_all(taken)
    release_all(taken)
    assert tracker.reserved["requests"] == 0
    assert await reserve_all([], han_request(), prices, CountTokens()) == []


async def test_a_count_that_is_not_a_token_number_is_refused(prices: PriceTable) -> None:
    tracker = BudgetTracker(Budget(max_cost_usd="0.02"))
    with pytest.raises(InvalidArgumentError, match="whole number of tokens"):
        await reserve_all([tracker], han_request(), prices, CountTokens(-1))
