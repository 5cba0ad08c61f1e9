#!/usr/bin/env python3
"""A tiny Powerstrip adapter, standard library only: proof that adapters need no SDK.

Pre-hook (``POST /*/containers/create``): adds the label
``powerstrip.example=hooked`` and the environment variable
``POWERSTRIP_HOOKED=1`` to every new container, and refuses (403) a container
labelled ``powerstrip.refuse``. Post-hook (any call): prefixes Docker's error
messages with ``[label-adapter]`` so you can see it ran; other responses pass
through unchanged.

Run it with ``python3 examples/label_adapter.py --port 8080`` and point an
adapter at ``http://127.0.0.1:8080/adapter``, or with ``--unix /run/label.sock``
and point it at ``http+unix://%2Frun%2Flabel.sock/adapter``. ``--record FILE``
appends every payload it receives as one JSON line (the tests read it).
"""

from __future__ import annotations

import argparse
import json
import os
import socketserver
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def pre_hook(request: dict) -> tuple[int, dict]:
    """Rewrite or refuse a client request; returns (HTTP status, reply)."""
    body = request["Body"]
    if request["Method"] == "POST" and request["Request"].split("?")[0].endswith("/containers/create") and body:
        spec = json.loads(body)
        labels = spec.get("Labels") or {}
        if "powerstrip.refuse" in labels:
            return 403, {"message": f"refused by label-adapter: {labels['powerstrip.refuse']}"}
        spec["Labels"] = {**labels, "powerstrip.example": "hooked"}
        spec["Env"] = (spec.get("Env") or []) + ["POWERSTRIP_HOOKED=1"]
        request = {**request, "Body": json.dumps(spec)}
    return 200, {"PowerstripProtocolVersion": 1, "ModifiedClientRequest": request}


def post_hook(request: dict, response: dict) -> tuple[int, dict]:
    """Rewrite Docker's response; returns (HTTP status, reply)."""
    if response["Code"] >= 400 and response["Body"]:
        try:
            error = json.loads(response["Body"])
            error["message"] = "[label-adapter] " + error.get("message", "")
            response = {**response, "Body": json.dumps(error)}
        except ValueError:
            pass
    return 200, {"PowerstripProtocolVersion": 1, "ModifiedServerResponse": response}


class Handler(BaseHTTPRequestHandler):
    """Answers Powerstrip's POSTs (HTTP/1.1 keep-alive, as Powerstrip pools connections)."""

    protocol_version = "HTTP/1.1"
    record: str | None = None

    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        if self.record:
            with open(self.record, "a") as f:
                f.write(json.dumps(payload) + "\n")
        if payload["Type"] == "pre-hook":
            status, reply = pre_hook(payload["ClientRequest"])
        else:
            status, reply = post_hook(payload["ClientRequest"], payload["ServerResponse"])
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write("label-adapter: " + fmt % args + "\n")

    def address_string(self) -> str:
        return self.client_address[0] if self.client_address else "unix"


class UnixHTTPServer(socketserver.ThreadingUnixStreamServer):
    """The same handler on a unix socket: no network port at all."""

    daemon_threads = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--unix", help="listen on this unix socket path instead of a port")
    parser.add_argument("--record", help="append each payload received to this file as a JSON line")
    args = parser.parse_args()
    Handler.record = args.record
    if args.unix:
        if os.path.exists(args.unix):
            os.unlink(args.unix)
        server: socketserver.BaseServer = UnixHTTPServer(args.unix, Handler)
        where = "http+unix://" + args.unix.replace("/", "%2F") + "/adapter"
    else:
        server = ThreadingHTTPServer((args.host, args.port), Handler)
        where = f"http://{args.host}:{server.server_port}/adapter"
    print(f"label-adapter listening on {where}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
