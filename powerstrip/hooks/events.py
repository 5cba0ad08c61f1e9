"""Event hooks: Docker events (``GET /events``) POSTed to adapters.

The ``events:`` section of the adapters file maps ``"TYPE ACTION"`` globs to
adapters::

    events:
      "container die": [flocker]
      "network *": [audit]

While the current configuration has event rules, :class:`EventHooks` follows
dockerd's event stream (:class:`EventFollower`) and hands each event to the
adapters of the rules it matches (matched with the configuration current when
it arrives). Each adapter has its own bounded queue (:class:`EventQueue`):
one delivery in flight, in order, the head retried with exponential backoff
until the adapter answers 2xx, so a slow or failing adapter holds up nobody
else. A full queue drops new events for its adapter (counted, and logged at
most once per :data:`DROP_LOG_INTERVAL`).

The stream is resumed after a lost connection or a dockerd restart with
``since=<timeNano of the last event seen>``; dockerd's ``since`` is
inclusive, so the events already seen at exactly that time are remembered
and skipped when they come again. dockerd keeps only its last 256 events in
memory (and none across its own restart), so an outage longer than that, or
events the old daemon emitted as it shut down, cannot be recovered.

Each event is POSTed as ``{"PowerstripProtocolVersion": 2, "Type": "event",
"Event": <the Docker event, unchanged>}`` whatever the adapter's
``protocol:`` (events came with version 2).
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any, cast

from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss, stringToDatetime
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from powerstrip import __version__
from powerstrip.config.spec import AdapterSpec, Config
from powerstrip.hooks.interface import AdapterFault
from powerstrip.wire.endpoints import FixedEndpoint

#: Log namespaces are part of the interface (log filters name them): kept across moves.
log = Logger(namespace="powerstrip.events")

#: The protocol version of event calls, whatever the adapter's ``protocol:``.
EVENT_PROTOCOL_VERSION = 2
#: Events an adapter's queue holds (the one being delivered included) before new ones are dropped.
DEFAULT_QUEUE_BOUND = 10_000
#: Seconds before the first retry of a failed delivery; doubled on each failure up to :data:`RETRY_MAX`.
RETRY_MIN = 0.2
RETRY_MAX = 30.0
#: Seconds before the first reconnection to dockerd's event stream; doubled up to :data:`RECONNECT_MAX`.
RECONNECT_MIN = 0.2
RECONNECT_MAX = 10.0
#: A stream that stayed up this long (seconds) was a good one: the next reconnection starts from the minimum.
STABLE_AFTER = 1.0
#: Seconds dockerd may take to answer ``GET /events`` with a head.
HEAD_TIMEOUT = 30.0
#: At most one "queue full" log line per adapter per this many seconds.
DROP_LOG_INTERVAL = 10.0
#: A line of the event stream longer than this is not an event (the stream is reconnected).
MAX_LINE = 1024 * 1024

#: The ``reason`` label of dropped events.
DROP_FULL, DROP_REMOVED, DROP_SHUTDOWN = "queue_full", "removed", "shutdown"

# Docker's event types: "powerstrip explain" takes "TYPE ACTION" for these.
DOCKER_EVENT_TYPES = frozenset({"builder", "config", "container", "daemon", "image", "network", "node",
                                "plugin", "secret", "service", "volume"})


def event_kind(event: dict[str, Any]) -> tuple[str, str]:
    """An event's ``(Type, Action)`` (events of API versions before 1.22 have only ``status``)."""
    return str(event.get("Type") or "container"), str(event.get("Action") or event.get("status") or "")


def match_event(config: Config, type_: str, action: str) -> tuple[tuple[str, ...], tuple[AdapterSpec, ...]]:
    """The event rules of ``config`` matching an event of ``type_`` and ``action`` (their
    patterns, file order) and the adapters it goes to: each once, at its first position."""
    patterns: list[str] = []
    adapters: dict[str, AdapterSpec] = {}
    for rule in config.events:
        if fnmatchcase(type_, rule.type) and fnmatchcase(action, rule.action):
            patterns.append(rule.pattern)
            for adapter in rule.adapters:
                adapters.setdefault(adapter.name, adapter)
    return tuple(patterns), tuple(adapters.values())


def event_payload(event: dict[str, Any]) -> dict[str, Any]:
    """What an event hook adapter is POSTed for ``event``."""
    return {"PowerstripProtocolVersion": EVENT_PROTOCOL_VERSION, "Type": "event", "Event": event}


