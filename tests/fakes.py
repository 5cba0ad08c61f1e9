"""In-process fakes for protocol tests of the proxy (see :mod:`tests.test_proxy`).

- :class:`FakeDockerd`: a raw TCP server whose every byte in and out a test
  scripts. It records what it receives, parses HTTP requests out of it (until
  the connection is upgraded or hijacked) and provides half-close.
- :class:`RawClient`: a raw TCP client that sends exact bytes and parses the
  responses it gets, also half-closeable.
- :class:`FakeAdapters`: a twisted.web resource serving ``POST /NAME`` with a
  handler per adapter name, recording every call.
- :class:`Tracker`: knows every connection a test made (on any side), so the
  clean-up can close them all and wait until they are gone.

Waiting is always on Deferreds the fakes fire when the awaited bytes (or
EOF) arrive; a connection that closes first fails the wait at once with what
it had received, so a broken proxy fails a test fast and legibly.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer

from powerstrip.wire.tls import TLSClientEndpoint

Headers = list[tuple[bytes, bytes]]


# -- HTTP message parsing (test side: strict enough to notice framing errors) --------


@dataclass
class Message:
    """One HTTP request or response as it crossed the wire."""

    start: bytes  # the request line or status line
    headers: Headers
    body: bytes  # de-framed payload
    raw: bytes  # every byte of the message, framing included
    raw_head: bytes  # status/request line through the blank line
    chunks: list[bytes] = field(default_factory=list)  # chunk payloads, when chunked

    def values(self, name: bytes) -> list[bytes]:
        """All values of header ``name`` (case-insensitive), in order."""
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def value(self, name: bytes) -> bytes | None:
        values = self.values(name)
        return values[-1] if values else None

    @property
    def names(self) -> set[bytes]:
        """The lower-cased names of all headers."""
        return {k.lower() for k, _ in self.headers}

    @property
    def chunked(self) -> bool:
        return b"chunked" in (self.value(b"transfer-encoding") or b"").lower()

    # requests
    @property
    def method(self) -> bytes:
        return self.start.split(b" ")[0]

    @property
    def uri(self) -> bytes:
        return self.start.split(b" ")[1]

    @property
    def version(self) -> bytes:
        parts = self.start.split(b" ")
        return parts[0] if parts[0].startswith(b"HTTP/") else parts[-1]

    # responses
    @property
    def code(self) -> int:
        return int(self.start.split(b" ")[1])

    def json(self) -> Any:
        return json.loads(self.body)


class FramingError(AssertionError):
    """What arrived is not well-framed HTTP/1.1."""


def _parse_head(buf: bytes, pos: int) -> tuple[bytes, Headers, int] | None:
    end = buf.find(b"\r\n\r\n", pos)
    if end < 0:
        return None
    lines = buf[pos:end].split(b"\r\n")
    headers: Headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise FramingError(f"bad header line {line!r}")
        headers.append((name, value.strip()))
    return lines[0], headers, end + 4


def _dechunk(buf: bytes, pos: int) -> tuple[list[bytes], int] | None:
    chunks: list[bytes] = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(buf[pos:eol].split(b";")[0], 16)
        except ValueError:
            raise FramingError(f"bad chunk size line {buf[pos:eol][:40]!r}") from None
        pos = eol + 2
        if size == 0:
            # trailers, up to the blank line
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                line, pos = buf[pos:eol], eol + 2
                if not line:
                    return chunks, pos
        if len(buf) < pos + size + 2:
            return None
        if buf[pos + size:pos + size + 2] != b"\r\n":
            raise FramingError(f"chunk not followed by CRLF at {pos + size}")
        chunks.append(buf[pos:pos + size])
        pos += size + 2


def parse_message(buf: bytes, pos: int, *, response: bool, head_only: bool = False,
                  eof: bool = False) -> tuple[Message, int] | None:
    """The complete message starting at ``buf[pos]`` and where it ends, or None if incomplete.

    A response with neither length nor chunking runs to the connection's end
    (``eof``); a request without either has no body.
    """
    parsed = _parse_head(buf, pos)
    if parsed is None:
        return None
    start, headers, body_at = parsed
    msg = Message(start, headers, b"", b"", buf[pos:body_at])
    code = int(start.split(b" ")[1]) if response else 0
    if response and (head_only or 100 <= code < 200 or code in (204, 304)):
        end = body_at
    elif msg.chunked:
        got = _dechunk(buf, body_at)
        if got is None:
            return None
        msg.chunks, end = got
        msg.body = b"".join(msg.chunks)
    elif msg.value(b"content-length") is not None:
        end = body_at + int(msg.value(b"content-length"))
        if len(buf) < end:
            return None
        msg.body = buf[body_at:end]
    elif response:
        if not eof:
            return None
        end = len(buf)
        msg.body = buf[body_at:]
    else:
        end = body_at
    msg.raw = buf[pos:end]
    return msg, end


def is_upgrade(msg: Message) -> bool:
    tokens = {t.strip().lower() for v in msg.values(b"connection") for t in v.split(b",")}
    return b"upgrade" in tokens


# -- the recording base of both raw ends -------------------------------------------


@implementer(IHalfCloseableProtocol)
class Recorder(Protocol):
    """Records every byte received; tests wait on predicates over them."""

    def __init__(self) -> None:
        self.data = b""
        self.reads: list[bytes] = []  # each dataReceived call, in order
        self.half_closed = False  # readConnectionLost: the peer shut its write side (FIN)
        self.eof = False  # no more bytes will come: FIN, or the connection is gone
        self.closed = False  # connectionLost
        self._waiters: list[tuple[Callable[[], Any], defer.Deferred, str, bool]] = []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} got {len(self.data)}B eof={self.eof} closed={self.closed}>"

    # waiting

    def wait(self, predicate: Callable[[], Any], what: str, after_eof: bool = False) -> defer.Deferred:
        """Fire with ``predicate()`` once it is not None (checked on every event).

        Unless ``after_eof``, the wait fails as soon as no more bytes can come
        (a predicate over the received bytes cannot become true then).
        """
        value = predicate()
        if value is not None:
            return defer.succeed(value)
        if self.closed or (self.eof and not after_eof):
            return defer.fail(self._too_late(what))
        d: defer.Deferred = defer.Deferred()
        self._waiters.append((predicate, d, what, after_eof))
        return d

    def _too_late(self, what: str) -> AssertionError:
        return AssertionError(f"{self!r} ended before {what}; received {self.data!r}"[:3000])

    def _fail_waiters(self, all_: bool) -> None:
        for waiter in list(self._waiters):
            if all_ or not waiter[3]:
                self._waiters.remove(waiter)
                waiter[1].errback(self._too_late(waiter[2]))

    def wait_bytes(self, count: int, start: int = 0) -> defer.Deferred:
        """Fire with ``data[start:]`` once it holds at least ``count`` bytes."""
        return self.wait(lambda: self.data[start:] if len(self.data) - start >= count else None,
                         f"{count} bytes from offset {start}")

    def _check(self) -> None:
        for waiter in list(self._waiters):
            if waiter not in self._waiters:
                continue
            predicate, d = waiter[:2]
            try:
                value = predicate()
            except Exception:
                self._waiters.remove(waiter)
                d.errback()
                continue
            if value is not None:
                self._waiters.remove(waiter)
                d.callback(value)

    # events

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        self.reads.append(data)
        self.received()
        self._check()

    def received(self) -> None:
        """Hook for subclasses: new bytes are in ``self.data``."""

    def wait_eof(self) -> defer.Deferred:
        """Fire once no more bytes can come (the peer shut its write side, or the connection ended)."""
        return self.wait(lambda: True if self.eof else None, "end of input", after_eof=True)

    def wait_half_close(self) -> defer.Deferred:
        """Fire once the peer shut its write side (this connection still open)."""
        return self.wait(lambda: True if self.half_closed else None, "a half-close (FIN)", after_eof=True)

    def wait_closed(self) -> defer.Deferred:
        """Fire once the connection is gone."""
        return self.wait(lambda: True if self.closed else None, "the connection's end", after_eof=True)

    def readConnectionLost(self) -> None:
        self.half_closed = self.eof = True
        self._check()
        self._fail_waiters(all_=False)

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        self.closed = self.eof = True
        self._check()
        self._fail_waiters(all_=True)

    # acting

    def send(self, *pieces: bytes) -> None:
        for piece in pieces:
            self.transport.write(piece)

    def send_later(self, reactor: Any, delay: float, data: bytes) -> defer.Deferred:
        """Write ``data`` after ``delay`` seconds (to make separate TCP segments)."""
        d: defer.Deferred = defer.Deferred()

        def go() -> None:
            self.transport.write(data)
            d.callback(None)

        reactor.callLater(delay, go)
        return d


# -- the fake dockerd ----------------------------------------------------------------


class DockerConnection(Recorder):
    """One connection accepted by :class:`FakeDockerd`.

    Parses requests as they complete and queues them on the factory; after a
    request asking for an upgrade (or once :meth:`hijack` is called) the rest
    is a raw stream, available as :attr:`stream`.
    """

    factory: FakeDockerd

    def __init__(self) -> None:
        super().__init__()
        self.parsing = True
        self.cursor = 0  # end of the last parsed request
        self.requests: list[Message] = []

    def received(self) -> None:
        while self.parsing:
            got = parse_message(self.data, self.cursor, response=False)
            if got is None:
                return
            msg, self.cursor = got
            self.requests.append(msg)
            if is_upgrade(msg):
                self.parsing = False
            self.factory.queue.put((self, msg))

    def hijack(self) -> None:
        """Stop parsing: what follows the last request is a raw stream."""
        self.parsing = False

    @property
    def stream(self) -> bytes:
        return self.data[self.cursor:]

    def wait_stream(self, count: int) -> defer.Deferred:
        """Fire with :attr:`stream` once it holds ``count`` bytes."""
        return self.wait(lambda: self.stream if len(self.stream) >= count else None, f"{count} stream bytes")


class FakeDockerd(Factory):
    """A scripted dockerd: every connection is a :class:`DockerConnection`."""

    protocol = DockerConnection

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.connections: list[DockerConnection] = []
        self.queue: defer.DeferredQueue = defer.DeferredQueue()
        self.accepted: defer.DeferredQueue = defer.DeferredQueue()

    def buildProtocol(self, addr: Any) -> Any:
        proto = super().buildProtocol(addr)
        self.connections.append(proto)
        self.accepted.put(proto)
        return self.tracker.track(proto)

    def next_connection(self) -> defer.Deferred:
        """Fire with the next accepted :class:`DockerConnection`, in order."""
        return self.accepted.get()

    def next_request(self) -> defer.Deferred:
        """Fire with ``(connection, Message)`` for the next complete request, in arrival order."""
        return self.queue.get()

    @property
    def received(self) -> bytes:
        """Every byte any connection received."""
        return b"".join(c.data for c in self.connections)


# -- the raw client ------------------------------------------------------------------


class RawClient(Recorder):
    """A client that sends exact bytes; :meth:`response` parses what comes back."""

    def __init__(self) -> None:
        super().__init__()
        self.cursor = 0

    def response(self, head_only: bool = False) -> defer.Deferred:
        """Fire with the next complete response :class:`Message` (consumed)."""

        def complete() -> Message | None:
            got = parse_message(self.data, self.cursor, response=True, head_only=head_only, eof=self.eof)
            if got is None:
                return None
            msg, self.cursor = got
            return msg

        return self.wait(complete, "a complete response")

    def head(self) -> defer.Deferred:
        """Fire with the raw head of the next response once it is complete (not consumed)."""

        def complete() -> bytes | None:
            end = self.data.find(b"\r\n\r\n", self.cursor)
            return self.data[self.cursor:end + 4] if end >= 0 else None

        return self.wait(complete, "a response head")

    @property
    def rest(self) -> bytes:
        """What arrived after the responses consumed so far."""
        return self.data[self.cursor:]


def connect(reactor: Any, port: int, tracker: Tracker, tls: Any = None) -> defer.Deferred:
    """Fire with a connected :class:`RawClient` (over TLS with the client
    connection creator ``tls``: half-closeable like a plain one)."""
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
    client = tracker.track(RawClient())
    if tls is None:
        return endpoints.connectProtocol(endpoint, client)
    return TLSClientEndpoint(tls, endpoint).connect(Factory.forProtocol(lambda: client))


# -- the fake adapters -----------------------------------------------------------


Handler = Callable[[Request, dict], Any]


def reply(request: Request, obj: Any, code: int = 200, ctype: bytes | None = b"application/json") -> bytes:
    request.setResponseCode(code)
    if ctype is not None:
        request.setHeader(b"content-type", ctype)
    return obj if isinstance(obj, bytes) else json.dumps(obj).encode()


def echo_pre(request: Request, payload: dict) -> bytes:
    """A pre-hook that changes nothing."""
    return reply(request, {"PowerstripProtocolVersion": 1, "ModifiedClientRequest": payload["ClientRequest"]})


def echo_post(request: Request, payload: dict) -> bytes:
    """A post-hook that changes nothing."""
    return reply(request, {"PowerstripProtocolVersion": 1, "ModifiedServerResponse": payload["ServerResponse"]})


class FakeAdapters(Resource):
    """Serves ``POST /NAME`` with ``handlers[NAME]``; records every call."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.handlers: dict[str, Handler] = {}
        self.calls: list[tuple[str, dict]] = []
        self.content_types: list[bytes | None] = []
        self.finished: list[list] = []  # per call: what notifyFinish fired with, once it has

    def render_POST(self, request: Request) -> Any:
        name = request.path.decode().strip("/")
        payload = json.loads(request.content.read())
        self.calls.append((name, payload))
        self.content_types.append(request.getHeader(b"content-type"))
        outcome: list = []
        request.notifyFinish().addBoth(outcome.append)
        self.finished.append(outcome)
        return self.handlers[name](request, payload)

    @property
    def called(self) -> list[str]:
        return [name for name, _ in self.calls]


