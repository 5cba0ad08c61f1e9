"""An adapter in POSIX shell behind socat (examples/policy_adapter.sh): no SDK, no Python.

It refuses ``--privileged`` and ``--network host`` on container create and lets
everything else through unchanged; both docker CLIs, a real dockerd.
"""

from __future__ import annotations

import subprocess
import uuid

from twisted.trial.unittest import TestCase

from tests.e2e.support import (
    CLIS,
    IMAGE,
    LABEL,
    Powerstrip,
    direct,
    require_daemon,
    run,
    shell_policy_adapter,
)


class _ShellPolicy:
    cli: str

    def setUp(self) -> None:
        require_daemon()
        url = shell_policy_adapter(self)
        self.proxy = Powerstrip(
            f'version: 1\nendpoints:\n  "POST /*/containers/create":\n    pre: [policy]\nadapters:\n  policy: {url}\n'
        )
        self.addCleanup(self.proxy.stop)

    def docker_run(self, *args: str) -> subprocess.CompletedProcess:
        name = f"ps-policy-{uuid.uuid4().hex[:8]}"
        self.addCleanup(direct, "rm", "-f", name)
        self.name = name
        return run([self.cli, "run", "--rm", "--name", name, "--label", LABEL, *args], host=self.proxy.url)

    def assertRefused(self, result: subprocess.CompletedProcess, message: bytes) -> None:
        self.assertEqual(result.returncode, 125, result.stderr)
        self.assertIn(b"Error response from daemon: " + message, result.stderr)
        self.assertNotEqual(direct("inspect", self.name).returncode, 0, "a refused container was created")

    def test_ordinary_container_runs(self) -> None:
        result = self.docker_run(IMAGE, "echo", "allowed")
        self.assertEqual((result.returncode, result.stdout), (0, b"allowed\n"), result.stderr)

    def test_privileged_is_refused(self) -> None:
        self.assertRefused(
            self.docker_run("--privileged", IMAGE, "true"), b"policy: privileged containers are not allowed here"
        )

    def test_host_network_is_refused(self) -> None:
        self.assertRefused(
            self.docker_run("--network", "host", IMAGE, "true"), b"policy: the host network is not allowed here"
        )


class ShellPolicyDocker28(_ShellPolicy, TestCase):
    cli = CLIS["docker 28"]


class ShellPolicyDocker2010(_ShellPolicy, TestCase):
    cli = CLIS["docker 20.10"]
