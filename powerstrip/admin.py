"""The admin listener (``--admin``): liveness, readiness and metrics.

Kept off the Docker API port, so a health probe or a scrape needs no Docker
access and cannot be confused with a Docker call.

- ``GET /healthz``: 200 while the process serves at all.
- ``GET /readyz``: 200 when a configuration is loaded and dockerd answers
  ``/_ping`` within two seconds, else 503; the JSON body says which part fails.
- ``GET /metrics``: Prometheus metrics (see :mod:`powerstrip.metrics`), in
  the text format, or OpenMetrics when the scraper asks for it.
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.exposition import choose_encoder
from twisted.python.failure import Failure
from twisted.web.client import Agent, readBody
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from powerstrip.tls import describe

READY_TIMEOUT = 2.0


def _json(request: Any, code: int, obj: dict) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(obj).encode() + b"\n"


class _Healthz(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return _json(request, 200, {"status": "alive"})


class _OneEndpoint:
    """An Agent endpoint factory that always dials dockerd."""

    def __init__(self, endpoint: Any) -> None:
        self._endpoint = endpoint

    def endpointForURI(self, uri: Any) -> Any:
        return self._endpoint


class _Readyz(Resource):
    isLeaf = True

    def __init__(self, reactor: Any, proxy: Any) -> None:
        super().__init__()
        self._reactor = reactor
        self._proxy = proxy
        # Its own short-lived connection, not the proxy's pool: a probe must
        # not take (or leave) a connection a client is waiting for.
        self._agent = Agent.usingEndpointFactory(reactor, _OneEndpoint(proxy.upstream.endpoint))

    def render_GET(self, request: Any) -> Any:
        config = self._proxy.config
        docker = str(self._proxy.upstream.address)
        d = self._agent.request(b"GET", b"http://docker/_ping")
        d.addCallback(lambda response: readBody(response).addCallback(lambda body: (response.code, body)))
        d.addTimeout(READY_TIMEOUT, self._reactor)

        def answer(result: tuple[int, bytes] | Failure) -> None:
            if isinstance(result, Failure):
                problem = f"cannot reach Docker at {docker}: {describe(result)}"
            elif result[0] != 200:
                problem = f"Docker at {docker} answered /_ping with {result[0]}"
            else:
                problem = None
            body = {"docker": problem or "ok", "config": config.source, "rules": len(config.endpoints)}
            if not request._disconnected:
                request.write(_json(request, 503 if problem else 200, body))
                request.finish()

        d.addBoth(answer)
        return NOT_DONE_YET


class _Metrics(Resource):
    isLeaf = True

    def __init__(self, registry: Any) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Any) -> bytes:
        # Prometheus says in Accept whether it wants OpenMetrics; the rest get text.
        accept = request.getHeader(b"accept")
        encode, content_type = choose_encoder(accept.decode("latin-1") if accept else "")
        request.setHeader(b"Content-Type", content_type.encode("latin-1"))
        return encode(self._registry)


def admin_site(reactor: Any, proxy: Any) -> Site:
    """The admin Site for ``proxy`` (a PowerstripResource)."""
    root = Resource()
    root.putChild(b"healthz", _Healthz())
    root.putChild(b"readyz", _Readyz(reactor, proxy))
    root.putChild(b"metrics", _Metrics(proxy.metrics.registry))
    site = Site(root)
    site.noisy = False
    return site
