"""The upstream link: HTTP/1.1 connections to dockerd, and a pool of idle ones.

twisted.web's client cannot carry a ``101 Switching Protocols`` and then
give the raw connection back, so this is a small HTTP/1.1 client protocol of
its own: it writes a request head, lets the caller stream the body, parses
the response head (relaying it the moment it is complete), decodes the body
framing, and on a hijack (``101`` or a close-delimited body, as dockerd sends
to clients that did not ask for an upgrade) hands the raw connection over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet import defer, endpoints
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from powerstrip.http11 import ChunkedDecoder, Headers, ProtocolError, ResponseHead, parse_response_head
from powerstrip.splice import half_close
from powerstrip.tls import DockerTLS, TLSClientEndpoint

DEFAULT_DOCKER = "unix:///var/run/docker.sock"
MAX_HEAD = 256 * 1024


@dataclass(frozen=True)
class DockerAddress:
    """Where dockerd listens: ``unix:///path`` or ``tcp://host:port``."""

    scheme: str  # "unix" or "tcp"
    location: str  # socket path, or host
    port: int = 0

    @classmethod
    def parse(cls, url: str) -> DockerAddress:
        """Parse a ``DOCKER_HOST``-style URL; plain ``HOST:PORT`` means tcp."""
        url = url.strip()
        if url.startswith("unix://"):
            path = url[len("unix://"):]
            if not path.startswith("/"):
                raise ValueError(f"unix socket URL {url!r} needs an absolute path (unix:///run/docker.sock)")
            return cls("unix", path)
        for prefix in ("tcp://", "http://"):
            if url.startswith(prefix):
                url = url[len(prefix):]
                break
        else:
            if "://" in url:
                raise ValueError(f"unsupported Docker URL {url!r}: use unix:///path or tcp://host:port")
        hostport = url.rstrip("/")
        host, sep, port = hostport.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"Docker URL {url!r} needs HOST:PORT (e.g. tcp://127.0.0.1:2375)")
        return cls("tcp", host.strip("[]"), int(port))

    def __str__(self) -> str:
        return f"unix://{self.location}" if self.scheme == "unix" else f"tcp://{self.location}:{self.port}"

    def endpoint(self, reactor: Any, tls: DockerTLS | None = None) -> Any:
        """A Twisted client endpoint that connects to this address (over
        ``tls`` if given; only for tcp)."""
        if self.scheme == "unix":
            return endpoints.UNIXClientEndpoint(reactor, self.location, timeout=10)
        tcp = tcp_endpoint(reactor, self.location, self.port)
        return tcp if tls is None else TLSClientEndpoint(tls.creator(self.location), tcp)


def tcp_endpoint(reactor: Any, host: str, port: int) -> Any:
    """A TCP client endpoint for ``host:port`` (dockerd's or an adapter's):
    direct for an IP address, so a refused connection fails at once.
    HostnameEndpoint, needed for a name, reports the last refusal only after
    its 0.3 s attempt interval: every call to a down adapter (``failure:
    ignore`` ones included) would pay that."""
    if isIPAddress(host):
        return endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=10)
    if isIPv6Address(host):
        return endpoints.TCP6ClientEndpoint(reactor, host, port, timeout=10)
    return endpoints.HostnameEndpoint(reactor, host, port, timeout=10)


class ResponseListener(TypingProtocol):
    """What an exchange reports to, in order: a head, then body or hijack."""

    def head_received(self, head: ResponseHead) -> None:
        """The full response head arrived (interim 1xx heads are skipped); a
        body follows."""

    def body_data(self, data: bytes) -> None:
        """A piece of the (de-framed) response body."""

    def body_done(self) -> None:
        """The response body is complete."""

    def hijacked(self, conn: UpstreamConnection, head: ResponseHead, leftover: bytes) -> None:
        """Instead of a head and body: the connection is now a raw byte stream.

        ``head`` is the 101 (or close-delimited) head; ``leftover``, stream
        bytes that arrived with it.
        """

    def failed(self, reason: Failure) -> None:
        """The connection broke before the response was complete."""


