"""The admin listener: ``/healthz`` and ``/readyz`` against a stand-in dockerd."""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from powerstrip.admin import admin_site
from powerstrip.config import parse_config
from powerstrip.resource import PowerstripResource
from powerstrip.upstream import DockerAddress
from tests.fakes import unused_port

CONFIG = 'version: 1\nendpoints:\n  "POST /*/containers/create":\n    pre: [a]\nadapters:\n  a: http://a/x\n'


class _Ping(Resource):
    isLeaf = True
    code = 200

    def render_GET(self, request: Any) -> bytes:
        request.setResponseCode(self.code)
        return b"OK"


class AdminTests(TestCase):
    def start(self, docker_port: int) -> str:
        address = DockerAddress.parse(f"tcp://127.0.0.1:{docker_port}")
        proxy = PowerstripResource(reactor, parse_config(CONFIG, "adapters.yml"), address)
        self.addCleanup(proxy.close)
        port = reactor.listenTCP(0, admin_site(reactor, proxy), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    def docker(self) -> tuple[int, _Ping]:
        ping = _Ping()
        port = reactor.listenTCP(0, Site(ping), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port, ping

    @defer.inlineCallbacks
    def get(self, url: str) -> Any:
        response = yield treq.get(url, persistent=False)
        body = yield response.content()
        return response.code, json.loads(body)

    @defer.inlineCallbacks
    def test_healthz(self) -> Any:
        base = self.start(unused_port())
        self.assertEqual((yield self.get(base + "/healthz")), (200, {"status": "alive"}))

    @defer.inlineCallbacks
    def test_ready_when_docker_answers(self) -> Any:
        port, _ = self.docker()
        code, body = yield self.get(self.start(port) + "/readyz")
        self.assertEqual((code, body), (200, {"docker": "ok", "config": "adapters.yml", "rules": 1}))

    @defer.inlineCallbacks
    def test_not_ready_when_docker_is_down(self) -> Any:
        port = unused_port()
        code, body = yield self.get(self.start(port) + "/readyz")
        self.assertEqual(code, 503)
        self.assertTrue(body["docker"].startswith(f"cannot reach Docker at tcp://127.0.0.1:{port}: "), body)

    @defer.inlineCallbacks
    def test_not_ready_when_docker_fails_its_ping(self) -> Any:
        port, ping = self.docker()
        ping.code = 500
        code, body = yield self.get(self.start(port) + "/readyz")
        self.assertEqual((code, body["docker"]), (503, f"Docker at tcp://127.0.0.1:{port} answered /_ping with 500"))
