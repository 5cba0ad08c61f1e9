"""The client side's limits, on the wire: head size, malformed input, timeouts.

A client that sends too much, garbage, or nothing in time gets a Docker-style
JSON error (or, idle between requests, a quiet close) and nothing reaches
dockerd; a stream that is merely quiet is never cut off.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.web.server import NOT_DONE_YET

from tests.support import (
    CREATE_PRE,
    LAST_CHUNK,
    UPGRADED,
    ProxyTestCase,
    attach_request,
    chunk,
    echo_pre,
    json_response,
    request,
    response,
)

TIMEOUT = 0.4  # --client-timeout for these tests, seconds


def sleep(seconds: float) -> defer.Deferred:
    return deferLater(reactor, seconds, lambda: None)


class HeadSizeTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_head_over_the_limit_is_431(self) -> Any:
        """Too large a head: 431 Request Header Fields Too Large (RFC 6585), as dockerd answers."""
        self.start(site_options={"max_head": 2048})
        client = yield self.connect()
        client.send(request(b"GET", b"/v1.41/info", *[(b"X-Pad-%d" % i, b"x" * 100) for i in range(30)]))
        resp = yield client.response()
        message = self.assertDockerError(resp, 431, "powerstrip: request head larger than 2048 bytes")
        self.assertIn("--max-header-size", message)
        yield client.wait_eof()
        self.assertNothingReachedDocker()

    @defer.inlineCallbacks
    def test_one_line_over_the_limit_is_431(self) -> Any:
        self.start(site_options={"max_head": 2048})
        client = yield self.connect()
        client.send(request(b"GET", b"/v1.41/info", (b"X-Registry-Config", b"e" * 5000)))
        resp = yield client.response()
        self.assertDockerError(resp, 431, "powerstrip: request head larger than 2048 bytes")
        self.assertNothingReachedDocker()

    @defer.inlineCallbacks
    def test_large_registry_header_passes_by_default(self) -> Any:
        """``docker build`` sends every registry credential in one header: far over twisted.web's 16 KiB."""
        self.start()
        client = yield self.connect()
        creds = b"eyJ" + b"A" * 200_000
        req, _, resp = yield self.roundtrip(
            client,
            request(b"POST", b"/v1.41/build", (b"X-Registry-Config", creds), (b"Content-Length", b"0")),
            json_response(b"200 OK", {}),
        )
        self.assertEqual(req.values(b"x-registry-config"), [creds])
        self.assertEqual(resp.code, 200)


class MalformedRequestTests(ProxyTestCase):
    @defer.inlineCallbacks
    def assertRejected(self, data: bytes, why: str) -> Any:
        self.start()
        client = yield self.connect()
        client.send(data)
        resp = yield client.response()
        self.assertDockerError(resp, 400, "powerstrip: " + why)
        yield client.wait_eof()
        self.assertNothingReachedDocker()

    def test_bad_request_line(self) -> Any:
        return self.assertRejected(b"GET /v1.41/info\r\n\r\n", "malformed request line")

    def test_header_without_colon(self) -> Any:
        return self.assertRejected(
            b"GET /v1.41/info HTTP/1.1\r\nHost: docker\r\nno colon here\r\n\r\n", "malformed header line"
        )

    def test_content_length_with_transfer_encoding(self) -> Any:
        return self.assertRejected(
            request(
                b"POST",
                b"/v1.41/containers/create",
                (b"Content-Length", b"5"),
                (b"Transfer-Encoding", b"chunked"),
                body=chunk(b"hello") + LAST_CHUNK,
            ),
            "both Content-Length and Transfer-Encoding",
        )

    def test_two_content_lengths(self) -> Any:
        return self.assertRejected(
            request(
                b"POST",
                b"/v1.41/containers/create",
                (b"Content-Length", b"5"),
                (b"Content-Length", b"6"),
                body=b"hello!",
            ),
            "more than one Content-Length header",
        )

    @defer.inlineCallbacks
    def test_hop_by_hop_headers_stay_here(self) -> Any:
        """Connection, Keep-Alive, TE, Trailer, Proxy-* and what Connection names do not reach dockerd."""
        self.start()
        client = yield self.connect()
        req, _, resp = yield self.roundtrip(
            client,
            request(
                b"GET",
                b"/v1.41/info",
                (b"Connection", b"keep-alive, X-Private"),
                (b"Keep-Alive", b"timeout=5"),
                (b"TE", b"trailers"),
                (b"Trailer", b"X-T"),
                (b"Proxy-Authorization", b"Basic eA=="),
                (b"X-Private", b"1"),
                (b"X-Public", b"1"),
            ),
            response(
                b"200 OK",
                (b"Content-Type", b"application/json"),
                (b"Content-Length", b"2"),
                (b"Keep-Alive", b"timeout=9"),
                (b"Proxy-Authenticate", b"Basic"),
                body=b"{}",
            ),
        )
        for name in (b"connection", b"keep-alive", b"te", b"trailer", b"proxy-authorization", b"x-private"):
            self.assertNotIn(name, req.names)
        self.assertEqual(req.values(b"x-public"), [b"1"])
        self.assertNotIn(b"keep-alive", resp.names)
        self.assertNotIn(b"proxy-authenticate", resp.names)
        self.assertEqual(resp.body, b"{}")


