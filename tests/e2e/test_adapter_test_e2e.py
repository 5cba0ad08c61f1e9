"""``powerstrip adapter-test`` as users run it: the real command in a child
process, against the example adapters running as real processes.

- ``examples/label_adapter.py`` (Python, stdlib only), over TCP and over a
  unix socket: every sample call must come out valid.
- ``examples/policy_adapter.sh`` (POSIX shell behind socat), a pre-hook-only
  adapter: its pre-hook answers must come out valid (``--only pre-hook``),
  while its echo of a post-hook call is not a post-hook reply (exit 1).
- ``tests/e2e/http10_adapter.py`` (``http.server`` as it comes: HTTP/1.0,
  closing the connection after each reply): every call valid and made once,
  no "Starting factory" lines, through adapter-test and through the proxy.

No dockerd is needed: adapter-test talks only to the adapter (the proxy test
needs one).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from twisted.trial.unittest import TestCase

from powerstrip.sdk.testing import PowerstripProcess, free_port, wait_for_port
from tests.e2e.support import DOCKER_SOCK, REPO, LabelAdapter, require_daemon, shell_policy_adapter


def adapter_test(*args: str) -> subprocess.CompletedProcess:
    """Run ``powerstrip adapter-test ARGS`` from this checkout; text output."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "powerstrip.ops.cli", "adapter-test", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
    )


class LabelAdapterTests(TestCase):
    def check_all_valid(self, adapter: LabelAdapter) -> None:
        result = adapter_test(adapter.url, "--timeout", "10s")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual(lines[0], f"{adapter.url}: 8 protocol-1 sample call(s), timeout 10s")
        self.assertEqual([line.split(None, 4)[4] for line in lines[1:-1]], ["valid"] * 8)
        self.assertEqual(
            lines[-1], "8 call(s): 8 valid, 0 refused, 0 invalid, 0 fault(s): the adapter speaks protocol 1"
        )
        self.assertEqual([p["Type"] for p in adapter.payloads()], ["pre-hook"] * 3 + ["post-hook"] * 5)

    def test_over_tcp(self) -> None:
        adapter = LabelAdapter()
        self.addCleanup(adapter.stop)
        self.check_all_valid(adapter)

    def test_over_a_unix_socket(self) -> None:
        adapter = LabelAdapter(unix=True)
        self.addCleanup(adapter.stop)
        self.check_all_valid(adapter)


class ShellPolicyAdapterTests(TestCase):
    def setUp(self) -> None:
        self.url = shell_policy_adapter(self)

    def test_its_pre_hook_answers_are_valid(self) -> None:
        result = adapter_test(self.url, "--only", "pre-hook")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual([line.split(None, 4)[4] for line in lines[1:-1]], ["valid"] * 3)
        self.assertEqual(
            lines[-1], "3 call(s): 3 valid, 0 refused, 0 invalid, 0 fault(s): the adapter speaks protocol 1"
        )

    def test_it_is_no_post_hook(self) -> None:
        result = adapter_test(self.url)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual(
            [line.split(None, 4)[4] for line in lines[1:-1]],
            ["valid"] * 3 + ["INVALID: (root): 'ModifiedServerResponse' is required"] * 5,
        )
        self.assertTrue(lines[-1].endswith("NOT protocol 1"), lines[-1])


class Http10AdapterTests(TestCase):
    """A standard-library adapter that closes the connection after each reply."""

    def setUp(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="http10-adapter-"))
        self.calls = self.dir / "calls.jsonl"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/"
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "e2e" / "http10_adapter.py"), str(port), str(self.calls)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def stop() -> None:
            proc.terminate()
            proc.wait(10)

        self.addCleanup(stop)
        wait_for_port(port, proc, "http.server adapter")

    def received(self) -> list[str]:
        """The ``Type`` of every call the adapter got, in order."""
        if not self.calls.exists():
            return []
        return [json.loads(line)["Type"] for line in self.calls.read_text().splitlines()]

    def test_adapter_test_finds_it_valid(self) -> None:
        result = adapter_test(self.url)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual([line.split(None, 4)[4] for line in lines[1:-1]], ["valid"] * 8, result.stdout)
        self.assertNotIn("factory", (result.stdout + result.stderr).lower())
        # Each call reached the adapter exactly once: the retry is only for
        # requests the adapter never read.
        self.assertEqual(self.received(), ["pre-hook"] * 3 + ["post-hook"] * 5)

    def test_through_the_proxy(self) -> None:
        require_daemon()
        config = {
            "endpoints": {"GET /*/containers/json": {"pre": ["h10"], "post": ["h10"]}},
            "adapters": {"h10": self.url},
        }
        with PowerstripProcess(config, docker=DOCKER_SOCK) as proxy:
            for _ in range(25):  # back to back, as `watch docker ps` would not even manage
                status, _, body = proxy.request("GET", "/v1.41/containers/json")
                self.assertEqual(status, 200, body)
            log = proxy.log_text()
        self.assertEqual(self.received(), ["pre-hook", "post-hook"] * 25)
        # (The listener's own "Starting factory" line at start-up is twistd's.)
        self.assertNotIn("_HTTP11ClientFactory", log)
        self.assertNotIn("Stopping factory", log)


class ClosingServer:
    """Accepts connections and closes each at once, unanswered; counts them."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.recv(65536)
            conn.close()


class UnansweredCloseTests(TestCase):
    def test_a_new_connection_closed_unanswered_is_a_fault_not_retried(self) -> None:
        server = ClosingServer()
        self.addCleanup(server.sock.close)
        result = adapter_test(server.url, "--only", "pre-hook")
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        verdicts = [line.split(None, 4)[4] for line in result.stdout.splitlines()[1:-1]]
        self.assertEqual(len(verdicts), 3, result.stdout)
        for verdict in verdicts:
            self.assertTrue(verdict.startswith("FAULT: connection lost before a reply"), verdict)
        self.assertEqual(server.accepted, 3)  # one connection per call: nothing sent twice
