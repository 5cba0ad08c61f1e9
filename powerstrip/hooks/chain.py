"""The hook chain: pre-hooks and post-hooks as a chain of Deferreds.

Each hook's output is the next hook's input, in route order. A pre-hook
chain ends in one of four ways: the final request (go on to dockerd),
:class:`~powerstrip.hooks.http.Refused` (the client gets the adapter's answer,
dockerd is never called), :class:`ShortCircuit` (a protocol 2 adapter
answered itself: likewise) or :class:`~powerstrip.hooks.http.AdapterFault`
(the client gets a 502/504). A post-hook chain likewise ends with the final
response, a refusal, or a fault. When a request fails after ``unwind: true``
adapters' pre-hooks succeeded, :meth:`HookChain.run_unwind` tells them.

Each adapter gets calls in its own protocol version (:meth:`HookChain.payload`),
with credentials redacted unless it has ``secrets: true``; logs always redact
them (:mod:`powerstrip.hooks.redact`).
"""

from __future__ import annotations

import json
import time
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from powerstrip.config.spec import AdapterSpec
from powerstrip.hooks import authz, redact
from powerstrip.hooks.flow import ClientRequest, Flow, HookRecord, ServerResponse
from powerstrip.hooks.http import AdapterClient, AdapterFault, Refused
from powerstrip.wire.http11 import header_map, headers_from_map, is_origin_form, is_owned

#: Log namespaces are part of the interface (log filters name them): kept across moves.
log = Logger(namespace="powerstrip.hooks")


def _text(body: bytes | None) -> str | None:
    """A body as adapters see it: a string, or null when absent or not UTF-8."""
    if not body:
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _with_header(headers: list, name: bytes, value: bytes | None) -> list:
    """``headers`` with every ``name`` replaced by one ``value`` (none if None)."""
    out = [(k, v) for k, v in headers if k.lower() != name.lower()]
    if value is not None:
        out.append((name, value))
    return out


#: ``--verbose`` logs hook payloads up to this many characters each.
VERBOSE_LIMIT = 64 * 1024


def _shown(obj: Any) -> str:
    text = json.dumps(obj, separators=(",", ":"))
    if len(text) > VERBOSE_LIMIT:
        return f"{text[:VERBOSE_LIMIT]}... ({len(text)} characters)"
    return text


class ShortCircuit(Exception):  # noqa: N818 -- named for what happens, like Refused
    """A protocol 2 pre-hook answered the request itself: the chain stops, dockerd is not called."""

    def __init__(self, adapter: AdapterSpec, response: ServerResponse) -> None:
        super().__init__(f"adapter {adapter.name!r} answered {response.code} itself")
        self.adapter = adapter
        self.response = response


def _owned(headers: list) -> list:
    """The headers of ``headers`` that are Powerstrip's (kept when a hook replaces the rest)."""
    return [(k, v) for k, v in headers if is_owned(k)]


def _headers(obj: Any, adapter: AdapterSpec, where: str) -> list:
    try:
        return headers_from_map(obj)
    except ValueError as e:
        raise AdapterFault(adapter, f"{where}.Headers: {e}") from None


def _response_from(obj: dict, adapter: AdapterSpec, where: str, old: ServerResponse | None = None) -> ServerResponse:
    """A protocol 2 response object as a :class:`ServerResponse` (``old`` supplies what it leaves out)."""
    if "Headers" in obj:
        headers = _headers(obj["Headers"], adapter, where)
    else:
        headers = list(old.headers) if old is not None else []
    ctype, body = obj.get("ContentType"), obj.get("Body")
    # ContentType wins over a Content-Type in Headers.
    raw_ctype = ctype.encode("latin-1", "replace") if ctype else None
    if ctype is not None or "ContentType" in obj:
        headers = _with_header(headers, b"Content-Type", raw_ctype)
    if body is None and old is not None and old.body and _text(old.body) is None:
        new_body = old.body  # a body adapters could not see (not UTF-8) is kept
    else:
        new_body = body.encode("utf-8") if body else b""
    return ServerResponse(obj["Code"], headers, new_body)


