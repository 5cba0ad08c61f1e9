"""Helpers for end-to-end tests: a real dockerd, a real Powerstrip process, real CLIs.

The tests talk to the daemon at ``unix:///var/run/docker.sock`` (override with
``POWERSTRIP_TEST_DOCKER``). Without a daemon they are skipped, except under
CI (``CI`` set), where a missing daemon is a failure: CI must not go green
having tested nothing.

This is the one support module of the end-to-end tests: what more than one
of them uses lives here (TLS certificates, a real registry, second dockerds,
Powerstrip and adapter processes), so that no test module imports another.
"""

from __future__ import annotations

import atexit
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest

from powerstrip.sdk.testing import AdapterProcess, PowerstripProcess, free_port, wait_for_port
from tests.certs import CA

REPO = Path(__file__).resolve().parents[2]
DOCKER_SOCK = os.environ.get("POWERSTRIP_TEST_DOCKER", "unix:///var/run/docker.sock")
CLIS = {"docker 28": "/usr/local/bin/docker", "docker 20.10": "/usr/bin/docker"}
IMAGE = "busybox:latest"
LABEL = "powerstrip-e2e=1"
PASSTHROUGH = "version: 1\nendpoints: {}\nadapters: {}\n"


def run(
    cmd: list[str],
    *,
    host: str | None = None,
    input: bytes | None = None,
    timeout: float = 60,
    env: dict | None = None,
    user: int | None = None,
    group: int | None = None,
) -> subprocess.CompletedProcess:
    """Run ``cmd`` with ``DOCKER_HOST=host`` (as ``user``/``group`` if given); returns the
    completed process (bytes output)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("DOCKER_CONTEXT", None)
    if host is not None:
        full_env["DOCKER_HOST"] = host
    return subprocess.run(cmd, input=input, capture_output=True, timeout=timeout, env=full_env, user=user, group=group)


def direct(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The 28.x CLI straight to dockerd (no Powerstrip): for set-up and checks."""
    return run([CLIS["docker 28"], *args], host=DOCKER_SOCK, timeout=timeout)


def require_daemon() -> None:
    """Skip (or, under CI, fail) unless a real dockerd answers."""
    missing = [path for path in CLIS.values() if not os.path.exists(path)]
    problem = None
    if missing:
        problem = f"docker CLI(s) missing: {', '.join(missing)}"
    else:
        try:
            if direct("version", "--format", "{{.Server.Version}}", timeout=20).returncode != 0:
                problem = f"no Docker daemon answers at {DOCKER_SOCK}"
        except subprocess.TimeoutExpired:
            problem = f"the Docker daemon at {DOCKER_SOCK} does not answer"
    if problem is None:
        ensure_busybox_image()
        return
    if os.environ.get("CI"):
        raise RuntimeError(f"end-to-end tests need a real dockerd under CI: {problem}")
    raise SkipTest(problem)


def ensure_busybox_image() -> None:
    """Make ``busybox:latest`` offline from busybox-static if the daemon lacks it."""
    if direct("image", "inspect", IMAGE).returncode == 0:
        return
    busybox = shutil.which("busybox") or "/bin/busybox"
    with tempfile.TemporaryDirectory() as root:
        bindir = Path(root, "bin")
        bindir.mkdir()
        shutil.copy(busybox, bindir / "busybox")
        applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
        for applet in applets:
            if applet != "busybox":
                (bindir / applet).symlink_to("busybox")
        for d in ("etc", "tmp", "root"):
            Path(root, d).mkdir()
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            [CLIS["docker 28"], "-H", DOCKER_SOCK, "import", "-", IMAGE],
            stdin=tar.stdout,
            check=True,
            capture_output=True,
        )
        tar.wait()


