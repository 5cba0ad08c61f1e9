"""Hook semantics end to end: a real adapter process, a real Powerstrip, a real dockerd."""

from __future__ import annotations

import json
import socket
import uuid

from twisted.trial.unittest import TestCase

from tests.e2e.support import (
    CLIS,
    IMAGE,
    LABEL,
    LabelAdapter,
    Powerstrip,
    direct,
    free_port,
    require_daemon,
    run,
)


def _config(adapter_url: str, down_url: str) -> str:
    return f"""
version: 1
endpoints:
  "POST /*/containers/create":
    pre: [label]
  "* /*/containers/*":
    post: [label]
  "POST /*/volumes/create":
    pre: [down]
adapters:
  label: {adapter_url}
  down: {down_url}
"""


def raw_request(port: int, method: str, path: str, body: bytes = b"", ctype: str = "application/json") -> tuple:
    """One HTTP/1.1 request on a fresh socket; returns (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        s.sendall(head + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), rest


class _Hooks:
    cli: str
    unix_adapter = False

    def setUp(self) -> None:
        require_daemon()
        self.adapter = LabelAdapter(unix=self.unix_adapter)
        self.addCleanup(self.adapter.stop)
        self.down_url = f"http://127.0.0.1:{free_port()}/nobody-home"
        self.proxy = Powerstrip(_config(self.adapter.url, self.down_url))
        self.addCleanup(self.proxy.stop)

    def docker(self, *args: str, input: bytes | None = None):
        return run([self.cli, *args], host=self.proxy.url, input=input)

    def name(self) -> str:
        name = f"ps-e2e-{uuid.uuid4().hex[:10]}"
        self.addCleanup(direct, "rm", "-f", name)
        return name

    def test_pre_hook_rewrites_create(self) -> None:
        name = self.name()
        result = self.docker(
            "run", "--label", LABEL, "--name", name, IMAGE, "sh", "-c", "echo hooked=$POWERSTRIP_HOOKED"
        )
        self.assertEqual(result.stdout, b"hooked=1\n", result.stderr)
        labels = json.loads(direct("inspect", "--format", "{{json .Config.Labels}}", name).stdout)
        self.assertEqual(labels.get("powerstrip.example"), "hooked")
        pre = [p for p in self.adapter.payloads() if p["Type"] == "pre-hook"]
        self.assertEqual(len(pre), 1)
        self.assertEqual(pre[0]["PowerstripProtocolVersion"], 1)
        self.assertEqual(pre[0]["ClientRequest"]["Method"], "POST")
        self.assertTrue(pre[0]["ClientRequest"]["Request"].endswith(f"/containers/create?name={name}"))
        self.assertEqual(json.loads(pre[0]["ClientRequest"]["Body"])["Image"], IMAGE)

    def test_refusal_never_reaches_docker(self) -> None:
        name = self.name()
        result = self.docker("run", "--rm", "--label", "powerstrip.refuse=not today", "--name", name, IMAGE, "true")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"refused by label-adapter: not today", result.stderr)
        self.assertNotEqual(direct("inspect", name).returncode, 0, "the refused container must not exist")

    def test_post_hook_runs_on_docker_errors(self) -> None:
        result = self.docker("start", "ps-e2e-does-not-exist")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"[label-adapter] No such container: ps-e2e-does-not-exist", result.stderr)
        post = [p for p in self.adapter.payloads() if p["Type"] == "post-hook"]
        self.assertEqual(post[-1]["ServerResponse"]["Code"], 404)

    def test_adapter_down_is_a_clear_error(self) -> None:
        result = self.docker("volume", "create", "ps-e2e-vol")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"powerstrip: adapter 'down' ({self.down_url}): cannot connect".encode(), result.stderr)
        self.assertNotEqual(direct("volume", "inspect", "ps-e2e-vol").returncode, 0)
        # ...and Powerstrip keeps serving.
        self.assertEqual(self.docker("run", "--rm", IMAGE, "echo", "still").stdout, b"still\n")

    def test_unversioned_paths_hit_versioned_rules(self) -> None:
        name = self.name()
        body = json.dumps({"Image": IMAGE, "Cmd": ["true"], "Labels": {"powerstrip-e2e": "1"}}).encode()
        status, _ = raw_request(self.proxy.port, "POST", f"/containers/create?name={name}", body)
        self.assertEqual(status, 201)
        labels = json.loads(direct("inspect", "--format", "{{json .Config.Labels}}", name).stdout)
        self.assertEqual(labels.get("powerstrip.example"), "hooked")
        self.assertIn(
            f"/containers/create?name={name}", [p["ClientRequest"]["Request"] for p in self.adapter.payloads()]
        )


class HooksDocker28(_Hooks, TestCase):
    cli = CLIS["docker 28"]


class HooksDocker2010(_Hooks, TestCase):
    cli = CLIS["docker 20.10"]


class HooksUnixSocketAdapter(_Hooks, TestCase):
    """The same, with the adapter on a unix socket (``http+unix://``) instead of a port."""

    cli = CLIS["docker 28"]
    unix_adapter = True


class DockerPy(TestCase):
    """docker-py (7.x) pools connections and upgrades reused ones."""

    def setUp(self) -> None:
        require_daemon()
        import docker

        self.proxy = Powerstrip()
        self.addCleanup(self.proxy.stop)
        self.client = docker.DockerClient(base_url=self.proxy.url, timeout=60)
        self.addCleanup(self.client.close)

    def test_run_logs_exec_archive(self) -> None:
        c = self.client
        self.assertEqual(c.containers.run(IMAGE, "echo from-docker-py", remove=True), b"from-docker-py\n")
        ct = c.containers.run(IMAGE, "sh -c 'echo one; sleep 300'", detach=True, labels={"powerstrip-e2e": "1"})
        self.addCleanup(ct.remove, force=True)
        stream = ct.logs(stream=True, follow=True)
        self.assertEqual(next(stream), b"one\n")
        result = ct.exec_run("sh -c 'echo ex; exit 2'")
        self.assertEqual((result.exit_code, result.output), (2, b"ex\n"))
        import io
        import tarfile

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo("hello.txt")
            info.size = 6
            tar.addfile(info, io.BytesIO(b"hello\n"))
        self.assertTrue(ct.put_archive("/tmp", buf.getvalue()))
        bits, stat = ct.get_archive("/tmp/hello.txt")
        with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as tar:
            self.assertEqual(tar.extractfile("hello.txt").read(), b"hello\n")
        self.assertEqual(stat["size"], 6)

    def test_attach_upgrade_on_reused_connection(self) -> None:
        api = self.client.api
        api.ping()
        api.version()
        ct = api.create_container(IMAGE, "sh -c 'read x; echo got-$x'", stdin_open=True, labels={"powerstrip-e2e": "1"})
        self.addCleanup(api.remove_container, ct, force=True)
        sock = api.attach_socket(ct, params={"stdin": 1, "stdout": 1, "stream": 1})
        api.start(ct)
        raw = sock._sock
        raw.sendall(b"py\n")
        raw.shutdown(socket.SHUT_WR)
        raw.settimeout(30)
        data = b""
        while chunk := raw.recv(65536):
            data += chunk
        sock.close()
        # Multiplexed frames: 8-byte header (stream, 0, 0, 0, size) + payload.
        self.assertEqual(data[:1], b"\x01")
        self.assertEqual(data[8:], b"got-py\n")
        self.assertEqual(api.wait(ct)["StatusCode"], 0)

    def test_error_response(self) -> None:
        import docker

        with self.assertRaises(docker.errors.NotFound) as ctx:
            self.client.containers.get("ps-e2e-missing")
        self.assertIn("No such container", str(ctx.exception))


class DockerDown(TestCase):
    """dockerd unreachable: a readable 502, and the proxy keeps serving."""

    def test_cannot_reach_docker(self) -> None:
        missing = "/tmp/powerstrip-e2e-no-docker.sock"
        proxy = Powerstrip(extra=["--docker", f"unix://{missing}"])
        self.addCleanup(proxy.stop)
        for _ in range(2):
            result = run([CLIS["docker 28"], "version"], host=proxy.url)
            self.assertIn(f"powerstrip: cannot reach Docker at unix://{missing}".encode(), result.stderr)
        self.assertTrue(proxy.alive())


class Reload(TestCase):
    """SIGHUP re-reads adapters.yml; an invalid new file leaves the old one in force."""

    def test_sighup(self) -> None:
        import signal
        import time

        require_daemon()
        down = f"http://127.0.0.1:{free_port()}/nobody-home"
        guarded = f'version: 1\nendpoints:\n  "POST /*/volumes/create":\n    pre: [down]\nadapters:\n  down: {down}\n'
        proxy = Powerstrip(guarded)
        self.addCleanup(proxy.stop)
        self.addCleanup(direct, "volume", "rm", "-f", "ps-e2e-reload")
        docker = CLIS["docker 28"]

        def create() -> bytes:
            return run([docker, "volume", "create", "ps-e2e-reload"], host=proxy.url).stderr

        def reload_with(text: str, expect_log: str) -> None:
            (proxy.dir / "adapters.yml").write_text(text)
            proxy.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while expect_log not in proxy.log_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertIn(expect_log, proxy.log_text())

        self.assertIn(b"powerstrip: adapter 'down'", create())
        reload_with("version: 1\nendpoints: {}\nadapters: {}\n", "reloaded")
        self.assertEqual(create(), b"")
        direct("volume", "rm", "-f", "ps-e2e-reload")
        reload_with("version: 1\nendpoints: [oops]\n", "reload rejected")
        self.assertIn("'endpoints' must be a mapping", proxy.log_text())
        self.assertEqual(create(), b"", "the old (pass-through) config stays in force")
        self.assertTrue(proxy.alive())

    def test_watch_config(self) -> None:
        """``--watch-config``: saving the file is enough; a broken save is rejected, the fix taken."""
        import time

        require_daemon()
        proxy = Powerstrip(extra=["--watch-config"])
        self.addCleanup(proxy.stop)
        self.addCleanup(direct, "volume", "rm", "-f", "ps-e2e-watch")
        docker = CLIS["docker 20.10"]
        down = f"http://127.0.0.1:{free_port()}/nobody-home"
        guarded = f'version: 1\nendpoints:\n  "POST /*/volumes/create":\n    pre: [down]\nadapters:\n  down: {down}\n'

        def save_and_wait(text: str, expect_log: str, count: int) -> None:
            (proxy.dir / "adapters.yml.tmp").write_text(text)
            (proxy.dir / "adapters.yml.tmp").replace(proxy.dir / "adapters.yml")
            deadline = time.monotonic() + 10
            while proxy.log_text().count(expect_log) < count and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertEqual(proxy.log_text().count(expect_log), count)

        def create() -> bytes:
            return run([docker, "volume", "create", "ps-e2e-watch"], host=proxy.url).stderr

        self.assertEqual(create(), b"")
        save_and_wait(guarded, "reloaded", 1)
        self.assertIn(b"powerstrip: adapter 'down'", create())
        save_and_wait("version: 1\nendpoints: [oops]\n", "reload rejected", 1)
        self.assertIn(b"powerstrip: adapter 'down'", create())
        save_and_wait("version: 1\nendpoints: {}\nadapters: {}\n", "reloaded", 2)
        self.assertEqual(create(), b"")
        self.assertTrue(proxy.alive())


class UnixListener(TestCase):
    """A drop-in Docker socket: `--listen unix:PATH:mode=660`, stale socket cleaned up."""

    def test_docker_over_powerstrip_socket(self) -> None:
        import os
        import socket as socketlib
        import stat
        import tempfile

        require_daemon()
        tmp = tempfile.mkdtemp(prefix="ps-e2e-unix-")
        path = os.path.join(tmp, "powerstrip.sock")
        stale = socketlib.socket(socketlib.AF_UNIX)
        stale.bind(path)  # left behind: nobody accepts on it
        stale.close()
        proxy = Powerstrip(extra=["--listen", f"unix:{path}:mode=660"])
        self.addCleanup(proxy.stop)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o660)
        for cli in CLIS.values():
            result = run(
                [cli, "run", "--rm", "-i", IMAGE, "sh", "-c", "cat; echo unix-ok"], host=f"unix://{path}", input=b"in-"
            )
            self.assertEqual(result.stdout, b"in-unix-ok\n", result.stderr)
        self.assertIn("removing stale socket", proxy.log_text())


