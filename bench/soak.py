#!/usr/bin/env python3
"""Soak test: a real Powerstrip in front of the real dockerd, with adapters that fail.

    python bench/soak.py                  # >= 100,000 requests + 1,000 hijacked sessions, ~15-20 min
    python bench/soak.py --quick          # ~1.5 min smoke run
    python bench/soak.py --requests 50000 --sessions 500 --workers 12 --settle 60

What it does:

- starts three pass-through adapters (``bench/soak_adapter.py``) and one
  Powerstrip (``twistd -n powerstrip`` from this checkout, 127.0.0.1, a free
  port) with hook chains on the routes the load hits (``ROUTES``):
  ``flaky`` (``failure: fail``) is SIGKILLed and restarted every 2-5 s;
  ``slow`` (``failure: fail``, timeout 1 s) answers 5% of calls after 1.5 s;
  ``ignorer`` (``failure: ignore``) is killed like flaky and answers 1% of calls
  late like slow: its faults must never reach a client;
- runs ``--requests`` mixed Docker API requests from ``--workers`` threads over
  keep-alive connections (http.client), and ``--sessions`` hijacked sessions
  (``Upgrade: tcp``: ``exec -i cat`` and ``attach`` to a new ``cat``
  container) alongside, every byte sent compared with what came back;
- classifies every answer: ok, an expected adapter fault (a 502/504 whose
  message names ``flaky`` or ``slow``, one that is hooked on that route, with a
  fault the soak causes), or UNEXPECTED (anything else, resets included);
- counts Powerstrip's file descriptors and memory at baseline (after a warm-up
  and once pools are idle), at peak, and after the run once its pools have
  emptied, and checks that it still answers ``/_ping``.

Exit status 0 only if there was no unexpected error, every byte compared equal,
every session worked, Powerstrip logged no traceback, still answers, and its fd
count came back to baseline (within ``FD_TOLERANCE``).

Everything it starts (adapters, Powerstrip, containers labelled
``powerstrip-soak=<pid>``, its temp dir) is removed on exit, Ctrl-C included.
Logs go to ``bench/out/soak/`` (gitignored).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fnmatch
import hashlib
import http.client
import io
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    DOCKER_SOCK,
    HERE,
    IMAGE,
    NO_NETWORK,
    REPO,
    BenchError,
    PeakSampler,
    Procs,
    checkout_env,
    docker_raw,
    fd_count,
    free_port,
    handle_signals,
    http_get,
    label_filter,
    log,
    md_head,
    md_row,
    more_fds,
    powerstrip_args,
    rel,
    remove_containers,
    start_container,
    status_kib,
    twistd_argv,
    wait_ready,
    write_adapters_file,
)

OUT = HERE / "out" / "soak"
API = "/v1.41"
LABEL = "powerstrip-soak"

#: Powerstrip's upstream pool closes an idle dockerd connection after this
#: many seconds (``UpstreamPool.idle_timeout`` in powerstrip/upstream.py).
UPSTREAM_IDLE = 30.0
#: How far above baseline the fd count may end. Everything per request or per
#: connection (client, dockerd, adapter sockets) must be gone, and the
#: breakdown shows it; the slack is for non-socket fds a library may open once,
#: lazily, under load (a threadpool wake-up pipe, a reopened log file). A leak
#: per request, per session or per adapter restart would show in the tens or
#: thousands after this soak, not as 1 or 2.
FD_TOLERANCE = 2

#: The hook chains: (method, path glob, pre-hooks, post-hooks), as in adapters.yml.
ROUTES = [
    ("POST", "/*/containers/create", ["flaky", "slow", "ignorer"], []),
    ("GET", "/*/containers/json", ["flaky"], ["slow"]),
    ("GET", "/*/containers/*/json", [], ["flaky", "ignorer"]),
    ("GET", "/*/version", ["slow"], ["ignorer"]),
    ("GET", "/*/info", [], ["flaky"]),
    ("PUT", "/*/containers/*/archive", ["flaky"], []),
    ("POST", "/*/containers/*/wait", ["ignorer"], []),
    ("POST", "/*/exec/*/start", ["ignorer"], []),
    ("POST", "/*/containers/*/attach", ["ignorer"], []),
    ("GET", "/*/events", ["ignorer"], []),
]
#: name -> (failure policy, timeout s, probability of a late reply, its delay s, killed by chaos)
ADAPTERS = {
    "flaky": ("fail", 1.0, 0.0, 0.0, True),
    "slow": ("fail", 1.0, 0.05, 1.5, False),
    "ignorer": ("ignore", 1.0, 0.01, 1.5, True),
}
#: Fault kinds the soak causes, as Powerstrip words them (powerstrip/adapters.py AdapterFault).
FAULT_KINDS = [
    ("timeout", 504, re.compile(r"no answer within ")),
    ("cannot connect", 502, re.compile(r"cannot connect: ")),
    ("lost before reply", 502, re.compile(r"connection lost before a reply")),
    ("reply cut", 502, re.compile(r"call failed: ResponseFailed")),
]
FAULT_RE = re.compile(r"^powerstrip: adapter '([^']+)' \((http[^)]*)\): (.*)$", re.S)


#: The soak's errors are the benchmark's (common.Procs raises it once clean-up has begun).
SoakError = BenchError


# -- processes ---------------------------------------------------------------------------


class Adapter:
    """One soak_adapter.py process; ``kill``/``start`` keep its port."""

    def __init__(self, name: str, procs: Procs) -> None:
        self.name = name
        self.procs = procs
        self.policy, self.timeout, self.delay_prob, self.delay, self.chaos = ADAPTERS[name]
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.kills = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        with self.lock:
            for _ in range(100):
                p = self.procs.start(
                    [
                        sys.executable,
                        str(HERE / "soak_adapter.py"),
                        "--port",
                        str(self.port),
                        "--delay-prob",
                        str(self.delay_prob),
                        "--delay",
                        str(self.delay),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=open(OUT / f"adapter-{self.name}.log", "ab"),
                )
                line = p.stdout.readline().decode()
                p.stdout.close()
                if line.startswith("LISTENING"):
                    self.port, self.proc = int(line.split()[1]), p
                    return
                self.procs.stop(p, signal.SIGKILL)  # port not free yet: try again
                time.sleep(0.1)
        raise SoakError(f"adapter {self.name} did not start on port {self.port}")

    def kill(self) -> None:
        with self.lock:
            if self.proc is not None:
                self.procs.stop(self.proc, signal.SIGKILL)
                self.proc = None
                self.kills += 1

    def stop(self) -> None:
        with self.lock:
            if self.proc is not None:
                self.procs.stop(self.proc)
                self.proc = None


def chaos(adapter: Adapter, stop: threading.Event, rng: random.Random) -> None:
    """Kill ``adapter`` (SIGKILL) every 2-5 s and restart it 0.2-1 s later."""
    while not stop.wait(rng.uniform(2.0, 5.0)):
        adapter.kill()
        stop.wait(rng.uniform(0.2, 1.0))
        try:
            adapter.start()
        except SoakError as e:
            if not stop.is_set():
                log(f"chaos: {e}")
            return


def write_config(path: Path, adapters: dict[str, Adapter]) -> None:
    lines = []
    for a in adapters.values():
        lines += [f"  {a.name}:", f"    url: {a.url}", f"    timeout: {a.timeout:g}s", f"    failure: {a.policy}"]
    write_adapters_file(path, [(f"{method} {glob}", pre, post) for method, glob, pre, post in ROUTES], lines)


def _answers_ping(port: int) -> bool:
    """Powerstrip itself answers: 200 ``OK`` with dockerd's ``Api-Version`` header."""
    status, body, headers = http_get(port, "/_ping", timeout=5)
    return status == 200 and body == b"OK" and "Api-Version" in headers


