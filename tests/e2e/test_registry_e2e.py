"""A real registry through Powerstrip: ``docker login``, ``push``, ``pull``, ``logout``.

The registry is Debian's ``docker-registry`` (the CNCF distribution registry 2.8), started by
the test on loopback (dockerd treats loopback registries as insecure-allowed, so no TLS is
needed) with htpasswd (bcrypt) authentication. dockerd reaches it through a small throttling
TCP relay, so that a push or pull of a few MiB takes a couple of seconds and the tests can
see the progress stream arrive as it happens, not in one piece at the end.

Powerstrip has pre-hooks on ``POST /*/images/create`` (pull) and ``POST /*/images/*/push``:
``policy`` refuses images from any other registry, with a message the CLI prints, and
``audit`` (protocol 2) records the calls, headers included: the registry credentials travel
in the ``X-Registry-Auth`` header. Each test has a DOCKER_CONFIG of its own, so no
credential lands in ``~/.docker``.
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
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.trial.unittest import TestCase

from powerstrip.sdk.testing import RecordingAdapter
from tests.e2e.support import CLIS, PASSWORD, USER, Powerstrip, direct, registry, require_daemon, timed_lines

#: The size of the layer pushed and pulled: 3 MiB take about 1.5 s through the registry's relay.
LAYER = 3 * 1024 * 1024


def policy_for(host: str):
    """A pre-hook that lets through only images of ``host``."""

    def reply(payload: dict) -> tuple[int, dict]:
        request = payload["ClientRequest"]
        url = urlsplit(request["Request"])
        if url.path.endswith("/images/create"):
            image = parse_qs(url.query).get("fromImage", [""])[0]
        else:  # POST /vX/images/NAME/push: NAME may hold slashes (and is %-encoded by some clients)
            image = unquote(url.path.split("/images/", 1)[1].rsplit("/push", 1)[0])
        if not image.startswith(host + "/"):
            return 403, {"message": f"registry-policy: only images from {host} are allowed, not {image}"}
        return 200, {"PowerstripProtocolVersion": 1, "ModifiedClientRequest": request}

    return reply


class _Registry:
    cli: str

    def setUp(self) -> None:
        require_daemon()
        self.registry = registry()
        self.config = Path(tempfile.mkdtemp(prefix="ps-docker-config-"))
        self.addCleanup(shutil.rmtree, self.config, True)
        self.policy = RecordingAdapter(policy_for(self.registry.host))
        self.addCleanup(self.policy.stop)
        self.audit = RecordingAdapter()
        self.addCleanup(self.audit.stop)
        self.keys = RecordingAdapter()
        self.addCleanup(self.keys.stop)
        self.proxy = Powerstrip(f"""\
version: 1
endpoints:
  "POST /*/images/create": {{pre: [policy, audit]}}
  "POST /*/images/*/push": {{pre: [policy, audit, keys]}}
  "POST /*/auth": {{pre: [audit]}}
adapters:
  policy: {self.policy.url}
  audit: {{url: "{self.audit.url}", protocol: 2}}
  keys: {{url: "{self.keys.url}", protocol: 2, secrets: true}}