@implementer(IHalfCloseableProtocol)
class UpstreamConnection(Protocol):
    """One HTTP/1.1 connection to dockerd, carrying one exchange at a time."""

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
        self._chunks: ChunkedDecoder | None = None
        self._no_body_expected = False
        self._request_done = False
        self._response_done = False
        self._close_after = False

    def connectionMade(self) -> None:
        self.connected_ok = True

    # -- the request side ---------------------------------------------------

    def start(self, listener: ResponseListener, head: bytes, head_only: bool) -> None:
        """Begin an exchange: write the request ``head``; body writes follow.

        ``head_only`` says the response to this request has no body (HEAD).
        """
        self._reset()
        self.listener = listener
        self.got_bytes = False
        self._no_body_expected = head_only
        self.transport.write(head)

    def end_after_response(self) -> None:
        """The client shut its write side: pass the EOF on; no reuse after this."""
        self._close_after = True
        self.reusable = False
        half_close(self.transport)

    def request_finished(self) -> None:
        """The caller wrote the whole request body."""
        self._request_done = True
        self._maybe_idle()

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
                raw, self._buf = self._buf[: end + 4], self._buf[end + 4:]
                head = parse_response_head(raw)
                if 100 <= head.code < 200 and head.code != 101:
                    continue  # interim response (100 Continue): not relayed
                self._got_head(head)
                if self.listener is None:
                    return
            data, self._buf = self._buf, b""
            if not data:
                return
        self._body(data)

    def _got_head(self, head: ResponseHead) -> None:
        self._head = head
        listener = self.listener
        te = (head.header(b"transfer-encoding") or b"").lower()
        cl = head.header(b"content-length")
        conn = (head.header(b"connection") or b"").lower()
        self._close_after = b"close" in conn or head.version == b"HTTP/1.0"
        if head.code == 101:
            self._hijack(listener, head)
            return
        if self._no_body_expected or head.code in (204, 304):
            self._left = 0
        elif b"chunked" in te:
            self._chunks = ChunkedDecoder()
        elif cl is not None:
            if not cl.strip().isdigit():
                raise ProtocolError(f"bad Content-Length {cl[:20]!r}")
            self._left = int(cl)
        else:
            # Body delimited by the connection's end: the old-client form of a
            # hijack ("200 OK" + raw stream). Hand the raw stream over.
            self._hijack(listener, head)
            return
        listener.head_received(head)
        if self._left == 0 and self.listener is listener:
            self._finish_response()

    def _hijack(self, listener: ResponseListener, head: ResponseHead) -> None:
        self.listener = None
        self.reusable = False
        leftover, self._buf = self._buf, b""
        listener.hijacked(self, head, leftover)

    def _body(self, data: bytes) -> None:
        listener = self.listener
        if self._chunks is not None:
            for piece in self._chunks.feed(data):
                listener.body_data(piece)
            if self._chunks.done:
                if self._chunks.rest:
                    self._close_after = True  # pipelined garbage: do not reuse
                self._finish_response()
            return
        if self._left is not None:
            if len(data) >= self._left:
                data, extra = data[: self._left], data[self._left:]
                if extra:
                    self._close_after = True
                self._left = 0
                if data:
                    listener.body_data(data)
                self._finish_response()
            else:
                self._left -= len(data)
                listener.body_data(data)

    def _finish_response(self) -> None:
        listener, self.listener = self.listener, None
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
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self.reusable = False
        if self.on_lost is not None:
            self.on_lost(self)
        if self.raw_sink is not None:
            self.raw_sink.upstream_lost()
            return
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.failed(reason)


class UpstreamPool:
    """Connects to dockerd and keeps idle keep-alive connections for reuse.

    Hijacked connections never come back: they belong to their stream.
    """

    def __init__(self, reactor: Any, address: DockerAddress, max_idle: int = 32,
                 idle_timeout: float = 30.0, tls: DockerTLS | None = None) -> None:
        self.reactor = reactor
        self.address = address
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._idle: list[UpstreamConnection] = []
        self._timers: dict[UpstreamConnection, Any] = {}
        #: How to dial dockerd (TLS included); the admin listener's probe uses it too.
        self.endpoint = address.endpoint(reactor, tls)
        self._factory = Factory.forProtocol(UpstreamConnection)

    def acquire(self) -> defer.Deferred:
        """Fire with a connection ready for one exchange (an idle one if any)."""
        while self._idle:
            conn = self._idle.pop()
            self._cancel_timer(conn)
            if conn.transport is not None and conn.connected:
                conn.reused = True
                return defer.succeed(conn)
        d = self.endpoint.connect(self._factory)
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
        self._idle.append(conn)
        self._timers[conn] = self.reactor.callLater(self.idle_timeout, conn.transport.loseConnection)

    def _forget(self, conn: UpstreamConnection) -> None:
        self._cancel_timer(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    def _cancel_timer(self, conn: UpstreamConnection) -> None:
        timer = self._timers.pop(conn, None)
        if timer is not None and timer.active():
            timer.cancel()

    def close(self) -> None:
        """Drop every idle connection (shutdown, tests)."""
        for conn in list(self._idle):
            conn.transport.loseConnection()
        self._idle.clear()


def request_head(method: str, uri: str, headers: Headers) -> bytes:
    """Serialise an HTTP/1.1 request head (always 1.1: a chunked body sent as
    HTTP/1.0 reaches dockerd empty)."""
    lines = [f"{method} {uri} HTTP/1.1".encode("latin-1")]
    lines.extend(k + b": " + v for k, v in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n"
