"""Protocol version 2 against the real dockerd, driven by both docker CLIs.

- The caller's identity on a unix-socket listener, with the client run as
  another uid (``SO_PEERCRED``), and on a ``--tlsverify`` listener (the
  client certificate's common name).
- A pre-hook short-circuiting ``docker ps`` (a per-user view, dockerd never asked).
- An ``unwind: true`` adapter hearing of a Docker error (a name conflict), and of a
  client whose connection was lost while a later pre-hook was still working; a
  ``docker create`` interrupted (Ctrl-C) meanwhile goes on, as it would at dockerd.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from twisted.trial.unittest import TestCase

from powerstrip.proxy.exchange import CLIENT_GONE
from powerstrip.sdk.schema import validate
from powerstrip.sdk.testing import RecordingAdapter, echo
from tests.e2e.support import (
    CLIS,
    IMAGE,
    LABEL,
    Powerstrip,
    certs,
    direct,
    require_daemon,
    run,
    tls_env,
    tls_verify_args,
)

NOBODY = pwd.getpwnam("nobody")


def hooked(rule: str, kind: str = "pre", extra: str = "") -> str:
    return (
        f'version: 1\nendpoints:\n  "{rule}":\n    {kind}: [rec]\nadapters:\n  rec: {{url: $URL, protocol: 2{extra}}}\n'
    )


class _Setup:
    """Recording adapters and Powerstrips, stopped at the end of the test."""

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

    def stuck_chain(self) -> tuple[RecordingAdapter, RecordingAdapter, threading.Event]:
        """An ``unwind: true`` recorder, and an adapter that answers only once the event is set."""
        release = threading.Event()
        self.addCleanup(release.set)

        def stuck(payload: dict) -> tuple[int, dict]:
            release.wait(60)
            return echo(payload)

        return self.adapter(), self.adapter(stuck), release

    def two_hook_proxy(self, rec: RecordingAdapter, slow: RecordingAdapter) -> Powerstrip:
        proxy = Powerstrip(
            'version: 1\nendpoints:\n  "POST /*/containers/create":\n    pre: [rec, slow]\nadapters:\n'
            f"  rec: {{url: {rec.url}, protocol: 2, unwind: true}}\n  slow: {{url: {slow.url}, timeout: 90s}}\n"
        )
        self.addCleanup(proxy.stop)
        return proxy

    def container_name(self) -> str:
        name = f"ps-gone-{uuid.uuid4().hex[:8]}"
        self.addCleanup(direct, "rm", "-f", name)
        return name


class _Protocol2(_Setup):
    cli: str

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
        result = run(
            [self.cli, "version", "--format", "{{.Server.Version}}"],
            host=f"unix://{sock}",
            env={"HOME": str(home)},
            user=NOBODY.pw_uid,
            group=NOBODY.pw_gid,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        [call] = adapter.assert_received("pre-hook", "GET /*/version", count=1)
        caller = call["Caller"]
        self.assertEqual(
            (caller["Transport"], caller["Uid"], caller["Gid"], caller["User"]),
            ("unix", NOBODY.pw_uid, NOBODY.pw_gid, "nobody"),
        )
        self.assertIsInstance(caller["Pid"], int)
        self.assertRegex(call["RequestId"], "^[0-9a-f]{16}$")

    def test_tls_caller_is_the_certificate(self) -> None:
        adapter = self.adapter()
        server = certs()["server"]
        proxy = self.proxy(
            hooked("GET /*/version"),
            adapter,
            tls_verify_args(server),
        )
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
            mine = [
                {
                    "Id": "f" * 64,
                    "Names": ["/only-yours"],
                    "Image": IMAGE,
                    "Command": "sh",
                    "Created": 0,
                    "State": "running",
                    "Status": "Up",
                    "Ports": [],
                    "Labels": {},
                }
            ]
            return 200, {
                "PowerstripProtocolVersion": 2,
                "ServerResponse": {
                    "Code": 200,
                    "ContentType": "application/json",
                    "Body": json.dumps(mine),
                    "Headers": {"X-View": ["per-user"]},
                },
            }

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

    def test_interrupted_create_goes_on_as_it_would_at_dockerd(self) -> None:
        """Ctrl-C while a later pre-hook is still at work: the CLI exits, but only closing
        its side is not leaving (dockerd, too, carries out a create whose client hung
        up after sending it): the create goes on once the hook answers, nothing unwinds."""
        rec, slow, release = self.stuck_chain()
        proxy = self.two_hook_proxy(rec, slow)
        name = self.container_name()
        env = {k: v for k, v in os.environ.items() if k != "DOCKER_CONTEXT"}
        cli = subprocess.Popen(
            [self.cli, "create", "--label", LABEL, "--name", name, IMAGE, "true"],
            env={**env, "DOCKER_HOST": proxy.url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.addCleanup(lambda: cli.poll() is None and cli.kill())
        wait_until(lambda: slow.received("pre-hook"))
        cli.send_signal(signal.SIGINT)
        cli.communicate(timeout=30)
        self.assertNotEqual(cli.returncode, 0)
        release.set()
        wait_until(lambda: direct("inspect", name).returncode == 0)
        self.assertEqual(direct("inspect", name).returncode, 0, "the create did not go on")
        self.assertEqual(rec.received("unwind"), [])
        self.assertEqual(run([self.cli, "version"], host=proxy.url).returncode, 0)


def wait_until(condition: Any, seconds: float = 20) -> None:
    """Poll ``condition`` every 50 ms until it is true or ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


class ClientGone(_Setup, TestCase):
    """A client whose connection is lost while the pre-hooks run (no CLI does that on purpose:
    a raw socket reset stands for a client killed mid-send, or a network that failed)."""

    def test_connection_lost_during_pre_hooks_unwinds(self) -> None:
        rec, slow, _ = self.stuck_chain()
        proxy = self.two_hook_proxy(rec, slow)
        name = self.container_name()
        body = json.dumps({"Image": IMAGE, "Cmd": ["true"], "Labels": {"powerstrip-e2e": "1"}}).encode()
        host, port = proxy.url.removeprefix("tcp://").rsplit(":", 1)
        client = socket.create_connection((host, int(port)), timeout=10)
        client.sendall(
            b"POST /v1.41/containers/create?name=%s HTTP/1.1\r\nHost: docker\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (name.encode(), len(body), body)
        )
        wait_until(lambda: slow.received("pre-hook"))
        slow.assert_received("pre-hook", "POST /*/containers/create", count=1)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset: the connection is gone, not just closed for sending
        wait_until(lambda: rec.received("unwind"))
        [call] = rec.assert_received("unwind", "POST /*/containers/create", count=1)
        self.assertEqual(
            (call["Stage"], call["Failure"]["Adapter"], call["Failure"]["Code"], call["ServerResponse"]),
            ("client", None, None, None),
        )
        self.assertEqual(call["Failure"]["Message"], CLIENT_GONE)
        self.assertEqual(json.loads(call["ClientRequest"]["Body"]), json.loads(body))
        self.assertEqual(call["RequestId"], rec.received("pre-hook")[-1]["RequestId"])
        self.assertEqual(validate(call, "v2/unwind"), [])
        self.assertIn("client went away", proxy.log_text())
        self.assertNotEqual(direct("inspect", name).returncode, 0, "the abandoned create reached Docker")
        self.assertEqual(run([CLIS["docker 28"], "version"], host=proxy.url).returncode, 0)


class Protocol2Docker28(_Protocol2, TestCase):
    cli = CLIS["docker 28"]


class Protocol2Docker2010(_Protocol2, TestCase):
    cli = CLIS["docker 20.10"]
