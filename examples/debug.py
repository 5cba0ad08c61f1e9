"""powerstrip-debug: log every hook call it gets, pre and post, and change nothing.

Route the calls you want to watch to it (``"* /*"`` for all of them) as a
pre-hook, a post-hook or both. Each call is logged (twisted.logger, so to
twistd's log, or Powerstrip's when it runs in-process) as pretty-printed JSON,
with the request and response bodies decoded when they are JSON. The reply is
the input unchanged, byte for byte.

Settings (environment variables):

``POWERSTRIP_DEBUG_FILE``
    If set, every hook call is also appended to this file as one JSON line:
    the protocol payload as received (``Type``, ``ClientRequest`` and, for a
    post-hook, ``ServerResponse``; bodies as strings).

Run it as its own service::

    POWERSTRIP_DEBUG_FILE=/tmp/hooks.jsonl \\
        twistd -n powerstrip-adapter --module examples.debug --listen tcp:8082:interface=127.0.0.1

with ``debug: http://127.0.0.1:8082/`` under ``adapters:`` in adapters.yml, or
inside Powerstrip (no HTTP hop; Powerstrip's environment holds the settings)
with ``debug: python:examples.debug:adapter``. Either way, run it from the
repository root so that ``examples`` is importable::

    version: 1
    endpoints:
      "* /*":
        pre: [debug]
        post: [debug]
    adapters:
      debug: python:examples.debug:adapter
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.logger import Logger

from powerstrip.sdk import PROTOCOL_VERSION, Adapter, Request, Response

log = Logger()

adapter = Adapter("debug")

#: Where to append JSON lines; read at import, like every example's settings.
DEBUG_FILE: str | None = os.environ.get("POWERSTRIP_DEBUG_FILE") or None


def _readable(body: str | None) -> Any:
    """The body as JSON when it is JSON (for pretty printing), else as it is."""
    if not body:
        return body
    try:
        return json.loads(body)
    except ValueError:
        return body


def _record(payload: dict) -> None:
    """Log ``payload`` pretty-printed and append it to ``DEBUG_FILE``."""
    readable = json.loads(json.dumps(payload))
    readable["ClientRequest"]["Body"] = _readable(payload["ClientRequest"]["Body"])
    if readable.get("ServerResponse"):
        readable["ServerResponse"]["Body"] = _readable(payload["ServerResponse"]["Body"])
    # The payload goes in as a field, not into the format string: its braces stay literal.
    log.info(
        "{kind} {method} {uri}\n{pretty}",
        kind=payload["Type"],
        method=payload["ClientRequest"]["Method"],
        uri=payload["ClientRequest"]["Request"],
        pretty=json.dumps(readable, indent=2, sort_keys=True),
    )
    if DEBUG_FILE:
        # One write per line from the reactor thread, so lines never interleave.
        try:
            with open(DEBUG_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(payload) + "\n")
        except OSError as e:
            # A debugging aid must not break the traffic it watches: say so and go on.
            log.error("debug: cannot append to {file}: {error}", file=DEBUG_FILE, error=e)


# The hooks read .body, never .json: touching the JSON view would make the SDK
# re-serialise the body, and this adapter promises to pass it on byte for byte.


@adapter.pre_hook
def log_pre_hook(request: Request) -> None:
    """Record a pre-hook call; the request goes on unchanged."""
    _record({"PowerstripProtocolVersion": PROTOCOL_VERSION, "Type": "pre-hook", "ClientRequest": request.wire()})


@adapter.post_hook
def log_post_hook(request: Request, response: Response) -> None:
    """Record a post-hook call; the response goes back unchanged."""
    _record(
        {
            "PowerstripProtocolVersion": PROTOCOL_VERSION,
            "Type": "post-hook",
            "ClientRequest": request.wire(),
            "ServerResponse": response.wire(),
        }
    )
