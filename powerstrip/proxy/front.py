"""The front: Powerstrip's own HTTP/1.1 server protocol, one per client connection.

A raw Twisted :class:`~twisted.internet.protocol.Protocol`, not twisted.web:
a request head is found with one ``bytes.find``, read once and strictly
(:func:`~powerstrip.wire.http11.parse_request_head`), and handed to an
:class:`~powerstrip.proxy.exchange.Exchange`, which carries it to dockerd and the
answer back. Bodies are framed here (``Content-Length`` counted, chunked
scanned) and passed on as received, or de-framed when hooks need them whole.

The connection's own life is a small state machine (:class:`Reading`):
waiting for a head, reading a body, waiting for the answer, draining a body
nobody wants, spliced (a raw byte stream after a hijack), closed. Requests
on one connection are answered one at a time, in order; bytes a client
pipelines meanwhile wait in a buffer.

It also owns the client-side limits: head size (431), the time a client may
keep Powerstrip waiting (idle between requests: quiet close; a head or a
buffered body that does not arrive whole within ``--client-timeout``: 408),
and the connection count (``--max-connections``). Time Powerstrip spends
answering is never held against the client, so a quiet ``logs -f``,
``events`` or hijacked stream stays open.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast
from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from powerstrip.hooks.flow import REQUEST_ID_HEADER, Flow, error_response, new_request_id
from powerstrip.hooks.peer import Peer, read_caller
from powerstrip.proxy.splice import Splice
from powerstrip.wire.http11 import (
    BadRequest,
    ChunkedFraming,
    ProtocolError,
    RequestHead,
    find_head_end,
    parse_request_head,
)
from powerstrip.wire.sender import Sender

#: Log namespaces are part of the interface (log filters name them): kept across moves.
log = Logger(namespace="powerstrip.front")

#: dockerd (Go's net/http) accepts request heads up to 1 MiB; registry
#: credentials in ``X-Registry-Config`` can be far larger than 16 KiB.
DEFAULT_MAX_HEAD = 1024 * 1024
#: How long a client may keep Powerstrip waiting for a request (or the next one).
DEFAULT_CLIENT_TIMEOUT = 120.0
#: Bytes a client may pipeline past the request being answered before
#: Powerstrip stops reading from it.
_PIPELINE_LIMIT = 64 * 1024

if TYPE_CHECKING:
    from twisted.internet.interfaces import ITransport

    from powerstrip.proxy.splice import IStreamTransport

_RESPONSES = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


class Carrier(TypingProtocol):
    """What carries one request on from the front (:class:`powerstrip.proxy.exchange.Exchange`).

    The front tells it what the client sends; it answers through the
    connection's own methods (``write``, ``answered``, ``hijack``...).
    """

    flow: Flow
    #: Whether an answer's head has gone to the client (a refusal then can only close).
    head_sent: bool

    def start(self) -> None:
        """The head is read and the front is ready: go."""

    def request_data(self, data: bytes) -> None:
        """A piece of the request body (de-framed when the front was asked to)."""

    def request_end(self) -> None:
        """The request body is complete."""

    def client_eof(self) -> None:
        """The client shut its write side."""

    def abandon(self) -> None:
        """The connection is gone or the request was refused: stop, and let go of everything."""


class _Counted(TypingProtocol):
    def refused(self, code: int) -> None: ...


class Entry(TypingProtocol):
    """Where the front hands each request (:class:`powerstrip.proxy.route.Proxy`, resource-shaped)."""

    reactor: Any
    #: Client connections open (the front adds its own; ``--max-connections`` counts them).
    connections: set[Any]

    @property
    def metrics(self) -> _Counted:
        """What the front counts (read-only here, so that any richer counter type fits)."""

    def exchange(self, client: FrontConnection, head: RequestHead) -> Carrier:
        """The carrier for the request ``head`` just read on ``client``."""

    def connection_closed(self, client: FrontConnection) -> None:
        """``client`` is gone."""


class Reading(enum.Enum):
    """Where one client connection is."""

    #: Waiting for (the rest of) a request head.
    HEAD = "head"
    #: Reading the body of the request being answered.
    BODY = "body"
    #: The request is read; its answer is on its way (pipelined bytes wait).
    ANSWERING = "answering"
    #: The answer was sent before the body was read: the rest is read and dropped, then close.
    DRAIN = "drain"
    #: Hijacked: a raw byte stream between the client and dockerd.
    SPLICED = "spliced"
    CLOSED = "closed"


@implementer(IHalfCloseableProtocol, IPushProducer)
class FrontConnection(Protocol):
    """One client connection: reads requests, hands each to an Exchange.

    It is also the push producer dockerd's connection pauses while an upload
    outpaces it (``pauseProducing``/``resumeProducing``).
    """

    transport: IStreamTransport  # set by makeConnection, before any other call
    sender: Sender  # writes to the client (set in connectionMade)

    def __init__(self, proxy: Entry, timeout: float | None, max_head: int) -> None:
        self.proxy = proxy
        self.timeout = timeout
        self.max_head = max_head
        self.state = Reading.HEAD
        self.exchange: Carrier | None = None
        self.splice: Splice | None = None
        #: The client shut its write side.
        self.read_eof = False
        self._buf = b""
        self._left = 0  # Content-Length body bytes still to come
        self._body_length = 0
        self._body_due: float | None = None  # when a body held for hooks must be in, at the latest
        self._chunks: ChunkedFraming | None = None
        #: Body pieces go to the exchange de-framed (hooks need them whole) or as received.
        self._decode = False
        self._paused = 0  # who holds reading paused: Powerstrip (1), dockerd's backpressure (2)
        self._timer: Any = None
        self._due: Callable[[], None] | None = None
        self._deadline = 0.0
        self._caller: Peer | None = None
        self._on_idle = self._idle_timeout  # one bound method, so that the timer's owner compares by identity

    # -- the connection -------------------------------------------------------------

    @property
    def caller(self) -> Peer:
        """Who is on the other end (read once per connection)."""
        if self._caller is None:
            self._caller = read_caller(self.transport)
        return self._caller

    def connectionMade(self) -> None:
        self.sender = Sender(self.transport)
        self._arm(self._on_idle)

    def dataReceived(self, data: bytes) -> None:
        state = self.state
        if state is Reading.SPLICED:
            cast(Splice, self.splice).client_data(data)  # set with SPLICED
            return
        if state is Reading.HEAD:
            self._buf = self._buf + data if self._buf else data
            self._read_heads()
            if self.state is Reading.HEAD and self._due is self._on_idle:
                # A head begun, not complete: the whole of it must arrive within one timeout.
                self._arm(self._head_timeout)
        elif state is Reading.BODY or state is Reading.DRAIN:
            self._body(data)
        elif state is Reading.ANSWERING:
            self._buf += data
            if len(self._buf) > _PIPELINE_LIMIT:
                self.pause(1)
        # CLOSED: ignore

    def _read_heads(self) -> None:
        """Start the next request if its head is in the buffer."""
        buf = self._buf
        try:
            end = find_head_end(buf, self.max_head)
            if end < 0:
                return
            head = parse_request_head(buf[:end])
        except BadRequest as e:
            self.refuse(e.code, e.message)
            return
        self._buf = buf[end:]
        self._due = None
        exchange = self.exchange = self.proxy.exchange(self, head)
        if head.has_body:
            self.state = Reading.BODY
            self._left = self._body_length = head.content_length or 0
            self._chunks = ChunkedFraming() if head.chunked else None
            if head.expect_continue:
                self.sender.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        else:
            self.state = Reading.ANSWERING
        exchange.start()  # which asks for the body (read_body), if there is one

    # -- bodies -------------------------------------------------------------------

    def read_body(self, decode: bool, deadline: float | None = None) -> None:
        """The exchange says how it wants the body: ``decode``-d (for hooks) or as
        received; ``deadline``: seconds for the whole body to arrive (buffered bodies)."""
        self._decode = decode
        self._body_due = self.proxy.reactor.seconds() + deadline if deadline else None
        self._arm(self._body_timeout, min(deadline or self.timeout or 0, self.timeout or deadline or 0))
        if self._buf:
            # Body bytes that came with the head go to the exchange now, before it
            # writes the head to dockerd, so that both leave in one write (why: Exchange._send).
            rest, self._buf = self._buf, b""
            self._body(rest)

    def _body(self, data: bytes) -> None:
        # (The exchange is None only when draining, and then not used.)
        exchange, draining = cast("Carrier", self.exchange), self.state is Reading.DRAIN
        # The idle timer, from each piece; a body held for hooks also has a total deadline.
        due = self._body_due
        if due is None:
            self._arm(self._body_timeout)
        elif self.timeout:
            self._arm(self._body_timeout, max(0.001, min(self.timeout, due - self.proxy.reactor.seconds())))
        if self._chunks is not None:
            sink = None if draining or not self._decode else exchange.request_data
            try:
                used = self._chunks.scan(data, sink)
            except ProtocolError as e:
                if draining:
                    self.close()  # answered already: the rest was only being dropped
                else:
                    self.refuse(400, f"powerstrip: bad chunked request body: {e}")
                return
            if sink is None and not draining and used:
                exchange.request_data(data if used == len(data) else data[:used])
            if self._chunks.done:
                self._body_done(data[used:])
            return
        left = self._left
        if len(data) < left:
            self._left = left - len(data)
            if not draining:
                exchange.request_data(data)
            return
        self._left = 0
        if not draining and left:
            exchange.request_data(data if left == len(data) else data[:left])
        self._body_done(data[left:])

    def _body_done(self, rest: bytes) -> None:
        self._buf = rest + self._buf if self._buf else rest
        self._due = None
        if self.state is Reading.DRAIN:
            self.close()
            return
        self.state = Reading.ANSWERING
        cast("Carrier", self.exchange).request_end()  # the request's, until answered() (a DRAIN then)
        self._chunks = None

    @property
    def body_payload(self) -> int:
        """Payload bytes of the current request body read so far (less chunk framing)."""
        if self._chunks is not None:
            return self._chunks.payload
        return self._body_length - self._left

    @property
    def body_pending(self) -> bool:
        """Whether the current request's body is still being received."""
        return self.state is Reading.BODY

    # -- the exchange's answers --------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send bytes to the client."""
        self.sender.write(data)

    def answered(self, keep_alive: bool) -> None:
        """The exchange has sent its whole answer; on to the next request, or close."""
        self.exchange = None
        if self.state is Reading.CLOSED:
            return
        self._release(3)  # neither Powerstrip nor the last request's upload holds reading back now
        if self.state is Reading.BODY:
            # Answered before the body was all read (refused, failed): the rest
            # is read and dropped, then the connection ends (its answer said so).
            self.state = Reading.DRAIN
            self._body_due = self.proxy.reactor.seconds() + (self.timeout or 0)
            self._arm(self._body_timeout)
            if self._buf:  # body bytes that came with the head, when refused before asking for them
                rest, self._buf = self._buf, b""
                self._body(rest)
            return
        if not keep_alive or self.read_eof:
            self.close()
            return
        self.state = Reading.HEAD
        self._arm(self._on_idle if not self._buf else self._head_timeout)
        if self._buf:
            self._read_heads()

    def hijack(self, splice: Splice) -> None:
        """From now on every byte from the client goes to ``splice`` (no timers)."""
        self.state = Reading.SPLICED
        self.splice = splice
        self.sender.queue()  # the splice writes to the transport itself now
        self.exchange = None
        self._stop_timer()
        buffered, self._buf = self._buf, b""
        if buffered:
            splice.client_data(buffered)  # pipelined bytes are stream bytes (stdin)
        if self.read_eof:
            splice.client_eof()  # the client finished sending before the stream began
        self._paused = 0
        self.transport.resumeProducing()

    def has_buffered_input(self) -> bool:
        """Whether the client sent bytes past the current request (held back)."""
        return bool(self._buf)

    def refuse(self, code: int, message: str) -> None:
        """Answer ``code`` with a Docker-style JSON error and close: nothing of
        this request was or will be forwarded."""
        exchange = self.exchange
        request_id = exchange.flow.id if exchange is not None else new_request_id()
        log.info(
            "#{request_id} refused {code} from {peer}: {message}",
            code=code,
            message=message,
            peer=self.caller.remote_address or self.caller.transport,
            request_id=request_id,
        )
        self.proxy.metrics.refused(code)
        if exchange is not None and exchange.head_sent:
            self.transport.abortConnection()  # mid-answer: a clean error is impossible
            return
        if exchange is not None:
            exchange.abandon()
        body = error_response(code, message).body
        self.sender.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"%s: %s\r\nConnection: close\r\n\r\n%s"
            % (code, _RESPONSES.get(code, b"Error"), len(body), REQUEST_ID_HEADER, request_id.encode(), body)
        )
        self.close()

    def close(self) -> None:
        """Flush what was written and close."""
        if self.state is not Reading.CLOSED:
            self.state = Reading.CLOSED
            self._stop_timer()
            self.transport.loseConnection()

    # -- reading paused and resumed --------------------------------------------------

    def pause(self, who: int = 1) -> None:
        """Stop reading from the client (``who``: 1 Powerstrip, 2 dockerd's pace)."""
        if not self._paused and self.state is not Reading.CLOSED:
            self.transport.pauseProducing()
        self._paused |= who

    def _release(self, who: int) -> None:
        if self._paused:
            self._paused &= ~who
            if not self._paused and self.state is not Reading.CLOSED:
                self.transport.resumeProducing()

    def resume(self) -> None:
        """Read from the client again (Powerstrip's pause)."""
        self._release(1)

    def pauseProducing(self) -> None:
        self.pause(2)

    def resumeProducing(self) -> None:
        self._release(2)

    def stopProducing(self) -> None:
        pass

    # -- timers -------------------------------------------------------------------

    def _arm(self, func: Callable[[], None], seconds: float | None = None) -> None:
        """Call ``func`` after ``seconds`` (default: the client timeout) unless disarmed first.

        One timer per connection, moved lazily: re-arming only moves a
        deadline, and the timer, when it fires early, sleeps on until it. A
        keep-alive connection so pays no callLater and cancel per request.
        """
        seconds = seconds or self.timeout
        if not seconds:
            self._due = None
            return
        self._due = func
        self._deadline = self.proxy.reactor.seconds() + seconds
        if self._timer is None:
            self._timer = self.proxy.reactor.callLater(seconds, self._tick)
        elif self._timer.getTime() > self._deadline:
            self._timer.reset(seconds)

    def _disarm(self) -> None:
        self._due = None

    def _stop_timer(self) -> None:
        self._due = None
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _tick(self) -> None:
        self._timer = None
        if self._due is None:
            return
        left = self._deadline - self.proxy.reactor.seconds()
        if left > 0:
            self._timer = self.proxy.reactor.callLater(left, self._tick)
            return
        func, self._due = self._due, None
        func()

    def _idle_timeout(self) -> None:
        # An idle keep-alive connection: closed without an answer (clients reconnect).
        log.info(
            "closing an idle connection from {peer} (--client-timeout {timeout:g}s)",
            peer=self.caller.remote_address or self.caller.transport,
            timeout=self.timeout,
        )
        self.close()

    def _head_timeout(self) -> None:
        self.refuse(408, "powerstrip: the request head did not arrive in time (see --client-timeout)")

    def _body_timeout(self) -> None:
        if self.state is Reading.DRAIN:
            self.close()  # the answer is out already (and said Connection: close): nothing more to say
            return
        if self._paused and self.state is Reading.BODY:
            self._arm(self._body_timeout)  # Powerstrip is the one waiting (adapter, dockerd)
            return
        self.refuse(408, "powerstrip: the request body did not arrive in time (see --client-timeout)")

    # -- the end ---------------------------------------------------------------------

    def readConnectionLost(self) -> None:
        """The client shut its write side: EOF for a splice, else end politely."""
        self.read_eof = True
        state = self.state
        if state is Reading.SPLICED:
            cast(Splice, self.splice).client_eof()  # set with SPLICED
        elif state is Reading.HEAD or state is Reading.BODY or state is Reading.DRAIN:
            # Idle, or a request cut short: nothing more can be answered usefully.
            self.close()
            if self.exchange is not None:
                self.exchange.abandon()
        elif state is Reading.ANSWERING and self.exchange is not None:
            # A request is being answered: finish it, then close. dockerd gets
            # the same EOF (as a client talking to it directly would give it),
            # so a call the client abandoned (`events`, `logs -f`) ends there too.
            self.exchange.client_eof()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        was = self.state
        self.state = Reading.CLOSED
        self._stop_timer()
        self.proxy.connection_closed(self)
        if was is Reading.SPLICED:
            cast(Splice, self.splice).client_lost()  # set with SPLICED
        elif self.exchange is not None:
            self.exchange.abandon()


