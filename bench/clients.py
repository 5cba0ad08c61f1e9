"""Load clients for bench/run.py, each run as its own process (own CPU, own GIL).

``upload``  PUT a generated tar of ``--size`` bytes to ``/containers/ID/archive``
            with a chunked body, as ``docker cp`` does; prints one JSON line.
``hijack``  Open ``--sessions`` attach sessions (``101 UPGRADED``) spread over
            the given containers (each runs ``cat`` with stdin open), report,
            wait for a line on stdin, then write a unique line to every
            session and read it back through the multiplexed stream framing.
            Prints one JSON line after opening and one after the echo phase.

Both talk to ``--port`` on 127.0.0.1, or to ``--unix PATH`` (dockerd direct).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tarfile
import time

BLOCK = 1024 * 1024


def _connect(args: argparse.Namespace) -> socket.socket:
    if args.unix:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(args.unix)
    else:
        s = socket.create_connection(("127.0.0.1", args.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _read_response(s: socket.socket) -> tuple[int, bytes, bytes]:
    """Status code, head and (Content-Length or chunked or close-delimited) body."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = s.recv(65536)
        if not data:
            raise ConnectionError(f"connection closed before a response head ({buf[:200]!r})")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    code = int(head.split(b" ", 2)[1])
    lower = head.lower()
    length = None
    for line in lower.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip() == b"content-length":
            length = int(v.strip())
    if length is not None:
        while len(rest) < length:
            data = s.recv(65536)
            if not data:
                break
            rest += data
        return code, head, rest[:length]
    if b"transfer-encoding: chunked" in lower:
        while not rest.endswith(b"0\r\n\r\n"):
            data = s.recv(65536)
            if not data:
                break
            rest += data
        return code, head, rest
    while True:
        data = s.recv(65536)
        if not data:
            return code, head, rest
        rest += data


def upload(args: argparse.Namespace) -> dict:
    info = tarfile.TarInfo(args.name)
    info.size = args.size
    info.mode = 0o644
    info.mtime = int(time.time())
    header = info.tobuf(format=tarfile.USTAR_FORMAT)
    block = os.urandom(BLOCK)
    pad = (-args.size) % 512
    trailer = b"\0" * (pad + 1024)
    s = _connect(args)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * BLOCK)
    head = (
        f"PUT /containers/{args.cid}/archive?path={args.path} HTTP/1.1\r\n"
        "Host: docker\r\nUser-Agent: psbench\r\nContent-Type: application/x-tar\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    started = time.monotonic()
    sent = 0
    error = None
    try:
        s.sendall(head)
        s.sendall(b"%x\r\n%s\r\n" % (len(header), header))
        sent += len(header)
        left = args.size
        while left > 0:
            piece = block if left >= BLOCK else block[:left]
            s.sendmsg([b"%x\r\n" % len(piece), piece, b"\r\n"])
            sent += len(piece)
            left -= len(piece)
        s.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(trailer), trailer))
        sent += len(trailer)
    except OSError as e:  # dockerd (or the relay) answered early and closed
        error = f"send: {e}"
    try:
        code, rhead, body = _read_response(s)
    except (OSError, ValueError) as e:
        return {"ok": False, "error": f"{error or ''} response: {e}", "sent": sent}
    elapsed = time.monotonic() - started
    s.close()
    return {
        "ok": code == 200 and error is None,
        "code": code,
        "sent": sent,
        "payload": args.size,
        "seconds": elapsed,
        "body": body[:300].decode("latin-1"),
        "error": error,
    }


# -- hijacked sessions ---------------------------------------------------------------


async def _open(i: int, cid: str, args: argparse.Namespace, sem: asyncio.Semaphore) -> tuple:
    async with sem:
        if args.unix:
            reader, writer = await asyncio.open_unix_connection(args.unix, limit=1 << 20)
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", args.port, limit=1 << 20)
        writer.write(
            (
                f"POST /containers/{cid}/attach?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\n"
                "Host: docker\r\nUser-Agent: psbench\r\nContent-Type: text/plain\r\n"
                "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        code = int(head.split(b" ", 2)[1])
        if code != 101:
            writer.close()
            raise RuntimeError(f"status {code}")
        return reader, writer


async def _echo(i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, nonce: str) -> None:
    token = f"psbench-{nonce}-{i:05d}\n".encode()
    writer.write(token)
    await writer.drain()
    seen = b""
    while True:
        hdr = await reader.readexactly(8)
        size = int.from_bytes(hdr[4:8], "big")
        payload = await reader.readexactly(size)
        if hdr[0] not in (1, 2):
            raise RuntimeError(f"unexpected stream type {hdr[0]} (TTY container?)")
        seen += payload
        if token in seen:
            return
        seen = seen[-len(token) :]


async def hijack(args: argparse.Namespace) -> None:
    cids = args.containers.split(",")
    sem = asyncio.Semaphore(args.parallel_open)
    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(_open(i, cids[i % len(cids)], args, sem)) for i in range(args.sessions)]
    done, pending = await asyncio.wait(tasks, timeout=args.timeout)
    for t in pending:
        t.cancel()
    sessions: dict[int, tuple] = {}
    errors: dict[str, int] = {}
    for i, t in enumerate(tasks):
        if t in done and t.exception() is None:
            sessions[i] = t.result()
        else:
            why = "timeout" if t in pending else f"{type(t.exception()).__name__}: {t.exception()}"[:80]
            errors[why] = errors.get(why, 0) + 1
    open_s = time.monotonic() - t0
    print(
        json.dumps(
            {
                "phase": "open",
                "requested": args.sessions,
                "opened": len(sessions),
                "open_seconds": open_s,
                "errors": errors,
            }
        ),
        flush=True,
    )
    # Hold every session open until the runner has looked at the relay.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    nonce = os.urandom(4).hex()
    t1 = time.monotonic()
    etasks = {i: asyncio.ensure_future(_echo(i, r, w, nonce)) for i, (r, w) in sessions.items()}
    if etasks:
        done, pending = await asyncio.wait(etasks.values(), timeout=args.timeout)
    else:
        done, pending = set(), set()
    for t in pending:
        t.cancel()
    echo_errors: dict[str, int] = {}
    ok = 0
    for t in etasks.values():
        if t in done and t.exception() is None:
            ok += 1
        else:
            why = "timeout" if t in pending else f"{type(t.exception()).__name__}: {t.exception()}"[:80]
            echo_errors[why] = echo_errors.get(why, 0) + 1
    echo_s = time.monotonic() - t1
    for _, w in sessions.values():
        w.transport.abort() if args.abort else w.close()
    print(json.dumps({"phase": "echo", "echoed": ok, "echo_seconds": echo_s, "errors": echo_errors}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("upload", "hijack"):
        p = sub.add_parser(name)
        p.add_argument("--port", type=int)
        p.add_argument("--unix")
        p.add_argument("--timeout", type=float, default=120.0)
    up = sub.choices["upload"]
    up.add_argument("--cid", required=True)
    up.add_argument("--size", type=int, required=True)
    up.add_argument("--path", default="/tmp")
    up.add_argument("--name", default="psbench-upload.bin")
    hj = sub.choices["hijack"]
    hj.add_argument("--containers", required=True, help="comma-separated container ids")
    hj.add_argument("--sessions", type=int, default=1000)
    hj.add_argument("--parallel-open", type=int, default=32)
    hj.add_argument("--abort", action="store_true", help="reset connections instead of closing")
    args = ap.parse_args()
    if args.cmd == "upload":
        print(json.dumps(upload(args)), flush=True)
    else:
        asyncio.run(hijack(args))


if __name__ == "__main__":
    main()