def start_powerstrip(procs: Procs, cfg: Path, port: int, logfile: Path, twistd: str | None = None) -> subprocess.Popen:
    """As tests/e2e/support.py does: ``twistd -n powerstrip`` from this checkout."""
    twistd = twistd or shutil.which("twistd") or "twistd"
    argv = twistd_argv([twistd], "powerstrip", *powerstrip_args(cfg, port), twistd_opts=[f"--logfile={logfile}"])
    env = checkout_env(REPO, inherit_pythonpath=False)
    p = procs.start(
        argv, cwd=str(REPO), env=env, stdout=subprocess.DEVNULL, stderr=open(OUT / "powerstrip.stderr", "ab")
    )
    # confirm: still running 0.2 s after the first answer, so it was this process that answered.
    if wait_ready(p, lambda: _answers_ping(port), interval=0.05, confirm=0.2) is None:
        return p
    tail = logfile.read_text()[-3000:] if logfile.exists() else ""
    raise SoakError(f"powerstrip did not start listening on {port}:\n{tail}")


# -- dockerd direct (set-up, references, clean-up: never through Powerstrip) -------------------


def direct(method: str, path: str, body: dict | None = None, timeout: float = 120) -> tuple[int, bytes]:
    """A request to dockerd directly, on the API version the soak speaks: (status, body)."""
    status, data, _ = docker_raw(method, API + path, body, timeout)
    return status, data


def run_filter(run: str) -> str:
    """``filters`` value that selects this run's containers."""
    return label_filter(f"{LABEL}={run}")


def remove_run(run: str) -> int:
    """Remove this run's containers; how many."""
    return remove_containers(f"{LABEL}={run}")


def start_sleeper(name: str, run: str) -> str:
    """A long-lived labelled container (``sleep``) for exec and archive calls; its id."""
    return start_container(["sleep", "1000000"], {LABEL: run}, name, check_start=False)


def ensure_image() -> None:
    if direct("GET", f"/images/{IMAGE}/json")[0] == 200:
        return
    log(f"{IMAGE} missing: making it offline (tests/e2e/support.py ensure_busybox_image)")
    sys.path.insert(0, str(REPO))
    from tests.e2e.support import ensure_busybox_image

    ensure_busybox_image()


# -- /proc ---------------------------------------------------------------------------------


