"""The one support module of the unit tests: fakes, wire bytes, and the test bases.

Test modules import what they share from here, never from each other (a
``TestCase`` subclass imported into a ``test_*`` module would also be collected
there; helpers living in a test module tie unrelated tests to it).

In-process fakes for protocol tests of the proxy:

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

The test bases (no tests of their own):

- :class:`ProxyTestCase`: a fake dockerd, fake adapters and Powerstrip in front
  of them, on 127.0.0.1 (with the request/response byte builders below);
- :class:`HookTestCase`: fake adapters, an ``AdapterClient`` and a ``HookChain``;
- :class:`Certificates` and :func:`client_creator`: TLS material in Docker's
  layout, from :class:`CA` (:mod:`tests.certs`, shared with the end-to-end
  tests' support);
- :func:`parse_options`: the twistd plugin's options, parsed as in production.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from twisted.internet import defer, endpoints, reactor, ssl
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

from powerstrip.config.matching import Route
from powerstrip.config.spec import AdapterSpec, parse_config
from powerstrip.hooks.chain import HookChain
from powerstrip.hooks.flow import ClientRequest, Flow, ServerResponse
from powerstrip.hooks.http import AdapterClient
from powerstrip.hooks.interface import AdapterFault
from powerstrip.ops.access import AccessLog
from powerstrip.ops.metrics import Metrics
from powerstrip.ops.service import Options
from powerstrip.proxy.front import FrontFactory
from powerstrip.proxy.route import Limits, Proxy
from powerstrip.wire.endpoints import DockerAddress
from powerstrip.wire.tls import DockerTLS, ListenerTLS, TLSClientEndpoint
from tests.certs import CA

__all__ = [
    "ATTACH_URI",
    "CA",
    "CREATE_PRE",
    "FRAME",
    "JSON",
    "LAST_CHUNK",
    "PASSTHROUGH",
    "UPGRADED",
    "VERSION_RESPONSE",
    "Certificates",
    "DockerConnection",
    "FakeAdapters",
    "FakeDockerd",
    "FramingError",
    "Handler",
    "HookTestCase",
    "Message",
    "ProxyTestCase",
    "RawClient",
    "Recorder",
    "Tracker",
    "add_env",
    "attach_request",
    "chunk",
    "client_creator",
    "connect",
    "echo_post",
    "echo_pre",
    "is_upgrade",
    "json_request",
    "json_response",
    "make_request",
    "parse_message",
    "parse_options",
    "reply",
    "request",
    "response",
    "unused_port",
]


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
        if buf[pos + size : pos + size + 2] != b"\r\n":
            raise FramingError(f"chunk not followed by CRLF at {pos + size}")
        chunks.append(buf[pos : pos + size])
        pos += size + 2


def parse_message(
    buf: bytes, pos: int, *, response: bool, head_only: bool = False, eof: bool = False
) -> tuple[Message, int] | None:
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
        return self.wait(
            lambda: self.data[start:] if len(self.data) - start >= count else None, f"{count} bytes from offset {start}"
        )

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
        return self.data[self.cursor :]

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
            return self.data[self.cursor : end + 4] if end >= 0 else None

        return self.wait(complete, "a response head")

    @property
    def rest(self) -> bytes:
        """What arrived after the responses consumed so far."""
        return self.data[self.cursor :]


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
    """An adapter's answer: ``obj`` as JSON (bytes as they are), with ``code`` and content type ``ctype``."""
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


# -- request and response bytes ------------------------------------------------------

PASSTHROUGH = "version: 1\nendpoints: {}\nadapters: {}\n"

ATTACH_URI = b"/v1.41/containers/abc/attach?stderr=1&stdin=1&stdout=1&stream=1"
UPGRADED = (
    b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
    b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
)
#: A multiplexed stdout frame: [1, 0, 0, 0, size uint32 BE] + payload.
FRAME = b"\x01\x00\x00\x00\x00\x00\x00\x06hello\n"


