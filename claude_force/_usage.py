"""Token usage as a small value type that adds.

:class:`Usage` splits prompt tokens the way Anthropic bills them: plain input, cache writes with a
5-minute or a 1-hour lifetime, and cache reads. It also counts server tool requests that are billed
per request (web searches). :func:`Usage.from_api` reads the ``usage`` block of a Messages API
response, either the SDK's ``anthropic.types.Usage`` object or its ``dict`` form, so
this module never imports the SDK.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, fields

from ._errors import InvalidArgumentError
from ._frozen import quick_init

__all__ = ["Usage"]


@quick_init
@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens used by one call, or by many calls added together.

    >>> total = Usage(input_tokens=10, output_tokens=5) + Usage(cache_read_tokens=100)
    >>> total.prompt_tokens, total.output_tokens
    (110, 5)

    ``web_search_requests`` counts the web searches the service ran for the call (billed per
    search, not per token); it is not part of any token total.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    web_search_requests: int = 0

    def __post_init__(self) -> None:
        for name in _FIELD_NAMES:
            value = getattr(self, name)
            if type(value) is int and value >= 0:
                continue  # the usual case, checked first: one is made per call
            # bool is an int subclass; True tokens is always a caller bug.
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgumentError(
                    f"Usage.{name} must be a non-negative int, got {value!r}; "
                    "pass token counts as whole numbers"
                )

    def __add__(self, other: object) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_write_5m_tokens=self.cache_write_5m_tokens + other.cache_write_5m_tokens,
            cache_write_1h_tokens=self.cache_write_1h_tokens + other.cache_write_1h_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            web_search_requests=self.web_search_requests + other.web_search_requests,
        )

    @property
    def cache_write_tokens(self) -> int:
        """Tokens written to the prompt cache, both lifetimes."""
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    @property
    def prompt_tokens(self) -> int:
        """Every token of the prompt: plain input, cache writes and cache reads.

        This is the number Anthropic compares with a long-context threshold.
        """
        return self.input_tokens + self.cache_write_tokens + self.cache_read_tokens

    @property
    def total_tokens(self) -> int:
        """Prompt tokens plus output tokens."""
        return self.prompt_tokens + self.output_tokens

    @classmethod
    def from_api(cls, usage: object) -> Usage:
        """Read the ``usage`` of a Messages API response (SDK object or dict).

        The 5-minute/1-hour split comes from ``cache_creation``. Older responses (and some
        proxies) send only ``cache_creation_input_tokens``; those writes are counted as 5-minute
        writes, the API's default lifetime. When ``cache_creation`` is present but accounts for
        fewer tokens than ``cache_creation_input_tokens``, the total wins and the remainder is
        counted as 5-minute writes, so no billed token is dropped. Missing or ``None`` counts
        are 0. Web searches come from ``server_tool_use.web_search_requests``.
        """
        counts = _plain_counts(usage)  # a body's usage object, read on every answer
        if counts is not None:
            return cls(*counts)
        creation = _get(usage, "cache_creation")
        creation_total = _count(usage, "cache_creation_input_tokens")
        if creation is None:
            write_5m, write_1h = creation_total, 0
        else:
            write_5m = _count(creation, "ephemeral_5m_input_tokens")
            write_1h = _count(creation, "ephemeral_1h_input_tokens")
            write_5m += max(0, creation_total - write_5m - write_1h)
        return cls(
            input_tokens=_count(usage, "input_tokens"),
            output_tokens=_count(usage, "output_tokens"),
            cache_write_5m_tokens=write_5m,
            cache_write_1h_tokens=write_1h,
            cache_read_tokens=_count(usage, "cache_read_input_tokens"),
            web_search_requests=_count(_get(usage, "server_tool_use"), "web_search_requests"),
        )


_FIELD_NAMES = tuple(f.name for f in fields(Usage))


_API_FIELDS = operator.attrgetter(
    "cache_creation",
    "cache_creation_input_tokens",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "server_tool_use",
)
_SPLIT = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")
_SPLIT_FIELDS = operator.attrgetter(*_SPLIT)
_TOTAL, _READ = "cache_creation_input_tokens", "cache_read_input_tokens"


def _plain_counts(usage: object) -> tuple[int, int, int, int, int, int] | None:
    """What :meth:`Usage.from_api` reads from a usage object (a decoded body's or the SDK's)
    whose counts are all None or plain non-negative ints, read at once; None for anything
    else (read, and refused, field by field)."""
    found = _raw_counts(usage)
    if found is None:
        return None
    split, values = found
    counts = []
    for value in values:
        if value is None:
            counts.append(0)
        elif type(value) is int and value >= 0:
            counts.append(value)
        else:
            return None
    total, inp, out, read, write_5m, write_1h = counts
    if split:
        write_5m += max(0, total - write_5m - write_1h)
    else:
        write_5m = total
    return (inp, out, write_5m, write_1h, read, 0)


def _raw_counts(usage: object) -> tuple[bool, tuple[object, ...]] | None:
    """Whether ``usage`` splits its cache writes by lifetime, and its counts as stated (the
    total of cache writes, input, output, cache reads, 5-minute and 1-hour writes); None
    when it is not plain (web searches, an odd ``cache_creation``, a field missing)."""
    if type(usage) is dict:
        get = usage.get
        creation = get("cache_creation")
        if get("server_tool_use") is not None:
            return None
        if creation is None:
            split: tuple[object, object] = (None, None)
        elif type(creation) is dict:
            split = (creation.get(_SPLIT[0]), creation.get(_SPLIT[1]))
        else:
            return None
        values = (get(_TOTAL), get("input_tokens"), get("output_tokens"), get(_READ), *split)
        return creation is not None, values
    if isinstance(usage, Mapping):
        return None
    try:
        creation, total, inp, out, read, tools = _API_FIELDS(usage)
        split = (None, None) if creation is None else _SPLIT_FIELDS(creation)
    except AttributeError:
        return None
    if tools is not None or isinstance(creation, Mapping):
        return None
    return creation is not None, (total, inp, out, read, *split)


def _get(source: object, name: str) -> object:
    if source is None:
        return None
    if type(source) is dict or isinstance(source, Mapping):
        return source.get(name)
    return getattr(source, name, None)


def _count(source: object, name: str) -> int:
    value = _get(source, name)
    if value is None:
        return 0
    if type(value) is float and value.is_integer() and value >= 0:
        return int(value)  # 100.0 from a stand-in or proxy: a whole count, billed as such
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgumentError(
            f"usage field {name!r} must be a non-negative int or null, got {value!r}; "
            "pass the response's usage block unchanged"
        )
    return value
