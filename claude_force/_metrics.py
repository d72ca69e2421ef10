"""Prometheus metrics for calls: requests, tokens, cost, latency, response cache, retries;
and, read at each scrape, the rate-limit state of a running orchestrator (concurrency limit,
attempts in flight, each token bucket's limit, level and the share others take).

Each :class:`Metrics` owns a registry (its own by default, so tests and several orchestrators in
one process never share counters). Cost is exported as a float, which is fine for dashboards;
the ledger keeps the exact ``Decimal``.
"""

from __future__ import annotations

import bisect
import collections
import errno
import functools
import operator
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Metric,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ._errors import InvalidArgumentError
from ._ledger import LedgerRow
from ._usage import Usage

__all__ = [
    "LATENCY_BUCKETS",
    "LedgerCollector",
    "Metrics",
    "RateLimitCollector",
    "RowSource",
    "metrics_from_rows",
    "serve_ledger",
]

# Model calls take from a fraction of a second to minutes; default Prometheus buckets stop at 10 s.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)

# Response-cache hits held before they are added to the Prometheus series (a scrape adds
# them at once): bounds the memory a process that is never scraped holds for them.
HIT_BATCH = 256
# Calls held likewise (all series together), for the same reason.
CALL_BATCH = 256
MODEL_LABELS = 64
"""Distinct model names one :class:`Metrics` labels its series with. The model is the one
each answer names (the server's word, not the configuration's), and every name is a set of
series held for the life of the process: past these, calls count under ``OTHER_MODEL``."""
OTHER_MODEL = "other"

_NO_USAGE = Usage()
_ZERO = Decimal(0)
_TOKEN_KINDS = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cache_write_5m", "cache_write_5m_tokens"),
    ("cache_write_1h", "cache_write_1h_tokens"),
    ("cache_read", "cache_read_tokens"),
)
_token_counts = operator.attrgetter(*(attr for _, attr in _TOKEN_KINDS))
# A call waiting: agent, model, outcome, usage, cost, latency, cached, retries.
_Call = tuple[str, str, str, Usage, Decimal, float, bool, int]
_OUTCOME, _USAGE, _COST, _LATENCY, _CACHED, _RETRIES = map(operator.itemgetter, range(2, 8))


class _HitCounter(Counter):
    """A counter that, when collected, first adds the calls and response-cache hits waiting
    in its :class:`Metrics` (so every scrape, filtered by name or not, counts every one)."""

    before_collect: Callable[[], None] | None = None

    def collect(self) -> Iterable[Metric]:
        if self.before_collect is not None:
            self.before_collect()
        return super().collect()


class _HitHistogram(Histogram):
    """:class:`_HitCounter` for the latency histogram."""

    before_collect: Callable[[], None] | None = None

    def collect(self) -> Iterable[Metric]:
        if self.before_collect is not None:
            self.before_collect()
        return super().collect()


