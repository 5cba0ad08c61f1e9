"""What bench/run.py (the side-by-side benchmark) and bench/soak.py (the soak test) share.

Both start processes they must end on exit (relays, Powerstrip, adapters), talk to dockerd
directly on its unix socket for set-up and clean-up (never through a relay), read process
figures from /proc, start Powerstrip from a checkout with ``twistd -n``, and print markdown
tables. This module holds those pieces; each script keeps what only it measures.

The scripts are run as ``python bench/run.py`` / ``python bench/soak.py``, so this module is
imported as the top-level ``common`` (the script's folder is first on ``sys.path``); it imports
nothing from Powerstrip, which runs as a separate process.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DOCKER_SOCK = "/var/run/docker.sock"
IMAGE = "busybox:latest"
#: Containers get no network: starting is faster (no veth) and needs no docker0 bridge.
NO_NETWORK = {"NetworkMode": "none"}
#: ``python -c`` of this is twistd under that interpreter (no ``twistd`` script of its own needed).
TWISTD_VIA_PYTHON = "import sys; from twisted.scripts.twistd import run; run()"


def log(msg: str) -> None:
    """A time-stamped progress line on stderr (stdout carries the report)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A step of the run that cannot go on (a tool missing, a process that did not start...)."""


def rel(path: Path) -> str:
    """``path`` as the report shows it: relative to the checkout when inside it (no machine path)."""
    with contextlib.suppress(ValueError):
        return str(Path(path).resolve().relative_to(REPO))
    return str(path)


def handle_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt, so that the ``finally`` clean-up runs.

    SIGINT is set explicitly too: a script started as a background job inherits it ignored.
    """

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)


def more_fds(hard: bool) -> None:
    """Raise this process's open-file limit (children inherit it).

    ``hard``: set soft and hard limit to 2**20, else 65536 (root may raise the hard limit;
    the benchmark's 1,000 hijacked sessions through socat need it); otherwise raise only the
    soft limit, up to 65536 within the hard one.
    """
    if hard:
        for want in (1 << 20, 65536):
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
                return
            except (ValueError, OSError):
                continue
        return
    with contextlib.suppress(ValueError, OSError):
        soft, hard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard_limit, 65536)), hard_limit))


# -- processes ----------------------------------------------------------------------------