# -- clean-up -------------------------------------------------------------------------


class Tracker:
    """Every connection of a test, on every side, so clean-up can end them all."""

    def __init__(self) -> None:
        self.connections: list[tuple[Any, defer.Deferred]] = []

    def track(self, proto: Any) -> Any:
        """Wrap ``proto`` (before it connects) so its transport and end are known."""
        lost: defer.Deferred = defer.Deferred()
        make_connection, connection_lost = proto.makeConnection, proto.connectionLost

        def connected(transport: Any) -> None:
            self.connections.append((transport, lost))
            make_connection(transport)

        def disconnected(reason: Any) -> None:
            try:
                connection_lost(reason)
            finally:
                if not lost.called:
                    lost.callback(None)

        proto.makeConnection, proto.connectionLost = connected, disconnected
        return proto

    def track_factory(self, factory: Any) -> Any:
        """Track every protocol ``factory`` builds from now on."""
        build = factory.buildProtocol
        factory.buildProtocol = lambda addr: self.track(build(addr))
        return factory

    def close_all(self) -> defer.Deferred:
        """Abort whatever is still open; fire once every connection is gone."""
        for transport, lost in self.connections:
            if not lost.called:
                transport.abortConnection()
        return defer.gatherResults([lost for _, lost in self.connections])


def unused_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()