def vm_kib(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status; -1 once the process is gone."""
    return status_kib(pid, key, missing=-1)


def _sockets(pid: int) -> dict[str, tuple[str, int, int, str]]:
    """socket inode -> (kind, local port, remote port, state) from /proc/PID/net."""
    out: dict[str, tuple[str, int, int, str]] = {}
    for kind in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{pid}/net/{kind}").read_text().splitlines()[1:]:
                f = line.split()
                out[f[9]] = ("tcp", int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16), f[3])
    with contextlib.suppress(FileNotFoundError):
        for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]:
            f = line.split()
            out[f[6]] = ("unix", 0, 0, f[7] if len(f) > 7 else "")
    return out


def fd_breakdown(pid: int, listen_port: int, adapter_ports: dict[int, str]) -> collections.Counter:
    """What Powerstrip's fds are: client/dockerd/adapter sockets, files, pipes..."""
    kinds: collections.Counter = collections.Counter()
    socks = _sockets(pid)
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return kinds
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            kind, local, remote, state = socks.get(target[8:-1], ("socket?", 0, 0, ""))
            if kind == "tcp":
                if state == "0A":
                    kinds["tcp listener"] += 1
                elif local == listen_port:
                    kinds["tcp from clients"] += 1
                elif remote in adapter_ports:
                    kinds[f"tcp to adapter {adapter_ports[remote]}"] += 1
                else:
                    kinds[f"tcp other (:{remote})"] += 1
            elif kind == "unix":
                kinds["unix (docker.sock conns, wakers)" if not state else f"unix {state}"] += 1
            else:
                kinds["socket (unknown)"] += 1
        elif target.startswith("pipe:"):
            kinds["pipe"] += 1
        elif target.startswith("anon_inode:"):
            kinds[target] += 1
        else:
            kinds["file"] += 1
    return kinds


# -- tallies --------------------------------------------------------------------------------


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    outcomes: collections.Counter = field(default_factory=collections.Counter)
    by_op: dict = field(default_factory=lambda: collections.defaultdict(collections.Counter))
    latency: dict = field(default_factory=lambda: collections.defaultdict(list))
    unexpected: list = field(default_factory=list)
    unexpected_n: int = 0
    bytes_compared: int = 0
    bytes_differ: int = 0
    compares: int = 0
    sessions_ok: int = 0
    sessions_failed: int = 0
    session_bytes: int = 0
    session_errors: list = field(default_factory=list)
    session_retries: int = 0
    env_n: int = 0
    #: Connection errors on a keep-alive connection whose previous answer was a 5xx that did
    #: not say ``Connection: close`` (Powerstrip closed it anyway).
    after_unclosed_error: int = 0
    env_examples: list = field(default_factory=list)

    def request(self, op: str, outcome: str, seconds: float) -> None:
        with self.lock:
            self.requests += 1
            self.outcomes[outcome] += 1
            self.by_op[op][outcome] += 1
            if outcome == "ok":
                self.latency[op].append(seconds)

    def bad(self, op: str, what: str) -> None:
        """An UNEXPECTED error (counted once per request it happened on)."""
        with self.lock:
            self.unexpected_n += 1
            if len(self.unexpected) < 12:
                self.unexpected.append(f"{time.strftime('%H:%M:%S')} [{op}] {what}")

    def environment(self, op: str, what: str) -> None:
        """A failure the environment explains (not Powerstrip): reported, not counted as an error."""
        with self.lock:
            self.env_n += 1
            if len(self.env_examples) < 6:
                self.env_examples.append(f"{time.strftime('%H:%M:%S')} [{op}] {what}")

    def compared(self, op: str, n: int, same: bool, detail: str = "", env=None) -> None:
        why = env() if env is not None and not same else None
        with self.lock:
            self.compares += 1
            self.bytes_compared += n if (same or not why) else 0
        if same:
            return
        if why:
            self.environment(op, f"{detail[:160]}: {why}")
            raise Rejected(expected=True)
        with self.lock:
            self.bytes_differ += 1
        self.bad(op, f"BYTES DIFFER: {detail}")

    def session(self, ok: bool, n: int, detail: str = "") -> None:
        with self.lock:
            if ok:
                self.sessions_ok += 1
                self.session_bytes += n
            else:
                self.sessions_failed += 1
                if len(self.session_errors) < 8:
                    self.session_errors.append(f"{time.strftime('%H:%M:%S')} {detail}")


def hooked(method: str, path: str) -> tuple[list[str], list[str]]:
    """Which adapters Powerstrip runs for this call (pre, post), as powerstrip/matching.py does."""
    path = path.split("?", 1)[0]
    if not re.match(r"^/v[0-9.]+/", path):
        path = "/v" + path  # an unversioned path matches "/*/" too
    pre: list[str] = []
    post: list[str] = []
    for m, glob, p, q in ROUTES:
        if (m == "*" or m == method) and fnmatch.fnmatchcase(path, glob):
            pre += [a for a in p if a not in pre]
            post += [a for a in q if a not in post]
    return pre, post


def classify_fault(method: str, path: str, status: int, body: bytes) -> str | None:
    """'adapter <name>: <kind>' if this is a fault the soak causes on purpose, else None."""
    if status not in (502, 504):
        return None
    try:
        message = json.loads(body)["message"]
    except (ValueError, KeyError, TypeError):
        return None
    m = FAULT_RE.match(message)
    if not m:
        return None
    name, what = m.group(1), m.group(3)
    pre, post = hooked(method, path)
    if name not in pre + post or ADAPTERS.get(name, ("",))[0] != "fail":
        return None  # not hooked here, or failure: ignore -- must not surface
    for kind, code, pattern in FAULT_KINDS:
        if pattern.match(what) and code == status:
            if name == "slow" and kind != "timeout" and not ADAPTERS[name][4]:
                return None  # slow is never killed: only its timeouts are expected
            return f"adapter {name}: {kind}"
    return None


# -- the Docker API client -------------------------------------------------------------------------


class Rejected(Exception):
    """The request did not get the expected Docker answer (already counted).

    ``expected``: it was one of the faults the soak causes (an adapter fault), or
    something the environment explains (not Powerstrip); set-ups may retry those.
    """

    def __init__(self, expected: bool = False) -> None:
        super().__init__()
        self.expected = expected


def demux(data: bytes) -> tuple[bytes, bytes, bool]:
    """Docker's multiplexed stream (8-byte frame headers) -> stdout, stderr, framing ok."""
    out, err, i = [], [], 0
    while i + 8 <= len(data):
        kind, size = data[i], int.from_bytes(data[i + 4 : i + 8], "big")
        chunk = data[i + 8 : i + 8 + size]
        if len(chunk) < size or kind not in (0, 1, 2):
            return b"".join(out), b"".join(err), False
        (err if kind == 2 else out).append(chunk)
        i += 8 + size
    return b"".join(out), b"".join(err), i == len(data)


def make_tar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def read_tar_member(data: bytes, name: str) -> bytes | None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        f = tar.extractfile(name)
        return f.read() if f is not None else None


class Client:
    """One keep-alive connection to Powerstrip, every answer classified."""

    def __init__(self, port: int, tally: Tally) -> None:
        self.port = port
        self.tally = tally
        self.conn: http.client.HTTPConnection | None = None
        #: What the previous exchange on this connection was (to explain a reset).
        self.previous = "none (new connection)"
        self.previous_unclosed_error = False

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def call(
        self,
        op: str,
        method: str,
        path: str,
        body: bytes | dict | None = None,
        expect: tuple = (200,),
        ctype: str | None = None,
        timeout: float = 120,
        env=None,
    ) -> tuple[int, dict, bytes]:
        """Make one request; return (status, headers, body) if ``status`` is one of ``expect``.

        Raises :class:`Rejected` on an expected adapter fault (counted as such) or on
        anything else (counted as UNEXPECTED, unless ``env()`` explains it: a soak
        container someone else stopped or removed).
        """
        if isinstance(body, dict):
            body, ctype = json.dumps(body).encode(), ctype or "application/json"
        headers = {"Content-Type": ctype} if ctype else {}
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            self.previous = "none (new connection)"
            self.previous_unclosed_error = False
        self.conn.timeout = timeout
        if self.conn.sock is not None:
            self.conn.sock.settimeout(timeout)
        t0 = time.monotonic()
        try:
            self.conn.request(method, path, body=body, headers=headers)
            r = self.conn.getresponse()
            data = r.read()
            self.previous = f"{method} {path[:60]} -> {r.status}, Connection: {r.getheader('Connection', '(none)')}"
            self.previous_unclosed_error = r.status >= 500 and not r.will_close
            if r.will_close:
                self.close()
        except (OSError, http.client.HTTPException) as e:
            previous = self.previous
            if self.previous_unclosed_error:
                with self.tally.lock:
                    self.tally.after_unclosed_error += 1
            self.close()
            self.tally.request(op, "unexpected", time.monotonic() - t0)
            self.tally.bad(
                op,
                f"{method} {path}: {type(e).__name__}: {e} [previous exchange on this "
                f"keep-alive connection: {previous}]",
            )
            raise Rejected from None
        seconds = time.monotonic() - t0
        if r.status in expect:
            self.tally.request(op, "ok", seconds)
            return r.status, dict(r.getheaders()), data
        fault = classify_fault(method, path, r.status, data)
        if fault is not None:
            self.tally.request(op, fault, seconds)
            raise Rejected(expected=True)
        why = env() if env is not None else None
        if why:
            self.tally.request(op, "environment", seconds)
            self.tally.environment(op, f"{method} {path[:80]}: {r.status} {data[:100]!r}: {why}")
            raise Rejected(expected=True)
        self.tally.request(op, "unexpected", seconds)
        self.tally.bad(op, f"{method} {path}: {r.status} {data[:300]!r}")
        raise Rejected

    def check(self, op: str, ok: bool, what: str, env=None) -> None:
        """A Docker answer with the expected status but the wrong content."""
        if ok:
            return
        why = env() if env is not None else None
        if why:
            self.tally.environment(op, f"{what[:160]}: {why}")
            raise Rejected(expected=True)
        self.tally.bad(op, what)
        raise Rejected


class Hijack:
    """A raw connection to Powerstrip upgraded to a stream (``Upgrade: tcp``, 101)."""

    def __init__(self, port: int, path: str, body: dict, timeout: float = 30) -> None:
        self.timeout = timeout
        self.received = 0
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        data = json.dumps(body).encode()
        self.sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nConnection: Upgrade\r\n"
            f"Upgrade: tcp\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before a response head ({buf[:200]!r})")
            buf += chunk
        head, _, self.leftover = buf.partition(b"\r\n\r\n")
        self.head = head
        self.status = int(head.split(b" ", 2)[1])

    def echo(self, payload: bytes, rng: random.Random) -> bytes:
        """Send ``payload`` in random pieces, then EOF (half-close); read everything back to EOF."""
        errors: list[BaseException] = []

        def send() -> None:
            try:
                i = 0
                while i < len(payload):
                    n = rng.choice((1, 7, 512, 4096, 65536, 262144))
                    self.sock.sendall(payload[i : i + n])
                    i += n
                self.sock.shutdown(socket.SHUT_WR)
            except OSError as e:
                errors.append(e)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        chunks = [self.leftover]
        self.received = len(self.leftover)
        while True:
            chunk = self.sock.recv(262144)
            if not chunk:
                break
            chunks.append(chunk)
            self.received += len(chunk)
        sender.join(30)
        if errors:
            raise errors[0]
        return b"".join(chunks)

    def close(self) -> None:
        self.sock.close()


