"""``type: authz`` adapters: Docker's authorization-plugin protocol.

An authz adapter is a Docker AuthZ plugin reached over HTTP. Named in a
rule's ``pre:`` list it gets ``POST <url>/AuthZPlugin.AuthZReq`` with the
request as it stands at its turn in the chain (what dockerd will receive,
unless a later pre-hook changes it); named in ``post:`` it gets ``POST
<url>/AuthZPlugin.AuthZRes`` with dockerd's response as well. It answers
``{"Allow": bool, "Msg": str, "Err": str}``.

The client sees what dockerd itself would answer:

- ``Allow: false`` → 403 ``authorization denied by plugin NAME: MSG``;
- an ``Err``, a non-2xx answer, an answer that is not the protocol, or no
  answer → 500 ``plugin NAME failed with error: AuthZPlugin.AuthZReq: ...``.

Either way the request is not forwarded (AuthZReq), or dockerd's response
is replaced (AuthZRes). An authz adapter always fails closed:
``failure: ignore`` does not apply to it.

Credentials in bodies (:mod:`powerstrip.hooks.redact`: swarm tokens, secret and
config data...) are shown as ``"<redacted>"`` unless the adapter has
``secrets: true``, and never logged. The bodies it judges are the bodies dockerd gets: when an authz adapter is
among a request's hooks, every request body is buffered and shown to it
whatever its framing or ``Content-Type`` (see :func:`must_buffer`), except
the tar archives of the calls that take one, which dockerd never reads as
JSON.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import ssl
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from powerstrip.config.spec import AdapterSpec
from powerstrip.hooks import redact
from powerstrip.hooks.flow import ClientRequest, Flow, error_response
from powerstrip.hooks.http import AdapterClient
from powerstrip.hooks.interface import PRE_HOOK, AdapterFault, IAdapter, Refused
from powerstrip.hooks.peer import Peer
from powerstrip.wire.headers import HeaderList, end_to_end, header_value, media_type

#: Log namespaces are part of the interface (log filters name them): kept across moves.
log = Logger(namespace="powerstrip.authz")

#: The plugin methods, as Docker names them (appended to the adapter's URL).
AUTHZ_REQ = "AuthZPlugin.AuthZReq"
AUTHZ_RES = "AuthZPlugin.AuthZRes"

#: Calls whose request body is a tar archive that dockerd streams and never
#: decodes as JSON: ``build``, ``load``, ``import`` (``images/create``),
#: ``plugin create`` and ``cp`` into a container. Matched on the raw path, so
#: an encoded or unusual spelling is not an archive upload and gets buffered.
_ARCHIVE_UPLOADS = {
    "POST": re.compile(r"/(v[0-9]+(\.[0-9]+)?/)?(build|images/load|images/create|plugins/create)"),
    "PUT": re.compile(r"/(v[0-9]+(\.[0-9]+)?/)?containers/[A-Za-z0-9][A-Za-z0-9_.-]*/archive"),
}
#: ``docker login``: its body is registry credentials, which dockerd does not
#: show its plugins either (and the call changes nothing in the daemon).
_AUTH = re.compile(r"/(v[0-9]+(\.[0-9]+)?/)?auth")
#: Request headers that carry credentials: never shown, as in dockerd.
_SECRET_HEADERS = {"authorization", "x-registry-auth", "x-registry-config"}
#: Framing and the host are not headers of the message dockerd's handlers see.
_NOT_SHOWN = {"content-length", "transfer-encoding", "host"}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: ``--verbose`` logs plugin calls up to this many characters each.
_VERBOSE_LIMIT = 64 * 1024


class AuthzDenied(Refused):
    """The plugin answered ``Allow: false``: the client gets dockerd's 403."""

    #: What the access log and metrics record for the call.
    outcome = "denied"

    def __init__(self, adapter: AdapterSpec, msg: str) -> None:
        super().__init__(adapter, error_response(403, f"authorization denied by plugin {adapter.name}: {msg}"))
        self.msg = msg


class AuthzError(AdapterFault):
    """The plugin could not decide (``Err``, off-protocol, down, too slow): dockerd's 500."""

    def __init__(self, adapter: AdapterSpec, method: str, what: str) -> None:
        super().__init__(adapter, what, code=500)
        # The message dockerd gives for a failing plugin, not an adapter fault's.
        self.args = (f"plugin {adapter.name} failed with error: {method}: {what}",)


