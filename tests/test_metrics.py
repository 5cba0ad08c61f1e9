"""Prometheus metrics: what each kind of request adds, read back from the exposition text.

The requests go through a real Powerstrip in front of the in-process fake
dockerd and fake adapters of :mod:`tests.support`; the counts are read
by parsing what ``GET /metrics`` would serve (and, in :class:`EndpointTests`,
what the admin listener does serve).
"""

from __future__ import annotations

import json
import time
from typing import Any

import treq
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.server import NOT_DONE_YET, Request

from powerstrip.config.spec import parse_config
from powerstrip.ops.admin import admin_site
from powerstrip.ops.metrics import DURATION_BUCKETS, Metrics, method_label
from powerstrip.ops.reload import reload_config
from powerstrip.proxy.route import Proxy
from powerstrip.wire.endpoints import DockerAddress
from tests.support import (
    FRAME,
    LAST_CHUNK,
    PASSTHROUGH,
    UPGRADED,
    ProxyTestCase,
    attach_request,
    chunk,
    echo_pre,
    json_request,
    reply,
    request,
    response,
    unused_port,
)

CREATE = "POST /*/containers/create"
HOOKED = f'version: 1\nendpoints:\n  "{CREATE}":\n    pre: [hook]\nadapters:\n  hook: $BASE/hook\n'


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """Exposition text → ``{(sample name, labels): value}``."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(resource: Proxy) -> dict[tuple[str, frozenset], float]:
    """What ``/metrics`` would serve for ``resource`` right now, parsed."""
    return parse(generate_latest(resource.metrics.registry).decode())


def value(samples: dict, name: str, **labels: str) -> float:
    """One sample's value; 0 for a labelled series that does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: dict, name: str) -> float:
    """The sum of a sample over all its label sets."""
    return sum(v for (n, _), v in samples.items() if n == name)


class MetricsTestCase(ProxyTestCase):
    @defer.inlineCallbacks
    def counted(self, resource: Proxy, n: int) -> Any:
        """Wait until ``n`` requests are counted in all (they end after the client sees the answer)."""
        deadline = time.monotonic() + 5
        while total(scrape(resource), "powerstrip_requests_total") < n:
            if time.monotonic() > deadline:
                self.fail(f"fewer than {n} request(s) counted: {scrape(resource)}")
            yield deferLater(reactor, 0.01, lambda: None)
        return scrape(resource)


