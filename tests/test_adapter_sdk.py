"""The adapter SDK (:mod:`powerstrip.adapter`): hook functions, their HTTP
server, and in-process ``python:`` adapters inside the proxy."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer, reactor
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from powerstrip.adapter import Adapter, BadPayload, Refuse, Request, Response, load
from powerstrip.adapter_server import Options, adapter_site
from powerstrip.adapters import AdapterClient
from powerstrip.config import Adapter as AdapterConfig
from powerstrip.config import ConfigError, parse_config
from tests.sdk_adapters import sample
from tests.test_proxy import ProxyTestCase, json_request, json_response, request

CREATE = "/v1.47/containers/create"


def pre(uri: str = CREATE, body: Any = None, method: str = "POST") -> dict:
    """A pre-hook call as Powerstrip sends it."""
    text = body if isinstance(body, str) or body is None else json.dumps(body)
    return {"PowerstripProtocolVersion": 1, "Type": "pre-hook",
            "ClientRequest": {"Method": method, "Request": uri, "Body": text}}


def post(code: int, body: Any, uri: str = CREATE) -> dict:
    """A post-hook call as Powerstrip sends it."""
    text = body if isinstance(body, str) or body is None else json.dumps(body)
    return {**pre(uri), "Type": "post-hook",
            "ServerResponse": {"Code": code, "ContentType": "application/json", "Body": text}}


class HandleTests(SynchronousTestCase):
    """:meth:`Adapter.handle`: payload in, ``(status, reply)`` out."""

    def handle(self, adapter: Adapter, payload: dict) -> tuple[int, dict]:
        return self.successResultOf(adapter.handle(payload))

    def test_pre_hook_edits_json(self) -> None:
        adapter = Adapter("a")

        @adapter.pre_hook("POST /*/containers/create")
        def add(request: Request) -> Request:
            request.json["Env"] = ["A=1"]
            return request

        status, reply = self.handle(adapter, pre(body={"Image": "busybox"}))
        self.assertEqual(status, 200)
        self.assertEqual(reply["PowerstripProtocolVersion"], 1)
        self.assertEqual(reply["ModifiedClientRequest"]["Method"], "POST")
        self.assertEqual(json.loads(reply["ModifiedClientRequest"]["Body"]), {"Image": "busybox", "Env": ["A=1"]})

    def test_rule_filters_calls(self) -> None:
        adapter = Adapter("a")
        seen: list[str] = []
        adapter.pre_hook("POST /*/containers/*/start")(lambda r: seen.append(r.uri))
        self.handle(adapter, pre())
        self.handle(adapter, pre("/containers/abc/start"))  # unversioned still matches
        self.handle(adapter, pre("/v1.47/containers/abc/start", method="GET"))
        self.assertEqual(seen, ["/containers/abc/start"])

    def test_none_leaves_the_body_byte_for_byte(self) -> None:
        adapter = Adapter("a")
        adapter.pre_hook(lambda r: None)
        body = '{ "Image" :"busybox",\n"Cmd":null }'
        _, reply = self.handle(adapter, pre(body=body))
        self.assertEqual(reply["ModifiedClientRequest"], {"Method": "POST", "Request": CREATE, "Body": body})

    def test_reading_json_keeps_the_body_byte_for_byte(self) -> None:
        adapter = Adapter("a")
        adapter.pre_hook(lambda r: r if r.json["Image"] else None)
        body = '{"Image":"busybox","Memory":1e3,"Name":"caf\u00e9"}'
        _, reply = self.handle(adapter, pre(body=body))
        self.assertEqual(reply["ModifiedClientRequest"]["Body"], body)

    def test_a_change_that_compares_equal_is_still_sent(self) -> None:
        adapter = Adapter("a")

        @adapter.pre_hook
        def flag(request: Request) -> Request:
            request.json["Tty"] = True  # == 1, but not the same JSON
            return request

        _, reply = self.handle(adapter, pre(body='{"Tty": 1}'))
        self.assertEqual(json.loads(reply["ModifiedClientRequest"]["Body"]), {"Tty": True})

    def test_looking_at_a_non_json_body_keeps_it(self) -> None:
        adapter = Adapter("a")

        @adapter.pre_hook
        def look(request: Request) -> Request:
            self.assertIsNone(request.json)
            request.uri += "?x=1"
            return request

        _, reply = self.handle(adapter, pre(body="plain text"))
        self.assertEqual(reply["ModifiedClientRequest"], {"Method": "POST", "Request": CREATE + "?x=1",
                                                          "Body": "plain text"})

    def test_set_body_replaces_json_view(self) -> None:
        adapter = Adapter("a")

        @adapter.pre_hook
        def replace(request: Request) -> Request:
            request.json["ignored"] = True
            request.set_body('{"Image":"other"}')
            return request

        _, reply = self.handle(adapter, pre(body={"Image": "busybox"}))
        self.assertEqual(reply["ModifiedClientRequest"]["Body"], '{"Image":"other"}')

    def test_hooks_chain_in_registration_order(self) -> None:
        adapter = Adapter("a")
        adapter.pre_hook(lambda r: Request(r.method, r.uri + "?first=1", r.body))

        @adapter.pre_hook
        def second(request: Request) -> Request:
            self.assertEqual(request.query, {"first": ["1"]})
            return Request(request.method, request.uri + "&second=1", request.body)

        _, reply = self.handle(adapter, pre())
        self.assertEqual(reply["ModifiedClientRequest"]["Request"], CREATE + "?first=1&second=1")

    def test_query_and_path(self) -> None:
        request = Request("GET", "/v1.47/containers/json?all=1&filters=%7B%7D")
        self.assertEqual(request.path, "/v1.47/containers/json")
        self.assertEqual(request.query, {"all": ["1"], "filters": ["{}"]})

    def test_refuse(self) -> None:
        adapter = Adapter("a")

        @adapter.pre_hook
        def deny(request: Request) -> None:
            raise Refuse(403, "not here")

        self.assertEqual(self.handle(adapter, pre()), (403, {"message": "not here"}))

    def test_refuse_needs_an_error_status(self) -> None:
        self.assertRaises(ValueError, Refuse, 200, "a 2xx would mean go on")

    def test_exception_is_a_500_naming_it(self) -> None:
        adapter = Adapter("a")

        @adapter.pre_hook
        def broken(request: Request) -> None:
            raise KeyError("HostConfig")

        status, reply = self.handle(adapter, pre())
        self.assertEqual(status, 500)
        self.assertEqual(reply["message"], "adapter 'a' failed: KeyError: 'HostConfig'")
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_wrong_return_type_is_a_500(self) -> None:
        adapter = Adapter("a")
        adapter.pre_hook(lambda r: {"Method": "GET"})
        status, reply = self.handle(adapter, pre())
        self.assertEqual(status, 500)
        self.assertIn("<lambda> returned dict, expected Request or None", reply["message"])
        self.flushLoggedErrors(TypeError)

    def test_deferred_and_async_hooks(self) -> None:
        adapter = Adapter("a")
        later: defer.Deferred = defer.Deferred()
        adapter.pre_hook(lambda r: later)

        @adapter.pre_hook
        async def tag(request: Request) -> Request:
            request.uri += "?async=1"
            return request

        d = adapter.handle(pre())
        self.assertNoResult(d)
        later.callback(None)
        _, reply = self.successResultOf(d)
        self.assertEqual(reply["ModifiedClientRequest"]["Request"], CREATE + "?async=1")

    def test_post_hook_sees_request_and_edits_response(self) -> None:
        adapter = Adapter("a")

        @adapter.post_hook("POST /*/containers/create")
        def tag(request: Request, response: Response) -> Response:
            self.assertEqual(request.uri, CREATE)
            response.json["message"] = "[a] " + response.json["message"]
            response.code = 400
            return response

        status, reply = self.handle(adapter, post(404, {"message": "no such image"}))
        self.assertEqual(status, 200)
        resp = reply["ModifiedServerResponse"]
        self.assertEqual((resp["Code"], resp["ContentType"]), (400, "application/json"))
        self.assertEqual(json.loads(resp["Body"]), {"message": "[a] no such image"})

    def test_no_hooks_echo(self) -> None:
        status, reply = self.handle(Adapter("a"), post(200, "OK"))
        self.assertEqual(reply["ModifiedServerResponse"], {"ContentType": "application/json", "Body": "OK",
                                                           "Code": 200})

    def test_bad_payloads(self) -> None:
        adapter = Adapter("a")
        for payload in ([], {"Type": "event"}, {"Type": "pre-hook"},
                        {"Type": "pre-hook", "ClientRequest": {"Method": 1, "Request": "/"}},
                        {**pre(), "Type": "post-hook"}):
            self.failureResultOf(adapter.handle(payload), BadPayload)

    def test_bad_rule(self) -> None:
        self.assertRaises(ValueError, Adapter("a").pre_hook, "containers/create")

    def test_describe(self) -> None:
        self.assertEqual(sample.adapter.describe(), {
            "adapter": "sample", "pre-hooks": ["add_env (POST /*/containers/create)"],
            "post-hooks": ["tag_errors (any call)"]})


class LoadTests(SynchronousTestCase):
    def test_module_and_name(self) -> None:
        self.assertIs(load("tests.sdk_adapters.sample:adapter"), sample.adapter)

    def test_module_with_one_adapter(self) -> None:
        self.assertIs(load("tests.sdk_adapters.sample"), sample.adapter)

    def test_errors(self) -> None:
        for spec, message in [
            ("tests.sdk_adapters.two", "holds 2 Adapter objects; name one as tests.sdk_adapters.two:NAME"),
            ("tests.sdk_adapters.sample:calls", "tests.sdk_adapters.sample.calls is not a powerstrip.adapter.Adapter"),
            ("tests.sdk_adapters.broken", "cannot import 'tests.sdk_adapters.broken': ImportError: this adapter "
                                          "module is broken on purpose"),
            ("no.such.module", "cannot import 'no.such.module': ModuleNotFoundError"),
            ("not a module", "is not 'package.module' or 'package.module:name'"),
        ]:
            with self.assertRaises(ValueError) as caught:
                load(spec)
            self.assertIn(message, str(caught.exception))

    def test_config_python_url(self) -> None:
        cfg = parse_config("version: 1\nendpoints:\n  'POST /*/containers/create': {pre: [s]}\n"
                           "adapters:\n  s: python:tests.sdk_adapters.sample:adapter\n")
        self.assertIs(cfg.adapters["s"].in_process, sample.adapter)
        with self.assertRaises(ConfigError) as caught:
            parse_config("version: 1\nendpoints: {}\nadapters:\n  s: python:tests.sdk_adapters.two\n", "f.yml")
        self.assertIn("f.yml: adapter 's': 'python:tests.sdk_adapters.two': module 'tests.sdk_adapters.two' "
                      "holds 2 Adapter objects", str(caught.exception))

    def test_plugin_options(self) -> None:
        options = Options()
        options.parseOptions(["--module", "tests.sdk_adapters.sample", "--listen", "tcp:0"])
        self.assertIs(options["adapter"], sample.adapter)
        self.assertRaises(usage.UsageError, Options().parseOptions, [])
        with self.assertRaises(usage.UsageError) as caught:
            Options().parseOptions(["--module", "tests.sdk_adapters.two"])
        self.assertIn("holds 2 Adapter objects", str(caught.exception))


class ServerTests(ProxyTestCase):
    """The adapter's own HTTP server, called the way Powerstrip calls adapters."""

    def setUp(self) -> None:
        super().setUp()
        self.client = AdapterClient(reactor)
        self.addCleanup(self.client.close)
        port = self.listen(adapter_site(sample.adapter))
        self.url = f"http://127.0.0.1:{port}/hook"

    def call(self, payload: Any) -> defer.Deferred:
        return self.client.post(AdapterConfig("sample", self.url, timeout=5), payload)

    @defer.inlineCallbacks
    def test_post_answers_the_protocol(self) -> Any:
        status, ctype, body = yield self.call(pre(body={"Image": "busybox"}))
        self.assertEqual((status, ctype), (200, "application/json"))
        self.assertEqual(json.loads(json.loads(body)["ModifiedClientRequest"]["Body"])["Env"], ["SAMPLE=1"])

    @defer.inlineCallbacks
    def test_refusal_is_a_docker_error(self) -> Any:
        status, _, body = yield self.call(pre(body={"HostConfig": {"Privileged": True}}))
        self.assertEqual(status, 403)
        self.assertEqual(json.loads(body), {"message": "sample: privileged containers are not allowed"})

    @defer.inlineCallbacks
    def test_bad_calls_get_400(self) -> Any:
        status, _, body = yield self.call({"Type": "nonsense"})
        self.assertEqual(status, 400)
        self.assertIn("not a Powerstrip hook call: 'Type' must be", json.loads(body)["message"])
        status, _, body = yield self.call("[")  # the JSON string "[" is not an object
        self.assertEqual(status, 400)

    @defer.inlineCallbacks
    def test_get_describes(self) -> Any:
        from treq import get, json_content

        response = yield get(self.url.replace("/hook", "/"), pool=self.client.pool)
        self.assertEqual((yield json_content(response))["adapter"], "sample")


