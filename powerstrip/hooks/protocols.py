"""Hook-call adapters: Powerstrip's own protocol, versions 1 and 2, over HTTP or in process.

A hook call is a JSON object describing the request as it stands (a
post-hook's also holds dockerd's response); the adapter's 2xx reply says
what to go on with, any other status refuses. Two things vary, and each is
one object here:

- the **protocol version** (:class:`HookProtocol`: :data:`PROTOCOL_1`,
  :data:`PROTOCOL_2`): what a call holds, and what a reply may change.
  A reply is checked once, against its version's JSON Schema (the same
  schemas adapter authors test with, ``powerstrip/sdk/schemas/``); what is
  left to check by hand is what no schema of a reply alone can say (a body
  for a request whose body streams to dockerd unseen).
- the **carrier**: :class:`HTTPHookAdapter` POSTs the call as JSON with treq
  (:class:`~powerstrip.hooks.http.AdapterClient`); :class:`InProcessHookAdapter`
  hands the object to a ``python:`` adapter in this process.

Both are :class:`~powerstrip.hooks.interface.IAdapter` s, as is
:class:`~powerstrip.hooks.authz.AuthzAdapter`; :func:`adapter_for` picks one
for an adapter's spec. Credentials are redacted from the call unless the
adapter has ``secrets: true`` (and put back where a reply hands them back
unchanged); logs always redact them (:mod:`powerstrip.hooks.redact`).
"""

from __future__ import annotations

import abc
import json
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from powerstrip.config.spec import AdapterSpec
from powerstrip.hooks import redact
from powerstrip.hooks.authz import AuthzAdapter
from powerstrip.hooks.flow import ClientRequest, Flow, ServerResponse
from powerstrip.hooks.http import AdapterClient
from powerstrip.hooks.interface import PRE_HOOK, AdapterFault, IAdapter, IUnwindable, Refused, ShortCircuit
from powerstrip.sdk.schema import validate
from powerstrip.wire.headers import HeaderList, header_map, headers_from_map, is_owned
from powerstrip.wire.target import BadTarget, canonical_target

#: Log namespaces are part of the interface (log filters name them): kept across moves.
log = Logger(namespace="powerstrip.hooks")

#: ``--verbose`` logs hook payloads up to this many characters each.
VERBOSE_LIMIT = 64 * 1024

#: The object a reply holds for each phase.
_EXPECT = {PRE_HOOK: "ModifiedClientRequest", "post-hook": "ModifiedServerResponse"}


def _text(body: bytes | None) -> str | None:
    """A body as adapters see it: a string, or null when absent or not UTF-8."""
    if not body:
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _shown(obj: Any) -> str:
    """``obj`` as JSON for a ``--verbose`` log line, cut at :data:`VERBOSE_LIMIT`."""
    text = json.dumps(obj, separators=(",", ":"))
    if len(text) > VERBOSE_LIMIT:
        return f"{text[:VERBOSE_LIMIT]}... ({len(text)} characters)"
    return text


def _with_header(headers: HeaderList, name: bytes, value: bytes | None) -> HeaderList:
    """``headers`` with every ``name`` replaced by one ``value`` (none if None)."""
    out = [(k, v) for k, v in headers if k.lower() != name.lower()]
    if value is not None:
        out.append((name, value))
    return out


def _new_body(text: str | None, old: bytes | None) -> bytes:
    """The body a reply's ``Body`` stands for: a body the adapter was shown as
    null because it is not UTF-8 is kept when the reply leaves it null."""
    if text is None and old and _text(old) is None:
        return old
    return text.encode("utf-8") if text else b""


