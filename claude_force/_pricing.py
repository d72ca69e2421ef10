"""Prices as data and cost in ``Decimal``; an unknown price is ``None``, never $0.

Prices live in ``claude_force/pricing.json`` (USD per million tokens, decimal strings). A user file
with the same schema, named by :meth:`PriceTable.load`'s ``path`` or by the environment variable
``CLAUDE_FORCE_PRICING``, overrides or extends it entry by entry.

Billing rules encoded here (Anthropic's published rules):

* Each prompt token is billed once, in exactly one kind: plain input, 5-minute cache write,
  1-hour cache write or cache read. Output tokens have their own rate.
* A model with a ``long_context`` tier bills the *whole* request (output included) at the tier's
  rates when the request's prompt tokens (input + cache writes + cache reads) exceed the threshold.
* The Message Batches discount applies to every kind, cache writes and reads included, because
  Anthropic's pricing multipliers stack.
* Server tools billed per request (web search) are priced per 1,000 requests in the file's
  ``server_tool_use`` section, the same on every model and without the batch discount. A call that
  used one whose rate is missing from the table costs ``None`` (unknown), never a guess.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ._errors import ConfigError
from ._usage import Usage

__all__ = [
    "PRICING_ENV_VAR",
    "CostBreakdown",
    "LongContextPrice",
    "ModelPrice",
    "PriceTable",
    "TierPrice",
    "compute_cost_breakdown",
    "format_usd",
    "round_usd",
]

PRICING_ENV_VAR = "CLAUDE_FORCE_PRICING"

logger = logging.getLogger("claude_force.pricing")

_MILLION = Decimal(1_000_000)
_ONE = Decimal(1)
_MICRO_USD = Decimal("0.000001")
_KINDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
_DATED_ID = re.compile(r"^(?P<base>.+)-\d{8}$")
_TOP_LEVEL_KEYS = frozenset({"models", "aliases", "unpriced", "server_tool_use"})
_THOUSAND = Decimal(1000)
_NO_SEARCH = Decimal(0)  # a breakdown's web_search when there was none
# Usage field -> the key of its rate (USD per 1,000 requests) in the file's server_tool_use section.
SERVER_TOOLS = ("web_search_requests",)


def round_usd(amount: Decimal) -> Decimal:
    """Round to a millionth of a dollar, for display only; keep full precision when adding.

    >>> round_usd(Decimal("0.0000125"))
    Decimal('0.000013')
    """
    return amount.quantize(_MICRO_USD, rounding=ROUND_HALF_UP)


def format_usd(amount: Decimal | None) -> str:
    """``$0.07``, ``$1.00``, ``$0.000123``: rounded to a micro-dollar, at least two decimals.

    ``None`` (unknown) shows as ``unknown``, never as ``$0``.

    >>> format_usd(Decimal("1.5")), format_usd(Decimal("0.0001234")), format_usd(None)
    ('$1.50', '$0.000123', 'unknown')
    """
    if amount is None:
        return "unknown"
    text = f"{round_usd(amount):f}"
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0").ljust(2, "0")
    return f"-${whole.lstrip('-')}.{frac}" if amount < 0 else f"${whole}.{frac}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TierPrice:
    """USD per million tokens for each billed kind of token."""

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class LongContextPrice(TierPrice):
    """Rates for a whole request whose prompt tokens exceed ``threshold_input_tokens``."""

    threshold_input_tokens: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelPrice(TierPrice):
    """A model's standard rates, its batch discount and an optional long-context tier.

    ``batch_discount`` is the fraction taken off on the Message Batches API (``0.5`` = half price).
    """

    batch_discount: Decimal
    long_context: LongContextPrice | None = None

    def tier(self, prompt_tokens: int) -> TierPrice:
        """The rates that apply to a request with this many prompt tokens."""
        lc = self.long_context
        if lc is not None and prompt_tokens > lc.threshold_input_tokens:
            return lc
        return self


@dataclass(frozen=True, slots=True, kw_only=True)
class CostBreakdown:
    """What one request (or a sum of requests) cost, per kind of token, in USD."""

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    web_search: Decimal = _NO_SEARCH
    long_context: bool = False
    batch: bool = False

    @property
    def total(self) -> Decimal:
        return (
            self.input
            + self.output
            + self.cache_write_5m
            + self.cache_write_1h
            + self.cache_read
            + self.web_search
        )

    def as_dict(self) -> dict[str, str | bool]:
        """JSON-able form; amounts as decimal strings."""
        out: dict[str, str | bool] = {
            kind: str(getattr(self, kind)) for kind in (*_KINDS, "web_search")
        }
        out["total"] = str(self.total)
        out["long_context"] = self.long_context
        out["batch"] = self.batch
        return out


def compute_cost_breakdown(
    price: ModelPrice, usage: Usage, *, batch: bool = False
) -> CostBreakdown:
    """Price ``usage`` at ``price``: pure arithmetic, full ``Decimal`` precision."""
    tier = price.tier(usage.prompt_tokens)
    factor = (Decimal(1) - price.batch_discount) if batch else _ONE
    million = _MILLION
    return CostBreakdown(
        input=Decimal(usage.input_tokens) * tier.input * factor / million,
        output=Decimal(usage.output_tokens) * tier.output * factor / million,
        cache_write_5m=Decimal(usage.cache_write_5m_tokens)
        * tier.cache_write_5m
        * factor
        / million,
        cache_write_1h=Decimal(usage.cache_write_1h_tokens)
        * tier.cache_write_1h
        * factor
        / million,
        cache_read=Decimal(usage.cache_read_tokens) * tier.cache_read * factor / million,
        long_context=tier is not price,
        batch=batch,
    )


_FOUND_MAX = 1024  # distinct model ids remembered by a table


class PriceTable:
    """Per-model prices with alias resolution; cost of a usage, or ``None`` when unknown."""

    def __init__(
        self,
        *,
        models: Mapping[str, ModelPrice],
        aliases: Mapping[str, str] | None = None,
        unpriced: Mapping[str, str] | None = None,
        server_tool_use: Mapping[str, Decimal] | None = None,
    ) -> None:
        self._models: Mapping[str, ModelPrice] = MappingProxyType(dict(models))
        self._server_tools: Mapping[str, Decimal] = MappingProxyType(dict(server_tool_use or {}))
        self._aliases: Mapping[str, str] = MappingProxyType(dict(aliases or {}))
        self._unpriced: Mapping[str, str] = MappingProxyType(dict(unpriced or {}))
        self._warned: set[str] = set()
        self._warned_lock = threading.Lock()
        # model id as sent or answered -> its price: the table never changes, and resolving
        # an id (a pattern match, alias lookups) was a third of pricing a call.
        self._found: dict[str, ModelPrice] = {}

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        """The packaged prices, overridden by ``path`` or else by ``$CLAUDE_FORCE_PRICING``.

        Raises :class:`ConfigError` naming the file and the JSON path of every problem found.
        """
        merged = _packaged_document()
        override: Path | None = path
        origin = "the path argument"
        if override is None:
            env = os.environ.get(PRICING_ENV_VAR, "").strip()
            if env:
                override, origin = Path(env), f"${PRICING_ENV_VAR}"
        if override is not None:
            merged = _merge(merged, _read_document(override, origin))
        return cls._from_document(merged)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> PriceTable:
        """Build a table from a document of the ``pricing.json`` schema alone (no packaged data)."""
        return cls._from_document(_parse_document(data, source))

    @classmethod
    def _from_document(cls, doc: _Document) -> PriceTable:
        problems = [
            f"{doc.alias_sources[alias]}: $.aliases.{alias}: points at {target!r}, which is "
            "neither a priced nor an unpriced model; add that model or fix the alias"
            for alias, target in sorted(doc.aliases.items())
            if target not in doc.models and target not in doc.unpriced
        ]
        if problems:
            raise ConfigError("price table has dangling aliases", problems)
        return cls(
            models=doc.models,
            aliases=doc.aliases,
            unpriced=doc.unpriced,
            server_tool_use=doc.server_tool_use,
        )

    # -- lookups ------------------------------------------------------------------------------

    @property
    def models(self) -> Mapping[str, ModelPrice]:
        """Canonical model id -> price (read-only)."""
        return self._models

    @property
    def unpriced(self) -> Mapping[str, str]:
        """Model ids known to have no price, with the reason (read-only)."""
        return self._unpriced

    @property
    def server_tool_use(self) -> Mapping[str, Decimal]:
        """Usage field (``web_search_requests``) -> USD per 1,000 requests (read-only)."""
        return self._server_tools

    def resolve(self, model: str) -> str | None:
        """Canonical id for ``model`` (aliases, dated ids), or ``None`` when unknown.

        A known-but-unpriced model resolves to itself; use :meth:`is_priced` to tell them apart.
        """
        base = _DATED_ID.match(model)
        for candidate in (model, base.group("base") if base else None):
            if candidate is None:
                continue
            if candidate in self._models or candidate in self._unpriced:
                return candidate
            target = self._aliases.get(candidate)
            if target is not None:
                return target
        return None

    def price(self, model: str) -> ModelPrice | None:
        """The price of ``model``, or ``None`` (and one logged warning) when it has none."""
        found = self._found.get(model)
        if found is not None:
            return found
        canonical = self.resolve(model)
        found = self._models.get(canonical) if canonical is not None else None
        if found is None:
            self._warn_once(model, canonical)
        elif len(self._found) < _FOUND_MAX:
            self._found[model] = found
        return found

    def is_priced(self, model: str) -> bool:
        canonical = self.resolve(model)
        return canonical is not None and canonical in self._models

    def unpriced_reason(self, model: str) -> str | None:
        """Why ``model`` has no price, or ``None`` when it is priced or entirely unknown."""
        canonical = self.resolve(model)
        return self._unpriced.get(canonical) if canonical is not None else None

    # -- money --------------------------------------------------------------------------------

    def cost_breakdown(
        self, model: str, usage: Usage, *, batch: bool = False
    ) -> CostBreakdown | None:
        """Cost per kind of ``usage`` on ``model``; ``None`` when any part has no known price."""
        price = self.price(model)
        if price is None:
            return None
        breakdown = compute_cost_breakdown(price, usage, batch=batch)
        searches = usage.web_search_requests
        if not searches:
            return breakdown
        rate = self._server_tools.get("web_search_requests")
        if rate is None:
            self._warn_tool_once("web_search_requests")
            return None
        return replace(breakdown, web_search=Decimal(searches) * rate / _THOUSAND)

    def cost(self, model: str, usage: Usage, *, batch: bool = False) -> Decimal | None:
        """USD cost of ``usage`` on ``model``; ``None`` for an unknown or unpriced model."""
        price = self.price(model)
        if price is None or batch or usage.web_search_requests:
            breakdown = self.cost_breakdown(model, usage, batch=batch)
            return None if breakdown is None else breakdown.total
        # Every call's price: the breakdown's arithmetic and its total's sum, in the same
        # order (so the same Decimal, exponent included), without making the breakdown.
        # Off the batch discount, its factor is 1, and multiplying by 1 changes nothing.
        tier = price.tier(usage.prompt_tokens)
        million = _MILLION
        return (
            Decimal(usage.input_tokens) * tier.input / million
            + Decimal(usage.output_tokens) * tier.output / million
            + Decimal(usage.cache_write_5m_tokens) * tier.cache_write_5m / million
            + Decimal(usage.cache_write_1h_tokens) * tier.cache_write_1h / million
            + Decimal(usage.cache_read_tokens) * tier.cache_read / million
            + _NO_SEARCH
        )

    def prompt_cache_savings(
        self, model: str, usage: Usage, *, batch: bool = False
    ) -> Decimal | None:
        """What the cache reads saved against paying the full input rate for those tokens.

        Only the read discount is counted; cache-write premiums are not subtracted (they are
        already part of :meth:`cost`).
        """
        price = self.price(model)
        if price is None:
            return None
        tier = price.tier(usage.prompt_tokens)
        factor = (Decimal(1) - price.batch_discount) if batch else Decimal(1)
        return Decimal(usage.cache_read_tokens) * (tier.input - tier.cache_read) * factor / _MILLION

    def response_cache_savings(
        self, model: str, usage: Usage, *, batch: bool = False
    ) -> Decimal | None:
        """What a response-cache hit saved: the cost of the original call it replays.

        The hit itself costs ``Decimal("0")``; pass the usage stored with the cached response.
        """
        return self.cost(model, usage, batch=batch)

    def _warn_tool_once(self, tool: str) -> None:
        with self._warned_lock:
            if f"tool:{tool}" in self._warned:
                return
            self._warned.add(f"tool:{tool}")
        logger.warning(
            "the price table has no rate for %s; calls that used it are reported as unknown "
            "cost, not $0. Add server_tool_use.%s (USD per 1,000 requests) to a JSON file named "
            "by $%s",
            tool,
            tool,
            PRICING_ENV_VAR,
        )

    def _warn_once(self, model: str, canonical: str | None) -> None:
        with self._warned_lock:
            if model in self._warned:
                return
            self._warned.add(model)
        reason = self._unpriced.get(canonical) if canonical is not None else None
        if reason is not None:
            logger.warning(
                "model %r has no price (%s); its cost is reported as unknown, not $0", model, reason
            )
        else:
            logger.warning(
                "model %r is not in the price table; its cost is reported as unknown, not $0. "
                "Add it to a JSON file named by $%s (same schema as claude_force/pricing.json)",
                model,
                PRICING_ENV_VAR,
            )


# -- parsing ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Document:
    models: dict[str, ModelPrice]
    aliases: dict[str, str]
    unpriced: dict[str, str]
    alias_sources: dict[str, str]
    server_tool_use: dict[str, Decimal]


@cache
def _packaged_text() -> str:
    return resources.files("claude_force").joinpath("pricing.json").read_text(encoding="utf-8")


def _packaged_document() -> _Document:
    return _parse_document(
        _load_json(_packaged_text(), "claude_force/pricing.json"), "pricing.json"
    )


def _read_document(path: Path, origin: str) -> _Document:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read price file {path} (given by {origin}): {exc.strerror or exc}; "
            "point it at a readable JSON file or unset it"
        ) from exc
    return _parse_document(_load_json(text, str(path)), str(path))


def _load_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"price file {source} is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}; fix the syntax"
        ) from exc


def _merge(base: _Document, over: _Document) -> _Document:
    """Entries of ``over`` replace or extend those of ``base``, model by model."""
    models = {k: v for k, v in base.models.items() if k not in over.unpriced}
    unpriced = {k: v for k, v in base.unpriced.items() if k not in over.models}
    models.update(over.models)
    unpriced.update(over.unpriced)
    return _Document(
        models=models,
        aliases={**base.aliases, **over.aliases},
        unpriced=unpriced,
        alias_sources={**base.alias_sources, **over.alias_sources},
        server_tool_use={**base.server_tool_use, **over.server_tool_use},
    )


def _parse_document(data: object, source: str) -> _Document:
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise ConfigError(f"price file {source} is invalid", ["$: must be a JSON object"])
    for key in data:
        if not str(key).startswith("_") and key not in _TOP_LEVEL_KEYS:
            problems.append(f"$.{key}: unknown key; expected one of {sorted(_TOP_LEVEL_KEYS)}")
    models: dict[str, ModelPrice] = {}
    for name, entry in _section(data, "models", problems).items():
        parsed = _parse_model(entry, f"$.models.{name}", problems)
        if parsed is not None:
            models[name] = parsed
    aliases = _string_map(_section(data, "aliases", problems), "$.aliases", problems)
    unpriced = _string_map(_section(data, "unpriced", problems), "$.unpriced", problems)
    for name in sorted(set(models) & set(unpriced)):
        problems.append(f"$.unpriced.{name}: also priced under $.models; keep only one")
    if problems:
        raise ConfigError(f"price file {source} is invalid; fix these entries", problems)
    tools = _parse_server_tools(_section(data, "server_tool_use", problems), problems)
    if problems:
        raise ConfigError(f"price file {source} is invalid; fix these entries", problems)
    return _Document(models, aliases, unpriced, {alias: source for alias in aliases}, tools)


def _parse_server_tools(section: Mapping[str, Any], problems: list[str]) -> dict[str, Decimal]:
    where = "$.server_tool_use"
    _unknown_keys(section, set(SERVER_TOOLS), where, problems)
    rates = {
        tool: _parse_decimal(section, tool, where, problems)
        for tool in SERVER_TOOLS
        if tool in section
    }
    return {tool: rate for tool, rate in rates.items() if rate is not None}


def _section(data: Mapping[str, Any], key: str, problems: list[str]) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        problems.append(f"$.{key}: must be a JSON object")
        return {}
    return {k: v for k, v in value.items() if not str(k).startswith("_")}


def _string_map(section: Mapping[str, Any], where: str, problems: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in section.items():
        if isinstance(value, str) and value:
            out[key] = value
        else:
            problems.append(f"{where}.{key}: must be a non-empty string, got {value!r}")
    return out


def _parse_model(entry: object, where: str, problems: list[str]) -> ModelPrice | None:
    if not isinstance(entry, Mapping):
        problems.append(f"{where}: must be a JSON object")
        return None
    allowed = {*_KINDS, "batch_discount", "long_context"}
    _unknown_keys(entry, allowed, where, problems)
    rates = _parse_rates(entry, where, problems)
    discount = _parse_decimal(entry, "batch_discount", where, problems)
    if discount is not None and not discount < 1:
        problems.append(f"{where}.batch_discount: must be below 1 (0.5 = half price)")
    long_context: LongContextPrice | None = None
    if "long_context" in entry:
        long_context = _parse_long_context(entry["long_context"], f"{where}.long_context", problems)
    if rates is None or discount is None:
        return None
    return ModelPrice(**rates, batch_discount=discount, long_context=long_context)


def _parse_long_context(entry: object, where: str, problems: list[str]) -> LongContextPrice | None:
    if not isinstance(entry, Mapping):
        problems.append(f"{where}: must be a JSON object")
        return None
    _unknown_keys(entry, {*_KINDS, "threshold_input_tokens"}, where, problems)
    rates = _parse_rates(entry, where, problems)
    threshold = entry.get("threshold_input_tokens")
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold <= 0:
        problems.append(
            f"{where}.threshold_input_tokens: must be a positive whole number, got {threshold!r}"
        )
        return None
    return None if rates is None else LongContextPrice(**rates, threshold_input_tokens=threshold)


def _parse_rates(
    entry: Mapping[str, Any], where: str, problems: list[str]
) -> dict[str, Decimal] | None:
    rates = {kind: _parse_decimal(entry, kind, where, problems) for kind in _KINDS}
    if any(v is None for v in rates.values()):
        return None
    return {k: v for k, v in rates.items() if v is not None}


def _parse_decimal(
    entry: Mapping[str, Any], key: str, where: str, problems: list[str]
) -> Decimal | None:
    if key not in entry:
        problems.append(f"{where}.{key}: missing; give USD per million tokens as a string")
        return None
    raw = entry[key]
    if not isinstance(raw, str):
        problems.append(
            f'{where}.{key}: must be a decimal string such as "3.75", got {raw!r}; '
            "quote the number so no float rounding creeps in"
        )
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or value < 0:
        problems.append(f"{where}.{key}: {raw!r} is not a non-negative decimal number")
        return None
    return value


def _unknown_keys(
    entry: Mapping[str, Any], allowed: set[str], where: str, problems: list[str]
) -> None:
    for key in entry:
        if not str(key).startswith("_") and key not in allowed:
            problems.append(f"{where}.{key}: unknown key; expected one of {sorted(allowed)}")
