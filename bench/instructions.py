"""Instructions a request costs each relay: the bench's noise-free yardstick.

Request rates on these machines move with the machine (a run at half the speed of
the day before is common), so a change worth a few µs a request drowns in them.
Valgrind's callgrind counts the instructions a process executes in user space: the
same count for the same code and the same requests, whatever else the machine is
doing. Each relay runs under callgrind; it is warmed up, its count zeroed, sent
``-n`` keep-alive requests on one connection, and its count dumped and divided.
The kernel's work is not counted: every relay here makes the same reads and
writes (``strace -c`` says so), so what differs between rows is user space.

Rows: the bare relay (``bare_relay.py``, the smallest Twisted relay: the floor),
the duty relay (``bare_relay.py --duties``: the bare relay doing what every request
costs Powerstrip, nothing more), Powerstrip from this work tree, and with ``--before`` (or ``--tree LABEL=TREE``)
Powerstrip from another checkout (a before/after in one run). Loads: ``ping`` (``GET /_ping``), ``list``
(``GET /containers/json?all=1``), ``hook`` (``GET /_ping`` with one pre-hook on
``fast_adapter.py`` over HTTP; Powerstrip rows only), ``post`` (the same as a
post-hook) and ``inproc`` (a pre-hook of the SDK adapter in-process,
``python:bench.sdk_adapter:adapter``).

    python bench/instructions.py                      # ~2 min: every load, a table
    python bench/instructions.py --before ../start    # plus Powerstrip from ../start
    python bench/instructions.py --only ping,list -n 2000

Needs valgrind (apt) and a dockerd on /var/run/docker.sock; the table is printed
and written to bench/out/instructions.md.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import (
    HERE,
    REPO,
    BenchError,
    Procs,
    bare_relay_argv,
    checkout_env,
    free_port,
    http_get,
    md_head,
    md_row,
    powerstrip_args,
    python_twistd,
    start_fast_adapter,
    tree,
    twistd_argv,
    wait_ready,
    write_adapters_file,
)

OUT = HERE / "out"
#: name -> (request path, hook: (adapter name, phase, adapters file line) or None)
LOADS: dict[str, tuple[str, tuple[str, str, str] | None]] = {
    "ping": ("/_ping", None),
    "list": ("/containers/json?all=1", None),
    "hook": ("/_ping", ("fast", "pre", "  fast: http://127.0.0.1:{adapter}/")),
    "post": ("/_ping", ("fast", "post", "  fast: http://127.0.0.1:{adapter}/")),
    "inproc": ("/_ping", ("inproc", "pre", "  inproc: python:bench.sdk_adapter:adapter")),
}


def keep_alive_load(port: int, path: str, n: int) -> None:
    """``n`` GETs of ``path`` on one keep-alive connection; each must answer 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for _ in range(n):
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise BenchError(f"GET {path} on port {port} answered {r.status}")
    finally:
        conn.close()


def callgrind_total(dump: Path) -> int:
    """The instruction count (``summary:``) of one callgrind dump."""
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise BenchError(f"no instruction total in {dump}")


class Measured:
    """One relay process under callgrind, listening on ``port``."""

    def __init__(self, procs: Procs, name: str, argv: list[str], port: int, workdir: Path, **kw) -> None:
        self.name, self.port, self.out = name, port, workdir / f"{name}.callgrind"
        self.procs = procs
        self.proc = procs.start(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}", *argv],
            f"instructions-{name}.log",
            **kw,
        )
        why = wait_ready(self.proc, lambda: http_get(port, "/_ping", timeout=10)[0] == 200, timeout=180, interval=1)
        if why is not None:
            raise BenchError(f"{name} under callgrind: {why}; see bench/out/logs/instructions-{name}.log")
        # twistd under python -c is one process; valgrind runs it in place (same pid).
        self.pid = self.proc.pid
        self.dumps = 0

    def control(self, flag: str) -> None:
        rc, _, err = self.procs.run(["callgrind_control", flag, str(self.pid)], timeout=60)
        if rc != 0:
            raise BenchError(f"callgrind_control {flag} {self.name}: {err.strip()}")

    def per_request(self, path: str, n: int, warmup: int) -> float:
        """Instructions per request over ``n`` GETs of ``path``, after ``warmup`` unmeasured ones."""
        keep_alive_load(self.port, path, warmup)
        self.control("-z")
        keep_alive_load(self.port, path, n)
        self.control("-d")
        self.dumps += 1
        dump = Path(f"{self.out}.{self.dumps}")
        deadline = time.monotonic() + 30
        while not dump.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return callgrind_total(dump) / n

    def stop(self) -> None:
        self.procs.stop(self.proc, timeout=30)