class HookProtocol:
    """One version of the hook-call protocol: the call a flow makes, and what a reply does to it."""

    #: ``PowerstripProtocolVersion``.
    version = 1

    def payload(self, flow: Flow, kind: str) -> dict[str, Any]:
        """The call for ``flow`` (``kind``: pre-hook, post-hook, unwind)."""
        req = flow.request
        client_request: dict[str, Any] = {"Method": req.method, "Request": req.uri, "Body": _text(req.body)}
        payload: dict[str, Any] = {
            "PowerstripProtocolVersion": self.version,
            "Type": kind,
            "ClientRequest": client_request,
        }
        resp = flow.response
        if resp is not None and kind != PRE_HOOK:
            payload["ServerResponse"] = {"ContentType": resp.content_type, "Body": _text(resp.body), "Code": resp.code}
        return payload

    def check(self, reply: Any, spec: AdapterSpec, phase: str) -> dict[str, Any]:
        """``reply`` (decoded JSON) if it is a valid reply in ``phase``: checked once, against the schema."""
        if not isinstance(reply, dict):
            raise AdapterFault(spec, "reply is not a JSON object")
        version = reply.get("PowerstripProtocolVersion")
        if version != self.version or isinstance(version, bool):
            # The version picks the schema, so a reply of another one is named as such.
            raise AdapterFault(spec, f"reply has PowerstripProtocolVersion {version!r}, expected {self.version}")
        errors = validate(reply, f"v{self.version}/{phase}-reply")
        if errors:
            raise AdapterFault(spec, f"reply does not follow protocol {self.version}: {errors[0]}")
        return reply

    def apply(self, reply: dict[str, Any], flow: Flow, spec: AdapterSpec, phase: str) -> Flow:
        """``flow`` with the request (pre-hook) or response (post-hook) ``reply`` decided.

        :raises ShortCircuit: a protocol 2 pre-hook answered the request itself.
        """
        if phase == PRE_HOOK:
            obj = reply["ModifiedClientRequest"]
            flow.request = self._request(obj, flow.request, spec, self._request_headers(obj, flow.request, spec))
        else:
            flow.response = self._response(reply["ModifiedServerResponse"], flow.response, spec)
        return flow

    def _request_headers(self, obj: dict[str, Any], old: ClientRequest, spec: AdapterSpec) -> HeaderList:
        """The headers of the request ``obj`` describes: protocol 1 cannot change them."""
        return old.headers

    @staticmethod
    def _request(obj: dict[str, Any], old: ClientRequest, spec: AdapterSpec, headers: HeaderList) -> ClientRequest:
        body = obj.get("Body")
        if old.streamed:
            if body is not None:
                raise AdapterFault(
                    spec,
                    "ModifiedClientRequest.Body must be null: this request's "
                    "body is not JSON and streams to Docker unseen",
                )
            return _checked(ClientRequest(obj["Method"].upper(), obj["Request"], headers, None, True), spec)
        return _checked(ClientRequest(obj["Method"].upper(), obj["Request"], headers, _new_body(body, old.body)), spec)

    def _response(self, obj: dict[str, Any], old: ServerResponse | None, spec: AdapterSpec) -> ServerResponse:
        # Protocol 1: the Content-Type is what the reply says (absent or null: none).
        return _response_from(
            {"Code": obj["Code"], "ContentType": obj.get("ContentType"), "Body": obj.get("Body")},
            spec,
            "ModifiedServerResponse",
            old,
        )


def _checked(request: ClientRequest, spec: AdapterSpec) -> ClientRequest:
    """A hook's new request, its target respelled and checked as a client's is: the next
    hook and dockerd read it alike, or the reply is a fault."""
    try:
        request.uri = canonical_target(request.uri)
        request.check_params()
    except BadTarget as e:
        raise AdapterFault(spec, f"ModifiedClientRequest.Request: {e.message}") from None
    return request


