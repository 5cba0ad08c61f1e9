"""The adapter SDK (:mod:`powerstrip.sdk.adapter`): hook functions, their HTTP
server, and in-process ``python:`` adapters inside the proxy; protocol 1 and 2."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer, reactor
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from powerstrip.config.spec import AdapterSpec, ConfigError, parse_config
from powerstrip.hooks.http import AdapterClient
from powerstrip.sdk import (
    Adapter,
    BadPayload,
    Caller,
    Certificate,
    Refuse,
    Request,
    RequestFailure,
    Response,
    UnreadableTarget,
    load,
)
from powerstrip.sdk.samples import samples
from powerstrip.sdk.schema import validate
from powerstrip.sdk.server import Options, adapter_site
from tests.sdk_adapters import sample
from tests.sdk_adapters import v2 as v2_sample
from tests.support import ProxyTestCase, json_request, json_response, request

CREATE = "/v1.47/containers/create"


def pre(uri: str = CREATE, body: Any = None, method: str = "POST") -> dict:
    """A pre-hook call as Powerstrip sends it."""
    text = body if isinstance(body, str) or body is None else json.dumps(body)
    return {
        "PowerstripProtocolVersion": 1,
        "Type": "pre-hook",
        "ClientRequest": {"Method": method, "Request": uri, "Body": text},
    }


def post(code: int, body: Any, uri: str = CREATE) -> dict:
    """A post-hook call as Powerstrip sends it."""
    text = body if isinstance(body, str) or body is None else json.dumps(body)
    return {
        **pre(uri),
        "Type": "post-hook",
        "ServerResponse": {"Code": code, "ContentType": "application/json", "Body": text},
    }


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
            # Not JSON: the SDK says so (json_error) rather than reading it as "no body".
            self.assertIsNotNone(request.json_error)
            request.uri += "?x=1"
            return request

        _, reply = self.handle(adapter, pre(body="plain text"))
        self.assertEqual(
            reply["ModifiedClientRequest"], {"Method": "POST", "Request": CREATE + "?x=1", "Body": "plain text"}
        )

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
        self.assertEqual(
            reply["ModifiedServerResponse"], {"ContentType": "application/json", "Body": "OK", "Code": 200}
        )

    def test_bad_payloads(self) -> None:
        adapter = Adapter("a")
        for payload in (
            [],
            {"Type": "event"},
            {"Type": "pre-hook"},
            {"Type": "pre-hook", "ClientRequest": {"Method": 1, "Request": "/"}},
            {**pre(), "Type": "post-hook"},
        ):
            self.failureResultOf(adapter.handle(payload), BadPayload)

    def test_bad_rule(self) -> None:
        self.assertRaises(ValueError, Adapter("a").pre_hook, "containers/create")

    def test_describe(self) -> None:
        self.assertEqual(
            sample.adapter.describe(),
            {
                "adapter": "sample",
                "pre-hooks": ["add_env (POST /*/containers/create)"],
                "post-hooks": ["tag_errors (any call)"],
            },
        )


class TargetTests(SynchronousTestCase):
    """Issue 25: what a hook reads of the target is what dockerd reads."""

    def test_endpoint_and_version(self) -> None:
        request = Request("GET", "/v1.41/containers/web/%65xport?x=1")
        self.assertEqual((request.endpoint, request.version), ("/containers/web/export", "1.41"))
        self.assertEqual(request.path, "/v1.41/containers/web/%65xport")  # as given: Powerstrip sends it canonical
        bare = Request("GET", "/containers/a%3Fb/json")
        self.assertEqual((bare.endpoint, bare.version), ("/containers/a?b/json", None))

    def test_parameters_as_go_reads_them(self) -> None:
        request = Request("POST", "/build?t=a&t=b&networkmode=host&q&nocache=0&pull=%20True%20&x=a+b%2B")
        self.assertEqual(request.param("networkmode"), "host")
        self.assertEqual(request.param("t"), "a")  # dockerd's FormValue: the first
        self.assertEqual(request.params("t"), ["a", "b"])
        self.assertEqual(request.params("absent"), [])
        self.assertEqual(request.param("absent", "default"), "default")
        self.assertEqual(request.param("q"), "")  # a name alone has the empty value (parse_qs drops it)
        self.assertEqual(request.param("x"), "a b+")
        self.assertEqual(
            [request.flag(name) for name in ("q", "nocache", "pull", "absent", "networkmode")],
            [False, False, True, False, True],  # httputils.BoolValue
        )
        self.assertEqual(request.query["t"], ["a", "b"])

    def test_a_target_go_reads_otherwise_is_unreadable(self) -> None:
        for uri in ["/build?networkmode=bridge;&networkmode=host", "/build?networkmode=%zz", "/containers/%ff/json"]:
            request = Request("POST", uri)
            with self.assertRaises(UnreadableTarget):
                request.param("networkmode")
                request.endpoint  # noqa: B018 -- the property raises

    def test_an_unreadable_target_in_a_hook_answers_400(self) -> None:
        adapter = Adapter("a")

        @adapter.pre_hook
        def check(request: Request) -> None:
            if request.param("networkmode") == "host":
                raise Refuse(403, "no host network")

        status, reply = self.successResultOf(adapter.handle(pre("/v1.41/build?networkmode=bridge;&networkmode=host")))
        self.assertEqual(status, 400)
        self.assertIn("holds ';'", reply["message"])
        status, _ = self.successResultOf(adapter.handle(pre("/v1.41/build?networkmode=host")))
        self.assertEqual(status, 403)


class LoadTests(SynchronousTestCase):
    def test_module_and_name(self) -> None:
        self.assertIs(load("tests.sdk_adapters.sample:adapter"), sample.adapter)

    def test_module_with_one_adapter(self) -> None:
        self.assertIs(load("tests.sdk_adapters.sample"), sample.adapter)

    def test_errors(self) -> None:
        for spec, message in [
            ("tests.sdk_adapters.two", "holds 2 Adapter objects; name one as tests.sdk_adapters.two:NAME"),
            ("tests.sdk_adapters.sample:calls", "tests.sdk_adapters.sample.calls is not a powerstrip.sdk.Adapter"),
            (
                "tests.sdk_adapters.broken",
                "cannot import 'tests.sdk_adapters.broken': ImportError: this adapter module is broken on purpose",
            ),
            ("no.such.module", "cannot import 'no.such.module': ModuleNotFoundError"),
            ("not a module", "is not 'package.module' or 'package.module:name'"),
        ]:
            with self.assertRaises(ValueError) as caught:
                load(spec)
            self.assertIn(message, str(caught.exception))

    def test_config_python_url(self) -> None:
        cfg = parse_config(
            "version: 1\nendpoints:\n  'POST /*/containers/create': {pre: [s]}\n"
            "adapters:\n  s: python:tests.sdk_adapters.sample:adapter\n"
        )
        self.assertIs(cfg.adapters["s"].in_process, sample.adapter)
        with self.assertRaises(ConfigError) as caught:
            parse_config("version: 1\nendpoints: {}\nadapters:\n  s: python:tests.sdk_adapters.two\n", "f.yml")
        self.assertIn(
            "f.yml: adapter 's': 'python:tests.sdk_adapters.two': module 'tests.sdk_adapters.two' "
            "holds 2 Adapter objects",
            str(caught.exception),
        )

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
        return self.client.post(AdapterSpec("sample", self.url, timeout=5), payload)

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


SAMPLE_CREATE = (
    'version: 1\nendpoints:\n  "POST /*/containers/create":\n    pre: [sample]\n    post: [sample]\n'
    "adapters:\n  sample:\n    url: python:tests.sdk_adapters.sample:adapter\n    timeout: 0.3s\n"
)


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
            client,
            json_request(b"POST", b"/v1.47/containers/create", {"Image": "busybox"}),
            json_response(b"201 Created", {"Id": "abc", "Warnings": []}),
        )
        self.assertEqual(req.json(), {"Image": "busybox", "Env": ["SAMPLE=1"]})
        self.assertEqual((resp.code, resp.json()["Id"]), (201, "abc"))
        self.assertEqual(sample.calls, [("pre", "POST", CREATE), ("post", "POST", CREATE)])

    @defer.inlineCallbacks
    def test_async_post_hook_edits_docker_error(self) -> Any:
        client = yield self.connect()
        _, _, resp = yield self.roundtrip(
            client,
            json_request(b"POST", b"/v1.47/containers/create", {"Image": "nope"}),
            json_response(b"404 Not Found", {"message": "No such image: nope"}),
        )
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
        self.assertIn(
            "adapter 'sample' (python:tests.sdk_adapters.sample:adapter): no answer within 0.3s", resp.json()["message"]
        )
        self.assertNothingReachedDocker()

    @defer.inlineCallbacks
    def test_exception_is_contained(self) -> Any:
        client = yield self.connect()
        client.send(json_request(b"POST", b"/v1.47/containers/create", {"Image": "broken"}))
        resp = yield client.response()
        self.assertEqual(
            (resp.code, resp.json()),
            (500, {"message": "adapter 'sample' failed: RuntimeError: the sample adapter broke"}),
        )
        self.flushLoggedErrors(RuntimeError)
        self.assertNothingReachedDocker()
        # ... and the proxy keeps serving.
        _, _, resp = yield self.roundtrip(client, request(b"GET", b"/_ping"), json_response(b"200 OK", {"ok": True}))
        self.assertEqual(resp.code, 200)


# -- protocol 2 ---------------------------------------------------------------------------

UNIX_CALLER = {
    "Transport": "unix",
    "RemoteAddress": None,
    "Uid": 1000,
    "Gid": 1000,
    "Pid": 4242,
    "User": "alice",
    "Certificate": None,
}
TLS_CALLER = {
    "Transport": "tls",
    "RemoteAddress": "127.0.0.1:34382",
    "Uid": None,
    "Gid": None,
    "Pid": None,
    "User": "alice",
    "Certificate": {"Subject": "CN=alice,O=dev", "CommonName": "alice", "Fingerprint": "sha256:" + "ab" * 32},
}
CLI_HEADERS = {
    "Host": ["api.moby.localhost"],
    "User-Agent": ["Docker-Client/28.2.2 (linux)"],
    "Content-Type": ["application/json"],
}
DOCKER_HEADERS = {"Api-Version": ["1.41"], "Content-Type": ["application/json"], "Ostype": ["linux"]}


def pre2(
    uri: str = CREATE, body: Any = None, method: str = "POST", headers: dict | None = None, caller: dict | None = None
) -> dict:
    """A protocol 2 pre-hook call as Powerstrip sends it."""
    call = pre(uri, body, method)
    call["ClientRequest"]["Headers"] = CLI_HEADERS if headers is None else headers
    return {
        **call,
        "PowerstripProtocolVersion": 2,
        "RequestId": "b599371caac4bebb",
        "Caller": UNIX_CALLER if caller is None else caller,
    }


def post2(code: int, body: Any, uri: str = CREATE, headers: dict | None = None) -> dict:
    """A protocol 2 post-hook call as Powerstrip sends it."""
    text = body if isinstance(body, str) or body is None else json.dumps(body)
    return {
        **pre2(uri),
        "Type": "post-hook",
        "ServerResponse": {
            "Code": code,
            "ContentType": "application/json",
            "Body": text,
            "Headers": DOCKER_HEADERS if headers is None else headers,
        },
    }


def unwind2(stage: str = "docker", failed: str | None = None, code: int = 409) -> dict:
    """A protocol 2 unwind call as Powerstrip sends it."""
    return {
        **post2(code, {"message": "Conflict."}),
        "Type": "unwind",
        "Stage": stage,
        "Failure": {"Adapter": failed, "Code": code, "Message": "Conflict."},
    }


def event2(type_: str = "container", action: str = "die", **attributes: str) -> dict:
    """A protocol 2 event call carrying a Docker event."""
    return {
        "PowerstripProtocolVersion": 2,
        "Type": "event",
        "Event": {
            "Type": type_,
            "Action": action,
            "Actor": {"ID": "f851537ae15e", "Attributes": attributes},
            "scope": "local",
            "time": 1795611632,
            "timeNano": 1795611632424650248,
        },
    }


class V2HandleTests(SynchronousTestCase):
    """:meth:`Adapter.handle` with protocol 2 calls (and protocol 1 ones, where they differ)."""

    def handle(self, adapter: Adapter, payload: dict) -> tuple[int, dict]:
        status, reply = self.successResultOf(adapter.handle(payload))
        if status == 200 and payload["Type"] in ("pre-hook", "post-hook"):
            # Whatever the SDK answers, Powerstrip must accept.
            self.assertEqual(validate(reply, f"v{payload['PowerstripProtocolVersion']}/{payload['Type']}-reply"), [])
        return status, reply

    def test_the_reply_has_the_calls_version(self) -> None:
        adapter = Adapter("a")
        self.assertEqual(self.handle(adapter, pre2())[1]["PowerstripProtocolVersion"], 2)
        self.assertEqual(self.handle(adapter, pre())[1]["PowerstripProtocolVersion"], 1)
        self.assertEqual(self.handle(adapter, post2(201, "{}"))[1]["PowerstripProtocolVersion"], 2)

    def test_headers_are_a_case_insensitive_view(self) -> None:
        adapter = Adapter("a")
        seen: list = []

        @adapter.pre_hook
        def look(request: Request) -> None:
            headers = request.headers
            seen.extend(
                [
                    headers["user-agent"],
                    "CONTENT-TYPE" in headers,
                    "Accept" in headers,
                    headers.first("content-type"),
                    headers.first("Accept", "-"),
                    list(headers),
                    len(headers),
                    headers.get("HOST"),
                ]
            )

        self.handle(adapter, pre2())
        self.assertEqual(
            seen,
            [
                ["Docker-Client/28.2.2 (linux)"],
                True,
                False,
                "application/json",
                "-",
                ["Host", "User-Agent", "Content-Type"],
                3,
                ["api.moby.localhost"],
            ],
        )

    def test_untouched_headers_are_not_sent_back(self) -> None:
        adapter = Adapter("a")

        @adapter.pre_hook
        def read_only(request: Request) -> Request:
            request.headers.get("User-Agent")
            request.uri += "?seen=1"
            return request

        _, reply = self.handle(adapter, pre2(body='{"Image": "busybox"}'))
        self.assertEqual(
            reply["ModifiedClientRequest"],
            {"Method": "POST", "Request": CREATE + "?seen=1", "Body": '{"Image": "busybox"}'},
        )

    def test_edited_headers_are_sent_as_the_complete_set(self) -> None:
        adapter = Adapter("a")

        @adapter.pre_hook
        def edit(request: Request) -> Request:
            request.headers["x-tenant"] = "blue"  # one string is one value
            request.headers.add("X-Tenant", "green")
            request.headers["user-agent"].append("powerstrip")  # the list is live
            request.headers["CONTENT-TYPE"] = ["application/json; charset=utf-8"]  # keeps the name as sent
            del request.headers["host"]
            return request

        _, reply = self.handle(adapter, pre2())
        self.assertEqual(
            reply["ModifiedClientRequest"]["Headers"],
            {
                "User-Agent": ["Docker-Client/28.2.2 (linux)", "powerstrip"],
                "Content-Type": ["application/json; charset=utf-8"],
                "x-tenant": ["blue", "green"],
            },
        )

    def test_an_edit_undone_is_not_sent(self) -> None:
        adapter = Adapter("a")

        @adapter.pre_hook
        def undo(request: Request) -> Request:
            request.headers["X-Temp"] = "1"
            del request.headers["x-temp"]
            return request

        self.assertNotIn("Headers", self.handle(adapter, pre2())[1]["ModifiedClientRequest"])

    def test_powerstrips_own_headers_cannot_be_set(self) -> None:
        headers = Request("GET", "/_ping").headers
        for name in (
            "Content-Length",
            "content-length",
            "Connection",
            "KEEP-ALIVE",
            "TE",
            "Trailer",
            "Trailers",
            "Transfer-Encoding",
            "Upgrade",
            "Proxy-Authorization",
            "proxy-connection",
        ):
            with self.assertRaises(ValueError) as caught:
                headers[name] = "1"
            self.assertIn(f"{name}: hop-by-hop headers and Content-Length are Powerstrip's own", str(caught.exception))
        for name, value, message in [
            ("Bad Name", "1", "'Bad Name' is not a header name"),
            ("X-A", "a\r\nX-B: b", "is not a header value"),
            ("X-A", "\u20ac", "is not a header value"),
            ("X-A", [1], "expected a list of strings"),
        ]:
            with self.assertRaises(ValueError) as caught:
                headers[name] = value
            self.assertIn(message, str(caught.exception))
        self.assertEqual(len(headers), 0)

    def test_a_bad_value_slipped_into_a_list_is_a_500(self) -> None:
        adapter = Adapter("a")
        adapter.pre_hook(lambda r: r.headers["User-Agent"].append("x\ny") or r)
        status, reply = self.handle(adapter, pre2())
        self.assertEqual(status, 500)
        self.assertIn("ValueError: User-Agent: 'x\\ny' is not a header value", reply["message"])
        self.flushLoggedErrors(ValueError)

    def test_request_id_caller_and_protocol(self) -> None:
        adapter = Adapter("a")
        seen: list[Request] = []
        adapter.pre_hook(seen.append)
        self.handle(adapter, pre2())
        self.handle(adapter, pre2(caller=TLS_CALLER))
        self.handle(adapter, pre())
        unix, tls, v1 = seen
        self.assertEqual((unix.request_id, unix.protocol), ("b599371caac4bebb", 2))
        self.assertEqual(unix.caller, Caller("unix", None, 1000, 1000, 4242, "alice", None))
        self.assertEqual(tls.caller.remote_address, "127.0.0.1:34382")
        self.assertEqual(tls.caller.certificate, Certificate("CN=alice,O=dev", "alice", "sha256:" + "ab" * 32))
        self.assertEqual((v1.request_id, v1.caller, dict(v1.headers), v1.protocol), (None, None, {}, 1))

    def test_setting_headers_under_protocol_1_is_a_500(self) -> None:
        adapter = Adapter("a")

        @adapter.pre_hook
        def add(request: Request) -> Request:
            request.headers["X-Tenant"] = "blue"
            return request

        self.assertEqual(
            self.handle(adapter, pre()),
            (500, {"message": "adapter 'a' failed: setting headers needs protocol 2 (this call is protocol 1)"}),
        )

    def test_a_new_request_keeps_headers_id_and_caller(self) -> None:
        adapter = Adapter("a")
        adapter.pre_hook(lambda r: Request(r.method, r.uri + "?x=1", r.body))
        seen: list[Request] = []

        @adapter.pre_hook
        def second(request: Request) -> Request:
            seen.append(request)
            request.headers["X-Second"] = "1"
            return request

        _, reply = self.handle(adapter, pre2())
        [request] = seen
        self.assertEqual((request.request_id, request.caller.user, request.protocol), ("b599371caac4bebb", "alice", 2))
        self.assertEqual(reply["ModifiedClientRequest"]["Headers"], {**CLI_HEADERS, "X-Second": ["1"]})

    def test_a_new_request_with_its_own_headers_sends_them(self) -> None:
        adapter = Adapter("a")
        adapter.pre_hook(lambda r: Request(r.method, r.uri, r.body, headers={"Accept": ["*/*"]}))
        _, reply = self.handle(adapter, pre2())
        self.assertEqual(reply["ModifiedClientRequest"]["Headers"], {"Accept": ["*/*"]})

    def test_short_circuit(self) -> None:
        adapter = Adapter("a")
        later: list = []

        @adapter.pre_hook("POST /*/containers/create")
        def answer(request: Request) -> Response:
            response = Response(200, "application/json", headers={"X-Cache": ["hit"]})
            response.json = {"Id": "cached", "Warnings": []}
            return response

        adapter.pre_hook(later.append)
        status, reply = self.handle(adapter, pre2(body={"Image": "busybox"}))
        self.assertEqual(
            (status, reply),
            (
                200,
                {
                    "PowerstripProtocolVersion": 2,
                    "ServerResponse": {
                        "ContentType": "application/json",
                        "Body": '{"Id": "cached", "Warnings": []}',
                        "Code": 200,
                        "Headers": {"X-Cache": ["hit"]},
                    },
                },
            ),
        )
        self.assertEqual(later, [])  # the chain stopped

    def test_short_circuit_without_headers_sends_none(self) -> None:
        adapter = Adapter("a")
        adapter.pre_hook(lambda r: Response(503, "text/plain", "maintenance"))
        _, reply = self.handle(adapter, pre2())
        self.assertEqual(reply["ServerResponse"], {"ContentType": "text/plain", "Body": "maintenance", "Code": 503})

    def test_short_circuit_under_protocol_1_is_a_500(self) -> None:
        adapter = Adapter("a")

        @adapter.pre_hook
        def answer(request: Request) -> Response:
            return Response(200, "application/json", "{}")

        self.assertEqual(
            self.handle(adapter, pre()),
            (
                500,
                {
                    "message": "adapter 'a' failed: answer returned a Response: short-circuit needs protocol 2 "
                    "(this call is protocol 1)"
                },
            ),
        )

    def test_a_post_hook_cannot_return_a_request(self) -> None:
        adapter = Adapter("a")
        adapter.post_hook(lambda request, response: request)
        status, reply = self.handle(adapter, post2(201, "{}"))
        self.assertEqual(status, 500)
        self.assertIn("<lambda> returned Request, expected Response or None", reply["message"])
        adapter = Adapter("b")
        adapter.pre_hook(lambda request: 5)
        self.assertIn("returned int, expected Request, Response or None", self.handle(adapter, pre2())[1]["message"])
        self.flushLoggedErrors(TypeError)

    def test_post_hook_headers(self) -> None:
        adapter = Adapter("a")
        seen: list = []

        @adapter.post_hook
        def tag(request: Request, response: Response) -> Response:
            seen.append((response.headers.first("api-version"), request.headers.first("user-agent")))
            response.headers["X-Seen"] = "yes"
            return response

        _, reply = self.handle(adapter, post2(201, '{"Id": "abc"}'))
        self.assertEqual(seen, [("1.41", "Docker-Client/28.2.2 (linux)")])
        # ContentType left alone: the edited headers (Content-Type included) say what it is.
        self.assertEqual(
            reply["ModifiedServerResponse"],
            {"Body": '{"Id": "abc"}', "Code": 201, "Headers": {**DOCKER_HEADERS, "X-Seen": ["yes"]}},
        )

    def test_post_hook_content_type_set_wins(self) -> None:
        adapter = Adapter("a")

        @adapter.post_hook
        def retype(request: Request, response: Response) -> Response:
            response.content_type = "text/plain"
            response.headers["X-Seen"] = "yes"
            return response

        _, reply = self.handle(adapter, post2(200, "OK"))
        self.assertEqual(reply["ModifiedServerResponse"]["ContentType"], "text/plain")

    def test_untouched_post_hook_reply_is_as_in_protocol_1(self) -> None:
        adapter = Adapter("a")
        adapter.post_hook(lambda request, response: response)
        _, reply = self.handle(adapter, post2(404, '{"message": "no"}'))
        self.assertEqual(
            reply["ModifiedServerResponse"],
            {"ContentType": "application/json", "Body": '{"message": "no"}', "Code": 404},
        )

    def test_unwind(self) -> None:
        adapter = Adapter("a")
        seen: list = []

        @adapter.unwind("POST /*/containers/create")
        def release(request: Request, failure: RequestFailure) -> str:
            seen.append((request.uri, request.request_id, request.caller.user, failure))
            return "ignored"

        adapter.unwind("POST /*/containers/*/start")(lambda request, failure: seen.append("not this one"))
        self.assertEqual(
            self.handle(adapter, unwind2("pre-hook", "policy", 403)), (200, {"PowerstripProtocolVersion": 2})
        )
        [(uri, request_id, user, failure)] = seen
        self.assertEqual((uri, request_id, user), (CREATE, "b599371caac4bebb", "alice"))
        self.assertEqual(
            (failure.stage, failure.adapter, failure.code, failure.message), ("pre-hook", "policy", 403, "Conflict.")
        )
        self.assertEqual(
            (failure.response.code, failure.response.json, failure.response.headers.first("Ostype")),
            (403, {"message": "Conflict."}, "linux"),
        )

    def test_unwind_failures_are_a_500_and_the_others_still_run(self) -> None:
        adapter = Adapter("a")
        ran: list[str] = []

        @adapter.unwind
        def broken(request: Request, failure: RequestFailure) -> None:
            raise RuntimeError("volume busy")

        adapter.unwind(lambda request, failure: ran.append("second"))
        status, reply = self.handle(adapter, unwind2())
        self.assertEqual((status, ran), (500, ["second"]))
        self.assertEqual(
            reply["message"], f"adapter 'a' failed: unwind of POST {CREATE}: broken: RuntimeError: volume busy"
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_unwind_with_nothing_registered_is_fine(self) -> None:
        self.assertEqual(self.handle(Adapter("a"), unwind2())[0], 200)

    def test_events(self) -> None:
        adapter = Adapter("a")
        seen: list = []
        adapter.event("container die")(lambda e: seen.append(("die", e["Actor"]["Attributes"]["exitCode"])))
        adapter.event("container [sd]*")(lambda e: seen.append(("s/d", e["Action"])))
        adapter.event("network *")(lambda e: seen.append(("network", e["Action"])))
        adapter.event(lambda e: seen.append(("bare", e["Type"])))
        adapter.event()(lambda e: seen.append(("none", e["Type"])))
        self.assertEqual(self.handle(adapter, event2(exitCode="137")), (200, {"PowerstripProtocolVersion": 2}))
        self.assertEqual(seen, [("die", "137"), ("s/d", "die"), ("bare", "container"), ("none", "container")])
        seen.clear()
        self.handle(adapter, event2("network", "connect"))
        self.assertEqual(seen, [("network", "connect"), ("bare", "network"), ("none", "network")])

    def test_an_event_of_old_api_versions(self) -> None:
        adapter = Adapter("a")
        seen: list = []
        adapter.event("container start")(seen.append)
        old = {"status": "start", "id": "abc", "from": "busybox", "time": 1}  # API < 1.22: no Type, no Action
        self.handle(adapter, {"PowerstripProtocolVersion": 2, "Type": "event", "Event": old})
        self.assertEqual(seen, [old])

    def test_a_failed_event_function_is_a_500_so_powerstrip_retries(self) -> None:
        adapter = Adapter("a")
        ran: list = []

        @adapter.event("container *")
        def broken(event: dict) -> None:
            raise KeyError("Labels")

        adapter.event("container die")(ran.append)
        status, reply = self.handle(adapter, event2())
        self.assertEqual((status, len(ran)), (500, 1))
        self.assertEqual(reply["message"], "adapter 'a' failed: event container die: broken: KeyError: 'Labels'")
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_async_and_deferred_event_functions(self) -> None:
        adapter = Adapter("a")
        later: defer.Deferred = defer.Deferred()
        adapter.event("container die")(lambda e: later)

        @adapter.event
        async def failing(event: dict) -> None:
            raise ValueError("async failure")

        d = adapter.handle(event2())
        self.assertNoResult(d)
        later.callback(None)
        self.assertEqual(self.successResultOf(d)[0], 500)
        self.flushLoggedErrors(ValueError)

    def test_bad_event_patterns(self) -> None:
        for pattern in ("container", "container die now", "", 5):
            self.assertRaises(ValueError, Adapter("a").event, pattern)

    def test_describe(self) -> None:
        self.assertEqual(
            v2_sample.adapter.describe(),
            {
                "adapter": "v2",
                "pre-hooks": ["stamp (POST /*/containers/create)", "pause_starts (POST /*/containers/*/start)"],
                "post-hooks": ["tag (any call)"],
                "unwind": ["release (any call)"],
                "events": ["container_event (container *)"],
            },
        )

    def test_bad_v2_payloads(self) -> None:
        adapter = Adapter("a")
        for payload, message in [
            ({**pre2(), "PowerstripProtocolVersion": 3}, "'PowerstripProtocolVersion' must be 1 or 2, not 3"),
            ({**pre2(), "PowerstripProtocolVersion": True}, "must be 1 or 2, not True"),
            ({**pre2(), "Type": "nonsense"}, "'Type' must be 'pre-hook', 'post-hook', 'unwind' or 'event'"),
            ({**unwind2(), "PowerstripProtocolVersion": 1}, "(unwind and event calls are protocol 2)"),
            ({**event2(), "PowerstripProtocolVersion": 1}, "(unwind and event calls are protocol 2)"),
            ({**event2(), "Event": None}, "'Event' must be an object"),
            ({**unwind2(), "Failure": None}, "an unwind call needs a 'Stage' string and a 'Failure' object"),
            ({**pre2(), "Caller": "alice"}, "'Caller' must be null or an object with a 'Transport' string"),
            (pre2(headers={"Accept": "*/*"}), "'ClientRequest.Headers' must be an object of header name -> list"),
            (
                {**post2(200, "OK"), "ServerResponse": {"Code": 200, "Headers": []}},
                "'ServerResponse.Headers' must be an object",
            ),
        ]:
            failure = self.failureResultOf(adapter.handle(payload), BadPayload)
            self.assertIn(message, failure.getErrorMessage())

    def test_a_call_without_headers_or_caller_is_taken(self) -> None:
        adapter = Adapter("a")
        seen: list[Request] = []
        adapter.pre_hook(seen.append)
        call = pre2()
        del call["ClientRequest"]["Headers"], call["RequestId"]
        call["Caller"] = None
        self.assertEqual(self.handle(adapter, call)[0], 200)
        self.assertEqual((dict(seen[0].headers), seen[0].request_id, seen[0].caller), ({}, None, None))

    def test_every_v2_sample_gets_a_valid_answer(self) -> None:
        v2_sample.maintenance["on"] = True
        v2_sample.unwound.clear()
        v2_sample.events.clear()
        kinds = []
        for call in samples(2):
            status, reply = self.handle(v2_sample.adapter, call.payload)
            self.assertEqual(status, 200, (call.name, reply))
            kinds.append(
                next(k for k in ("ModifiedClientRequest", "ServerResponse", "ModifiedServerResponse") if k in reply)
                if call.hook.endswith("hook")
                else call.hook
            )
        self.assertEqual(
            kinds,
            ["ModifiedClientRequest", "ServerResponse", "ModifiedClientRequest"]
            + ["ModifiedServerResponse"] * 5
            + ["unwind"] * 3
            + ["event"] * 3,
        )
        self.assertEqual(
            [u[2:] for u in v2_sample.unwound],
            [("docker", None, 409), ("pre-hook", "policy", 403), ("client", None, None)],
        )
        self.assertEqual(v2_sample.events, [("start", "ps-sample-web"), ("die", "ps-sample-web")])


class V2ServerTests(ProxyTestCase):
    """A protocol 2 adapter over HTTP, called with Powerstrip's own client."""

    def setUp(self) -> None:
        super().setUp()
        self.client = AdapterClient(reactor)
        self.addCleanup(self.client.close)
        self.url = f"http://127.0.0.1:{self.listen(adapter_site(v2_sample.adapter))}/"

    @defer.inlineCallbacks
    def test_event_and_short_circuit(self) -> Any:
        v2_sample.maintenance["on"] = True
        post = self.client.post
        status, ctype, body = yield post(AdapterSpec("v2", self.url, timeout=5), event2())
        self.assertEqual((status, ctype, json.loads(body)), (200, "application/json", {"PowerstripProtocolVersion": 2}))
        status, _, body = yield post(AdapterSpec("v2", self.url, timeout=5), pre2("/v1.41/containers/abc/start"))
        self.assertEqual(json.loads(body)["ServerResponse"]["Code"], 503)


