"""Credentials are never shown: what Powerstrip redacts, and how it puts it back.

One rule set serves both places that show a request or response: Powerstrip's
logs (always redacted, at any verbosity) and the payloads hooks receive
(redacted unless the adapter says ``secrets: true``). A redacted value is the
string :data:`REDACTED`; a body that should hold one but is not a JSON
document is redacted whole. Only the *copy shown* is redacted: what dockerd
and the client get is untouched, and a hook that hands a redacted value back
unchanged hands back the original (:func:`restore_reply`).

What is redacted (``METHOD /path``: body fields, keys matched as Go's
``encoding/json`` matches them, case-folded)::

    header X-Registry-Auth, X-Registry-Config, Authorization   (every request)
    POST /auth                request: password, auth, identitytoken, registrytoken
                              response: IdentityToken
    POST /swarm/init          request: Spec.CAConfig.SigningCAKey
    POST /swarm/update        request: CAConfig.SigningCAKey
    POST /swarm/join          request: JoinToken
    POST /swarm/unlock        request: UnlockKey
    GET  /swarm               response: JoinTokens.Worker, JoinTokens.Manager, Spec.CAConfig.SigningCAKey
    GET  /swarm/unlockkey     response: UnlockKey
    POST /secrets/create, /secrets/{id}/update, /configs/create, /configs/{id}/update
                              request: Data
    GET  /secrets/{id}, /configs/{id}    response: Spec.Data
    GET  /secrets, /configs              response: [].Spec.Data
"""

from __future__ import annotations

import base64
import json
from typing import Any

from powerstrip.wire import engine_api
from powerstrip.wire.gotext import fold_key
from powerstrip.wire.rules import request_path

#: What a redacted value is shown as.
REDACTED = "<redacted>"

#: Request headers that carry registry credentials (``X-Registry-Auth`` is
#: base64 JSON of an AuthConfig, ``X-Registry-Config`` a map of them).
SECRET_HEADERS = frozenset({"x-registry-auth", "x-registry-config", "authorization"})

_AUTH_CONFIG = (("password",), ("auth",), ("identitytoken",), ("registrytoken",))
_SIGNING_KEY = ("CAConfig", "SigningCAKey")
#: ``(METHOD, Engine API template)`` → (request body fields, response body fields);
#: ``[]`` stands for every item of an array.
_FIELDS: dict[tuple[str, str], tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]]] = {
    ("POST", "/auth"): (_AUTH_CONFIG, (("IdentityToken",),)),
    ("POST", "/swarm/init"): ((("Spec", *_SIGNING_KEY),), ()),
    ("POST", "/swarm/update"): ((_SIGNING_KEY,), ()),
    ("POST", "/swarm/join"): ((("JoinToken",),), ()),
    ("POST", "/swarm/unlock"): ((("UnlockKey",),), ()),
    ("GET", "/swarm"): ((), (("JoinTokens", "Worker"), ("JoinTokens", "Manager"), ("Spec", *_SIGNING_KEY))),
    ("GET", "/swarm/unlockkey"): ((), (("UnlockKey",),)),
    **{("POST", f"/{kind}/create"): ((("Data",),), ()) for kind in ("secrets", "configs")},
    **{("POST", f"/{kind}/{{id}}/update"): ((("Data",),), ()) for kind in ("secrets", "configs")},
    **{("GET", f"/{kind}/{{id}}"): ((), (("Spec", "Data"),)) for kind in ("secrets", "configs")},
    **{("GET", f"/{kind}"): ((), (("[]", "Spec", "Data"),)) for kind in ("secrets", "configs")},
}


def secret_fields(method: str, uri: str) -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]]:
    """The (request, response) body fields of ``method uri`` that are redacted,
    the route found as dockerd routes it (any API version, %-decoded)."""
    path = request_path(uri)[1]
    return _FIELDS.get((method.upper(), engine_api.route_for(method.upper(), path) or path), ((), ()))


def _blank(doc: Any, field: tuple[str, ...]) -> Any:
    """``doc`` with ``field`` (every key that Go would decode into it) redacted."""
    if not field:
        return REDACTED
    head, rest = field[0], field[1:]
    if head == "[]":
        return [_blank(item, rest) for item in doc] if isinstance(doc, list) else doc
    if isinstance(doc, dict):
        key = fold_key(head)
        return {k: _blank(v, rest) if fold_key(k) == key else v for k, v in doc.items()}
    return doc