class HookProtocol2(HookProtocol):
    """Protocol 2: the call adds the request id, the caller, headers and the target as dockerd
    reads it (``Endpoint``, ``Version``, ``Params``); a reply may set headers or short-circuit."""

    version = 2

    def payload(self, flow: Flow, kind: str) -> dict[str, Any]:
        """The call for ``flow``, with ``RequestId``, ``Caller``, each message's ``Headers`` and the
        request's ``Endpoint``, ``Version`` and ``Params``."""
        payload = super().payload(flow, kind)
        payload["RequestId"] = flow.id
        payload["Caller"] = flow.caller.wire() if flow.caller else None
        request = payload["ClientRequest"]
        request["Headers"] = header_map(flow.request.headers)
        # What dockerd reads of the target, so that no adapter re-implements Go's decoding.
        request["Version"], request["Endpoint"] = flow.request.endpoint
        request["Params"] = flow.request.params
        if "ServerResponse" in payload and flow.response is not None:
            payload["ServerResponse"]["Headers"] = header_map(flow.response.headers)
        return payload

    def apply(self, reply: dict[str, Any], flow: Flow, spec: AdapterSpec, phase: str) -> Flow:
        """As protocol 1's, and a pre-hook's ``ServerResponse`` raises :class:`ShortCircuit`."""
        if phase == PRE_HOOK and "ServerResponse" in reply:
            raise ShortCircuit(spec, _response_from(reply["ServerResponse"], spec, "ServerResponse"))
        return super().apply(reply, flow, spec, phase)

    def _request_headers(self, obj: dict[str, Any], old: ClientRequest, spec: AdapterSpec) -> HeaderList:
        if "Headers" not in obj:
            return old.headers
        # Powerstrip's own headers (hop-by-hop, framing) stay: a reply may not name them.
        owned = [(k, v) for k, v in old.headers if is_owned(k)]
        return owned + _headers(obj["Headers"], spec, "ModifiedClientRequest")

    def _response(self, obj: dict[str, Any], old: ServerResponse | None, spec: AdapterSpec) -> ServerResponse:
        return _response_from(obj, spec, "ModifiedServerResponse", old)


def _headers(obj: Any, spec: AdapterSpec, where: str) -> HeaderList:
    try:
        return headers_from_map(obj)
    except ValueError as e:
        raise AdapterFault(spec, f"{where}.Headers: {e}") from None


def _response_from(
    obj: dict[str, Any], spec: AdapterSpec, where: str, old: ServerResponse | None = None
) -> ServerResponse:
    """A (checked) response object as a :class:`ServerResponse`; ``old`` supplies what it leaves out."""
    if "Headers" in obj:
        headers = _headers(obj["Headers"], spec, where)
    else:
        headers = list(old.headers) if old is not None else []
    if "ContentType" in obj:
        # ContentType wins over a Content-Type in Headers; null or empty: none.
        ctype = obj["ContentType"]
        headers = _with_header(headers, b"Content-Type", ctype.encode("latin-1", "replace") if ctype else None)
    return ServerResponse(obj["Code"], headers, _new_body(obj.get("Body"), old.body if old is not None else None))


PROTOCOL_1 = HookProtocol()
PROTOCOL_2 = HookProtocol2()
PROTOCOLS = {1: PROTOCOL_1, 2: PROTOCOL_2}


