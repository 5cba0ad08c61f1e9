"""The admin listener: ``/healthz`` and ``/readyz`` against a stand-in dockerd;
its options (TLS) and the start-up warning it shares with the API listener."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import treq
from twisted.internet import defer, reactor, task
from twisted.python import usage
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from powerstrip.config.spec import parse_config
from powerstrip.ops.admin import CHECK_MAX_AGE, admin_site
from powerstrip.ops.exposure import exposure_warning, in_container
from powerstrip.ops.metrics import Metrics
from powerstrip.ops.service import Options, make_service
from powerstrip.proxy.route import Proxy
from powerstrip.wire.endpoints import DockerAddress
from tests.support import CA, parse_options, unused_port

#: A fresh check's age: the time the /_ping itself took, on a busy machine.
READY_SLACK = 1.0
CONFIG = 'version: 1\nendpoints:\n  "POST /*/containers/create":\n    pre: [a]\nadapters:\n  a: http://a/x\n'


class _Ping(Resource):
    isLeaf = True
    code = 200
    calls = 0

    def render_GET(self, request: Any) -> bytes:
        self.calls += 1
        request.setResponseCode(self.code)
        return b"OK"


class AdminTests(TestCase):
    def start(self, docker_port: int, clock: Any = None) -> str:
        address = DockerAddress.parse(f"tcp://127.0.0.1:{docker_port}")
        proxy = Proxy(reactor, parse_config(CONFIG, "adapters.yml"), address, metrics=Metrics)
        self.addCleanup(proxy.close)
        port = reactor.listenTCP(0, admin_site(reactor, proxy, clock), interface="127.0.0.1")
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
        self.assertLess(body.pop("docker_checked_seconds_ago"), READY_SLACK)
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

    @defer.inlineCallbacks
    def test_probes_share_one_check_at_most_every_two_seconds(self) -> Any:
        port, ping = self.docker()
        clock = task.Clock()
        base = self.start(port, clock)
        answers = yield defer.gatherResults([self.get(base + "/readyz") for _ in range(5)])
        self.assertEqual(ping.calls, 1)  # five probes at once: one /_ping
        self.assertEqual({code for code, _ in answers}, {200})
        clock.advance(CHECK_MAX_AGE - 0.5)
        ping.code = 500  # not seen yet: the check is still fresh
        code, body = yield self.get(base + "/readyz")
        self.assertEqual((code, body["docker"], body["docker_checked_seconds_ago"]), (200, "ok", CHECK_MAX_AGE - 0.5))
        self.assertEqual(ping.calls, 1)
        clock.advance(0.5)  # now it is CHECK_MAX_AGE old: checked again
        code, body = yield self.get(base + "/readyz")
        self.assertEqual((code, body["docker_checked_seconds_ago"]), (503, 0))
        self.assertEqual(ping.calls, 2)

    @defer.inlineCallbacks
    def test_a_failed_check_is_shared_too(self) -> Any:
        port = unused_port()
        clock = task.Clock()
        base = self.start(port, clock)
        first = yield self.get(base + "/readyz")
        clock.advance(1)
        second = yield self.get(base + "/readyz")
        self.assertEqual((first[0], second[0]), (503, 503))
        self.assertEqual(second[1]["docker"], first[1]["docker"])
        self.assertEqual(second[1]["docker_checked_seconds_ago"], 1)


class ExposureWarningTests(TestCase):
    """The start-up warning for a listener that accepts other hosts (API and admin)."""

    def test_which_listeners_are_warned_about(self) -> None:
        serves = "controls Docker"
        for listen in (
            "tcp:2375:interface=127.0.0.1",
            "tcp:2375:interface=localhost",
            "tcp6:2375:interface=\\:\\:1",
            "unix:/run/p.sock",
        ):
            self.assertIsNone(exposure_warning(listen, serves, False, False, False), listen)
        self.assertIsNone(exposure_warning("tcp:2375", serves, True, True, False))  # client certificates
        self.assertEqual(
            exposure_warning("tcp:2375", serves, False, False, False),
            "WARNING: tcp:2375 accepts connections from other hosts without TLS. Anyone who can "
            "reach it controls Docker.",
        )
        self.assertIn(
            "with TLS but no client certificates (--admin-tlscacert)",
            exposure_warning(
                "tcp:9375:interface=0.0.0.0", serves, True, False, False, verify_option="--admin-tlscacert"
            ),
        )

    def test_inside_a_container_it_says_what_to_check(self) -> None:
        text = exposure_warning("tcp:2375:interface=0.0.0.0", "controls Docker", False, False, True)
        self.assertTrue(
            text.startswith(
                "WARNING: tcp:2375:interface=0.0.0.0 accepts connections from any "
                "address that reaches this container, without TLS"
            ),
            text,
        )
        self.assertIn("`-p 127.0.0.1:PORT:PORT` keeps it to this host", text)
        self.assertIn("`docker port CONTAINER`", text)

    def test_container_detection(self) -> None:
        marker = self.mktemp()
        self.assertFalse(in_container(markers=(marker,), env={}))
        self.assertTrue(in_container(markers=(marker,), env={"container": "podman"}))
        open(marker, "w").close()
        self.assertTrue(in_container(markers=(marker,), env={}))


class AdminOptionTests(TestCase):
    def setUp(self) -> None:
        self.certs = CA().write(Path(self.mktemp()), "localhost", server=True)

    def parse(self, *argv: str) -> Options:
        return parse_options(self, *argv)

    def test_admin_tls_wraps_the_admin_listener(self) -> None:
        options = self.parse(
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--admin",
            "tcp:0:interface=127.0.0.1",
            "--admin-tlscert",
            str(self.certs / "cert.pem"),
            "--admin-tlskey",
            str(self.certs / "key.pem"),
            "--admin-tlscacert",
            str(self.certs / "ca.pem"),
        )
        self.assertEqual(options["admin_tls"].ca, str(self.certs / "ca.pem"))
        factories = [type(s.factory).__name__ for s in make_service(options) if hasattr(s, "factory")]
        self.assertEqual(factories, ["FrontFactory", "HalfCloseableTLSFactory"])

    def test_admin_tls_option_errors(self) -> None:
        cert, key = str(self.certs / "cert.pem"), str(self.certs / "key.pem")
        cases = [
            (["--admin-tlscert", cert, "--admin-tlskey", key], "need --admin"),
            (["--admin", "tcp:0", "--admin-tlscert", cert], "needs both --admin-tlscert and --admin-tlskey"),
            (
                ["--admin", "unix:/tmp/admin.sock", "--admin-tlscert", cert, "--admin-tlskey", key],
                "applies to a tcp: --admin",
            ),
        ]
        for argv, message in cases:
            with self.assertRaises(usage.UsageError) as ctx:
                self.parse(*argv)
            self.assertIn(message, str(ctx.exception))
        with self.assertRaises(SystemExit) as exit_:
            self.parse("--admin", "tcp:0", "--admin-tlscert", "/nonexistent.pem", "--admin-tlskey", key)
        self.assertIn("powerstrip: TLS: certificate /nonexistent.pem", str(exit_.exception))
