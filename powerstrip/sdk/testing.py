"""A test kit for adapter authors: a real Powerstrip, a fake dockerd, a recording adapter.

Everything here is synchronous and runs real things: Powerstrip is a
``twistd -n powerstrip`` child process (the same code users run), the
recording adapter and the fake dockerd are standard-library HTTP servers on
background threads. So it works the same from pytest, trial or unittest, and
an adapter under test can be written in any language. Each helper is a
context manager; use it in a fixture::

    import pytest
    from powerstrip.sdk.testing import FakeDocker, PowerstripProcess, RecordingAdapter

    @pytest.fixture
    def proxy():
        with FakeDocker() as docker, RecordingAdapter() as adapter:
            config = {"endpoints": {"POST /*/containers/create": {"pre": ["rec"]}},
                      "adapters": {"rec": adapter.url}}
            with PowerstripProcess(config, docker=docker.url) as proxy:
                yield proxy, adapter, docker

    def test_create_is_hooked(proxy):
        proxy, adapter, docker = proxy
        proxy.request("POST", "/v1.47/containers/create", {"Image": "busybox"})
        adapter.assert_received("pre-hook", "POST /*/containers/create")

Point ``docker`` at a real daemon (``unix:///var/run/docker.sock``) and drive
it with the real CLI through :meth:`PowerstripProcess.docker` for an
end-to-end test.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from powerstrip.wire.rules import parse_rule, rule_matches

#: Where a real dockerd usually is.
DOCKER_SOCKET = "unix:///var/run/docker.sock"
#: How long a running Powerstrip may hold access lines before they reach its log: it writes
#: them in batches within ``powerstrip.ops.access.FLUSH_DELAY`` (0.2 s); this adds a margin.
LOG_SETTLE = 0.3


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(
    port: int,
    proc: subprocess.Popen[bytes] | None = None,
    what: str = "server",
    log: Path | None = None,
    timeout: float = 30,
) -> None:
    """Wait until 127.0.0.1:``port`` accepts connections; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    detail = "".join(p.read_text(errors="replace") for p in (log, log and log.with_name("output")) if p and p.exists())
    raise RuntimeError(f"{what} did not start listening on {port}:\n{detail}")


def _twistd(*args: str) -> list[str]:
    # The current interpreter's twistd, whatever is (or is not) on PATH.
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", *args]


def _start(cmd: list[str], directory: Path, cwd: str | None, env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Output goes beside the log: a usage error is printed, not logged.
    with open(directory / "output", "wb") as out:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)


class _Process:
    """A child process with a temporary directory and a log file, stopped by SIGTERM."""

    proc: subprocess.Popen[bytes]
    dir: Path
    log: Path

    def log_text(self) -> str:
        """What the process logged so far."""
        return self.log.read_text() if self.log.exists() else ""

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc.poll() is None

    def stop(self, timeout: float = 30) -> None:
        """Stop it (SIGTERM, then SIGKILL after ``timeout`` s) and remove its files."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PowerstripProcess(_Process):
    """A real ``twistd -n powerstrip`` on a free loopback port.

    ``config`` is the adapters file: YAML text or the equivalent mapping
    (``version: 1`` is added when missing). ``docker`` is dockerd's address;
    ``args`` are more ``twistd powerstrip`` options; ``env`` adds to the
    environment (``cwd`` is where ``python:`` adapters are imported from).
    """

    def __init__(
        self,
        config: str | dict[str, Any] | None = None,
        docker: str = DOCKER_SOCKET,
        args: list[str] | tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="powerstrip-test-"))
        self.port = free_port()
        #: The Docker host to point clients at (``DOCKER_HOST``).
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.log = self.dir / "powerstrip.log"
        if isinstance(config, dict) or config is None:
            config = yaml.safe_dump({"version": 1, "endpoints": {}, "adapters": {}, **(config or {})})
        self.config_file = self.dir / "adapters.yml"
        self.config_file.write_text(config)
        cmd = _twistd(
            f"--logfile={self.log}",
            "powerstrip",
            "--config",
            str(self.config_file),
            "--docker",
            docker,
            "--listen",
            f"tcp:{self.port}:interface=127.0.0.1",
            *args,
        )
        full_env = {**os.environ, **(env or {})}
        full_env.pop("DOCKER_HOST", None)
        self.proc = _start(cmd, self.dir, cwd, full_env)
        wait_for_port(self.port, self.proc, "powerstrip", self.log)

    def log_text(self) -> str:
        """What Powerstrip logged so far, access lines included: while it runs, this first waits
        :data:`LOG_SETTLE` seconds, since it writes access lines in batches."""
        if self.alive():
            time.sleep(LOG_SETTLE)
        return super().log_text()

    def docker(
        self, *args: str, cli: str = "docker", input: bytes | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[bytes]:
        """Run the docker CLI (``cli``: a name on PATH or a path) through this Powerstrip."""
        env = {**os.environ, "DOCKER_HOST": self.url}
        env.pop("DOCKER_CONTEXT", None)
        return subprocess.run([cli, *args], input=input, capture_output=True, timeout=timeout, env=env)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request through Powerstrip (``body``: bytes, or an object sent as JSON).

        Returns ``(status, headers, body)``.
        """
        headers = dict(headers or {})
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


