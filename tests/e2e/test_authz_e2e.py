"""``type: authz`` adapters end to end: examples/authz_plugin.py behind a real
Powerstrip, in front of the real dockerd, with both docker CLIs.

``AuthzPluginRules`` checks the example's pure functions without a daemon.
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from twisted.trial.unittest import TestCase

from examples import authz_plugin
from powerstrip.sdk.testing import free_port, wait_for_port
from tests.e2e.support import CLIS, IMAGE, LABEL, REPO, Powerstrip, direct, require_daemon, run

DENIED = "authorization denied by plugin authz: privileged containers are not allowed"


class AuthzPluginProcess:
    """examples/authz_plugin.py on a free loopback port, recording every call."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="authz-e2e-"))
        self.record = self.dir / "calls.jsonl"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "examples" / "authz_plugin.py"),
                "--port",
                str(self.port),
                "--record",
                str(self.record),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc, "authz plugin")

    def calls(self) -> list[dict]:
        """Every call received so far, in order (``Method`` added: AuthZPlugin.AuthZReq, ...)."""
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line]

    def creates(self) -> list[dict]:
        """The container-create specs it was shown, decoded."""
        return [
            json.loads(base64.b64decode(c["RequestBody"]))
            for c in self.calls()
            if c["Method"] == "AuthZPlugin.AuthZReq" and "/containers/create" in c["RequestUri"] and "RequestBody" in c
        ]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def config(plugin_url: str, pre: str = "[authz]", extra: str = "") -> str:
    return (
        f'version: 1\nendpoints:\n  "* *":\n    pre: {pre}\nadapters:\n'
        f"  authz:\n    url: {plugin_url}\n    type: authz\n{extra}"
    )


class _AuthzE2E:
    cli: str

    def setUp(self) -> None:
        require_daemon()
        self.plugin = AuthzPluginProcess()
        self.addCleanup(self.plugin.stop)

    def start(self, text: str, env: dict | None = None) -> None:
        self.proxy = Powerstrip(text, env=env)
        self.addCleanup(self.proxy.stop)

    def docker(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return run([self.cli, *args], host=self.proxy.url, timeout=timeout)

    def name(self) -> str:
        name = f"ps-authz-{uuid.uuid4().hex[:10]}"
        self.addCleanup(direct, "rm", "-f", name)
        return name

    def assertNoContainer(self, name: str) -> None:
        found = direct("ps", "-a", "--filter", f"name={name}", "--filter", f"label={LABEL}", "-q")
        self.assertEqual(found.stdout.strip(), b"", f"container {name} was created")

    def test_privileged_run_is_denied(self) -> None:
        self.start(config(self.plugin.url))
        name = self.name()
        result = self.docker("run", "--rm", "--privileged", "--label", LABEL, "--name", name, IMAGE, "true")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(DENIED, result.stderr.decode())
        self.assertNoContainer(name)
        self.assertTrue(any(spec.get("HostConfig", {}).get("Privileged") for spec in self.plugin.creates()))

    def test_plain_run_works(self) -> None:
        self.start(config(self.plugin.url))
        result = self.docker("run", "--rm", "--label", LABEL, "--name", self.name(), IMAGE, "echo", "allowed")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, b"allowed\n")
        methods = {c["Method"] for c in self.plugin.calls()}
        self.assertEqual(methods, {"AuthZPlugin.AuthZReq"})

    def test_authz_sees_what_an_earlier_pre_hook_made(self) -> None:
        self.start(
            config(
                self.plugin.url, pre="[env_inject, authz]", extra="  env_inject: python:examples.env_inject:adapter\n"
            ),
            env={"INJECT_ENV": "AUTHZ_SAW=injected"},
        )
        result = self.docker("run", "--rm", "--label", LABEL, "--name", self.name(), IMAGE, "env")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"AUTHZ_SAW=injected\n", result.stdout)
        [spec] = self.plugin.creates()
        self.assertIn("AUTHZ_SAW=injected", spec["Env"])

    def test_privileged_exec_is_denied(self) -> None:
        self.start(config(self.plugin.url))
        name = self.name()
        started = self.docker("run", "-d", "--label", LABEL, "--name", name, IMAGE, "sleep", "60")
        self.assertEqual(started.returncode, 0, started.stderr)
        result = self.docker("exec", "--privileged", name, "true")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("authorization denied by plugin authz: privileged exec is not allowed", result.stderr.decode())
        self.assertEqual(self.docker("exec", name, "true").returncode, 0)

    def test_copy_into_a_container_streams(self) -> None:
        """``docker cp``'s tar is an archive upload: it streams, unseen, and works."""
        self.start(config(self.plugin.url))
        name = self.name()
        self.assertEqual(self.docker("create", "--label", LABEL, "--name", name, IMAGE, "true").returncode, 0)
        src = Path(tempfile.mkdtemp(prefix="authz-cp-"))
        self.addCleanup(shutil.rmtree, src, ignore_errors=True)
        (src / "file").write_bytes(b"x" * 100_000)
        result = self.docker("cp", str(src / "file"), f"{name}:/tmp/file")
        self.assertEqual(result.returncode, 0, result.stderr)
        [put] = [c for c in self.plugin.calls() if c["RequestMethod"] == "PUT"]
        self.assertNotIn("RequestBody", put)


