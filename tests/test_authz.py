"""``type: authz`` adapters (:mod:`powerstrip.hooks.authz`) on the wire.

The fake dockerd and raw client of :mod:`tests.support`, and a fake
Docker AuthZ plugin (a twisted.web resource answering
``/AuthZPlugin.AuthZReq`` and ``/AuthZPlugin.AuthZRes``). The bypass tests
send a privileged create every way its body could slip past the plugin
(chunked, untyped, a zero length followed by the body, ...) and check that
dockerd never receives it.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from twisted.internet import defer, endpoints, reactor, ssl
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from powerstrip.config.spec import AdapterSpec, ConfigError, parse_config
from powerstrip.hooks.authz import identity, is_archive_upload, must_buffer
from powerstrip.hooks.peer import Peer
from powerstrip.proxy.front import FrontFactory
from powerstrip.proxy.route import Limits
from tests.support import (
    LAST_CHUNK,
    Certificates,
    ProxyTestCase,
    RawClient,
    chunk,
    client_creator,
    json_request,
    json_response,
    reply,
    request,
    response,
    unused_port,
)

REQ, RES = "/AuthZPlugin.AuthZReq", "/AuthZPlugin.AuthZRes"
CREATE = b"/v1.41/containers/create"
PRIVILEGED = {"Image": "busybox", "HostConfig": {"Privileged": True}}
PLAIN = {"Image": "busybox", "HostConfig": {"Privileged": False}}
DENIED = "authorization denied by plugin authz: privileged containers are not allowed"
CREATED = json_response(b"201 Created", {"Id": "abc", "Warnings": []})


def shown(obj: Any) -> bytes:
    """A JSON body as hooks are shown it and dockerd gets it: read as Go reads it, re-encoded compactly."""
    return json.dumps(obj, separators=(",", ":")).encode()


Decide = Callable[[str, dict], Any]


def body_of(payload: dict) -> bytes | None:
    """The request body a plugin call showed, decoded (None when it had none)."""
    body = payload.get("RequestBody")
    return None if body is None else base64.b64decode(body)


def deny_privileged(path: str, payload: dict) -> Any:
    """A plugin that denies any request whose body asks for a privileged container."""
    body = body_of(payload)
    if body and (json.loads(body).get("HostConfig") or {}).get("Privileged"):
        return {"Allow": False, "Msg": "privileged containers are not allowed"}
    return {"Allow": True}


class FakePlugin(Resource):
    """A Docker AuthZ plugin: records every call; ``decide(path, payload)`` answers
    (an object sent as JSON with 200, or ``(status, bytes)``, or NOT_DONE_YET: never)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, dict]] = []
        self.decide: Decide = deny_privileged

    def render_POST(self, request: Request) -> Any:
        path = request.path.decode()
        payload = json.loads(request.content.read())
        self.calls.append((path, payload))
        answer = self.decide(path, payload)
        if answer is NOT_DONE_YET:
            return answer
        if isinstance(answer, tuple):
            return reply(request, answer[1], code=answer[0])
        return reply(request, answer)

    @property
    def payloads(self) -> list[dict]:
        return [payload for _, payload in self.calls]


def authz_config(url: str, pre: str = "[authz]", post: str | None = None, extra: str = "", rule: str = "* *") -> str:
    """adapters.yml with an authz adapter ``authz`` at ``url`` on every call (``$BASE`` adapters too)."""
    hooks = f"    pre: {pre}\n" + (f"    post: {post}\n" if post else "")
    return f'version: 1\nendpoints:\n  "{rule}":\n{hooks}adapters:\n  authz:\n    url: {url}\n    type: authz\n{extra}'


