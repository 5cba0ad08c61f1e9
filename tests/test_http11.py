"""powerstrip.wire.http11: what a relay reads of a head, read in one pass.

The request head's strict rules have their own raw-socket and differential
tests (test_http11_differential, tests.e2e.test_strict_front); these pin the
fields the pass-through path takes instead of asking the head again.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from powerstrip.wire.http11 import ResponseHead, parse_request_head, parse_response_head


def _response(*lines: bytes) -> ResponseHead:
    return parse_response_head(b"HTTP/1.1 200 OK\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n")


class ResponseHeadScanTests(SynchronousTestCase):
    """The framing and hop-by-hop headers of a response, found when it is read."""

    def test_framing_headers_first_value_any_case(self) -> None:
        head = _response(
            b"content-LENGTH:  12 ",
            b"Content-Length: 99",
            b"TRANSFER-ENCODING: chunked",
            b"Server: Docker",
        )
        self.assertEqual(head.content_length, b"12")
        self.assertEqual(head.transfer_encoding, b"chunked")
        self.assertIsNone(head.connection)
        # Transfer-Encoding is relayed as it is: not a reason to rebuild the head.
        self.assertFalse(head.hop)
        # The same answers the general lookup gives.
        self.assertEqual(head.header(b"content-length"), head.content_length)
        self.assertEqual(head.header(b"transfer-encoding"), head.transfer_encoding)

    def test_hop_by_hop_headers_are_noticed(self) -> None:
        for line in (
            b"Connection: close",
            b"Keep-Alive: timeout=5",
            b"TE: trailers",
            b"Trailer: X-Sum",
            b"Trailers: X-Sum",
            b"Upgrade: tcp",
            b"Proxy-Authenticate: Basic",
        ):
            with self.subTest(line=line):
                self.assertTrue(_response(b"Content-Length: 0", line).hop)
        self.assertEqual(_response(b"Connection: Close").connection, b"Close")

    def test_names_that_only_begin_like_a_watched_one_are_not_it(self) -> None:
        head = _response(b"Content-Length-X: 5", b"Tea: green", b"Connectionless: yes", b"X-Connection: close")
        self.assertIsNone(head.content_length)
        self.assertIsNone(head.connection)
        self.assertFalse(head.hop)

    def test_built_from_a_header_list(self) -> None:
        head = ResponseHead(b"HTTP/1.1", 200, b"OK", [(b"Content-Length", b"3"), (b"Connection", b"close")])
        self.assertEqual((head.content_length, head.connection, head.hop), (b"3", b"close", True))


class RequestHeadFieldsTests(SynchronousTestCase):
    """The path and whether a body follows, read once with the head."""

    def test_path_is_the_target_without_its_query(self) -> None:
        head = parse_request_head(b"GET /v1.41/containers/json?all=1&x=? HTTP/1.1\r\nHost: d\r\n\r\n")
        self.assertEqual((head.target, head.path), ("/v1.41/containers/json?all=1&x=?", "/v1.41/containers/json"))
        self.assertEqual(parse_request_head(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n").path, "/_ping")

    def test_has_body(self) -> None:
        cases = {
            (): False,
            (b"Content-Length: 0",): False,
            (b"Content-Length: 2",): True,
            (b"Transfer-Encoding: chunked",): True,
            (b"Content-Type: application/json",): False,
        }
        for lines, expected in cases.items():
            with self.subTest(lines=lines):
                head = parse_request_head(
                    b"POST /x HTTP/1.1\r\nHost: d\r\n" + b"".join(x + b"\r\n" for x in lines) + b"\r\n"
                )
                self.assertIs(head.has_body, expected)
