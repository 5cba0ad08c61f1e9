"""The admin listener of a real Powerstrip in front of the real dockerd: the
warning for one other hosts can reach, TLS with client certificates, the
shared ``/readyz`` check, and ``powerstrip healthcheck`` against both listeners."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from twisted.trial.unittest import TestCase

from powerstrip.ops.exposure import in_container
from powerstrip.sdk.testing import PowerstripProcess, free_port, wait_for_port
from tests.e2e.support import CA, DOCKER_SOCK, require_daemon


def healthcheck(*args: str) -> subprocess.CompletedProcess:
    """``powerstrip healthcheck ARGS`` as a command."""
    return subprocess.run(
        [sys.executable, "-m", "powerstrip.ops.cli", "healthcheck", *args], capture_output=True, text=True, timeout=30
    )


class AdminE2ETests(TestCase):
    def setUp(self) -> None:
        require_daemon()

    def test_open_admin_listener_warns_and_readyz_is_shared(self) -> None:
        port = free_port()
        with PowerstripProcess(docker=DOCKER_SOCK, args=["--admin", f"tcp:{port}"]) as proxy:
            wait_for_port(port, proxy.proc, "admin listener")
            answers = []
            for _ in range(3):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                    answers.append(json.loads(r.read()))
            log = proxy.log_text()
            api = healthcheck("--listen", f"tcp:{proxy.port}:interface=127.0.0.1")
            admin = healthcheck("--admin", f"tcp:{port}")
        serves = "reads the routes, adapter names and metrics (/metrics) and the adapters file's path (/readyz)"
        if in_container():  # as CI may well be: the warning says what to check instead
            self.assertIn(
                f"WARNING: --admin tcp:{port} accepts connections from any address that reaches this "
                f"container, without TLS; anyone who can connect {serves}. Running in a container",
                log,
            )
        else:
            self.assertIn(
                f"WARNING: --admin tcp:{port} accepts connections from other hosts without TLS. Anyone "
                f"who can reach it {serves}.",
                log,
            )
        self.assertEqual({a["docker"] for a in answers}, {"ok"})
        ages = [a["docker_checked_seconds_ago"] for a in answers]
        # Three probes in quick succession: the first made the check, the others reused it.
        # (A check's age counts from when it was asked: the first is as old as its own /_ping took.)
        self.assertTrue(ages[0] <= ages[1] <= ages[2] < 2 and ages[2] > ages[0], answers)
        self.assertEqual(api.returncode, 0, api.stderr)
        self.assertIn("/_ping answered 200 OK", api.stdout)
        self.assertEqual(admin.returncode, 0, admin.stderr)
        self.assertIn("/readyz answered 200", admin.stdout)

    def test_admin_tls_with_client_certificates(self) -> None:
        ca = CA()
        base = Path(self.mktemp())
        server = ca.write(base / "server", "localhost", server=True)
        client = ca.write(base / "client", "prometheus", server=False)
        port = free_port()
        args = [
            "--admin",
            f"tcp:{port}:interface=0.0.0.0",
            "--admin-tlscert",
            str(server / "cert.pem"),
            "--admin-tlskey",
            str(server / "key.pem"),
            "--admin-tlscacert",
            str(server / "ca.pem"),
        ]
        with PowerstripProcess(docker=DOCKER_SOCK, args=args) as proxy:
            wait_for_port(port, proxy.proc, "admin listener")
            context = ssl.create_default_context(cafile=str(client / "ca.pem"))
            context.load_cert_chain(str(client / "cert.pem"), str(client / "key.pem"))
            with urllib.request.urlopen(f"https://localhost:{port}/healthz", context=context, timeout=5) as r:
                self.assertEqual(json.loads(r.read()), {"status": "alive"})
            anonymous = ssl.create_default_context(cafile=str(client / "ca.pem"))
            started = time.monotonic()
            with self.assertRaises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
                with urllib.request.urlopen(f"https://localhost:{port}/metrics", context=anonymous, timeout=5) as r:
                    r.read()
            self.assertLess(time.monotonic() - started, 5)
            plain = urllib.request.Request(f"http://127.0.0.1:{port}/healthz")
            with self.assertRaises((ConnectionError, urllib.error.URLError, http_error())):
                urllib.request.urlopen(plain, timeout=5).read()
            log = proxy.log_text()
        self.assertNotIn("WARNING: --admin", log)  # client certificates: other hosts are no concern


def http_error() -> type:
    import http.client

    return http.client.HTTPException