SAMPLE_CREATE = ('version: 1\nendpoints:\n  "POST /*/containers/create":\n    pre: [sample]\n    post: [sample]\n'
                 "adapters:\n  sample:\n    url: python:tests.sdk_adapters.sample:adapter\n    timeout: 0.3s\n")


class InProcessTests(ProxyTestCase):
    """``python:`` adapters inside the proxy, with a fake dockerd."""

    def setUp(self) -> None:
        super().setUp()
        sample.calls.clear()
        self.start(SAMPLE_CREATE)

    @defer.inlineCallbacks
    def test_rewrites_what_docker_gets(self) -> Any:
        client = yield self.connect()
        req, _, resp = yield self.roundtrip(
            client, json_request(b"POST", b"/v1.47/containers/create", {"Image": "busybox"}),
            json_response(b"201 Created", {"Id": "abc", "Warnings": []}))
        self.assertEqual(req.json(), {"Image": "busybox", "Env": ["SAMPLE=1"]})
        self.assertEqual((resp.code, resp.json()["Id"]), (201, "abc"))
        self.assertEqual(sample.calls, [("pre", "POST", CREATE), ("post", "POST", CREATE)])

    @defer.inlineCallbacks
    def test_async_post_hook_edits_docker_error(self) -> Any:
        client = yield self.connect()
        _, _, resp = yield self.roundtrip(
            client, json_request(b"POST", b"/v1.47/containers/create", {"Image": "nope"}),
            json_response(b"404 Not Found", {"message": "No such image: nope"}))
        self.assertEqual((resp.code, resp.json()), (404, {"message": "[sample] No such image: nope"}))

    @defer.inlineCallbacks
    def test_refusal_never_reaches_docker(self) -> Any:
        client = yield self.connect()
        client.send(json_request(b"POST", b"/v1.47/containers/create", {"HostConfig": {"Privileged": True}}))
        resp = yield client.response()
        self.assertEqual((resp.code, resp.json()), (403, {"message": "sample: privileged containers are not allowed"}))
        self.assertNothingReachedDocker()

    @defer.inlineCallbacks
    def test_slow_hook_times_out(self) -> Any:
        client = yield self.connect()
        client.send(json_request(b"POST", b"/v1.47/containers/create", {"Image": "slow"}))
        resp = yield client.response()
        self.assertEqual(resp.code, 504)
        self.assertIn("adapter 'sample' (python:tests.sdk_adapters.sample:adapter): no answer within 0.3s",
                      resp.json()["message"])
        self.assertNothingReachedDocker()

    @defer.inlineCallbacks
    def test_exception_is_contained(self) -> Any:
        client = yield self.connect()
        client.send(json_request(b"POST", b"/v1.47/containers/create", {"Image": "broken"}))
        resp = yield client.response()
        self.assertEqual((resp.code, resp.json()),
                         (500, {"message": "adapter 'sample' failed: RuntimeError: the sample adapter broke"}))
        self.flushLoggedErrors(RuntimeError)
        self.assertNothingReachedDocker()
        # ... and the proxy keeps serving.
        _, _, resp = yield self.roundtrip(client, request(b"GET", b"/_ping"),
                                          json_response(b"200 OK", {"ok": True}))
        self.assertEqual(resp.code, 200)
