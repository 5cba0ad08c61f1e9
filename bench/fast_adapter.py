"""A minimal, fast Powerstrip adapter for benchmarking hook overhead.

HTTP/1.1 with keep-alive on raw asyncio protocols (no framework): every POST
is answered at once with the payload echoed back unchanged, so what a hook
costs in the benchmark is Powerstrip's side of the call, not the adapter's.

- pre-hook  -> ``{"PowerstripProtocolVersion": 1, "ModifiedClientRequest": <ClientRequest>}``
- post-hook -> ``{"PowerstripProtocolVersion": 1, "ModifiedServerResponse": <ServerResponse>}``
- ``GET /stats`` -> ``{"calls": N, "pre": N, "post": N, "connections": N}``

Usage: ``python bench/fast_adapter.py --port 0 [--host 127.0.0.1]``; it prints
``LISTENING <port>`` on stdout once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

STATS = {"calls": 0, "pre": 0, "post": 0, "connections": 0, "errors": 0}

_HEAD_END = b"\r\n\r\n"


def _reply(code: int, body: bytes, keep_alive: bool) -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}.get(code, b"X")
    conn = b"keep-alive" if keep_alive else b"close"
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: %s\r\n\r\n" % (code, reason, len(body), conn)
    ) + body


def handle(method: bytes, path: bytes, body: bytes) -> tuple[int, bytes]:
    """The adapter's whole logic: echo the request/response back as modified."""
    if method == b"GET" and path.startswith(b"/stats"):
        return 200, json.dumps(STATS).encode()
    if method != b"POST":
        return 404, b'{"error":"POST hook payloads here"}'
    try:
        payload = json.loads(body)
        kind = payload["Type"]
        if kind == "pre-hook":
            STATS["pre"] += 1
            out = {"PowerstripProtocolVersion": 1, "ModifiedClientRequest": payload["ClientRequest"]}
        elif kind == "post-hook":
            STATS["post"] += 1
            out = {"PowerstripProtocolVersion": 1, "ModifiedServerResponse": payload["ServerResponse"]}
        else:
            raise ValueError(kind)
    except (ValueError, KeyError, TypeError) as e:
        STATS["errors"] += 1
        return 400, json.dumps({"error": f"bad hook payload: {e!r}"}).encode()
    STATS["calls"] += 1
    return 200, json.dumps(out, separators=(",", ":")).encode()


class HookServer(asyncio.Protocol):
    """One client connection; requests are handled in order as they complete."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        STATS["connections"] += 1
        self.transport = transport
        self.buf = b""
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        out = []
        while True:
            end = self.buf.find(_HEAD_END)
            if end < 0:
                break
            head = self.buf[:end]
            lines = head.split(b"\r\n")
            try:
                method, path, version = lines[0].split(b" ", 2)
            except ValueError:
                self.transport.write(_reply(400, b'{"error":"bad request line"}', False))
                self.transport.close()
                return
            length = 0
            keep_alive = version == b"HTTP/1.1"
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"connection":
                    v = value.strip().lower()
                    if v == b"close":
                        keep_alive = False
                    elif v == b"keep-alive":
                        keep_alive = True
                elif name == b"transfer-encoding":
                    # Powerstrip (treq) sends Content-Length; chunked is not needed here.
                    self.transport.write(_reply(400, b'{"error":"chunked not supported"}', False))
                    self.transport.close()
                    return
            start = end + 4
            if len(self.buf) < start + length:
                break
            body = self.buf[start : start + length]
            self.buf = self.buf[start + length :]
            code, rbody = handle(method, path, body)
            out.append(_reply(code, rbody, keep_alive))
            if not keep_alive:
                self.transport.write(b"".join(out))
                self.transport.close()
                return
        if out:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HookServer, args.host, args.port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"LISTENING {port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    print(json.dumps(STATS), file=sys.stderr, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