V2_CREATE = (
    'version: 1\nendpoints:\n  "POST /*/containers/create":\n    pre: [v2]\n    post: [v2]\n'
    '  "POST /*/containers/*/start":\n    pre: [v2]\n'
    "adapters:\n  v2:\n    url: python:tests.sdk_adapters.v2:adapter\n    protocol: 2\n"
)


class V2InProcessTests(ProxyTestCase):
    """A protocol 2 ``python:`` adapter inside the proxy: its replies pass Powerstrip's checks."""

    def setUp(self) -> None:
        super().setUp()
        v2_sample.maintenance["on"] = True
        self.start(V2_CREATE)

    @defer.inlineCallbacks
    def test_headers_and_caller_reach_docker(self) -> Any:
        client = yield self.connect()
        req, _, resp = yield self.roundtrip(
            client,
            json_request(b"POST", b"/v1.47/containers/create", {"Image": "busybox"}),
            json_response(b"201 Created", {"Id": "abc", "Warnings": []}),
        )
        self.assertEqual(len(req.values(b"x-powerstrip-request")[0]), 16)  # the request id, in a header
        self.assertIn("powerstrip.user", req.json()["Labels"])
        self.assertEqual((resp.code, resp.value(b"x-powerstrip-adapter")), (201, b"v2"))

    @defer.inlineCallbacks
    def test_short_circuit_never_reaches_docker(self) -> Any:
        client = yield self.connect()
        client.send(request(b"POST", b"/v1.47/containers/abc/start"))
        resp = yield client.response()
        self.assertEqual(
            (resp.code, resp.json(), resp.value(b"retry-after")), (503, {"message": "v2: starts are paused"}, b"60")
        )
        self.assertNothingReachedDocker()
