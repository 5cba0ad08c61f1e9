"""A protocol 2 SDK adapter for the tests: headers, caller, a short-circuit, unwind and events.

It serves protocol 1 callers too: what only protocol 2 can carry is done only
when ``request.protocol`` is 2.
"""

from __future__ import annotations

import json

from powerstrip.sdk import Adapter, Request, RequestFailure, Response

adapter = Adapter("v2")
#: Starts are answered 503 without Docker while this holds True (tests may flip it).
maintenance = {"on": True}
#: Every unwind call: (method, uri, stage, failed adapter, code).
unwound: list[tuple[str, str, str, str | None, int]] = []
#: Every container event seen: (action, container name).
events: list[tuple[str, str]] = []


@adapter.pre_hook("POST /*/containers/create")
def stamp(request: Request) -> Request:
    """Label the container with who asked; under protocol 2, tell Docker's side in a header too."""
    spec = request.json
    if request.caller is not None:
        spec["Labels"] = {**(spec.get("Labels") or {}), "powerstrip.user": request.caller.user or "?"}
    if request.protocol >= 2:
        request.headers["X-Powerstrip-Request"] = request.request_id or "?"
    return request


@adapter.pre_hook("POST /*/containers/*/start")
def pause_starts(request: Request) -> Response | None:
    """During maintenance, answer starts without Docker (protocol 2 only)."""
    if maintenance["on"] and request.protocol >= 2:
        return Response(
            503, "application/json", json.dumps({"message": "v2: starts are paused"}), headers={"Retry-After": ["60"]}
        )
    return None


@adapter.post_hook
def tag(request: Request, response: Response) -> Response | None:
    """Under protocol 2, mark every response as seen."""
    if request.protocol < 2:
        return None
    response.headers["X-Powerstrip-Adapter"] = "v2"
    return response


@adapter.unwind
def release(request: Request, failure: RequestFailure) -> None:
    unwound.append((request.method, request.uri, failure.stage, failure.adapter, failure.code))


@adapter.event("container *")
def container_event(event: dict) -> None:
    events.append((event["Action"], event["Actor"]["Attributes"].get("name", "")))
