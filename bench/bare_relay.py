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

With ``--duties`` (the ``duty-relay`` row) it also does what every request costs
Powerstrip whatever its hooks, and nothing more: each request head is read by
Powerstrip's own strict reader (:func:`powerstrip.wire.http11.parse_request_head`),
its route looked up in a cache, a request id stamped into the response head, the
request counted by route, method and status, and one access line ``%``-formatted
into a buffered file (flushed every 0.2 s). No state machine, no exchange
object, no hijack, no limits: the smallest relay that keeps Powerstrip's promises
to every request, so what Powerstrip costs beyond it is its structure.

    python bench/bare_relay.py PORT [/var/run/docker.sock] [--duties ACCESS_LOG_FILE]
"""

from __future__ import annotations

import sys
import time
from typing import IO

from twisted.internet import endpoints, reactor
from twisted.internet.protocol import Factory, Protocol

from powerstrip.hooks.flow import new_request_id
from powerstrip.wire.http11 import BadRequest, parse_request_head
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
            if client.rid:
                client.status = int(head[9:12])
                head = head[:-2] + b"Powerstrip-Request-Id: %s\r\n\r\n" % client.rid.encode()
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
        if client.rid:
            client.factory.account(client)
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
        self.rid = ""  # with --duties: the request's id (and method, target, route, status, start)
        self.method = self.target = self.route = ""
        self.status = 0
        self.started = 0.0

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
        if self.factory.duties:
            try:
                head = parse_request_head(self.buf[: end + 4])
            except BadRequest:
                self.transport.loseConnection()
                return
            length = head.content_length or 0
            self.rid, self.started = new_request_id(), time.monotonic()
            self.method, self.target = head.method, head.target
            self.route = self.factory.route(head.method, head.path)
        else:
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

    def __init__(self, socket_path: str, access: IO[str] | None = None) -> None:
        self.pool: list[Upstream] = []
        self.endpoint = endpoints.UNIXClientEndpoint(reactor, socket_path)
        self.upstream = Factory.forProtocol(Upstream)
        self.upstream.noisy = False
        self.duties = access is not None
        self.access = access
        self.routes: dict[tuple[str, str], str] = {}
        self.counts: dict[tuple[str, str, int], int] = {}
        self.flush_call: object = None
        self.second, self.stamp = -1, ""

    def buildProtocol(self, addr: object) -> Client:
        return Client(self)

    def route(self, method: str, path: str) -> str:
        """The rule a request matches (none here), looked up once per method and path."""
        key = (method, path)
        route = self.routes.get(key)
        if route is None:
            route = self.routes[key] = "none"
        return route

    def account(self, client: Client) -> None:
        """Count a finished request and write its access line."""
        key = (client.route, client.method, client.status)
        self.counts[key] = self.counts.get(key, 0) + 1
        now = time.time()
        if int(now) != self.second:  # the timestamp, formatted once a second (as Powerstrip does)
            self.second, self.stamp = int(now), time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now))
        ms = (time.monotonic() - client.started) * 1000
        self.access.write(  # type: ignore[union-attr]  # set with duties
            "%s [powerstrip.access#info] #%s %s %s -> %d %.1fms\n"  # noqa: UP031 -- the cost Powerstrip is held to
            % (self.stamp, client.rid, client.method, client.target, client.status, ms)
        )
        if self.flush_call is None:
            self.flush_call = reactor.callLater(0.2, self.flush)

    def flush(self) -> None:
        self.flush_call = None
        self.access.flush()  # type: ignore[union-attr]  # set with duties


def main() -> None:
    args = sys.argv[1:]
    access = None
    if "--duties" in args:
        at = args.index("--duties")
        access = open(args[at + 1], "a", buffering=1 << 20)  # noqa: SIM115 -- open for the process's life
        del args[at : at + 2]
    port = int(args[0])
    sock = args[1] if len(args) > 1 else "/var/run/docker.sock"
    reactor.listenTCP(port, RelayFactory(sock, access), interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
