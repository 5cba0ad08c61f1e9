"""The hook chain: pre-hooks and post-hooks as a chain of Deferreds.

Each hook's output is the next hook's input, in route order. A pre-hook
chain ends in one of three ways: the final request (go on to dockerd),
:class:`~powerstrip.adapters.Refused` (the client gets the adapter's answer,
dockerd is never called) or :class:`~powerstrip.adapters.AdapterFault`
(the client gets a 502/504). A post-hook chain likewise ends with the final
response, a refusal, or a fault.
"""

from __future__ import annotations

import json
import time
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from powerstrip.adapters import PROTOCOL_VERSION, AdapterClient, AdapterFault, Refused
from powerstrip.config import Adapter
from powerstrip.flow import ClientRequest, Flow, HookRecord, ServerResponse
from powerstrip.http11 import is_origin_form

log = Logger()


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

    def _call(self, flow: Flow, adapter: Adapter, phase: str) -> defer.Deferred:
        req = flow.request
        payload: dict[str, Any] = {
            "PowerstripProtocolVersion": PROTOCOL_VERSION,
            "Type": phase,
            "ClientRequest": {"Method": req.method, "Request": req.uri, "Body": _text(req.body)},
        }
        if phase == "pre-hook":
            expect, apply = "ModifiedClientRequest", self._apply_request
        else:
            resp = flow.response
            payload["ServerResponse"] = {
                "ContentType": resp.content_type,
                "Body": _text(resp.body),
                "Code": resp.code,
            }
            expect, apply = "ModifiedServerResponse", self._apply_response
        started = time.monotonic()

        def record(result: Any, outcome: str) -> Any:
            flow.hooks.append(HookRecord(adapter.name, phase, time.monotonic() - started, outcome))
            return result

        d = self.client.call(adapter, payload, expect)
        if self.verbose:
            self._log_call(flow, adapter, phase, payload, d)
        d.addCallback(apply, flow, adapter)
        d.addCallbacks(record, lambda f: record(f, f.type.__name__), callbackArgs=("ok",))
        if adapter.ignore_faults:
            d.addErrback(self._ignore_fault, flow)
        return d

    @staticmethod
    def _log_call(flow: Flow, adapter: Adapter, phase: str, payload: dict, d: defer.Deferred) -> None:
        where = f"#{flow.id} {phase} {adapter.name}"
        fields = {"request_id": flow.id, "adapter": adapter.name, "phase": phase}
        log.info("{where} sent {payload}", where=where, payload=_shown(payload), **fields)

        def replied(reply: dict) -> dict:
            log.info("{where} replied {reply}", where=where, reply=_shown(reply), **fields)
            return reply

        def refused(failure: Any) -> Any:
            if failure.check(Refused):
                resp = failure.value.response
                log.info("{where} refused {code} {body}", where=where, code=resp.code,
                         body=_shown(resp.body.decode("utf-8", "replace")), **fields)
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
    def _apply_request(reply: dict, flow: Flow, adapter: Adapter) -> Flow:
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
        flow.request = ClientRequest(method.upper(), uri, old.headers, new_body, old.streamed)
        return flow

    @staticmethod
    def _apply_response(reply: dict, flow: Flow, adapter: Adapter) -> Flow:
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
