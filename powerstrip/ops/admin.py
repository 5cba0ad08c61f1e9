"""The admin listener (``--admin``): liveness, readiness and metrics.

Kept off the Docker API port, so a health probe or a scrape needs no Docker
access and cannot be confused with a Docker call.

- ``GET /healthz``: 200 while the process serves at all.
- ``GET /readyz``: 200 when a configuration is loaded and dockerd answers
  ``/_ping`` within two seconds, else 503; the JSON body says which part fails,
  and how old the dockerd check is. Checks are shared: one made less than
  :data:`CHECK_MAX_AGE` seconds ago answers every probe, so any number of
  probes cost dockerd at most one ``/_ping`` per two seconds.
- ``GET /metrics``: Prometheus metrics (see :mod:`powerstrip.ops.metrics`), in
  the text format, or OpenMetrics when the scraper asks for it.
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.exposition import choose_encoder
from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from powerstrip.wire.endpoints import FixedEndpoint
from powerstrip.wire.tls import describe

READY_TIMEOUT = 2.0
#: A dockerd check younger than this (seconds) answers ``/readyz`` without a new one.
CHECK_MAX_AGE = 2.0


def _json(request: Any, code: int, obj: dict[str, Any]) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(obj).encode() + b"\n"


class _Healthz(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return _json(request, 200, {"status": "alive"})


class DockerCheck:
    """dockerd's ``/_ping``, checked at most once per :data:`CHECK_MAX_AGE` seconds.

    :meth:`result` answers from the last check while it is fresh; otherwise it
    starts one (on its own short-lived connection, not the proxy's pool: a
    probe must not take, or leave, a connection a client is waiting for) and
    every caller meanwhile waits for that same check. ``clock`` tells the time
    (the reactor; a ``task.Clock`` in tests).
    """

    def __init__(self, reactor: Any, proxy: Any, clock: Any = None) -> None:
        self._reactor = reactor
        self._clock = clock or reactor
        self._proxy = proxy
        self._agent = Agent.usingEndpointFactory(
            reactor, FixedEndpoint(proxy.upstream.endpoint), pool=HTTPConnectionPool(reactor, persistent=False)
        )
        self._last: tuple[float, str | None] | None = None  # (when, problem or None)
        self._pending: list[defer.Deferred[tuple[str | None, float]]] = []

    def result(self) -> defer.Deferred[tuple[str | None, float]]:
        """Fire with ``(problem or None, age in seconds)`` of a check at most
        :data:`CHECK_MAX_AGE` seconds old."""
        now = self._clock.seconds()
        if self._last is not None and now - self._last[0] < CHECK_MAX_AGE:
            return defer.succeed((self._last[1], now - self._last[0]))
        d: defer.Deferred[tuple[str | None, float]] = defer.Deferred()
        self._pending.append(d)
        if len(self._pending) == 1:
            self._check()
        return d

    def _check(self) -> None:
        docker = str(self._proxy.upstream.address)
        started = self._clock.seconds()
        d = self._agent.request(b"GET", b"http://docker/_ping")
        d.addCallback(lambda response: readBody(response).addCallback(lambda body: (response.code, body)))
        d.addTimeout(READY_TIMEOUT, self._reactor)

        def done(result: tuple[int, bytes] | Failure) -> None:
            if isinstance(result, Failure):
                problem = f"cannot reach Docker at {docker}: {describe(result)}"
            elif result[0] != 200:
                problem = f"Docker at {docker} answered /_ping with {result[0]}"
            else:
                problem = None
            # Its age counts from when it was asked: the answer is at least that fresh.
            self._last = (started, problem)
            waiting, self._pending = self._pending, []
            age = self._clock.seconds() - started
            for w in waiting:
                w.callback((problem, age))

        d.addBoth(done)


class _Readyz(Resource):
    isLeaf = True

    def __init__(self, reactor: Any, proxy: Any, clock: Any = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self._proxy = proxy
        #: The shared dockerd check.
        self.check = DockerCheck(reactor, proxy, clock)

    def render_GET(self, request: Any) -> Any:
        config = self._proxy.config
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))  # the prober hung up

        def answer(result: tuple[str | None, float]) -> None:
            problem, age = result
            body = {
                "docker": problem or "ok",
                "docker_checked_seconds_ago": round(age, 3),
                "config": config.source,
                "rules": len(config.endpoints),
            }
            if not gone:
                request.write(_json(request, 503 if problem else 200, body))
                request.finish()

        self.check.result().addCallback(answer)
        return NOT_DONE_YET


class _Metrics(Resource):
    isLeaf = True

    def __init__(self, registry: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self._registry = registry

    def render_GET(self, request: Any) -> bytes:
        # Prometheus says in Accept whether it wants OpenMetrics; the rest get text.
        accept = request.getHeader(b"accept")
        encode, content_type = choose_encoder(accept.decode("latin-1") if accept else "")
        request.setHeader(b"Content-Type", content_type.encode("latin-1"))
        return encode(self._registry)


def admin_site(reactor: Any, proxy: Any, clock: Any = None) -> Site:
    """The admin Site for ``proxy`` (a Proxy); ``clock`` dates dockerd checks
    (default: the reactor)."""
    root = Resource()
    root.putChild(b"healthz", _Healthz())  # type: ignore[no-untyped-call]  # unannotated in Twisted
    root.putChild(b"readyz", _Readyz(reactor, proxy, clock))
    root.putChild(b"metrics", _Metrics(proxy.metrics.registry))
    site = Site(root)
    site.noisy = False
    return site
