#!/usr/bin/env python3
"""A Docker authorization (AuthZ) plugin, standard library only: no privileged containers.

It speaks Docker's authorization-plugin protocol, so it works behind a
Powerstrip adapter with ``type: authz`` (and, with its ``Plugin.Activate``
handshake, as a plugin of dockerd itself). ``AuthZPlugin.AuthZReq`` denies
any request whose body asks for privileges:

- ``docker run``/``create --privileged`` (``HostConfig.Privileged``, or the
  top-level ``Privileged`` that dockerd 20.10 still reads as a deprecated
  spelling of the same thing);
- ``docker exec --privileged`` (the exec's ``Privileged``).

Everything else is allowed, and so is every ``AuthZPlugin.AuthZRes``.

The body is read the way dockerd's Go JSON decoder reads it, so a request
cannot say one thing to this plugin and another to dockerd: names match
case-insensitively (``"hostconfig"``, ``"privileged"``), every occurrence of a
repeated name counts, and bytes after the first JSON value are ignored. The
body is judged whatever the request's path says (an encoded path such as
``/containers/%63reate`` is still a create to dockerd); a body it cannot read
at all is denied.

Run it with ``python3 examples/authz_plugin.py --port 9090`` and name it in
adapters.yml (authz adapters go last in ``pre:``)::

    version: 1
    endpoints:
      "* *":
        pre: [authz]
    adapters:
      authz:
        url: http://127.0.0.1:9090
        type: authz

or with ``--unix /run/authz.sock`` and ``url: http+unix://%2Frun%2Fauthz.sock``.
``--record FILE`` appends every call it receives as one JSON line (the tests
read it).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socketserver
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ALLOW = {"Allow": True}


class _Pairs(list):
    """A JSON object as its (case-folded name, value) pairs, repeats included."""


def _decode(body: bytes) -> Any:
    """The first JSON value of ``body``, as dockerd would decode it (trailing bytes ignored)."""
    text = body.decode("utf-8", "replace")  # Go replaces invalid UTF-8 too
    decoder = json.JSONDecoder(object_pairs_hook=lambda items: _Pairs((k.casefold(), v) for k, v in items))
    value, _end = decoder.raw_decode(text, len(text) - len(text.lstrip(" \t\r\n")))
    return value


def _values(obj: Any, name: str) -> list[Any]:
    """Every value of ``name`` in the JSON object ``obj`` (none if it is not an object)."""
    return [v for k, v in obj if k == name] if isinstance(obj, _Pairs) else []


def privileged(spec: Any) -> bool:
    """Whether a create or exec body asks for privileges, at the top or in any ``HostConfig``."""
    flags = _values(spec, "privileged")
    for host_config in _values(spec, "hostconfig"):
        flags += _values(host_config, "privileged")
    return any(flag not in (False, None) for flag in flags)


def authorize(call: dict) -> dict:
    """Judge one ``AuthZPlugin.AuthZReq`` call; returns the plugin's answer."""
    raw = call.get("RequestBody")
    if not raw:
        return _ALLOW
    try:
        spec = _decode(base64.b64decode(raw))
    except ValueError:
        return {"Allow": False, "Msg": "the request body is not JSON this plugin can read"}
    if not privileged(spec):
        return _ALLOW
    what = "privileged exec is" if "/exec" in call.get("RequestUri", "") else "privileged containers are"
    return {"Allow": False, "Msg": f"{what} not allowed"}


class Handler(BaseHTTPRequestHandler):
    """Answers the plugin calls (HTTP/1.1 keep-alive, as Powerstrip pools connections)."""

    protocol_version = "HTTP/1.1"
    record: str | None = None

    def do_POST(self) -> None:
        call = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        method = self.path.rsplit("/", 1)[-1]
        if self.record:
            with open(self.record, "a") as f:
                f.write(json.dumps({"Method": method, **call}) + "\n")
        if method == "AuthZPlugin.AuthZReq":
            answer = authorize(call)
        elif method == "AuthZPlugin.AuthZRes":
            answer = _ALLOW
        elif method == "Plugin.Activate":  # dockerd's handshake
            answer = {"Implements": ["authz"]}
        else:
            answer = {"Err": f"unknown method {method}"}
        data = json.dumps(answer).encode()
        self.send_response(200 if "Err" not in answer else 404)
        self.send_header("Content-Type", "application/vnd.docker.plugins.v1.2+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write("authz-plugin: " + fmt % args + "\n")

    def address_string(self) -> str:
        return self.client_address[0] if self.client_address else "unix"


class UnixHTTPServer(socketserver.ThreadingUnixStreamServer):
    """The same handler on a unix socket: no network port at all."""

    daemon_threads = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--unix", help="listen on this unix socket path instead of a port")
    parser.add_argument("--record", help="append each call received to this file as a JSON line")
    args = parser.parse_args()
    Handler.record = args.record
    if args.unix:
        if os.path.exists(args.unix):
            os.unlink(args.unix)
        server: socketserver.BaseServer = UnixHTTPServer(args.unix, Handler)
        where = "http+unix://" + args.unix.replace("/", "%2F")
    else:
        server = ThreadingHTTPServer((args.host, args.port), Handler)
        where = f"http://{args.host}:{server.server_port}"
    print(f"authz-plugin listening on {where}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