class AdapterProcess(_Process):
    """An SDK adapter served by ``twistd -n powerstrip-adapter --module MODULE`` on a free port."""

    def __init__(
        self, module: str, env: dict[str, str] | None = None, cwd: str | None = None, path: str = "/hook"
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="powerstrip-adapter-"))
        self.port = free_port()
        #: The URL to give the adapter in adapters.yml.
        self.url = f"http://127.0.0.1:{self.port}{path}"
        self.log = self.dir / "adapter.log"
        cmd = _twistd(
            f"--logfile={self.log}",
            "powerstrip-adapter",
            "--module",
            module,
            "--listen",
            f"tcp:{self.port}:interface=127.0.0.1",
        )
        self.proc = _start(cmd, self.dir, cwd, {**os.environ, **(env or {})})
        wait_for_port(self.port, self.proc, f"adapter {module}", self.log)


class _Threaded:
    """A standard-library HTTP server on a background thread."""

    server: socketserver.BaseServer

    def _serve(self) -> None:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Powerstrip pools connections

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, obj: Any, ctype: str = "application/json") -> None:
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except ConnectionError:
            # Powerstrip gave up on the call (its timeout, or its client left): no one to answer.
            self.close_connection = True

    def log_message(self, fmt: str, *args: object) -> None:
        pass  # tests read what was recorded, not an access log

    def address_string(self) -> str:
        return self.client_address[0] if self.client_address else "unix"


def echo(payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The identity hook, in the call's protocol version: hand the request (or
    response) back unchanged; acknowledge unwind and event calls."""
    version = payload.get("PowerstripProtocolVersion", 1)
    if payload["Type"] == "pre-hook":
        return 200, {"PowerstripProtocolVersion": version, "ModifiedClientRequest": payload["ClientRequest"]}
    if payload["Type"] == "post-hook":
        return 200, {"PowerstripProtocolVersion": version, "ModifiedServerResponse": payload["ServerResponse"]}
    return 200, {}


class RecordingAdapter(_Threaded):
    """An adapter that records every hook call and answers with ``reply(payload) -> (status, reply)``.

    The default reply passes everything through unchanged (:func:`echo`).
    """

    def __init__(self, reply: Callable[[dict[str, Any]], tuple[int, Any]] = echo) -> None:
        #: Every payload received, in order.
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(_Handler):
            def do_POST(self) -> None:
                payload = json.loads(self._body())
                with recorder._lock:
                    recorder.calls.append(payload)
                self._send(*reply(payload))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        #: The URL to give the adapter in adapters.yml.
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._serve()

    def received(self, kind: str | None = None, rule: str | None = None) -> list[dict[str, Any]]:
        """The calls of ``kind`` (``pre-hook``/``post-hook``) for requests matching ``rule``."""
        globs = parse_rule(rule) if rule else None
        with self._lock:
            calls = list(self.calls)
        return [
            c
            for c in calls
            if (kind is None or c.get("Type") == kind)
            and (globs is None or rule_matches(*globs, c["ClientRequest"]["Method"], c["ClientRequest"]["Request"]))
        ]

    def assert_received(
        self, kind: str | None = None, rule: str | None = None, count: int | None = None
    ) -> list[dict[str, Any]]:
        """Like :meth:`received`, but fail (listing every call there was) unless there are ``count``
        such calls, or at least one when ``count`` is None."""
        found = self.received(kind, rule)
        if (count is None and not found) or (count is not None and len(found) != count):
            seen = (
                "\n".join(
                    f"  {c.get('Type')} {c['ClientRequest']['Method']} {c['ClientRequest']['Request']}"
                    for c in self.calls
                )
                or "  (no calls)"
            )
            want = f"{count if count is not None else 'some'} {kind or 'hook'} call(s) for {rule or 'any request'}"
            raise AssertionError(f"expected {want}, got {len(found)}; the adapter received:\n{seen}")
        return found


class FakeDocker(_Threaded):
    """A stand-in dockerd on a unix socket, answering from ``routes``.

    ``routes`` maps ``"METHOD /path/glob"`` (query strings ignored, and the
    version prefix optional as in adapters.yml) to ``(status, body)`` (a body
    that is not bytes is sent as JSON). ``GET /_ping`` and ``GET /version``
    answer like dockerd (``_ping`` for any method); anything else is a Docker-style 404.
    """

    def __init__(self, routes: dict[str, tuple[int, Any]] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fake-docker-"))
        self.socket = self.dir / "docker.sock"
        #: The address to give Powerstrip's ``--docker``.
        self.url = f"unix://{self.socket}"
        #: Every request received: ``(method, path, body)``.
        self.requests: list[tuple[str, str, bytes]] = []
        # Bodies typed object, not Any: mypy takes reversed() of a list holding Any as Any.
        rules: list[tuple[tuple[str, str], tuple[int, object]]] = [
            (parse_rule(rule), answer)
            for rule, answer in {
                "* /*/_ping": (200, b"OK"),
                "GET /*/version": (200, {"ApiVersion": "1.47", "Version": "fake", "MinAPIVersion": "1.24"}),
                **(routes or {}),
            }.items()
        ]
        fake = self

        class Handler(_Handler):
            def _answer(self) -> None:
                fake.requests.append((self.command, self.path, self._body()))
                for globs, (status, body) in reversed(rules):
                    if rule_matches(*globs, self.command, self.path):
                        self._send(status, body, "text/plain" if isinstance(body, bytes) else "application/json")
                        return
                self._send(404, {"message": f"page not found: {self.command} {self.path}"})

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(str(self.socket), Handler)
        self._serve()

    def received(self, rule: str) -> list[tuple[str, str, bytes]]:
        """The requests dockerd got that match ``rule`` (``"POST /*/containers/create"``)."""
        globs = parse_rule(rule)
        return [r for r in self.requests if rule_matches(*globs, r[0], r[1])]

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.dir, ignore_errors=True)


__all__ = [
    "AdapterProcess",
    "FakeDocker",
    "PowerstripProcess",
    "RecordingAdapter",
    "echo",
    "free_port",
    "wait_for_port",
]
