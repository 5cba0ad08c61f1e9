"""What pre-hooks are shown of a request body, and what dockerd then gets.

A policy hook is only as good as its view of the body: it must see the document dockerd
will act on, or the request must not reach dockerd. The request path calls two things:

- :func:`wants_body` — whether a hooked request's body must be buffered whole;
- :func:`read_for_hooks` — the bytes shown to the hooks *and* forwarded to dockerd
  (never the original bytes beside them), or :class:`BodyRefused` (answer 400).

The rule, per route (the path without its ``/vN.NN`` prefix, matched to the Engine API's
templates from :mod:`powerstrip.wire.engine_api`):

*JSON-bodied Engine API routes* (``POST /containers/create``, exec create/start, update,
commit, services, swarm, secrets, networks, volumes, plugins' privilege lists…, and
``POST /containers/{id}/start``, whose body dockerd 20.10 reads as a HostConfig for
API < 1.24): the body is always buffered, whatever the ``Content-Type`` says, because
dockerd decodes it as JSON without looking at the type on many of them (its
``CheckForJSON`` runs on a few, and there Go's ``mime.ParseMediaType`` lowers with
Unicode rules, so ``applİcation/json`` counts). The body must then be empty (shown as
no body; dockerd reads nothing) or strict JSON of the schema's top-level type, read as Go
reads it (:mod:`powerstrip.wire.gojson`), and it is re-serialised with every documented key
in its canonical spelling. A ``Content-Type`` that is present and is not
``application/json`` (ASCII letters in any case, parameters allowed) is refused.

*Other routes* (build contexts, archive uploads, image loads, plugin tarballs…) stream
unseen unless the ``Content-Type`` is JSON to Go; then the body is buffered and must be
strict JSON as above (no schema: keys are shown as sent, fold-equal keys refused).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from powerstrip.wire import engine_api, gojson
from powerstrip.wire.gotext import fold_key, to_lower

_START = ("POST", "/containers/{id}/start")
_CREATE = ("POST", "/containers/create")
_JSON = "application/json"


class BodyRefused(Exception):  # noqa: N818 -- named for what happens, like Refused
    """A hooked request body Powerstrip refuses (400) because hooks could not see it as dockerd will."""

    message: str

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@lru_cache(maxsize=1)
def _json_routes() -> frozenset[tuple[str, str]]:
    # Container start is not in the swagger's bodies: its HostConfig body was deprecated in
    # API 1.22 and refused from 1.24, but dockerd 20.10 still honours it below 1.24.
    return frozenset(engine_api.json_body_routes()) | {_START}


def _template(method: str, path: str) -> str | None:
    return engine_api.route_for(method.upper(), path)


def is_json_route(method: str, path: str) -> bool:
    """Whether dockerd decodes this route's request body as JSON (version-less path)."""
    template = _template(method, path)
    return template is not None and (method.upper(), template) in _json_routes()


def _media(content_type: bytes) -> str:
    return content_type.decode("utf-8", "replace").split(";", 1)[0]


def is_ascii_json(content_type: bytes) -> bool:
    """``application/json`` with ASCII letters in any case, any parameters: what hooks may rely on."""
    return content_type.isascii() and _media(content_type).strip(" \t").lower() == _JSON


def is_go_json(content_type: bytes | None) -> bool:
    """Whether Go's ``mime.ParseMediaType`` (lowering with ``strings.ToLower``) names ``application/json``."""
    if content_type is None:
        return False
    return to_lower(_media(content_type)).strip() == _JSON or is_ascii_json(content_type)


def wants_body(method: str, path: str, content_type: bytes | None) -> bool:
    """Whether a request on a route WITH pre-hooks must have its body buffered whole for them.
    path: the request path without query, %-decoded and WITHOUT the /vN.NN version prefix."""
    return is_json_route(method, path) or is_go_json(content_type)


def read_for_hooks(method: str, path: str, content_type: bytes | None, body: bytes) -> bytes:
    """The body the hooks are shown and dockerd will get: canonical JSON bytes (or body unchanged when
    it is not JSON and dockerd will not decode it as JSON). Raises BodyRefused."""
    method = method.upper()
    json_route = is_json_route(method, path)
    if not json_route and not is_go_json(content_type):
        return body
    if not body.strip(b" \t\r\n"):
        return b""  # dockerd reads no document (io.EOF); nor do the hooks
    if content_type is not None and not is_ascii_json(content_type):
        raise BodyRefused(
            f"powerstrip: a JSON body must be sent as Content-Type application/json, not "
            f"{content_type.decode('latin-1')[:80]!r} (dockerd would decode it as JSON; refused so "
            "that no hook is shown less than dockerd reads)"
        )
    try:
        doc = gojson.loads(body)
    except gojson.GoJSONError as e:
        raise BodyRefused(
            f"powerstrip: request body refused: {e}; Docker's Go JSON reader and the hooks' could read it differently"
        ) from None
    template = _template(method, path) if json_route else None
    node = engine_api.body_schema(method, template) if template else None
    if (method, template) == _START:
        if doc not in ({}, None):
            raise BodyRefused(
                "powerstrip: a container start must not carry a body: dockerd reads it as a "
                "HostConfig on API versions below 1.24 (send the settings on create)"
            )
    elif node is not None and node.type in ("object", "array"):
        expected = dict if node.type == "object" else list
        if not isinstance(doc, expected):
            raise BodyRefused(
                f"powerstrip: request body refused: {method} {template} takes a JSON {node.type}, not {_kind(doc)}"
            )
    if (method, template) == _CREATE:
        _refuse_legacy_host_config(doc)
    try:
        doc = gojson.canonicalize(doc, node)
    except gojson.GoJSONError as e:
        raise BodyRefused(f"powerstrip: request body refused: {e}") from None
    return gojson.dumps(doc)


def _kind(doc: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(doc), "null" if doc is None else "a number"
    )


def _refuse_legacy_host_config(doc: dict[str, Any]) -> None:
    """Refuse HostConfig fields at the top level of a container create.

    dockerd 20.10 decodes a create body into a wrapper that embeds ``*HostConfig``
    (runconfig's ``ContainerConfigWrapper``, "deprecated, exported to read attributes
    from json that are not in the inner host config"): when ``HostConfig`` is absent, a
    top-level ``"Privileged": true`` (any case) makes the container privileged; when it is
    present, top-level ``Memory``, ``MemorySwap``, ``CpuShares``, ``CpusetCpus``,
    ``VolumeDriver`` and ``Cpuset`` still fill in for it. Policies look under
    ``HostConfig``, and no client of the last decade sends them elsewhere, so such a body
    is refused rather than rewritten.
    """
    host = engine_api.type_schema("HostConfig")
    for key in doc:
        name = host.canonical(key) or ("Cpuset" if fold_key(key) == "cpuset" else None)
        if name is not None:
            raise BodyRefused(
                f"powerstrip: {name!r} must be inside HostConfig: dockerd reads HostConfig fields "
                f"at the top level of a create body (legacy API), where policies do not look "
                f"(found {key!r})"
            )
