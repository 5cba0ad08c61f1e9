"""A pass-through Powerstrip adapter for bench/soak.py, sometimes deliberately slow.

Like ``fast_adapter.py`` (asyncio, HTTP/1.1 keep-alive, every payload echoed
back unchanged, so the bytes a client gets stay comparable with Docker's), plus:

- ``--delay-prob P --delay S``: a fraction P of the replies is sent only after
  S seconds (the soak sets S past the adapter's ``timeout`` in adapters.yml, so
  Powerstrip gives up first and answers 504);
- ``GET /stats`` also counts ``"delayed"`` replies.

Being killed (SIGKILL) and restarted on the same ``--port`` is the soak's other
fault; nothing here needs to survive it. Prints ``LISTENING <port>`` once it
accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import socket

# The echo logic and the reply framing are fast_adapter's (same directory).
from fast_adapter import STATS, _reply, handle

STATS["delayed"] = 0


class HookServer(asyncio.Protocol):
    """One connection; Powerstrip never pipelines, so one request at a time."""

    delay_prob = 0.0
    delay = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        STATS["connections"] += 1
        self.transport = transport
        self.buf = b""
        self.busy = False
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._next()

    def _next(self) -> None:
        if self.busy or self.transport.is_closing():
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = self.buf[:end].split(b"\r\n")
        try:
            method, path, version = lines[0].split(b" ", 2)
        except ValueError:
            self.transport.write(_reply(400, b'{"error":"bad request line"}', False))
            self.transport.close()
            return
        length, keep_alive = 0, version == b"HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                keep_alive = value != b"close"
        start = end + 4
        if len(self.buf) < start + length:
            return
        body, self.buf = self.buf[start : start + length], self.buf[start + length :]
        code, rbody = handle(method, path, body)
        out = _reply(code, rbody, keep_alive)
        if method == b"POST" and self.delay_prob and random.random() < self.delay_prob:
            STATS["delayed"] += 1
            self.busy = True
            asyncio.get_running_loop().call_later(self.delay, self._send, out, keep_alive)
        else:
            self._send(out, keep_alive)

    def _send(self, out: bytes, keep_alive: bool) -> None:
        self.busy = False
        if self.transport.is_closing():
            return  # Powerstrip gave up on us (timeout) and closed the connection
        self.transport.write(out)
        if not keep_alive:
            self.transport.close()
            return
        self._next()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--delay-prob", type=float, default=0.0)
    ap.add_argument("--delay", type=float, default=0.0)
    args = ap.parse_args()
    HookServer.delay_prob, HookServer.delay = args.delay_prob, args.delay
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HookServer, args.host, args.port, backlog=1024, reuse_address=True)
    print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
