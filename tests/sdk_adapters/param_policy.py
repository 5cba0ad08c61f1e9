"""A policy written the obvious way with the SDK, as docs/sdk.md says to (issue 25's end-to-end
tests): each hook checks one parameter with ``request.param`` or the route with
``request.endpoint`` / ``request.path``, and refuses with 403.

- pulls and imports: no ``fromImage`` naming ``evil``;
- kill: only ``SIGWINCH`` (harmless to a ``sleep``), or no signal at all is refused too;
- rename: no new name starting with ``evil``; tag: no ``repo`` naming ``evil``;
- container prune: never with a ``filters`` naming the ``ps-t-victim`` label;
- build: no ``networkmode=host``, no tag naming ``evil`` (every ``t``: dockerd reads them all);
- read-only on everything else a newcomer would write: no export, by path text and by endpoint.
"""

from __future__ import annotations

import json

from powerstrip.sdk import Adapter, Refuse, Request

adapter = Adapter("param-policy")


@adapter.pre_hook("POST /*/images/create")
def pull(request: Request) -> None:
    if "evil" in (request.param("fromImage") or ""):
        raise Refuse(403, "param-policy: that image is not allowed")


@adapter.pre_hook("POST /*/containers/*/kill")
def kill(request: Request) -> None:
    if request.param("signal") != "SIGWINCH":
        raise Refuse(403, "param-policy: only SIGWINCH may be sent")


@adapter.pre_hook("POST /*/containers/*/rename")
def rename(request: Request) -> None:
    if (request.param("name") or "").startswith("evil"):
        raise Refuse(403, "param-policy: that name is not allowed")


@adapter.pre_hook("POST /*/images/*/tag")
def tag(request: Request) -> None:
    if "evil" in (request.param("repo") or ""):
        raise Refuse(403, "param-policy: that repository is not allowed")


@adapter.pre_hook("POST /*/containers/prune")
def prune(request: Request) -> None:
    filters = json.loads(request.param("filters") or "{}")
    if any("ps-t-victim" in label for label in filters.get("label", ())):
        raise Refuse(403, "param-policy: those containers may not be pruned")


@adapter.pre_hook("POST /*/build")
def build(request: Request) -> None:
    if request.param("networkmode") == "host":
        raise Refuse(403, "param-policy: no builds on the host network")
    if any("evil" in name for name in request.params("t")):
        raise Refuse(403, "param-policy: that tag is not allowed")


@adapter.pre_hook("GET /*/containers/*")
def no_export_by_path(request: Request) -> None:
    # The newcomer's read-only rule of issue 25, on the path as sent (canonical from Powerstrip).
    if request.path.endswith("/export"):
        raise Refuse(403, "param-policy: no exports (path)")


@adapter.pre_hook
def no_export_by_endpoint(request: Request) -> None:
    endpoint = request.endpoint
    if endpoint.startswith("/containers/") and endpoint.endswith("/export"):
        raise Refuse(403, "param-policy: no exports (endpoint)")