class AuthzTestCase(ProxyTestCase):
    """Powerstrip with an authz adapter in front of the fake dockerd."""

    def setUp(self) -> None:
        super().setUp()
        self.plugin = FakePlugin()
        self.plugin_url = f"http://127.0.0.1:{self.listen(Site(self.plugin))}"

    def start_authz(self, decide: Decide = deny_privileged, **kw: Any) -> Any:
        self.plugin.decide = decide
        config = kw.pop("config", None) or authz_config(self.plugin_url)
        return self.start(config, **kw)

    @defer.inlineCallbacks
    def denied(self, data: bytes, code: int = 403, prefix: str = DENIED) -> Any:
        """Send ``data``; the client gets a Docker-style ``code`` error and dockerd nothing."""
        client = yield self.connect()
        client.send(data)
        resp = yield client.response()
        message = self.assertDockerError(resp, code, prefix)
        self.assertNothingReachedDocker()
        return message


# -- what the plugin is shown, and its verdicts --------------------------------------------


class VerdictTests(AuthzTestCase):
    @defer.inlineCallbacks
    def test_allowed_request_reaches_docker_as_shown(self) -> Any:
        self.start_authz()
        client = yield self.connect()
        data = json_request(b"POST", CREATE + b"?name=web", PLAIN)
        req, _, resp = yield self.roundtrip(client, data, CREATED)
        self.assertEqual(resp.code, 201)
        [(path, payload)] = self.plugin.calls
        self.assertEqual(path, REQ)
        self.assertEqual(payload["RequestMethod"], "POST")
        self.assertEqual(payload["RequestUri"], "/v1.41/containers/create?name=web")
        self.assertEqual(body_of(payload), req.body)
        self.assertEqual(req.json(), PLAIN)
        self.assertEqual((payload["User"], payload["UserAuthNMethod"]), ("", ""))  # plain TCP: nobody
        self.assertNotIn("RequestPeerCertificates", payload)

    @defer.inlineCallbacks
    def test_denied_request_is_403_with_dockerds_wording(self) -> Any:
        self.start_authz()
        yield self.denied(json_request(b"POST", CREATE, PRIVILEGED))
        self.assertEqual(len(self.plugin.calls), 1)

    @defer.inlineCallbacks
    def test_request_without_body_has_no_request_body(self) -> Any:
        self.start_authz()
        client = yield self.connect()
        yield self.roundtrip(client, request(b"GET", b"/v1.41/containers/json?all=1"), json_response(b"200 OK", []))
        [payload] = self.plugin.payloads
        self.assertNotIn("RequestBody", payload)
        self.assertEqual(payload["RequestMethod"], "GET")

    @defer.inlineCallbacks
    def test_request_headers_one_value_each_without_credentials(self) -> Any:
        self.start_authz()
        client = yield self.connect()
        body = json.dumps(PLAIN).encode()
        data = request(
            b"POST",
            CREATE,
            (b"content-type", b"application/json"),
            (b"User-Agent", b"Docker-Client/28"),
            (b"X-Thing", b"a"),
            (b"X-Thing", b"b"),
            (b"X-Registry-Auth", b"secret"),
            (b"Authorization", b"Basic c2VjcmV0"),
            (b"Connection", b"keep-alive"),
            (b"Content-Length", b"%d" % len(body)),
            body=body,
        )
        yield self.roundtrip(client, data, CREATED)
        [payload] = self.plugin.payloads
        self.assertEqual(
            payload["RequestHeaders"],
            {
                "Content-Type": "application/json",
                "User-Agent": "Docker-Client/28",
                "X-Thing": "b",
                "Content-Length": str(len(shown(PLAIN))),
            },
        )

    @defer.inlineCallbacks
    def test_docker_login_credentials_are_not_shown(self) -> Any:
        """As in dockerd, ``/auth``'s body (registry credentials) is not shown; dockerd still gets it."""
        self.start_authz()
        client = yield self.connect()
        creds = {"username": "u", "password": "p", "serveraddress": "r"}
        req, _, _ = yield self.roundtrip(
            client,
            json_request(b"POST", b"/v1.41/auth", creds),
            json_response(b"200 OK", {"Status": "Login Succeeded"}),
        )
        self.assertNotIn("RequestBody", self.plugin.payloads[0])
        self.assertEqual(req.json(), creds)

    @defer.inlineCallbacks
    def test_denials_are_logged_and_verbose_shows_the_calls(self) -> Any:
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.start_authz(verbose=True)
        yield self.denied(json_request(b"POST", CREATE, PRIVILEGED))
        lines = [formatEvent(e) for e in events if e.get("log_namespace") == "powerstrip.authz"]
        self.assertEqual(len(lines), 3, lines)
        self.assertIn("pre-hook authz sent ", lines[0])
        self.assertIn('"RequestUri":"/v1.41/containers/create"', lines[0])
        self.assertIn("pre-hook authz answered 200 ", lines[1])
        self.assertIn(DENIED, lines[2])
        access = [formatEvent(e) for e in events if "pre-hook:authz=" in formatEvent(e)]
        self.assertIn("-> 403 ", access[0])
        self.assertIn("(denied)", access[0])

    @defer.inlineCallbacks
    def test_err_is_a_500_and_nothing_is_forwarded(self) -> Any:
        self.start_authz(lambda path, payload: {"Allow": True, "Err": "policy store unreachable"})
        yield self.denied(
            json_request(b"POST", CREATE, PLAIN),
            500,
            "plugin authz failed with error: AuthZPlugin.AuthZReq: policy store unreachable",
        )

    @defer.inlineCallbacks
    def test_non_2xx_answer_is_an_error_with_its_err(self) -> Any:
        self.start_authz(lambda path, payload: (500, {"Allow": False, "Err": "boom"}))
        yield self.denied(
            json_request(b"POST", CREATE, PLAIN), 500, "plugin authz failed with error: AuthZPlugin.AuthZReq: boom"
        )

    @defer.inlineCallbacks
    def test_non_2xx_answer_without_err_shows_its_text(self) -> Any:
        self.start_authz(lambda path, payload: (404, b"404 page not found\n"))
        yield self.denied(
            json_request(b"POST", CREATE, PLAIN),
            500,
            "plugin authz failed with error: AuthZPlugin.AuthZReq: 404 page not found",
        )

    @defer.inlineCallbacks
    def test_garbage_answers_are_errors(self) -> Any:
        for answer in [(200, b"yes"), (200, b"[true]"), {"Allow": "true"}, {"Allow": True, "Msg": 3}]:
            self.start_authz(lambda path, payload, a=answer: a)
            message = yield self.denied(
                json_request(b"POST", CREATE, PLAIN),
                500,
                "plugin authz failed with error: AuthZPlugin.AuthZReq: answer is not ",
            )
            self.assertNotIn("powerstrip: adapter", message)

    @defer.inlineCallbacks
    def test_missing_allow_denies(self) -> Any:
        """Go decodes a missing ``Allow`` as false: dockerd denies, and so does Powerstrip."""
        self.start_authz(lambda path, payload: {"Msg": "say yes"})
        yield self.denied(json_request(b"POST", CREATE, PLAIN), 403, "authorization denied by plugin authz: say yes")

    @defer.inlineCallbacks
    def test_answer_names_are_case_insensitive_like_gos_decoder(self) -> Any:
        self.start_authz(lambda path, payload: {"allow": True})
        client = yield self.connect()
        _, _, resp = yield self.roundtrip(client, json_request(b"POST", CREATE, PLAIN), CREATED)
        self.assertEqual(resp.code, 201)

    @defer.inlineCallbacks
    def test_plugin_down_is_an_error(self) -> Any:
        self.start_authz(config=authz_config(f"http://127.0.0.1:{unused_port()}"))
        message = yield self.denied(
            json_request(b"POST", CREATE, PLAIN),
            500,
            "plugin authz failed with error: AuthZPlugin.AuthZReq: cannot connect",
        )
        self.assertNotIn("powerstrip: adapter", message)

    def test_failure_ignore_is_refused_at_load(self) -> None:
        """An authz adapter fails closed: ``failure: ignore`` (fail open) is a configuration error."""
        with self.assertRaises(ConfigError) as caught:
            parse_config(authz_config(f"http://127.0.0.1:{unused_port()}") + "    failure: ignore\n")
        self.assertIn("fails closed", str(caught.exception))

    @defer.inlineCallbacks
    def test_slow_plugin_is_an_error(self) -> Any:
        self.start_authz(
            lambda path, payload: NOT_DONE_YET, config=authz_config(self.plugin_url) + "    timeout: 200ms\n"
        )
        yield self.denied(
            json_request(b"POST", CREATE, PLAIN),
            500,
            "plugin authz failed with error: AuthZPlugin.AuthZReq: no answer within 0.2s",
        )

    @defer.inlineCallbacks
    def test_plugin_on_a_unix_socket(self) -> Any:
        path = os.path.join(tempfile.mkdtemp(prefix="ps-"), "authz.sock")
        self.addCleanup(shutil.rmtree, os.path.dirname(path))
        port = reactor.listenUNIX(path, self.tracker.track_factory(Site(self.plugin)))
        self.addCleanup(port.stopListening)  # before the directory goes (clean-ups run last first)
        self.start_authz(config=authz_config(f"http+unix://{quote(path, safe='')}/plugin"))
        yield self.denied(json_request(b"POST", CREATE, PRIVILEGED))
        self.assertEqual([p for p, _ in self.plugin.calls], ["/plugin" + REQ])

    @defer.inlineCallbacks
    def test_response_denial_replaces_dockers_answer(self) -> Any:
        def decide(path: str, payload: dict) -> dict:
            if path == RES:
                return {"Allow": False, "Msg": "you may not see that"}
            return {"Allow": True}

        self.start_authz(decide, config=authz_config(self.plugin_url, pre="[]", post="[authz]"))
        client = yield self.connect()
        data = json_request(b"POST", CREATE, PLAIN)
        client.send(data)
        conn, req = yield self.dockerd.next_request()
        conn.send(CREATED)
        resp = yield client.response()
        self.assertDockerError(resp, 403, "authorization denied by plugin authz: you may not see that")
        [(path, payload)] = self.plugin.calls
        self.assertEqual(path, RES)
        self.assertEqual(body_of(payload), req.body)
        self.assertEqual(payload["ResponseStatusCode"], 201)
        self.assertEqual(json.loads(base64.b64decode(payload["ResponseBody"])), {"Id": "abc", "Warnings": []})
        self.assertEqual(payload["ResponseHeaders"], {"Content-Type": "application/json"})

    @defer.inlineCallbacks
    def test_response_allowed_passes_untouched(self) -> Any:
        self.start_authz(lambda path, payload: {"Allow": True}, config=authz_config(self.plugin_url, post="[authz]"))
        client = yield self.connect()
        _, _, resp = yield self.roundtrip(client, json_request(b"POST", CREATE, PLAIN), CREATED)
        self.assertEqual(resp.json(), {"Id": "abc", "Warnings": []})
        self.assertEqual([p for p, _ in self.plugin.calls], [REQ, RES])