def raw_request(
    port: int,
    target: str,
    body: bytes,
    headers: list[bytes] = (),
    chunked: bool = False,
    content_type: bytes | None = b"application/json",
    method: str = "POST",
) -> tuple[int, bytes]:
    """One request to Powerstrip's TCP ``port`` written byte for byte (``Connection: close``,
    the body framed by length or in two chunks); ``(status, body)`` of the answer."""
    head = [f"{method} {target} HTTP/1.1".encode(), b"Host: docker"]
    if content_type is not None:
        head.append(b"Content-Type: " + content_type)
    head += list(headers)
    if chunked:
        head.append(b"Transfer-Encoding: chunked")
        mid = len(body) // 2
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:mid], body[mid:]) if p) + b"0\r\n\r\n"
    else:
        head.append(b"Content-Length: %d" % len(body))
        payload = body
    head.append(b"Connection: close")
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(b"\r\n".join(head) + b"\r\n\r\n" + payload)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[-1]


class Powerstrip(PowerstripProcess):
    """A real ``twistd -n powerstrip`` process run from this checkout, in front of the real dockerd."""

    def __init__(self, config_text: str = PASSTHROUGH, extra: list[str] | None = None, env: dict | None = None) -> None:
        super().__init__(
            config_text,
            docker=DOCKER_SOCK,
            args=extra or (),
            env={"PYTHONPATH": str(REPO), **(env or {})},
            cwd=str(REPO),
        )

    def rss_kib(self, field: str = "VmRSS") -> int:
        """The process's resident memory (``VmRSS``) or its peak (``VmHWM``), in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"no {field} for pid {self.proc.pid}")


def shell_policy_adapter(test: Any) -> str:
    """Start examples/policy_adapter.sh behind socat for ``test`` (stopped at its clean-up); its URL."""
    socat = shutil.which("socat")
    if socat is None:
        raise RuntimeError("socat is needed for the shell adapter test (apt-get install socat)")
    port = free_port()
    proc = subprocess.Popen(
        [
            socat,
            f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
            f"SYSTEM:sh {REPO / 'examples' / 'policy_adapter.sh'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    test.addCleanup(lambda: (proc.terminate(), proc.wait(10)))
    wait_for_port(port, proc, "socat")
    return f"http://127.0.0.1:{port}/policy"


class SDKAdapter(AdapterProcess):
    """An SDK adapter module of this checkout served by ``twistd -n powerstrip-adapter``."""

    def __init__(self, module: str, env: dict | None = None) -> None:
        super().__init__(module, env={"PYTHONPATH": str(REPO), **(env or {})}, cwd=str(REPO), path="/")


class SecondDockerd:
    """Another real dockerd, in a directory of its own, for tests that must restart
    or reconfigure one: never the shared daemon the other tests use.

    ``host`` is its ``-H`` address; ``args`` more dockerd options; ``env`` the
    docker CLI's environment to reach it (TLS).
    """

    def __init__(self, directory: Path, host: str, args: list[str] | None = None, env: dict | None = None) -> None:
        self.dir = directory  # keep it short: the exec-root holds unix sockets
        self.dir.mkdir(exist_ok=True)
        self.data_root = self.dir / "data"
        self.host = host
        self.args = args or []
        self.env = env
        self.log = self.dir / "dockerd.log"
        # Its own bridge: with "--bridge none" dockerd deletes docker0, which
        # belongs to the main daemon (and would break its containers).
        self.bridge = f"ps{uuid.uuid4().hex[:10]}"
        subprocess.run(["ip", "link", "add", "name", self.bridge, "type", "bridge"], check=True, capture_output=True)
        self.proc: subprocess.Popen | None = None
        try:
            self.start()
        except RuntimeError:
            self.stop()
            raise

    def start(self) -> None:
        """Start it (again, on the same data) and wait until it answers."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    "dockerd",
                    "--data-root",
                    str(self.data_root),
                    "--exec-root",
                    str(self.dir / "exec"),
                    "--pidfile",
                    str(self.dir / "pid"),
                    "-H",
                    self.host,
                    *self.args,
                    "--storage-driver",
                    "vfs",
                    "--bridge",
                    self.bridge,
                    "--iptables=false",
                    "--ip6tables=false",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 60
        while self.direct("version", "--format", "{{.Server.Version}}", timeout=10).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the second dockerd did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def direct(self, *args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        """The 28.x CLI straight to this daemon (no Powerstrip)."""
        return run([CLIS["docker 28"], *args], host=self.host, input=input, env=self.env, timeout=timeout)

    def terminate(self) -> None:
        """SIGTERM it and wait until it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stop(self) -> None:
        """Remove its containers, stop it, unmount leftovers, remove its files and bridge."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                ids = self.direct("ps", "-aq", timeout=30).stdout.split()
                if ids:
                    self.direct("rm", "-f", *[i.decode() for i in ids], timeout=60)
            except subprocess.TimeoutExpired:
                pass
        self.terminate()
        prefix = str(self.dir) + "/"
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)