Row = tuple[str, str, float]


def measure(
    procs: Procs, loads: list[str], trees: list[tuple[str, Path]], work: Path, n: int, warmup: int
) -> list[Row]:
    """Rows of (load, relay, instructions per request): the two yardsticks, then each Powerstrip tree."""
    rows: list[Row] = []
    hooked = [name for name in loads if LOADS[name][1] is not None]
    plain = [name for name in loads if LOADS[name][1] is None]
    # The adapter is not measured: it stands in for any adapter.
    fast = any(LOADS[name][1][0] == "fast" for name in hooked)
    adapter_port = start_fast_adapter(procs, OUT / "logs" / "fast_adapter.log")[1] if fast else 0
    yardsticks = [("bare-relay", None), ("duty-relay", work / "duty-access.log")] if plain else []
    for yardstick, access_log in yardsticks:
        port = free_port()
        relay = Measured(procs, yardstick, bare_relay_argv(port, access_log), port, work)
        rows += [(name, relay.name, relay.per_request(LOADS[name][0], n, warmup)) for name in plain]
        relay.stop()
    for label, checkout in trees:
        # One Powerstrip per adapters file: the pass-through one, and one per hooked load.
        for tag, names in ([("none", plain)] if plain else []) + [(name, [name]) for name in hooked]:
            hook = LOADS[names[0]][1]
            endpoints: list[tuple[str, list[str], list[str]]] = []
            adapters: list[str] = []
            if hook is not None:
                adapter, phase, line = hook
                endpoints = [("GET /_ping", [adapter] if phase == "pre" else [], [adapter] if phase == "post" else [])]
                adapters = [line.format(adapter=adapter_port)]
            config = write_adapters_file(work / f"{label}-{tag}.yml", endpoints, adapters)
            port = free_port()
            argv = twistd_argv(python_twistd(), "powerstrip", *powerstrip_args(config, port))
            env = checkout_env(checkout)
            ps = Measured(procs, f"{label}-{tag}", argv, port, work, env=env, cwd=str(checkout))
            if len(tree(ps.pid)) != 1:
                raise BenchError(f"{ps.name}: expected one process under valgrind, found {tree(ps.pid)}")
            rows += [(name, label, ps.per_request(LOADS[name][0], n, warmup)) for name in names]
            ps.stop()
    return rows


def table(rows: list[Row], n: int, warmup: int) -> str:
    """The markdown table, each row also as a multiple of the bare relay's count for its load."""
    floor = {name: count for name, relay, count in rows if relay == "bare-relay"}
    lines = [
        f"Instructions per request (callgrind, user space; {n} keep-alive requests on one connection "
        f"after {warmup} unmeasured; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        *md_head(["load", "relay", "instructions/request", "× bare relay"], "llrr"),
    ]
    for name, relay, count in rows:
        ratio = f"{count / floor[name]:.2f}×" if name in floor else "–"
        lines.append(md_row(f"{name} (`GET {LOADS[name][0]}`)", relay, f"{count:,.0f}", ratio))
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=1000, help="measured requests per load and relay [1000]")
    ap.add_argument("--warmup", type=int, default=200, help="unmeasured requests first [200]")
    ap.add_argument("--only", default=",".join(LOADS), help=f"comma-separated loads: {','.join(LOADS)}")
    ap.add_argument("--before", metavar="TREE", help="also Powerstrip from this checkout (row powerstrip-before)")
    ap.add_argument(
        "--tree", metavar="LABEL=TREE", action="append", default=[], help="also Powerstrip from TREE, row LABEL"
    )
    args = ap.parse_args()
    loads = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in loads if name not in LOADS]
    if unknown:
        ap.error(f"unknown loads: {', '.join(unknown)}")
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install valgrind")
    (OUT / "logs").mkdir(parents=True, exist_ok=True)
    procs = Procs(logs=OUT / "logs")
    extra = ([f"powerstrip-before={args.before}"] if args.before else []) + args.tree
    if any("=" not in spec for spec in extra):
        ap.error("--tree takes LABEL=TREE")
    trees = [("powerstrip", REPO)] + [(label, Path(tree).resolve()) for label, tree in (s.split("=", 1) for s in extra)]
    try:
        with tempfile.TemporaryDirectory(prefix="ps-instructions-") as tmp:
            rows = measure(procs, loads, trees, Path(tmp), args.n, args.warmup)
    finally:
        procs.stop_all(timeout=30)
    text = table(rows, args.n, args.warmup)
    print(text)
    (OUT / "instructions.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
