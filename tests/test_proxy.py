"""Protocol tests of the whole proxy, on the wire, with in-process fakes.

Each test runs, on 127.0.0.1 in this reactor:

- a fake dockerd (:class:`tests.support.FakeDockerd`) that records every byte
  it gets and answers exactly the bytes the test scripts, when it says so;
- Powerstrip itself: a :class:`~powerstrip.proxy.front.FrontFactory` over a
  :class:`~powerstrip.proxy.route.Proxy` pointed at the fake;
- a raw client (:class:`tests.support.RawClient`) sending exact bytes;
- when hooks are configured, fake adapters (a twisted.web Site).

These are the Docker API's edge cases of the Docker wire notes (``docker-wire.md``, beside the project):
heads relayed before bodies, repeated headers, chunked uploads, upgrades with
half-close in both directions, old-client hijacks, keep-alive, and the hook
paths (rewrites, refusals, faults, limits).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET, Request

from powerstrip.proxy.exchange import when_flushed
from powerstrip.proxy.route import Limits
from tests.support import (
    ATTACH_URI,
    CREATE_PRE,
    FRAME,
    LAST_CHUNK,
    UPGRADED,
    VERSION_RESPONSE,
    DockerConnection,
    ProxyTestCase,
    add_env,
    attach_request,
    chunk,
    echo_post,
    echo_pre,
    json_request,
    json_response,
    reply,
    request,
    response,
    unused_port,
)


def contains(recorder: Any, needle: bytes) -> Any:
    """A predicate for :meth:`Recorder.wait`: ``needle`` has arrived."""
    return lambda: True if needle in recorder.data else None


# -- heads and bodies --------------------------------------------------------------


class StreamingResponseTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_head_relayed_before_body(self) -> Any:
        """dockerd's head reaches the client while dockerd still holds the body (``docker run``'s wait)."""
        self.start()
        client = yield self.connect()
        client.send(request(b"POST", b"/v1.41/containers/abc/wait?condition=next-exit", (b"Content-Length", b"0")))
        conn, req = yield self.dockerd.next_request()
        self.assertEqual(req.start, b"POST /v1.41/containers/abc/wait?condition=next-exit HTTP/1.1")
        conn.send(
            response(
                b"200 OK",
                (b"Api-Version", b"1.41"),
                (b"Content-Type", b"application/json"),
                (b"Transfer-Encoding", b"chunked"),
            )
        )
        head = yield client.head()
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"), head)
        self.assertEqual(client.data, head, "body bytes nobody sent")
        conn.send(chunk(b'{"StatusCode":'))
        yield client.wait(contains(client, b'{"StatusCode":'), "the first chunk")
        conn.send(chunk(b"0}\n"), LAST_CHUNK)
        resp = yield client.response()
        self.assertEqual(resp.code, 200)
        self.assertTrue(resp.chunked, resp.raw_head)
        self.assertEqual(resp.body, b'{"StatusCode":0}\n')
        self.assertEqual(resp.values(b"content-type"), [b"application/json"])
        self.assertEqual(resp.values(b"api-version"), [b"1.41"])

    @defer.inlineCallbacks
    def test_streaming_call_with_post_hook_relays_head_at_once(self) -> Any:
        """A post-hook matching ``wait`` is skipped: holding the response would deadlock ``docker run``."""
        self.start(
            'version: 1\nendpoints:\n  "POST /*/containers/*/wait":\n    post: [watcher]\n'
            "adapters:\n  watcher: $BASE/watcher\n",
            watcher=echo_post,
        )
        client = yield self.connect()
        client.send(request(b"POST", b"/v1.41/containers/abc/wait?condition=removed", (b"Content-Length", b"0")))
        conn, _ = yield self.dockerd.next_request()
        conn.send(response(b"200 OK", (b"Content-Type", b"application/json"), (b"Transfer-Encoding", b"chunked")))
        head = yield client.head()
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"), head)
        conn.send(chunk(b'{"StatusCode":3}\n'), LAST_CHUNK)
        resp = yield client.response()
        self.assertEqual((resp.code, resp.body), (200, b'{"StatusCode":3}\n'))
        self.assertEqual(self.adapters.calls, [])

    @defer.inlineCallbacks
    def test_headers_relayed_as_sent(self) -> Any:
        """Repeated headers stay repeated, nothing is added or decoded, hop-by-hop headers go."""
        self.start()
        client = yield self.connect()
        gzipped = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xff\x00\x01"
        stat = b"eyJuYW1lIjoiZiIsInNpemUiOjN9"
        req, _, resp = yield self.roundtrip(
            client,
            request(b"GET", b"/v1.41/containers/abc/archive?path=/f"),
            response(
                b"200 OK",
                (b"X-Docker-Test", b"a"),
                (b"Content-Encoding", b"gzip"),
                (b"X-Docker-Test", b"b"),
                (b"X-Docker-Container-Path-Stat", stat),
                (b"Keep-Alive", b"timeout=5"),
                (b"Connection", b"X-Secret"),
                (b"X-Secret", b"hop"),
                (b"Content-Length", b"%d" % len(gzipped)),
                body=gzipped,
            ),
        )
        self.assertEqual(req.start, b"GET /v1.41/containers/abc/archive?path=/f HTTP/1.1")
        self.assertEqual(resp.code, 200)
        self.assertEqual(resp.values(b"x-docker-test"), [b"a", b"b"])
        self.assertNotIn(b"content-type", resp.names, resp.raw_head)
        self.assertEqual(resp.values(b"content-encoding"), [b"gzip"])
        self.assertEqual(resp.values(b"x-docker-container-path-stat"), [stat])
        self.assertNotIn(b"keep-alive", resp.names, resp.raw_head)
        self.assertNotIn(b"x-secret", resp.names, resp.raw_head)
        self.assertEqual(resp.values(b"content-length"), [b"%d" % len(gzipped)])
        self.assertFalse(resp.chunked)
        self.assertEqual(resp.body, gzipped)

    @defer.inlineCallbacks
    def test_untyped_chunked_body_gets_no_content_type(self) -> Any:
        """``logs`` has no Content-Type at all: twisted.web must not add ``text/html``."""
        self.start()
        client = yield self.connect()
        _, _, resp = yield self.roundtrip(
            client,
            request(b"GET", b"/v1.41/containers/abc/logs?stdout=1&follow=1"),
            response(b"200 OK", (b"Transfer-Encoding", b"chunked"), body=chunk(FRAME) + LAST_CHUNK),
        )
        self.assertNotIn(b"content-type", resp.names, resp.raw_head)
        self.assertEqual(resp.body, FRAME)

    @defer.inlineCallbacks
    def test_head_request_keeps_headers_and_sends_no_body(self) -> Any:
        """``HEAD .../archive`` (stat): its header passes, no body, the connection goes on."""
        self.start()
        client = yield self.connect()
        stat = b"eyJuYW1lIjoiZiJ9"
        req, _, resp = yield self.roundtrip(
            client,
            request(b"HEAD", b"/v1.41/containers/abc/archive?path=/f"),
            response(
                b"200 OK",
                (b"X-Docker-Container-Path-Stat", stat),
                (b"Content-Type", b"application/x-tar"),
                (b"Content-Length", b"1234"),
            ),
            head_only=True,
        )
        self.assertEqual(req.method, b"HEAD")
        self.assertEqual(resp.values(b"x-docker-container-path-stat"), [stat])
        self.assertEqual(resp.values(b"content-length"), [b"1234"])
        _, _, resp = yield self.roundtrip(
            client, request(b"GET", b"/_ping"), response(b"200 OK", (b"Content-Length", b"2"), body=b"OK")
        )
        self.assertEqual((resp.code, resp.body), (200, b"OK"))
        self.assertEqual(client.rest, b"")

    @defer.inlineCallbacks
    def test_repeated_request_headers_reach_docker_in_order(self) -> Any:
        """BuildKit's many ``X-Docker-Expose-Session-Grpc-Method`` headers each reach dockerd."""
        self.start()
        client = yield self.connect()
        methods = [
            b"/moby.filesync.v1.FileSync/DiffCopy",
            b"/moby.filesync.v1.FileSync/TarStream",
            b"/moby.filesync.v1.Auth/Credentials",
            b"/moby.filesync.v1.Auth/FetchToken",
            b"/grpc.health.v1.Health/Check",
            b"/moby.buildkit.secrets.v1.Secrets/GetSecret",
        ]
        headers = [(b"X-Docker-Expose-Session-Uuid", b"u-1"), (b"X-Docker-Expose-Session-Name", b"ctx")]
        headers += [(b"X-Docker-Expose-Session-Grpc-Method", m) for m in methods]
        req, _, resp = yield self.roundtrip(
            client,
            request(b"POST", b"/v1.41/build?session=u-1", *headers, (b"Content-Length", b"0")),
            response(b"200 OK", (b"Content-Length", b"0")),
        )
        self.assertEqual(req.values(b"x-docker-expose-session-grpc-method"), methods)
        self.assertEqual(req.values(b"x-docker-expose-session-uuid"), [b"u-1"])
        self.assertEqual(resp.code, 200)

    @defer.inlineCallbacks
    def test_docker_closes_mid_chunked_body(self) -> Any:
        """dockerd dies mid-body: the client's connection ends at once, without a last chunk."""
        self.start()
        client = yield self.connect()
        client.send(request(b"GET", b"/v1.41/events"))
        conn, _ = yield self.dockerd.next_request()
        conn.send(
            response(b"200 OK", (b"Content-Type", b"application/json"), (b"Transfer-Encoding", b"chunked")),
            chunk(b'{"status":"start"}\n'),
        )
        yield client.wait(contains(client, b'{"status":"start"}\n'), "the first event")
        conn.transport.loseConnection()
        yield client.wait_eof().addTimeout(3, reactor)
        self.assertTrue(client.data.endswith(chunk(b'{"status":"start"}\n')), client.data)
        self.assertNotIn(LAST_CHUNK, client.data[client.data.find(b"\r\n\r\n") :])

    @defer.inlineCallbacks
    def test_client_gone_closes_docker_stream(self) -> Any:
        """``logs -f`` interrupted: the client goes, so Powerstrip's connection to dockerd goes too."""
        self.start()
        client = yield self.connect()
        client.send(request(b"GET", b"/v1.41/containers/abc/logs?follow=1&stdout=1"))
        conn, _ = yield self.dockerd.next_request()
        conn.send(response(b"200 OK", (b"Transfer-Encoding", b"chunked")), chunk(FRAME))
        yield client.wait(contains(client, FRAME), "the first frame")
        client.transport.loseConnection()
        # Not only at dockerd's next write (``events`` may be silent for hours).
        yield conn.wait_eof().addTimeout(2, reactor)
        self.assertEqual(conn.stream, b"")

    @defer.inlineCallbacks
    def test_client_half_close_after_request_still_gets_response(self) -> Any:
        """A client that shuts its write side after its request gets the whole response, then the close."""
        self.start()
        client = yield self.connect()
        client.send(request(b"GET", b"/v1.41/containers/json"))
        client.transport.loseWriteConnection()
        conn, _ = yield self.dockerd.next_request()
        conn.send(
            response(b"200 OK", (b"Content-Type", b"application/json"), (b"Transfer-Encoding", b"chunked")),
            chunk(b"[]"),
            LAST_CHUNK,
        )
        resp = yield client.response()
        self.assertEqual((resp.code, resp.body), (200, b"[]"))
        yield client.wait_eof()
        self.assertEqual(client.rest, b"")


