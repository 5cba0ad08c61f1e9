"""The upstream link: HTTP/1.1 connections to dockerd, and a pool of idle ones.

twisted.web's client cannot carry a ``101 Switching Protocols`` and then
give the raw connection back, so this is a small HTTP/1.1 client protocol of
its own: it writes a request head, lets the caller stream the body, parses
the response head (relaying it the moment it is complete), decodes the body
framing, and on a hijack (``101`` or a close-delimited body, as dockerd sends
to clients that did not ask for an upgrade) hands the raw connection over.
Bodies are relayed as framed: their framing is counted, not re-encoded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast
from typing import Protocol as TypingProtocol

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from powerstrip.proxy.splice import half_close
from powerstrip.wire.endpoints import DockerAddress
from powerstrip.wire.headers import HeaderList
from powerstrip.wire.http11 import ChunkedFraming, ProtocolError, ResponseHead, parse_response_head
from powerstrip.wire.sender import Sender
from powerstrip.wire.tls import DockerTLS

if TYPE_CHECKING:
    from powerstrip.proxy.splice import IStreamTransport

MAX_HEAD = 256 * 1024


#: What a listener does with a response body (its answer to :meth:`ResponseListener.head_received`).
RELAY, DECODE, SPLICE = "relay", "decode", "splice"
#: How a response body is delimited (``ResponseHead.framing``, set before the listener is told).
LENGTH, CHUNKED, CLOSE, NONE, UPGRADE = "length", "chunked", "close", "none", "upgrade"


class ResponseListener(TypingProtocol):
    """What an exchange reports to, in order: a head, then body or hijack."""

    def head_received(self, head: ResponseHead) -> str:
        """The full response head arrived (interim 1xx heads are skipped).

        Returns :data:`RELAY` (the body's bytes are wanted as framed, to be
        relayed untouched), :data:`DECODE` (the payload is wanted, de-framed)
        or :data:`SPLICE` (the connection becomes a raw byte stream: see
        :meth:`UpstreamConnection.take_raw`). A 101 head, and a body
        delimited by the connection's end, can only be spliced or relayed.
        """

    def body_data(self, data: bytes) -> None:
        """A piece of the response body (framed or not, as asked)."""

    def body_continues(self) -> None:
        """The response did not end within the read that brought its head:
        the moment to set up flow control. Called at most once."""

    def body_done(self) -> None:
        """The response body is complete."""

    def failed(self, reason: Failure) -> None:
        """The connection broke before the response was complete."""


@implementer(IHalfCloseableProtocol)
class UpstreamConnection(Protocol):
    """One HTTP/1.1 connection to dockerd, carrying one exchange at a time.

    Response bodies are not re-encoded: their framing (``Content-Length``,
    chunked, or the connection's end) is only counted, so the bytes a relay
    passes on are dockerd's own.
    """

    # Set by makeConnection, before the pool hands the connection out.
    transport: IStreamTransport
    sender: Sender  # writes to dockerd (set in connectionMade)

    def __init__(self) -> None:
        self.listener: ResponseListener | None = None
        self.connected_ok = False
        self.reusable = False
        self.reused = False
        self.got_bytes = False
        self.on_idle: Callable[[UpstreamConnection], None] | None = None
        self.on_lost: Callable[[UpstreamConnection], None] | None = None
        # After a hijack the splice takes over the byte stream.
        self.raw_sink: Any = None
        self._reset()

    def _reset(self) -> None:
        self._buf = b""
        self._head: ResponseHead | None = None
        self._left: int | None = None
        self._chunks: ChunkedFraming | None = None
        self._payload = 0
        self._sink: Callable[[bytes], None] | None = None
        self._until_close = False
        self._continues = False
        self._no_body_expected = False
        self._request_done = False
        self._response_done = False
        self._close_after = False

    def connectionMade(self) -> None:
        self.connected_ok = True
        self.sender = Sender(self.transport)

    def write(self, data: bytes) -> None:
        """Send request bytes to dockerd."""
        self.sender.write(data)

    # -- the request side ---------------------------------------------------

    def start(self, listener: ResponseListener, head: bytes, head_only: bool) -> None:
        """Begin an exchange: write the request ``head`` (and what of its body is at hand); body writes follow.

        ``head_only`` says the response to this request has no body (HEAD).
        """
        self._reset()
        self.listener = listener
        self.got_bytes = False
        self._no_body_expected = head_only
        self.sender.write(head)

    def end_after_response(self) -> None:
        """The client shut its write side: pass the EOF on; no reuse after this."""
        self._close_after = True
        self.reusable = False
        half_close(self.transport)

    def request_finished(self) -> None:
        """The caller wrote the whole request body."""
        self._request_done = True
        self._maybe_idle()

    def take_raw(self, sink: Any) -> bytes:
        """After :data:`SPLICE`: from now on every byte from dockerd goes to
        ``sink`` (``upstream_data/eof/lost``). Returns the stream bytes that
        arrived with the head."""
        self.raw_sink = sink
        self.sender.queue()  # the splice writes to the transport itself now
        leftover, self._buf = self._buf, b""
        return leftover

    # -- the response side --------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.raw_sink is not None:
            self.raw_sink.upstream_data(data)
            return
        self.got_bytes = True
        if self.listener is None:
            # dockerd never speaks unasked; an idle connection that does is broken.
            self.transport.abortConnection()
            return
        try:
            self._received(data)
            if self.listener is not None and not self._continues and self._head is not None:
                self._continues = True
                self.listener.body_continues()
        except Exception:  # off-protocol answer (or a bug in a listener): end this exchange
            failure = Failure()
            listener, self.listener = self.listener, None
            self.transport.abortConnection()
            if listener is not None:
                listener.failed(failure)

    def _received(self, data: bytes) -> None:
        if self._head is None:
            self._buf += data
            while self._head is None:
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buf) > MAX_HEAD:
                        raise ProtocolError("response head too large")
                    return
                raw, self._buf = self._buf[: end + 4], self._buf[end + 4 :]
                head = parse_response_head(raw)
                if 100 <= head.code < 200 and head.code != 101:
                    continue  # interim response (100 Continue): not relayed
                if not self._got_head(head):
                    return  # spliced, or done
            data, self._buf = self._buf, b""
            if not data:
                return
        self._body(data)

    def _got_head(self, head: ResponseHead) -> bool:
        """Take a final head; whether body bytes are to be read next."""
        self._head = head
        listener = cast(ResponseListener, self.listener)  # dataReceived checked: an exchange is on
        te, cl, conn = head.transfer_encoding, head.content_length, head.connection
        self._close_after = (conn is not None and b"close" in conn.lower()) or head.version == b"HTTP/1.0"
        if head.code == 101:
            self._until_close, head.framing = True, UPGRADE
        elif self._no_body_expected or head.code in (204, 304):
            self._left, head.framing = 0, NONE
        elif te is not None and b"chunked" in te.lower():
            self._chunks, head.framing = ChunkedFraming(), CHUNKED
        elif cl is not None:
            if not cl.strip().isdigit():
                raise ProtocolError(f"bad Content-Length {cl[:20]!r}")
            self._left, head.framing = int(cl), LENGTH
        else:
            # Delimited by the connection's end: a relay reads to EOF, and the
            # hijack endpoints' answer to old clients ("200 OK" + raw stream)
            # becomes a splice.
            self._until_close, head.framing = True, CLOSE
        how = listener.head_received(head)
        if how == SPLICE:
            self.listener = None
            self.reusable = False
            return False
        if self._until_close:
            if head.code == 101:
                raise ProtocolError("101 Switching Protocols to a request that asked for no upgrade")
            self._close_after = True
        self._sink = None if how == RELAY else listener.body_data
        if self._left == 0 and self.listener is listener:
            self._finish_response()
            return False
        return self.listener is listener

    def _body(self, data: bytes) -> None:
        listener = cast(ResponseListener, self.listener)  # body bytes come only while one listens
        if self._chunks is not None:
            sink = self._sink
            used = self._chunks.scan(data, sink)
            if sink is None:
                listener.body_data(data if used == len(data) else data[:used])
            if self._chunks.done:
                if used < len(data):
                    self._close_after = True  # pipelined garbage: do not reuse
                self._finish_response()
            return
        if self._left is not None:
            if len(data) >= self._left:
                data, extra = data[: self._left], data[self._left :]
                if extra:
                    self._close_after = True
                self._left = 0
                self._payload += len(data)
                if data:
                    listener.body_data(data)
                self._finish_response()
            else:
                self._left -= len(data)
                self._payload += len(data)
                listener.body_data(data)
            return
        self._payload += len(data)
        listener.body_data(data)  # until the connection's end

    @property
    def payload(self) -> int:
        """Body bytes of the current response so far, less chunk framing."""
        return self._chunks.payload if self._chunks is not None else self._payload

    def _finish_response(self) -> None:
        listener, self.listener = cast(ResponseListener, self.listener), None  # called while one listens
        self._response_done = True
        self.reusable = not self._close_after
        listener.body_done()
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if not (self._response_done and self._request_done and self.raw_sink is None):
            return
        if self.reusable and self.on_idle is not None:
            self._response_done = False
            self.on_idle(self)
        elif self.transport is not None:
            self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        if self.raw_sink is not None:
            self.raw_sink.upstream_eof()
            return
        if self._until_close and self.listener is not None:
            self._finish_response()  # a close-delimited body is complete
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reusable = False
        if self.on_lost is not None:
            self.on_lost(self)
        if self.raw_sink is not None:
            self.raw_sink.upstream_lost()
            return
        if self._until_close and self.listener is not None and reason.check(ConnectionDone):
            self._finish_response()
            return
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.failed(reason)


class UpstreamPool:
    """Connects to dockerd and keeps idle keep-alive connections for reuse.

    Hijacked connections never come back: they belong to their stream. Idle
    ones are closed after ``idle_timeout`` by one sweep timer, not a timer
    per connection and request (a callLater and a cancel on every request
    would be most of a pass-through's bookkeeping).
    """

    def __init__(
        self,
        reactor: Any,
        address: DockerAddress,
        max_idle: int = 32,
        idle_timeout: float = 30.0,
        tls: DockerTLS | None = None,
    ) -> None:
        self.reactor = reactor
        self.address = address
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        #: Idle connections, the most recently used last, with when they became idle.
        self._idle: list[tuple[UpstreamConnection, float]] = []
        self._sweeper: Any = None
        #: How to dial dockerd (TLS included); the admin listener's probe uses it too.
        self.endpoint = address.endpoint(reactor, tls)
        self._factory = Factory.forProtocol(UpstreamConnection)
        self._factory.noisy = False

    def idle(self) -> UpstreamConnection | None:
        """An idle keep-alive connection to reuse (the most recent), if there is one."""
        while self._idle:
            conn = self._idle.pop()[0]
            if conn.transport is not None and conn.connected:
                conn.reused = True
                return conn
        return None

    def connect(self) -> defer.Deferred[UpstreamConnection]:
        """Fire with a new connection to dockerd."""
        d: defer.Deferred[UpstreamConnection] = self.endpoint.connect(self._factory)
        d.addCallback(self._adopt)
        return d

    def _adopt(self, conn: UpstreamConnection) -> UpstreamConnection:
        conn.on_idle = self._release
        conn.on_lost = self._forget
        return conn

    def _release(self, conn: UpstreamConnection) -> None:
        if len(self._idle) >= self.max_idle:
            conn.transport.loseConnection()
            return
        self._idle.append((conn, self.reactor.seconds()))
        if self._sweeper is None:
            self._sweeper = self.reactor.callLater(self.idle_timeout, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        cutoff = self.reactor.seconds() - self.idle_timeout
        stale = [conn for conn, since in self._idle if since <= cutoff]
        self._idle = [(conn, since) for conn, since in self._idle if since > cutoff]
        for conn in stale:
            conn.transport.loseConnection()
        if self._idle:
            self._sweeper = self.reactor.callLater(
                self._idle[0][1] + self.idle_timeout - self.reactor.seconds(), self._sweep
            )

    def _forget(self, conn: UpstreamConnection) -> None:
        self._idle = [(c, since) for c, since in self._idle if c is not conn]

    def close(self) -> None:
        """Drop every idle connection (shutdown, tests)."""
        if self._sweeper is not None and self._sweeper.active():
            self._sweeper.cancel()
        self._sweeper = None
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.transport.loseConnection()


def request_head(method: str, uri: str, headers: HeaderList) -> bytes:
    """Serialise an HTTP/1.1 request head (always 1.1: a chunked body sent as
    HTTP/1.0 reaches dockerd empty)."""
    lines = [f"{method} {uri} HTTP/1.1".encode("latin-1")]
    lines.extend(k + b": " + v for k, v in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n"