class Docker28(_AuthzE2E, TestCase):
    cli = CLIS["docker 28"]


class Docker2010(_AuthzE2E, TestCase):
    cli = CLIS["docker 20.10"]


class RawAPITests(TestCase):
    """Requests no CLI sends, straight to Powerstrip's port: every spelling dockerd reads as privileged."""

    def setUp(self) -> None:
        require_daemon()
        self.plugin = AuthzPluginProcess()
        self.addCleanup(self.plugin.stop)
        self.proxy = Powerstrip(config(self.plugin.url))
        self.addCleanup(self.proxy.stop)

    def send(self, body: bytes, headers: dict[str, str], chunked: bool = False) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.proxy.port, timeout=60)
        try:
            name = f"ps-authz-{uuid.uuid4().hex[:10]}"
            self.addCleanup(direct, "rm", "-f", name)
            self.names.append(name)
            conn.request(
                "POST",
                f"/v1.41/containers/create?name={name}",
                body=iter([body]) if chunked else body,
                headers=headers,
                encode_chunked=chunked,
            )
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def test_every_privileged_spelling_is_denied(self) -> None:
        self.names: list[str] = []
        labels = {"powerstrip-e2e": "1"}
        specs = [
            {"Image": IMAGE, "Cmd": ["true"], "Labels": labels, "HostConfig": {"Privileged": True}},
            # dockerd 20.10 reads a top-level Privileged (deprecated) and names in any case.
            {"Image": IMAGE, "Cmd": ["true"], "Labels": labels, "Privileged": True},
            {"Image": IMAGE, "Cmd": ["true"], "Labels": labels, "hostconfig": {"privileged": True}},
        ]
        json_type = {"Content-Type": "application/json"}
        denied = 0
        for spec in specs:
            body = json.dumps(spec).encode()
            for headers, chunked in [(json_type, False), (json_type, True), ({"Content-Type": "text/plain"}, False)]:
                code, answer = self.send(body, headers, chunked)
                # The plugin denies what it is shown (keys in their canonical spelling); what could
                # not be shown as dockerd reads it (a JSON body typed text/plain, the legacy
                # top-level HostConfig fields) Powerstrip refuses before anyone is asked.
                if headers is json_type and "Privileged" not in spec:
                    self.assertEqual((code, answer), (403, {"message": DENIED}), (spec, headers, chunked))
                    denied += 1
                else:
                    self.assertEqual(code, 400, (spec, headers, chunked, answer))
                    self.assertTrue(answer["message"].startswith("powerstrip: "), answer)
        for name in self.names:
            found = direct("ps", "-a", "--filter", f"name={name}", "-q")
            self.assertEqual(found.stdout.strip(), b"", f"container {name} was created")
        self.assertEqual(len(self.plugin.creates()), denied)

    def test_plain_create_is_allowed(self) -> None:
        self.names = []
        code, answer = self.send(
            json.dumps({"Image": IMAGE, "Cmd": ["true"], "Labels": {"powerstrip-e2e": "1"}}).encode(),
            {"Content-Type": "application/json"},
            chunked=True,
        )
        self.assertEqual(code, 201, answer)


class AuthzPluginRules(TestCase):
    """examples/authz_plugin.py's judgement, without a daemon."""

    def ask(self, body: bytes | None, uri: str = "/v1.47/containers/create") -> dict:
        call = {"RequestMethod": "POST", "RequestUri": uri}
        if body is not None:
            call["RequestBody"] = base64.b64encode(body).decode()
        return authz_plugin.authorize(call)

    def test_allowed(self) -> None:
        for body in [
            None,
            b'{"Image":"busybox"}',
            b'{"HostConfig":{"Privileged":false}}',
            b'{"Privileged":null}',
            b'{"Labels":{"Privileged":"true"}}',
            b"[]",
        ]:
            self.assertEqual(self.ask(body), {"Allow": True}, body)

    def test_denied(self) -> None:
        for body in [
            b'{"HostConfig":{"Privileged":true}}',
            b'{"Privileged":true}',
            b'{"hostconfig":{"PRIVILEGED":true}}',
            b'{"HostConfig":{"Privileged":true},"HostConfig":{}}',
            b'{"Privileged":true,"Privileged":false}',
            b' {"HostConfig":{"Privileged":true}} trailing',
            b'{"Ho\xc5\xbftConfig":{"Privileged":true}}',
        ]:
            self.assertEqual(self.ask(body), {"Allow": False, "Msg": "privileged containers are not allowed"}, body)
        self.assertEqual(
            self.ask(b'{"Privileged":true,"Cmd":["sh"]}', "/v1.47/containers/web/exec"),
            {"Allow": False, "Msg": "privileged exec is not allowed"},
        )

    def test_unreadable_body_is_denied(self) -> None:
        self.assertFalse(self.ask(b"not json")["Allow"])
        self.assertFalse(authz_plugin.authorize({"RequestBody": "***"})["Allow"])
