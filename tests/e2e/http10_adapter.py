"""A protocol-1 adapter in the standard library only, HTTP/1.0 style.

``http.server``'s default: every reply is ``HTTP/1.0`` without
``Connection: close``, and the connection is closed after it. It echoes each
call back unchanged and appends each payload, as one JSON line, to the file
named by its second argument.

    python3 http10_adapter.py PORT CALLS_FILE
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    """Echo pre-hook and post-hook calls (``protocol_version`` stays HTTP/1.0)."""

    def do_POST(self) -> None:
        """Answer one hook call."""
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        with open(sys.argv[2], "ab") as calls:
            calls.write(raw + b"\n")
        call = json.loads(raw)
        if call["Type"] == "pre-hook":
            reply = {"PowerstripProtocolVersion": 1, "ModifiedClientRequest": call["ClientRequest"]}
        else:
            reply = {"PowerstripProtocolVersion": 1, "ModifiedServerResponse": call["ServerResponse"]}
        body = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
