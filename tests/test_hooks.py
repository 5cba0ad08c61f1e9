"""Tests for :mod:`powerstrip.hooks.chain`, :mod:`powerstrip.hooks.protocols` and :mod:`powerstrip.hooks.http`.

The adapters are real: one in-process :class:`twisted.web.server.Site` on
127.0.0.1 serves every fake adapter, each at its own path (``/NAME``), so the
hook chain talks HTTP through treq exactly as it does in production.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any
from urllib.parse import quote

from twisted.internet import defer, reactor
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request, Site

from powerstrip.config.spec import AdapterSpec
from powerstrip.hooks import http as hooks_http
from powerstrip.hooks.chain import HookChain
from powerstrip.hooks.flow import ServerResponse
from powerstrip.hooks.http import DEFAULT_MAX_REPLY, AdapterClient
from powerstrip.hooks.interface import AdapterFault, Refused
from powerstrip.wire.endpoints import DockerAddress, tcp_endpoint
from tests.support import (
    JSON,
    Handler,
    HookTestCase,
    echo_post,
    echo_pre,
    make_request,
    reply,
    unused_port,
)


def answer(obj: Any, code: int = 200) -> Handler:
    """An adapter that always answers ``obj`` as JSON (or as is, if bytes)."""
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return lambda request, payload: reply(request, body, code)


def pre_reply(**request: Any) -> dict:
    return {"PowerstripProtocolVersion": 1, "ModifiedClientRequest": request}


def post_reply(**response: Any) -> dict:
    return {"PowerstripProtocolVersion": 1, "ModifiedServerResponse": response}


def append_pre(tag: str) -> Handler:
    """A pre-hook that appends ``tag`` to the request body."""

    def handler(request: Request, payload: dict) -> bytes:
        req = dict(payload["ClientRequest"])
        req["Body"] = (req["Body"] or "") + tag
        return reply(request, json.dumps(pre_reply(**req)).encode())

    return handler


def append_post(tag: str) -> Handler:
    """A post-hook that appends ``tag`` to the response body."""

    def handler(request: Request, payload: dict) -> bytes:
        resp = dict(payload["ServerResponse"])
        resp["Body"] = (resp["Body"] or "") + tag
        return reply(request, json.dumps(post_reply(**resp)).encode())

    return handler


def never_answer(request: Request, payload: dict) -> Any:
    return NOT_DONE_YET


# -- payloads --------------------------------------------------------------------


class PayloadTests(HookTestCase):
    @defer.inlineCallbacks
    def test_pre_hook_payload(self) -> Any:
        flow = self.pre_flow(self.adapter("a", echo_pre))
        yield self.chain.run_pre(flow)
        self.assertEqual(
            self.adapters.calls,
            [
                (
                    "a",
                    {
                        "PowerstripProtocolVersion": 1,
                        "Type": "pre-hook",
                        "ClientRequest": {
                            "Method": "POST",
                            "Request": "/v1.41/containers/create?name=web",
                            "Body": '{"Image":"busybox"}',
                        },
                    },
                )
            ],
        )
        self.assertEqual(self.adapters.content_types, [b"application/json"])

    @defer.inlineCallbacks
    def test_post_hook_payload(self) -> Any:
        flow = self.post_flow(self.adapter("a", echo_post))
        yield self.chain.run_post(flow)
        self.assertEqual(
            self.adapters.calls,
            [
                (
                    "a",
                    {
                        "PowerstripProtocolVersion": 1,
                        "Type": "post-hook",
                        "ClientRequest": {
                            "Method": "POST",
                            "Request": "/v1.41/containers/create?name=web",
                            "Body": '{"Image":"busybox"}',
                        },
                        "ServerResponse": {
                            "ContentType": "application/json",
                            "Body": '{"Id":"abc123"}',
                            "Code": 201,
                        },
                    },
                )
            ],
        )

    @defer.inlineCallbacks
    def test_empty_body_is_null(self) -> Any:
        a = self.adapter("a", echo_pre)
        yield self.chain.run_pre(self.pre_flow(a, request=make_request(body=b"", method="GET", uri="/v1.41/info")))
        yield self.chain.run_pre(self.pre_flow(a, request=make_request(body=None, method="GET", uri="/_ping")))
        self.assertEqual(
            [p["ClientRequest"] for _, p in self.adapters.calls],
            [
                {"Method": "GET", "Request": "/v1.41/info", "Body": None},
                {"Method": "GET", "Request": "/_ping", "Body": None},
            ],
        )

    @defer.inlineCallbacks
    def test_utf8_body_is_passed_as_text(self) -> Any:
        text = '{"Name":"café ☕ 雪","Env":["A=ü"]}'
        flow = self.pre_flow(self.adapter("a", echo_pre), request=make_request(body=text.encode("utf-8")))
        yield self.chain.run_pre(flow)
        self.assertEqual(self.adapters.calls[0][1]["ClientRequest"]["Body"], text)
        self.assertEqual(flow.request.body, text.encode("utf-8"))

    @defer.inlineCallbacks
    def test_non_utf8_body_is_null_and_kept(self) -> Any:
        raw = b'{"Name":"caf\xe9"}'
        flow = self.pre_flow(self.adapter("a", echo_pre), request=make_request(body=raw))
        yield self.chain.run_pre(flow)
        self.assertIsNone(self.adapters.calls[0][1]["ClientRequest"]["Body"])
        self.assertEqual(flow.request.body, raw)

    @defer.inlineCallbacks
    def test_post_hook_payload_empty_body_and_no_content_type(self) -> Any:
        flow = self.post_flow(self.adapter("a", echo_post), response=ServerResponse(204, [], b""))
        yield self.chain.run_post(flow)
        self.assertEqual(self.adapters.calls[0][1]["ServerResponse"], {"ContentType": None, "Body": None, "Code": 204})
        self.assertEqual((flow.response.code, flow.response.body), (204, b""))

    @defer.inlineCallbacks
    def test_streamed_request_payload_has_null_body(self) -> Any:
        flow = self.pre_flow(self.adapter("a", echo_pre), request=make_request(body=None, streamed=True))
        yield self.chain.run_pre(flow)
        self.assertIsNone(self.adapters.calls[0][1]["ClientRequest"]["Body"])


# -- applying replies ------------------------------------------------------------


class ApplyTests(HookTestCase):
    @defer.inlineCallbacks
    def test_pre_hook_rewrites_request(self) -> Any:
        replied = pre_reply(Method="put", Request="/v1.41/containers/other", Body='{"Image":"alpine"}')
        flow = self.pre_flow(self.adapter("a", answer(replied)))
        result = yield self.chain.run_pre(flow)
        self.assertIs(result, flow)
        req = flow.request
        self.assertEqual(
            (req.method, req.uri, req.body, req.streamed),
            ("PUT", "/v1.41/containers/other", b'{"Image":"alpine"}', False),
        )
        self.assertEqual(req.headers, make_request().headers)

    @defer.inlineCallbacks
    def test_pre_hook_null_body_empties_request(self) -> Any:
        flow = self.pre_flow(self.adapter("a", answer(pre_reply(Method="POST", Request="/x", Body=None))))
        yield self.chain.run_pre(flow)
        self.assertEqual(flow.request.body, b"")

    @defer.inlineCallbacks
    def test_post_hook_rewrites_response(self) -> Any:
        replied = post_reply(Code=200, ContentType="text/plain; charset=utf-8", Body="héllo")
        flow = self.post_flow(self.adapter("a", answer(replied)))
        yield self.chain.run_post(flow)
        resp = flow.response
        self.assertEqual((resp.code, resp.body), (200, "héllo".encode()))
        self.assertEqual(resp.content_type, "text/plain; charset=utf-8")
        self.assertEqual([k for k, _ in resp.headers if k.lower() == b"content-type"], [b"Content-Type"])
        self.assertIn((b"Api-Version", b"1.41"), resp.headers)

    @defer.inlineCallbacks
    def test_post_hook_null_content_type_removes_header(self) -> Any:
        flow = self.post_flow(self.adapter("a", answer(post_reply(Code=202, ContentType=None, Body=None))))
        yield self.chain.run_post(flow)
        self.assertEqual((flow.response.code, flow.response.body, flow.response.content_type), (202, b"", None))

    @defer.inlineCallbacks
    def test_no_hooks(self) -> Any:
        flow = self.post_flow()
        before = (flow.request, flow.response)
        self.assertIs((yield self.chain.run_pre(flow)), flow)
        self.assertIs((yield self.chain.run_post(flow)), flow)
        self.assertEqual((flow.request, flow.response), before)
        self.assertEqual(self.adapters.calls, [])

    @defer.inlineCallbacks
    def test_hooks_are_recorded(self) -> Any:
        a, b = self.adapter("a", echo_pre), self.adapter("b", answer(b"nope", code=500))
        flow = self.pre_flow(a, b)
        yield self.assertFailure(self.chain.run_pre(flow), Refused)
        self.assertEqual(
            [(h.adapter, h.phase, h.outcome) for h in flow.hooks],
            [("a", "pre-hook", "ok"), ("b", "pre-hook", "Refused")],
        )
        self.assertTrue(all(h.seconds >= 0 for h in flow.hooks))


# -- chaining --------------------------------------------------------------------


class ChainTests(HookTestCase):
    @defer.inlineCallbacks
    def test_pre_hooks_chain_in_order(self) -> Any:
        flow = self.pre_flow(
            *(self.adapter(n, append_pre(n)) for n in ("c", "a", "b")), request=make_request(body=b"x")
        )
        yield self.chain.run_pre(flow)
        self.assertEqual(self.adapters.called, ["c", "a", "b"])
        self.assertEqual([p["ClientRequest"]["Body"] for _, p in self.adapters.calls], ["x", "xc", "xca"])
        self.assertEqual(flow.request.body, b"xcab")

    @defer.inlineCallbacks
    def test_pre_hook_sees_previous_method_and_path(self) -> Any:
        first = self.adapter("first", answer(pre_reply(Method="DELETE", Request="/v1.41/x", Body="1")))
        flow = self.pre_flow(first, self.adapter("second", echo_pre))
        yield self.chain.run_pre(flow)
        self.assertEqual(
            self.adapters.calls[1][1]["ClientRequest"], {"Method": "DELETE", "Request": "/v1.41/x", "Body": "1"}
        )

    @defer.inlineCallbacks
    def test_post_hooks_chain_in_order(self) -> Any:
        flow = self.post_flow(
            *(self.adapter(n, append_post(n)) for n in ("b", "c", "a")), response=ServerResponse(200, list(JSON), b"r")
        )
        yield self.chain.run_post(flow)
        self.assertEqual(self.adapters.called, ["b", "c", "a"])
        self.assertEqual([p["ServerResponse"]["Body"] for _, p in self.adapters.calls], ["r", "rb", "rbc"])
        self.assertEqual(flow.response.body, b"rbca")

    @defer.inlineCallbacks
    def test_post_hook_sees_previous_code_and_content_type(self) -> Any:
        first = self.adapter("first", answer(post_reply(Code=418, ContentType="text/plain", Body="tea")))
        flow = self.post_flow(first, self.adapter("second", echo_post))
        yield self.chain.run_post(flow)
        self.assertEqual(
            self.adapters.calls[1][1]["ServerResponse"], {"ContentType": "text/plain", "Body": "tea", "Code": 418}
        )
        self.assertEqual(flow.response.code, 418)


# -- refusals --------------------------------------------------------------------


class RefusalTests(HookTestCase):
    @defer.inlineCallbacks
    def test_pre_hook_refusal_stops_the_chain(self) -> Any:
        def refuse(request: Request, payload: dict) -> bytes:
            return reply(request, b'{"message":"quota exceeded"}', code=409)

        a, b, c = self.adapter("a", append_pre("a")), self.adapter("b", refuse), self.adapter("c", append_pre("c"))
        flow = self.pre_flow(a, b, c)
        refused = yield self.assertFailure(self.chain.run_pre(flow), Refused)
        self.assertIs(refused.adapter, b)
        self.assertEqual(refused.response.code, 409)
        self.assertEqual(refused.response.body, b'{"message":"quota exceeded"}')
        self.assertEqual(refused.response.content_type, "application/json")
        self.assertEqual(self.adapters.called, ["a", "b"])

    @defer.inlineCallbacks
    def test_refusal_without_content_type(self) -> Any:
        def refuse(request: Request, payload: dict) -> bytes:
            request.responseHeaders.removeHeader(b"content-type")
            return reply(request, b"go away", code=403, ctype=None)

        refused = yield self.assertFailure(self.chain.run_pre(self.pre_flow(self.adapter("a", refuse))), Refused)
        self.assertEqual((refused.response.code, refused.response.body), (403, b"go away"))

    @defer.inlineCallbacks
    def test_post_hook_refusal(self) -> Any:
        def refuse(request: Request, payload: dict) -> bytes:
            return reply(request, b"not allowed", code=403, ctype=b"text/plain")

        flow = self.post_flow(self.adapter("a", refuse), self.adapter("b", echo_post))
        refused = yield self.assertFailure(self.chain.run_post(flow), Refused)
        self.assertEqual(refused.response.code, 403)
        self.assertEqual(refused.response.body, b"not allowed")
        self.assertEqual(refused.response.content_type, "text/plain")
        self.assertEqual(self.adapters.called, ["a"])

    @defer.inlineCallbacks
    def test_server_error_is_a_refusal(self) -> Any:
        refused = yield self.assertFailure(
            self.chain.run_pre(self.pre_flow(self.adapter("a", answer({"message": "boom"}, code=500)))), Refused
        )
        self.assertEqual(refused.response.code, 500)


# -- faults ----------------------------------------------------------------------


class ConnectionFaultTests(HookTestCase):
    @defer.inlineCallbacks
    def test_connection_refused(self) -> Any:
        port = unused_port()
        gone = AdapterSpec("gone", f"http://127.0.0.1:{port}/hook")
        flow = self.pre_flow(gone, self.adapter("after", echo_pre))
        fault = yield self.assertFailure(self.chain.run_pre(flow), AdapterFault)
        self.assertFault(fault, gone, 502, "cannot connect")
        self.assertIn(f"powerstrip: adapter 'gone' (http://127.0.0.1:{port}/hook):", str(fault))
        self.assertEqual(self.adapters.calls, [])
        response = fault.response()
        self.assertEqual(response.code, 502)
        self.assertEqual(response.content_type, "application/json")
        self.assertEqual(json.loads(response.body), {"message": str(fault)})
        self.assertEqual([(h.adapter, h.outcome) for h in flow.hooks], [("gone", "AdapterFault")])

    @defer.inlineCallbacks
    def test_refused_ip_address_fails_at_once(self) -> Any:
        """A refused connection to an IP address is a fault straight away, not after
        HostnameEndpoint's 0.3 s attempt interval, which every call to a down adapter
        (``failure: ignore`` ones too) would otherwise pay."""
        clock = MemoryReactorClock()
        client = AdapterClient(clock)
        self.addCleanup(client.close)
        gone = AdapterSpec("gone", "http://127.0.0.1:9/hook", timeout=5)
        d = HookChain(client).run_pre(self.pre_flow(gone))
        [(host, port, factory, _, _)] = clock.tcpClients
        self.assertEqual((host, port), ("127.0.0.1", 9))
        factory.clientConnectionFailed(clock.connectors[0], Failure(ConnectionRefusedError()))
        fault = yield self.assertFailure(d, AdapterFault)  # the clock never moved
        self.assertFault(fault, gone, 502, "cannot connect")

    def test_endpoints_by_host(self) -> None:
        """Adapters and dockerd alike: IP addresses are dialled directly, names resolved."""
        for host, kind in [
            ("127.0.0.1", TCP4ClientEndpoint),
            ("::1", TCP6ClientEndpoint),
            ("localhost", HostnameEndpoint),
        ]:
            self.assertIsInstance(tcp_endpoint(reactor, host, 2375), kind, host)
        self.assertIsInstance(DockerAddress.parse("tcp://127.0.0.1:2375").endpoint(reactor), TCP4ClientEndpoint)

    @defer.inlineCallbacks
    def test_timeout_no_answer(self) -> Any:
        """An adapter that accepts the call and never answers is a 504."""
        slow = self.adapter("slow", never_answer, timeout=0.5)
        flow = self.pre_flow(slow, self.adapter("after", echo_pre))
        fault = yield self.assertFailure(self.chain.run_pre(flow), AdapterFault)
        self.assertFault(fault, slow, 504, "no answer within 0.5s")
        self.assertEqual(fault.response().code, 504)
        self.assertEqual(self.adapters.called, ["slow"])

    @defer.inlineCallbacks
    def test_timeout_while_connecting(self) -> Any:
        """An adapter whose host never completes the TCP handshake is a 504 too."""
        clock = MemoryReactorClock()
        client = AdapterClient(clock)
        self.addCleanup(client.close)
        slow = AdapterSpec("blackhole", "http://127.0.0.1:9/hook", timeout=0.5)
        d = HookChain(client).run_pre(self.pre_flow(slow))
        self.assertEqual(len(clock.tcpClients), 1)
        clock.advance(0.6)
        fault = yield self.assertFailure(d, AdapterFault)
        self.assertFault(fault, slow, 504, "no answer within 0.5s")

    @defer.inlineCallbacks
    def test_timeout_while_reading_the_reply_closes_the_connection(self) -> Any:
        """An adapter that stalls mid-reply is a 504, and its connection is dropped."""

        def stall(request: Request, payload: dict) -> Any:
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"content-length", b"1000")
            request.write(b'{"PowerstripProtocolVersion": 1,')
            return NOT_DONE_YET

        slow = self.adapter("stall", stall, timeout=0.5)
        fault = yield self.assertFailure(self.chain.run_pre(self.pre_flow(slow)), AdapterFault)
        self.assertFault(fault, slow, 504, "no answer within 0.5s")
        yield deferLater(reactor, 0.3, lambda: None)
        self.assertTrue(
            self.adapters.finished[0],
            "the timed-out call's connection is still open: the adapter keeps it, and keeps "
            "streaming into a reply nobody will read",
        )

    @defer.inlineCallbacks
    def test_connection_dropped_before_reply(self) -> Any:
        def drop(request: Request, payload: dict) -> Any:
            request.transport.abortConnection()
            return NOT_DONE_YET

        yield self.pre_fault(drop, "connection lost before a reply")

    @defer.inlineCallbacks
    def test_reply_too_large(self) -> Any:
        self.assertEqual(self.client.max_reply, DEFAULT_MAX_REPLY)
        self.client.max_reply = 64
        body = json.dumps(pre_reply(Method="POST", Request="/x", Body="y" * 200)).encode()
        yield self.pre_fault(answer(body), "reply larger than 64 bytes")

    @defer.inlineCallbacks
    def test_reply_at_max_size_is_fine(self) -> Any:
        body = json.dumps(pre_reply(Method="POST", Request="/x", Body="y")).encode()
        self.client.max_reply = len(body)
        flow = self.pre_flow(self.adapter("a", answer(body)))
        yield self.chain.run_pre(flow)
        self.assertEqual(flow.request.body, b"y")

    @defer.inlineCallbacks
    def test_fault_stops_the_chain(self) -> Any:
        flow = self.pre_flow(
            self.adapter("a", echo_pre), self.adapter("bad", answer(b"oops")), self.adapter("c", echo_pre)
        )
        yield self.assertFailure(self.chain.run_pre(flow), AdapterFault)
        self.assertEqual(self.adapters.called, ["a", "bad"])


class ProtocolFaultTests(HookTestCase):
    def test_reply_not_json(self) -> Any:
        return self.pre_fault(answer(b"<html>hello</html>"), "reply is not JSON", "<html>hello</html>")

    def test_empty_reply(self) -> Any:
        return self.pre_fault(answer(b""), "reply is not JSON")

    @defer.inlineCallbacks
    def test_reply_json_but_not_object(self) -> Any:
        for body in (b"[1, 2]", b'"text"', b"null", b"42"):
            yield self.pre_fault(answer(body), "reply is not a JSON object")

    @defer.inlineCallbacks
    def test_wrong_protocol_version(self) -> Any:
        request = {"Method": "POST", "Request": "/x", "Body": None}
        for replied, shown in (
            ({"PowerstripProtocolVersion": 2, "ModifiedClientRequest": request}, "2"),
            ({"PowerstripProtocolVersion": "1", "ModifiedClientRequest": request}, "'1'"),
            ({"ModifiedClientRequest": request}, "None"),
        ):
            yield self.pre_fault(answer(replied), f"reply has PowerstripProtocolVersion {shown}, expected 1")

    @defer.inlineCallbacks
    def test_missing_modified_client_request(self) -> Any:
        yield self.pre_fault(
            answer({"PowerstripProtocolVersion": 1}),
            "reply does not follow protocol 1: (root): 'ModifiedClientRequest' is required",
        )
        # A post-hook's answer is not a pre-hook's.
        yield self.pre_fault(
            answer(post_reply(Code=200, ContentType=None, Body=None)),
            "reply does not follow protocol 1: (root): 'ModifiedClientRequest' is required",
        )
        yield self.pre_fault(
            answer({"PowerstripProtocolVersion": 1, "ModifiedClientRequest": ["POST", "/x"]}),
            "reply does not follow protocol 1: ModifiedClientRequest: ",
            "is not of type 'object'",
        )

    @defer.inlineCallbacks
    def test_missing_modified_server_response(self) -> Any:
        yield self.post_fault(
            answer({"PowerstripProtocolVersion": 1}),
            "reply does not follow protocol 1: (root): 'ModifiedServerResponse' is required",
        )
        yield self.post_fault(
            answer(pre_reply(Method="POST", Request="/x", Body=None)),
            "reply does not follow protocol 1: (root): 'ModifiedServerResponse' is required",
        )

    @defer.inlineCallbacks
    def test_pre_body_not_string(self) -> Any:
        for body in (42, {"Image": "busybox"}, ["a"], True):
            yield self.pre_fault(
                answer(pre_reply(Method="POST", Request="/x", Body=body)),
                "reply does not follow protocol 1: ModifiedClientRequest.Body: ",
                "is not of type 'string' or 'null'",
            )

    @defer.inlineCallbacks
    def test_post_body_not_string(self) -> Any:
        for body in (42, {"Id": "abc"}, ["a"], False):
            yield self.post_fault(
                answer(post_reply(Code=200, ContentType="application/json", Body=body)),
                "reply does not follow protocol 1: ModifiedServerResponse.Body: ",
                "is not of type 'string' or 'null'",
            )

    @defer.inlineCallbacks
    def test_bad_method(self) -> Any:
        for method in (None, "", "GE T", "GET\r\nX: y", "P0ST", 42, ["POST"]):
            yield self.pre_fault(
                answer(pre_reply(Method=method, Request="/x", Body=None)),
                "reply does not follow protocol 1: ModifiedClientRequest.Method: ",
            )
        yield self.pre_fault(
            answer(pre_reply(Request="/x", Body=None)),
            "reply does not follow protocol 1: ModifiedClientRequest: 'Method' is required",
        )

    @defer.inlineCallbacks
    def test_non_ascii_method(self) -> Any:
        """Methods are ASCII tokens: a letter outside ASCII is no HTTP method."""
        for method in ("ĞET", "PÖST"):
            yield self.pre_fault(
                answer(pre_reply(Method=method, Request="/x", Body=None)),
                "reply does not follow protocol 1: ModifiedClientRequest.Method: ",
                "is not an HTTP method",
            )

    @defer.inlineCallbacks
    def test_bad_request(self) -> Any:
        for uri in (
            None,
            "",
            "v1.41/containers/create",
            "/a b",
            "/a\r\nX-Injected: 1",
            "/a\n",
            7,
            "http://docker/v1.41/info",
        ):
            yield self.pre_fault(
                answer(pre_reply(Method="POST", Request=uri, Body=None)),
                "reply does not follow protocol 1: ModifiedClientRequest.Request: ",
            )
        yield self.pre_fault(
            answer(pre_reply(Method="POST", Body=None)),
            "reply does not follow protocol 1: ModifiedClientRequest: 'Request' is required",
        )

    @defer.inlineCallbacks
    def test_bad_code(self) -> Any:
        for code in (None, "200", 200.0, True, 99, 100, 199, 600, -1):
            yield self.post_fault(
                answer(post_reply(Code=code, ContentType=None, Body=None)),
                "reply does not follow protocol 1: ModifiedServerResponse.Code: ",
            )
        yield self.post_fault(
            answer(post_reply(ContentType=None, Body=None)),
            "reply does not follow protocol 1: ModifiedServerResponse: 'Code' is required",
        )

    @defer.inlineCallbacks
    def test_bad_content_type(self) -> Any:
        for ctype in (5, ["text/plain"], "text/plain\r\nX-Injected: 1"):
            yield self.post_fault(
                answer(post_reply(Code=200, ContentType=ctype, Body=None)),
                "reply does not follow protocol 1: ModifiedServerResponse.ContentType: ",
            )

    @defer.inlineCallbacks
    def test_fault_leaves_flow_unchanged(self) -> Any:
        flow = self.post_flow(self.adapter("bad", answer(post_reply(Code=700, ContentType=None, Body="x"))))
        before = (flow.request, flow.response)
        yield self.assertFailure(self.chain.run_post(flow), AdapterFault)
        self.assertEqual((flow.request, flow.response), before)


# -- streamed requests -----------------------------------------------------------


class StreamedRequestTests(HookTestCase):
    @defer.inlineCallbacks
    def test_non_null_body_is_a_fault(self) -> Any:
        a = self.adapter("a", answer(pre_reply(Method="POST", Request="/v1.41/build", Body="")))
        flow = self.pre_flow(a, request=make_request(body=None, streamed=True))
        fault = yield self.assertFailure(self.chain.run_pre(flow), AdapterFault)
        self.assertFault(fault, a, 502, "ModifiedClientRequest.Body must be null", "streams to Docker unseen")
        self.assertIsNone(flow.request.body)

    @defer.inlineCallbacks
    def test_null_body_stays_none(self) -> Any:
        a = self.adapter("a", answer(pre_reply(Method="put", Request="/v1.41/build?t=x", Body=None)))
        flow = self.pre_flow(a, self.adapter("b", echo_pre), request=make_request(body=None, streamed=True))
        yield self.chain.run_pre(flow)
        req = flow.request
        self.assertEqual((req.method, req.uri, req.body, req.streamed), ("PUT", "/v1.41/build?t=x", None, True))
        self.assertIsNone(self.adapters.calls[1][1]["ClientRequest"]["Body"])

    @defer.inlineCallbacks
    def test_missing_body_key_stays_none(self) -> Any:
        a = self.adapter("a", answer(pre_reply(Method="POST", Request="/v1.41/build")))
        flow = self.pre_flow(a, request=make_request(body=None, streamed=True))
        yield self.chain.run_pre(flow)
        self.assertIsNone(flow.request.body)
        self.assertTrue(flow.request.streamed)


# -- failure: ignore -------------------------------------------------------------


class IgnorePolicyTests(HookTestCase):
    @defer.inlineCallbacks
    def test_fault_is_skipped_and_chain_goes_on(self) -> Any:
        gone = AdapterSpec("gone", f"http://127.0.0.1:{unused_port()}/hook", ignore_faults=True)
        garbage = self.adapter("garbage", lambda request, payload: reply(request, b"not json"))
        garbage = AdapterSpec(garbage.name, garbage.url, ignore_faults=True)
        flow = self.pre_flow(
            self.adapter("a", append_pre("a")),
            gone,
            garbage,
            self.adapter("b", append_pre("b")),
            request=make_request(body=b"x"),
        )
        yield self.chain.run_pre(flow)
        self.assertEqual(flow.request.body, b"xab")
        self.assertEqual([h.outcome for h in flow.hooks], ["ok", "AdapterFault", "AdapterFault", "ok"])

    @defer.inlineCallbacks
    def test_refusal_is_honoured_even_when_faults_are_ignored(self) -> Any:
        refuser = self.adapter("r", answer({"message": "no"}, code=403))
        refuser = AdapterSpec(refuser.name, refuser.url, ignore_faults=True)
        refused = yield self.assertFailure(self.chain.run_pre(self.pre_flow(refuser)), Refused)
        self.assertEqual(refused.response.code, 403)

    @defer.inlineCallbacks
    def test_post_hook_fault_ignored_keeps_response(self) -> Any:
        gone = AdapterSpec("gone", f"http://127.0.0.1:{unused_port()}/hook", ignore_faults=True)
        flow = self.post_flow(gone, response=ServerResponse(201, list(JSON), b'{"Id":"1"}'))
        yield self.chain.run_post(flow)
        self.assertEqual((flow.response.code, flow.response.body), (201, b'{"Id":"1"}'))


# -- where adapters live, and what --verbose shows ------------------------------------------


class UnixSocketAdapterTests(HookTestCase):
    """``http+unix://%2Fpath%2Fto.sock/hook``: an adapter with no network port."""

    @defer.inlineCallbacks
    def test_pre_hook_over_unix_socket(self) -> Any:
        path = os.path.join(tempfile.mkdtemp(prefix="ps-"), "a.sock")  # short: AF_UNIX paths are
        self.addCleanup(shutil.rmtree, os.path.dirname(path))  # limited to 107 bytes
        port = reactor.listenUNIX(path, self.tracker.track_factory(Site(self.adapters)))
        self.addCleanup(port.stopListening)
        self.adapters.handlers["hook"] = echo_pre
        adapter = AdapterSpec("local", f"http+unix://{quote(path, safe='')}/hook", 5.0)
        flow = yield self.chain.run_pre(self.pre_flow(adapter))
        self.assertEqual(self.adapters.called, ["hook"])
        self.assertEqual(flow.request.body, b'{"Image":"busybox"}')

    @defer.inlineCallbacks
    def test_missing_socket_is_a_fault(self) -> Any:
        path = os.path.join(tempfile.mkdtemp(prefix="ps-"), "missing.sock")
        self.addCleanup(shutil.rmtree, os.path.dirname(path))
        adapter = AdapterSpec("local", f"http+unix://{quote(path, safe='')}/hook", 5.0)
        fault = yield self.assertFailure(self.chain.run_pre(self.pre_flow(adapter)), AdapterFault)
        self.assertFault(fault, adapter, 502, "cannot connect")