def redact_text(text: str | None, fields: tuple[tuple[str, ...], ...]) -> str | None:
    """A JSON body's text with ``fields`` redacted; the whole text when it cannot be read."""
    if not text or not fields:
        return text
    try:
        doc = json.loads(text)
    except ValueError:
        return REDACTED  # what dockerd would find in it cannot be told: show none of it
    blanked = doc
    for field in fields:
        blanked = _blank(blanked, field)
    return text if blanked == doc else json.dumps(blanked, separators=(",", ":"))


def redact_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """Protocol 2 ``Headers`` (or Docker's AuthZ header map) with credential headers' values redacted."""

    def blank(values: Any) -> Any:
        return [REDACTED] * len(values) if isinstance(values, list) else REDACTED

    return {k: blank(v) if k.lower() in SECRET_HEADERS else v for k, v in headers.items()}


def _message(obj: Any, fields: tuple[tuple[str, ...], ...]) -> Any:
    """A payload's ``ClientRequest``/``ServerResponse`` object, redacted."""
    if not isinstance(obj, dict):
        return obj
    out = dict(obj)
    if isinstance(out.get("Body"), str):
        out["Body"] = redact_text(out["Body"], fields)
    if isinstance(out.get("Headers"), dict):
        out["Headers"] = redact_headers(out["Headers"])
    return out


def payload(call: dict[str, Any]) -> dict[str, Any]:
    """A copy of a hook call (either protocol; pre-hook, post-hook or unwind) with
    credentials redacted, judged by the ``ClientRequest``'s method and URI."""
    request = call.get("ClientRequest") or {}
    request_fields, response_fields = secret_fields(request.get("Method", ""), request.get("Request", ""))
    out = dict(call)
    out["ClientRequest"] = _message(request, request_fields)
    if "ServerResponse" in call:
        out["ServerResponse"] = _message(call["ServerResponse"], response_fields)
    return out


#: The objects of a reply, and the object of the call each one replaces.
_REPLACES = {
    "ModifiedClientRequest": "ClientRequest",
    "ModifiedServerResponse": "ServerResponse",
    "ServerResponse": "ServerResponse",
}


def _parts(answer: dict[str, Any], call: dict[str, Any]) -> list[tuple[str | None, str]]:
    """``(key in answer or None for the answer itself, key in call)`` of each object of a hook's answer:
    a protocol 2 reply holds them; a protocol 1 answer is already the one object its call type expects."""
    parts: list[tuple[str | None, str]] = [(k, v) for k, v in _REPLACES.items() if k in answer]
    return parts or [(None, "ClientRequest" if call.get("Type") == "pre-hook" else "ServerResponse")]


def reply(answer: Any, call: dict[str, Any]) -> Any:
    """A hook's answer to ``call`` (a protocol 2 reply, or protocol 1's modified request
    or response), redacted for a log line: it may echo what it was shown."""
    if not isinstance(answer, dict):
        return answer
    request = call.get("ClientRequest") or {}
    fields = dict(
        zip(
            ("ClientRequest", "ServerResponse"),
            secret_fields(request.get("Method", ""), request.get("Request", "")),
            strict=True,
        )
    )
    out = dict(answer)
    for key, source in _parts(answer, call):
        if key is None:
            return _message(answer, fields[source])
        out[key] = _message(out[key], fields[source])
    return out


def authz(call: dict[str, Any]) -> dict[str, Any]:
    """A copy of an ``AuthZPlugin.AuthZReq``/``AuthZRes`` call with credentials redacted
    (its bodies are base64; its headers never hold credentials, as in dockerd)."""
    request_fields, response_fields = secret_fields(call.get("RequestMethod", ""), call.get("RequestUri", ""))
    out = dict(call)
    for key, fields in (("RequestBody", request_fields), ("ResponseBody", response_fields)):
        if key in out and fields:
            text = base64.b64decode(out[key]).decode("utf-8", "replace")
            out[key] = base64.b64encode((redact_text(text, fields) or "").encode()).decode("ascii")
    out["RequestHeaders"] = redact_headers(out.get("RequestHeaders") or {})
    return out


