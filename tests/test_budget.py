from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest

from claude_force._budget import Budget, BudgetTracker, estimate_input_tokens, worst_case_cost
from claude_force._errors import BudgetExceeded, InvalidArgumentError
from claude_force._pricing import PriceTable
from claude_force._usage import Usage


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


# -- estimates ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "expected"),
    [([], 0), (["a"], 1), (["abcd"], 1), (["abcd", "e"], 2), (["x" * 400], 100)],
)
def test_estimate_input_tokens_is_ceil_chars_over_4(parts: list[str], expected: int) -> None:
    assert estimate_input_tokens(parts) == expected


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
