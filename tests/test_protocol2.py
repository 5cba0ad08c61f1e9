"""Protocol version 2 on the wire, with the fake dockerd: request ids, callers,
headers, short-circuits, schema-checked replies and unwind calls."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any

from cryptography import x509
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET, Request

from powerstrip.hooks.peer import _peer_credentials
from powerstrip.proxy.exchange import CLIENT_GONE
from powerstrip.sdk.schema import validate
from tests.support import (
    Certificates,
    ProxyTestCase,
    client_creator,
    echo_pre,
    json_request,
    json_response,
    reply,
    request,
)

CREATE = b"/v1.41/containers/create"


def config(pre: str = "", post: str = "", adapters: str = "") -> str:
    rules = f'  "POST /*/containers/create":\n    pre: [{pre}]\n    post: [{post}]\n'
    return f"version: 1\nendpoints:\n{rules}adapters:\n{adapters}"


def v2(name: str, extra: str = "") -> str:
    return f"  {name}: {{url: $BASE/{name}, protocol: 2{extra}}}\n"


def echo2(call: Request, payload: dict) -> bytes:
    """A protocol 2 hook that changes nothing."""
    if payload["Type"] == "pre-hook":
        return reply(call, {"PowerstripProtocolVersion": 2, "ModifiedClientRequest": payload["ClientRequest"]})
    if payload["Type"] == "post-hook":
        return reply(call, {"PowerstripProtocolVersion": 2, "ModifiedServerResponse": payload["ServerResponse"]})
    return reply(call, {})


def refuse(call: Request, payload: dict) -> bytes:
    return reply(call, {"message": "no"}, code=403)


class PayloadTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_request_id_caller_and_headers(self) -> Any:
        self.start(config("a", "a", v2("a")), a=echo2)
        client = yield self.connect()
        _, _, resp = yield self.roundtrip(
            client,
            json_request(b"POST", CREATE, {"Image": "busybox"}).replace(
                b"\r\n\r\n", b"\r\nX-Trace: 1\r\nConnection: keep-alive, X-Hop\r\nX-Hop: no\r\n\r\n", 1
            ),
            json_response(b"201 Created", {"Id": "abc"}),
        )
        pre, post = (payload for _, payload in self.adapters.calls)
        rid = resp.value(b"powerstrip-request-id").decode()
        self.assertEqual((pre["RequestId"], post["RequestId"]), (rid, rid))
        self.assertEqual(pre["PowerstripProtocolVersion"], 2)
        caller = pre["Caller"]
        self.assertEqual((caller["Transport"], caller["Uid"], caller["Certificate"]), ("tcp", None, None))
        self.assertRegex(caller["RemoteAddress"], r"^127\.0\.0\.1:\d+$")
        headers = pre["ClientRequest"]["Headers"]
        self.assertEqual(headers["X-Trace"], ["1"])
        self.assertEqual(headers["Content-Type"], ["application/json"])
        for owned in ("Content-Length", "Connection", "X-Hop"):
            self.assertNotIn(owned, headers)
        self.assertEqual(post["ServerResponse"]["Headers"], {"Content-Type": ["application/json"]})

    @defer.inlineCallbacks
    def test_the_target_as_dockerd_reads_it(self) -> Any:
        # Issue 25: Endpoint, Version and Params, so that no adapter re-implements Go's decoding.
        self.start(config("a", "a", v2("a")), a=echo2)
        client = yield self.connect()
        req, _, _ = yield self.roundtrip(
            client,
            json_request(b"POST", b"/v1.41/containers/%63reate?name=web&force&x=a+b%2B", {"Image": "busybox"}),
            json_response(b"201 Created", {"Id": "abc"}),
        )
        canonical = "/v1.41/containers/create?name=web&force&x=a+b%2B"
        self.assertEqual(req.start, b"POST " + canonical.encode() + b" HTTP/1.1")  # what dockerd got
        for call, schema in zip(
            (payload for _, payload in self.adapters.calls), ("pre-hook", "post-hook"), strict=True
        ):
            shown = call["ClientRequest"]
            self.assertEqual(shown["Request"], canonical)
            self.assertEqual((shown["Version"], shown["Endpoint"]), ("1.41", "/containers/create"))
            self.assertEqual(shown["Params"], {"name": ["web"], "force": [""], "x": ["a b+"]})
            self.assertEqual(validate(call, f"v2/{schema}"), [])

    @defer.inlineCallbacks
    def test_v1_adapters_see_no_v2_fields(self) -> Any:
        self.start(config("one", adapters="  one: $BASE/one\n"), one=echo_pre)
        client = yield self.connect()
        yield self.roundtrip(client, json_request(b"POST", CREATE, {}), json_response(b"201 Created", {}))
        self.assertEqual(set(self.adapters.calls[0][1]), {"PowerstripProtocolVersion", "Type", "ClientRequest"})
        self.assertEqual(set(self.adapters.calls[0][1]["ClientRequest"]), {"Method", "Request", "Body"})


class HeaderTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_pre_hook_replaces_headers(self) -> Any:
        def set_headers(call: Request, payload: dict) -> bytes:
            req = dict(
                payload["ClientRequest"], Headers={"Content-Type": ["application/json"], "X-Tenant": ["blue", "green"]}
            )
            return reply(call, {"PowerstripProtocolVersion": 2, "ModifiedClientRequest": req})

        self.start(config("a", adapters=v2("a")), a=set_headers)
        client = yield self.connect()
        req, _, _ = yield self.roundtrip(
            client,
            json_request(b"POST", CREATE, {"Image": "x"}).replace(b"\r\n\r\n", b"\r\nX-Drop: 1\r\n\r\n", 1),
            json_response(b"201 Created", {}),
        )
        self.assertEqual(req.values(b"x-tenant"), [b"blue", b"green"])
        self.assertEqual(req.values(b"x-drop"), [])
        self.assertEqual(req.values(b"content-length"), [b"%d" % len(req.body)])
        self.assertEqual(req.json(), {"Image": "x"})

    @defer.inlineCallbacks
    def test_post_hook_sets_response_headers(self) -> Any:
        def post(call: Request, payload: dict) -> bytes:
            resp = dict(payload["ServerResponse"], Headers={"X-Audit": ["seen"]}, Code=202)
            return reply(call, {"PowerstripProtocolVersion": 2, "ModifiedServerResponse": resp})

        self.start(config(post="a", adapters=v2("a")), a=post)
        client = yield self.connect()
        _, _, resp = yield self.roundtrip(
            client, json_request(b"POST", CREATE, {}), json_response(b"201 Created", {"Id": "abc"})
        )
        self.assertEqual((resp.code, resp.values(b"x-audit")), (202, [b"seen"]))
        self.assertEqual(resp.values(b"content-type"), [b"application/json"])  # ContentType wins
        self.assertEqual(resp.json(), {"Id": "abc"})

    @defer.inlineCallbacks
    def assertFault(self, headers: Any, message: str) -> Any:
        def bad(call: Request, payload: dict) -> bytes:
            req = dict(payload["ClientRequest"], Headers=headers)
            return reply(call, {"PowerstripProtocolVersion": 2, "ModifiedClientRequest": req})

        self.start(config("a", adapters=v2("a")), a=bad)
        client = yield self.connect()
        client.send(json_request(b"POST", CREATE, {}))
        resp = yield client.response()
        self.assertEqual(resp.code, 502)
        self.assertIn(message, resp.json()["message"])
        self.assertNothingReachedDocker()

    def test_owned_header_is_a_fault(self) -> Any:
        return self.assertFault({"content-length": ["0"]}, "ModifiedClientRequest.Headers")

    def test_header_injection_is_a_fault(self) -> Any:
        return self.assertFault({"X-A": ["1\r\nX-Privileged: 1"]}, "ModifiedClientRequest.Headers")


class ShortCircuitTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_pre_hook_answers_itself(self) -> Any:
        def answer(call: Request, payload: dict) -> bytes:
            return reply(
                call,
                {
                    "PowerstripProtocolVersion": 2,
                    "ServerResponse": {
                        "Code": 201,
                        "ContentType": "application/json",
                        "Body": '{"Id": "cached"}',
                        "Headers": {"X-Served-By": ["cache"]},
                    },
                },
            )

        self.start(config("a, b", "b", v2("a") + v2("b")), a=answer, b=echo2)
        client = yield self.connect()
        client.send(json_request(b"POST", CREATE, {"Image": "x"}))
        resp = yield client.response()
        self.assertEqual((resp.code, resp.json(), resp.values(b"x-served-by")), (201, {"Id": "cached"}, [b"cache"]))
        self.assertEqual([name for name, _ in self.adapters.calls], ["a"])  # the chain stopped there
        self.assertNothingReachedDocker()
        # The connection carries on.
        _, _, resp = yield self.roundtrip(client, request(b"GET", b"/_ping"), json_response(b"200 OK", {}))
        self.assertEqual(resp.code, 200)


class ReplyCheckTests(ProxyTestCase):
    @defer.inlineCallbacks
    def assertFault(self, answer: dict, message: str) -> Any:
        self.start(config("a", adapters=v2("a")), a=lambda call, payload: reply(call, answer))
        client = yield self.connect()
        client.send(json_request(b"POST", CREATE, {}))
        resp = yield client.response()
        self.assertEqual(resp.code, 502)
        self.assertIn(message, resp.json()["message"])
        self.assertNothingReachedDocker()

    def test_version_1_reply_to_version_2_call(self) -> Any:
        return self.assertFault(
            {"PowerstripProtocolVersion": 1, "ModifiedClientRequest": {}},
            "reply has PowerstripProtocolVersion 1, expected 2",
        )

    def test_schema_violation_names_the_field(self) -> Any:
        return self.assertFault(
            {
                "PowerstripProtocolVersion": 2,
                "ModifiedClientRequest": {"Method": "POST", "Request": "/x", "Body": None, "Headers": {"A": "1"}},
            },
            "reply does not follow protocol 2: ModifiedClientRequest.Headers.A",
        )

    def test_a_reply_target_dockerd_reads_otherwise(self) -> Any:
        # A hook's new target is checked as a client's is: the next hook and dockerd read it alike.
        return self.assertFault(
            {"PowerstripProtocolVersion": 2, "ModifiedClientRequest": {"Method": "POST", "Request": "/x?a=1;b"}},
            "ModifiedClientRequest.Request: powerstrip: query parameter 'a=1;b' holds ';'",
        )

    def test_a_reply_target_with_a_parameter_twice(self) -> Any:
        return self.assertFault(
            {
                "PowerstripProtocolVersion": 2,
                "ModifiedClientRequest": {"Method": "POST", "Request": "/containers/create?name=a&name=b"},
            },
            "ModifiedClientRequest.Request: powerstrip: query parameter 'name' given 2 times",
        )

    @defer.inlineCallbacks
    def test_a_reply_target_is_respelled(self) -> Any:
        rewrite = {"Method": "POST", "Request": "/v1.41/containers/%63reate?name=b", "Body": None}
        self.start(
            config("a", adapters=v2("a")),
            a=lambda call, payload: reply(call, {"PowerstripProtocolVersion": 2, "ModifiedClientRequest": rewrite}),
        )
        client = yield self.connect()
        req, _, resp = yield self.roundtrip(
            client, json_request(b"POST", CREATE, {}), json_response(b"201 Created", {})
        )
        self.assertEqual(req.start, b"POST /v1.41/containers/create?name=b HTTP/1.1")
        self.assertEqual(resp.code, 201)


class UnwindTests(ProxyTestCase):
    """``unwind: true`` adapters hear of failures after their pre-hook succeeded."""

    def setUp(self) -> None:
        super().setUp()
        self.unwound: list[tuple[str, dict]] = []

    def recorder(self, name: str) -> Any:
        def handle(call: Request, payload: dict) -> bytes:
            if payload["Type"] == "unwind":
                self.unwound.append((name, payload))
            return echo2(call, payload)

        return handle

    @defer.inlineCallbacks
    def unwinds(self, count: int) -> Any:
        for _ in range(200):
            if len(self.unwound) >= count:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        yield deferLater(reactor, 0.05, lambda: None)  # and no more than that
        return self.unwound

    @defer.inlineCallbacks
    def test_later_refusal_unwinds_in_reverse_order(self) -> Any:
        self.start(
            config(
                "a, b, c, deny",
                adapters=v2("a", ", unwind: true") + v2("b") + v2("c", ", unwind: true") + "  deny: $BASE/deny\n",
            ),
            a=self.recorder("a"),
            b=self.recorder("b"),
            c=self.recorder("c"),
            deny=refuse,
        )
        client = yield self.connect()
        client.send(json_request(b"POST", CREATE, {"Image": "x"}))
        resp = yield client.response()
        self.assertEqual(resp.code, 403)
        unwound = yield self.unwinds(2)
        self.assertEqual([name for name, _ in unwound], ["c", "a"])
        payload = unwound[0][1]
        self.assertEqual(
            (payload["Stage"], payload["Failure"]), ("pre-hook", {"Adapter": "deny", "Code": 403, "Message": "no"})
        )
        self.assertEqual(payload["RequestId"], resp.value(b"powerstrip-request-id").decode())
        self.assertEqual(payload["ServerResponse"]["Code"], 403)
        self.assertNothingReachedDocker()

    @defer.inlineCallbacks
    def test_docker_error_unwinds_with_its_body(self) -> Any:
        self.start(config("a", adapters=v2("a", ", unwind: true")), a=self.recorder("a"))
        client = yield self.connect()
        _, _, resp = yield self.roundtrip(
            client,
            json_request(b"POST", CREATE, {"Image": "x"}),
            json_response(b"409 Conflict", {"message": "name in use"}),
        )
        self.assertEqual(resp.code, 409)
        [(_, payload)] = yield self.unwinds(1)
        self.assertEqual(
            (payload["Stage"], payload["Failure"]), ("docker", {"Adapter": None, "Code": 409, "Message": "name in use"})
        )
        self.assertEqual(json.loads(payload["ServerResponse"]["Body"]), {"message": "name in use"})
        self.assertEqual(json.loads(payload["ClientRequest"]["Body"]), {"Image": "x"})

    @defer.inlineCallbacks
    def test_post_hook_fault_unwinds(self) -> Any:
        self.start(
            config("a", "bad", v2("a", ", unwind: true") + "  bad: $BASE/bad\n"),
            a=self.recorder("a"),
            bad=lambda call, payload: reply(call, b"garbage"),
        )
        client = yield self.connect()
        _, _, resp = yield self.roundtrip(
            client, json_request(b"POST", CREATE, {}), json_response(b"201 Created", {"Id": "abc"})
        )
        self.assertEqual(resp.code, 502)
        [(_, payload)] = yield self.unwinds(1)
        self.assertEqual((payload["Stage"], payload["Failure"]["Adapter"]), ("post-hook", "bad"))

    @defer.inlineCallbacks
    def test_client_gone_during_pre_hooks_unwinds(self) -> Any:
        """The client left while a later pre-hook ran: dockerd never got the request,
        so what the earlier pre-hook set up is released (Stage client, no response)."""
        self.start(
            config("a, slow", adapters=v2("a", ", unwind: true") + "  slow: $BASE/slow\n"),
            a=self.recorder("a"),
            slow=lambda call, payload: NOT_DONE_YET,
        )
        client = yield self.connect()
        client.send(json_request(b"POST", CREATE, {"Image": "x"}))
        while len(self.adapters.calls) < 2:
            yield deferLater(reactor, 0.01, lambda: None)
        client.transport.abortConnection()
        [(_, payload)] = yield self.unwinds(1)
        self.assertEqual(
            (payload["Stage"], payload["Failure"], payload["ServerResponse"]),
            ("client", {"Adapter": None, "Code": None, "Message": CLIENT_GONE}, None),
        )
        self.assertEqual(json.loads(payload["ClientRequest"]["Body"]), {"Image": "x"})
        self.assertEqual(validate(payload, "v2/unwind"), [])
        self.assertNothingReachedDocker()

    @defer.inlineCallbacks
    def test_client_gone_after_docker_got_it_does_not_unwind(self) -> Any:
        """Once dockerd has the request it may carry it out: a client leaving then unwinds nothing."""
        self.start(config("a", adapters=v2("a", ", unwind: true")), a=self.recorder("a"))
        client = yield self.connect()
        client.send(json_request(b"POST", CREATE, {}))
        yield self.dockerd.next_request()
        client.transport.abortConnection()
        self.assertEqual((yield self.unwinds(1)), [])

    @defer.inlineCallbacks
    def test_success_does_not_unwind(self) -> Any:
        self.start(config("a", adapters=v2("a", ", unwind: true")), a=self.recorder("a"))
        client = yield self.connect()
        yield self.roundtrip(client, json_request(b"POST", CREATE, {}), json_response(b"201 Created", {}))
        self.assertEqual((yield self.unwinds(1)), [])

    @defer.inlineCallbacks
    def test_unwind_failure_is_logged_not_shown(self) -> Any:
        def broken(call: Request, payload: dict) -> bytes:
            if payload["Type"] == "unwind":
                self.unwound.append(("a", payload))
                return reply(call, {"message": "cannot release"}, code=500)
            return echo2(call, payload)

        self.start(
            config("a, deny", adapters=v2("a", ", unwind: true") + "  deny: $BASE/deny\n"), a=broken, deny=refuse
        )
        client = yield self.connect()
        client.send(json_request(b"POST", CREATE, {}))
        resp = yield client.response()
        self.assertEqual((resp.code, resp.json()), (403, {"message": "no"}))
        self.assertEqual(len((yield self.unwinds(1))), 1)


class CallerTests(SynchronousTestCase):
    def test_unix_peer_credentials(self) -> None:
        """``SO_PEERCRED`` on a unix socket: this very process."""
        a, b = socket.socketpair(socket.AF_UNIX)
        self.addCleanup(a.close)
        self.addCleanup(b.close)

        class Transport:
            def getHandle(self) -> socket.socket:
                return a

        caller = _peer_credentials(Transport())
        self.assertEqual(
            (caller.transport, caller.uid, caller.gid, caller.pid), ("unix", os.getuid(), os.getgid(), os.getpid())
        )
        self.assertEqual(caller.wire()["Uid"], os.getuid())


class TLSCallerTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_client_certificate(self) -> Any:
        certs = Certificates(Path(self.mktemp()))
        self.start(config("a", adapters=v2("a")), tls=certs.listener(), a=echo2)
        client = yield self.connect(client_creator(certs.client))
        yield self.roundtrip(client, json_request(b"POST", CREATE, {}), json_response(b"201 Created", {}))
        caller = self.adapters.calls[0][1]["Caller"]
        pem = (certs.client / "cert.pem").read_bytes()
        der = x509.load_pem_x509_certificate(pem).public_bytes(
            encoding=__import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.DER
        )
        self.assertEqual((caller["Transport"], caller["User"]), ("tls", "alice"))
        self.assertEqual(
            caller["Certificate"],
            {"Subject": "CN=alice", "CommonName": "alice", "Fingerprint": "sha256:" + hashlib.sha256(der).hexdigest()},
        )
