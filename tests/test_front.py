"""Issue 12, item 3, on the wire with a fake dockerd: Powerstrip splices a client's
connection to dockerd's socket only when dockerd switched protocols for a request
that asked for it (``101`` to an ``Upgrade``), or gave an old client the hijack
endpoints' raw stream. Any other answer delimited by the connection's end is
relayed and the client's connection closed: bytes the client sends after it
reach nobody.

(The raw-socket tests of the strict request reading against the real dockerd
are in ``tests/e2e/test_front_strict_e2e.py``.)
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from powerstrip.proxy.route import Limits
from powerstrip.wire.sender import Sender
from tests.support import ATTACH_URI, UPGRADED, ProxyTestCase, RawClient, attach_request, echo_pre, request

#: What dockerd (Go's net/http) answers a request it cannot read: no length,
#: no chunking, so the body ends with the connection.
GO_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\n\r\nbad"
#: A complete request, then "stdin": if either reached dockerd, the client's
#: connection was spliced to dockerd's socket (or served past a close).
AFTERWARDS = request(b"POST", b"/v1.41/containers/create?name=smuggled", (b"Content-Length", b"0")) + b"stdin\n"


class _FrontTestCase(ProxyTestCase):
    """The proxy test case, and a wait for the end of a client connection."""

    @defer.inlineCallbacks
    def ended(self, client: RawClient) -> Any:
        """Fire once Powerstrip has closed the client's connection (its socket, not only its
        write side; the client itself never closes)."""
        yield client.wait_eof()
        for _ in range(100):
            if all(t.disconnected for t in self.proxy_transports):
                return
            yield deferLater(reactor, 0.02, lambda: None)
        self.fail(f"Powerstrip's side of the client connection is still open: {self.proxy_transports}")


class CloseDelimitedAnswerTests(_FrontTestCase):
    """A close-delimited non-101 answer: relayed, then the end of the client's connection."""

    @defer.inlineCallbacks
    def answered_close_delimited(self, data: bytes, close_at_once: bool) -> Any:
        """Send ``data``; dockerd answers :data:`GO_BAD_REQUEST` (and closes at once, or
        only after the client has sent :data:`AFTERWARDS`).

        Fires with ``(client, dockerd conn, the request as dockerd got it)``.
        """
        self.start()
        client: RawClient = yield self.connect()
        client.send(data)
        conn, req = yield self.dockerd.next_request()
        conn.send(GO_BAD_REQUEST)
        if close_at_once:
            conn.transport.loseConnection()
        got = yield client.wait_bytes(len(GO_BAD_REQUEST))
        self.assertTrue(got.startswith(b"HTTP/1.1 400 Bad Request\r\n"), got)
        self.assertTrue(got.endswith(b"\r\n\r\nbad"), got)
        client.send(AFTERWARDS)
        # Time for the bytes to reach dockerd if anything were to carry them there.
        yield deferLater(reactor, 0.2, lambda: None)
        if not close_at_once:
            conn.transport.loseConnection()
        yield self.ended(client)
        return client, conn, req.raw

    def assertOnlyTheRequestReachedDocker(self, client: RawClient, conn: Any, sent: bytes) -> None:
        self.assertEqual(len(self.dockerd.connections), 1, "a second connection to dockerd")
        self.assertEqual(conn.data, sent, "client bytes after the answer reached dockerd")
        head, _, body = client.data.partition(b"\r\n\r\n")
        self.assertEqual(body, b"bad", "the close-delimited body, relayed as it came")
        self.assertIn(b"\r\nConnection: close", head)
        self.assertNotIn(b"HTTP/1.1", body, "a second answer after the close-delimited one")

    @defer.inlineCallbacks
    def test_close_delimited_400_relayed_then_closed(self) -> Any:
        """dockerd's "400 Bad Request" and close: the client gets it whole, then its connection ends."""
        data = request(b"GET", b"/v1.41/containers/json")
        client, conn, sent = yield self.answered_close_delimited(data, close_at_once=True)
        self.assertOnlyTheRequestReachedDocker(client, conn, sent)

    @defer.inlineCallbacks
    def test_close_delimited_400_held_open_is_no_splice(self) -> Any:
        """dockerd keeps its socket open after the 400: what the client sends meanwhile is not a stream."""
        data = request(b"GET", b"/v1.41/containers/json")
        client, conn, sent = yield self.answered_close_delimited(data, close_at_once=False)
        self.assertOnlyTheRequestReachedDocker(client, conn, sent)

    @defer.inlineCallbacks
    def test_close_delimited_400_to_an_upgrade_request_is_no_splice(self) -> Any:
        """An attach that asked for an upgrade and got a close-delimited 400 (not a 101): relayed, closed."""
        data = attach_request()
        client, conn, sent = yield self.answered_close_delimited(data, close_at_once=False)
        self.assertOnlyTheRequestReachedDocker(client, conn, sent)

    @defer.inlineCallbacks
    def test_close_delimited_400_to_an_old_client_attach_is_no_splice(self) -> Any:
        """Only a "200" is the hijack endpoints' raw stream: a close-delimited 400 to an attach is relayed."""
        data = request(b"POST", ATTACH_URI, (b"Content-Type", b"text/plain"), (b"Content-Length", b"0"))
        client, conn, sent = yield self.answered_close_delimited(data, close_at_once=False)
        self.assertOnlyTheRequestReachedDocker(client, conn, sent)

    @defer.inlineCallbacks
    def test_close_delimited_200_to_a_plain_call_is_no_splice(self) -> Any:
        """A "200" delimited by the close, to a call that is not attach or exec start: relayed, closed."""
        self.start()
        client: RawClient = yield self.connect()
        data = request(b"GET", b"/v1.41/containers/json")
        client.send(data)
        conn, _ = yield self.dockerd.next_request()
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[]")
        yield client.wait(lambda: True if client.data.endswith(b"\r\n\r\n[]") else None, "the body")
        client.send(AFTERWARDS)
        yield deferLater(reactor, 0.2, lambda: None)
        conn.transport.loseConnection()
        yield self.ended(client)
        self.assertEqual(conn.data, data, "client bytes after the answer reached dockerd")
        self.assertEqual(len(self.dockerd.connections), 1)
        self.assertEqual(client.data.partition(b"\r\n\r\n")[2], b"[]")


