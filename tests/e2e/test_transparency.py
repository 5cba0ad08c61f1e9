"""Nothing breaks through Powerstrip: the real docker CLIs against a real dockerd.

Each scenario runs with both CLIs on this machine (28.x and Debian's 20.10)
through a Powerstrip process with no hooks configured.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.e2e.support import (
    CLIS,
    IMAGE,
    LABEL,
    Powerstrip,
    direct,
    require_daemon,
    run,
    shared_powerstrip,
    timed_lines,
)


class _Transparency:
    """Scenarios, run once per CLI by the subclasses below."""

    cli: str
    proxy: Powerstrip

    def setUp(self) -> None:
        require_daemon()
        self.proxy = shared_powerstrip(type(self).__name__)

    def tearDown(self) -> None:
        self.assertTrue(self.proxy.alive(), "powerstrip died:\n" + self.proxy.log_text())

    def docker(
        self, *args: str, input: bytes | None = None, timeout: float = 120, env: dict | None = None
    ) -> subprocess.CompletedProcess:
        return run([self.cli, *args], host=self.proxy.url, input=input, timeout=timeout, env=env)

    def ok(self, *args: str, **kw) -> bytes:
        """Run a docker command through Powerstrip that must succeed; its stdout."""
        result = self.docker(*args, **kw)
        self.assertEqual(result.returncode, 0, f"docker {' '.join(args)} failed: {result.stderr.decode()}")
        return result.stdout

    def name(self) -> str:
        return f"ps-e2e-{uuid.uuid4().hex[:10]}"

    def background(self, *cmd: str) -> str:
        """A labelled container running ``cmd`` (started directly, not through Powerstrip)."""
        name = self.name()
        result = direct("run", "-d", "-i", "--label", LABEL, "--name", name, IMAGE, *cmd)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.addCleanup(direct, "rm", "-f", name)
        return name

    # -- run ---------------------------------------------------------------------

    def test_run_echo(self) -> None:
        self.assertEqual(self.ok("run", "--rm", IMAGE, "echo", "hello powerstrip"), b"hello powerstrip\n")

    def test_exit_code(self) -> None:
        result = self.docker("run", "--rm", IMAGE, "sh", "-c", "echo out; echo err >&2; exit 3")
        self.assertEqual((result.returncode, result.stdout, result.stderr), (3, b"out\n", b"err\n"))

    def test_stdin_eof_then_output(self) -> None:
        # stdin EOF (the client's half-close) must reach the container while the
        # output written after it still comes back.
        out = self.ok("run", "--rm", "-i", IMAGE, "sh", "-c", "cat; echo; sleep 1; echo after-eof", input=b"from stdin")
        self.assertEqual(out, b"from stdin\nafter-eof\n")

    def test_stdin_8mib_checksum(self) -> None:
        data = os.urandom(8 * 1024 * 1024)
        out = self.ok("run", "--rm", "-i", IMAGE, "sha256sum", input=data)
        self.assertEqual(out.split()[0].decode(), hashlib.sha256(data).hexdigest())
        echoed = self.ok("run", "--rm", "-i", IMAGE, "cat", input=data)
        self.assertEqual(hashlib.sha256(echoed).digest(), hashlib.sha256(data).digest())

    def test_tty_under_pty(self) -> None:
        # script(1) gives the CLI a real terminal, so `-t` really allocates one.
        cmd = f"{self.cli} run --rm -it {IMAGE} sh -c 'tty; echo tty-ok; exit 5'"
        result = run(["script", "-qec", cmd, "/dev/null"], host=self.proxy.url, input=b"")
        self.assertEqual(result.returncode, 5, result.stdout + result.stderr)
        self.assertIn(b"/dev/pts/", result.stdout)
        self.assertIn(b"tty-ok\r\n", result.stdout)

    # -- exec, attach, start -a -------------------------------------------------------

    def test_exec(self) -> None:
        name = self.background("sleep", "300")
        self.assertEqual(
            self.ok("exec", "-i", name, "sh", "-c", "cat; echo done", input=b"exec-in\n"), b"exec-in\ndone\n"
        )
        self.assertEqual(self.docker("exec", name, "sh", "-c", "exit 7").returncode, 7)

    def test_exec_tty(self) -> None:
        name = self.background("sleep", "300")
        cmd = f"{self.cli} exec -it {name} sh -c 'tty; exit 4'"
        result = run(["script", "-qec", cmd, "/dev/null"], host=self.proxy.url, input=b"")
        self.assertEqual(result.returncode, 4, result.stdout + result.stderr)
        self.assertIn(b"/dev/pts/", result.stdout)

    def test_attach(self) -> None:
        name = self.background("sh", "-c", "read line; sleep 1; echo got $line; exit 6")
        # stdin stays open until the output is back: on stdin EOF the CLI itself
        # detaches (it does the same talking to dockerd directly).
        result = run(["sh", "-c", f"(echo attached; sleep 4) | {self.cli} attach {name}"], host=self.proxy.url)
        self.assertEqual((result.returncode, result.stdout), (6, b"got attached\n"), result.stderr)
        name = self.background("sh", "-c", "sleep 2; echo attached-out; exit 9")
        result = self.docker("attach", "--no-stdin", name)
        self.assertEqual((result.returncode, result.stdout), (9, b"attached-out\n"), result.stderr)

    def test_start_attach_interactive(self) -> None:
        name = self.name()
        self.ok("create", "-i", "--label", LABEL, "--name", name, IMAGE, "sh", "-c", "read x; echo start-$x")
        self.addCleanup(direct, "rm", "-f", name)
        self.assertEqual(self.ok("start", "-a", "-i", name, input=b"ai\n"), b"start-ai\n")

    # -- streams ------------------------------------------------------------------------

    def _popen(self, *args: str) -> subprocess.Popen:
        env = {**os.environ, "DOCKER_HOST": self.proxy.url}
        proc = subprocess.Popen([self.cli, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.addCleanup(lambda: (proc.kill(), proc.wait(), proc.stdout.close(), proc.stderr.close()))
        return proc

    def test_logs_follow_is_live(self) -> None:
        name = self.background("sh", "-c", "for i in 1 2 3 4; do echo line$i; sleep 1; done; sleep 300")
        proc = self._popen("logs", "-f", name)
        lines = timed_lines(proc, 4)
        self.assertEqual([text for _, text in lines], [b"line1", b"line2", b"line3", b"line4"])
        # Streamed as written (one per second), not delivered in one piece at the end.
        self.assertGreater(lines[-1][0] - lines[0][0], 1.5)

    def test_events_are_live(self) -> None:
        name = self.name()
        proc = self._popen("events", "--filter", f"container={name}", "--format", "{{.Action}}")
        time.sleep(1)
        self.ok("run", "--rm", "--label", LABEL, "--name", name, IMAGE, "true")
        actions = [text for _, text in timed_lines(proc, 3, timeout=30)]
        self.assertEqual(actions[:1], [b"create"])
        self.assertIsNone(proc.poll(), "the events stream must still be open")

    # -- archives -----------------------------------------------------------------------

    def test_cp_both_ways(self) -> None:
        name = self.background("sleep", "300")
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp, "in.bin")
            src.write_bytes(os.urandom(24 * 1024 * 1024 + 17))
            Path(tmp, "tree", "sub").mkdir(parents=True)
            Path(tmp, "tree", "sub", "f.txt").write_text("nested\n")
            self.ok("cp", str(src), f"{name}:/tmp/in.bin")
            self.ok("cp", str(Path(tmp, "tree")), f"{name}:/tmp/tree")
            self.assertEqual(direct("exec", name, "cat", "/tmp/tree/sub/f.txt").stdout, b"nested\n")
            self.ok("cp", f"{name}:/tmp/in.bin", str(Path(tmp, "out.bin")))
            self.assertEqual(Path(tmp, "out.bin").read_bytes(), src.read_bytes())
            stat = self.docker("cp", f"{name}:/nonexistent", tmp)
            self.assertNotEqual(stat.returncode, 0)
            self.assertIn(b"nonexistent", stat.stderr)

    def test_export_is_byte_identical(self) -> None:
        name = self.background("sh", "-c", "head -c 3000000 /dev/urandom > /data; sleep 300")
        time.sleep(1)
        through = self.ok("export", name)
        straight = direct("export", name).stdout
        self.assertGreater(len(through), 3000000)
        self.assertEqual(hashlib.sha256(through).hexdigest(), hashlib.sha256(straight).hexdigest())

    def test_save_and_load(self) -> None:
        tag = f"ps-e2e-load-{uuid.uuid4().hex[:8]}"
        self.assertEqual(direct("tag", IMAGE, tag).returncode, 0)
        self.addCleanup(direct, "rmi", "-f", tag)
        saved = self.ok("save", tag)
        self.assertEqual(hashlib.sha256(saved).digest(), hashlib.sha256(direct("save", tag).stdout).digest())
        direct("rmi", tag)
        self.assertIn(f"Loaded image: {tag}".encode(), self.ok("load", input=saved))
        self.assertEqual(direct("image", "inspect", tag).returncode, 0)

    def test_stats_stream(self) -> None:
        name = self.background("sleep", "300")
        proc = self._popen("stats", "--format", "{{.Name}}", name)
        # The 28.x CLI redraws with escape sequences; count updates by the name.
        lines = timed_lines(proc, 8, timeout=30)
        updates = [t for t, text in lines if name.encode() in text]
        self.assertGreaterEqual(len(updates), 2, f"fewer than two stats updates: {lines}")
        self.assertIsNone(proc.poll(), "the stats stream must still be open")

    def test_classic_build(self) -> None:
        tag = f"ps-e2e-build-{uuid.uuid4().hex[:8]}"
        with tempfile.TemporaryDirectory() as ctx:
            Path(ctx, "Dockerfile").write_text(f"FROM {IMAGE}\nCOPY payload /payload\nRUN echo built >> /payload\n")
            Path(ctx, "payload").write_text("from-context\n")
            self.ok("build", "-q", "-t", tag, ctx, env={"DOCKER_BUILDKIT": "0"})
        self.addCleanup(direct, "rmi", "-f", tag)
        self.assertEqual(self.ok("run", "--rm", tag, "cat", "/payload"), b"from-context\nbuilt\n")

    def test_error_message_relayed(self) -> None:
        result = self.docker("start", "ps-e2e-no-such-container")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"No such container: ps-e2e-no-such-container", result.stderr)


class TransparencyDocker28(_Transparency, TestCase):
    """The 28.x CLI (/usr/local/bin/docker)."""

    cli = CLIS["docker 28"]


class TransparencyDocker2010(_Transparency, TestCase):
    """Debian's 20.10 CLI (/usr/bin/docker), which also speaks BuildKit's h2c session."""

    cli = CLIS["docker 20.10"]

    def test_buildkit_build(self) -> None:
        # BuildKit: POST /session upgrades to h2c, the daemon speaks first, and
        # many repeated X-Docker-Expose-Session-Grpc-Method headers must survive.
        tag = f"ps-e2e-bk-{uuid.uuid4().hex[:8]}"
        with tempfile.TemporaryDirectory() as ctx:
            Path(ctx, "Dockerfile").write_text(f"FROM {IMAGE}\nCOPY payload /payload\n")
            Path(ctx, "payload").write_text("via-buildkit\n")
            self.ok("build", "-t", tag, ctx, env={"DOCKER_BUILDKIT": "1"}, timeout=300)
        self.addCleanup(direct, "rmi", "-f", tag)
        self.assertEqual(self.ok("run", "--rm", tag, "cat", "/payload"), b"via-buildkit\n")
        self.assertIn("/session", self.proxy.log_text())


class AttachWithBody(TestCase):
    """An attach whose request carries a body (``{}``, as a raw client may: the soak
    does): the container's stdin gets exactly what the client streamed after the upgrade.

    dockerd reads such a body together with the head and drops it; one that reached it apart
    from the head became the container's first stdin bytes (the soak's ``{}`` + payload).
    """

    def setUp(self) -> None:
        require_daemon()
        self.proxy = shared_powerstrip(type(self).__name__)

    def attach_echo(self, payload: bytes) -> bytes:
        made = direct(
            *("create", "-i", "--label", LABEL, "--network", "none", IMAGE, "cat"),
        )
        cid = made.stdout.decode().strip()
        self.addCleanup(direct, "rm", "-f", cid)
        sock = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=30)
        self.addCleanup(sock.close)
        sock.sendall(
            f"POST /v1.41/containers/{cid}/attach?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\n"
            "Host: docker\r\nContent-Type: application/json\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
            "Content-Length: 2\r\n\r\n{}".encode()
        )
        got = b""
        while b"\r\n\r\n" not in got:
            got += sock.recv(65536)
        head, _, data = got.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 101"), head)
        self.assertEqual(direct("start", cid).returncode, 0)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            data += chunk
        out = b""
        while len(data) >= 8:  # stdout/stderr frames: stream, 3 zero bytes, big-endian length
            size = struct.unpack(">I", data[4:8])[0]
            out, data = out + data[8 : 8 + size], data[8 + size :]
        return out

    def test_stdin_is_what_was_streamed(self) -> None:
        # Without the one write, about half of such sessions got "{}" first.
        for i in range(8):
            payload = b"line %d\n" % i
            self.assertEqual(self.attach_echo(payload), payload)