class Metrics:
    """The counters and histograms claude-force exports.

    Calls (:meth:`observe_call`) and response-cache hits (:meth:`observe_hit`) are tallied
    in process and added to the Prometheus series in batches: when :data:`CALL_BATCH` calls
    or :data:`HIT_BATCH` hits of one series are waiting, and whenever the registry is
    collected (``render``, the ``/metrics`` endpoint), so what is exported always counts
    every one: the same counts as if each had been added at once, and float sums (costs,
    latencies) equal up to rounding in the last digit (they are added in another order).
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, model_labels: int | None = MODEL_LABELS
    ) -> None:
        """``model_labels``: distinct model names kept as labels (None: every one, for
        metrics rebuilt from the ledger at each scrape, which hold nothing between them)."""
        self.registry = registry if registry is not None else CollectorRegistry()
        self._model_labels = model_labels
        reg = self.registry
        self.requests = _HitCounter(
            "claude_force_requests",
            "Completed calls, by outcome (success or error).",
            ["agent", "model", "outcome"],
            registry=reg,
        )
        self.tokens = _HitCounter(
            "claude_force_tokens",
            "Tokens used, by kind: input, output, cache_write_5m, cache_write_1h, cache_read.",
            ["agent", "model", "kind"],
            registry=reg,
        )
        self.cost = _HitCounter(
            "claude_force_cost_usd",
            "Cost in US dollars of priced calls (unpriced calls are counted separately).",
            ["agent", "model"],
            registry=reg,
        )
        self.unpriced = Counter(
            "claude_force_unpriced_requests",
            "Calls to models without a known price; their cost is missing from the cost total.",
            ["agent", "model"],
            registry=reg,
        )
        self.latency = _HitHistogram(
            "claude_force_request_latency_seconds",
            "Wall-clock time of a call, retries and waits included.",
            ["agent", "model"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.cache = _HitCounter(
            "claude_force_cache",
            "Response-cache lookups, by result (hit or miss).",
            ["result"],
            registry=reg,
        )
        self.server_tools = Counter(
            "claude_force_server_tool_requests",
            "Server tool requests billed per request, by tool (web_search).",
            ["agent", "model", "tool"],
            registry=reg,
        )
        self.retries = _HitCounter(
            "claude_force_retries",
            "Retried attempts (attempts beyond the first).",
            ["agent", "model"],
            registry=reg,
        )
        self.redis_fallbacks = Counter(
            "claude_force_redis_fallbacks",
            "Times Redis could not be used and this process fell back to local rate limits "
            "or single-flight, by part (limits, single_flight).",
            ["part"],
            registry=reg,
        )
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._tokens: dict[tuple[str, str], tuple[Any, ...]] = {}
        # Latencies of hits waiting, per agent and model: appended without a lock (a deque
        # takes appends and pops from several threads), taken under the flush lock.
        self._hits: dict[tuple[str, str], deque[float]] = {}
        self._hit_series: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self._hits_lock = threading.Lock()
        # Calls waiting, in order, of the kinds whose series all exist already (see
        # observe_call): appended without a lock, taken under the flush lock.
        self._calls: deque[_Call] = deque()
        self._shapes: set[tuple[str, str, str, bool, bool]] = set()
        self._models: set[str] = set()  # the model names labelling series (MODEL_LABELS)
        for metric in (self.requests, self.tokens, self.cost, self.latency, self.cache):
            metric.before_collect = self.flush_hits
        self.retries.before_collect = self.flush_hits

    def observe_call(
        self,
        *,
        agent: str,
        model: str,
        outcome: str,
        usage: Usage | None,
        cost: Decimal | None,
        latency_s: float,
        cached: bool,
        retries: int = 0,
    ) -> None:
        """Record one completed call. ``cost=None`` means unpriced, not free.

        A priced call with usage and no web search, of an agent, model, outcome and kind
        seen before, waits for the next batch: every series it changes exists already, so
        nothing but the values is deferred. Any other call is added at once, after the
        calls waiting (each series gets its values in the order observed)."""
        if model not in self._models:
            model = self._model_label(model)
        if cost is not None and type(usage) is Usage and not usage.web_search_requests:
            shape = (agent, model, outcome, cached, retries > 0)
            if shape in self._shapes:
                calls = self._calls
                calls.append((agent, model, outcome, usage, cost, latency_s, cached, retries))
                if len(calls) >= CALL_BATCH:
                    with self._hits_lock:
                        self._flush_calls()
                return
            with self._hits_lock:
                self._flush_calls()
                self._observe_now(agent, model, outcome, usage, cost, latency_s, cached, retries)
                self._shapes.add(shape)
            return
        with self._hits_lock:
            self._flush_calls()
            self._observe_now(agent, model, outcome, usage, cost, latency_s, cached, retries)

    def _observe_now(
        self,
        agent: str,
        model: str,
        outcome: str,
        usage: Usage | None,
        cost: Decimal | None,
        latency_s: float,
        cached: bool,
        retries: int,
    ) -> None:
        child = self._child
        child(self.requests, agent, model, outcome).inc()
        if usage is not None:
            counts = _token_counts(usage)
            for counter, count in zip(self._token_series(agent, model), counts, strict=True):
                if count:  # the series exists (at 0) from here on; adding 0 would change nothing
                    counter.inc(count)
            if usage.web_search_requests:
                child(self.server_tools, agent, model, "web_search").inc(usage.web_search_requests)
        if cost is not None:
            child(self.cost, agent, model).inc(float(cost))
        elif usage is not None and (usage.total_tokens > 0 or usage.web_search_requests > 0):
            child(self.unpriced, agent, model).inc()
        child(self.latency, agent, model).observe(latency_s)
        child(self.cache, "hit" if cached else "miss").inc()
        if retries > 0:
            child(self.retries, agent, model).inc(retries)

    def _flush_calls(self) -> None:
        """Add the calls waiting (with the flush lock held). Counts are whole numbers, added
        as one sum per series (exact); costs and latencies are added value by value, in
        order, as one by one, so each series ends up the same float."""
        calls = self._calls
        count = len(calls)  # only flushes pop, under the lock: these are there
        if not count:
            return
        by_pair: dict[tuple[str, str], list[_Call]] = {}
        for _ in range(count):
            call = calls.popleft()
            found = by_pair.get(call[:2])
            if found is None:
                by_pair[call[:2]] = [call]
            else:
                found.append(call)
        child = self._child
        misses = hits = 0
        for pair, group in by_pair.items():
            agent, model = pair
            for outcome, n in collections.Counter(map(_OUTCOME, group)).items():
                child(self.requests, agent, model, outcome).inc(n)
            sums = map(sum, zip(*map(_token_counts, map(_USAGE, group)), strict=True))
            for counter, n in zip(self._token_series(agent, model), sums, strict=True):
                if n:
                    counter.inc(n)
            retries = sum(map(_RETRIES, group))
            if retries:
                child(self.retries, agent, model).inc(retries)
            add = child(self.cost, agent, model).inc
            for cost in map(_COST, group):
                add(float(cost))
            _observe_all(child(self.latency, agent, model), list(map(_LATENCY, group)))
            cached = sum(map(_CACHED, group))
            hits += cached
            misses += len(group) - cached
        if hits:
            child(self.cache, "hit").inc(hits)
        if misses:
            child(self.cache, "miss").inc(misses)

    def observe_hit(self, *, agent: str, model: str, latency_s: float) -> None:
        """Record one response-cache hit: what ``observe_call`` records for a call that used
        no tokens and cost $0, tallied here and added to the series in batches.

        The first hit per agent and model goes through ``observe_call`` (creating every
        series it would); later ones only change the three series a hit changes, since
        adding zero tokens and $0 changes nothing: their latencies wait until
        :meth:`flush_hits`, which runs when :data:`HIT_BATCH` of one series are waiting.
        """
        waiting = self._hits.get((agent, model))
        if waiting is not None:
            waiting.append(latency_s)
            if len(waiting) >= HIT_BATCH:
                self.flush_hits()
            return
        label = self._model_label(model)
        with self._hits_lock:
            self._flush_calls()
            self._observe_now(agent, label, "success", _NO_USAGE, _ZERO, latency_s, True, 0)
        if label != model:
            return  # a name past MODEL_LABELS: no queue of its own (each would be kept)
        child = self._child
        series = (
            child(self.requests, agent, model, "success"),
            child(self.latency, agent, model),
            child(self.cache, "hit"),
        )
        with self._hits_lock:
            self._hit_series[(agent, model)] = series  # before the queue a flush looks for
            self._hits.setdefault((agent, model), deque())

    def flush_hits(self) -> None:
        """Add the calls, then the hits, waiting to the Prometheus series (a collection does
        it first). The calls go first: each had been added at once before the hits did."""
        # Under the lock to the end: a scrape waits for a flush under way, so it never
        # misses hits that another thread has taken but not yet added.
        with self._hits_lock:
            self._flush_calls()
            for key, waiting in list(self._hits.items()):
                count = len(waiting)  # only flushes pop, under this lock: these are there
                if count:
                    requests, latency, cache = self._hit_series[key]
                    requests.inc(count)
                    cache.inc(count)
                    _observe_all(latency, [waiting.popleft() for _ in range(count)])

    def _model_label(self, model: str) -> str:
        """``model``, or :data:`OTHER_MODEL` once ``model_labels`` others label series."""
        models = self._models
        if model in models:
            return model
        if self._model_labels is not None and len(models) >= self._model_labels:
            return OTHER_MODEL
        models.add(model)  # two threads may both add the last: one name over, never more
        return model

    def redis_fallback(self, part: str) -> None:
        """Count one fall back from the shared Redis to this process's own state."""
        self._child(self.redis_fallbacks, part).inc()

    def watch_rate_limits(self, state: Callable[[], Mapping[str, Any]]) -> None:
        """Export ``state()`` (a transport's ``rate_limit_state``) as gauges at each scrape."""
        self.registry.register(RateLimitCollector(state))

    def _token_series(self, agent: str, model: str) -> tuple[Any, ...]:
        """The token counters of ``agent`` and ``model``, one per kind, made on first use."""
        found = self._tokens.get((agent, model))
        if found is None:
            kinds = (kind for kind, _ in _TOKEN_KINDS)
            found = tuple(self._child(self.tokens, agent, model, kind) for kind in kinds)
            self._tokens[(agent, model)] = found
        return found

    def _child(self, metric: Any, *labels: str) -> Any:
        # Looking up a labelled child costs more than the update itself: remember each one.
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        """The registry in Prometheus' text exposition format."""
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "127.0.0.1") -> tuple[WSGIServer, threading.Thread]:
        """Serve ``/metrics`` over HTTP from a daemon thread; ``port=0`` picks a free port.

        Binds to loopback by default: metrics name agents and models, so exposing them on
        every interface should be a deliberate choice. Stop with ``server.shutdown()``. A port
        or address that cannot be used raises :class:`InvalidArgumentError` saying why.
        """
        return _start(port, addr, self.registry)


