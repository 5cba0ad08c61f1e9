"""Following dockerd's event stream (``GET /events``), for the event hooks.

:class:`EventFollower` keeps one long-lived ``GET /events`` open, splits it
into events, and hands each new one to its owner
(:class:`~powerstrip.hooks.events.EventHooks`). After a lost connection or a
dockerd restart it reconnects with backoff and resumes with ``since=<timeNano
of the last event seen>``; dockerd's ``since`` is inclusive, so the events
already seen at exactly that time are remembered and skipped when they come
again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, cast

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
from powerstrip.hooks.interface import AdapterFault
from powerstrip.wire.endpoints import FixedEndpoint

#: Log namespaces are part of the interface (log filters name them): kept across moves.
log = Logger(namespace="powerstrip.events")

#: Seconds before the first reconnection to dockerd's event stream; doubled up to :data:`RECONNECT_MAX`.
RECONNECT_MIN = 0.2
RECONNECT_MAX = 10.0
#: A stream that stayed up this long (seconds) was a good one: the next reconnection starts from the minimum.
STABLE_AFTER = 1.0
#: Seconds dockerd may take to answer ``GET /events`` with a head.
HEAD_TIMEOUT = 30.0
#: A line of the event stream longer than this is not an event (the stream is reconnected).
MAX_LINE = 1024 * 1024


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


def _key(event: dict[str, Any]) -> str:
    return json.dumps(event, sort_keys=True, separators=(",", ":"))


def describe_failure(failure: Failure) -> str:
    """What went wrong with a delivery or the stream, for a log line."""
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
            data, self._skipping = data[end + 1 :], False
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

    def __init__(
        self,
        reactor: Any,
        endpoint: Any,
        on_event: Callable[[dict[str, Any]], None],
        docker: str = "Docker",
        clock: Any = None,
        on_connected: Callable[[bool], None] | None = None,
    ) -> None:
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
            b"GET", self.uri(), Headers({b"User-Agent": [f"powerstrip/{__version__} (event hooks)".encode()]})
        )
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
        self._lost(f"cannot reach it: {describe_failure(failure)}")

    def _stream_ended(self, reader: _StreamReader, reason: Failure) -> None:
        if reader is not self._reader:
            return
        self._reader = None
        if reason.check(ResponseDone, PotentialDataLoss):
            self._lost("the stream ended")
        else:
            self._lost(f"the connection was lost ({describe_failure(reason)})")

    def _lost(self, why: str) -> None:
        was_up = self.connected
        self._set_connected(False)
        if was_up and self._clock.seconds() - self._since_up >= STABLE_AFTER:
            self._delay = RECONNECT_MIN
        if not self._down_logged:
            self._down_logged = True
            log.warn(
                "events: not following Docker events at {docker}: {why}; retrying until it answers",
                docker=self.docker,
                why=why,
            )
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