class GracefulShutdown(TestCase):
    """SIGTERM: stop accepting, let requests in flight finish, close streams, exit 0."""

    def test_in_flight_run_completes(self) -> None:
        import os
        import signal
        import subprocess
        import time

        require_daemon()
        proxy = Powerstrip()
        self.addCleanup(proxy.stop)
        env = {**os.environ, "DOCKER_HOST": proxy.url}
        run_proc = subprocess.Popen(
            [CLIS["docker 28"], "run", "--rm", IMAGE, "sh", "-c", "sleep 3; echo finished"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.addCleanup(lambda: (run_proc.kill(), run_proc.wait()))
        # Created, attached, started: now waiting on `wait` (a fixed sleep is
        # not enough on a loaded machine, where `create` alone can take seconds).
        deadline = time.monotonic() + 30
        while "/start -> 204" not in proxy.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIn("/start -> 204", proxy.log_text())
        proxy.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()
        out, err = run_proc.communicate(timeout=30)
        self.assertEqual((run_proc.returncode, out), (0, b"finished\n"), err)
        self.assertEqual(proxy.proc.wait(30), 0)

    def test_endless_stream_is_cut_after_drain_timeout(self) -> None:
        import os
        import signal
        import subprocess
        import time

        require_daemon()
        proxy = Powerstrip(extra=["--drain-timeout", "1"])
        self.addCleanup(proxy.stop)
        env = {**os.environ, "DOCKER_HOST": proxy.url}
        events = subprocess.Popen(
            [CLIS["docker 28"], "events"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        self.addCleanup(lambda: (events.kill(), events.wait()))
        time.sleep(1)
        started = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        self.assertEqual(proxy.proc.wait(20), 0)
        events.wait(20)  # the client's stream ended too
        self.assertLess(time.monotonic() - started, 15)


class Admin(TestCase):
    """``--admin``: liveness and readiness, with the real dockerd up and with none there."""

    def probe(self, port: int, path: str) -> tuple[int, dict]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def test_ready_with_docker_and_not_without(self) -> None:
        require_daemon()
        admin = free_port()
        proxy = Powerstrip(extra=["--admin", f"tcp:{admin}:interface=127.0.0.1"])
        self.addCleanup(proxy.stop)
        self.assertEqual(self.probe(admin, "/healthz"), (200, {"status": "alive"}))
        code, body = self.probe(admin, "/readyz")
        self.assertEqual((code, body["docker"]), (200, "ok"))
        admin2 = free_port()
        down = Powerstrip(
            extra=["--docker", "unix:///nonexistent/docker.sock", "--admin", f"tcp:{admin2}:interface=127.0.0.1"]
        )
        self.addCleanup(down.stop)
        self.assertEqual(self.probe(admin2, "/healthz")[0], 200)
        code, body = self.probe(admin2, "/readyz")
        self.assertEqual(code, 503)
        self.assertTrue(body["docker"].startswith("cannot reach Docker at unix:///nonexistent/docker.sock"), body)
