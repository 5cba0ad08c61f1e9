"""The twisted.web resource that proxies every request to dockerd."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from powerstrip.adapters import AdapterClient
from powerstrip.config import Config
from powerstrip.exchange import Exchange
from powerstrip.hooks import HookChain
from powerstrip.metrics import Metrics
from powerstrip.splice import Splice
from powerstrip.tls import DockerTLS
from powerstrip.upstream import DockerAddress, UpstreamPool

log = Logger()

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Memory bounds for what Powerstrip must hold whole."""

    #: A JSON request body handed to pre-hooks (larger: 413).
    max_json_body: int = 16 * MiB
    #: A response handed to post-hooks (larger: 502).
    max_response_body: int = 64 * MiB


class PowerstripResource(Resource):
    """Every path, every method: an :class:`~powerstrip.exchange.Exchange` each.

    Holds what the exchanges share: the current config (replaced whole on a
    reload, never mutated), the dockerd connection pool and the hook chain.
    """

    isLeaf = True

    def __init__(self, reactor: Any, config: Config, docker: DockerAddress,
                 limits: Limits | None = None, access_log: bool = True,
                 docker_tls: DockerTLS | None = None, verbose: bool = False) -> None:
        super().__init__()
        #: One log line per request (method, path, status, bytes, duration, hooks).
        self.access_log = access_log
        #: Called with the new config whenever :attr:`config` is replaced (event hooks follow reloads).
        self.config_observers: list[Callable[[Config], None]] = []
        self.config = config
        self.limits = limits or Limits()
        self.upstream = UpstreamPool(reactor, docker, tls=docker_tls)
        self.adapters = AdapterClient(reactor)
        self.chain = HookChain(self.adapters, verbose=verbose)
        self._reactor = reactor
        #: Requests being answered, and hijacked streams: what a shutdown drains.
        self.inflight: set[Any] = set()
        self.streams: set[Splice] = set()
        #: Prometheus metrics (``GET /metrics`` on the admin listener).
        self.metrics = Metrics(self.inflight, self.streams)

    def reactor(self) -> Any:
        """The reactor this resource runs on (tests give a fake one)."""
        return self._reactor

    @property
    def config(self) -> Config:
        """The configuration in force; a reload assigns a new one, which :attr:`config_observers` are told."""
        return self._config

    @config.setter
    def config(self, config: Config) -> None:
        self._config = config
        for observer in list(self.config_observers):
            observer(config)

    def render(self, request: Any) -> Any:
        exchange = Exchange(request, self)
        try:
            exchange.start()
        except Exception:
            exchange.crash(Failure())
        return NOT_DONE_YET

    def drain(self, timeout: float) -> defer.Deferred:
        """Let requests in flight finish (for at most ``timeout`` seconds), then
        end hijacked streams and whatever is still open. Fires when done."""
        deadline = self._reactor.seconds() + timeout
        done: defer.Deferred = defer.Deferred()

        def check() -> None:
            if self.inflight and self._reactor.seconds() < deadline:
                self._reactor.callLater(0.05, check)
                return
            if self.inflight or self.streams:
                log.info("shutdown: closing {n} unfinished request(s) and {s} stream(s)",
                         n=len(self.inflight), s=len(self.streams))
            for request in list(self.inflight):
                request.channel.transport.loseConnection()
            for splice in list(self.streams):
                splice.close()
            done.callback(None)

        check()
        return done

    def close(self) -> Any:
        """Drop pooled connections to dockerd and adapters."""
        self.upstream.close()
        return self.adapters.close()