class RequestTests(MetricsTestCase):
    @defer.inlineCallbacks
    def test_unmatched_request(self) -> Any:
        """A pass-through request: route "none", method, code, duration, bytes out; nothing else."""
        resource = self.start()
        client = yield self.connect()
        _, _, resp = yield self.roundtrip(
            client, request(b"GET", b"/_ping"), response(b"200 OK", (b"Content-Length", b"2"), body=b"OK")
        )
        self.assertEqual(resp.code, 200)
        m = yield self.counted(resource, 1)
        self.assertEqual(value(m, "powerstrip_requests_total", route="none", method="GET", code="200"), 1)
        self.assertEqual(total(m, "powerstrip_requests_total"), 1)
        self.assertEqual(value(m, "powerstrip_request_duration_seconds_count", route="none"), 1)
        self.assertEqual(value(m, "powerstrip_request_duration_seconds_bucket", route="none", le="+Inf"), 1)
        self.assertEqual(value(m, "powerstrip_client_sent_bytes_total"), 2)
        self.assertEqual(value(m, "powerstrip_client_received_bytes_total"), 0)
        self.assertEqual(total(m, "powerstrip_hook_calls_total"), 0)
        self.assertEqual(value(m, "powerstrip_requests_in_flight"), 0)
        self.assertEqual(value(m, "powerstrip_streams_active"), 0)

    @defer.inlineCallbacks
    def test_hooked_request(self) -> Any:
        """The route label is the rule's pattern; the hook call is counted and timed; the body counts in."""
        resource = self.start(HOOKED, hook=echo_pre)
        client = yield self.connect()
        data = json_request(b"POST", b"/v1.41/containers/create", {"Image": "busybox"})
        body = data[data.index(b"\r\n\r\n") + 4 :]
        _, _, resp = yield self.roundtrip(
            client, data, response(b"201 Created", (b"Content-Length", b"7"), body=b'{"x":1}')
        )
        self.assertEqual(resp.code, 201)
        m = yield self.counted(resource, 1)
        self.assertEqual(value(m, "powerstrip_requests_total", route=CREATE, method="POST", code="201"), 1)
        self.assertEqual(value(m, "powerstrip_hook_calls_total", adapter="hook", phase="pre-hook", outcome="ok"), 1)
        self.assertEqual(value(m, "powerstrip_hook_duration_seconds_count", adapter="hook", phase="pre-hook"), 1)
        self.assertEqual(value(m, "powerstrip_hook_faults_total", adapter="hook"), 0)
        self.assertEqual(value(m, "powerstrip_client_received_bytes_total"), len(body))
        self.assertEqual(value(m, "powerstrip_client_sent_bytes_total"), 7)

    @defer.inlineCallbacks
    def test_refusal(self) -> Any:
        def refuse(call: Request, payload: dict) -> bytes:
            return reply(call, {"message": "no"}, code=403)

        resource = self.start(HOOKED, hook=refuse)
        client = yield self.connect()
        client.send(json_request(b"POST", b"/v1.41/containers/create", {"Image": "busybox"}))
        resp = yield client.response()
        self.assertEqual(resp.code, 403)
        m = yield self.counted(resource, 1)
        self.assertEqual(value(m, "powerstrip_requests_total", route=CREATE, method="POST", code="403"), 1)
        self.assertEqual(
            value(m, "powerstrip_hook_calls_total", adapter="hook", phase="pre-hook", outcome="Refused"), 1
        )
        self.assertEqual(total(m, "powerstrip_hook_faults_total"), 0)
        self.assertEqual(value(m, "powerstrip_client_sent_bytes_total"), len(resp.body))

    @defer.inlineCallbacks
    def test_adapter_fault(self) -> Any:
        def broken(call: Request, payload: dict) -> bytes:
            return reply(call, b"not json", ctype=b"text/plain")

        resource = self.start(HOOKED, hook=broken)
        client = yield self.connect()
        client.send(json_request(b"POST", b"/v1.41/containers/create", {"Image": "busybox"}))
        resp = yield client.response()
        self.assertEqual(resp.code, 502)
        m = yield self.counted(resource, 1)
        self.assertEqual(value(m, "powerstrip_requests_total", route=CREATE, method="POST", code="502"), 1)
        self.assertEqual(
            value(m, "powerstrip_hook_calls_total", adapter="hook", phase="pre-hook", outcome="AdapterFault"), 1
        )
        self.assertEqual(value(m, "powerstrip_hook_faults_total", adapter="hook"), 1)
        self.assertEqual(value(m, "powerstrip_hook_duration_seconds_count", adapter="hook", phase="pre-hook"), 1)

    @defer.inlineCallbacks
    def test_docker_unreachable(self) -> Any:
        resource = self.start(docker=f"tcp://127.0.0.1:{unused_port()}")
        client = yield self.connect()
        client.send(request(b"GET", b"/v1.41/containers/json"))
        resp = yield client.response()
        self.assertEqual(resp.code, 502)
        m = yield self.counted(resource, 1)
        self.assertEqual(value(m, "powerstrip_requests_total", route="none", method="GET", code="502"), 1)

    @defer.inlineCallbacks
    def test_streamed_upload_bytes_count_in(self) -> Any:
        """Bodies streamed to dockerd count in, by their decoded size (chunked or not)."""
        resource = self.start()
        client = yield self.connect()
        body = b"\x00" * 100_000
        yield self.roundtrip(
            client,
            request(
                b"PUT",
                b"/v1.41/containers/abc/archive?path=/",
                (b"Content-Type", b"application/x-tar"),
                (b"Content-Length", b"%d" % len(body)),
                body=body,
            ),
            response(b"200 OK", (b"Content-Length", b"0")),
        )
        yield self.roundtrip(
            client,
            request(
                b"POST",
                b"/v1.41/build",
                (b"Content-Type", b"application/x-tar"),
                (b"Transfer-Encoding", b"chunked"),
                body=chunk(b"abc") + chunk(b"defg") + LAST_CHUNK,
            ),
            response(b"200 OK", (b"Content-Length", b"0")),
        )
        m = yield self.counted(resource, 2)
        self.assertEqual(value(m, "powerstrip_client_received_bytes_total"), len(body) + 7)
        self.assertEqual(value(m, "powerstrip_requests_total", route="none", method="PUT", code="200"), 1)
        self.assertEqual(value(m, "powerstrip_requests_total", route="none", method="POST", code="200"), 1)

    @defer.inlineCallbacks
    def test_in_flight_while_docker_is_answering(self) -> Any:
        resource = self.start()
        client = yield self.connect()
        client.send(request(b"GET", b"/v1.41/containers/json"))
        conn, _ = yield self.dockerd.next_request()
        m = scrape(resource)
        self.assertEqual(value(m, "powerstrip_requests_in_flight"), 1)
        self.assertEqual(total(m, "powerstrip_requests_total"), 0, "counted before it ended")
        conn.send(response(b"200 OK", (b"Content-Length", b"2"), body=b"[]"))
        yield client.response()
        m = yield self.counted(resource, 1)
        self.assertEqual(value(m, "powerstrip_requests_in_flight"), 0)

    @defer.inlineCallbacks
    def test_client_gone_before_an_answer(self) -> Any:
        """Counted once, with code "none": there was no status."""
        resource = self.start()
        client = yield self.connect()
        client.send(request(b"GET", b"/v1.41/containers/json"))
        yield self.dockerd.next_request()
        client.transport.abortConnection()  # a reset: a close would be a half-close, answered
        m = yield self.counted(resource, 1)
        self.assertEqual(value(m, "powerstrip_requests_total", route="none", method="GET", code="none"), 1)
        yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(total(scrape(resource), "powerstrip_requests_total"), 1)

    @defer.inlineCallbacks
    def test_client_gone_while_a_hook_runs(self) -> Any:
        """The interrupted adapter call is counted with the request, and is no fault."""
        calls: list[Request] = []

        def hang(call: Request, payload: dict) -> Any:
            calls.append(call)
            return NOT_DONE_YET

        resource = self.start(HOOKED, hook=hang)
        client = yield self.connect()
        client.send(json_request(b"POST", b"/v1.41/containers/create", {"Image": "busybox"}))
        while not calls:
            yield deferLater(reactor, 0.01, lambda: None)
        client.transport.abortConnection()
        m = yield self.counted(resource, 1)
        self.assertEqual(value(m, "powerstrip_requests_total", route=CREATE, method="POST", code="none"), 1)
        self.assertEqual(
            value(m, "powerstrip_hook_calls_total", adapter="hook", phase="pre-hook", outcome="CancelledError"), 1
        )
        self.assertEqual(total(m, "powerstrip_hook_faults_total"), 0)

    @defer.inlineCallbacks
    def test_client_gone_mid_stream(self) -> Any:
        """``docker logs -f`` ended by the client: counted once with dockerd's status, bytes so far."""
        resource = self.start()
        client = yield self.connect()
        client.send(request(b"GET", b"/v1.41/containers/abc/logs?follow=1&stdout=1"))
        conn, _ = yield self.dockerd.next_request()
        conn.send(response(b"200 OK", (b"Transfer-Encoding", b"chunked")), chunk(FRAME))
        yield client.wait(lambda: True if FRAME in client.data else None, "the first frame")
        client.transport.abortConnection()
        m = yield self.counted(resource, 1)
        self.assertEqual(value(m, "powerstrip_requests_total", route="none", method="GET", code="200"), 1)
        self.assertEqual(value(m, "powerstrip_client_sent_bytes_total"), len(FRAME))

    @defer.inlineCallbacks
    def test_counted_with_the_access_log_off(self) -> Any:
        resource = self.start()
        resource.access_log = False
        client = yield self.connect()
        for _ in range(3):
            yield self.roundtrip(
                client, request(b"GET", b"/_ping"), response(b"200 OK", (b"Content-Length", b"2"), body=b"OK")
            )
        m = yield self.counted(resource, 3)
        self.assertEqual(value(m, "powerstrip_requests_total", route="none", method="GET", code="200"), 3)
        self.assertEqual(value(m, "powerstrip_client_sent_bytes_total"), 6)

    @defer.inlineCallbacks
    def test_proxies_count_apart(self) -> Any:
        """Each proxy has its own registry (tests and embedders run several in one process)."""
        first = self.start()
        second = self.start()  # the one self.connect() reaches
        client = yield self.connect()
        yield self.roundtrip(
            client, request(b"GET", b"/_ping"), response(b"200 OK", (b"Content-Length", b"2"), body=b"OK")
        )
        yield self.counted(second, 1)
        self.assertEqual(total(scrape(first), "powerstrip_requests_total"), 0)