# -- chaining with Powerstrip adapters ---------------------------------------------------------


def make_privileged(call: Request, payload: dict) -> bytes:
    """A (version 1) pre-hook that turns on ``HostConfig.Privileged``."""
    req = dict(payload["ClientRequest"])
    spec = json.loads(req["Body"])
    spec.setdefault("HostConfig", {})["Privileged"] = True
    req["Body"] = json.dumps(spec)
    return reply(call, {"PowerstripProtocolVersion": 1, "ModifiedClientRequest": req})


class ChainTests(AuthzTestCase):
    def chain(self, pre: str, **handlers: Any) -> None:
        extra = "".join(f"  {name}: $BASE/{name}\n" for name in handlers)
        self.start_authz(config=authz_config(self.plugin_url, pre=pre, extra=extra), **handlers)

    @defer.inlineCallbacks
    def test_authz_judges_what_an_earlier_pre_hook_made(self) -> Any:
        self.chain("[mutate, authz]", mutate=make_privileged)
        yield self.denied(json_request(b"POST", CREATE, PLAIN))
        self.assertEqual(json.loads(body_of(self.plugin.payloads[0])), PRIVILEGED)

    @defer.inlineCallbacks
    def test_a_pre_hook_after_authz_still_changes_the_request(self) -> Any:
        """Why authz adapters go last in ``pre:`` (the README says so)."""
        self.chain("[authz, mutate]", mutate=make_privileged)
        client = yield self.connect()
        req, _, _ = yield self.roundtrip(client, json_request(b"POST", CREATE, PLAIN), CREATED)
        self.assertEqual(json.loads(body_of(self.plugin.payloads[0])), PLAIN)
        self.assertEqual(req.json(), PRIVILEGED)

    @defer.inlineCallbacks
    def test_archive_rewritten_into_another_call_is_refused(self) -> Any:
        """A streamed (unseen) body must not reach a call that is not an archive upload."""

        def to_create(call: Request, payload: dict) -> bytes:
            req = {**payload["ClientRequest"], "Method": "POST", "Request": "/v1.41/containers/create"}
            return reply(call, {"PowerstripProtocolVersion": 1, "ModifiedClientRequest": req})

        self.chain("[rewrite, authz]", rewrite=to_create)
        body = json.dumps(PRIVILEGED).encode()
        yield self.denied(
            request(
                b"PUT",
                b"/v1.41/containers/abc/archive?path=/",
                (b"Content-Type", b"application/x-tar"),
                (b"Content-Length", b"%d" % len(body)),
                body=body,
            ),
            403,
            "powerstrip: authz adapter 'authz' cannot judge POST /v1.41/containers/create",
        )
        self.assertEqual(self.plugin.calls, [])