def request(
    method: bytes,
    uri: bytes,
    *headers: tuple[bytes, bytes],
    body: bytes = b"",
    version: bytes = b"HTTP/1.1",
    host: bool = True,
) -> bytes:
    """The exact bytes of a request (``Host: docker`` first unless told otherwise)."""
    lines = [method + b" " + uri + b" " + version]
    if host:
        lines.append(b"Host: docker")
    lines.extend(k + b": " + v for k, v in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def attach_request(*extra: tuple[bytes, bytes]) -> bytes:
    """``docker run``'s attach, as the CLI sends it (Upgrade, empty text/plain body)."""
    return request(
        b"POST",
        ATTACH_URI,
        (b"Connection", b"Upgrade"),
        (b"Upgrade", b"tcp"),
        (b"Content-Type", b"text/plain"),
        (b"Content-Length", b"0"),
        *extra,
    )


def json_request(method: bytes, uri: bytes, obj: Any) -> bytes:
    """A request with ``obj`` as its JSON body (``Content-Length`` framed)."""
    body = json.dumps(obj).encode()
    return request(
        method, uri, (b"Content-Type", b"application/json"), (b"Content-Length", b"%d" % len(body)), body=body
    )


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def response(status: bytes, *headers: tuple[bytes, bytes], body: bytes = b"") -> bytes:
    """The exact bytes of a response."""
    lines = [b"HTTP/1.1 " + status]
    lines.extend(k + b": " + v for k, v in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def json_response(status: bytes, obj: Any) -> bytes:
    """A response with ``obj`` as its JSON body (``Content-Length`` framed)."""
    body = json.dumps(obj).encode()
    return response(status, (b"Content-Type", b"application/json"), (b"Content-Length", b"%d" % len(body)), body=body)


#: dockerd's answer to ``GET /version``.
VERSION_RESPONSE = json_response(b"200 OK", {"ApiVersion": "1.41", "Version": "20.10.24"})

#: A pre-hook ``hook`` (at the fake adapters) on ``POST /*/containers/create``.
CREATE_PRE = 'version: 1\nendpoints:\n  "POST /*/containers/create":\n    pre: [hook]\nadapters:\n  hook: $BASE/hook\n'


def add_env(call: Request, payload: dict) -> bytes:
    """A pre-hook that adds ``Env`` to the container config."""
    req = dict(payload["ClientRequest"])
    body = json.loads(req["Body"])
    body["Env"] = ["POWERSTRIP_HOOKED=1"]
    req["Body"] = json.dumps(body)
    return reply(call, {"PowerstripProtocolVersion": 1, "ModifiedClientRequest": req})


# -- the proxy test base ---------------------------------------------------------------


class ProxyTestCase(TestCase):
    """A fake dockerd, fake adapters and (on :meth:`start`) Powerstrip in front of them."""

    timeout = 10

    def setUp(self) -> None:
        self.tracker = Tracker()
        self.ports: list[Any] = []
        self.resources: list[Proxy] = []
        self.proxy_transports: list[Any] = []  # Powerstrip's side of each client connection
        self.dockerd = FakeDockerd(self.tracker)
        self.dockerd_port = self.listen(self.dockerd)
        self.adapters = FakeAdapters()
        self.adapter_base = f"http://127.0.0.1:{self.listen(Site(self.adapters))}"
        self.addCleanup(self._shutdown)

    def listen(self, factory: Any) -> int:
        self.tracker.track_factory(factory)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.ports.append(port)
        return port.getHost().port

    def start(
        self,
        config: str = PASSTHROUGH,
        limits: Limits | None = None,
        docker: str | None = None,
        tls: ListenerTLS | None = None,
        docker_tls: DockerTLS | None = None,
        verbose: bool = False,
        site_options: dict | None = None,
        **handlers: Any,
    ) -> Proxy:
        """Run Powerstrip with ``config`` (``$BASE`` is the fake adapters' URL) and adapter ``handlers``.

        ``tls`` puts its listener behind TLS; ``docker_tls`` talks TLS to the
        fake dockerd; ``site_options`` go to :class:`FrontFactory`.
        """
        self.adapters.handlers.update(handlers)
        cfg = parse_config(config.replace("$BASE", self.adapter_base), "test")
        address = DockerAddress.parse(docker or f"tcp://127.0.0.1:{self.dockerd_port}")
        # Access lines as twisted.logger events (what a service without a log file writes).
        resource = Proxy(
            reactor,
            cfg,
            address,
            limits or Limits(),
            docker_tls=docker_tls,
            verbose=verbose,
            metrics=Metrics,
            access_log=AccessLog(reactor),
        )
        # The pool's connections to dockerd are ended at clean-up like every other.
        self.tracker.track_factory(resource.upstream._factory)
        self.resources.append(resource)
        site = FrontFactory(resource, **(site_options or {}))
        self.proxy_port = self.listen(site if tls is None else tls.wrap(site))
        build = site.buildProtocol

        def build_and_record(addr: Any) -> Any:
            channel = build(addr)
            make_connection = channel.makeConnection

            def connected(transport: Any) -> None:
                self.proxy_transports.append(transport)
                make_connection(transport)

            channel.makeConnection = connected
            return channel

        site.buildProtocol = build_and_record
        return resource

    def connect(self, tls: Any = None) -> defer.Deferred:
        """Fire with a new :class:`RawClient` connected to Powerstrip (over
        TLS with the client connection creator ``tls``)."""
        return connect(reactor, self.proxy_port, self.tracker, tls)

    @defer.inlineCallbacks
    def _shutdown(self) -> Any:
        # A finished adapter call returns its connection to treq's pool a turn later.
        yield deferLater(reactor, 0, lambda: None)
        for resource in self.resources:
            yield resource.close()
        yield self.tracker.close_all()
        for port in self.ports:
            yield port.stopListening()

    @defer.inlineCallbacks
    def roundtrip(self, client: RawClient, data: bytes, answer: bytes, head_only: bool = False) -> Any:
        """Send ``data``; dockerd answers its next request with ``answer``.

        Fires with ``(request dockerd got, its connection, response the client got)``.
        """
        client.send(data)
        conn, req = yield self.dockerd.next_request()
        conn.send(answer)
        resp = yield client.response(head_only=head_only)
        return req, conn, resp

    def assertNothingReachedDocker(self) -> None:
        self.assertEqual(self.dockerd.connections, [], "dockerd was connected to")
        self.assertEqual(self.dockerd.received, b"")

    def assertDockerError(self, resp: Message, code: int, prefix: str) -> str:
        """``resp`` is a Docker-style JSON error with ``code`` whose message starts with ``prefix``."""
        self.assertEqual(resp.code, code, resp.raw)
        self.assertEqual(resp.values(b"content-type"), [b"application/json"])
        self.assertEqual(resp.value(b"content-length"), b"%d" % len(resp.body))
        message = resp.json()["message"]
        self.assertTrue(message.startswith(prefix), message)
        return message


# -- TLS material ------------------------------------------------------------------------


def client_creator(directory: Path) -> Any:
    """What a docker CLI with ``DOCKER_CERT_PATH=directory`` presents and trusts."""
    pem = {name: (directory / name).read_bytes() for name in ("ca.pem", "cert.pem", "key.pem")}
    return ssl.optionsForClientTLS(
        "localhost",
        trustRoot=ssl.Certificate.loadPEM(pem["ca.pem"]),
        clientCertificate=ssl.PrivateCertificate.loadPEM(pem["cert.pem"] + pem["key.pem"]),
    )


class Certificates:
    """One CA's server and client certificates, plus a client from another CA."""

    def __init__(self, root: Path) -> None:
        ca, rogue = CA(), CA("rogue CA")
        self.server = ca.write(root / "server", "localhost", server=True)
        self.client = ca.write(root / "client", "alice", server=False)
        self.rogue = rogue.write(root / "rogue", "mallory", server=False)
        # The rogue client trusts the right server: only its own certificate is wrong.
        (self.rogue / "ca.pem").write_bytes((self.server / "ca.pem").read_bytes())

    def listener(self, verify: bool = True) -> ListenerTLS:
        s = self.server
        return ListenerTLS(str(s / "cert.pem"), str(s / "key.pem"), str(s / "ca.pem") if verify else None)


# -- the hook chain test base ------------------------------------------------------------

JSON = [(b"Content-Type", b"application/json")]


def make_request(
    body: bytes | None = b'{"Image":"busybox"}',
    streamed: bool = False,
    method: str = "POST",
    uri: str = "/v1.41/containers/create?name=web",
) -> ClientRequest:
    """A buffered (or ``streamed``) client request, as the hook chain gets it from the proxy."""
    headers = [(b"Host", b"docker"), (b"Content-Type", b"application/json"), (b"X-Extra", b"1")]
    return ClientRequest(method, uri, headers, body, streamed)


class HookTestCase(TestCase):
    """A live fake-adapter server, an AdapterClient and a HookChain per test."""

    timeout = 10  # seconds: a hung hook chain fails fast instead of after trial's 120

    def setUp(self) -> None:
        self.adapters = FakeAdapters()
        self.tracker = Tracker()
        self.port = reactor.listenTCP(0, self.tracker.track_factory(Site(self.adapters)), interface="127.0.0.1")
        self.client = AdapterClient(reactor)
        self.chain = HookChain(self.client)
        self.addCleanup(self._shutdown)

    @defer.inlineCallbacks
    def _shutdown(self) -> Any:
        # A connection whose reply was read in full goes back to the pool a
        # reactor turn after the call's result: let it, then close the pool.
        yield deferLater(reactor, 0, lambda: None)
        yield self.client.close()
        yield self.tracker.close_all()
        yield self.port.stopListening()

    def adapter(self, name: str, handler: Handler | None = None, timeout: float = 5.0) -> AdapterSpec:
        """An AdapterSpec served by the fake server at ``/name`` with ``handler``."""
        if handler is not None:
            self.adapters.handlers[name] = handler
        return AdapterSpec(name, f"http://127.0.0.1:{self.port.getHost().port}/{name}", timeout)

    def pre_flow(self, *adapters: AdapterSpec, request: ClientRequest | None = None) -> Flow:
        return Flow(request or make_request(), Route(("test",), pre=adapters))

    def post_flow(
        self, *adapters: AdapterSpec, response: ServerResponse | None = None, request: ClientRequest | None = None
    ) -> Flow:
        flow = Flow(request or make_request(), Route(("test",), post=adapters))
        flow.response = response or ServerResponse(201, [*JSON, (b"Api-Version", b"1.41")], b'{"Id":"abc123"}')
        return flow

    @defer.inlineCallbacks
    def pre_fault(self, handler: Handler, *fragments: str, code: int = 502) -> Any:
        """Run one pre-hook answering with ``handler``; it must fault with ``fragments``."""
        a = self.adapter("bad", handler)
        fault = yield self.assertFailure(self.chain.run_pre(self.pre_flow(a)), AdapterFault)
        self.assertFault(fault, a, code, *fragments)
        return fault

    @defer.inlineCallbacks
    def post_fault(self, handler: Handler, *fragments: str, code: int = 502) -> Any:
        """Run one post-hook answering with ``handler``; it must fault with ``fragments``."""
        a = self.adapter("bad", handler)
        fault = yield self.assertFailure(self.chain.run_post(self.post_flow(a)), AdapterFault)
        self.assertFault(fault, a, code, *fragments)
        return fault

    def assertFault(self, fault: AdapterFault, adapter: AdapterSpec, code: int, *fragments: str) -> None:
        message = str(fault)
        self.assertTrue(message.startswith(f"powerstrip: adapter '{adapter.name}' ({adapter.url}): "), message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        self.assertEqual(fault.code, code, message)
        self.assertIs(fault.adapter, adapter)


# -- the twistd plugin's options -----------------------------------------------------------


def parse_options(case: TestCase, *argv: str, env: dict | None = None) -> Options:
    """``argv`` parsed by the plugin's :class:`Options` in environment ``env`` (only), for ``case``.

    The default adapters file is pointed at a path of ``case`` that does not
    exist, so whatever ``/etc/powerstrip`` holds on this machine does not leak in.
    """
    options = Options()
    with (
        mock.patch.dict(os.environ, env or {}, clear=True),
        mock.patch("powerstrip.ops.service.DEFAULT_CONFIG", case.mktemp()),
    ):
        options.parseOptions(list(argv))
    return options