class HookChain:
    """Runs a flow's pre-hooks and post-hooks through an :class:`AdapterClient`.

    With ``verbose``, every payload sent and every reply (or refusal) is logged.
    """

    def __init__(self, client: AdapterClient, verbose: bool = False) -> None:
        self.client = client
        self.verbose = verbose

    def run_pre(self, flow: Flow) -> defer.Deferred:
        """Fire with ``flow`` once every pre-hook has had its turn at ``flow.request``."""
        d = defer.succeed(flow)
        for adapter in flow.route.pre:
            d.addCallback(self._call, adapter, "pre-hook")
        return d

    def run_post(self, flow: Flow) -> defer.Deferred:
        """Fire with ``flow`` once every post-hook has had its turn at ``flow.response``."""
        d = defer.succeed(flow)
        for adapter in flow.route.post:
            d.addCallback(self._call, adapter, "post-hook")
        return d

    def _call(self, flow: Flow, adapter: AdapterSpec, phase: str) -> defer.Deferred:
        if adapter.type == "authz":  # Docker's authorization-plugin protocol, not hook calls
            return authz.call(self.client, flow, adapter, phase, verbose=self.verbose)
        original = self.payload(flow, adapter, phase)
        shown = redact.payload(original)
        if phase == "pre-hook":
            expect, apply = "ModifiedClientRequest", self._apply_request
        else:
            expect, apply = "ModifiedServerResponse", self._apply_response
        started = time.monotonic()

        def record(result: Any, outcome: str) -> Any:
            flow.hooks.append(HookRecord(adapter.name, phase, time.monotonic() - started, outcome))
            return result

        d = self.client.call(adapter, original if adapter.secrets else shown, expect)
        if self.verbose:
            self._log_call(flow, adapter, phase, shown, redact.hidden(shown, original), d)
        if not adapter.secrets:
            d.addCallback(redact.restore_reply, shown, original)
        d.addCallback(apply, flow, adapter)
        if phase == "pre-hook" and adapter.unwind:
            d.addCallback(self._prepared, adapter)
        d.addCallbacks(record, lambda f: record(f, f.type.__name__), callbackArgs=("ok",))
        if adapter.ignore_faults:
            d.addErrback(self._ignore_fault, flow)
        return d

    @staticmethod
    def payload(flow: Flow, adapter: AdapterSpec, kind: str) -> dict[str, Any]:
        """The call ``adapter`` gets for ``flow`` (``kind``: pre-hook, post-hook, unwind), in its protocol."""
        req = flow.request
        payload: dict[str, Any] = {"PowerstripProtocolVersion": adapter.protocol, "Type": kind}
        client_request = {"Method": req.method, "Request": req.uri, "Body": _text(req.body)}
        resp = flow.response
        server_response = None
        if resp is not None and kind != "pre-hook":
            server_response = {"ContentType": resp.content_type, "Body": _text(resp.body), "Code": resp.code}
        if adapter.protocol == 2:
            payload["RequestId"] = flow.id
            payload["Caller"] = flow.caller.wire() if flow.caller else None
            client_request["Headers"] = header_map(req.headers)
            if server_response is not None:
                server_response["Headers"] = header_map(resp.headers)
        payload["ClientRequest"] = client_request
        if server_response is not None:
            payload["ServerResponse"] = server_response
        return payload

    @staticmethod
    def _prepared(flow: Flow, adapter: AdapterSpec) -> Flow:
        flow.prepared.append(adapter)
        return flow

    def run_unwind(self, flow: Flow, stage: str, failed: str | None, message: str) -> defer.Deferred:
        """Call the ``unwind: true`` adapters whose pre-hook succeeded, in reverse order.

        ``flow.response`` is what the client got (None: nothing, it went away);
        ``stage`` where the request failed (pre-hook, docker, post-hook, or
        client: it left before the request was sent) and ``failed`` the adapter
        that refused or faulted (None for dockerd or the client). Failures are
        logged, never raised.
        """
        d = defer.succeed(None)
        code = flow.response.code if flow.response is not None else None
        for adapter in reversed(flow.prepared):
            payload = self.payload(flow, adapter, "unwind")
            payload.setdefault("ServerResponse", None)
            payload["Stage"] = stage
            payload["Failure"] = {"Adapter": failed, "Code": code, "Message": message}
            d.addCallback(lambda _, a=adapter, p=payload: self._unwind_one(flow, a, p))
        return d

    def _unwind_one(self, flow: Flow, adapter: AdapterSpec, payload: dict) -> defer.Deferred:
        started = time.monotonic()
        shown = redact.payload(payload)
        hidden = redact.hidden(shown, payload)
        if self.verbose:
            log.info("#{id} unwind {adapter} sent {payload}", id=flow.id, adapter=adapter.name,
                     payload=_shown(shown), request_id=flow.id)

        def done(result: Any) -> None:
            flow.hooks.append(HookRecord(adapter.name, "unwind", time.monotonic() - started,
                                         "ok" if not isinstance(result, Failure) else result.type.__name__))
            if isinstance(result, Failure):
                log.warn("#{id} unwind {adapter} failed: {error}", id=flow.id, adapter=adapter.name,
                         error=result.getErrorMessage(), request_id=flow.id)
            elif not 200 <= result[0] < 300:
                log.warn("#{id} unwind {adapter} answered {code}: {body}", id=flow.id, adapter=adapter.name,
                         code=result[0], body=redact.scrub(result[2][:200].decode("utf-8", "replace"), hidden),
                         request_id=flow.id)

        return self.client.post(adapter, payload if adapter.secrets else shown).addBoth(done)

    @staticmethod
    def _log_call(flow: Flow, adapter: AdapterSpec, phase: str, shown: dict, hidden: list[str],
                  d: defer.Deferred) -> None:
        """Log the call (``shown``: redacted), and the reply or refusal, with what
        ``hidden`` holds (the redacted values) blanked even where a hook echoes it."""
        where = f"#{flow.id} {phase} {adapter.name}"
        fields = {"request_id": flow.id, "adapter": adapter.name, "phase": phase}
        log.info("{where} sent {payload}", where=where, payload=_shown(shown), **fields)

        def replied(reply: dict) -> dict:
            log.info("{where} replied {reply}", where=where,
                     reply=redact.scrub(_shown(redact.reply(reply, shown)), hidden), **fields)
            return reply

        def refused(failure: Any) -> Any:
            if failure.check(Refused):
                resp = failure.value.response
                log.info("{where} refused {code} {body}", where=where, code=resp.code,
                         body=redact.scrub(_shown(resp.body.decode("utf-8", "replace")), hidden), **fields)
            return failure

        d.addCallbacks(replied, refused)

    @staticmethod
    def _ignore_fault(failure: Any, flow: Flow) -> Flow:
        """``failure: ignore``: a fault (never a refusal) leaves the flow as it was."""
        failure.trap(AdapterFault)
        log.warn("{flow}: ignoring fault ({adapter} has failure: ignore): {error}",
                 flow=flow.id, adapter=failure.value.adapter.name, error=str(failure.value),
                 request_id=flow.id)
        return flow

    @staticmethod
    def _apply_request(reply: dict, flow: Flow, adapter: AdapterSpec) -> Flow:
        headers = flow.request.headers
        if adapter.protocol == 2:
            if "ServerResponse" in reply:
                raise ShortCircuit(adapter, _response_from(reply["ServerResponse"], adapter, "ServerResponse"))
            reply = reply["ModifiedClientRequest"]
            if "Headers" in reply:
                headers = _owned(headers) + _headers(reply["Headers"], adapter, "ModifiedClientRequest")
        old = flow.request
        method, uri, body = reply.get("Method"), reply.get("Request"), reply.get("Body", None)
        if not isinstance(method, str) or not (method.isascii() and method.isalpha()):
            raise AdapterFault(adapter, f"ModifiedClientRequest.Method must be an HTTP method, got {method!r}")
        if not isinstance(uri, str) or not is_origin_form(uri):
            raise AdapterFault(adapter, f"ModifiedClientRequest.Request must be a path like '/v1.41/...', got {uri!r}")
        if body is not None and not isinstance(body, str):
            raise AdapterFault(adapter, "ModifiedClientRequest.Body must be a string or null")
        if old.streamed:
            if body is not None:
                raise AdapterFault(adapter, "ModifiedClientRequest.Body must be null: this request's "
                                            "body is not JSON and streams to Docker unseen")
            new_body = None
        elif body is None and old.body and _text(old.body) is None:
            new_body = old.body  # a buffered body adapters could not see is kept
        else:
            new_body = body.encode("utf-8") if body is not None else b""
        flow.request = ClientRequest(method.upper(), uri, headers, new_body, old.streamed)
        return flow

    @staticmethod
    def _apply_response(reply: dict, flow: Flow, adapter: AdapterSpec) -> Flow:
        if adapter.protocol == 2:
            flow.response = _response_from(reply["ModifiedServerResponse"], adapter, "ModifiedServerResponse",
                                           flow.response)
            return flow
        code, ctype, body = reply.get("Code"), reply.get("ContentType"), reply.get("Body")
        if not isinstance(code, int) or isinstance(code, bool) or not 200 <= code <= 599:
            raise AdapterFault(adapter, f"ModifiedServerResponse.Code must be an HTTP status 200-599, got {code!r}")
        if ctype is not None and (not isinstance(ctype, str) or any(c in ctype for c in "\r\n")):
            raise AdapterFault(adapter, "ModifiedServerResponse.ContentType must be a string or null")
        if body is not None and not isinstance(body, str):
            raise AdapterFault(adapter, "ModifiedServerResponse.Body must be a string or null")
        old = flow.response
        raw_ctype = ctype.encode("latin-1", "replace") if ctype else None
        headers = _with_header(old.headers, b"Content-Type", raw_ctype)
        if body is None and old.body and _text(old.body) is None:
            new_body = old.body  # a body adapters could not see (not UTF-8) is kept
        else:
            new_body = body.encode("utf-8") if body else b""
        flow.response = ServerResponse(code, headers, new_body)
        return flow