def _observe_all(histogram: Any, values: list[float]) -> None:
    """``histogram.observe(v)`` for each of ``values``, with each bucket incremented once: the
    bucket counts are Prometheus' own (documented ``le`` buckets, private attributes), so
    anything unexpected there takes ``observe``. The sum is still added value by value, in
    order, as ``observe`` does, so it ends up the same float; it is read and set once, which
    is safe because this class changes its series only under its flush lock."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if (
        not (isinstance(bounds, list) and isinstance(buckets, list))
        or len(bounds) != len(buckets)
        or total is None
    ):
        for value in values:
            histogram.observe(value)
        return
    # A call of the value's inc per hit cost twice what the rest of a tracked hit's
    # counting does.
    summed = functools.reduce(operator.add, values, total.get())
    total.set(summed)
    # A value's bucket is the first bound at or above it (none for NaN, as in ``observe``).
    # Without NaN (the sum is a number) the values sort, and each bound's cumulative count
    # is one bisection of them.
    if summed == summed:
        ordered = sorted(values)
        below = 0
        for bound, bucket in zip(bounds, buckets, strict=True):
            upto = bisect.bisect_right(ordered, bound)
            if upto > below:
                bucket.inc(upto - below)
                below = upto
        return
    found = collections.Counter(bisect.bisect_left(bounds, v) for v in values if v == v)
    for index, count in found.items():
        buckets[index].inc(count)


def metrics_from_rows(rows: Iterable[LedgerRow]) -> Metrics:
    """A fresh :class:`Metrics` holding the counters that ``rows`` add up to (every model
    its own label: made anew at each scrape, they hold nothing, and a cap by the rows'
    order would move a model's series to "other" when a row came late)."""
    metrics = Metrics(model_labels=None)
    for row in rows:
        metrics.observe_call(
            agent=row.agent,
            model=row.model,
            outcome=row.outcome,
            usage=None if row.cached else row.usage,
            cost=row.cost_usd,
            latency_s=(row.latency_ms or 0.0) / 1000,
            cached=row.cached,
            retries=max(0, row.attempts - 1),
        )
    return metrics


class RowSource(Protocol):
    """Anything that lists ledger rows: a ``Ledger`` or a ``UsageReports``."""

    def rows(self) -> Sequence[LedgerRow]: ...


class LedgerCollector(Collector):
    """Serves a ledger's totals: every scrape re-reads it, so any process's calls count."""

    def __init__(self, source: RowSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        yield from metrics_from_rows(self._source.rows()).registry.collect()


class RateLimitCollector(Collector):
    """Gauges of a running orchestrator's admission state, read when scraped.

    ``claude_force_concurrency_limit`` and ``claude_force_in_flight`` (the gate), and per
    model class and bucket (``requests``, ``input-tokens``, ``output-tokens``):
    ``claude_force_rate_limit`` (per minute), ``claude_force_rate_limit_level`` (available
    now) and ``claude_force_rate_limit_unseen_share`` (the share of the refill others take);
    ``claude_force_rate_limit_waiting`` counts requests queued per class.
    """

    def __init__(self, state: Callable[[], Mapping[str, Any]]) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        yield GaugeMetricFamily(
            "claude_force_concurrency_limit",
            "Requests allowed in flight at once now (lowered by overload, 529).",
            value=float(state.get("concurrency_limit", 0)),
        )
        yield GaugeMetricFamily(
            "claude_force_in_flight",
            "Requests in flight now.",
            value=float(state.get("in_flight", 0)),
        )
        labels = ["model_class", "bucket"]
        limit = GaugeMetricFamily(
            "claude_force_rate_limit", "A bucket's limit per minute.", labels=labels
        )
        level = GaugeMetricFamily(
            "claude_force_rate_limit_level", "What a bucket holds now.", labels=labels
        )
        unseen = GaugeMetricFamily(
            "claude_force_rate_limit_unseen_share",
            "The share of a bucket's refill taken by consumers this process cannot see.",
            labels=labels,
        )
        waiting = GaugeMetricFamily(
            "claude_force_rate_limit_waiting",
            "Requests waiting for their model class's rate limits.",
            labels=["model_class"],
        )
        classes: Mapping[str, Any] = state.get("classes") or {}
        for name, cls in classes.items():
            waiting.add_metric([name], float(cls.get("waiting", 0)))
            for kind, bucket in (cls.get("buckets") or {}).items():
                limit.add_metric([name, kind], float(bucket["limit"]))
                level.add_metric([name, kind], float(bucket["level"]))
                unseen.add_metric([name, kind], float(bucket.get("unseen_share", 0.0)))
        yield from (limit, level, unseen, waiting)


def serve_ledger(
    source: RowSource, port: int, addr: str = "127.0.0.1"
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``/metrics`` computed from ``source``'s rows; ``port=0`` picks a free port."""
    registry = CollectorRegistry()
    registry.register(LedgerCollector(source))
    return _start(port, addr, registry)


def _start(
    port: int, addr: str, registry: CollectorRegistry
) -> tuple[WSGIServer, threading.Thread]:
    try:
        return start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise InvalidArgumentError(_bind_problem(port, addr, exc)) from exc
    except OverflowError as exc:  # the socket module's answer to a port beyond 65535
        raise InvalidArgumentError(
            f"cannot serve metrics on port {port}: ports run from 0 to 65535; "
            "choose another port (--port 0 picks a free one)"
        ) from exc


def _bind_problem(port: int, addr: str, exc: OSError) -> str:
    """What went wrong binding ``addr:port``, and what to do instead."""
    where = f"cannot serve metrics on {addr}:{port}"
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return f"{where}: {addr!r} is not an address of this machine; try --host 127.0.0.1"
    if exc.errno == errno.EADDRINUSE:
        reason = f"port {port} is already in use"
    elif exc.errno == errno.EACCES:
        reason = "permission denied (ports below 1024 need extra rights)"
    else:
        reason = exc.strerror or str(exc)
    return f"{where}: {reason}; choose another port (--port 0 picks a free one)"
