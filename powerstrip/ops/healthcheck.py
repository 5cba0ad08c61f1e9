"""``powerstrip healthcheck``: does a running Powerstrip answer? For container health checks.

- Without options it asks the API listener for ``GET /_ping``, which
  Powerstrip passes to dockerd: 200 ``OK`` means Powerstrip listens *and*
  reaches Docker, which is what a client needs (``docker-compose up --wait``
  waits for exactly that). The listener is the first of ``$POWERSTRIP_LISTEN``
  (the image sets it), else ``tcp:2375:interface=127.0.0.1``; ``--listen``
  names another.
- ``--admin ENDPOINT`` asks the admin listener's ``GET /readyz`` instead
  (a configuration is loaded and dockerd answers; see :mod:`powerstrip.ops.admin`).

Prints one line saying what answered, or what failed, and exits 0 (healthy)
or 1 (not). Standard library only, and no reactor: a health check runs every
few seconds and should start fast. Plain HTTP on ``tcp:`` and ``unix:``
endpoints; a TLS listener is checked through a plain admin listener.

The ``powerstrip`` console script (:mod:`powerstrip.ops.console`) runs
``powerstrip healthcheck`` from here without importing the rest of Powerstrip
(Twisted and all, about three times the CPU).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import sys
import time
from collections.abc import Mapping

DEFAULT_LISTEN = "tcp:2375:interface=127.0.0.1"  # the same default as ``twistd powerstrip --listen``


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def target(listen: str) -> tuple[str, str, int | None]:
    """``("tcp", host, port)`` or ``("unix", path, None)`` to connect to for a Twisted
    server endpoint string; a listener on all interfaces is reached on loopback.

    Raises ``ValueError`` for an endpoint it cannot connect to.
    """
    parts = re.split(r"(?<!\\):", listen)
    kind, args = parts[0], [p.replace("\\:", ":") for p in parts[1:]]
    kw = dict(a.split("=", 1) for a in args if "=" in a)
    pos = [a for a in args if "=" not in a]
    if kind in ("tcp", "tcp6") and (pos or "port" in kw):
        host = kw.get("interface", "")
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return "tcp", host, int(kw.get("port", pos[0] if pos else 0))
    if kind == "unix" and (pos or "address" in kw):
        return "unix", kw.get("address", pos[0] if pos else ""), None
    raise ValueError(f"cannot check {listen!r}: give a tcp: or unix: endpoint")


def _get(listen: str, path: str, timeout: float) -> tuple[int, bytes, str]:
    kind, where, port = target(listen)
    if kind == "unix":
        conn: http.client.HTTPConnection = _UnixHTTPConnection(where, timeout)
        shown = f"unix://{where}{path}"
    else:
        conn = http.client.HTTPConnection(where, port, timeout=timeout)
        shown = f"http://{'[' + where + ']' if ':' in where else where}:{port}{path}"
    try:
        conn.request("GET", path, headers={"User-Agent": "powerstrip-healthcheck"})
        response = conn.getresponse()
        return response.status, response.read(65536), shown
    finally:
        conn.close()


def healthcheck(
    listen: str | None = None, admin: str | None = None, timeout: float = 5.0, env: Mapping[str, str] | None = None
) -> tuple[int, str]:
    """``(exit status, message)``: 0 when the listener answers ``/_ping`` with 200 (or, with
    ``admin``, the admin listener's ``/readyz`` says ready), else 1."""
    env = os.environ if env is None else env
    if admin:
        endpoint, path = admin, "/readyz"
    else:
        endpoint = listen or (env.get("POWERSTRIP_LISTEN") or DEFAULT_LISTEN).split()[0]
        path = "/_ping"
    started = time.monotonic()
    try:
        status, body, shown = _get(endpoint, path, timeout)
    except ValueError as e:
        return 1, f"powerstrip healthcheck: {e}"
    except (OSError, http.client.HTTPException) as e:
        why = f"no answer within {timeout:g}s" if isinstance(e, TimeoutError) else (str(e) or type(e).__name__)
        return 1, f"powerstrip healthcheck: FAIL: {endpoint} ({path}): {why}"
    ms = (time.monotonic() - started) * 1000
    text = body.decode("utf-8", "replace").strip()
    if admin:
        try:
            docker = json.loads(body).get("docker", text)
        except (ValueError, AttributeError):
            docker = text
        if status == 200:
            return 0, f"powerstrip healthcheck: OK: {shown} answered 200 in {ms:.1f} ms (docker: {docker})"
        return 1, f"powerstrip healthcheck: FAIL: {shown} answered {status}: docker: {docker}"
    if status == 200:
        return 0, f"powerstrip healthcheck: OK: {shown} answered 200 {text[:40]} in {ms:.1f} ms"
    try:
        text = json.loads(body)["message"]
    except (ValueError, KeyError, TypeError):
        pass
    return 1, f"powerstrip healthcheck: FAIL: {shown} answered {status}: {text[:200]}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``powerstrip healthcheck``."""
    parser.add_argument(
        "--listen",
        help="the API listener to GET /_ping on [default: the first of "
        "$POWERSTRIP_LISTEN, else tcp:2375:interface=127.0.0.1]",
    )
    parser.add_argument("--admin", help="check the admin listener's GET /readyz instead, e.g. tcp:9375")
    parser.add_argument("--timeout", default="5s", help="5s, 500ms [default: 5s]")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Check as ``args`` say, print the result (stderr when unhealthy) and return the exit status."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*", args.timeout)
    if not m or float(m.group(1)) <= 0:
        parser.error(f"--timeout: not a duration: {args.timeout!r} (e.g. 5s, 500ms)")
    timeout = float(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60}[m.group(2)]
    status, message = healthcheck(args.listen, args.admin, timeout)
    print(message, file=sys.stderr if status else sys.stdout)
    return status