class Procs:
    """Every process a run starts, each in a session of its own, so that all are ended on exit.

    Processes are ended by their id (their process group: socat's forked children share it),
    never by name. Once :meth:`stop_all` has begun nothing new starts (a chaos thread
    restarting an adapter during clean-up gets :class:`BenchError`).
    """

    def __init__(
        self, logs: Path | None = None, preexec_fn: Callable[[], None] | None = None, stop_timeout: float = 5.0
    ) -> None:
        self.live: list[subprocess.Popen] = []
        self.logs = logs
        self.preexec_fn = preexec_fn
        self.stop_timeout = stop_timeout
        self.lock = threading.Lock()
        self.closed = False

    def start(self, argv: list[str], logname: str | None = None, **kw) -> subprocess.Popen:
        """Start ``argv``; with ``logname``, its stdout and stderr append to that file under ``logs``."""
        with self.lock:
            if self.closed:
                raise BenchError("shutting down")
            if logname is not None:
                assert self.logs is not None, "Procs(logs=...) is needed for a logname"
                f = open(self.logs / logname, "ab")  # the child holds it open
                kw.setdefault("stdout", f)
                kw.setdefault("stderr", subprocess.STDOUT)
            p = subprocess.Popen(argv, start_new_session=True, preexec_fn=self.preexec_fn, **kw)
            self.live.append(p)
        return p

    def stop(self, p: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float | None = None) -> None:
        """End ``p`` (``sig``, then SIGKILL after ``timeout``) and what is left of its process group."""
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, sig)
            try:
                p.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        # Forked children that outlived the parent (socat) share its group id.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        with self.lock:
            if p in self.live:
                self.live.remove(p)

    def stop_all(self, timeout: float) -> None:
        """End every live process, the last started first; nothing starts after this."""
        with self.lock:
            self.closed = True
        for p in list(reversed(self.live)):
            self.stop(p, timeout=timeout)

    def run(self, argv: list[str], timeout: float, **kw) -> tuple[int, str, str]:
        """Run to completion; returns (rc, stdout, stderr)."""
        p = self.start(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(p)
            raise BenchError(f"{argv[0]} did not finish within {timeout:.0f}s") from None
        finally:
            with self.lock:
                if p in self.live:
                    self.live.remove(p)
        return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (only until someone takes it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes, dict[str, str]]:
    """One ``GET`` on a fresh connection to 127.0.0.1:``port``: (status, body, headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        conn.close()


def wait_ready(
    proc: subprocess.Popen,
    probe: Callable[[], bool],
    timeout: float = 20.0,
    interval: float = 0.1,
    confirm: float = 0.0,
) -> str | None:
    """Poll ``probe`` until it holds: None once ready, else why not (for the caller's error).

    ``probe`` may raise OSError/HTTPException (not listening yet). ``confirm``: wait that
    long after the first success and check that ``proc`` still runs (that it was this process
    that answered, not one that held the port before).
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with {proc.returncode}"
        try:
            if probe():
                time.sleep(confirm)
                if proc.poll() is None:
                    return None
        except (OSError, http.client.HTTPException) as e:
            last = e
        time.sleep(interval)
    return f"no answer within {timeout:.0f}s: {last}"


def twistd_argv(launcher: list[str], plugin: str, *args: str, twistd_opts: Iterable[str] = ()) -> list[str]:
    """``twistd -n`` (no pid file) running ``plugin`` with ``args``; ``launcher`` is the twistd to run."""
    return [*launcher, "-n", "--pidfile=", *twistd_opts, plugin, *args]


def python_twistd(python: str | None = None) -> list[str]:
    """twistd under ``python`` (default: this interpreter), as a ``launcher`` for :func:`twistd_argv`."""
    return [python or sys.executable, "-c", TWISTD_VIA_PYTHON]


def bare_relay_argv(port: int, access_log: Path | None = None) -> list[str]:
    """bench/bare_relay.py on TCP 127.0.0.1:``port`` in front of dockerd; with ``access_log``,
    the duty relay (``--duties``), writing its access lines there."""
    argv = [sys.executable, str(HERE / "bare_relay.py"), str(port), DOCKER_SOCK]
    return argv + (["--duties", str(access_log)] if access_log is not None else [])


def start_fast_adapter(procs: Procs, log: Path) -> tuple[subprocess.Popen, int]:
    """bench/fast_adapter.py on a free port (its stderr appended to ``log``): the process and its port."""
    adapter = procs.start(
        [sys.executable, str(HERE / "fast_adapter.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=open(log, "ab"),  # noqa: SIM115 -- the child holds it open
    )
    line = adapter.stdout.readline().decode()
    if not line.startswith("LISTENING"):
        raise BenchError(f"fast_adapter did not start: {line!r}")
    return adapter, int(line.split()[1])


def powerstrip_args(config: Path, port: int) -> list[str]:
    """The ``powerstrip`` plugin's options: this adapters file, dockerd's socket, TCP 127.0.0.1:``port``."""
    return ["--config", str(config), "--docker", f"unix://{DOCKER_SOCK}", "--listen", f"tcp:{port}:interface=127.0.0.1"]


def checkout_env(tree: Path = REPO, inherit_pythonpath: bool = True, **extra: str) -> dict[str, str]:
    """The environment of a process that imports Powerstrip from the checkout ``tree``.

    ``DOCKER_HOST`` is dropped: Powerstrip must reach dockerd by ``--docker`` only.
    """
    path = [str(tree)] + ([os.environ.get("PYTHONPATH", "")] if inherit_pythonpath else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p), **extra)
    env.pop("DOCKER_HOST", None)
    return env


# -- dockerd, directly on its unix socket (set-up, references, clean-up) --------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket (dockerd's)."""

    def __init__(self, path: str, timeout: float = 120) -> None:
        super().__init__("docker", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def docker_raw(method: str, path: str, body: object = None, timeout: float = 120) -> tuple[int, bytes, dict]:
    """One request to dockerd (``body`` sent as JSON): (status, raw body, headers)."""
    conn = UnixHTTPConnection(DOCKER_SOCK, timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        conn.close()


def label_filter(selector: str) -> str:
    """``filters`` query value (quoted) that selects containers by label (``key`` or ``key=value``)."""
    return urllib.parse.quote(json.dumps({"label": [selector]}), safe="")


def labelled(selector: str) -> list[dict]:
    """Containers (running or not) that carry the label ``selector``."""
    code, raw, _ = docker_raw("GET", "/containers/json?all=1&filters=" + label_filter(selector))
    return json.loads(raw) if code == 200 else []


def remove_containers(selector: str) -> int:
    """Force-remove every container labelled ``selector`` (with volumes); how many."""
    ids = [c["Id"] for c in labelled(selector)]
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda cid: docker_raw("DELETE", f"/containers/{cid}?force=1&v=1"), ids))
    return len(ids)


def start_container(
    cmd: list[str], labels: dict[str, str], name: str | None = None, check_start: bool = True, **spec: object
) -> str:
    """Create and start an ``IMAGE`` container without network; its id.

    ``spec``: more fields of the create body (``OpenStdin=True``...). ``check_start``: raise
    if dockerd refuses to start it (else the caller finds out by using it).
    """
    body = {"Image": IMAGE, "Cmd": cmd, **spec, "Labels": labels, "HostConfig": NO_NETWORK}
    code, raw, _ = docker_raw("POST", "/containers/create" + (f"?name={name}" if name else ""), body)
    if code != 201:
        raise BenchError(f"cannot create a container: {code} {raw[:300]!r}")
    cid = json.loads(raw)["Id"]
    code, raw, _ = docker_raw("POST", f"/containers/{cid}/start")
    if check_start and code not in (204, 304):
        raise BenchError(f"cannot start container {cid[:12]}: {code} {raw[:300]!r}")
    return cid


# -- /proc ----------------------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return out


def status_kib(pid: int, key: str, missing: int = 0) -> int:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM...); ``missing`` if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return missing


def fd_count(pid: int) -> int:
    """Open file descriptors of ``pid``; -1 if it is gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        return -1


class PeakSampler:
    """Samples some figures of a process in a thread and keeps the peak of each.

    ``probes``: name -> function giving the figure now. Sampled at once, every ``interval``
    seconds, and once more when stopped. Use as a context manager, or start()/stop().
    """

    def __init__(self, probes: dict[str, Callable[[], float]], interval: float) -> None:
        self.probes, self.interval = probes, interval
        self.peaks: dict[str, float] = dict.fromkeys(probes, 0)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        for name, probe in self.probes.items():
            self.peaks[name] = max(self.peaks[name], probe())

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def start(self) -> PeakSampler:
        self._t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._t.join()
        self._sample()

    def __enter__(self) -> PeakSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- markdown tables -------------------------------------------------------------------------

_ALIGN = {"l": "---", "r": "---:", "c": ":---:"}


def md_row(*cells: object) -> str:
    """One markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def md_head(columns: Iterable[str], align: str) -> list[str]:
    """A markdown table's header and rule; ``align`` has one letter a column: l(eft), r(ight), c(entre)."""
    columns = list(columns)
    if len(columns) != len(align):
        raise ValueError(f"{len(columns)} columns but {len(align)} alignments")
    return [md_row(*columns), "|" + "|".join(_ALIGN[a] for a in align) + "|"]


# -- adapters files ---------------------------------------------------------------------------


def write_adapters_file(
    path: Path, endpoints: Iterable[tuple[str, list[str], list[str]]], adapter_lines: Iterable[str]
) -> Path:
    """Write a version-1 adapters file: ``endpoints`` as ("METHOD glob", pre, post), then the
    ``adapters:`` mapping's lines (already indented) as given; none of either: pass-through."""
    endpoints, adapter_lines = list(endpoints), list(adapter_lines)
    if not endpoints and not adapter_lines:
        path.write_text("version: 1\nendpoints: {}\nadapters: {}\n")
        return path
    lines = ["version: 1", "endpoints:"]
    for route, pre, post in endpoints:
        lines.append(f'  "{route}":')
        if pre:
            lines.append(f"    pre: [{', '.join(pre)}]")
        if post:
            lines.append(f"    post: [{', '.join(post)}]")
    lines.append("adapters:")
    lines.extend(adapter_lines)
    path.write_text("\n".join(lines) + "\n")
    return path
