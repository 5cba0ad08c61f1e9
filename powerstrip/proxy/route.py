"""The proxy: what every connection and request shares, and the entry point for requests.

:class:`Proxy` is resource-shaped: the front hands it each request head
(:meth:`Proxy.exchange`, as a twisted.web ``Site`` hands a request to its
resource), and it answers with the :class:`~powerstrip.proxy.exchange.Exchange`
that will carry the request. It holds the configuration in force (replaced
whole on a reload, never mutated), the dockerd connection pool, the hook
chain, the limits, and the live sets a shutdown drains. The end of every
exchange is reported to its observers (:meth:`Proxy.ended`): the access log
and the metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from powerstrip.config.matching import Route, match
from powerstrip.config.spec import Config
from powerstrip.hooks.chain import HookChain
from powerstrip.hooks.http import AdapterClient
from powerstrip.proxy.exchange import AccessLine, Counters, Exchange
from powerstrip.proxy.exchange import Limits as Limits  # re-exported: the route's public surface (ops imports it)
from powerstrip.proxy.front import FrontConnection
from powerstrip.proxy.splice import Splice
from powerstrip.proxy.upstream import UpstreamPool
from powerstrip.wire.endpoints import DockerAddress
from powerstrip.wire.http11 import RequestHead
from powerstrip.wire.tls import DockerTLS

#: Log namespaces are part of the interface (log filters name them): kept across moves.
log = Logger(namespace="powerstrip.proxy")

#: Distinct (method, target) route lookups kept per configuration.
_ROUTE_CACHE = 4096


class Uncounted:
    """:class:`Counters` that count nothing: a proxy run without metrics (tests, embedding)."""

    def __init__(self, inflight: Sized, streams: Sized) -> None:
        pass

    def request_done(self, exchange: Exchange) -> None:
        """Nothing is counted."""

    def refused(self, code: int) -> None:
        """Nothing is counted."""

    def stream_started(self) -> None:
        """Nothing is counted."""

    def reloaded(self, ok: bool) -> None:
        """Nothing is counted."""


class Proxy:
    """Every request, whatever its path: an :class:`Exchange` each.

    What watches it is given, never built here (the operating layer above
    owns metrics and logs): ``metrics`` makes the :class:`Counters` from the
    proxy's live sets of requests and streams (their gauges read them), and
    ``access_log`` gets a line per ended exchange.
    """

    def __init__(
        self,
        reactor: Any,
        config: Config,
        docker: DockerAddress,
        limits: Limits | None = None,
        access_log: AccessLine | None = None,
        docker_tls: DockerTLS | None = None,
        verbose: bool = False,
        metrics: Callable[[Sized, Sized], Counters] = Uncounted,
    ) -> None:
        self.reactor = reactor
        #: Called with the new config whenever :attr:`config` is replaced (event hooks follow reloads).
        self.config_observers: list[Callable[[Config], None]] = []
        self._routes: dict[tuple[str, str], Route] = {}
        self.config = config
        self.limits = limits or Limits()
        self.upstream = UpstreamPool(reactor, docker, tls=docker_tls)
        self.adapters = AdapterClient(reactor)
        self.chain = HookChain(self.adapters, verbose=verbose)
        #: Client connections open, requests being answered, hijacked streams: what a shutdown drains.
        self.connections: set[FrontConnection] = set()
        self.inflight: set[Exchange] = set()
        self.streams: set[Splice] = set()
        #: Bytes held for hooks right now (request and response bodies), against ``max_buffered``.
        self.buffered = 0
        #: Prometheus metrics (``GET /metrics`` on the admin listener).
        self.metrics = metrics(self.inflight, self.streams)
        #: One line per request (None: none).
        self.access_log = access_log
        #: Told of every exchange once it has ended (after the access log and metrics).
        self.end_observers: list[Callable[[Exchange], None]] = []

    @property
    def config(self) -> Config:
        """The configuration in force; a reload assigns a new one, which :attr:`config_observers` are told."""
        return self._config

    @config.setter
    def config(self, config: Config) -> None:
        self._config = config
        self._routes = {}
        for observer in list(self.config_observers):
            observer(config)

    def route(self, method: str, path: str) -> Route:
        """The hooks for ``method path`` (no query) under the config in force (cached per config)."""
        key = (method, path)
        route = self._routes.get(key)
        if route is None:
            if len(self._routes) >= _ROUTE_CACHE:
                self._routes = {}
            route = self._routes[key] = match(self._config, method, path)
        return route

    def exchange(self, client: FrontConnection, head: RequestHead) -> Exchange:
        """The resource-shaped entry point: the exchange that will carry this request."""
        return Exchange(self, client, head)

    def ended(self, exchange: Exchange) -> None:
        """An exchange is over: tell the observers (once per exchange)."""
        self.metrics.request_done(exchange)
        if self.access_log:
            self.access_log.write(exchange)
        for observer in self.end_observers:
            observer(exchange)

    def connection_closed(self, client: FrontConnection) -> None:
        """A client connection is gone."""
        self.connections.discard(client)

    def drain(self, timeout: float) -> defer.Deferred[None]:
        """Let requests in flight finish (for at most ``timeout`` seconds), then
        end hijacked streams and whatever is still open. Fires when done."""
        deadline = self.reactor.seconds() + timeout
        done: defer.Deferred[None] = defer.Deferred()

        def check() -> None:
            if self.inflight and self.reactor.seconds() < deadline:
                self.reactor.callLater(0.05, check)
                return
            if self.inflight or self.streams:
                log.info(
                    "shutdown: closing {n} unfinished request(s) and {s} stream(s)",
                    n=len(self.inflight),
                    s=len(self.streams),
                )
            for exchange in list(self.inflight):
                exchange.client.transport.loseConnection()
            for splice in list(self.streams):
                splice.close()
            for client in list(self.connections):
                client.close()
            done.callback(None)

        check()
        return done

    def close(self) -> Any:
        """Drop pooled connections to dockerd and adapters; flush the access log."""
        self.upstream.close()
        if self.access_log:
            self.access_log.flush()
        return self.adapters.close()