# -- the load -----------------------------------------------------------------------------------


@dataclass
class Shared:
    port: int
    run: str
    exec_cids: list[str]
    version_ref: bytes
    export_sha: str | None
    export_len: int
    hijack_timeout: float = 30.0
    mix: dict | None = None
    max_upload: int = 1024 * 1024
    lock: threading.Lock = field(default_factory=threading.Lock)

    def gone(self, cid: str) -> str | None:
        """Why a container the soak has not removed yet is missing, if it is (dockerd asked directly)."""
        code, _ = direct("GET", f"/containers/{cid}/json")
        return f"container {cid[:12]} was removed by someone else (dockerd direct: {code})" if code == 404 else None

    def revive(self, cid: str) -> str | None:
        """If a long-lived exec container is not running (someone else stopped or removed it),
        say so and put a running one in its place."""
        with self.lock:
            if cid not in self.exec_cids:
                return f"container {cid[:12]} was already replaced"
            code, body = direct("GET", f"/containers/{cid}/json")
            state = json.loads(body).get("State", {}) if code == 200 else {}
            if code == 200 and state.get("Running") and not state.get("Paused"):
                return None
            if code == 200:
                direct("POST", f"/containers/{cid}/start")
                why = f"Status={state.get('Status')} ExitCode={state.get('ExitCode')}"
            else:
                i = self.exec_cids.index(cid)
                self.exec_cids[i] = start_sleeper(f"soak-{self.run}-exec{i}-{int(time.time())}", self.run)
                why = f"removed (dockerd direct: {code})"
            return f"soak container {cid[:12]} was {why}: not by the soak (restarted)"


class Worker:
    """Mixed Docker API requests over one keep-alive connection."""

    OPS = [  # name, weight
        ("ping", 25),
        ("version", 8),
        ("info", 3),
        ("containers_json", 10),
        ("images_json", 4),
        ("inspect", 12),
        ("not_found", 8),
        ("exec", 6),
        ("archive", 5),
        ("lifecycle", 1.2),
        ("events", 2),
        ("export", 0.5),
    ]

    def __init__(self, idx: int, shared: Shared, tally: Tally, rng: random.Random) -> None:
        self.idx = idx
        self.s = shared
        self.tally = tally
        self.rng = rng
        self.c = Client(shared.port, tally)
        self.seq = 0
        names, weights = zip(*(shared.mix.items() if shared.mix else self.OPS), strict=True)
        self.names, self.weights = list(names), list(weights)

    def one(self, op: str | None = None) -> None:
        op = op or self.rng.choices(self.names, self.weights)[0]
        self.seq += 1
        with contextlib.suppress(Rejected):
            getattr(self, "op_" + op)(op)

    def token(self) -> str:
        return f"soak-{self.s.run}-{self.idx}-{self.seq}-{self.rng.getrandbits(32):08x}"

    def op_ping(self, op: str) -> None:
        r = self.rng.random()
        if r < 0.1:
            _, _, body = self.c.call(op, "HEAD", API + "/_ping")
            self.c.check(op, body == b"", f"HEAD /_ping had a body {body[:80]!r}")
            return
        _, _, body = self.c.call(op, "GET", "/_ping" if r < 0.5 else API + "/_ping")
        self.c.check(op, body == b"OK", f"/_ping answered {body[:80]!r}")

    def op_version(self, op: str) -> None:
        _, _, body = self.c.call(op, "GET", API + "/version")  # pre: slow, post: ignorer
        self.tally.compared(
            op,
            len(body),
            body == self.s.version_ref,
            f"/version through pre+post hooks: {body[:120]!r} != {self.s.version_ref[:120]!r}",
        )

    def op_info(self, op: str) -> None:
        _, _, body = self.c.call(op, "GET", API + "/info")
        self.c.check(op, "ID" in json.loads(body), f"/info without ID: {body[:120]!r}")

    def op_containers_json(self, op: str) -> None:
        r = self.rng.random()
        path = ("/containers/json" if r < 0.2 else API + "/containers/json") + (
            f"?all=1&filters={run_filter(self.s.run)}" if r < 0.6 else "?all=1"
        )
        _, _, body = self.c.call(op, "GET", path)
        self.c.check(op, isinstance(json.loads(body), list), f"{path}: {body[:120]!r}")

    def op_images_json(self, op: str) -> None:
        _, _, body = self.c.call(op, "GET", API + "/images/json")
        tags = [t for i in json.loads(body) for t in (i.get("RepoTags") or [])]
        self.c.check(op, IMAGE in tags, f"/images/json lacks {IMAGE}: {body[:120]!r}")

    def op_inspect(self, op: str) -> None:
        cid = self.rng.choice(self.s.exec_cids)
        env = lambda: self.s.revive(cid)  # noqa: E731
        _, _, body = self.c.call(op, "GET", f"{API}/containers/{cid}/json", env=env)  # post: flaky, ignorer
        self.c.check(op, json.loads(body).get("Id") == cid, f"inspect {cid[:12]}: {body[:120]!r}")

    def op_not_found(self, op: str) -> None:
        name = f"nonexistent-{self.rng.getrandbits(48):012x}"
        method, path = self.rng.choice(
            [
                ("GET", f"{API}/containers/{name}/json"),
                ("POST", f"{API}/containers/{name}/start"),
                ("DELETE", f"{API}/containers/{name}"),
                ("GET", f"{API}/exec/{name}/json"),
                ("GET", f"{API}/containers/{name}/logs?stdout=1"),
                ("POST", f"{API}/containers/{name}/wait"),
            ]
        )
        _, _, body = self.c.call(op, method, path, expect=(404,))
        self.c.check(op, "No such" in json.loads(body).get("message", ""), f"{method} {path}: 404 {body[:120]!r}")

    def op_exec(self, op: str) -> None:
        cid, tok = self.rng.choice(self.s.exec_cids), self.token()
        env = lambda: self.s.revive(cid)  # noqa: E731
        _, _, body = self.c.call(
            op,
            "POST",
            f"{API}/containers/{cid}/exec",
            {
                "AttachStdout": True,
                "AttachStderr": True,
                "Tty": False,
                "Cmd": ["sh", "-c", f"echo {tok}; echo e{tok} >&2"],
            },
            expect=(201,),
            env=env,
        )
        eid = json.loads(body)["Id"]
        # Not hijacked: dockerd answers 200 + raw stream and closes (an "old client").
        _, _, data = self.c.call(op, "POST", f"{API}/exec/{eid}/start", {"Detach": False, "Tty": False}, env=env)
        out, err, framing = demux(data)
        want = (f"{tok}\n".encode(), f"e{tok}\n".encode())
        self.tally.compared(op, len(data), framing and (out, err) == want, f"exec output {data[:200]!r}", env)

    def op_archive(self, op: str) -> None:
        cid = self.s.exec_cids[self.idx % len(self.s.exec_cids)]
        size = int(math.exp(self.rng.uniform(0, math.log(self.s.max_upload))))
        payload = self.rng.randbytes(size)
        name = f"soak-w{self.idx}.bin"
        env = lambda: self.s.revive(cid)  # noqa: E731
        self.c.call(
            op,
            "PUT",
            f"{API}/containers/{cid}/archive?path=/tmp",
            make_tar(name, payload),
            ctype="application/x-tar",
            env=env,
        )  # pre: flaky (the body streams unseen)
        _, _, data = self.c.call(op, "GET", f"{API}/containers/{cid}/archive?path=/tmp/{name}", env=env)
        try:
            got = read_tar_member(data, name)
        except tarfile.TarError as e:
            got = f"not a tar: {e}".encode()
        self.tally.compared(
            op,
            size,
            got is not None and hashlib.sha256(got).digest() == hashlib.sha256(payload).digest(),
            f"archive round trip of {size} bytes: got {len(got or b'')} bytes",
            env,
        )

    def op_lifecycle(self, op: str) -> None:
        tok = self.token()
        _, _, body = self.c.call(
            op,
            "POST",
            f"{API}/containers/create?name={tok}",
            {
                "Image": IMAGE,
                "Cmd": ["sh", "-c", f"echo {tok}; echo e{tok} >&2; exit 3"],
                "Labels": {LABEL: self.s.run},
                "HostConfig": NO_NETWORK,
            },
            expect=(201,),
        )  # pre: flaky, slow, ignorer
        cid = json.loads(body)["Id"]
        env = lambda: self.s.gone(cid)  # noqa: E731
        try:
            self.c.call(op, "POST", f"{API}/containers/{cid}/start", expect=(204,), timeout=120, env=env)
            _, _, body = self.c.call(op, "POST", f"{API}/containers/{cid}/wait", timeout=120, env=env)
            self.c.check(op, json.loads(body).get("StatusCode") == 3, f"wait {cid[:12]}: {body[:120]!r}", env)
            _, _, data = self.c.call(op, "GET", f"{API}/containers/{cid}/logs?stdout=1&stderr=1", env=env)
            out, err, framing = demux(data)
            self.tally.compared(
                op,
                len(data),
                framing and (out, err) == (f"{tok}\n".encode(), f"e{tok}\n".encode()),
                f"logs {data[:200]!r}",
                env,
            )
        finally:
            with contextlib.suppress(Rejected):
                self.c.call(op, "DELETE", f"{API}/containers/{cid}?force=1&v=1", expect=(204,), env=env)

    def op_events(self, op: str) -> None:
        now = int(time.time())
        _, _, data = self.c.call(op, "GET", f"{API}/events?since={now - 20}&until={now}")
        lines = [json.loads(line) for line in data.splitlines() if line.strip()]
        self.c.check(op, all("Type" in e or "status" in e for e in lines), f"events: {data[:200]!r}")

    def op_export(self, op: str) -> None:
        _, _, data = self.c.call(op, "GET", f"{API}/images/{IMAGE}/get", timeout=120)
        if self.s.export_sha is not None:
            same = hashlib.sha256(data).hexdigest() == self.s.export_sha
        else:  # dockerd's image export is not byte-stable here: compare sizes only
            same = len(data) == self.s.export_len
        self.tally.compared(op, len(data), same, f"image export: {len(data)} bytes vs {self.s.export_len}")


