"""A small SDK adapter for the tests: adds Env on create, refuses privileged, can be slow or broken."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.task import deferLater

from powerstrip.sdk import Adapter, Refuse, Request, Response

adapter = Adapter("sample")
#: Every (kind, method, uri) this adapter was called with, in order.
calls: list[tuple[str, str, str]] = []


@adapter.pre_hook("POST /*/containers/create")
def add_env(request: Request) -> Request:
    calls.append(("pre", request.method, request.uri))
    spec = request.json
    if (spec.get("HostConfig") or {}).get("Privileged"):
        raise Refuse(403, "sample: privileged containers are not allowed")
    if spec.get("Image") == "slow":
        return deferLater(reactor, 5, lambda: request)
    if spec.get("Image") == "broken":
        raise RuntimeError("the sample adapter broke")
    spec["Env"] = (spec.get("Env") or []) + ["SAMPLE=1"]
    return request


@adapter.post_hook
async def tag_errors(request: Request, response: Response) -> Response | None:
    calls.append(("post", request.method, request.uri))
    if response.code >= 400 and isinstance(response.json, dict):
        response.json["message"] = "[sample] " + response.json.get("message", "")
        return response
    return None