def _collect(shown: Any, original: Any, out: list[str]) -> None:
    if shown == REDACTED and original != REDACTED:
        out.append(original if isinstance(original, str) else json.dumps(original))
    elif isinstance(shown, dict) and isinstance(original, dict):
        for k, v in shown.items():
            _collect(v, _pick(original, k), out)
    elif isinstance(shown, list) and isinstance(original, list):
        for s, o in zip(shown, original, strict=False):
            _collect(s, o, out)


def hidden(shown: dict[str, Any], original: dict[str, Any]) -> list[str]:
    """The values :func:`payload` redacted from ``original`` into ``shown``, for :func:`scrub`."""
    out: list[str] = []
    for key in ("ClientRequest", "ServerResponse"):
        was, orig = shown.get(key), original.get(key)
        if not (isinstance(was, dict) and isinstance(orig, dict)):
            continue
        body, orig_body = was.get("Body"), orig.get("Body")
        if isinstance(body, str) and isinstance(orig_body, str) and body != orig_body:
            try:
                _collect(json.loads(body), json.loads(orig_body), out)
            except ValueError:
                out.append(orig_body)  # redacted whole
        _collect(was.get("Headers"), orig.get("Headers"), out)
    return sorted({v for v in out if v}, key=len, reverse=True)


def scrub(text: str, values: list[str]) -> str:
    """``text`` (a log line's free text, such as a hook's refusal) with each of
    ``values`` replaced by :data:`REDACTED`, as sent and as JSON-escaped."""
    for value in values:
        text = text.replace(value, REDACTED).replace(json.dumps(value)[1:-1], REDACTED)
    return text


def _pick(container: dict[str, Any], key: str) -> Any:
    """``container[key]``, or the value of a key equal to it under Go's folding (JSON keys, header names)."""
    if key in container:
        return container[key]
    folded = fold_key(key)
    return next((v for k, v in container.items() if fold_key(k) == folded), None)


def _restore(new: Any, shown: Any, original: Any) -> Any:
    """``new`` with each :data:`REDACTED` that stands where ``shown`` had one replaced by ``original``'s value."""
    if new == REDACTED and shown == REDACTED:
        return original
    if isinstance(new, dict) and isinstance(shown, dict) and isinstance(original, dict):
        return {k: _restore(v, _pick(shown, k), _pick(original, k)) for k, v in new.items()}
    if isinstance(new, list) and isinstance(shown, list) and isinstance(original, list):
        return [_restore(v, s, o) for v, s, o in zip(new, shown, original, strict=False)] + new[len(shown) :]
    return new


def _restore_body(new: Any, shown: Any, original: Any) -> Any:
    if not isinstance(new, str) or shown == original:
        return new  # nothing was redacted
    if new == shown:
        return original  # handed back as shown: the original text, byte for byte
    try:
        doc = json.loads(new)
        return json.dumps(_restore(doc, json.loads(shown), json.loads(original)), separators=(",", ":"))
    except (TypeError, ValueError):
        return new  # not JSON (or the original was not): the hook's own text


def restore_reply(answer: Any, shown: dict[str, Any], original: dict[str, Any]) -> Any:
    """A hook's reply with every redacted value it kept where it was shown put back
    from ``original`` (the call before redaction; ``shown`` is what the hook got).

    So a hook that passes a request or response through unchanged passes the
    credentials through too; one that removes or replaces a field does so; and
    no hook without ``secrets: true`` can set a field to the string ``<redacted>``.
    """
    if not isinstance(answer, dict):
        return answer
    out = dict(answer)
    for key, source in _parts(answer, shown):
        if key == "ServerResponse":
            continue  # a protocol 2 short-circuit: an answer of the hook's own
        new, was, orig = answer if key is None else out.get(key), shown.get(source), original.get(source)
        if not (isinstance(new, dict) and isinstance(was, dict) and isinstance(orig, dict)):
            continue
        new = dict(new)
        if "Body" in new:
            new["Body"] = _restore_body(new["Body"], was.get("Body"), orig.get("Body"))
        if isinstance(new.get("Headers"), dict) and isinstance(was.get("Headers"), dict):
            new["Headers"] = _restore(new["Headers"], was["Headers"], orig.get("Headers") or {})
        if key is None:
            return new
        out[key] = new
    return out
