"""Client-side limits against the real thing: a short ``--client-timeout`` and
``--max-header-size`` with the docker CLIs, docker-py and a real dockerd.

Quiet streams (``logs -f``, ``events``, an attach waiting for input) must
outlive the timeout; idle keep-alive connections are closed and clients
carry on; an oversized head is a readable 413 and reaches nothing.
"""

from __future__ import annotations

import subprocess
import time
import uuid

from twisted.trial.unittest import TestCase

from tests.e2e.support import CLIS, IMAGE, LABEL, Powerstrip, direct, require_daemon, run

TIMEOUT = "1"  # --client-timeout, seconds


class _QuietStreams:
    cli: str

    def setUp(self) -> None:
        require_daemon()
        self.proxy = Powerstrip(extra=["--client-timeout", TIMEOUT])
        self.addCleanup(self.proxy.stop)

    def docker(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return run([self.cli, *args], host=self.proxy.url, **kw)

    def test_logs_follow_quiet_for_three_timeouts(self) -> None:
        name = f"ps-quiet-{uuid.uuid4().hex[:8]}"
        self.addCleanup(direct, "rm", "-f", name)
        started = direct(
            "run", "-d", "--label", LABEL, "--name", name, IMAGE, "sh", "-c", "echo first; sleep 3; echo second"
        )
        self.assertEqual(started.returncode, 0, started.stderr)
        logs = self.docker("logs", "-f", name, timeout=30)
        self.assertEqual((logs.returncode, logs.stdout), (0, b"first\nsecond\n"), logs.stderr)

    def test_run_with_stdin_arriving_late(self) -> None:
        """An attached stream with nothing to say for 3 s, then input, then EOF."""
        feeder = subprocess.Popen(["sh", "-c", "sleep 3; echo late"], stdout=subprocess.PIPE)
        try:
            out = subprocess.run(
                [self.cli, "run", "--rm", "-i", "--label", LABEL, IMAGE, "cat"],
                stdin=feeder.stdout,
                capture_output=True,
                timeout=60,
                env={"PATH": "/usr/bin:/bin", "DOCKER_HOST": self.proxy.url},
            )
        finally:
            feeder.wait()
        self.assertEqual((out.returncode, out.stdout), (0, b"late\n"), out.stderr)

    def test_events_quiet_then_one(self) -> None:
        since = str(int(time.time()))
        name = f"ps-ev-{uuid.uuid4().hex[:8]}"
        self.addCleanup(direct, "volume", "rm", "-f", name)
        events = subprocess.Popen(
            [
                self.cli,
                "events",
                "--since",
                since,
                "--filter",
                "type=volume",
                "--filter",
                f"volume={name}",
                "--format",
                "{{.Action}}",
            ],
            stdout=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin", "DOCKER_HOST": self.proxy.url},
        )
        self.addCleanup(events.kill)
        time.sleep(3)  # three client timeouts of silence
        self.assertIsNone(events.poll(), "the quiet event stream was cut")
        direct("volume", "create", name)
        self.assertEqual(events.stdout.readline(), b"create\n")

    def test_idle_keep_alive_then_more_commands(self) -> None:
        self.assertEqual(self.docker("version").returncode, 0)
        time.sleep(2)
        later = self.docker("ps", "-q", "--filter", "label=nonexistent")
        self.assertEqual(later.returncode, 0, later.stderr)


class QuietStreamsDocker28(_QuietStreams, TestCase):
    cli = CLIS["docker 28"]


class QuietStreamsDocker2010(_QuietStreams, TestCase):
    cli = CLIS["docker 20.10"]


class DockerPyIdle(TestCase):
    def test_pooled_connection_closed_while_idle(self) -> None:
        """docker-py keeps connections in a pool; one Powerstrip closed as idle is replaced, not an error."""
        require_daemon()
        import docker

        proxy = Powerstrip(extra=["--client-timeout", TIMEOUT])
        self.addCleanup(proxy.stop)
        client = docker.DockerClient(base_url=proxy.url, timeout=60)
        self.addCleanup(client.close)
        for _ in range(3):
            self.assertTrue(client.ping())
            client.containers.list(filters={"label": "nonexistent"})
            time.sleep(1.5)
        self.assertIn("closing an idle connection", proxy.log_text())


class HeaderSize(TestCase):
    def test_oversized_head_is_a_readable_error(self) -> None:
        require_daemon()
        proxy = Powerstrip(extra=["--max-header-size", "4k"])
        self.addCleanup(proxy.stop)
        import docker

        client = docker.APIClient(base_url=proxy.url, timeout=30)
        self.addCleanup(client.close)
        resp = client._get(client._url("/info"), headers={"X-Big": "x" * 8192})
        self.assertEqual(resp.status_code, 431)
        self.assertIn("request head larger than 4096 bytes", resp.json()["message"])
        self.assertNotIn("/info", proxy.log_text())
        self.assertTrue(client.ping())

    def test_default_allows_large_registry_credentials(self) -> None:
        """``X-Registry-Config`` of a build with many registries: 200 KiB in one header line."""
        require_daemon()
        import base64
        import json

        import docker

        proxy = Powerstrip()
        self.addCleanup(proxy.stop)
        client = docker.APIClient(base_url=proxy.url, timeout=30)
        self.addCleanup(client.close)
        auths = {f"registry{i}.example.com": {"username": "u", "password": "p" * 200} for i in range(800)}
        config = base64.urlsafe_b64encode(json.dumps(auths).encode()).decode()
        self.assertGreater(len(config), 200_000)
        resp = client._get(client._url("/info"), headers={"X-Registry-Config": config})
        self.assertEqual(resp.status_code, 200, resp.text[:200])
