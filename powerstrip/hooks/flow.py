"""The flow: one client request as it travels through the hook chain.

One :class:`Flow` object is created per client request and handed along
every stage (route match → pre-hooks → dockerd → post-hooks → client), the
way mitmproxy threads one flow through its named hooks. Stages read and
replace its :class:`ClientRequest` and :class:`ServerResponse`.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from powerstrip.config.matching import Route
from powerstrip.hooks.peer import Peer
from powerstrip.wire import target
from powerstrip.wire.headers import HeaderList

#: The response header that tells the client its request id.
REQUEST_ID_HEADER = b"Powerstrip-Request-Id"


#: Request ids: a random 32-bit prefix per process, then a counter (no system call per request).
_ids = itertools.count((secrets.randbits(32) << 32) | secrets.randbits(16))


def new_request_id() -> str:
    """A fresh request id: 16 hex digits, unique enough to grep logs across restarts."""
    return "%016x" % next(_ids)  # noqa: UP031 -- the cheapest spelling


@dataclass
class ClientRequest:
    """The request as dockerd will receive it.

    ``body`` is the whole body when it was buffered for the hooks (JSON or
    empty) and ``None`` when the body streams straight from the client
    (``streamed`` is then True).
    """

    method: str
    uri: str
    headers: HeaderList
    body: bytes | None = None
    streamed: bool = False

    @property
    def path(self) -> str:
        """The request path without its query string (canonical: see :mod:`powerstrip.wire.target`)."""
        return self.uri.split("?", 1)[0]

    @property
    def endpoint(self) -> tuple[str | None, str]:
        """``(API version or None, route path)`` as dockerd routes the request: ``%XX`` decoded, version apart."""
        return target.endpoint(self.uri)

    @property
    def params(self) -> dict[str, list[str]]:
        """The query's parameters as dockerd reads them: name -> values (dockerd takes the first)."""
        return target.params(self.uri.partition("?")[2])

    def check_params(self) -> None:
        """Refuse a parameter given twice that dockerd reads once (a hook could read the other).

        :raises powerstrip.wire.target.BadTarget: naming it.
        """
        target.refuse_repeats(self.method, self.endpoint[1], self.params)


@dataclass
class ServerResponse:
    """A complete (buffered) response, from dockerd or from an adapter."""

    code: int
    headers: HeaderList
    body: bytes = b""

    @property
    def content_type(self) -> str | None:
        """The ``Content-Type`` header value, if any."""
        for k, v in reversed(self.headers):
            if k.lower() == b"content-type":
                return v.decode("latin-1")
        return None


@dataclass
class HookRecord:
    """One adapter call, for the access log."""

    adapter: str
    phase: str
    seconds: float
    outcome: str = "ok"


@dataclass
class Flow:
    """Everything known about one client request on its way through Powerstrip."""

    request: ClientRequest
    route: Route
    response: ServerResponse | None = None
    hooks: list[HookRecord] = field(default_factory=list)
    #: The request id: in every log line about it, and in its response header.
    id: str = field(default_factory=new_request_id)
    #: Who sent it (protocol 2's ``Caller``; the AuthZ ``User``).
    caller: Peer | None = None
    #: ``unwind: true`` adapters whose pre-hook succeeded, in order (each an
    #: :class:`~powerstrip.hooks.interface.IUnwindable`, which is defined above this module).
    prepared: list[Any] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


def error_response(code: int, message: str) -> ServerResponse:
    """A Docker-style JSON error, which the Docker CLI prints as its message."""
    body = json.dumps({"message": message}).encode() + b"\n"
    return ServerResponse(code, [(b"Content-Type", b"application/json")], body)
