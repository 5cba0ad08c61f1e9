"""Protocol version 2 against the real dockerd, driven by both docker CLIs.

- The caller's identity on a unix-socket listener, with the client run as
  another uid (``SO_PEERCRED``), and on a ``--tlsverify`` listener (the
  client certificate's common name).
- A pre-hook short-circuiting ``docker ps`` (a per-user view, dockerd never asked).
- An ``unwind: true`` adapter hearing of a Docker error (a name conflict).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from twisted.trial.unittest import TestCase

from powerstrip.testing import RecordingAdapter, echo
from tests.e2e.support import CLIS, IMAGE, LABEL, Powerstrip, direct, require_daemon, run
from tests.e2e.test_tls_e2e import certs, tls_env

NOBODY = pwd.getpwnam("nobody")


def hooked(rule: str, kind: str = "pre", extra: str = "") -> str:
    return (f'version: 1\nendpoints:\n  "{rule}":\n    {kind}: [rec]\n'
            f"adapters:\n  rec: {{url: $URL, protocol: 2{extra}}}\n")


class _Protocol2:
    cli: str

    def setUp(self) -> None:
        require_daemon()

    def adapter(self, reply=echo) -> RecordingAdapter:
        adapter = RecordingAdapter(reply)
        self.addCleanup(adapter.stop)
        return adapter

    def proxy(self, config: str, adapter: RecordingAdapter, extra: list[str] | None = None) -> Powerstrip:
        proxy = Powerstrip(config.replace("$URL", adapter.url), extra=extra)
        self.addCleanup(proxy.stop)
        return proxy

    def test_unix_socket_caller_is_another_uid(self) -> None:
        adapter = self.adapter()
        sockdir = Path(tempfile.mkdtemp(prefix="ps-unix-"))
        self.addCleanup(shutil.rmtree, sockdir, True)
        sockdir.chmod(0o755)
        sock = sockdir / "docker.sock"
        self.proxy(hooked("GET /*/version"), adapter, ["--listen", f"unix:{sock}:mode=666"])
        home = Path(tempfile.mkdtemp(prefix="nobody-home-"))
        self.addCleanup(shutil.rmtree, home, True)
        os.chown(home, NOBODY.pw_uid, NOBODY.pw_gid)
        result = run([self.cli, "version", "--format", "{{.Server.Version}}"], host=f"unix://{sock}",
                     env={"HOME": str(home)}, user=NOBODY.pw_uid, group=NOBODY.pw_gid)
        self.assertEqual(result.returncode, 0, result.stderr)
        [call] = adapter.assert_received("pre-hook", "GET /*/version", count=1)
        caller = call["Caller"]
        self.assertEqual((caller["Transport"], caller["Uid"], caller["Gid"], caller["User"]),
                         ("unix", NOBODY.pw_uid, NOBODY.pw_gid, "nobody"))
        self.assertIsInstance(caller["Pid"], int)
        self.assertRegex(call["RequestId"], "^[0-9a-f]{16}$")

    def test_tls_caller_is_the_certificate(self) -> None:
        adapter = self.adapter()
        server = certs()["server"]
        proxy = self.proxy(hooked("GET /*/version"), adapter,
                           ["--tlsverify", "--tlscacert", str(server / "ca.pem"), "--tlscert",
                            str(server / "cert.pem"), "--tlskey", str(server / "key.pem")])
        result = run([self.cli, "version"], host=proxy.url, env=tls_env(certs()["client"]))
        self.assertEqual(result.returncode, 0, result.stderr)
        caller = adapter.assert_received("pre-hook", "GET /*/version")[0]["Caller"]
        self.assertEqual((caller["Transport"], caller["User"]), ("tls", "powerstrip-e2e-client"))
        self.assertEqual(caller["Certificate"]["Subject"], "CN=powerstrip-e2e-client")
        self.assertRegex(caller["Certificate"]["Fingerprint"], "^sha256:[0-9a-f]{64}$")

    def test_short_circuit_answers_docker_ps(self) -> None:
        """A per-user view: the hook answers ``docker ps`` itself, dockerd is never asked."""
        def view(payload: dict) -> tuple[int, dict]:
            if payload["Type"] != "pre-hook":
                return echo(payload)
            mine = [{"Id": "f" * 64, "Names": ["/only-yours"], "Image": IMAGE, "Command": "sh",
                     "Created": 0, "State": "running", "Status": "Up", "Ports": [], "Labels": {}}]
            return 200, {"PowerstripProtocolVersion": 2, "ServerResponse": {
                "Code": 200, "ContentType": "application/json", "Body": json.dumps(mine),
                "Headers": {"X-View": ["per-user"]}}}

        adapter = self.adapter(view)
        proxy = self.proxy(hooked("GET /*/containers/json"), adapter)
        result = run([self.cli, "ps", "--format", "{{.Names}}"], host=proxy.url)
        self.assertEqual((result.returncode, result.stdout), (0, b"only-yours\n"), result.stderr)
        self.assertNotIn("/containers/json -> 200 0B", proxy.log_text())
        status, headers, _ = proxy.request("GET", "/v1.41/containers/json")
        self.assertEqual((status, headers["x-view"]), (200, "per-user"))

    def test_unwind_after_a_docker_error(self) -> None:
        adapter = self.adapter()
        proxy = self.proxy(hooked("POST /*/containers/create", extra=", unwind: true"), adapter)
        name = f"ps-unwind-{uuid.uuid4().hex[:8]}"
        self.addCleanup(direct, "rm", "-f", name)
        first = run([self.cli, "create", "--label", LABEL, "--name", name, IMAGE, "true"], host=proxy.url)
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertEqual(adapter.received("unwind"), [])
        second = run([self.cli, "create", "--label", LABEL, "--name", name, IMAGE, "true"], host=proxy.url)
        self.assertNotEqual(second.returncode, 0)
        self.assertIn(b"is already in use", second.stderr)
        for _ in range(100):
            if adapter.received("unwind"):
                break
            time.sleep(0.05)
        [call] = adapter.assert_received("unwind", "POST /*/containers/create", count=1)
        self.assertEqual((call["Stage"], call["Failure"]["Adapter"], call["Failure"]["Code"]), ("docker", None, 409))
        self.assertIn("is already in use", call["Failure"]["Message"])
        self.assertIn(name, call["ClientRequest"]["Request"])
        pre_ids = [c["RequestId"] for c in adapter.received("pre-hook")]
        self.assertEqual(call["RequestId"], pre_ids[-1])


class Protocol2Docker28(_Protocol2, TestCase):
    cli = CLIS["docker 28"]


class Protocol2Docker2010(_Protocol2, TestCase):
    cli = CLIS["docker 20.10"]