def since_param(nanos: int) -> str:
    """A ``since`` value dockerd reads to the nanosecond: ``1732540000.123456789``."""
    return f"{nanos // 1_000_000_000}.{nanos % 1_000_000_000:09d}"


def _nanos(event: dict[str, Any]) -> int | None:
    nano = event.get("timeNano")
    if isinstance(nano, int) and not isinstance(nano, bool):
        return nano
    secs = event.get("time")
    if isinstance(secs, int) and not isinstance(secs, bool):
        return secs * 1_000_000_000
    return None


def _describe(failure: Failure) -> str:
    if failure.check(AdapterFault):
        # The fault names the adapter already; the log line does too.
        return str(failure.value).split("): ", 1)[-1]
    if failure.check(defer.TimeoutError):
        return "no answer in time"
    if isinstance(failure.value, ResponseFailed):  # failure.check(ResponseFailed), narrowing for mypy
        reasons = failure.value.reasons
        if any(r.check(ConnectionDone) for r in reasons):
            return "dockerd closed it"
        return "; ".join(r.getErrorMessage() for r in reasons)
    return failure.getErrorMessage() or failure.type.__name__  # type: ignore[union-attr]  # None only for a Failure of no exception


class _StreamReader(Protocol):
    """Splits the body of ``GET /events`` into lines for its follower."""

    def __init__(self, follower: EventFollower) -> None:
        self.follower = follower
        self._buf = b""
        self._skipping = False  # inside a line over MAX_LINE: discarded up to its end

    def dataReceived(self, data: bytes) -> None:
        if self._skipping:
            end = data.find(b"\n")
            if end < 0:
                return
            data, self._skipping = data[end + 1:], False
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            if self.follower._reader is not self:
                return  # stopped by an earlier line's callback
            if line.strip():
                self.follower._line(line)
        if len(self._buf) > MAX_LINE:
            log.warn("events: skipped a line of Docker's event stream longer than {n} bytes", n=MAX_LINE)
            self._buf, self._skipping = b"", True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.follower._stream_ended(self, reason)


