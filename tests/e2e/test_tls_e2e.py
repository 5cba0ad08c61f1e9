"""TLS end to end: real docker CLIs, a real Powerstrip process, real dockerds.

- A TLS listener (``--tlsverify``) in front of the normal unix-socket dockerd:
  the CLIs connect with ``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH``; stdin EOF
  travels through TLS as a half-close; clients without a certificate from the
  right CA are refused in the handshake, before any request is read.
- A TLS upstream: a second dockerd listening only on loopback TCP with
  ``--tlsverify``, reached through Powerstrip's ``DOCKER_TLS_VERIFY``
  environment or its ``--docker-tlsverify --docker-cert-path`` options.

The certificates and the second dockerd are made once per test run (trial has
no setUpClass) and removed at exit.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.e2e.support import (
    CLIS,
    DOCKER_SOCK,
    IMAGE,
    LABEL,
    Powerstrip,
    SecondDockerd,
    certs,
    direct,
    free_port,
    require_daemon,
    run,
    tls_env,
    tls_verify_args,
)

#: An access-log line: ``#N METHOD /path -> status ...``.
REQUEST_LINE = re.compile(r"#[0-9a-f]+ [A-Z]+ /\S* -> \d{3}")
BIG = 8 * 1024 * 1024
DOCKER28 = CLIS["docker 28"]

_shared: dict = {}


def _teardown() -> None:
    daemon = _shared.pop("dockerd", None)
    if daemon is not None:
        daemon.stop()
    base = _shared.pop("base", None)
    if base is not None:
        shutil.rmtree(base, ignore_errors=True)


def request_lines(proxy: Powerstrip) -> list[str]:
    """The access-log lines Powerstrip wrote so far."""
    return [line for line in proxy.log_text().splitlines() if REQUEST_LINE.search(line)]


class TLSDockerd(SecondDockerd):
    """A second real dockerd, on a loopback TCP port only, with ``--tlsverify``."""

    def __init__(self, base: Path, server: Path, client: Path) -> None:
        self.port = free_port()
        super().__init__(
            base / "d",
            f"tcp://127.0.0.1:{self.port}",
            env=tls_env(client),
            args=tls_verify_args(server),
        )


def tls_dockerd() -> TLSDockerd:
    """The second dockerd, started once per run, with busybox loaded into it."""
    if "dockerd" not in _shared:
        c = certs()  # first: its clean-up (at exit) then runs after the daemon's
        _shared["base"] = Path(tempfile.mkdtemp(prefix="pstlsd-"))
        atexit.register(_teardown)
        daemon = TLSDockerd(_shared["base"], c["server"], c["client"])
        _shared["dockerd"] = daemon
        if daemon.direct("image", "inspect", IMAGE).returncode != 0:
            # Through Powerstrip (TLS upstream): itself a streamed upload.
            proxy = Powerstrip(extra=["--docker", daemon.host], env=tls_env(c["client"]))
            try:
                loaded = run([DOCKER28, "load"], host=proxy.url, input=direct("save", IMAGE).stdout, timeout=120)
            finally:
                proxy.stop()
            if daemon.direct("image", "inspect", IMAGE).returncode != 0:
                raise RuntimeError(f"could not load {IMAGE} into the TLS dockerd: {loaded.stderr!r}")
    return _shared["dockerd"]


class _Streams:
    """What both set-ups must pass through TLS untouched (for one CLI)."""

    cli: str
    host: str
    cli_env: dict[str, str]
    run_args = ("--network", "none")

    def docker(self, *args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return run([self.cli, *args], host=self.host, env=self.cli_env, input=input, timeout=timeout)

    def container(self, *cmd: str) -> str:
        """A labelled, detached container (removed after the test); its id."""
        result = self.docker("run", "-d", "--label", LABEL, *self.run_args, IMAGE, *cmd)
        self.assertEqual(result.returncode, 0, result.stderr)
        cid = result.stdout.decode().strip()
        self.addCleanup(self.docker, "rm", "-f", cid)
        return cid

    def test_stdin_eof_and_exit_code(self) -> None:
        result = self.docker(
            "run", "--rm", "-i", *self.run_args, IMAGE, "sh", "-c", "cat; echo after-eof; exit 3", input=b"data\n"
        )
        self.assertEqual((result.returncode, result.stdout), (3, b"data\nafter-eof\n"), result.stderr)

    def test_big_stdin_round_trip(self) -> None:
        data = os.urandom(BIG)
        result = self.docker("run", "--rm", "-i", *self.run_args, IMAGE, "cat", input=data, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(len(result.stdout), len(data))
        self.assertEqual(hashlib.sha256(result.stdout).hexdigest(), hashlib.sha256(data).hexdigest())

    def test_exec_stdin(self) -> None:
        cid = self.container("sleep", "300")
        data = os.urandom(BIG // 2)
        result = self.docker("exec", "-i", cid, "sh", "-c", "cat; echo exec-eof; exit 5", input=data, timeout=120)
        self.assertEqual(result.returncode, 5, result.stderr)
        self.assertEqual(hashlib.sha256(result.stdout).hexdigest(), hashlib.sha256(data + b"exec-eof\n").hexdigest())

    def test_logs_follow_streams(self) -> None:
        cid = self.container("sh", "-c", "for i in 1 2 3 4 5 6; do echo line-$i; sleep 0.4; done")
        env = {**os.environ, **self.cli_env, "DOCKER_HOST": self.host}
        env.pop("DOCKER_CONTEXT", None)
        proc = subprocess.Popen([self.cli, "logs", "-f", cid], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        watchdog = threading.Timer(60, proc.kill)
        watchdog.start()
        try:
            first = proc.stdout.readline()
            first_at = time.monotonic()
            rest = proc.stdout.read()
            done_at = time.monotonic()
            err = proc.stderr.read()
            proc.wait()
        finally:
            watchdog.cancel()
            proc.stdout.close()
            proc.stderr.close()
        self.assertEqual(proc.returncode, 0, err)
        self.assertEqual(first + rest, b"".join(b"line-%d\n" % i for i in range(1, 7)))
        # The lines came as the container printed them (~2.4 s), not all at its end.
        self.assertGreater(done_at - first_at, 1.0)


# -- A. Powerstrip's TLS listener ---------------------------------------------------------------------------------


def listener_proxy(mode: str = "--tlsverify") -> Powerstrip:
    server = certs()["server"]
    ca = ["--tlscacert", str(server / "ca.pem")] if mode == "--tlsverify" else []
    return Powerstrip(extra=[mode, *ca, "--tlscert", str(server / "cert.pem"), "--tlskey", str(server / "key.pem")])


class _Listener(_Streams):
    def setUp(self) -> None:
        require_daemon()
        self.proxy = listener_proxy()
        self.addCleanup(self.proxy.stop)
        self.host = self.proxy.url
        self.cli_env = tls_env(certs()["client"])

    def test_version(self) -> None:
        result = self.docker("version", "--format", "{{.Server.Version}}")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, direct("version", "--format", "{{.Server.Version}}").stdout)
        self.assertTrue(any("/version -> 200" in line for line in request_lines(self.proxy)))

    def test_client_certificate_from_another_ca_is_refused(self) -> None:
        for _ in range(2):
            result = run([self.cli, "version"], host=self.host, env=tls_env(certs()["wrong"]), timeout=60)
            self.assertNotEqual(result.returncode, 0)
            self.assertIn(b"tls: unknown certificate authority", result.stderr)
        self.assertEqual(request_lines(self.proxy), [], "refused in the handshake: no request was read")
        self.assertTrue(self.proxy.alive())
        # ...and Powerstrip keeps serving the right clients.
        self.assertEqual(self.docker("run", "--rm", *self.run_args, IMAGE, "echo", "still").stdout, b"still\n")
        self.assertNotEqual(request_lines(self.proxy), [])

    def test_client_without_certificate_is_refused(self) -> None:
        result = run([self.cli, "version"], host=self.host, env=tls_env(certs()["ca-only"]), timeout=60)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"tls: ", result.stderr)
        self.assertNotIn(b"Server:", result.stdout)
        self.assertEqual(request_lines(self.proxy), [])
        self.assertEqual(self.docker("version", "--format", "{{.Server.Version}}").returncode, 0)

    def test_plain_client_is_refused(self) -> None:
        result = run(
            [self.cli, "version"], host=self.host, env={"DOCKER_TLS_VERIFY": "", "DOCKER_CERT_PATH": ""}, timeout=60
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertNotIn(b"Server:", result.stdout)
        self.assertEqual(request_lines(self.proxy), [])
        self.assertEqual(self.docker("version", "--format", "{{.Server.Version}}").returncode, 0)


class ListenerDocker28(_Listener, TestCase):
    cli = CLIS["docker 28"]


class ListenerDocker2010(_Listener, TestCase):
    cli = CLIS["docker 20.10"]


class ListenerWithoutClientCertificate(TestCase):
    """No client certificate at all: the handshake fails, no HTTP answer."""

    def setUp(self) -> None:
        require_daemon()
        self.proxy = listener_proxy()
        self.addCleanup(self.proxy.stop)

    def test_curl_without_certificate(self) -> None:
        result = subprocess.run(
            ["curl", "-sk", "--max-time", "30", f"https://127.0.0.1:{self.proxy.port}/_ping"],
            capture_output=True,
            timeout=60,
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertEqual(result.stdout, b"")
        self.assert_nothing_read_and_still_serving()

    def test_ssl_socket_without_certificate(self) -> None:
        context = ssl.create_default_context(cafile=str(certs()["server"] / "ca.pem"))
        answer = b""
        with socket.create_connection(("127.0.0.1", self.proxy.port), timeout=30) as raw:
            try:
                with context.wrap_socket(raw, server_hostname="localhost") as s:
                    # With TLS 1.3 the client's handshake "completes" before the
                    # server has judged its (missing) certificate.
                    s.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
                    while chunk := s.recv(65536):
                        answer += chunk
            except (ssl.SSLError, ConnectionError) as e:
                self.assertIn("CERTIFICATE_REQUIRED", str(e).upper())
            else:
                self.fail(f"the handshake without a client certificate succeeded; answer {answer!r}")
        self.assertEqual(answer, b"")
        self.assert_nothing_read_and_still_serving()

    def test_plaintext_http_gets_no_answer(self) -> None:
        with socket.create_connection(("127.0.0.1", self.proxy.port), timeout=30) as s:
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
            data = b""
            try:
                while chunk := s.recv(65536):
                    data += chunk
            except ConnectionError:
                pass
        self.assertNotIn(b"HTTP/1.1 200", data)
        self.assertNotIn(b"OK", data)
        self.assert_nothing_read_and_still_serving()

    def assert_nothing_read_and_still_serving(self) -> None:
        self.assertEqual(request_lines(self.proxy), [])
        self.assertTrue(self.proxy.alive())
        result = run(
            [DOCKER28, "version", "--format", "{{.Server.Version}}"],
            host=self.proxy.url,
            env=tls_env(certs()["client"]),
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)


class ListenerTLSWithoutVerify(TestCase):
    """``--tls``: TLS without client certificates (the CLI's ``--tls``)."""

    def test_tls_only(self) -> None:
        require_daemon()
        proxy = listener_proxy("--tls")
        self.addCleanup(proxy.stop)
        # The server's certificate verified, no client certificate.
        result = run(
            [DOCKER28, "version", "--format", "{{.Server.Version}}"],
            host=proxy.url,
            env=tls_env(certs()["ca-only"]),
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, direct("version", "--format", "{{.Server.Version}}").stdout)
        plain = run([DOCKER28, "version", "--format", "{{.Server.Version}}"], host=proxy.url, timeout=60)
        self.assertNotEqual(plain.returncode, 0, "plain HTTP must not be answered on a TLS listener")


# -- B. TLS towards dockerd ---------------------------------------------------------------------------------------


class _Upstream(_Streams):
    cli_env: dict[str, str] = {}

    def setUp(self) -> None:
        require_daemon()
        self.daemon = tls_dockerd()
        self.client_dir = certs()["client"]
        # The environment path: DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, as for the docker CLI.
        self.proxy = Powerstrip(extra=["--docker", self.daemon.host], env=tls_env(self.client_dir))
        self.addCleanup(self.proxy.stop)
        self.host = self.proxy.url

    def assert_second_daemon(self, host: str) -> None:
        result = run([self.cli, "info", "--format", "{{.DockerRootDir}}"], host=host, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.decode().strip(), str(self.daemon.data_root))

    def test_version_is_the_tls_daemon(self) -> None:
        result = self.docker("version", "--format", "{{.Server.Version}}")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotEqual(result.stdout.strip(), b"")
        self.assert_second_daemon(self.host)
        self.assertIn("(TLS)", self.proxy.log_text())

    def test_load_streams_through_tls(self) -> None:
        tag = f"ps-e2e-tls-{uuid.uuid4().hex[:8]}:latest"
        self.addCleanup(self.daemon.direct, "rmi", tag)
        saved = run([DOCKER28, "-H", DOCKER_SOCK, "save", IMAGE], timeout=120).stdout
        result = self.docker("load", input=saved, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"Loaded image: {IMAGE}".encode(), result.stdout)
        self.assertEqual(self.docker("tag", IMAGE, tag).returncode, 0)
        self.assertEqual(self.daemon.direct("image", "inspect", tag).returncode, 0)

    def test_options_instead_of_environment(self) -> None:
        # The environment explicitly empty: only the options turn TLS on.
        proxy = Powerstrip(
            extra=["--docker", self.daemon.host, "--docker-tlsverify", "--docker-cert-path", str(self.client_dir)],
            env={"DOCKER_TLS_VERIFY": "", "DOCKER_CERT_PATH": ""},
        )
        self.addCleanup(proxy.stop)
        self.assert_second_daemon(proxy.url)
        result = run(
            [self.cli, "run", "--rm", "-i", "--network", "none", IMAGE, "sh", "-c", "cat; exit 4"],
            host=proxy.url,
            input=b"via options\n",
            timeout=60,
        )
        self.assertEqual((result.returncode, result.stdout), (4, b"via options\n"), result.stderr)

    def test_client_certificate_from_another_ca(self) -> None:
        proxy = Powerstrip(
            extra=["--docker", self.daemon.host, "--docker-tlsverify", "--docker-cert-path", str(certs()["wrong"])]
        )
        self.addCleanup(proxy.stop)
        for args in (["version"], ["ps"]):
            result = run([self.cli, *args], host=proxy.url, timeout=60)
            self.assertNotEqual(result.returncode, 0)
            self.assertIn(b"Error response from daemon: powerstrip: ", result.stderr)
            self.assertIn(self.daemon.host.encode(), result.stderr)
            self.assertTrue(proxy.alive())


class UpstreamDocker28(_Upstream, TestCase):
    cli = CLIS["docker 28"]


class UpstreamDocker2010(_Upstream, TestCase):
    cli = CLIS["docker 20.10"]
