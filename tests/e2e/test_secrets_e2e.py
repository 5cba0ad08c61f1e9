"""Credentials through Powerstrip at ``-v`` with a ``"* *"`` hook: never logged, never shown, never broken.

A protocol 1 and a protocol 2 (headers included) :class:`~powerstrip.sdk.testing.RecordingAdapter`
echo every pre- and post-hook call unchanged. Through Powerstrip:

- ``docker login`` (both CLIs), ``push`` and ``pull`` against a real registry with htpasswd
  auth (the registry of :func:`tests.e2e.support.registry`): the password travels in the ``POST /auth``
  body and in ``X-Registry-Auth`` headers;
- on a swarm-mode :class:`~tests.e2e.support.SecondDockerd`: ``swarm init``, ``swarm
  join-token``, ``swarm update --autolock`` and ``swarm unlock-key``, ``secret create`` and
  ``config create``.

Then none of the secrets is in Powerstrip's log or in any hook payload, and every operation
worked with the real values: the login was accepted, pushing and pulling needed it, the
join token and unlock key the CLI printed are the daemon's, and the config's data (which
dockerd gives back, unlike a secret's) is what was sent.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from twisted.trial.unittest import TestCase

from powerstrip.sdk.testing import PowerstripProcess, RecordingAdapter
from tests.e2e.support import (
    CLIS,
    PASSWORD,
    REPO,
    USER,
    SecondDockerd,
    direct,
    ensure_busybox_image,
    registry,
    require_daemon,
)

HOOKS = """\
version: 1
endpoints:
  "* *": {{pre: [v1, v2], post: [v1, v2]}}
adapters:
  v1: {v1}
  v2: {{url: "{v2}", protocol: 2}}