class Sessions:
    """Hijacked sessions: ``exec -i cat`` (mostly) and ``attach`` to a new ``cat`` container."""

    def __init__(self, idx: int, shared: Shared, tally: Tally, rng: random.Random) -> None:
        self.idx = idx
        self.s = shared
        self.tally = tally
        self.rng = rng
        self.c = Client(shared.port, tally)

    def payload(self) -> bytes:
        size = int(math.exp(self.rng.uniform(0, math.log(2 * 1024 * 1024))))
        return self.rng.randbytes(size)

    def _retry(self, what, *args, **kw):
        """Set-up requests may hit the soak's adapter faults: try again (counted)."""
        for _ in range(30):
            try:
                return what(*args, **kw)
            except Rejected as e:
                if not e.expected:
                    raise
                with self.tally.lock:
                    self.tally.session_retries += 1
                time.sleep(0.2)
        raise Rejected

    def one(self) -> bool:
        """One session; False if the environment spoilt it (run another instead)."""
        kind = "attach" if self.rng.random() < 0.15 else "exec"
        payload = self.payload()
        try:
            n = self.exec_cat(payload) if kind == "exec" else self.attach_cat(payload)
            self.tally.session(True, n)
        except Rejected as e:
            if e.expected:
                return False
            self.tally.session(False, 0, f"{kind} ({len(payload)} bytes): a request failed (see unexpected errors)")
        except Exception as e:  # noqa: BLE001 - every failure of a session is reported
            self.c.close()
            self.tally.session(False, 0, f"{kind} ({len(payload)} bytes): {type(e).__name__}: {e}")
            self.tally.bad("session", f"{kind} ({len(payload)} bytes): {type(e).__name__}: {e}")
        return True

    def _stream(self, kind: str, path: str, body: dict, payload: bytes, probe, env, after_101=None) -> int:
        h = Hijack(self.s.port, path, body, timeout=self.s.hijack_timeout)
        try:
            if h.status != 101:
                raise RuntimeError(f"{path}: no upgrade: {h.head[:200]!r} {h.leftover[:200]!r}")
            if after_101 is not None:
                after_101()
            try:
                data = h.echo(payload, self.rng)
            except TimeoutError:
                why = env()
                if why:
                    self.tally.environment(kind, f"{path[:60]}: hung: {why}")
                    raise Rejected(expected=True) from None
                # Which side lost the end of the stream: is the program still running?
                raise RuntimeError(
                    f"{path}: no end of stream {h.timeout:.0f}s after stdin EOF (sent "
                    f"{len(payload)} bytes, received {h.received} bytes, client port "
                    f"{h.sock.getsockname()[1]}); dockerd says: {probe()}"
                ) from None
        finally:
            h.close()
        out, err, framing = demux(data)
        same = framing and out == payload and err == b""
        self.tally.compared(
            kind,
            len(payload),
            same,
            f"{kind} session: sent {len(payload)} bytes, got stdout {len(out)} stderr {len(err)} framing ok {framing}",
            env,
        )
        if not same:
            raise RuntimeError(f"bytes differ: sent {len(payload)}, got stdout {len(out)} stderr {err[:100]!r}")
        return len(payload)

    def exec_cat(self, payload: bytes) -> int:
        cid = self.rng.choice(self.s.exec_cids)
        env = lambda: self.s.revive(cid)  # noqa: E731
        _, _, body = self._retry(
            self.c.call,
            "session",
            "POST",
            f"{API}/containers/{cid}/exec",
            {"AttachStdin": True, "AttachStdout": True, "AttachStderr": True, "Tty": False, "Cmd": ["cat"]},
            (201,),
            env=env,
        )
        eid = json.loads(body)["Id"]

        def probe() -> str:
            code, body = direct("GET", f"/exec/{eid}/json")
            info = json.loads(body) if code == 200 else {}
            return (
                f"exec {eid[:12]} Running={info.get('Running')} ExitCode={info.get('ExitCode')} Pid={info.get('Pid')}"
            )

        return self._stream("exec -i", f"{API}/exec/{eid}/start", {"Detach": False, "Tty": False}, payload, probe, env)

    def attach_cat(self, payload: bytes) -> int:
        _, _, body = self._retry(
            self.c.call,
            "session",
            "POST",
            f"{API}/containers/create",
            {
                "Image": IMAGE,
                "Cmd": ["cat"],
                "OpenStdin": True,
                "StdinOnce": True,
                "AttachStdin": True,
                "AttachStdout": True,
                "AttachStderr": True,
                "Tty": False,
                "Labels": {LABEL: self.s.run},
                "HostConfig": NO_NETWORK,
            },
            (201,),
        )
        cid = json.loads(body)["Id"]
        env = lambda: self.s.gone(cid)  # noqa: E731

        def probe() -> str:
            code, body = direct("GET", f"/containers/{cid}/json")
            state = json.loads(body).get("State", {}) if code == 200 else {}
            return f"container {cid[:12]} Status={state.get('Status')} ExitCode={state.get('ExitCode')}"

        try:
            n = self._stream(
                "attach",
                f"{API}/containers/{cid}/attach?stream=1&stdin=1&stdout=1&stderr=1",
                {},
                payload,
                probe,
                env,
                after_101=lambda: self.c.call(
                    "session", "POST", f"{API}/containers/{cid}/start", expect=(204,), env=env
                ),
            )
            _, _, body = self.c.call("session", "POST", f"{API}/containers/{cid}/wait", env=env)
            self.c.check("session", json.loads(body).get("StatusCode") == 0, f"cat exited: {body[:120]!r}", env)
            return n
        finally:
            with contextlib.suppress(Rejected):
                self.c.call("session", "DELETE", f"{API}/containers/{cid}?force=1&v=1", expect=(204,), env=env)


