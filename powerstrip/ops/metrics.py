"""Prometheus metrics, served by the admin listener at ``GET /metrics``.

Each :class:`~powerstrip.proxy.route.Proxy` owns one
:class:`Metrics` with its own ``CollectorRegistry`` (never the process-wide
default), so several proxies in one process count apart.

Requests are recorded once, when they end (:meth:`Metrics.request_done`);
the proxy's hot path does no other metrics work. Labelled children are
looked up once per label set and kept, so a request costs a few dict hits
and uncontended lock-protected increments.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sized
from typing import TYPE_CHECKING, Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from powerstrip.hooks.interface import AdapterFault

if TYPE_CHECKING:
    from powerstrip.proxy.exchange import Exchange

# Counters would each also export a ``*_created`` timestamp series, which
# doubles the page for no use here. (A process-wide setting of the library.)
prometheus_client.disable_created_metrics()

#: The ``route`` label of a request no endpoint rule matched.
UNMATCHED = "none"
#: The ``code`` label of a request that ended before any status was known
#: (the client went away while Powerstrip was still waiting).
NO_CODE = "none"
#: Seconds: 1 ms (a ``/_ping``) up to a minute (image pulls, builds); longer
#: calls (streams, ``logs -f``, ``events``) land in ``+Inf``.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Seconds: adapter calls are bounded by their timeout (default a few seconds).
HOOK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Methods become labels as they are; anything else is "other", so a client
# cannot create label values (series) at will.
_METHODS = {m: m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
_FAULT = AdapterFault.__name__


def method_label(method: str) -> str:
    """The ``method`` label for a request method as the client sent it."""
    return _METHODS.get(method) or _METHODS.get(method.upper(), "other")


class _Traffic:
    """Requests, their durations and bytes, counted in plain Python numbers.

    A request's end is on every request's path: a ``prometheus_client``
    counter increment and histogram observation take a lock each and cost
    more than the rest of a pass-through's bookkeeping. Counting here costs a
    dict lookup, a bisect and a few additions; the metric families are built
    only when ``/metrics`` is scraped.
    """

    def __init__(self) -> None:
        #: (route, method label, code label) -> requests ended.
        self.requests: dict[tuple[str, str, str], int] = {}
        #: route -> [bucket counts (last: +Inf), sum of seconds].
        self.durations: dict[str, list[Any]] = {}
        self.bytes_in = 0
        self.bytes_out = 0
        self._keys: dict[tuple[str, str, int | None], tuple[str, str, str]] = {}

    def add(self, route: str, method: str, code: int | None, seconds: float, bytes_in: int, bytes_out: int) -> None:
        """Count one request that ended."""
        raw = (route, method, code)
        key = self._keys.get(raw)
        if key is None:
            # Keyed by label values (never raw client input): as small as the series.
            key = self._keys[raw] = (route, method_label(method), NO_CODE if code is None else str(code))
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.durations.get(route)
        if hist is None:
            hist = self.durations[route] = [[0] * (len(DURATION_BUCKETS) + 1), 0.0]
        hist[0][bisect_left(DURATION_BUCKETS, seconds)] += 1
        hist[1] += seconds
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out

    def collect(self) -> Iterator[Any]:
        """The metric families, for the registry (``/metrics``)."""
        requests = CounterMetricFamily(
            "powerstrip_requests",
            "Client requests ended (answered, failed or abandoned), by endpoint rule, method and status",
            labels=["route", "method", "code"],
        )
        for labels, n in list(self.requests.items()):
            requests.add_metric(list(labels), n)
        yield requests
        duration = HistogramMetricFamily(
            "powerstrip_request_duration_seconds",
            "Time from a request's head arriving to its end (for streams: to the stream's close)",
            labels=["route"],
        )
        for route, (counts, total) in list(self.durations.items()):
            cumulative, buckets = 0, []
            for bound, n in zip((*DURATION_BUCKETS, float("inf")), counts, strict=True):
                cumulative += n
                buckets.append((floatToGoString(bound), cumulative))
            duration.add_metric([route], buckets, total)
        yield duration
        yield CounterMetricFamily(
            "powerstrip_client_received_bytes",
            "Bytes received from clients: request bodies passed on, and hijacked-stream bytes",
            value=self.bytes_in,
        )
        yield CounterMetricFamily(
            "powerstrip_client_sent_bytes",
            "Bytes sent to clients: response bodies, and hijacked-stream bytes",
            value=self.bytes_out,
        )


class Metrics:
    """The metrics of one proxy; ``registry`` is what ``/metrics`` exposes.

    ``inflight`` and ``streams`` are the proxy's live sets of requests being
    answered and hijacked streams: the gauges read their size at scrape time.
    """

    def __init__(self, inflight: Sized, streams: Sized) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        #: Requests ended, their durations and byte counts: plain counters, read at scrape time.
        self.traffic = _Traffic()
        reg.register(self.traffic)
        self.hook_calls = Counter(
            "powerstrip_hook_calls",
            "Adapter calls, by adapter, phase and outcome",
            ["adapter", "phase", "outcome"],
            registry=reg,
        )
        self.hook_faults = Counter(
            "powerstrip_hook_faults",
            "Adapter calls that failed (no usable answer), by adapter",
            ["adapter"],
            registry=reg,
        )
        self.hook_duration = Histogram(
            "powerstrip_hook_duration_seconds",
            "Adapter call time, by adapter and phase",
            ["adapter", "phase"],
            buckets=HOOK_BUCKETS,
            registry=reg,
        )
        self.streams = Counter("powerstrip_streams", "Hijacked streams begun (attach, exec, BuildKit)", registry=reg)
        Gauge("powerstrip_streams_active", "Hijacked streams open now", registry=reg).set_function(streams.__len__)
        Gauge(
            "powerstrip_requests_in_flight", "Requests being answered now (streams not included)", registry=reg
        ).set_function(inflight.__len__)
        reloads = Counter(
            "powerstrip_config_reloads",
            "Adapters file reloads (SIGHUP, --watch-config), by result",
            ["result"],
            registry=reg,
        )
        # Both results exist from the start: an alert on "failed" needs a 0 to rise from.
        self._reloads = {True: reloads.labels("ok"), False: reloads.labels("failed")}
        # Event hooks (powerstrip.hooks.events).
        self.event_queued = Gauge(
            "powerstrip_event_queue_depth",
            "Docker events waiting for an event hook adapter (the one being delivered included), by adapter",
            ["adapter"],
            registry=reg,
        )
        self.event_deliveries = Counter(
            "powerstrip_events_delivered",
            "Docker events an adapter took (answered 2xx), by adapter",
            ["adapter"],
            registry=reg,
        )
        self.event_retries = Counter(
            "powerstrip_event_delivery_failures",
            "Event deliveries that failed (non-2xx answer or fault) and are retried, by adapter",
            ["adapter"],
            registry=reg,
        )
        self.event_drops = Counter(
            "powerstrip_events_dropped",
            "Docker events never delivered, by adapter and reason (queue_full, removed, shutdown)",
            ["adapter", "reason"],
            registry=reg,
        )
        self.events_in = Counter(
            "powerstrip_events_received", "Docker events read from dockerd's event stream", registry=reg
        )
        self.event_stream_up = Gauge(
            "powerstrip_events_connected", "1 while Powerstrip follows dockerd's event stream, else 0", registry=reg
        )
        refused = Counter(
            "powerstrip_refused",
            "Requests and connections Powerstrip refused itself, by status: 400 "
            "unreadable request, 408 too slow, 431 head too large, 503 over --max-connections or --max-buffered",
            ["code"],
            registry=reg,
        )
        self._refused: dict[int, Any] = {code: refused.labels(str(code)) for code in (400, 408, 431, 503)}
        self._refused_counter = refused
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}  # (metric, labels) -> child

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request_done(self, exchange: Exchange) -> None:
        """Record a request that has ended, however it ended (call once per request)."""
        flow = exchange.flow
        bytes_in, bytes_out = exchange.bytes_in, exchange.bytes_out
        splice = exchange.splice
        if splice is not None:
            bytes_in += splice.bytes_in
            bytes_out += splice.bytes_out
        self.traffic.add(
            flow.route.patterns[0] if flow.route.patterns else UNMATCHED,
            exchange.head.method,
            exchange.status,
            time.monotonic() - flow.started,
            bytes_in,
            bytes_out,
        )
        for hook in flow.hooks:
            self._child(self.hook_calls, hook.adapter, hook.phase, hook.outcome).inc()
            self._child(self.hook_duration, hook.adapter, hook.phase).observe(hook.seconds)
            if hook.outcome == _FAULT:
                self._child(self.hook_faults, hook.adapter).inc()

    def refused(self, code: int) -> None:
        """Count a request or connection Powerstrip refused itself with ``code``."""
        child = self._refused.get(code)
        if child is None:
            child = self._refused[code] = self._refused_counter.labels(str(code))
        child.inc()

    def stream_started(self) -> None:
        """Count a hijacked or upgraded stream that began."""
        self.streams.inc()

    def reloaded(self, ok: bool) -> None:
        """Count a configuration reload attempt and whether it took effect."""
        self._reloads[ok].inc()

    def event_queue_depth(self, adapter: str, depth: int) -> None:
        """An event hook adapter's queue now holds ``depth`` events."""
        self._child(self.event_queued, adapter).set(depth)

    def event_delivered(self, adapter: str) -> None:
        """An event hook adapter took an event."""
        self._child(self.event_deliveries, adapter).inc()

    def event_failed(self, adapter: str) -> None:
        """An event delivery failed; it is retried."""
        self._child(self.event_retries, adapter).inc()

    def events_dropped(self, adapter: str, reason: str, n: int = 1) -> None:
        """``n`` events for ``adapter`` are dropped undelivered, for ``reason``."""
        self._child(self.event_drops, adapter, reason).inc(n)

    def event_received(self) -> None:
        """An event came from dockerd's event stream."""
        self.events_in.inc()

    def events_connected(self, up: bool) -> None:
        """The event stream is up (or down)."""
        self.event_stream_up.set(1 if up else 0)