# -- the bypass class of CVE-2024-41110: bodies dockerd reads must be shown --------------------


class BypassTests(AuthzTestCase):
    def assertNoPrivilegedCreate(self) -> None:
        self.assertNotIn(b"Privileged", self.dockerd.received)

    @defer.inlineCallbacks
    def test_chunked_body_is_shown_and_denied(self) -> Any:
        self.start_authz()
        body = json.dumps(PRIVILEGED).encode()
        yield self.denied(
            request(
                b"POST",
                CREATE,
                (b"Content-Type", b"application/json"),
                (b"Transfer-Encoding", b"chunked"),
                body=chunk(body[:10]) + chunk(body[10:]) + LAST_CHUNK,
            )
        )
        self.assertEqual(body_of(self.plugin.payloads[0]), shown(PRIVILEGED))

    @defer.inlineCallbacks
    def test_chunked_body_allowed_goes_to_docker_as_shown(self) -> Any:
        self.start_authz()
        body = json.dumps(PLAIN).encode()
        client = yield self.connect()
        req, _, _ = yield self.roundtrip(
            client,
            request(
                b"POST", CREATE, (b"Transfer-Encoding", b"chunked"), body=chunk(body[:7]) + chunk(body[7:]) + LAST_CHUNK
            ),
            CREATED,
        )
        self.assertEqual(body_of(self.plugin.payloads[0]), shown(PLAIN))
        self.assertEqual(req.body, shown(PLAIN))
        self.assertEqual(req.values(b"content-length"), [b"%d" % len(shown(PLAIN))])
        self.assertFalse(req.chunked)

    @defer.inlineCallbacks
    def test_untyped_body_is_shown_and_denied(self) -> Any:
        """dockerd decodes some bodies sent without a ``Content-Type``."""
        self.start_authz()
        body = json.dumps(PRIVILEGED).encode()
        yield self.denied(request(b"POST", CREATE, (b"Content-Length", b"%d" % len(body)), body=body))
        self.assertEqual(body_of(self.plugin.payloads[0]), shown(PRIVILEGED))

    @defer.inlineCallbacks
    def test_untyped_chunked_body_is_shown_and_denied(self) -> Any:
        self.start_authz()
        body = json.dumps(PRIVILEGED).encode()
        yield self.denied(request(b"POST", CREATE, (b"Transfer-Encoding", b"chunked"), body=chunk(body) + LAST_CHUNK))
        self.assertEqual(body_of(self.plugin.payloads[0]), shown(PRIVILEGED))

    @defer.inlineCallbacks
    def test_body_of_another_type_is_shown_and_denied(self) -> Any:
        """dockerd 20.10 decodes swarm bodies (services, secrets, ...) whatever their ``Content-Type``:
        a JSON route's body of another type is refused (hookbody), never shown as something else."""
        self.start_authz()
        body = json.dumps(PRIVILEGED).encode()
        for ctype in (b"text/plain", b"application/x-tar", b"application/octet-stream"):
            yield self.denied(
                request(b"POST", CREATE, (b"Content-Type", ctype), (b"Content-Length", b"%d" % len(body)), body=body),
                400,
                "powerstrip: a JSON body must be sent as Content-Type",
            )
        self.assertEqual(self.plugin.calls, [])  # refused before anyone could be shown less than dockerd reads

    @defer.inlineCallbacks
    def test_zero_length_then_body_never_reaches_docker_unseen(self) -> Any:
        """``Content-Length: 0`` ends the request; the bytes after it are the next
        request line (here not HTTP: 400 and the connection closes)."""
        self.start_authz()
        client = yield self.connect()
        client.send(
            request(
                b"POST",
                CREATE,
                (b"Content-Type", b"application/json"),
                (b"Content-Length", b"0"),
                body=json.dumps(PRIVILEGED).encode() + b"\r\n\r\n",
            )
        )
        conn, req = yield self.dockerd.next_request()
        self.assertEqual((req.body, req.values(b"content-length")), (b"", [b"0"]))
        conn.send(json_response(b"400 Bad Request", {"message": "config cannot be empty"}))
        first = yield client.response()
        self.assertEqual(first.code, 400)
        self.assertEqual(first.json(), {"message": "config cannot be empty"})
        second = yield client.response()
        self.assertDockerError(second, 400, "powerstrip: malformed request line")
        yield client.wait_eof()
        self.assertNotIn("RequestBody", self.plugin.payloads[0])
        self.assertEqual(len(self.plugin.calls), 1)
        self.assertNoPrivilegedCreate()

    @defer.inlineCallbacks
    def test_zero_length_then_a_smuggled_request_is_judged_on_its_own(self) -> Any:
        self.start_authz()
        client = yield self.connect()
        client.send(
            request(
                b"POST",
                CREATE,
                (b"Content-Type", b"application/json"),
                (b"Content-Length", b"0"),
                body=json_request(b"POST", CREATE, PRIVILEGED),
            )
        )
        conn, req = yield self.dockerd.next_request()
        self.assertEqual(req.body, b"")
        conn.send(json_response(b"400 Bad Request", {"message": "config cannot be empty"}))
        first = yield client.response()
        self.assertEqual(first.code, 400)
        second = yield client.response()
        self.assertDockerError(second, 403, DENIED)
        self.assertEqual([body_of(p) for p in self.plugin.payloads], [None, shown(PRIVILEGED)])
        self.assertNoPrivilegedCreate()

    @defer.inlineCallbacks
    def test_ambiguous_framing_is_refused_before_anyone_sees_it(self) -> Any:
        self.start_authz()
        body = json.dumps(PRIVILEGED).encode()
        yield self.denied(
            request(
                b"POST",
                CREATE,
                (b"Content-Length", b"0"),
                (b"Transfer-Encoding", b"chunked"),
                body=chunk(body) + LAST_CHUNK,
            ),
            400,
            "powerstrip: both Content-Length and Transfer-Encoding",
        )
        yield self.denied(
            request(b"POST", CREATE, (b"Content-Length", b"%d" % len(body)), (b"Content-Length", b"0"), body=body),
            400,
            "powerstrip: more than one Content-Length",
        )
        yield self.denied(
            request(b"POST", CREATE, (b"Transfer-Encoding", b"gzip, chunked"), body=chunk(body) + LAST_CHUNK),
            400,
            "powerstrip: unsupported Transfer-Encoding",
        )
        self.assertEqual(self.plugin.calls, [])

    @defer.inlineCallbacks
    def test_chunked_then_identity_never_reaches_docker_unseen(self) -> Any:
        """Two Transfer-Encoding headers are two readings of one body: refused, nothing forwarded."""
        self.start_authz()
        body = json.dumps(PRIVILEGED).encode()
        yield self.denied(
            request(
                b"POST",
                CREATE,
                (b"Content-Type", b"application/json"),
                (b"Transfer-Encoding", b"chunked"),
                (b"Transfer-Encoding", b"identity"),
                body=chunk(body) + LAST_CHUNK,
            ),
            400,
            "powerstrip: more than one Transfer-Encoding",
        )
        self.assertEqual(self.plugin.calls, [])
        self.assertNoPrivilegedCreate()

    @defer.inlineCallbacks
    def test_body_over_the_limit_is_413_and_never_forwarded(self) -> Any:
        self.start_authz(limits=Limits(max_json_body=100))
        spec = {**PRIVILEGED, "Cmd": ["x"] * 100}
        body = json.dumps(spec).encode()
        yield self.denied(
            request(b"POST", CREATE, (b"Transfer-Encoding", b"chunked"), body=chunk(body) + LAST_CHUNK),
            413,
            "powerstrip: request body larger than 100",
        )
        yield self.denied(json_request(b"POST", CREATE, spec), 413, "powerstrip: request body larger than 100")
        self.assertEqual(self.plugin.calls, [])

    @defer.inlineCallbacks
    def test_archive_uploads_stream_unseen(self) -> Any:
        """``docker cp`` into a container: a tar larger than --max-json-body streams, with no RequestBody."""
        self.start_authz(limits=Limits(max_json_body=100))
        tar = bytes(range(256)) * 64
        for headers in [((b"Content-Type", b"application/x-tar"),), ()]:  # docker-py sends no type
            client = yield self.connect()
            req, _, resp = yield self.roundtrip(
                client,
                request(
                    b"PUT",
                    b"/v1.41/containers/abc/archive?path=/tmp",
                    *headers,
                    (b"Content-Length", b"%d" % len(tar)),
                    body=tar,
                ),
                response(b"200 OK", (b"Content-Length", b"0")),
            )
            self.assertEqual(resp.code, 200)
            self.assertTrue(req.body == tar, "the archive changed on its way")
            payload = self.plugin.payloads[-1]
            self.assertNotIn("RequestBody", payload)
            self.assertEqual(payload["RequestHeaders"]["Content-Length"], str(len(tar)))