def is_archive_upload(method: str, path: str) -> bool:
    """Whether ``method path`` is a call whose body is a tar archive dockerd streams (never JSON)."""
    pattern = _ARCHIVE_UPLOADS.get(method.upper())
    return pattern is not None and pattern.fullmatch(path) is not None


def must_buffer(adapters: tuple[AdapterSpec, ...], method: str, path: str) -> bool:
    """Whether a request body must be buffered because an authz adapter among
    ``adapters`` (a route's pre- and post-hooks) has to see it: every body but
    an archive upload's.

    Not just JSON-typed bodies: some dockerd handlers decode a body whatever
    its ``Content-Type`` (or with none), and a chunked body is as readable to
    dockerd as a sized one. A body shown to no one must never reach them.
    """
    return any(a.type == "authz" for a in adapters) and not is_archive_upload(method, path)


def identity(caller: Peer | None) -> tuple[str, str]:
    """``(User, UserAuthNMethod)``: a TLS client certificate's common name
    (``TLS``, as dockerd), or a unix socket peer's account name or uid
    (``peercred``, Powerstrip's own); else empty."""
    if caller is None:
        return "", ""
    if caller.transport == "tls":
        if caller.certificate is not None:
            return caller.certificate.get("CommonName") or "", "TLS"
        return "", ""
    if caller.transport == "unix" and caller.uid is not None:
        return caller.user or str(caller.uid), "peercred"
    return "", ""