class UnaskedSwitchTests(_FrontTestCase):
    """A ``101`` to a request that carried no ``Upgrade``: a 502, not a splice."""

    @defer.inlineCallbacks
    def test_101_without_upgrade_is_502(self) -> Any:
        self.start()
        client: RawClient = yield self.connect()
        data = request(b"POST", b"/v1.41/containers/abc/attach?stream=1&stdout=1", (b"Content-Length", b"0"))
        client.send(data)
        conn, req = yield self.dockerd.next_request()
        self.assertNotIn(b"upgrade", req.names)
        conn.send(UPGRADED + b"stream bytes")
        resp = yield client.response()
        message = self.assertDockerError(resp, 502, "powerstrip: ")
        self.assertIn("101", message)
        self.assertNotIn(b"stream bytes", client.data, "dockerd's stream reached the client")
        self.assertNotIn(b"UPGRADED", client.data, "the 101 head was relayed")
        client.send(b"stdin")  # what a client that believed in the switch would send
        yield deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(conn.data, data, "client bytes after the 502 reached the switched connection")
        self.assertEqual(len(self.dockerd.connections), 1)
        # No splice is left behind: the client's connection can end, and dockerd's is gone.
        client.transport.loseConnection()
        yield client.wait_closed()
        yield conn.wait_closed()


class AnsweredBeforeTheBodyTests(_FrontTestCase):
    """A request answered before its body was read (413, 503): the rest is read and
    dropped, then the connection ends. That answer is the connection's last."""

    HOOKED = 'version: 1\nendpoints:\n  "POST /*/containers/create":\n    pre: [echo]\nadapters:\n  echo: $BASE/echo\n'

    @defer.inlineCallbacks
    def test_one_answer_only_when_the_rest_of_the_body_never_comes(self) -> Any:
        """The client stops sending after its 413: the connection is closed, with no second
        (408) answer after one that said ``Connection: close``."""
        self.start(self.HOOKED, limits=Limits(max_json_body=10), site_options={"timeout": 0.5}, echo=echo_pre)
        client: RawClient = yield self.connect()
        client.send(
            request(
                b"POST",
                b"/v1.41/containers/create",
                (b"Content-Type", b"application/json"),
                (b"Content-Length", b"100"),
                body=b'{"Image": "busybox", "x": 1',
            )
        )
        resp = yield client.response()
        self.assertDockerError(resp, 413, "powerstrip: request body larger than 10 bytes")
        self.assertEqual(resp.values(b"connection"), [b"close"])
        yield self.ended(client)
        self.assertEqual(client.rest, b"", "a second answer after the one that closed the connection")
        self.assertNothingReachedDocker()