class ArchiveRuleTests(AuthzTestCase):
    def test_archive_uploads(self) -> None:
        for method, path in [
            ("POST", "/v1.41/build"),
            ("POST", "/build"),
            ("POST", "/v1.47/images/load"),
            ("POST", "/v1.41/images/create"),
            ("POST", "/v1.41/plugins/create"),
            ("PUT", "/v1.41/containers/web-1_a.b/archive"),
            ("put", "/containers/abc/archive"),
        ]:
            self.assertTrue(is_archive_upload(method, path), (method, path))
        for method, path in [
            ("POST", "/v1.41/containers/create"),
            ("PUT", "/v1.41/build"),
            ("POST", "/v1.41/containers/abc/archive"),
            ("POST", "/v1.41/b%75ild"),
            ("PUT", "/v1.41/containers/%2e%2e/archive"),
            ("POST", "/v1.41/build/"),
            ("POST", "//build"),
            ("POST", "/v1.41/services/create"),
            ("POST", "/v1.41/auth"),
        ]:
            self.assertFalse(is_archive_upload(method, path), (method, path))

    def test_only_authz_adapters_buffer_every_body(self) -> None:
        plain, authz = AdapterSpec("a", "http://a/"), AdapterSpec("z", "http://z/", type="authz")
        self.assertFalse(must_buffer((plain,), "POST", "/v1.41/containers/create"))
        self.assertTrue(must_buffer((plain, authz), "POST", "/v1.41/containers/create"))
        self.assertFalse(must_buffer((authz,), "POST", "/v1.41/build"))