class _Turnaway(Protocol):
    """Answers a connection over ``--max-connections`` with a 503, then closes."""

    transport: ITransport  # set by makeConnection, before connectionMade

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def connectionMade(self) -> None:
        body = error_response(
            503,
            f"powerstrip: too many client connections (the limit is {self.limit}, "
            "see --max-connections); try again later",
        ).body
        self.transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        pass


class FrontFactory(Factory):
    """Builds a :class:`FrontConnection` per client, up to ``max_connections``.

    A client over the limit is accepted and told 503 at once (and the refusal
    logged, rate-limited): a queue of waiting clients would only hide the
    problem until the client's own timeout.
    """

    noisy = False

    def __init__(
        self,
        proxy: Entry,
        timeout: float | None = DEFAULT_CLIENT_TIMEOUT,
        max_head: int = DEFAULT_MAX_HEAD,
        max_connections: int | None = None,
    ) -> None:
        self.proxy = proxy
        self.timeout = timeout
        self.max_head = max_head
        self.max_connections = max_connections
        self._last_turnaway = -1e9

    def buildProtocol(self, addr: Any) -> Protocol:
        proxy = self.proxy
        limit = self.max_connections
        if limit is not None and len(proxy.connections) >= limit:
            proxy.metrics.refused(503)
            now = proxy.reactor.seconds()
            if now - self._last_turnaway > 10:
                self._last_turnaway = now
                log.warn(
                    "turning away a client: {n} connections open, the limit is {limit} (see --max-connections)",
                    n=len(proxy.connections),
                    limit=limit,
                )
            return _Turnaway(limit)
        conn = FrontConnection(proxy, self.timeout, self.max_head)
        proxy.connections.add(conn)
        return conn