class StreamTests(MetricsTestCase):
    @defer.inlineCallbacks
    def test_hijacked_stream(self) -> Any:
        """A stream is active while open, and counted as a request (101) with its bytes when it closes."""
        resource = self.start()
        client = yield self.connect()
        client.send(attach_request())
        conn, _ = yield self.dockerd.next_request()
        conn.send(UPGRADED)
        yield client.wait_bytes(len(UPGRADED))
        client.send(b"stdin\n")
        yield conn.wait_stream(6)
        conn.send(FRAME)
        yield client.wait_bytes(len(FRAME), len(UPGRADED))
        m = scrape(resource)
        self.assertEqual(value(m, "powerstrip_streams_active"), 1)
        self.assertEqual(value(m, "powerstrip_streams_total"), 1)
        self.assertEqual(value(m, "powerstrip_requests_in_flight"), 0)
        self.assertEqual(total(m, "powerstrip_requests_total"), 0, "a stream counts when it closes")
        conn.transport.loseConnection()
        yield client.wait_eof()
        client.transport.loseConnection()
        m = yield self.counted(resource, 1)
        self.assertEqual(value(m, "powerstrip_requests_total", route="none", method="POST", code="101"), 1)
        self.assertEqual(value(m, "powerstrip_streams_active"), 0)
        self.assertEqual(value(m, "powerstrip_streams_total"), 1)
        self.assertEqual(value(m, "powerstrip_client_received_bytes_total"), 6)
        self.assertEqual(value(m, "powerstrip_client_sent_bytes_total"), len(FRAME))


