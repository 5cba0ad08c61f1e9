"""Serving an SDK :class:`~powerstrip.sdk.adapter.Adapter` over HTTP.

``twistd -n powerstrip-adapter --module mymodule --listen tcp:8080`` runs the
adapter in ``mymodule`` as its own web service: ``POST`` any path with a call
(a pre- or post-hook, or under protocol 2 also an unwind or an event), get the
answer in the call's protocol version; ``GET`` says what the adapter hooks.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.application import strports
from twisted.application.service import IService
from twisted.internet import reactor as default_reactor
from twisted.python import usage
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from powerstrip.sdk.adapter import Adapter, load
from powerstrip.sdk.messages import BadPayload

DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"
#: A hook call larger than this is refused (Powerstrip's own default JSON limit is 16 MiB).
MAX_PAYLOAD = 64 * 1024 * 1024


def _answer(request: Any, status: int, obj: Any) -> bytes:
    body = json.dumps(obj).encode()
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body


class AdapterResource(Resource):
    """Every path: ``POST`` a call to ``adapter``; ``GET`` describes it."""

    isLeaf = True

    def __init__(self, adapter: Adapter) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self.adapter = adapter

    def render_GET(self, request: Any) -> bytes:
        return _answer(request, 200, self.adapter.describe())

    def render_POST(self, request: Any) -> Any:
        data = request.content.read(MAX_PAYLOAD + 1)
        if len(data) > MAX_PAYLOAD:
            return _answer(request, 413, {"message": f"hook call larger than {MAX_PAYLOAD} bytes"})
        try:
            payload = json.loads(data)
        except ValueError:
            return _answer(request, 400, {"message": "hook call is not JSON"})
        d = self.adapter.handle(payload)
        gone = _when_gone(request)

        def reply(result: tuple[int, dict[str, Any]]) -> None:
            body = _answer(request, *result)
            if not gone:
                request.write(body)
                request.finish()

        def bad(failure: Any) -> None:
            failure.trap(BadPayload)
            reply((400, {"message": f"not a Powerstrip hook call: {failure.getErrorMessage()}"}))

        d.addCallbacks(reply, bad)
        return NOT_DONE_YET


def _when_gone(request: Any) -> list[bool]:
    """A list that becomes non-empty if ``request``'s client hangs up before it is answered
    (``notifyFinish`` errbacks then: twisted.web's public way to tell)."""
    gone: list[bool] = []
    request.notifyFinish().addErrback(lambda _: gone.append(True))
    return gone


def adapter_site(adapter: Adapter) -> Site:
    """A twisted.web Site serving ``adapter``."""
    return Site(AdapterResource(adapter))


class Options(usage.Options):
    """``twistd powerstrip-adapter`` options."""

    synopsis = "--module MODULE[:NAME] [--listen ENDPOINT]"
    optParameters = [
        [
            "module",
            "m",
            None,
            "The adapter to serve: package.module:name, or package.module holding "
            "exactly one powerstrip.sdk.adapter.Adapter (the current directory is importable).",
        ],
        [
            "listen",
            "l",
            DEFAULT_LISTEN,
            "Where to listen, as a Twisted endpoint (tcp:8080, unix:/run/adapter.sock:mode=660).",
        ],
    ]

    def postOptions(self) -> None:
        if not self["module"]:
            raise usage.UsageError("--module is required")
        try:
            self["adapter"] = load(self["module"])
        except ValueError as e:
            raise usage.UsageError(str(e)) from None


def makeService(options: Options) -> IService:  # noqa: N802 -- twistd's name
    """The service twistd runs: the adapter's site on its listener."""
    service = strports.service(options["listen"], adapter_site(options["adapter"]), reactor=default_reactor)
    service.setName("powerstrip-adapter")
    return service
