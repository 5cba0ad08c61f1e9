"""``powerstrip healthcheck`` against stand-in listeners (standard-library servers in threads)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socketserver
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from twisted.trial.unittest import TestCase

from powerstrip.ops.cli import main
from powerstrip.ops.healthcheck import target
from tests.support import unused_port


def serve(test: TestCase, status: int, body: bytes, unix: str | None = None) -> Any:
    """A server answering every GET with ``status`` and ``body``; records the paths asked."""
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    if unix:

        class UnixServer(socketserver.UnixStreamServer):
            def get_request(self) -> Any:
                conn, _ = super().get_request()
                return conn, ("local", 0)

        server: Any = UnixServer(unix, Handler)
    else:
        server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    test.addCleanup(server.server_close)
    test.addCleanup(server.shutdown)
    server.paths = paths
    return server


def run(*argv: str, env: dict | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        saved = dict(os.environ)
        os.environ.update(env or {})
        try:
            status = main(["healthcheck", *argv])
        finally:
            os.environ.clear()
            os.environ.update(saved)
    return status, out.getvalue(), err.getvalue()


class HealthcheckTests(TestCase):
    def test_healthy_listener(self) -> None:
        server = serve(self, 200, b"OK")
        port = server.server_address[1]
        status, out, err = run("--listen", f"tcp:{port}:interface=0.0.0.0")
        self.assertEqual((status, err), (0, ""))
        self.assertRegex(out, rf"^powerstrip healthcheck: OK: http://127.0.0.1:{port}/_ping answered 200 OK in ")
        self.assertEqual(server.paths, ["/_ping"])

    def test_the_listener_comes_from_powerstrip_listen(self) -> None:
        server = serve(self, 200, b"OK")
        port = server.server_address[1]
        status, out, _ = run(env={"POWERSTRIP_LISTEN": f"tcp:{port}:interface=0.0.0.0 unix:/nowhere.sock"})
        self.assertEqual(status, 0, out)

    def test_docker_unreachable_behind_it(self) -> None:
        message = b'{"message": "powerstrip: cannot reach Docker at unix:///var/run/docker.sock: refused"}'
        server = serve(self, 502, message)
        status, out, err = run("--listen", f"tcp:{server.server_address[1]}")
        self.assertEqual((status, out), (1, ""))
        self.assertIn("answered 502: powerstrip: cannot reach Docker at unix:///var/run/docker.sock", err)

    def test_nothing_listening(self) -> None:
        port = unused_port()
        status, out, err = run("--listen", f"tcp:{port}:interface=127.0.0.1", "--timeout", "1s")
        self.assertEqual((status, out), (1, ""))
        self.assertIn(f"FAIL: tcp:{port}:interface=127.0.0.1 (/_ping): ", err)
        self.assertIn("Connection refused", err)

    def test_a_unix_socket_listener(self) -> None:
        path = os.path.join(tempfile.mkdtemp(), "p.sock")
        serve(self, 200, b"OK", unix=path)
        status, out, _ = run("--listen", f"unix:{path}:mode=660")
        self.assertEqual(status, 0)
        self.assertIn(f"unix://{path}/_ping answered 200 OK", out)

    def test_admin_readyz(self) -> None:
        server = serve(self, 503, json.dumps({"docker": "cannot reach Docker at tcp://x:1: refused"}).encode())
        status, _, err = run("--admin", f"tcp:{server.server_address[1]}")
        self.assertEqual(status, 1)
        self.assertIn("/readyz answered 503: docker: cannot reach Docker at tcp://x:1: refused", err)
        self.assertEqual(server.paths, ["/readyz"])

    def test_endpoints(self) -> None:
        self.assertEqual(target("tcp:2375"), ("tcp", "127.0.0.1", 2375))
        self.assertEqual(target("tcp:port=9375:interface=10.0.0.2"), ("tcp", "10.0.0.2", 9375))
        self.assertEqual(target("tcp6:2375:interface=\\:\\:"), ("tcp", "::1", 2375))
        self.assertEqual(target("unix:/run/p.sock:mode=660"), ("unix", "/run/p.sock", None))
        with self.assertRaises(ValueError):
            target("ssl:2376")
        status, _, err = run("--listen", "ssl:2376")
        self.assertEqual(status, 1)
        self.assertIn("give a tcp: or unix: endpoint", err)


class ConsoleTests(TestCase):
    def test_healthcheck_starts_without_twisted(self) -> None:
        import subprocess
        import sys

        code = (
            "import sys; sys.argv = ['powerstrip', 'healthcheck', '--listen', 'tcp:1', '--timeout', '1s']\n"
            "from powerstrip.ops.console import console\n"
            "status = console()\n"
            "print(status, 'twisted' in sys.modules)"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
        self.assertEqual(result.stdout.split(), ["1", "False"], result.stderr)
        self.assertIn("powerstrip healthcheck: FAIL: tcp:1 (/_ping): ", result.stderr)

    def test_version(self) -> None:
        from powerstrip import __version__

        out = io.StringIO()
        with contextlib.redirect_stdout(out), self.assertRaises(SystemExit) as exit_:
            main(["--version"])
        self.assertEqual((exit_.exception.code, out.getvalue()), (0, f"powerstrip {__version__}\n"))