class ReloadTests(TestCase):
    def test_reloads_by_result(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("version: 1\nendpoints: {}\nadapters: {}\n")
        resource = Proxy(
            reactor, parse_config(PASSTHROUGH, "x"), DockerAddress.parse("unix:///nonexistent"), metrics=Metrics
        )
        self.addCleanup(resource.close)
        m = scrape(resource)
        self.assertEqual(value(m, "powerstrip_config_reloads_total", result="ok"), 0)
        self.assertEqual(value(m, "powerstrip_config_reloads_total", result="failed"), 0)
        self.assertIn(
            ("powerstrip_config_reloads_total", frozenset({("result", "failed")})),
            m,
            "the failed series exists before the first failure",
        )
        self.assertTrue(reload_config(resource, path))
        self.assertFalse(reload_config(resource, path + ".missing"))
        self.assertFalse(reload_config(resource, path + ".missing"))
        m = scrape(resource)
        self.assertEqual(value(m, "powerstrip_config_reloads_total", result="ok"), 1)
        self.assertEqual(value(m, "powerstrip_config_reloads_total", result="failed"), 2)


class UnitTests(TestCase):
    def test_method_labels_are_bounded(self) -> None:
        self.assertEqual(
            [method_label(m) for m in ("GET", "post", "HEAD", "BREW", "X" * 100)],
            ["GET", "POST", "HEAD", "other", "other"],
        )

    def test_buckets_span_a_millisecond_to_a_minute(self) -> None:
        self.assertEqual((DURATION_BUCKETS[0], DURATION_BUCKETS[-1]), (0.001, 60.0))

    def test_no_created_series(self) -> None:
        """Counters export no ``*_created`` timestamps (noise, twice the page)."""
        metrics = Metrics(set(), set())
        metrics.reloaded(True)
        self.assertNotIn(b"_created", generate_latest(metrics.registry))


class EndpointTests(TestCase):
    """``GET /metrics`` on the admin listener."""

    @defer.inlineCallbacks
    def test_metrics_served_by_admin_site(self) -> Any:
        proxy = Proxy(
            reactor,
            parse_config(PASSTHROUGH, "x"),
            DockerAddress.parse(f"tcp://127.0.0.1:{unused_port()}"),
            metrics=Metrics,
        )
        self.addCleanup(proxy.close)
        proxy.metrics.reloaded(False)
        port = reactor.listenTCP(0, admin_site(reactor, proxy), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        base = f"http://127.0.0.1:{port.getHost().port}"
        resp = yield treq.get(base + "/metrics", persistent=False)
        text = yield resp.text("utf-8")
        self.assertEqual(resp.code, 200)
        self.assertTrue(resp.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain; version=0.0.4"))
        m = parse(text)
        self.assertEqual(value(m, "powerstrip_config_reloads_total", result="failed"), 1)
        for name in (
            "powerstrip_requests_in_flight",
            "powerstrip_streams_active",
            "powerstrip_streams_total",
            "powerstrip_client_received_bytes_total",
            "powerstrip_client_sent_bytes_total",
        ):
            self.assertEqual(value(m, name), 0, name)
        families = {f.name for f in text_string_to_metric_families(text)}
        self.assertLessEqual(
            {
                "powerstrip_requests",
                "powerstrip_request_duration_seconds",
                "powerstrip_hook_calls",
                "powerstrip_hook_faults",
                "powerstrip_hook_duration_seconds",
            },
            families,
        )
        # Prometheus asking for OpenMetrics gets it.
        resp = yield treq.get(
            base + "/metrics", persistent=False, headers={b"Accept": [b"application/openmetrics-text; version=1.0.0"]}
        )
        body = yield resp.content()
        self.assertTrue(resp.headers.getRawHeaders(b"content-type")[0].startswith(b"application/openmetrics-text"))
        self.assertTrue(body.endswith(b"# EOF\n"), body[-40:])
        # /healthz is still there.
        resp = yield treq.get(base + "/healthz", persistent=False)
        self.assertEqual(json.loads((yield resp.content())), {"status": "alive"})
