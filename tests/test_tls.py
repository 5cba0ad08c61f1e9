"""TLS on both ends, on the wire: client certificates, TLS to dockerd, half-close over TLS.

The fake dockerd, raw client and certificates of :mod:`tests.support`.
End-to-end runs with the docker CLIs and real dockerds are in
``tests/e2e/test_tls_e2e.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer, ssl
from twisted.trial.unittest import TestCase

from powerstrip.wire.tls import DockerTLS, ListenerTLS, TLSConfigError
from tests.support import (
    FRAME,
    UPGRADED,
    Certificates,
    ProxyTestCase,
    attach_request,
    client_creator,
    json_response,
    request,
)


class TLSListenerTests(ProxyTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.certs = Certificates(Path(self.mktemp()))

    @defer.inlineCallbacks
    def test_verified_client_is_proxied(self) -> Any:
        self.start(tls=self.certs.listener())
        client = yield self.connect(client_creator(self.certs.client))
        req, _, resp = yield self.roundtrip(
            client, request(b"GET", b"/v1.41/version"), json_response(b"200 OK", {"Version": "x"})
        )
        self.assertEqual(req.uri, b"/v1.41/version")
        self.assertEqual(resp.json(), {"Version": "x"})

    @defer.inlineCallbacks
    def test_client_without_certificate_is_refused_before_any_request(self) -> Any:
        self.start(tls=self.certs.listener())
        anonymous = ssl.optionsForClientTLS(
            "localhost", trustRoot=ssl.Certificate.loadPEM((self.certs.server / "ca.pem").read_bytes())
        )
        client = yield self.connect(anonymous)
        client.send(request(b"GET", b"/v1.41/version"))
        yield client.wait_closed()
        self.assertEqual(client.data, b"")
        self.assertNothingReachedDocker()

    @defer.inlineCallbacks
    def test_certificate_from_another_ca_is_refused(self) -> Any:
        self.start(tls=self.certs.listener())
        client = yield self.connect(client_creator(self.certs.rogue))
        client.send(request(b"GET", b"/v1.41/version"))
        yield client.wait_closed()
        self.assertEqual(client.data, b"")
        self.assertNothingReachedDocker()

    @defer.inlineCallbacks
    def test_tls_without_verify_takes_any_client(self) -> Any:
        self.start(tls=self.certs.listener(verify=False))
        client = yield self.connect(client_creator(self.certs.rogue))
        _, _, resp = yield self.roundtrip(client, request(b"GET", b"/_ping"), json_response(b"200 OK", "OK"))
        self.assertEqual(resp.code, 200)

    @defer.inlineCallbacks
    def upgraded(self) -> Any:
        self.start(tls=self.certs.listener())
        client = yield self.connect(client_creator(self.certs.client))
        client.send(attach_request())
        conn, _ = yield self.dockerd.next_request()
        conn.hijack()
        conn.send(UPGRADED)
        yield client.wait_bytes(len(UPGRADED))
        client.send(b"stdin")
        yield conn.wait_stream(5)
        return client, conn

    @defer.inlineCallbacks
    def test_close_notify_is_stdin_eof_and_output_still_flows(self) -> Any:
        client, conn = yield self.upgraded()
        client.transport.loseWriteConnection()  # close_notify + FIN, as Go's tls.Conn.CloseWrite
        yield conn.wait_half_close()
        conn.send(FRAME)
        got = yield client.wait_bytes(len(FRAME), len(UPGRADED))
        self.assertEqual(got, FRAME)
        conn.transport.loseConnection()
        yield client.wait_eof()
        self.assertEqual(client.data, UPGRADED + FRAME)

    @defer.inlineCallbacks
    def test_bare_fin_is_stdin_eof(self) -> Any:
        """The docker CLI half-closes the TCP connection under TLS without a close_notify."""
        client, conn = yield self.upgraded()
        client.transport.transport.loseWriteConnection()
        yield conn.wait_half_close()
        conn.send(FRAME)
        got = yield client.wait_bytes(len(FRAME), len(UPGRADED))
        self.assertEqual(got, FRAME)

    @defer.inlineCallbacks
    def test_docker_eof_reaches_client_input_still_flows(self) -> Any:
        client, conn = yield self.upgraded()
        conn.send(FRAME)
        conn.transport.loseWriteConnection()
        yield client.wait_half_close()
        self.assertEqual(client.data, UPGRADED + FRAME)
        client.send(b" more")
        stream = yield conn.wait_stream(10)
        self.assertEqual(stream, b"stdin more")
        client.transport.loseWriteConnection()
        yield conn.wait_eof()


class TLSUpstreamTests(ProxyTestCase):
    """Powerstrip → dockerd over TLS, dockerd requiring a client certificate."""

    def setUp(self) -> None:
        super().setUp()
        self.certs = Certificates(Path(self.mktemp()))
        for port in self.ports:  # the plain fake dockerd: replace it by a TLS one
            port.stopListening()
        self.ports.clear()
        self.dockerd_port = self.listen(self.certs.listener().wrap(self.dockerd))

    def docker_url(self) -> str:
        return f"tcp://localhost:{self.dockerd_port}"

    @defer.inlineCallbacks
    def test_request_over_tls(self) -> Any:
        self.start(docker=self.docker_url(), docker_tls=DockerTLS(str(self.certs.client)))
        client = yield self.connect()
        req, _, resp = yield self.roundtrip(
            client, request(b"GET", b"/v1.41/info"), json_response(b"200 OK", {"ID": "x"})
        )
        self.assertEqual(req.uri, b"/v1.41/info")
        self.assertEqual(resp.json(), {"ID": "x"})

    @defer.inlineCallbacks
    def test_upgrade_half_close_both_ways_over_tls(self) -> Any:
        self.start(docker=self.docker_url(), docker_tls=DockerTLS(str(self.certs.client)))
        client = yield self.connect()
        client.send(attach_request())
        conn, _ = yield self.dockerd.next_request()
        conn.hijack()
        conn.send(UPGRADED)
        yield client.wait_bytes(len(UPGRADED))
        client.send(b"input")
        yield conn.wait_stream(5)
        client.transport.loseWriteConnection()
        yield conn.wait_half_close()  # dockerd sees stdin EOF through TLS
        conn.send(FRAME)
        got = yield client.wait_bytes(len(FRAME), len(UPGRADED))
        self.assertEqual(got, FRAME)
        conn.transport.loseConnection()
        yield client.wait_eof()

    @defer.inlineCallbacks
    def test_docker_refusing_our_certificate_is_a_clear_error(self) -> Any:
        self.start(docker=self.docker_url(), docker_tls=DockerTLS(str(self.certs.rogue)))
        client = yield self.connect()
        client.send(request(b"GET", b"/v1.41/info"))
        resp = yield client.response()
        self.assertDockerError(resp, 502, "powerstrip: ")
        self.assertIn(f"Docker at {self.docker_url()}", resp.json()["message"])


class TLSConfigTests(TestCase):
    def setUp(self) -> None:
        self.certs = Certificates(Path(self.mktemp()))

    def test_missing_file_is_named(self) -> None:
        tls = ListenerTLS(str(self.certs.server / "nope.pem"), str(self.certs.server / "key.pem"))
        with self.assertRaises(TLSConfigError) as caught:
            tls.options()
        self.assertIn("nope.pem", str(caught.exception))

    def test_key_of_another_certificate(self) -> None:
        tls = ListenerTLS(str(self.certs.server / "cert.pem"), str(self.certs.client / "key.pem"))
        with self.assertRaises(TLSConfigError) as caught:
            tls.options()
        self.assertIn("does not fit", str(caught.exception))

    def test_not_a_certificate(self) -> None:
        (self.certs.client / "ca.pem").write_text("hello")
        with self.assertRaises(TLSConfigError) as caught:
            DockerTLS(str(self.certs.client)).creator("localhost")
        self.assertIn("no PEM certificate", str(caught.exception))