def _canonical(name: str) -> str:
    """A header name as Go's net/http keys it (``content-type`` → ``Content-Type``)."""
    if not _TOKEN.fullmatch(name):
        return name
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def header_map(headers: HeaderList, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Headers as Docker's AuthZ ``RequestHeaders``/``ResponseHeaders``: one
    value per name (the last), hop-by-hop, framing and credentials left out."""
    out: dict[str, str] = {}
    for k, v in end_to_end(headers):
        name = _canonical(k.decode("latin-1"))
        if name.lower() in _SECRET_HEADERS or name.lower() in _NOT_SHOWN:
            continue
        out[name] = v.decode("latin-1")
    out.update(extra or {})
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def request_payload(flow: Flow) -> dict[str, Any]:
    """The ``AuthZPlugin.AuthZReq`` call for ``flow.request`` as it stands."""
    req: ClientRequest = flow.request
    user, method = identity(flow.caller)
    length: dict[str, str] = {}
    if req.streamed:
        cl = header_value(req.headers, b"content-length")
        if cl is not None:
            length["Content-Length"] = cl.decode("latin-1")
    elif req.body:
        length["Content-Length"] = str(len(req.body))
    payload: dict[str, Any] = {
        "User": user,
        "UserAuthNMethod": method,
        "RequestMethod": req.method,
        "RequestUri": req.uri,
        "RequestHeaders": header_map(req.headers, length),
    }
    # Exactly the bytes dockerd will be sent (a streamed body has none here).
    if req.body and not _AUTH.fullmatch(req.path):
        payload["RequestBody"] = _b64(req.body)
    der = flow.caller.certificate_der if flow.caller is not None else None
    if der:
        # dockerd sends each certificate as PEM text in a JSON byte string.
        payload["RequestPeerCertificates"] = [_b64(ssl.DER_cert_to_PEM_cert(der).encode("ascii"))]
    return payload


def response_payload(flow: Flow) -> dict[str, Any]:
    """The ``AuthZPlugin.AuthZRes`` call: the request (as dockerd received it) and ``flow.response``."""
    payload = request_payload(flow)
    resp = flow.response
    if resp is None:
        raise ValueError("an AuthZRes call needs dockerd's response")
    payload["ResponseStatusCode"] = resp.code
    payload["ResponseHeaders"] = header_map(resp.headers)
    if resp.body:
        payload["ResponseBody"] = _b64(resp.body)
    return payload


class _Object(list[tuple[str, Any]]):
    """A JSON object as its (case-folded name, value) pairs, in order."""


def _verdict(result: tuple[int, str | None, bytes], adapter: AdapterSpec, method: str) -> str | None:
    """The plugin's answer: ``None`` to allow, a message to deny; raises :class:`AuthzError`."""
    code, _ctype, body = result
    try:
        # Go's encoding/json (dockerd's) matches field names case-insensitively;
        # the last occurrence wins.
        reply = json.loads(body, object_pairs_hook=lambda items: _Object((k.casefold(), v) for k, v in items))
    except ValueError:
        reply = None
    fields = {k: v for k, v in reply if k in ("allow", "msg", "err")} if isinstance(reply, _Object) else None
    if not 200 <= code < 300:
        err = fields.get("err") if fields else None
        text = err if isinstance(err, str) and err else body[:200].decode("utf-8", "replace").strip()
        raise AuthzError(adapter, method, text or f"status {code}")
    if fields is None:
        raise AuthzError(adapter, method, f"answer is not a JSON object: {body[:200]!r}")
    allow, msg, err = fields.get("allow", False), fields.get("msg", ""), fields.get("err", "")
    if not isinstance(allow, bool) or not isinstance(msg, str) or not isinstance(err, str):
        raise AuthzError(adapter, method, 'answer is not {"Allow": bool, "Msg": string, "Err": string}')
    if err:
        raise AuthzError(adapter, method, err)
    return None if allow else msg


def _shown(obj: Any) -> str:
    text = json.dumps(obj, separators=(",", ":"))
    if len(text) > _VERBOSE_LIMIT:
        return f"{text[:_VERBOSE_LIMIT]}... ({len(text)} characters)"
    return text


@implementer(IAdapter)
class AuthzAdapter:
    """A ``type: authz`` adapter: a Docker AuthZ plugin reached over HTTP."""

    def __init__(self, spec: AdapterSpec, client: AdapterClient, verbose: bool = False) -> None:
        self.spec = spec
        self.client = client
        self.verbose = verbose

    def call(self, flow: Flow, phase: str) -> defer.Deferred[Flow]:
        """Ask the plugin about ``flow`` (``phase``: pre-hook or post-hook).

        Fires with ``flow`` unchanged when allowed; errbacks with
        :class:`AuthzDenied` (a :class:`Refused`) or :class:`AuthzError` (an
        :class:`AdapterFault`), which the exchange answers like any refusal or fault.
        """
        adapter, verbose = self.spec, self.verbose
        where = f"#{flow.id} {phase} {adapter.name}"
        fields = {"request_id": flow.id, "adapter": adapter.name, "phase": phase}
        if phase == PRE_HOOK:
            method = AUTHZ_REQ
            req = flow.request
            if req.streamed and not is_archive_upload(req.method, req.path):
                # Only an earlier pre-hook rewriting an archive upload into another
                # call gets here: dockerd would read a body this plugin cannot see.
                ctype = media_type(header_value(req.headers, b"content-type")) or "untyped"
                return defer.fail(
                    Refused(
                        adapter,
                        error_response(
                            403,
                            f"powerstrip: authz adapter '{adapter.name}' cannot judge {req.method} {req.path}: "
                            f"its body ({ctype}) streams to Docker unseen; not forwarded",
                        ),
                    )
                )
            payload = request_payload(flow)
        else:
            method = AUTHZ_RES
            payload = response_payload(flow)
        target = dataclasses.replace(adapter, url=adapter.url.rstrip("/") + "/" + method)
        shown = redact.authz(payload)  # credentials: never logged, shown only with secrets: true
        if verbose:
            log.info("{where} sent {payload}", where=where, payload=_shown(shown), **fields)

        def judged(result: tuple[int, str | None, bytes]) -> Flow:
            if verbose:
                log.info(
                    "{where} answered {code} {body}",
                    where=where,
                    code=result[0],
                    body=result[2][:_VERBOSE_LIMIT].decode("utf-8", "replace"),
                    **fields,
                )
            msg = _verdict(result, adapter, method)
            if msg is not None:
                log.info(
                    "{where}: authorization denied by plugin {name}: {msg}",
                    where=where,
                    name=adapter.name,
                    msg=msg,
                    **fields,
                )
                raise AuthzDenied(adapter, msg)
            return flow

        def failed(failure: Failure) -> Failure:
            if failure.check(AdapterFault) and not failure.check(AuthzError):
                # Down, too slow, too big: the adapter client's words, dockerd's form.
                prefix = f"powerstrip: adapter '{target.name}' ({target.url}): "
                what = str(failure.value).removeprefix(prefix)
                return Failure(AuthzError(adapter, method, what))
            return failure  # a verdict, or the client went away (CancelledError)

        d = self.client.post(target, payload if adapter.secrets else shown)
        d.addCallback(judged)
        return d.addErrback(failed)
