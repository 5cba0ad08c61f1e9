"""The smallest Twisted HTTP relay that could beat Powerstrip: the bench's yardstick.

A raw ``Protocol`` per client: request heads found with
``bytes.find(b"\\r\\n\\r\\n")`` and forwarded as bytes (bodies by
Content-Length only), a pool of idle UNIX connections to dockerd, response
framing counted (Content-Length or chunked) and relayed as bytes, each
write sent at once while the socket takes it (:class:`powerstrip.wire.sender.Sender`,
the lever Powerstrip uses: a yardstick without it would be one Powerstrip beats). No
parsing beyond that, no hooks, no log, no metrics, no limits, no hijack:
what is left is the cost of CPython and Twisted's reactor, which is the
ceiling Powerstrip's front is held to (bench/run.py, the ``bare-relay`` row).

    python bench/bare_relay.py PORT [/var/run/docker.sock]
"""

from __future__ import annotations

import sys

from twisted.internet import endpoints, reactor
from twisted.internet.protocol import Factory, Protocol

from powerstrip.wire.sender import Sender


class Upstream(Protocol):
    """One pooled connection to dockerd, relaying one response at a time."""

    def __init__(self) -> None:
        self.client: Client | None = None
        self.buf = b""
        self.left = -1  # body bytes still to come; -1: reading the head; -2: chunked
        self.pool: list[Upstream] = []

    def connectionMade(self) -> None:
        self.sender = Sender(self.transport)

    def dataReceived(self, data: bytes) -> None:
        client = self.client
        if self.left == -1:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.buf[: end + 4], self.buf[end + 4 :]
            self.buf = b""
            lower = head.lower()
            i = lower.find(b"\r\ncontent-length:")
            if i >= 0:
                self.left = int(lower[i + 17 : lower.find(b"\r\n", i + 2)])
            else:
                self.left = -2
            client.sender.write(head)
        if self.left == -2:  # chunked: done at the terminating chunk (good enough for a yardstick)
            client.sender.write(data)
            if data.endswith(b"0\r\n\r\n"):
                self._done()
            return
        client.sender.write(data)
        self.left -= len(data)
        if self.left <= 0:
            self._done()

    def _done(self) -> None:
        client, self.client = self.client, None
        self.left = -1
        self.pool.append(self)
        client.next()

    def connectionLost(self, reason: object = None) -> None:
        if self in self.pool:
            self.pool.remove(self)


class Client(Protocol):
    """One client connection: forwards each request head (and body) to a pooled dockerd connection."""

    def __init__(self, factory: RelayFactory) -> None:
        self.factory = factory
        self.buf = b""
        self.busy = False

    def connectionMade(self) -> None:
        self.sender = Sender(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.next()

    def next(self) -> None:
        self.busy = False
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        lower = self.buf[: end + 2].lower()
        i = lower.find(b"\r\ncontent-length:")
        length = int(lower[i + 17 : lower.find(b"\r\n", i + 2)]) if i >= 0 else 0
        if len(self.buf) < end + 4 + length:
            return
        request, self.buf = self.buf[: end + 4 + length], self.buf[end + 4 + length :]
        self.busy = True
        pool = self.factory.pool
        if pool:
            self._send(pool.pop(), request)
        else:
            self.factory.endpoint.connect(self.factory.upstream).addCallback(self._send, request)

    def _send(self, upstream: Upstream, request: bytes) -> None:
        upstream.pool = self.factory.pool
        upstream.client = self
        upstream.sender.write(request)


class RelayFactory(Factory):
    noisy = False

    def __init__(self, socket_path: str) -> None:
        self.pool: list[Upstream] = []
        self.endpoint = endpoints.UNIXClientEndpoint(reactor, socket_path)
        self.upstream = Factory.forProtocol(Upstream)
        self.upstream.noisy = False

    def buildProtocol(self, addr: object) -> Client:
        return Client(self)


def main() -> None:
    port = int(sys.argv[1])
    sock = sys.argv[2] if len(sys.argv) > 2 else "/var/run/docker.sock"
    reactor.listenTCP(port, RelayFactory(sock), interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
