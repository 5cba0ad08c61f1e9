"""powerstrip.wire.sender: writes go straight to the socket while it takes them, then through the transport."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer, endpoints, reactor
from twisted.internet.interfaces import ISystemHandle
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from powerstrip.wire.sender import Sender, SendingEndpoint


class _Collect(Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.want = 0
        self.got: defer.Deferred | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.got is not None and len(self.data) >= self.want:
            got, self.got = self.got, None
            got.callback(bytes(self.data))

    def until(self, n: int) -> defer.Deferred:
        self.want, self.got = n, defer.Deferred()
        self.dataReceived(b"")
        return self.got


class Direct(TestCase):
    @defer.inlineCallbacks
    def connected(self) -> Any:
        """(the client's transport, the server's collecting protocol) over TCP loopback."""
        server = _Collect()
        port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(lambda: server)
        )
        self.addCleanup(port.stopListening)
        client = yield endpoints.connectProtocol(
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), Protocol()
        )
        self.addCleanup(client.transport.loseConnection)
        return client.transport, server

    @defer.inlineCallbacks
    def test_small_writes_go_straight_to_the_socket(self) -> Any:
        """Nothing is queued in the transport: the bytes are in the kernel when write returns."""
        transport, server = yield self.connected()
        sender = Sender(transport)
        self.assertTrue(sender.direct)
        sender.write(b"GET /_ping HTTP/1.1\r\n\r\n")
        sender.write(b"more")
        self.assertTrue(sender.direct)
        data = yield server.until(27)
        self.assertEqual(data, b"GET /_ping HTTP/1.1\r\n\r\nmore")

    @defer.inlineCallbacks
    def test_tcp_sends_without_waiting_for_acks(self) -> Any:
        """TCP_NODELAY: the second of two small writes in a row does not wait on the peer's delayed ACK."""
        transport, server = yield self.connected()
        self.assertFalse(transport.getTcpNoDelay())
        Sender(transport)
        self.assertTrue(transport.getTcpNoDelay())

    @defer.inlineCallbacks
    def test_a_full_socket_hands_the_rest_to_the_transport_in_order(self) -> Any:
        """The socket takes part of a big write: the rest and every later write are queued, in order."""
        transport, server = yield self.connected()
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sender = Sender(transport)
        big = bytes(range(256)) * (32 * 1024)  # 8 MiB: more than any socket buffer takes at once
        sender.write(big)
        self.assertFalse(sender.direct)
        sender.write(b"after")
        self.assertFalse(sender.direct)
        data = yield server.until(len(big) + 5)
        self.assertEqual(data, big + b"after")

    @defer.inlineCallbacks
    def test_queue_turns_direct_writes_off(self) -> Any:
        """Once someone else writes to the transport (a splice), the sender queues too."""
        transport, server = yield self.connected()
        sender = Sender(transport)
        sender.write(b"head,")
        sender.queue()
        transport.write(b"spliced,")
        sender.write(b"last")
        self.assertFalse(sender.direct)
        data = yield server.until(17)
        self.assertEqual(data, b"head,spliced,last")

    @defer.inlineCallbacks
    def test_a_closing_transport_is_not_written_behind(self) -> Any:
        """After loseConnection the transport decides (it sends what it had, then closes)."""
        transport, server = yield self.connected()
        sender = Sender(transport)
        transport.loseConnection()
        sender.write(b"late")
        self.assertFalse(sender.direct)


class NotASocket(TestCase):
    def test_tls_is_never_written_behind(self) -> None:
        """A TLS transport's handle is its TLS connection, not a socket: every write goes through it."""

        @implementer(ISystemHandle)
        class TLSLike(StringTransport):
            def getHandle(self) -> object:
                return object()

        transport = TLSLike()
        sender = Sender(transport)
        self.assertFalse(sender.direct)
        sender.write(b"data")
        self.assertEqual(transport.value(), b"data")

    def test_a_transport_without_a_handle(self) -> None:
        """In-memory transports (tests) are written through."""
        transport = StringTransport()
        sender = Sender(transport)
        self.assertFalse(sender.direct)
        sender.write(b"data")
        self.assertEqual(transport.value(), b"data")


class Endpoint(TestCase):
    @defer.inlineCallbacks
    def test_a_protocol_we_did_not_write_sends_at_once(self) -> Any:
        """SendingEndpoint: the caller gets its own protocol, whose writes are in the kernel when
        write returns (read here with the reactor stopped), and which receives what comes back."""
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        got = _Collect()
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        factory = Factory.forProtocol(lambda: got)
        factory.noisy = False  # as twisted.web's client's are: what is left is the endpoint's
        protocol = yield SendingEndpoint(
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", listener.getsockname()[1])
        ).connect(factory)
        self.assertEqual([formatEvent(e) for e in events], [], "a log line per connection")
        self.assertIs(protocol, got)
        self.addCleanup(protocol.transport.loseConnection)
        server, _ = listener.accept()
        self.addCleanup(server.close)
        server.settimeout(5)
        protocol.transport.write(b"POST /hook HTTP/1.1\r\n")
        protocol.transport.writeSequence([b"Content-Length: 2\r\n\r\n", b"{}"])
        want = b"POST /hook HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
        data = b""
        while len(data) < len(want):
            data += server.recv(100)  # no reactor turn in between: the bytes were sent by write itself
        self.assertEqual(data, want)
        self.assertEqual(protocol.transport.getPeer().port, listener.getsockname()[1])
        server.sendall(b"HTTP/1.1 200 OK\r\n")
        answer = yield got.until(17)
        self.assertEqual(answer, b"HTTP/1.1 200 OK\r\n")