# -- request bodies --------------------------------------------------------------


class RequestBodyTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_chunked_request_body_streams_chunked(self) -> Any:
        """``docker cp`` in: chunked text/plain reaches dockerd as HTTP/1.1 chunked, piece by piece."""
        self.start()
        client = yield self.connect()
        pieces = [b"tar header " * 10, b"file content\n" * 100, b"\x00" * 1024]
        client.send(
            request(
                b"PUT",
                b"/v1.41/containers/abc/archive?path=/tmp",
                (b"Content-Type", b"text/plain"),
                (b"Transfer-Encoding", b"chunked"),
            ),
            chunk(pieces[0]),
        )
        conn: DockerConnection = yield self.dockerd.next_connection()
        # The first piece reaches dockerd before the client sends the rest: streamed, not buffered.
        yield conn.wait(contains(conn, pieces[0]), "the first piece")
        client.send(chunk(pieces[1]), chunk(pieces[2]), LAST_CHUNK)
        conn2, req = yield self.dockerd.next_request()
        self.assertIs(conn2, conn)
        self.assertEqual(req.start, b"PUT /v1.41/containers/abc/archive?path=/tmp HTTP/1.1")
        self.assertTrue(req.chunked, req.raw_head)
        self.assertEqual(req.values(b"transfer-encoding"), [b"chunked"])
        self.assertNotIn(b"content-length", req.names)
        self.assertEqual(req.values(b"content-type"), [b"text/plain"])
        self.assertEqual(req.body, b"".join(pieces))
        conn.send(response(b"200 OK", (b"Content-Length", b"0")))
        resp = yield client.response()
        self.assertEqual(resp.code, 200)

    @defer.inlineCallbacks
    def test_chunked_body_from_http10_client_refused(self) -> Any:
        """Go ignores Transfer-Encoding in an HTTP/1.0 request (net/http, issue 12785) and
        would read no body: two readings of one request, so it is refused, nothing forwarded."""
        self.start()
        client = yield self.connect()
        body = b"some tar bytes" * 50
        client.send(
            request(
                b"PUT",
                b"/v1.41/containers/abc/archive?path=/tmp",
                (b"Content-Type", b"text/plain"),
                (b"Transfer-Encoding", b"chunked"),
                version=b"HTTP/1.0",
            ),
            chunk(body[:300]),
            chunk(body[300:]),
            LAST_CHUNK,
        )
        resp = yield client.response()
        self.assertDockerError(resp, 400, "powerstrip: Transfer-Encoding in an HTTP/1.0 request")
        yield client.wait_eof()
        self.assertNothingReachedDocker()

    @defer.inlineCallbacks
    def test_upload_paced_by_dockerd_then_next_request_is_read(self) -> Any:
        """dockerd's side paused the client during an upload (its buffer was full); once the upload
        is done the next request on the connection is read (found by bench/soak.py: it was not)."""
        proxy = self.start()
        client = yield self.connect()
        client.send(
            request(
                b"PUT",
                b"/v1.41/containers/abc/archive?path=/tmp",
                (b"Content-Type", b"application/x-tar"),
                (b"Content-Length", b"10"),
            ),
            b"01234",
        )
        conn: DockerConnection = yield self.dockerd.next_connection()
        yield conn.wait(contains(conn, b"01234"), "the first half")
        [front] = proxy.connections
        front.pauseProducing()  # as dockerd's transport does when its write buffer is full
        front.resumeProducing()
        front.pauseProducing()
        client.send(b"56789")
        yield deferLater(reactor, 0.05, lambda: None)
        front.resumeProducing()
        conn2, req = yield self.dockerd.next_request()
        self.assertEqual(req.body, b"0123456789")
        front.pauseProducing()  # paused again just before dockerd answers: the answer ends its hold
        conn2.send(response(b"200 OK", (b"Content-Length", b"0")))
        resp = yield client.response()
        self.assertEqual(resp.code, 200)
        _, _, resp = yield self.roundtrip(
            client, request(b"GET", b"/_ping"), response(b"200 OK", (b"Content-Length", b"2"), body=b"OK")
        )
        self.assertEqual(resp.body, b"OK")

    @defer.inlineCallbacks
    def test_http10_request_goes_as_http11(self) -> Any:
        """An HTTP/1.0 request goes to dockerd as HTTP/1.1 (the pool's connections are 1.1),
        and the connection closes after the answer, as 1.0 without keep-alive wants."""
        self.start()
        client = yield self.connect()
        client.send(request(b"GET", b"/v1.41/info", version=b"HTTP/1.0"))
        conn, req = yield self.dockerd.next_request()
        self.assertEqual(req.version, b"HTTP/1.1")
        conn.send(response(b"200 OK", (b"Content-Length", b"2"), body=b"{}"))
        resp = yield client.response()
        self.assertEqual((resp.code, resp.body), (200, b"{}"))
        yield client.wait_eof()

    @defer.inlineCallbacks
    def test_content_length_body_streams_with_same_length(self) -> Any:
        self.start()
        client = yield self.connect()
        body = bytes(range(256)) * 8
        client.send(
            request(
                b"POST",
                b"/v1.41/images/load?quiet=1",
                (b"Content-Type", b"application/x-tar"),
                (b"Content-Length", b"%d" % len(body)),
            ),
            body[:1000],
        )
        conn: DockerConnection = yield self.dockerd.next_connection()
        yield conn.wait(contains(conn, body[:1000]), "the first piece")
        client.send(body[1000:])
        conn2, req = yield self.dockerd.next_request()
        self.assertIs(conn2, conn)
        self.assertEqual(req.values(b"content-length"), [b"%d" % len(body)])
        self.assertNotIn(b"transfer-encoding", req.names)
        self.assertEqual(req.body, body)
        self.assertEqual(conn.stream, b"", "bytes past the declared length")
        conn.send(
            response(b"200 OK", (b"Content-Type", b"application/json"), (b"Transfer-Encoding", b"chunked")),
            chunk(b'{"stream":"Loaded image"}\n'),
            LAST_CHUNK,
        )
        resp = yield client.response()
        self.assertEqual(resp.body, b'{"stream":"Loaded image"}\n')

    @defer.inlineCallbacks
    def test_non_json_body_with_pre_hook_streams_unseen(self) -> Any:
        """A pre-hook on ``docker cp`` in sees ``"Body": null``; 1 MiB of tar reaches dockerd intact."""
        self.start(
            'version: 1\nendpoints:\n  "PUT /*/containers/*/archive":\n    pre: [watcher]\n'
            "adapters:\n  watcher: $BASE/watcher\n",
            watcher=echo_pre,
        )
        client = yield self.connect()
        body = bytes(range(251)) * (1024 * 1024 // 251) + b"end"
        uri = b"/v1.41/containers/abc/archive?path=/tmp"
        req, _, resp = yield self.roundtrip(
            client,
            request(
                b"PUT", uri, (b"Content-Type", b"application/x-tar"), (b"Content-Length", b"%d" % len(body)), body=body
            ),
            response(b"200 OK", (b"Content-Length", b"0")),
        )
        self.assertEqual(
            self.adapters.calls,
            [
                (
                    "watcher",
                    {
                        "PowerstripProtocolVersion": 1,
                        "Type": "pre-hook",
                        "ClientRequest": {"Method": "PUT", "Request": uri.decode(), "Body": None},
                    },
                )
            ],
        )
        self.assertEqual(req.values(b"content-length"), [b"%d" % len(body)])
        self.assertEqual(len(req.body), len(body))
        self.assertTrue(req.body == body, "the body was changed on its way")
        self.assertEqual(resp.code, 200)


# -- upgrades and hijacks --------------------------------------------------------------


class UpgradeTests(ProxyTestCase):
    @defer.inlineCallbacks
    def upgraded(self) -> Any:
        """An attach through Powerstrip up to the relayed 101: fires with ``(client, dockerd conn)``."""
        self.start()
        client = yield self.connect()
        client.send(attach_request())
        conn, req = yield self.dockerd.next_request()
        self.assertEqual(req.start, b"POST " + ATTACH_URI + b" HTTP/1.1")
        self.assertEqual(req.values(b"connection"), [b"Upgrade"])
        self.assertEqual(req.values(b"upgrade"), [b"tcp"])
        conn.send(UPGRADED)
        head = yield client.wait_bytes(len(UPGRADED))
        self.assertEqual(head, UPGRADED)
        return client, conn

    @defer.inlineCallbacks
    def test_upgrade_head_verbatim_then_bytes_both_ways(self) -> Any:
        client, conn = yield self.upgraded()
        client.send(b"stdin line\n")
        stream = yield conn.wait_stream(11)
        self.assertEqual(stream, b"stdin line\n")
        conn.send(FRAME)
        got = yield client.wait_bytes(len(FRAME), len(UPGRADED))
        self.assertEqual(got, FRAME)
        binary = bytes(range(256)) * 64
        client.send(binary)
        stream = yield conn.wait_stream(11 + len(binary))
        self.assertEqual(stream, b"stdin line\n" + binary)
        conn.send(binary)
        got = yield client.wait_bytes(len(FRAME) + len(binary), len(UPGRADED))
        self.assertEqual(got, FRAME + binary)

    @defer.inlineCallbacks
    def test_client_half_close_reaches_docker_output_still_flows(self) -> Any:
        """stdin EOF: dockerd sees EOF, its later output still reaches the client, then its close."""
        client, conn = yield self.upgraded()
        client.send(b"last input")
        yield conn.wait_stream(10)
        client.transport.loseWriteConnection()
        yield conn.wait_half_close()
        self.assertFalse(conn.closed)
        self.assertFalse(client.eof, "the client's input ended with its stdin")
        conn.send(FRAME)
        got = yield client.wait_bytes(len(FRAME), len(UPGRADED))
        self.assertEqual(got, FRAME)
        conn.send(b"more output")
        got = yield client.wait_bytes(len(FRAME) + 11, len(UPGRADED))
        self.assertEqual(got, FRAME + b"more output")
        conn.transport.loseConnection()
        yield client.wait_eof()
        self.assertEqual(client.data, UPGRADED + FRAME + b"more output")
        self.assertEqual(conn.stream, b"last input")

    @defer.inlineCallbacks
    def test_docker_half_close_reaches_client_input_still_flows(self) -> Any:
        """dockerd shuts its write side first: the client sees EOF and can still send."""
        client, conn = yield self.upgraded()
        conn.send(FRAME)
        conn.transport.loseWriteConnection()
        yield client.wait_half_close()
        self.assertFalse(client.closed)
        self.assertEqual(client.data, UPGRADED + FRAME)
        self.assertFalse(conn.eof, "dockerd's input ended with its output")
        client.send(b"input after EOF")
        stream = yield conn.wait_stream(15)
        self.assertEqual(stream, b"input after EOF")
        client.transport.loseWriteConnection()
        yield conn.wait_eof()
        self.assertEqual(conn.stream, b"input after EOF")

    @defer.inlineCallbacks
    def test_split_upgrade_head_and_stream_bytes_in_its_segment(self) -> Any:
        """The 101 head in two segments, stream bytes in the second: the head, then the bytes."""
        self.start()
        client = yield self.connect()
        client.send(attach_request())
        conn, _ = yield self.dockerd.next_request()
        conn.send(UPGRADED[:40])
        yield conn.send_later(reactor, 0.05, UPGRADED[40:] + FRAME)
        self.assertEqual(client.data, b"", "a partial head was relayed")
        got = yield client.wait_bytes(len(UPGRADED) + len(FRAME))
        self.assertEqual(got, UPGRADED + FRAME)
        client.send(b"in")
        stream = yield conn.wait_stream(2)
        self.assertEqual(stream, b"in")

    @defer.inlineCallbacks
    def test_upgrade_head_sent_on_its_own(self) -> Any:
        """Stream bytes that came with the 101 leave Powerstrip in a later send than the head.

        docker-py reads the head with a buffered reader and loses frames that
        share its segment (docker-py#3332). What Powerstrip's socket sends is
        observed at ``writeSomeData``, where each call is one ``send()``.
        """
        self.start()
        client = yield self.connect()
        sends: list[bytes] = []
        transport = self.proxy_transports[0]
        write_some = transport.writeSomeData

        def recording(data: Any) -> Any:
            sent = write_some(data)
            if isinstance(sent, int):
                sends.append(bytes(data)[:sent])
            return sent

        transport.writeSomeData = recording
        client.send(attach_request())
        conn, _ = yield self.dockerd.next_request()
        conn.send(UPGRADED + FRAME)  # one segment: how Powerstrip reads a quick first output
        got = yield client.wait_bytes(len(UPGRADED) + len(FRAME))
        self.assertEqual(got, UPGRADED + FRAME)
        self.assertEqual(sends[0], UPGRADED, "the 101 head shared its send() with stream bytes")

    @defer.inlineCallbacks
    def test_client_half_close_before_the_101(self) -> Any:
        """The client shuts its write side before dockerd's 101: the EOF is passed on after the switch."""
        self.start()
        client = yield self.connect()
        client.send(attach_request(), b"all of stdin")
        client.transport.loseWriteConnection()
        conn, _ = yield self.dockerd.next_request()
        conn.send(UPGRADED)
        yield conn.wait_half_close()
        self.assertEqual(conn.stream, b"all of stdin")
        conn.send(FRAME)
        got = yield client.wait_bytes(len(UPGRADED) + len(FRAME))
        self.assertEqual(got, UPGRADED + FRAME)
        conn.transport.loseConnection()
        yield client.wait_eof()
        self.assertEqual(client.data, UPGRADED + FRAME)

    @defer.inlineCallbacks
    def test_daemon_speaks_first_after_h2c_upgrade(self) -> Any:
        """BuildKit's ``/session``: ``101 Switching Protocols`` (no Content-Type), then dockerd's preface."""
        self.start()
        client = yield self.connect()
        client.send(
            request(
                b"POST",
                b"/session",
                (b"Upgrade", b"h2c"),
                (b"Connection", b"Upgrade"),
                (b"X-Docker-Expose-Session-Uuid", b"u-1"),
                (b"X-Docker-Expose-Session-Grpc-Method", b"/a.A/One"),
                (b"X-Docker-Expose-Session-Grpc-Method", b"/b.B/Two"),
            )
        )
        conn, req = yield self.dockerd.next_request()
        self.assertEqual(req.start, b"POST /session HTTP/1.1")
        self.assertEqual(req.values(b"upgrade"), [b"h2c"])
        self.assertEqual(req.values(b"x-docker-expose-session-grpc-method"), [b"/a.A/One", b"/b.B/Two"])
        head = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        conn.send(head)
        got = yield client.wait_bytes(len(head))
        self.assertEqual(got, head)
        conn.send(settings)
        got = yield client.wait_bytes(len(head) + len(settings))
        self.assertEqual(got, head + settings)
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        client.send(preface)
        stream = yield conn.wait_stream(len(preface))
        self.assertEqual(stream, preface)

    @defer.inlineCallbacks
    def test_old_client_hijack_without_upgrade(self) -> Any:
        """No Upgrade asked: ``200 OK`` + raw stream passes verbatim, and input flows back."""
        self.start()
        client = yield self.connect()
        client.send(request(b"POST", ATTACH_URI, (b"Content-Type", b"text/plain"), (b"Content-Length", b"0")))
        conn, req = yield self.dockerd.next_request()
        self.assertNotIn(b"upgrade", req.names)
        conn.hijack()
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n"
        conn.send(head)
        conn.send(FRAME)
        got = yield client.wait_bytes(len(head) + len(FRAME))
        self.assertEqual(got, head + FRAME)
        client.send(b"typed input\n")
        stream = yield conn.wait_stream(12)
        self.assertEqual(stream, b"typed input\n")
        conn.send(b"\x02\x00\x00\x00\x00\x00\x00\x03err")
        got = yield client.wait_bytes(len(head) + len(FRAME) + 11)
        self.assertEqual(got, head + FRAME + b"\x02\x00\x00\x00\x00\x00\x00\x03err")
        conn.transport.loseConnection()
        yield client.wait_eof()


# -- keep-alive --------------------------------------------------------------


class KeepAliveTests(ProxyTestCase):
    PING = response(
        b"200 OK",
        (b"Api-Version", b"1.41"),
        (b"Content-Type", b"text/plain; charset=utf-8"),
        (b"Content-Length", b"2"),
        body=b"OK",
    )

    @defer.inlineCallbacks
    def test_sequential_requests_then_upgrade_on_same_connection(self) -> Any:
        """docker-py: requests on one kept-alive connection, the third of which upgrades."""
        self.start()
        client = yield self.connect()
        _, _, resp = yield self.roundtrip(client, request(b"GET", b"/_ping"), self.PING)
        self.assertEqual((resp.code, resp.body), (200, b"OK"))
        _, _, resp = yield self.roundtrip(client, request(b"GET", b"/v1.41/version"), VERSION_RESPONSE)
        self.assertEqual(resp.json()["ApiVersion"], "1.41")
        client.send(attach_request())
        conn, req = yield self.dockerd.next_request()
        self.assertEqual(req.values(b"upgrade"), [b"tcp"])
        conn.send(UPGRADED)
        got = yield client.wait_bytes(len(UPGRADED), client.cursor)
        self.assertEqual(got, UPGRADED)
        client.send(b"stdin")
        stream = yield conn.wait_stream(5)
        self.assertEqual(stream, b"stdin")
        conn.send(FRAME)
        got = yield client.wait_bytes(len(UPGRADED) + len(FRAME), client.cursor)
        self.assertEqual(got, UPGRADED + FRAME)

    @defer.inlineCallbacks
    def test_pipelined_requests_answered_in_order_then_upgrade(self) -> Any:
        """Three requests and stdin bytes in one segment: two answers in order, the 101, the stream."""
        self.start()
        client = yield self.connect()
        client.send(request(b"GET", b"/_ping") + request(b"GET", b"/v1.41/version") + attach_request() + b"early stdin")
        conn, req = yield self.dockerd.next_request()
        self.assertEqual(req.uri, b"/_ping")
        conn.send(self.PING)
        conn, req = yield self.dockerd.next_request()
        self.assertEqual(req.uri, b"/v1.41/version")
        conn.send(VERSION_RESPONSE)
        conn, req = yield self.dockerd.next_request()
        self.assertEqual(req.uri, ATTACH_URI)
        conn.send(UPGRADED)
        first = yield client.response()
        second = yield client.response()
        self.assertEqual((first.code, first.body), (200, b"OK"))
        self.assertEqual(second.json()["Version"], "20.10.24")
        got = yield client.wait_bytes(len(UPGRADED), client.cursor)
        self.assertEqual(got, UPGRADED)
        stream = yield conn.wait_stream(11)
        self.assertEqual(stream, b"early stdin")
        conn.send(FRAME)
        got = yield client.wait_bytes(len(UPGRADED) + len(FRAME), client.cursor)
        self.assertEqual(got, UPGRADED + FRAME)

    @defer.inlineCallbacks
    def test_docker_connection_reused_and_204_passes(self) -> Any:
        """A finished exchange's dockerd connection carries the next one; a 204 ends cleanly."""
        self.start()
        client = yield self.connect()
        _, first, resp = yield self.roundtrip(client, request(b"GET", b"/_ping"), self.PING)
        self.assertEqual(resp.body, b"OK")
        _, second, resp = yield self.roundtrip(
            client,
            request(b"POST", b"/v1.41/containers/abc/start", (b"Content-Length", b"0")),
            response(b"204 No Content", (b"Api-Version", b"1.41")),
        )
        self.assertIs(second, first)
        self.assertEqual((resp.code, resp.body), (204, b""))
        self.assertNotIn(b"transfer-encoding", resp.names, resp.raw_head)
        _, third, resp = yield self.roundtrip(client, request(b"GET", b"/_ping"), self.PING)
        self.assertIs(third, first)
        self.assertEqual(resp.body, b"OK")
        self.assertEqual(client.rest, b"")

    @defer.inlineCallbacks
    def test_stale_pooled_connection_is_retried(self) -> Any:
        """dockerd closes an idle kept-alive connection as the next request arrives: retried on a new one."""
        self.start()
        client = yield self.connect()
        _, first, _ = yield self.roundtrip(client, request(b"GET", b"/_ping"), self.PING)
        client.send(request(b"GET", b"/v1.41/version"))
        conn, req = yield self.dockerd.next_request()
        self.assertIs(conn, first)
        conn.transport.loseConnection()  # unanswered
        conn, req = yield self.dockerd.next_request()
        self.assertIsNot(conn, first)
        self.assertEqual(req.uri, b"/v1.41/version")
        conn.send(VERSION_RESPONSE)
        resp = yield client.response()
        self.assertEqual(resp.json()["Version"], "20.10.24")


# -- hooks --------------------------------------------------------------


class HookTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_pre_hook_rewrites_body_with_new_length(self) -> Any:
        self.start(CREATE_PRE, hook=add_env)
        client = yield self.connect()
        req, _, resp = yield self.roundtrip(
            client,
            json_request(b"POST", b"/v1.41/containers/create?name=web", {"Image": "busybox"}),
            json_response(b"201 Created", {"Id": "abc", "Warnings": []}),
        )
        self.assertEqual(req.start, b"POST /v1.41/containers/create?name=web HTTP/1.1")
        self.assertEqual(req.json(), {"Image": "busybox", "Env": ["POWERSTRIP_HOOKED=1"]})
        self.assertEqual(req.values(b"content-length"), [b"%d" % len(req.body)])
        self.assertEqual(req.values(b"content-type"), [b"application/json"])
        self.assertEqual(self.dockerd.connections[0].stream, b"", "bytes past the declared length")
        self.assertEqual((resp.code, resp.json()["Id"]), (201, "abc"))
        # Hooks see the body as dockerd will decode it (hookbody.read_for_hooks): canonical JSON.
        self.assertEqual(self.adapters.calls[0][1]["ClientRequest"]["Body"], '{"Image":"busybox"}')

    @defer.inlineCallbacks
    def test_client_gone_stops_the_chain_even_with_failure_ignore(self) -> Any:
        """The client left during an adapter call: the next adapter is not called for nobody."""

        def hang(call: Request, payload: dict) -> Any:
            return NOT_DONE_YET

        self.start(
            'version: 1\nendpoints:\n  "POST /*/containers/create":\n    pre: [slow, next]\n'
            "adapters:\n  slow: {url: $BASE/slow, failure: ignore}\n  next: $BASE/next\n",
            slow=hang,
            next=add_env,
        )
        client = yield self.connect()
        client.send(json_request(b"POST", b"/v1.41/containers/create", {"Image": "busybox"}))
        while not self.adapters.calls:
            yield deferLater(reactor, 0.01, lambda: None)
        client.transport.abortConnection()
        yield deferLater(reactor, 0.2, lambda: None)
        self.assertEqual([name for name, _ in self.adapters.calls], ["slow"])
        self.assertNothingReachedDocker()

    @defer.inlineCallbacks
    def test_unversioned_path_hits_versioned_rule(self) -> Any:
        """``/containers/create`` (no ``/v1.41``) still matches ``POST /*/containers/create``."""
        self.start(CREATE_PRE, hook=add_env)
        client = yield self.connect()
        req, _, resp = yield self.roundtrip(
            client,
            json_request(b"POST", b"/containers/create", {"Image": "busybox"}),
            json_response(b"201 Created", {"Id": "abc"}),
        )
        self.assertEqual([c[1]["ClientRequest"]["Request"] for c in self.adapters.calls], ["/containers/create"])
        self.assertEqual(req.uri, b"/containers/create")
        self.assertEqual(req.json()["Env"], ["POWERSTRIP_HOOKED=1"])
        self.assertEqual(resp.code, 201)

    @defer.inlineCallbacks
    def test_post_hook_rewrites_response(self) -> Any:
        def rewrite(call: Request, payload: dict) -> bytes:
            return reply(
                call,
                {
                    "PowerstripProtocolVersion": 1,
                    "ModifiedServerResponse": {
                        "Code": 202,
                        "ContentType": "text/plain",
                        "Body": "rewritten by the hook\n",
                    },
                },
            )

        self.start(
            'version: 1\nendpoints:\n  "POST /*/containers/*/start":\n    post: [hook]\n'
            "adapters:\n  hook: $BASE/hook\n",
            hook=rewrite,
        )
        client = yield self.connect()
        _, _, resp = yield self.roundtrip(
            client,
            request(b"POST", b"/v1.41/containers/abc/start", (b"Content-Length", b"0")),
            json_response(b"200 OK", {"Id": "abc", "pad": "x" * 100}),
        )
        self.assertEqual(
            self.adapters.calls[0][1]["ServerResponse"],
            {"Code": 200, "ContentType": "application/json", "Body": json.dumps({"Id": "abc", "pad": "x" * 100})},
        )
        self.assertEqual(resp.code, 202)
        self.assertEqual(resp.values(b"content-type"), [b"text/plain"])
        self.assertEqual(resp.values(b"content-length"), [b"22"])
        self.assertEqual(resp.body, b"rewritten by the hook\n")
        self.assertEqual(client.rest, b"")

    @defer.inlineCallbacks
    def test_post_hook_sees_docker_404(self) -> Any:
        def annotate(call: Request, payload: dict) -> bytes:
            resp = dict(payload["ServerResponse"])
            resp["Body"] = json.dumps({"message": "[hook] " + json.loads(resp["Body"])["message"]})
            return reply(call, {"PowerstripProtocolVersion": 1, "ModifiedServerResponse": resp})

        self.start(
            'version: 1\nendpoints:\n  "GET /*/containers/*/json":\n    post: [hook]\nadapters:\n  hook: $BASE/hook\n',
            hook=annotate,
        )
        client = yield self.connect()
        _, _, resp = yield self.roundtrip(
            client,
            request(b"GET", b"/v1.41/containers/nope/json"),
            json_response(b"404 Not Found", {"message": "No such container: nope"}),
        )
        self.assertEqual(self.adapters.calls[0][1]["ServerResponse"]["Code"], 404)
        self.assertEqual(resp.code, 404)
        self.assertEqual(resp.json(), {"message": "[hook] No such container: nope"})
        self.assertEqual(resp.value(b"content-length"), b"%d" % len(resp.body))

    @defer.inlineCallbacks
    def test_pre_hook_refusal_never_reaches_docker(self) -> Any:
        def refuse(call: Request, payload: dict) -> bytes:
            return reply(call, {"message": "refused by policy"}, code=403)

        self.start(CREATE_PRE, hook=refuse)
        client = yield self.connect()
        client.send(json_request(b"POST", b"/v1.41/containers/create", {"Image": "busybox"}))
        resp = yield client.response()
        self.assertEqual(resp.code, 403)
        self.assertEqual(resp.json(), {"message": "refused by policy"})
        self.assertEqual(resp.values(b"content-type"), [b"application/json"])
        self.assertEqual(resp.value(b"content-length"), b"%d" % len(resp.body))
        self.assertNothingReachedDocker()

    @defer.inlineCallbacks
    def test_pre_hook_refusal_of_streamed_body(self) -> Any:
        """``docker cp`` in refused: the client gets the refusal though its tar was never read."""

        def refuse(call: Request, payload: dict) -> bytes:
            return reply(call, {"message": "no copying"}, code=403)

        self.start(
            'version: 1\nendpoints:\n  "PUT /*/containers/*/archive":\n    pre: [hook]\n'
            "adapters:\n  hook: $BASE/hook\n",
            hook=refuse,
        )
        client = yield self.connect()
        body = b"\x00" * (256 * 1024)
        client.send(
            request(
                b"PUT",
                b"/v1.41/containers/abc/archive?path=/",
                (b"Content-Type", b"application/x-tar"),
                (b"Content-Length", b"%d" % len(body)),
                body=body,
            )
        )
        resp = yield client.response()
        self.assertEqual((resp.code, resp.json()), (403, {"message": "no copying"}))
        self.assertNothingReachedDocker()

    @defer.inlineCallbacks
    def test_answer_before_the_body_is_read_says_connection_close(self) -> Any:
        """A refusal while the upload is still coming: the rest is read and dropped, then the connection
        ends -- and the answer says so, or a keep-alive client would send its next request into it."""

        def refuse(call: Request, payload: dict) -> bytes:
            return reply(call, {"message": "no copying"}, code=403)

        self.start(
            'version: 1\nendpoints:\n  "PUT /*/containers/*/archive":\n    pre: [hook]\n'
            "adapters:\n  hook: $BASE/hook\n",
            hook=refuse,
        )
        client = yield self.connect()
        client.send(
            request(
                b"PUT",
                b"/v1.41/containers/abc/archive?path=/",
                (b"Content-Type", b"application/x-tar"),
                (b"Content-Length", b"%d" % (1 << 20)),
                body=b"\x00" * 1000,
            )
        )
        resp = yield client.response()
        self.assertEqual(resp.code, 403)
        self.assertEqual(resp.values(b"connection"), [b"close"])
        self.assertFalse(client.eof)
        client.send(b"\x00" * ((1 << 20) - 1000))  # the rest of the upload is still read
        yield client.wait_eof()
        self.assertEqual(client.rest, b"")
        self.assertNothingReachedDocker()

    @defer.inlineCallbacks
    def test_keep_alive_answers_do_not_say_close(self) -> Any:
        self.start()
        client = yield self.connect()
        _, _, resp = yield self.roundtrip(
            client, request(b"GET", b"/_ping"), response(b"200 OK", (b"Content-Length", b"2"), body=b"OK")
        )
        self.assertEqual(resp.values(b"connection"), [])

    @defer.inlineCallbacks
    def test_adapter_down_502_and_proxy_keeps_serving(self) -> Any:
        port = unused_port()
        self.start(
            f'version: 1\nendpoints:\n  "POST /*/containers/create":\n    pre: [gone]\n'
            f"adapters:\n  gone: http://127.0.0.1:{port}/gone\n"
        )
        client = yield self.connect()
        client.send(json_request(b"POST", b"/v1.41/containers/create", {"Image": "busybox"}))
        resp = yield client.response()
        self.assertDockerError(resp, 502, f"powerstrip: adapter 'gone' (http://127.0.0.1:{port}/gone): ")
        self.assertNothingReachedDocker()
        other = yield self.connect()
        _, _, resp = yield self.roundtrip(other, request(b"GET", b"/v1.41/version"), VERSION_RESPONSE)
        self.assertEqual(resp.code, 200)

    @defer.inlineCallbacks
    def test_response_too_large_for_post_hooks(self) -> Any:
        self.start(
            'version: 1\nendpoints:\n  "GET /*/containers/json":\n    post: [hook]\nadapters:\n  hook: $BASE/hook\n',
            limits=Limits(max_response_body=100),
            hook=echo_post,
        )
        client = yield self.connect()
        _, _, resp = yield self.roundtrip(
            client,
            request(b"GET", b"/v1.41/containers/json"),
            json_response(b"200 OK", [{"Id": f"c{i}"} for i in range(50)]),
        )
        message = self.assertDockerError(resp, 502, "powerstrip: Docker's response is larger than 100 bytes")
        self.assertIn("--max-response-body", message)
        self.assertEqual(self.adapters.calls, [])

    @defer.inlineCallbacks
    def test_json_body_too_large_for_pre_hooks(self) -> Any:
        self.start(CREATE_PRE, limits=Limits(max_json_body=100), hook=echo_pre)
        client = yield self.connect()
        client.send(json_request(b"POST", b"/v1.41/containers/create", {"Image": "busybox", "Cmd": ["x"] * 100}))
        resp = yield client.response()
        message = self.assertDockerError(resp, 413, "powerstrip: request body larger than 100 bytes")
        self.assertIn("--max-json-body", message)
        self.assertEqual(self.adapters.calls, [])
        self.assertNothingReachedDocker()


# -- dockerd down --------------------------------------------------------------


class DockerDownTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_docker_not_listening(self) -> Any:
        port = unused_port()
        self.start(docker=f"tcp://127.0.0.1:{port}")
        client = yield self.connect()
        client.send(request(b"GET", b"/v1.41/version"))
        resp = yield client.response()
        self.assertDockerError(resp, 502, f"powerstrip: cannot reach Docker at tcp://127.0.0.1:{port}: ")
        self.assertEqual(self.dockerd.connections, [])


class FlushWatchTests(SynchronousTestCase):
    """Waiting for a 101 head to leave before splicing (``exchange.when_flushed``)."""

    def test_flushed(self) -> None:
        transport, seen = StringTransport(), []
        when_flushed(transport, lambda: seen.append("flushed"), lambda: seen.append("lost"))
        self.assertEqual(seen, [])  # registration alone is not a flush
        transport.producer.resumeProducing()
        self.assertEqual((seen, transport.producer), (["flushed"], None))

    def test_lost_before_flush(self) -> None:
        """A client gone with the head unsent: ``lost`` runs, so dockerd's connection is closed."""
        transport, seen = StringTransport(), []
        when_flushed(transport, lambda: seen.append("flushed"), lambda: seen.append("lost"))
        transport.producer.stopProducing()  # what a transport does when its connection is lost
        self.assertEqual(seen, ["lost"])