# -- the run --------------------------------------------------------------------------------------


def warn_kind(line: str) -> str:
    """A warning line of Powerstrip's log, without what varies (ids, paths, ports)."""
    m = re.search(r"powerstrip: adapter '([^']+)' \([^)]*\): (.*)", line)
    if m:
        what = re.sub(r"\d+(\.\d+)?s\b", "Ns", m.group(2))[:48]
        return f"{'ignored fault' if 'ignoring fault' in line else 'fault'} {m.group(1)}: {what}"
    return re.sub(r"[0-9a-f]{12,}|\d+", "N", line)[:100]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.procs = Procs(stop_timeout=10.0)
        self.tmp = Path(tempfile.mkdtemp(prefix="powerstrip-soak-"))
        self.run = str(os.getpid())
        self.stop = threading.Event()
        self.chaos_stop = threading.Event()
        self.adapters: dict[str, Adapter] = {}
        self.ps: subprocess.Popen | None = None
        self.port = 0  # chosen once the adapters listen (a free port is only free until taken)
        self.logfile = OUT / "powerstrip.log"
        self.tally = Tally()
        self.warm = Tally()
        self.r: dict = {}
        self.threads: list[threading.Thread] = []

    # set-up

    def preflight(self) -> Shared:
        try:
            code, body = direct("GET", "/_ping", timeout=10)
        except OSError as e:
            raise SoakError(f"dockerd is not reachable at {DOCKER_SOCK}: {e}") from None
        if code != 200:
            raise SoakError(f"dockerd /_ping answered {code} {body[:100]!r}")
        ensure_image()
        n = remove_run(self.run)
        if n:
            log(f"removed {n} stale container(s)")
        _, version_ref = direct("GET", "/version")
        exports = [direct("GET", f"/images/{IMAGE}/get")[1] for _ in range(2)]
        stable = exports[0] == exports[1]
        cids = [start_sleeper(f"soak-{self.run}-exec{i}", self.run) for i in range(2)]
        return Shared(
            self.port,
            self.run,
            cids,
            version_ref,
            hashlib.sha256(exports[0]).hexdigest() if stable else None,
            len(exports[0]),
            self.a.hijack_timeout,
            self.a.mix,
            self.a.max_upload,
        )

    def start(self) -> None:
        for name in ADAPTERS:
            self.adapters[name] = Adapter(name, self.procs)
            self.adapters[name].start()
        cfg = self.tmp / "adapters.yml"
        write_config(cfg, self.adapters)
        self.port = free_port()
        (OUT / "adapters.yml").write_text(cfg.read_text())
        self.ps = start_powerstrip(self.procs, cfg, self.port, self.logfile, self.a.twistd)
        log(
            f"powerstrip pid {self.ps.pid} on 127.0.0.1:{self.port}; adapters "
            + ", ".join(f"{a.name} :{a.port}" for a in self.adapters.values())
        )

    def breakdown(self) -> collections.Counter:
        return fd_breakdown(self.ps.pid, self.port, {a.port: a.name for a in self.adapters.values()})

    def warm_up(self, shared: Shared) -> None:
        w = Worker(99, shared, self.warm, random.Random(self.a.seed))
        for op, _ in Worker.OPS:
            for _ in range(3 if op not in ("lifecycle", "export") else 1):
                w.one(op)
        s = Sessions(99, shared, self.warm, random.Random(self.a.seed + 1))
        for session in (s.exec_cat, s.attach_cat):
            try:
                session(b"warm-up")
            except Rejected:
                pass
            except Exception as e:  # noqa: BLE001
                self.warm.bad("session", f"{session.__name__}: {type(e).__name__}: {e}")
        w.c.close()
        s.c.close()

    def settle_until(self, deadline: float, target: int | None) -> tuple[int, float]:
        """Wait (fd count sampled each second) until ``deadline``, or earlier once the pools
        must have expired and the count is back to ``target``; returns (fds, seconds waited)."""
        t0 = time.monotonic()
        min_wait = UPSTREAM_IDLE + 2
        while True:
            fds = fd_count(self.ps.pid)
            waited = time.monotonic() - t0
            if time.monotonic() >= deadline:
                return fds, waited
            if target is not None and waited >= min_wait and fds <= target:
                return fds, waited
            time.sleep(1)

    def baseline(self, shared: Shared) -> None:
        t = time.monotonic()
        self.warm_up(shared)
        log(
            f"warm-up done in {time.monotonic() - t:.0f}s ({self.warm.requests} requests, "
            f"{self.warm.unexpected_n} unexpected); restarting adapters so that no pooled adapter "
            f"connection is left, then waiting {UPSTREAM_IDLE + 2:.0f}s for the dockerd pool to expire"
        )
        for a in self.adapters.values():
            a.kill()
            a.start()
        self.settle_until(time.monotonic() + UPSTREAM_IDLE + 2, None)
        pid = self.ps.pid
        self.r["base_fds"] = fd_count(pid)
        self.r["base_kinds"] = self.breakdown()
        self.r["base_rss"] = vm_kib(pid, "VmRSS")
        self.r["base_hwm"] = vm_kib(pid, "VmHWM")
        log(f"baseline: {self.r['base_fds']} fds {dict(self.r['base_kinds'])}, VmRSS {self.r['base_rss']} KiB")

    # the load

    def _worker(self, w: Worker) -> None:
        try:
            while not self.stop.is_set() and self.tally.requests < self.a.requests:
                w.one()
        finally:
            w.c.close()

    def _sessions(self, s: Sessions, counter: list[int], lock: threading.Lock) -> None:
        n_total = self.a.sessions
        try:
            while not self.stop.is_set():
                with lock:
                    k = counter[0]
                    if k >= n_total:
                        return
                    counter[0] += 1
                # Spread over the request load: session k starts at k/N of it.
                while (
                    not self.stop.is_set()
                    and self.tally.requests < self.a.requests
                    and self.tally.requests < k / n_total * self.a.requests * 0.95
                ):
                    time.sleep(0.05)
                for _ in range(3):
                    if s.one():
                        break
        finally:
            s.c.close()

    def load(self, shared: Shared) -> None:
        pid = self.ps.pid
        sampler = PeakSampler({"fds": lambda: fd_count(pid), "rss": lambda: vm_kib(pid, "VmRSS")}, 0.25).start()
        chaos_stop = self.chaos_stop
        for i, a in enumerate(self.adapters.values()):
            if a.chaos:
                t = threading.Thread(
                    target=chaos,
                    args=(a, chaos_stop, random.Random(self.a.seed + 100 + i)),
                    daemon=True,
                    name=f"chaos-{a.name}",
                )
                t.start()
                self.threads.append(t)
        workers = [
            threading.Thread(
                target=self._worker,
                daemon=True,
                name=f"worker-{i}",
                args=(Worker(i, shared, self.tally, random.Random(self.a.seed * 1000 + i)),),
            )
            for i in range(self.a.workers)
        ]
        counter, lock = [0], threading.Lock()
        sessions = [
            threading.Thread(
                target=self._sessions,
                daemon=True,
                name=f"session-{i}",
                args=(Sessions(i, shared, self.tally, random.Random(self.a.seed * 2000 + i)), counter, lock),
            )
            for i in range(self.a.session_threads)
        ]
        t0 = time.monotonic()
        for t in workers + sessions:
            t.start()
        last = 0.0
        while any(t.is_alive() for t in workers + sessions):
            time.sleep(0.5)
            if time.monotonic() - last >= 15:
                last = time.monotonic()
                tl = self.tally
                log(
                    f"{tl.requests}/{self.a.requests} requests, {tl.sessions_ok + tl.sessions_failed}/"
                    f"{self.a.sessions} sessions, unexpected {tl.unexpected_n}, fds {fd_count(pid)} "
                    f"(peak {sampler.peaks['fds']}), VmRSS {vm_kib(pid, 'VmRSS')} KiB, adapter kills "
                    f"{sum(a.kills for a in self.adapters.values())}"
                )
            if self.ps.poll() is not None:
                raise SoakError(f"powerstrip exited with {self.ps.returncode} during the load")
        self.r["load_seconds"] = time.monotonic() - t0
        chaos_stop.set()
        for t in self.threads:
            t.join(10)
        sampler.stop()
        self.r["peak_fds"] = max(sampler.peaks["fds"], fd_count(pid))
        self.r["peak_rss"] = max(sampler.peaks["rss"], vm_kib(pid, "VmRSS"))
        self.r["end_kinds"] = self.breakdown()
        log(
            f"load done in {self.r['load_seconds']:.0f}s; Powerstrip fds now {fd_count(pid)} "
            f"{dict(self.r['end_kinds'])}"
        )

    def after(self) -> None:
        pid = self.ps.pid
        # Client connections are closed (each thread closed its own); the adapters
        # go away, which closes the pooled connections to them (otherwise held up to
        # treq's cachedConnectionTimeout, 240 s); the dockerd pool expires in 30 s.
        if not self.a.keep_adapters:
            for a in self.adapters.values():
                a.stop()
        target = self.r["base_fds"] + FD_TOLERANCE
        log(f"waiting up to {self.a.settle:.0f}s for idle connections to close (baseline {self.r['base_fds']})")
        fds, waited = self.settle_until(time.monotonic() + self.a.settle, target)
        self.r["after_fds"], self.r["settle_waited"] = fds, waited
        self.r["after_kinds"] = self.breakdown()
        self.r["after_rss"] = vm_kib(pid, "VmRSS")
        self.r["after_hwm"] = vm_kib(pid, "VmHWM")
        self.r["alive"] = self.ps.poll() is None
        ping = None
        try:
            status, body, _ = http_get(self.port, "/_ping", timeout=10)
            ping = f"{status} {body[:40]!r}"
        except (OSError, http.client.HTTPException) as e:
            ping = f"{type(e).__name__}: {e}"
        self.r["ping"] = ping
        # twistd rotates its log file every 1 MB: read powerstrip.log.N ... powerstrip.log in order.
        files = sorted(OUT.glob("powerstrip.log.*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
        text = "".join(p.read_text(errors="replace") for p in [*files, self.logfile] if p.exists())
        bad = [
            i
            for i, line in enumerate(text.splitlines())
            if re.search(r"Traceback|Unhandled|internal error|Failure instance", line)
        ]
        self.r["log_bad"] = len(bad)
        lines = text.splitlines()
        self.r["log_bad_examples"] = ["\n".join(lines[i : i + 6]) for i in bad[:3]]
        self.r["log_warn"] = collections.Counter(map(warn_kind, re.findall(r"#(?:warn|error|critical)\] (.*)", text)))

    def close(self) -> None:
        self.stop.set()
        self.chaos_stop.set()
        for t in self.threads:
            t.join(5)
        self.procs.stop_all(timeout=5)
        with contextlib.suppress(Exception):
            n = remove_run(self.run)
            if n:
                log(f"removed {n} soak container(s)")
        shutil.rmtree(self.tmp, ignore_errors=True)

    # the report

    def report(self) -> tuple[str, bool]:
        a, r, t = self.a, self.r, self.tally
        fails = []
        if t.unexpected_n:
            fails.append(f"{t.unexpected_n} unexpected errors")
        if t.bytes_differ:
            fails.append(f"{t.bytes_differ} byte comparisons differ")
        if t.sessions_failed or t.sessions_ok < a.sessions:
            fails.append(f"sessions: {t.sessions_ok} ok of {a.sessions}")
        if t.requests < a.requests:
            fails.append(f"only {t.requests} of {a.requests} requests done")
        if r["after_fds"] > r["base_fds"] + FD_TOLERANCE:
            fails.append(f"fds {r['after_fds']} did not return to baseline {r['base_fds']} (+{FD_TOLERANCE})")
        if not r["alive"] or not r["ping"].startswith("200"):
            fails.append(f"powerstrip alive={r['alive']} /_ping {r['ping']}")
        if r["log_bad"]:
            fails.append(f"{r['log_bad']} traceback/internal-error lines in Powerstrip's log")
        if self.warm.unexpected_n:
            fails.append(f"{self.warm.unexpected_n} unexpected errors in the warm-up")
        expected = {k: v for k, v in t.outcomes.items() if k.startswith("adapter ")}
        kills = {n: ad.kills for n, ad in self.adapters.items() if ad.chaos}
        out = [
            f"## Powerstrip soak ({time.strftime('%Y-%m-%d %H:%M')}, seed {a.seed})",
            "",
            f"{t.requests} requests from {a.workers} keep-alive workers and {t.sessions_ok + t.sessions_failed} "
            f"hijacked sessions from {a.session_threads} threads in {r['load_seconds']:.0f}s "
            f"({t.requests / r['load_seconds']:.0f} req/s); adapter kills: "
            + ", ".join(f"{n} {k}" for n, k in kills.items()),
            "",
            *md_head(["measure", "value"], "ll"),
            md_row("requests done", t.requests),
            md_row("ok (the expected Docker answer)", t.outcomes["ok"]),
        ]
        for k in sorted(expected):
            out.append(md_row(f"expected {k}", expected[k]))
        fds_back = r["after_fds"] <= r["base_fds"] + FD_TOLERANCE
        out += [
            md_row("expected adapter errors, total", sum(expected.values())),
            md_row("UNEXPECTED errors (requests, contents, sessions)", t.unexpected_n),
            md_row(
                "of which: connection closed/reset right after a 5xx answer that kept the connection alive "
                "(no `Connection: close`)",
                t.after_unclosed_error,
            ),
            md_row(
                "failures the environment explains (soak containers stopped or removed by someone else, "
                "checked with dockerd directly; not counted)",
                t.env_n,
            ),
            md_row(
                "hijacked sessions ok / failed",
                f"{t.sessions_ok} / {t.sessions_failed} (set-up retries after adapter faults: {t.session_retries})",
            ),
            md_row(
                "bytes compared",
                f"{t.bytes_compared:,} in {t.compares} comparisons "
                f"({t.session_bytes:,} through sessions): "
                f"{'all identical' if not t.bytes_differ else f'{t.bytes_differ} DIFFER'}",
            ),
            md_row(
                "Powerstrip fds: baseline / peak / after",
                f"{r['base_fds']} / {r['peak_fds']} / {r['after_fds']} "
                f"(after {r['settle_waited']:.0f}s idle; tolerance +{FD_TOLERANCE}: "
                f"{'back to baseline' if fds_back else 'NOT back'})",
            ),
            md_row(
                "VmRSS baseline / peak / after",
                f"{r['base_rss'] / 1024:.1f} / {r['peak_rss'] / 1024:.1f} / "
                f"{r['after_rss'] / 1024:.1f} MiB (VmHWM {r['base_hwm'] / 1024:.1f} -> "
                f"{r['after_hwm'] / 1024:.1f})",
            ),
            md_row("Powerstrip alive, GET /_ping at the end", f"{r['alive']}, {r['ping']}"),
            md_row("tracebacks / internal errors in its log", r["log_bad"]),
            "",
            "fds by kind: "
            + "; ".join(
                f"{label}: " + ", ".join(f"{k} {v}" for k, v in sorted(r[key].items()))
                for label, key in (("baseline", "base_kinds"), ("end of load", "end_kinds"), ("after", "after_kinds"))
            ),
            "",
            *md_head(["op", "ok", "expected adapter errors", "unexpected", "p50 ms", "p99 ms"], "llllll"),
        ]
        for op in sorted(t.by_op):
            c = t.by_op[op]
            exp = sum(v for k, v in c.items() if k.startswith("adapter "))
            lat = t.latency[op]
            out.append(
                md_row(op, c["ok"], exp, c["unexpected"], f"{pct(lat, 0.5) * 1000:.1f}", f"{pct(lat, 0.99) * 1000:.1f}")
            )
        if r["log_warn"]:
            out += [
                "",
                "Powerstrip's warnings, by kind: " + "; ".join(f"{v}x {k}" for k, v in r["log_warn"].most_common(8)),
            ]
        if t.unexpected:
            out += ["", "First unexpected errors:"] + [f"- {e}" for e in t.unexpected]
        if self.warm.unexpected:
            out += ["", "Unexpected errors in the warm-up:"] + [f"- {e}" for e in self.warm.unexpected]
        if t.env_examples:
            out += ["", "Explained by the environment:"] + [f"- {e}" for e in t.env_examples]
        if t.session_errors:
            out += ["", "Failed sessions:"] + [f"- {e}" for e in t.session_errors]
        if r["log_bad_examples"]:
            out += ["", "From Powerstrip's log:"] + ["```\n" + e + "\n```" for e in r["log_bad_examples"]]
        out += [
            "",
            "RESULT: " + ("PASS" if not fails else "FAIL: " + "; ".join(fails)),
            f"(Powerstrip's log: {rel(self.logfile)})",
        ]
        return "\n".join(out), not fails


def _mix(text: str) -> dict[str, float]:
    ops = dict(Worker.OPS)
    mix = {}
    for item in text.split(","):
        op, _, weight = item.partition("=")
        if op not in ops:
            raise argparse.ArgumentTypeError(f"unknown op {op!r}")
        mix[op] = float(weight or 1)
    return mix


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100000, help="mixed API requests (default 100000)")
    ap.add_argument("--sessions", type=int, default=1000, help="hijacked sessions (default 1000)")
    ap.add_argument("--workers", type=int, default=8, help="request threads, one keep-alive connection each")
    ap.add_argument("--session-threads", type=int, default=4, help="concurrent hijacked sessions")
    ap.add_argument(
        "--settle",
        type=float,
        default=45.0,
        help="seconds to wait, at most, for fds to return to baseline after the load (default 45; "
        f"at least {UPSTREAM_IDLE + 2:.0f}: dockerd's idle pool expires after {UPSTREAM_IDLE:.0f}s)",
    )
    ap.add_argument(
        "--keep-adapters",
        action="store_true",
        help="leave the adapters up after the load: their pooled connections then only go after treq's "
        "240 s cachedConnectionTimeout, so use --settle 260",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--hijack-timeout",
        type=float,
        default=30.0,
        help="seconds a hijacked session may go without a byte before it counts as hung (default 30)",
    )
    ap.add_argument(
        "--max-upload",
        type=int,
        default=1024 * 1024,
        metavar="BYTES",
        help="largest archive upload (sizes are log-uniform from 1 byte; default 1 MiB)",
    )
    ap.add_argument(
        "--twistd",
        default=None,
        metavar="PATH",
        help="the twistd to start Powerstrip with (default: twistd on PATH); e.g. an instrumented one",
    )
    ap.add_argument(
        "--mix",
        type=_mix,
        default=None,
        metavar="OP=W,...",
        help="another request mix, e.g. 'ping=5,archive=1' (ops: " + ", ".join(op for op, _ in Worker.OPS) + ")",
    )
    ap.add_argument("--quick", action="store_true", help="~1.5 min smoke run: 1500 requests, 20 sessions")
    a = ap.parse_args()
    if a.quick:
        a.requests, a.sessions = min(a.requests, 1500), min(a.sessions, 20)
    a.settle = max(a.settle, UPSTREAM_IDLE + 2)
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.log*"):
        old.unlink()
    more_fds(hard=False)
    handle_signals()
    soak = Soak(a)
    started = time.monotonic()
    try:
        shared = soak.preflight()
        soak.start()
        shared.port = soak.port
        soak.baseline(shared)
        soak.load(shared)
        soak.after()
        text, ok = soak.report()
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    except SoakError as e:
        log(f"FAILED: {e}")
        return 2
    finally:
        soak.close()
    print(text)
    (OUT / "report.md").write_text(text + "\n")
    log(f"done in {time.monotonic() - started:.0f}s; report in {OUT / 'report.md'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