class ClientTimeoutTests(ProxyTestCase):
    def start_timed(self, config: str | None = None, **handlers: Any) -> Any:
        kw = {"config": config} if config else {}
        return self.start(site_options={"timeout": TIMEOUT}, **kw, **handlers)

    @defer.inlineCallbacks
    def test_idle_keep_alive_connection_is_closed_quietly(self) -> Any:
        self.start_timed()
        client = yield self.connect()
        _, _, resp = yield self.roundtrip(
            client, request(b"GET", b"/_ping"), response(b"200 OK", (b"Content-Length", b"2"), body=b"OK")
        )
        self.assertEqual(resp.code, 200)
        yield client.wait_eof()
        self.assertEqual(client.rest, b"")

    @defer.inlineCallbacks
    def test_head_dribbled_byte_by_byte_is_408(self) -> Any:
        """Each byte restarts the idle timer; the head as a whole still has one timeout (slowloris)."""
        self.start_timed()
        client = yield self.connect()
        data = request(b"GET", b"/v1.41/info", *[(b"X-H%d" % i, b"v") for i in range(40)])
        for i in range(len(data)):
            if client.eof:
                break
            client.send(data[i : i + 1])
            yield sleep(TIMEOUT / 8)
        resp = yield client.response()
        self.assertDockerError(resp, 408, "powerstrip: the request head did not arrive in time")
        self.assertNothingReachedDocker()

    @defer.inlineCallbacks
    def test_stalled_body_is_408(self) -> Any:
        self.start_timed(CREATE_PRE, hook=echo_pre)
        client = yield self.connect()
        client.send(
            request(
                b"POST",
                b"/v1.41/containers/create",
                (b"Content-Type", b"application/json"),
                (b"Content-Length", b"100"),
                body=b'{"Image":',
            )
        )
        resp = yield client.response()
        self.assertDockerError(resp, 408, "powerstrip: the request body did not arrive in time")
        self.assertEqual(self.adapters.calls, [])
        self.assertNothingReachedDocker()

    @defer.inlineCallbacks
    def test_quiet_streaming_response_is_not_cut(self) -> Any:
        """``logs -f`` / ``events`` with nothing to say for several timeouts stay open."""
        self.start_timed()
        client = yield self.connect()
        client.send(request(b"GET", b"/v1.41/events"))
        conn, _ = yield self.dockerd.next_request()
        conn.send(
            response(b"200 OK", (b"Content-Type", b"application/json"), (b"Transfer-Encoding", b"chunked")),
            chunk(b'{"status":"start"}\n'),
        )
        yield client.head()
        yield sleep(TIMEOUT * 4)
        self.assertFalse(client.eof)
        conn.send(chunk(b'{"status":"die"}\n'), LAST_CHUNK)
        resp = yield client.response()
        self.assertEqual(resp.body, b'{"status":"start"}\n{"status":"die"}\n')

    @defer.inlineCallbacks
    def test_quiet_hijacked_stream_is_not_cut(self) -> Any:
        self.start_timed()
        client = yield self.connect()
        client.send(attach_request())
        conn, _ = yield self.dockerd.next_request()
        conn.send(UPGRADED)
        yield client.wait_bytes(len(UPGRADED))
        yield sleep(TIMEOUT * 4)
        self.assertFalse(client.eof)
        client.send(b"still here")
        got = yield conn.wait_stream(10)
        self.assertEqual(got, b"still here")

    @defer.inlineCallbacks
    def test_slow_adapter_is_not_the_clients_fault(self) -> Any:
        """While Powerstrip waits for a pre-hook (reading the client's streamed body paused), no 408."""

        def slow(call: Any, payload: dict) -> Any:
            reactor.callLater(TIMEOUT * 3, lambda: (call.write(echo_pre(call, payload)), call.finish()))
            return NOT_DONE_YET

        self.start_timed(
            'version: 1\nendpoints:\n  "PUT /*/containers/*/archive":\n    pre: [slow]\n'
            "adapters:\n  slow: $BASE/slow\n",
            slow=slow,
        )
        client = yield self.connect()
        client.send(
            request(
                b"PUT",
                b"/v1.41/containers/abc/archive?path=/",
                (b"Content-Type", b"application/x-tar"),
                (b"Content-Length", b"4"),
                body=b"ta",
            )
        )
        yield sleep(TIMEOUT * 3 + 0.1)  # the hook answers after TIMEOUT * 3
        self.assertFalse(client.eof)
        client.send(b"r!")
        conn, req = yield self.dockerd.next_request()
        self.assertEqual(req.body, b"tar!")
        conn.send(response(b"200 OK", (b"Content-Length", b"0")))
        resp = yield client.response()
        self.assertEqual(resp.code, 200)