class VerboseTests(HookTestCase):
    @defer.inlineCallbacks
    def test_payloads_and_replies_are_logged(self) -> Any:
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.chain.verbose = True
        yield self.chain.run_pre(self.pre_flow(self.adapter("hook", echo_pre)))
        lines = [formatEvent(e) for e in events if e.get("log_namespace") == "powerstrip.hooks"]
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("pre-hook hook sent ", lines[0])
        self.assertIn('"ClientRequest"', lines[0])
        self.assertIn('\\"Image\\":\\"busybox\\"', lines[0])
        self.assertIn("pre-hook hook replied ", lines[1])
        self.assertIn('"Method":"POST"', lines[1])

    @defer.inlineCallbacks
    def test_refusals_are_logged_and_quiet_by_default(self) -> Any:
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        def deny(request: Request, payload: dict) -> bytes:
            request.setResponseCode(403)
            return b'{"message": "no"}'

        yield self.assertFailure(self.chain.run_pre(self.pre_flow(self.adapter("deny", deny))), Refused)
        self.assertEqual([e for e in events if e.get("log_namespace") == "powerstrip.hooks"], [])
        self.chain.verbose = True
        yield self.assertFailure(self.chain.run_pre(self.pre_flow(self.adapter("deny", deny))), Refused)
        lines = [formatEvent(e) for e in events if e.get("log_namespace") == "powerstrip.hooks"]
        self.assertIn('pre-hook deny refused 403 "{\\"message\\": \\"no\\"}"', lines[-1])