"""


class SecretsTestCase(TestCase):
    def setUp(self) -> None:
        require_daemon()
        self.v1, self.v2 = RecordingAdapter(), RecordingAdapter()
        for adapter in (self.v1, self.v2):
            self.addCleanup(adapter.stop)
        self.config = Path(tempfile.mkdtemp(prefix="ps-docker-config-"))  # no credential in ~/.docker
        self.addCleanup(shutil.rmtree, self.config, True)

    def powerstrip(self, docker: str) -> PowerstripProcess:
        proxy = PowerstripProcess(
            HOOKS.format(v1=self.v1.url, v2=self.v2.url),
            docker=docker,
            args=["-v"],
            env={"PYTHONPATH": str(REPO)},
            cwd=str(REPO),
        )
        self.addCleanup(proxy.stop)
        self.addCleanup(lambda: self.assertTrue(proxy.alive(), "powerstrip died:\n" + proxy.log_text()))
        return proxy

    def docker(
        self,
        proxy: PowerstripProcess,
        *args: str,
        cli: str = CLIS["docker 28"],
        input: bytes | None = None,
        ok: bool = True,
    ) -> subprocess.CompletedProcess:
        env = {**os.environ, "DOCKER_HOST": proxy.url, "DOCKER_CONFIG": str(self.config)}
        env.pop("DOCKER_CONTEXT", None)
        result = subprocess.run([cli, *args], input=input, capture_output=True, timeout=180, env=env)
        if ok:
            self.assertEqual(result.returncode, 0, f"{cli} {' '.join(args)}: {result.stderr.decode()}")
        return result

    def assertNowhere(self, proxy: PowerstripProcess, secrets: list[str]) -> None:
        """None of ``secrets`` in Powerstrip's log or a hook payload; every credential header redacted."""
        log = proxy.log_text()
        calls = json.dumps(self.v1.calls + self.v2.calls)
        self.assertIn(" sent {", log)  # -v did log the payloads
        for secret in secrets:
            self.assertNotIn(secret, log)
            self.assertNotIn(secret, calls)
        for call in self.v2.calls:
            for name, values in call["ClientRequest"]["Headers"].items():
                if name.lower() in ("x-registry-auth", "x-registry-config", "authorization"):
                    self.assertEqual(values, ["<redacted>"] * len(values), name)
        return log

    def test_login_push_pull(self) -> None:
        reg = registry()
        proxy = self.powerstrip("unix:///var/run/docker.sock")
        ensure_busybox_image()
        for cli in CLIS.values():
            wrong = self.docker(
                proxy, "login", "-u", USER, "--password-stdin", reg.host, cli=cli, input=b"not-the-password", ok=False
            )
            self.assertNotEqual(wrong.returncode, 0)  # the registry does check
            done = self.docker(
                proxy, "login", "-u", USER, "--password-stdin", reg.host, cli=cli, input=PASSWORD.encode()
            )
            self.assertIn(b"Login Succeeded", done.stdout)
        name = f"{reg.host}/e2e-secrets/{uuid.uuid4().hex[:10]}:1"
        self.assertEqual(direct("tag", "busybox:latest", name).returncode, 0)
        self.addCleanup(direct, "rmi", "-f", name)
        self.docker(proxy, "push", name)  # needs the credentials, as sent
        self.assertEqual(direct("rmi", name).returncode, 0)
        self.docker(proxy, "pull", name)
        self.assertEqual(direct("image", "inspect", name).returncode, 0)
        auths = {
            p["ClientRequest"]["Request"].split("?")[0]
            for p in self.v2.calls
            if "X-Registry-Auth" in p["ClientRequest"]["Headers"]
        }
        self.assertTrue(any(path.endswith("/push") for path in auths), auths)  # the header was there, redacted
        logins = [p for p in self.v1.calls if p["ClientRequest"]["Request"].endswith("/auth")]
        self.assertEqual(len(logins), 8)  # 2 CLIs x 2 logins x pre and post
        self.assertEqual(json.loads(logins[0]["ClientRequest"]["Body"])["password"], "<redacted>")
        self.assertEqual(json.loads(logins[0]["ClientRequest"]["Body"])["username"], USER)
        header = base64.urlsafe_b64encode(json.dumps({"username": USER, "password": PASSWORD}).encode()).decode()
        self.assertNowhere(proxy, [PASSWORD, "not-the-password", header[:20]])

    def test_swarm_secrets_and_configs(self) -> None:
        root = Path(tempfile.mkdtemp(prefix="ps-sw-", dir="/tmp"))
        daemon = SecondDockerd(root / "d", f"unix://{root}/d.sock")
        self.addCleanup(daemon.stop)
        proxy = self.powerstrip(daemon.host)
        self.docker(proxy, "swarm", "init", "--advertise-addr", "127.0.0.1")
        worker = self.docker(proxy, "swarm", "join-token", "-q", "worker").stdout.decode().strip()
        manager = self.docker(proxy, "swarm", "join-token", "-q", "manager").stdout.decode().strip()
        real = daemon.direct("swarm", "join-token", "-q", "worker").stdout.decode().strip()
        self.assertEqual(worker, real)  # the client got the daemon's token, not the placeholder
        self.assertTrue(worker.startswith("SWMTKN-1-"), worker)
        self.docker(proxy, "swarm", "update", "--autolock=true")
        key = self.docker(proxy, "swarm", "unlock-key", "-q").stdout.decode().strip()
        self.assertEqual(key, daemon.direct("swarm", "unlock-key", "-q").stdout.decode().strip())
        self.assertTrue(key.startswith("SWMKEY-1-"), key)

        secret, config = f"secret-{uuid.uuid4().hex}", f"config-{uuid.uuid4().hex}"
        for cli, n in ((CLIS["docker 28"], 1), (CLIS["docker 20.10"], 2)):
            self.docker(proxy, "secret", "create", f"s{n}", "-", cli=cli, input=secret.encode())
            self.docker(proxy, "config", "create", f"c{n}", "-", cli=cli, input=config.encode())
            self.assertEqual(daemon.direct("secret", "inspect", f"s{n}").returncode, 0)
            # dockerd gives a config's data back: what it stored is what the client sent.
            shown = self.docker(proxy, "config", "inspect", "--format", "{{json .Spec.Data}}", f"c{n}")
            self.assertEqual(base64.b64decode(json.loads(shown.stdout)), config.encode())
            stored = daemon.direct("config", "inspect", "--format", "{{json .Spec.Data}}", f"c{n}")
            self.assertEqual(base64.b64decode(json.loads(stored.stdout)), config.encode())
        creates = [
            p
            for p in self.v1.calls
            if p["Type"] == "pre-hook" and p["ClientRequest"]["Request"].endswith("/secrets/create")
        ]
        self.assertEqual(len(creates), 2)
        self.assertEqual(json.loads(creates[0]["ClientRequest"]["Body"])["Data"], "<redacted>")
        self.assertEqual(json.loads(creates[0]["ClientRequest"]["Body"])["Name"], "s1")
        swarm = [
            p
            for p in self.v1.calls
            if p["Type"] == "post-hook" and p["ClientRequest"]["Request"].split("?")[0].endswith("/swarm")
        ]
        self.assertTrue(swarm)
        self.assertEqual(
            json.loads(swarm[0]["ServerResponse"]["Body"])["JoinTokens"],
            {"Worker": "<redacted>", "Manager": "<redacted>"},
        )
        self.assertNowhere(
            proxy,
            [
                worker,
                manager,
                key,
                secret,
                config,
                base64.b64encode(secret.encode()).decode(),
                base64.b64encode(config.encode()).decode(),
            ],
        )