class EventFollower:
    """Follows dockerd's ``GET /events``, handing each new event to ``on_event``.

    Reconnects with backoff (:data:`RECONNECT_MIN` doubling to
    :data:`RECONNECT_MAX`) and resumes with ``since`` so nothing between is
    missed, skipping the events at the resume boundary it has already seen.
    Logs one line when the stream is lost and one when it is back. ``clock``
    schedules its timers (the reactor unless a test gives another).
    """

    def __init__(self, reactor: Any, endpoint: Any, on_event: Callable[[dict[str, Any]], None], docker: str = "Docker",
                 clock: Any = None, on_connected: Callable[[bool], None] | None = None) -> None:
        self._agent = Agent.usingEndpointFactory(reactor, FixedEndpoint(endpoint))
        self._clock = clock or reactor
        self._on_event = on_event
        self._on_connected = on_connected or (lambda up: None)
        self.docker = docker
        self.running = False
        #: Whether the stream is up now.
        self.connected = False
        #: ``timeNano`` of the latest event seen, and the keys of those seen at exactly that time.
        self.last_nano: int | None = None
        self._boundary: set[str] = set()
        # Where to resume when no event came yet: when the first stream began.
        self._start_nano: int | None = None
        self._request: defer.Deferred[IResponse] | None = None
        self._reader: _StreamReader | None = None
        self._timer: Any = None
        self._delay = RECONNECT_MIN
        self._since_up = 0.0
        self._down_logged = False
        self._ever_connected = False

    def start(self) -> None:
        """Begin following from now (no replay of earlier events); no-op if following."""
        if self.running:
            return
        self.running = True
        self.last_nano, self._boundary, self._start_nano = None, set(), None
        self._delay, self._down_logged, self._ever_connected = RECONNECT_MIN, False, False
        self._connect()

    def stop(self) -> None:
        """Stop following: close the stream, cancel a pending reconnection."""
        if not self.running:
            return
        self.running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        request, self._request = self._request, None
        if request is not None:
            request.cancel()
        reader, self._reader = self._reader, None
        if reader is not None and reader.transport is not None:
            # Protocol declares an ITransport; deliverBody gives a producer (TransportProxyProducer).
            cast(IPushProducer, reader.transport).stopProducing()
        self._set_connected(False)

    @property
    def next_attempt(self) -> float | None:
        """When (on its clock) the next connection attempt is due, if one is waiting."""
        return self._timer.getTime() if self._timer is not None and self._timer.active() else None

    def uri(self) -> bytes:
        """The request URI of the next connection: ``since`` once there is somewhere to resume from."""
        resume = self.last_nano if self.last_nano is not None else self._start_nano
        if resume is None:
            return b"http://docker/events"
        return b"http://docker/events?since=" + since_param(resume).encode()

    def _connect(self) -> None:
        self._timer = None
        d = self._request = self._agent.request(
            b"GET", self.uri(), Headers({b"User-Agent": [f"powerstrip/{__version__} (event hooks)".encode()]}))
        d.addTimeout(HEAD_TIMEOUT, self._clock)
        d.addCallbacks(self._response, self._failed, callbackArgs=(d,), errbackArgs=(d,))

    def _response(self, response: Any, d: defer.Deferred[IResponse]) -> None:
        if d is not self._request:
            response.deliverBody(Protocol())  # stopped meanwhile: let the connection go
            return
        self._request = None
        if response.code != 200:
            response.deliverBody(Protocol())
            self._lost(f"dockerd answered GET /events with {response.code}")
            return
        if self._start_nano is None and self.last_nano is None:
            self._start_nano = self._date(response)
        self._reader = _StreamReader(self)
        self._since_up = self._clock.seconds()
        self._set_connected(True)
        if not self._ever_connected:
            log.info("events: following Docker events at {docker}", docker=self.docker)
        elif self._down_logged:
            log.info("events: following Docker events at {docker} again", docker=self.docker)
        self._down_logged, self._ever_connected = False, True
        response.deliverBody(self._reader)

    def _date(self, response: Any) -> int:
        # dockerd's own clock (the one its events' times and "since" use), to the second.
        date = response.headers.getRawHeaders(b"date", [None])[-1]
        try:
            seconds: int = stringToDatetime(date)
            return seconds * 1_000_000_000
        except (AttributeError, TypeError, ValueError, IndexError):  # absent or odd: this host's clock
            return int(time.time()) * 1_000_000_000

    def _failed(self, failure: Failure, d: defer.Deferred[IResponse]) -> None:
        if d is not self._request:
            return  # stopped: the cancellation is ours
        self._request = None
        self._lost(f"cannot reach it: {_describe(failure)}")

    def _stream_ended(self, reader: _StreamReader, reason: Failure) -> None:
        if reader is not self._reader:
            return
        self._reader = None
        if reason.check(ResponseDone, PotentialDataLoss):
            self._lost("the stream ended")
        else:
            self._lost(f"the connection was lost ({_describe(reason)})")

    def _lost(self, why: str) -> None:
        was_up = self.connected
        self._set_connected(False)
        if was_up and self._clock.seconds() - self._since_up >= STABLE_AFTER:
            self._delay = RECONNECT_MIN
        if not self._down_logged:
            self._down_logged = True
            log.warn("events: not following Docker events at {docker}: {why}; retrying until it answers",
                     docker=self.docker, why=why)
        if self.running:
            self._timer = self._clock.callLater(self._delay, self._connect)
            self._delay = min(self._delay * 2, RECONNECT_MAX)

    def _set_connected(self, up: bool) -> None:
        if up != self.connected:
            self.connected = up
            self._on_connected(up)

    def _line(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            log.warn("events: skipped a line of Docker's event stream that is not JSON: {line!r}", line=line[:200])
            return
        if not isinstance(event, dict):
            return
        nano = _nanos(event)
        if nano is not None:
            if self.last_nano is None or nano > self.last_nano:
                self.last_nano, self._boundary = nano, {_key(event)}
            elif nano == self.last_nano:
                key = _key(event)
                if key in self._boundary:
                    return  # seen before the reconnection: "since" is inclusive
                self._boundary.add(key)
            # An earlier time than the last (dockerd stamps events before it
            # orders them): new all the same, and the resume point stays.
        try:
            self._on_event(event)
        except Exception:  # a bug must not end the stream (and be retried on every replay)
            log.failure("events: handling a Docker event failed: {event!r}", event=event)


def _key(event: dict[str, Any]) -> str:
    return json.dumps(event, sort_keys=True, separators=(",", ":"))


class EventQueue:
    """One adapter's undelivered events: delivered one at a time, in order.

    A delivery that is not answered 2xx is retried (the same event, so order
    holds) after :data:`RETRY_MIN` seconds, doubling to :data:`RETRY_MAX`.
    """

    def __init__(self, hooks: EventHooks, adapter: AdapterSpec, bound: int) -> None:
        self.hooks = hooks
        #: The adapter as the current configuration has it (a reload may change its URL).
        self.adapter = adapter
        self.name = adapter.name
        self.bound = bound
        self.events: deque[dict[str, Any]] = deque()
        #: Failed attempts at the head event, since the last success.
        self.failures = 0
        #: No more deliveries (shutdown, or the adapter was removed).
        self.stopped = False
        self._inflight: defer.Deferred[Any] | None = None  # the adapter client's post
        self._timer: Any = None
        self._delay = RETRY_MIN
        self._pumping = False
        self._unlogged_drops = 0
        self._drop_timer: Any = None

    @property
    def idle(self) -> bool:
        """Nothing left to do: empty, or stopped."""
        return self.stopped or not self.events

    def push(self, event: dict[str, Any]) -> None:
        """Queue ``event`` for delivery, or drop it if the queue is full."""
        if self.stopped:
            return
        if len(self.events) >= self.bound:
            self.hooks.metrics.events_dropped(self.name, DROP_FULL)
            self._log_drop()
            return
        self.events.append(event)
        self._depth()
        self._pump()

    def _pump(self) -> None:
        # A loop, not recursion: an in-process adapter answers synchronously,
        # and a long queue would otherwise nest one frame per event.
        if self._pumping:
            return
        self._pumping = True
        try:
            while self.events and self._inflight is None and self._timer is None and not self.stopped:
                d = self._inflight = defer.maybeDeferred(self.hooks.client.post, self.adapter,
                                                          event_payload(self.events[0]))
                d.addBoth(self._settled, d)
        finally:
            self._pumping = False

    def _settled(self, result: Any, d: defer.Deferred[Any]) -> None:
        if d is not self._inflight:
            return None  # cancelled by stop()
        self._inflight = None
        if isinstance(result, Failure):
            why = _describe(result)
        elif 200 <= result[0] < 300:
            self._delivered()
            return None
        else:
            why = f"answered {result[0]}"
        self.hooks.metrics.event_failed(self.name)
        self.failures += 1
        if self.hooks.stopping:
            self.stopped = True  # shutting down: no retries
            self.hooks._queue_idle()
            return None
        if self.failures == 1:
            log.warn("events: delivery to adapter {adapter} failed ({why}); retrying with backoff, "
                     "{n} event(s) queued for it", adapter=self.name, why=why, n=len(self.events))
        self._timer = self.hooks.clock.callLater(self._delay, self._retry)
        self._delay = min(self._delay * 2, RETRY_MAX)
        return None

    def _delivered(self) -> None:
        self.events.popleft()
        self.hooks.metrics.event_delivered(self.name)
        self._depth()
        if self.failures:
            log.info("events: adapter {adapter} takes events again after {n} failed attempt(s)",
                     adapter=self.name, n=self.failures)
        self.failures, self._delay = 0, RETRY_MIN
        if not self.events:
            self.hooks._queue_idle()
        self._pump()

    def _retry(self) -> None:
        self._timer = None
        self._pump()

    def _depth(self) -> None:
        self.hooks.metrics.event_queue_depth(self.name, len(self.events))

    def _log_drop(self) -> None:
        # One line when drops begin, then one per interval with the count: a
        # dead adapter on a busy host would otherwise flood the log.
        if self._drop_timer is None:
            log.warn("events: adapter {adapter}'s queue is full ({bound} events): dropping new events for it",
                     adapter=self.name, bound=self.bound)
            self._drop_timer = self.hooks.clock.callLater(DROP_LOG_INTERVAL, self._log_drops)
        else:
            self._unlogged_drops += 1

    def _log_drops(self) -> None:
        self._drop_timer = None
        if self._unlogged_drops:
            log.warn("events: dropped {n} more event(s) for adapter {adapter} in {s:g}s: its queue is full",
                     n=self._unlogged_drops, adapter=self.name, s=DROP_LOG_INTERVAL)
            self._unlogged_drops = 0
            self._drop_timer = self.hooks.clock.callLater(DROP_LOG_INTERVAL, self._log_drops)

    def stop(self, reason: str) -> int:
        """Stop delivering; drop what is left (counted under ``reason``). Returns how many."""
        self.stopped = True
        for timer in (self._timer, self._drop_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._drop_timer = None
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            inflight.cancel()
        left = len(self.events)
        self.events.clear()
        if left:
            self.hooks.metrics.events_dropped(self.name, reason, left)
        self._depth()
        return left


class EventHooks(service.Service):
    """The event hooks of a :class:`~powerstrip.proxy.route.Proxy`.

    Follows dockerd's events while ``resource.config`` has event rules (a
    reload that adds or removes them starts or stops following) and feeds
    the adapter queues. On a reload, the queues of adapters no event rule
    names any more are dropped (counted with ``reason="removed"``).

    On stop: following ends at once; queues that are delivering fine get up
    to ``drain_timeout`` seconds to empty, a failing adapter's queue is not
    retried; whatever is left then is dropped and logged.
    """

    def __init__(self, resource: Any, reactor: Any = None, queue_bound: int = DEFAULT_QUEUE_BOUND,
                 drain_timeout: float = 10.0, clock: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.resource = resource
        self.client = resource.adapters
        self.metrics = resource.metrics
        self.clock = clock or reactor
        self.queue_bound = queue_bound
        self.drain_timeout = drain_timeout
        #: Per adapter name.
        self.queues: dict[str, EventQueue] = {}
        self.stopping = False
        self.follower = EventFollower(reactor, resource.upstream.endpoint, self._event,
                                      docker=str(resource.upstream.address), clock=self.clock,
                                      on_connected=self.metrics.events_connected)
        self._drained: defer.Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self.stopping = False
        self.resource.config_observers.append(self.config_changed)
        self.config_changed(self.resource.config)

    def config_changed(self, config: Config) -> None:
        """A new configuration is in force: follow or not; drop queues of adapters it no longer names."""
        if not self.running or self.stopping:
            return
        if config.events and not self.follower.running:
            self.follower.start()
        elif not config.events and self.follower.running:
            self.follower.stop()
            log.info("events: no event rules any more: stopped following Docker events")
        named = {a.name: a for rule in config.events for a in rule.adapters}
        for name, queue in list(self.queues.items()):
            if name in named:
                queue.adapter = named[name]
                continue
            del self.queues[name]
            dropped = queue.stop(DROP_REMOVED)
            if dropped:
                log.warn("events: adapter {adapter} has no event rule any more: dropped its {n} undelivered "
                         "event(s)", adapter=name, n=dropped)

    def _event(self, event: dict[str, Any]) -> None:
        self.metrics.event_received()
        # The configuration in force now, not the one following began with.
        _, adapters = match_event(self.resource.config, *event_kind(event))
        for adapter in adapters:
            queue = self.queues.get(adapter.name)
            if queue is None:
                queue = self.queues[adapter.name] = EventQueue(self, adapter, self.queue_bound)
            queue.push(event)

    def stopService(self) -> defer.Deferred[None]:
        """Stop following; give the queues up to ``drain_timeout`` seconds; drop and log the rest."""
        super().stopService()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        if self.config_changed in self.resource.config_observers:
            self.resource.config_observers.remove(self.config_changed)
        self.follower.stop()
        self.stopping = True
        for queue in self.queues.values():
            if queue.failures:
                queue.stopped = True  # failing now: no retries while shutting down
        self._drained = defer.Deferred()
        timer = self.clock.callLater(self.drain_timeout, self._queue_idle, True)
        self._queue_idle()
        d = self._drained
        d.addCallback(lambda _: timer.active() and timer.cancel())
        d.addCallback(lambda _: self._drop_all())
        return d

    def _queue_idle(self, deadline: bool = False) -> None:
        if self._drained is None or self._drained.called:
            return
        if deadline or all(q.idle for q in self.queues.values()):
            self._drained.callback(None)

    def _drop_all(self) -> None:
        dropped = {name: q.stop(DROP_SHUTDOWN) for name, q in self.queues.items()}
        self.queues.clear()
        lost = {name: n for name, n in dropped.items() if n}
        if lost:
            log.warn("events: shutdown: dropped {n} undelivered event(s) ({detail})", n=sum(lost.values()),
                     detail=", ".join(f"{name}: {n}" for name, n in lost.items()))
