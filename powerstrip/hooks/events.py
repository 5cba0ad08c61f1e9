"""Event hooks: Docker events (``GET /events``) POSTed to adapters.

The ``events:`` section of the adapters file maps ``"TYPE ACTION"`` globs to
adapters::

    events:
      "container die": [flocker]
      "network *": [audit]

While the current configuration has event rules, :class:`EventHooks` follows
dockerd's event stream (:class:`~powerstrip.hooks.event_stream.EventFollower`) and hands each event to the
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

from collections import deque
from fnmatch import fnmatchcase
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from powerstrip.config.spec import AdapterSpec, Config
from powerstrip.hooks.event_stream import EventFollower, describe_failure

#: Log namespaces are part of the interface (log filters name them): kept across moves.
log = Logger(namespace="powerstrip.events")

#: The protocol version of event calls, whatever the adapter's ``protocol:``.
EVENT_PROTOCOL_VERSION = 2
#: Events an adapter's queue holds (the one being delivered included) before new ones are dropped.
DEFAULT_QUEUE_BOUND = 10_000
#: Seconds before the first retry of a failed delivery; doubled on each failure up to :data:`RETRY_MAX`.
RETRY_MIN = 0.2
RETRY_MAX = 30.0
#: At most one "queue full" log line per adapter per this many seconds.
DROP_LOG_INTERVAL = 10.0

#: The ``reason`` label of dropped events.
DROP_FULL, DROP_REMOVED, DROP_SHUTDOWN = "queue_full", "removed", "shutdown"

# Docker's event types: "powerstrip explain" takes "TYPE ACTION" for these.
DOCKER_EVENT_TYPES = frozenset(
    {"builder", "config", "container", "daemon", "image", "network", "node", "plugin", "secret", "service", "volume"}
)


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
                d = self._inflight = defer.maybeDeferred(
                    self.hooks.client.post, self.adapter, event_payload(self.events[0])
                )
                d.addBoth(self._settled, d)
        finally:
            self._pumping = False

    def _settled(self, result: Any, d: defer.Deferred[Any]) -> None:
        if d is not self._inflight:
            return None  # cancelled by stop()
        self._inflight = None
        if isinstance(result, Failure):
            why = describe_failure(result)
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
            log.warn(
                "events: delivery to adapter {adapter} failed ({why}); retrying with backoff, "
                "{n} event(s) queued for it",
                adapter=self.name,
                why=why,
                n=len(self.events),
            )
        self._timer = self.hooks.clock.callLater(self._delay, self._retry)
        self._delay = min(self._delay * 2, RETRY_MAX)
        return None

    def _delivered(self) -> None:
        self.events.popleft()
        self.hooks.metrics.event_delivered(self.name)
        self._depth()
        if self.failures:
            log.info(
                "events: adapter {adapter} takes events again after {n} failed attempt(s)",
                adapter=self.name,
                n=self.failures,
            )
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
            log.warn(
                "events: adapter {adapter}'s queue is full ({bound} events): dropping new events for it",
                adapter=self.name,
                bound=self.bound,
            )
            self._drop_timer = self.hooks.clock.callLater(DROP_LOG_INTERVAL, self._log_drops)
        else:
            self._unlogged_drops += 1

    def _log_drops(self) -> None:
        self._drop_timer = None
        if self._unlogged_drops:
            log.warn(
                "events: dropped {n} more event(s) for adapter {adapter} in {s:g}s: its queue is full",
                n=self._unlogged_drops,
                adapter=self.name,
                s=DROP_LOG_INTERVAL,
            )
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

    def __init__(
        self,
        resource: Any,
        reactor: Any = None,
        queue_bound: int = DEFAULT_QUEUE_BOUND,
        drain_timeout: float = 10.0,
        clock: Any = None,
    ) -> None:
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
        self.follower = EventFollower(
            reactor,
            resource.upstream.endpoint,
            self._event,
            docker=str(resource.upstream.address),
            clock=self.clock,
            on_connected=self.metrics.events_connected,
        )
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
                log.warn(
                    "events: adapter {adapter} has no event rule any more: dropped its {n} undelivered event(s)",
                    adapter=name,
                    n=dropped,
                )

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
            log.warn(
                "events: shutdown: dropped {n} undelivered event(s) ({detail})",
                n=sum(lost.values()),
                detail=", ".join(f"{name}: {n}" for name, n in lost.items()),
            )