class ClientTests(HookTestCase):
    """What the adapter client does on every call, beyond carrying the payload."""

    @defer.inlineCallbacks
    def test_an_adapters_cookies_are_not_sent_back(self) -> Any:
        """Hook calls are stateless: a ``Set-Cookie`` in one reply changes nothing the next call sends."""
        cookies: list[bytes | None] = []

        def handler(request: Request, payload: dict) -> bytes:
            cookies.append(request.getHeader(b"cookie"))
            request.setHeader(b"set-cookie", b"session=1; Path=/")
            return echo_pre(request, payload)

        a = self.adapter("sets-cookie", handler)
        for _ in range(2):
            yield self.chain.run_pre(self.pre_flow(a))
        self.assertEqual(cookies, [None, None])
        self.assertEqual(self.adapters.content_types, [b"application/json"] * 2)
        # Every call shares one Headers: nothing under treq may have added to it.
        self.assertEqual(list(hooks_http._JSON.getAllRawHeaders()), [(b"Content-Type", [b"application/json"])])

    def test_the_url_is_made_a_uri_once(self) -> None:
        """treq converts a URL on every call: the client hands it one that is a URI already."""
        url = self.client.url_for("http://bücher.example:8080/hook?x=ä")
        self.assertEqual(url.to_text(), "http://xn--bcher-kva.example:8080/hook?x=%C3%A4")
        self.assertIs(url.to_uri(), url)
        self.assertIs(self.client.url_for("http://bücher.example:8080/hook?x=ä"), url)
        unix = self.client.url_for("http+unix://%2Frun%2Fa.sock/hook")
        self.assertEqual((unix.scheme, unix.path), ("http+unix", ("hook",)))
        self.assertIs(unix.to_uri(), unix)