class LabelAdapter:
    """The example adapter (examples/label_adapter.py) as a real process."""

    def __init__(self, unix: bool = False) -> None:
        """On a free loopback port, or (``unix``) on a unix socket in its own directory."""
        self.dir = Path(tempfile.mkdtemp(prefix="adapter-e2e-"))
        self.record = self.dir / "payloads.jsonl"
        cmd = [sys.executable, str(REPO / "examples" / "label_adapter.py"), "--record", str(self.record)]
        if unix:
            sock = self.dir / "label.sock"
            self.url = "http+unix://" + str(sock).replace("/", "%2F") + "/adapter"
            self.proc = subprocess.Popen(
                [*cmd, "--unix", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            deadline = time.monotonic() + 20
            while not sock.exists() and self.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if not sock.exists():
                raise RuntimeError("the label adapter did not create its unix socket")
            return
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/adapter"
        self.proc = subprocess.Popen(
            [*cmd, "--port", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port, self.proc, "label adapter")

    def payloads(self) -> list[dict]:
        """Every payload the adapter received so far, in order."""
        import json

        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line]

    def stop(self) -> None:
        """Stop it and remove its files."""
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


_shared: dict[str, Powerstrip] = {}


def shared_powerstrip(key: str, config_text: str = PASSTHROUGH) -> Powerstrip:
    """One Powerstrip process per ``key`` for the whole test run (trial has no
    setUpClass); all are stopped, and labelled containers removed, at exit."""
    if key not in _shared:
        if not _shared:
            atexit.register(_stop_shared)
        _shared[key] = Powerstrip(config_text)
    return _shared[key]


def _stop_shared() -> None:
    for proxy in _shared.values():
        proxy.stop()
    _shared.clear()
    remove_test_containers()


def remove_test_containers() -> None:
    """Remove every container the e2e tests labelled."""
    ids = direct("ps", "-aq", "--filter", f"label={LABEL}").stdout.split()
    if ids:
        direct("rm", "-f", *[i.decode() for i in ids])


def timed_lines(proc: subprocess.Popen, want: int | None = None, timeout: float = 60) -> list[tuple[float, bytes]]:
    """Lines of ``proc``'s stdout, each with the time it arrived: ``want`` of them, or (``None``)
    all until it closes stdout; at most ``timeout`` seconds. Streams are proven live by the
    arrival times being apart."""
    lines: list[tuple[float, bytes]] = []
    buf = b""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while (want is None or len(lines) < want) and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf and (want is None or len(lines) < want):
            line, buf = buf.split(b"\n", 1)
            lines.append((time.monotonic(), line))
    return lines


# -- TLS certificates, made once per run ----------------------------------------------

_tls: dict[str, dict[str, Path]] = {}


def certs() -> dict[str, Path]:
    """Certificate directories (Docker's layout), made once: ``server`` (for
    Powerstrip's listener and a TLS dockerd), ``client``, and ``wrong`` (a
    client certificate from another CA, trusting the right server CA), ``ca-only``
    (the right CA, no client certificate). Removed at exit."""
    if "certs" not in _tls:
        base = Path(tempfile.mkdtemp(prefix="pstls-"))
        atexit.register(shutil.rmtree, base, True)
        ca, other = CA(), CA("some other CA")
        dirs = {
            "server": ca.write(base / "server", "localhost", server=True),
            "client": ca.write(base / "client", "powerstrip-e2e-client", server=False),
            "wrong": other.write(base / "wrong", "intruder", server=False),
        }
        (dirs["wrong"] / "ca.pem").write_bytes(ca.pem)
        dirs["ca-only"] = base / "ca-only"
        dirs["ca-only"].mkdir()
        (dirs["ca-only"] / "ca.pem").write_bytes(ca.pem)
        _tls["certs"] = dirs
    return _tls["certs"]


def tls_env(cert_dir: Path) -> dict[str, str]:
    """The docker CLI's environment for TLS with the certificates in ``cert_dir``."""
    return {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(cert_dir)}


def tls_verify_args(cert_dir: Path) -> list[str]:
    """A server's ``--tlsverify`` options (dockerd's and Powerstrip's are the same) for the
    certificates in ``cert_dir``."""
    return [
        "--tlsverify",
        "--tlscacert",
        str(cert_dir / "ca.pem"),
        "--tlscert",
        str(cert_dir / "cert.pem"),
        "--tlskey",
        str(cert_dir / "key.pem"),
    ]


# -- a real registry, started once per run --------------------------------------------
#
# Debian's ``docker-registry`` (the CNCF distribution registry 2.8) on loopback (dockerd
# treats loopback registries as insecure-allowed, so no TLS is needed) with htpasswd
# (bcrypt) authentication. dockerd reaches it through a throttling TCP relay, so that a
# push or pull of a few MiB takes a couple of seconds and its progress stream is seen
# arriving as it happens.

REGISTRY = "/usr/bin/docker-registry"
USER, PASSWORD = "alice", "s3cret-e2e"
#: Bytes per second, each way, per connection through the relay: 3 MiB take about 1.5 s.
RATE = 2 * 1024 * 1024

_registry: dict[str, Registry] = {}


class Throttle:
    """A TCP relay on a free loopback port to ``target``, at most ``RATE`` bytes/s each way."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        chunk = 64 * 1024
        try:
            while data := src.recv(chunk):
                dst.sendall(data)
                time.sleep(len(data) / RATE)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def stop(self) -> None:
        """Stop accepting (open relays end with their connections)."""
        self.server.close()


class Registry:
    """``docker-registry serve`` on a free loopback port, htpasswd auth, storage in a temp dir."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ps-registry-"))
        self.port = free_port()
        entry = subprocess.run(["htpasswd", "-nbB", USER, PASSWORD], capture_output=True, text=True, check=True)
        (self.dir / "htpasswd").write_text(entry.stdout.strip() + "\n")
        (self.dir / "config.yml").write_text(f"""\
version: 0.1
log: {{level: warn}}
storage:
  filesystem: {{rootdirectory: {self.dir / "data"}}}
http: {{addr: "127.0.0.1:{self.port}"}}
auth:
  htpasswd: {{realm: powerstrip-e2e, path: {self.dir / "htpasswd"}}}
""")
        self.log = open(self.dir / "registry.log", "wb")
        self.proc = subprocess.Popen(
            [REGISTRY, "serve", str(self.dir / "config.yml")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc, "docker-registry", self.dir / "registry.log")
        self.relay = Throttle(self.port)
        #: What image names start with: the registry as dockerd reaches it (through the relay).
        self.host = f"127.0.0.1:{self.relay.port}"

    def stop(self) -> None:
        """Stop it and remove its storage."""
        self.relay.stop()
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def registry() -> Registry:
    """The registry of this test run, started once."""
    if "registry" not in _registry:
        missing = [tool for tool in (REGISTRY, shutil.which("htpasswd")) if not tool or not os.path.exists(tool)]
        if missing or not shutil.which("htpasswd"):
            what = "docker-registry and htpasswd (apt-get install docker-registry apache2-utils)"
            if os.environ.get("CI"):
                raise RuntimeError(f"the registry end-to-end tests need {what} under CI (see ci/test.sh)")
            raise SkipTest(f"{what} not installed")
        _registry["registry"] = Registry()
        atexit.register(_registry["registry"].stop)
    return _registry["registry"]