""")
        self.addCleanup(self.proxy.stop)
        self.addCleanup(lambda: self.assertTrue(self.proxy.alive(), "powerstrip died:\n" + self.proxy.log_text()))

    def env(self) -> dict[str, str]:
        env = {**os.environ, "DOCKER_HOST": self.proxy.url, "DOCKER_CONFIG": str(self.config)}
        env.pop("DOCKER_CONTEXT", None)
        return env

    def docker(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([self.cli, *args], input=input, capture_output=True, timeout=180, env=self.env())

    def ok(self, *args: str, input: bytes | None = None) -> str:
        result = self.docker(*args, input=input)
        self.assertEqual(result.returncode, 0, f"docker {' '.join(args)}: {result.stderr.decode()}")
        return result.stdout.decode()

    def streamed(self, *args: str) -> list[tuple[float, str]]:
        proc = subprocess.Popen([self.cli, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env())
        self.addCleanup(lambda: (proc.poll() is None and proc.kill(), proc.stdout.close(), proc.stderr.close()))
        lines = [(t, line.decode(errors="replace").strip()) for t, line in timed_lines(proc, timeout=120)]
        proc.wait(30)
        self.assertEqual(proc.returncode, 0, f"docker {' '.join(args)}: {proc.stderr.read().decode()}")
        return lines

    def image_with_layer(self) -> tuple[str, str]:
        """A fresh image (tagged for the registry) with a unique random layer; (name, tag)."""
        name = f"{self.registry.host}/e2e/{uuid.uuid4().hex[:10]}"
        # The name in the RUN line: without it the build cache hands every image the same layer, and a
        # pull then finds it already there (a second test, or -j2's other class, built it too).
        dockerfile = f"FROM busybox:latest\nRUN head -c {LAYER} /dev/urandom > /blob # {name}\n".encode()
        built = subprocess.run(
            [CLIS["docker 28"], "build", "-q", "-t", f"{name}:1", "-"],
            input=dockerfile,
            capture_output=True,
            timeout=180,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
        self.assertEqual(built.returncode, 0, built.stderr)
        self.addCleanup(direct, "rmi", "-f", f"{name}:1")
        return name, "1"

    def test_login_push_pull_logout(self) -> None:
        host = self.registry.host
        name, tag = self.image_with_layer()
        # Without credentials the registry says no, and the CLI shows it.
        refused = self.docker("push", f"{name}:{tag}")
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn(b"no basic auth credentials", refused.stderr + refused.stdout)
        wrong = self.docker("login", "-u", USER, "--password-stdin", host, input=b"wrong\n")
        self.assertNotEqual(wrong.returncode, 0)
        self.assertIn(b"401 Unauthorized", wrong.stderr)

        self.assertIn(
            "Login Succeeded", self.ok("login", "-u", USER, "--password-stdin", host, input=PASSWORD.encode() + b"\n")
        )
        auths = json.loads((self.config / "config.json").read_text())["auths"]
        self.assertIn(host, auths)
        [login] = self.audit.received("pre-hook", "POST /*/auth")[-1:]
        shown = json.loads(login["ClientRequest"]["Body"])
        self.assertEqual((shown["username"], shown["password"]), (USER, "<redacted>"))

        # Push: the progress lines come as the layer goes up, not all at the end.
        lines = self.streamed("push", f"{name}:{tag}")
        texts = [text for _, text in lines]
        self.assertTrue(any(t.endswith("Preparing") for t in texts), texts)
        pushed = [when for when, text in lines if text.endswith(": Pushed")]
        self.assertTrue(pushed, texts)
        self.assertGreater(max(pushed) - lines[0][0], 0.8, f"the push progress arrived in one piece: {texts}")
        self.assertIn(f"{tag}: digest: sha256:", texts[-1])
        [push] = self.audit.received("pre-hook", "POST /*/images/*/push")[-1:]
        self.assertEqual(parse_qs(urlsplit(push["ClientRequest"]["Request"]).query)["tag"], [tag])
        # The credentials travel in X-Registry-Auth: redacted for audit, as sent for keys (secrets: true).
        headers = {k.lower(): v for k, v in push["ClientRequest"]["Headers"].items()}
        self.assertEqual(headers["x-registry-auth"], ["<redacted>"])
        [push] = self.keys.received("pre-hook", "POST /*/images/*/push")[-1:]
        headers = {k.lower(): v for k, v in push["ClientRequest"]["Headers"].items()}
        credential = headers["x-registry-auth"][0]
        decoded = json.loads(base64.urlsafe_b64decode(credential + "=" * (-len(credential) % 4)))
        self.assertEqual(
            (decoded.get("username"), decoded.get("password"), decoded.get("serveraddress")), (USER, PASSWORD, host)
        )

        # Pull it back, with the local copy gone: the layer comes down, progressively.
        self.assertEqual(direct("rmi", f"{name}:{tag}").returncode, 0)
        lines = self.streamed("pull", f"{name}:{tag}")
        texts = [text for _, text in lines]
        done = [when for when, text in lines if text.endswith(": Pull complete")]
        self.assertTrue(done, texts)
        self.assertGreater(max(done) - lines[0][0], 0.8, f"the pull progress arrived in one piece: {texts}")
        self.assertIn(f"Downloaded newer image for {name}:{tag}", "\n".join(texts))
        self.assertEqual(
            direct("run", "--rm", f"{name}:{tag}", "wc", "-c", "/blob").stdout.split()[0], str(LAYER).encode()
        )
        [pull] = self.audit.received("pre-hook", "POST /*/images/create")[-1:]
        self.assertEqual(parse_qs(urlsplit(pull["ClientRequest"]["Request"]).query)["fromImage"], [name])

        self.assertIn(f"Removing login credentials for {host}", self.ok("logout", host))
        self.assertNotIn(host, json.loads((self.config / "config.json").read_text()).get("auths", {}))
        # Every pull and push went through the policy first.
        self.assertGreaterEqual(len(self.policy.received("pre-hook")), 3)

    def test_other_registries_refused_by_the_hook(self) -> None:
        result = self.docker("pull", "registry.example:5000/team/app:1")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(
            f"registry-policy: only images from {self.registry.host} are allowed, not "
            "registry.example:5000/team/app".encode(),
            result.stderr,
        )
        other = f"other.example:5000/e2e/{uuid.uuid4().hex[:8]}:1"
        self.assertEqual(direct("tag", "busybox:latest", other).returncode, 0)
        self.addCleanup(direct, "rmi", other)
        result = self.docker("push", other)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(
            f"registry-policy: only images from {self.registry.host} are allowed, not "
            f"{other.rsplit(':', 1)[0]}".encode(),
            result.stderr,
        )
        # Refused before dockerd: the audit adapter, after the policy, was never called.
        self.assertEqual(self.audit.received("pre-hook"), [])
        self.policy.assert_received("pre-hook", "POST /*/images/create", count=1)
        self.policy.assert_received("pre-hook", "POST /*/images/*/push", count=1)


class RegistryDocker28(_Registry, TestCase):
    cli = CLIS["docker 28"]


class RegistryDocker2010(_Registry, TestCase):
    cli = CLIS["docker 20.10"]