@implementer(IUnwindable)
class HookAdapter(abc.ABC):
    """A ``type: powerstrip`` adapter: hook calls in its protocol version; subclasses carry them."""

    def __init__(self, spec: AdapterSpec, client: AdapterClient, verbose: bool = False) -> None:
        self.spec = spec
        self.client = client
        self.verbose = verbose
        self.protocol = PROTOCOLS[spec.protocol]

    @abc.abstractmethod
    def _exchange(self, payload: dict[str, Any]) -> defer.Deferred[Any]:
        """Send ``payload``; fire with the reply (decoded JSON) of a 2xx answer, fail with
        :class:`Refused` (any other status) or :class:`AdapterFault`."""

    def call(self, flow: Flow, phase: str) -> defer.Deferred[Flow]:
        """See :meth:`IAdapter.call <powerstrip.hooks.interface.IAdapter.call>`."""
        original = self.protocol.payload(flow, phase)
        shown = redact.payload(original)
        d = self._exchange(original if self.spec.secrets else shown)
        d.addCallback(self.protocol.check, self.spec, phase)
        if self.verbose:
            self._log_call(flow, phase, shown, redact.hidden(shown, original), d)
        if not self.spec.secrets:
            d.addCallback(redact.restore_reply, shown, original)
        return d.addCallback(self.protocol.apply, flow, self.spec, phase)

    def unwind(self, flow: Flow, stage: str, failed: str | None, message: str) -> defer.Deferred[None]:
        """See :meth:`IUnwindable.unwind <powerstrip.hooks.interface.IUnwindable.unwind>`."""
        payload = self.protocol.payload(flow, "unwind")
        payload.setdefault("ServerResponse", None)
        payload["Stage"] = stage
        payload["Failure"] = {
            "Adapter": failed,
            "Code": flow.response.code if flow.response is not None else None,
            "Message": message,
        }
        shown = redact.payload(payload)
        hidden = redact.hidden(shown, payload)
        fields = {"request_id": flow.id, "adapter": self.spec.name}
        if self.verbose:
            log.info("#{id} unwind {adapter} sent {payload}", id=flow.id, payload=_shown(shown), **fields)

        def done(result: tuple[int, str | None, bytes] | Failure) -> Failure | None:
            if isinstance(result, Failure):
                log.warn("#{id} unwind {adapter} failed: {error}", id=flow.id, error=result.getErrorMessage(), **fields)
                return result
            if not 200 <= result[0] < 300:
                log.warn(
                    "#{id} unwind {adapter} answered {code}: {body}",
                    id=flow.id,
                    code=result[0],
                    body=redact.scrub(result[2][:200].decode("utf-8", "replace"), hidden),
                    **fields,
                )
            return None

        return self.client.post(self.spec, payload if self.spec.secrets else shown).addBoth(done)

    def _log_call(
        self, flow: Flow, phase: str, shown: dict[str, Any], hidden: list[str], d: defer.Deferred[Any]
    ) -> None:
        """Log the call (``shown``: redacted), and the reply or refusal, with what
        ``hidden`` holds (the redacted values) blanked even where a hook echoes it."""
        where = f"#{flow.id} {phase} {self.spec.name}"
        fields = {"request_id": flow.id, "adapter": self.spec.name, "phase": phase}
        log.info("{where} sent {payload}", where=where, payload=_shown(shown), **fields)

        def replied(reply: dict[str, Any]) -> dict[str, Any]:
            log.info(
                "{where} replied {reply}",
                where=where,
                reply=redact.scrub(_shown(redact.reply(reply, shown)), hidden),
                **fields,
            )
            return reply

        def refused(failure: Failure) -> Failure:
            if isinstance(failure.value, Refused):
                resp = failure.value.response
                log.info(
                    "{where} refused {code} {body}",
                    where=where,
                    code=resp.code,
                    body=redact.scrub(_shown(resp.body.decode("utf-8", "replace")), hidden),
                    **fields,
                )
            return failure

        d.addCallbacks(replied, refused)


class HTTPHookAdapter(HookAdapter):
    """Hook calls POSTed as JSON over HTTP (``http://``, ``https://``, ``http+unix://``), with treq."""

    def _exchange(self, payload: dict[str, Any]) -> defer.Deferred[Any]:
        return self.client.post(self.spec, payload).addCallback(self._decoded)

    def _decoded(self, answer: tuple[int, str | None, bytes]) -> Any:
        code, ctype, body = answer
        if not 200 <= code < 300:
            headers = [(b"Content-Type", ctype.encode("latin-1"))] if ctype else []
            raise Refused(self.spec, ServerResponse(code, headers, body))
        try:
            return json.loads(body)
        except ValueError:
            raise AdapterFault(self.spec, f"reply is not JSON: {body[:200]!r}") from None


class InProcessHookAdapter(HookAdapter):
    """Hook calls to a ``python:`` adapter in this process: no HTTP hop, no JSON round trip."""

    def _exchange(self, payload: dict[str, Any]) -> defer.Deferred[Any]:
        return self.client.call_in_process(self.spec, payload).addCallback(self._answered)

    def _answered(self, answer: tuple[int, Any]) -> Any:
        code, reply = answer
        if not 200 <= code < 300:
            body = json.dumps(reply).encode() + b"\n"
            raise Refused(self.spec, ServerResponse(code, [(b"Content-Type", b"application/json")], body))
        return reply


def adapter_for(spec: AdapterSpec, client: AdapterClient, verbose: bool = False) -> IAdapter:
    """The :class:`~powerstrip.hooks.interface.IAdapter` that ``spec`` asks for."""
    if spec.type == "authz":
        return AuthzAdapter(spec, client, verbose)
    if spec.in_process is not None:
        return InProcessHookAdapter(spec, client, verbose)
    return HTTPHookAdapter(spec, client, verbose)