class WritesTests(_FrontTestCase):
    """Answers go out as soon as they are written (:mod:`powerstrip.wire.sender`)."""

    @defer.inlineCallbacks
    def test_both_tcp_sides_send_without_nagle(self) -> Any:
        """The client's connection and dockerd's have TCP_NODELAY: a response head and its first
        chunk, written one after the other, do not wait on the client's delayed ACK."""
        self.start()
        client: RawClient = yield self.connect()
        client.send(request(b"GET", b"/v1.41/events"))
        conn, _ = yield self.dockerd.next_request()
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        conn.send(b"5\r\nfirst\r\n")
        got = yield client.wait_bytes(len(b"HTTP/1.1 200 OK"))
        self.assertTrue(got.startswith(b"HTTP/1.1 200 OK"), got)
        self.assertTrue(self.proxy_transports[0].getTcpNoDelay(), "Powerstrip's side of the client connection")
        [exchange] = self.resources[0].inflight  # streaming the events
        self.assertTrue(exchange.conn.transport.getTcpNoDelay(), "Powerstrip's side of dockerd's connection")
        conn.send(b"0\r\n\r\n")

    @defer.inlineCallbacks
    def sent_to_dockerd(self, first: bytes, then: bytes) -> Any:
        """The writes Powerstrip made to dockerd for ``then``, sent in one piece after ``first``
        (which leaves a pooled connection idle, or is empty: ``then`` opens the connection)."""
        writes: list[bytes] = []
        original = Sender.write
        self.patch(Sender, "write", lambda sender, data: (writes.append(data), original(sender, data))[1])
        self.start()
        client: RawClient = yield self.connect()
        if first:
            client.send(first)
            conn, _ = yield self.dockerd.next_request()
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
            yield client.response()
        del writes[:]
        client.send(then)
        conn, req = yield self.dockerd.next_request()
        conn.send(b"HTTP/1.1 204 No Content\r\n\r\n")
        yield client.response()
        return [w for w in writes if not w.startswith(b"HTTP/1.1 ")]  # what went to dockerd

    #: An attach with a body: the CLI and docker-py send none, a raw client may send ``{}`` (the soak does).
    ATTACH_WITH_BODY = request(
        b"POST",
        b"/v1.41/containers/x/attach?stream=1&stdin=1",
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"2"),
        body=b"{}",
    )

    def assert_one_write(self, sent: list[bytes]) -> None:
        self.assertEqual(len(sent), 1, sent)
        self.assertTrue(sent[0].startswith(b"POST /v1.41/containers/x/attach"), sent)
        self.assertTrue(sent[0].endswith(b"\r\n\r\n{}"), sent)

    @defer.inlineCallbacks
    def test_a_head_and_its_body_go_to_dockerd_together_on_a_pooled_connection(self) -> Any:
        """What the client sent in one piece reaches dockerd in one write: dockerd reads an
        attach's ``{}`` body with its head and drops it, but one that arrives apart becomes the
        container's first stdin bytes (the soak saw it: 16 of ~150 attach sessions)."""
        sent = yield self.sent_to_dockerd(request(b"GET", b"/_ping"), self.ATTACH_WITH_BODY)
        self.assert_one_write(sent)

    @defer.inlineCallbacks
    def test_a_head_and_its_body_go_to_dockerd_together_on_a_new_connection(self) -> Any:
        """The same when the request waits for a new connection to dockerd."""
        sent = yield self.sent_to_dockerd(b"", self.ATTACH_WITH_BODY)
        self.assert_one_write(sent)