# -- who is calling --------------------------------------------------------------------------


class IdentityTests(AuthzTestCase):
    def test_identity_rules(self) -> None:
        self.assertEqual(identity(None), ("", ""))
        self.assertEqual(identity(Peer("tcp", "127.0.0.1:5")), ("", ""))
        self.assertEqual(identity(Peer("tls", "127.0.0.1:5")), ("", ""))
        self.assertEqual(identity(Peer("unix", None, 4242, 4242, 1, None)), ("4242", "peercred"))
        self.assertEqual(identity(Peer("unix", None, 0, 0, 1, "root")), ("root", "peercred"))
        self.assertEqual(identity(Peer("unix")), ("", ""))

    @defer.inlineCallbacks
    def test_tls_client_certificate(self) -> Any:
        certs = Certificates(Path(self.mktemp()))
        self.start_authz(tls=certs.listener())
        client = yield self.connect(client_creator(certs.client))
        yield self.roundtrip(client, json_request(b"POST", CREATE, PLAIN), CREATED)
        [payload] = self.plugin.payloads
        self.assertEqual((payload["User"], payload["UserAuthNMethod"]), ("alice", "TLS"))
        # As dockerd sends it: each certificate's PEM text as a JSON byte string (base64).
        self.assertEqual(
            [base64.b64decode(c) for c in payload["RequestPeerCertificates"]],
            [(certs.client / "cert.pem").read_bytes()],
        )

    @defer.inlineCallbacks
    def test_tls_without_client_certificate_is_nobody(self) -> Any:
        certs = Certificates(Path(self.mktemp()))
        self.start_authz(tls=certs.listener(verify=False))
        anonymous = ssl.optionsForClientTLS(
            "localhost", trustRoot=ssl.Certificate.loadPEM((certs.server / "ca.pem").read_bytes())
        )
        client = yield self.connect(anonymous)
        yield self.roundtrip(client, json_request(b"POST", CREATE, PLAIN), CREATED)
        [payload] = self.plugin.payloads
        self.assertEqual((payload["User"], payload["UserAuthNMethod"]), ("", ""))
        self.assertNotIn("RequestPeerCertificates", payload)

    @defer.inlineCallbacks
    def test_unix_socket_peer_credentials(self) -> Any:
        resource = self.start_authz()
        path = os.path.join(tempfile.mkdtemp(prefix="ps-"), "docker.sock")
        self.addCleanup(shutil.rmtree, os.path.dirname(path))
        port = reactor.listenUNIX(path, self.tracker.track_factory(FrontFactory(resource)))
        self.addCleanup(port.stopListening)
        client = yield endpoints.connectProtocol(
            endpoints.UNIXClientEndpoint(reactor, path), self.tracker.track(RawClient())
        )
        yield self.roundtrip(client, json_request(b"POST", CREATE, PLAIN), CREATED)
        [payload] = self.plugin.payloads
        self.assertEqual((payload["User"], payload["UserAuthNMethod"]), (pwd.getpwuid(os.getuid()).pw_name, "peercred"))
