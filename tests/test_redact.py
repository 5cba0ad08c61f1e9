"""Tests for :mod:`powerstrip.hooks.redact`, and its use by the hook chain and authz calls (issue 13, item 5)."""

from __future__ import annotations

import base64
import json
from typing import Any

from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.server import Request

from powerstrip.config.matching import Route
from powerstrip.config.spec import AdapterSpec
from powerstrip.hooks import authz, redact
from powerstrip.hooks.flow import ClientRequest, Flow, ServerResponse
from powerstrip.hooks.interface import Refused
from powerstrip.hooks.redact import REDACTED
from tests.support import HookTestCase, reply

LOGIN = '{"username":"bob","password":"hunter2-pw","serveraddress":"127.0.0.1:5000"}'
SWARM = json.dumps({"ID": "c1", "JoinTokens": {"Worker": "SWMTKN-1-worker", "Manager": "SWMTKN-1-manager"}})
AUTH_HEADER = base64.urlsafe_b64encode(LOGIN.encode()).decode()


def call(method: str, uri: str, body: str | None, response: str | None = None, headers: dict | None = None) -> dict:
    """A hook call as :meth:`powerstrip.hooks.chain.HookChain.payload` builds it."""
    out: dict[str, Any] = {
        "PowerstripProtocolVersion": 2,
        "Type": "pre-hook",
        "ClientRequest": {"Method": method, "Request": uri, "Body": body, "Headers": headers or {}},
    }
    if response is not None:
        out["Type"] = "post-hook"
        out["ServerResponse"] = {"ContentType": "application/json", "Body": response, "Code": 200, "Headers": {}}
    return out


class RulesTests(TestCase):
    def shown(self, method: str, uri: str, body: str | None, response: str | None = None) -> dict:
        return redact.payload(call(method, uri, body, response))

    def test_login(self) -> None:
        shown = self.shown("POST", "/v1.41/auth", LOGIN, '{"Status":"Login Succeeded","IdentityToken":"tok-123"}')
        self.assertEqual(
            json.loads(shown["ClientRequest"]["Body"]),
            {"username": "bob", "password": REDACTED, "serveraddress": "127.0.0.1:5000"},
        )
        self.assertEqual(
            json.loads(shown["ServerResponse"]["Body"]), {"Status": "Login Succeeded", "IdentityToken": REDACTED}
        )

    def test_keys_match_as_go_matches_them(self) -> None:
        """Go decodes "PassWord", "AUTH" and "identitytoKen" into the same fields: all are hidden."""
        body = '{"PassWord":"a1","AUTH":"YTpi","identitytoKen":"t","RegistryToken":"r","Username":"bob"}'
        shown = json.loads(self.shown("POST", "/auth", body)["ClientRequest"]["Body"])
        self.assertEqual(
            shown,
            {
                "PassWord": REDACTED,
                "AUTH": REDACTED,
                "identitytoKen": REDACTED,
                "RegistryToken": REDACTED,
                "Username": "bob",
            },
        )
        shown = json.loads(
            self.shown("POST", "/secrets/create", '{"Name":"x","ſpec":1,"DATA":"c2VjcmV0"}')["ClientRequest"]["Body"]
        )
        self.assertEqual(shown["DATA"], REDACTED)

    def test_every_route_of_the_table(self) -> None:
        for method, uri, body, where, path in (
            ("POST", "/v1.41/swarm/join", '{"RemoteAddrs":["a"],"JoinToken":"SWMTKN-x"}', "req", ["JoinToken"]),
            ("POST", "/swarm/unlock", '{"UnlockKey":"SWMKEY-1-x"}', "req", ["UnlockKey"]),
            (
                "POST",
                "/swarm/init",
                '{"Spec":{"CAConfig":{"SigningCAKey":"PEM"}}}',
                "req",
                ["Spec", "CAConfig", "SigningCAKey"],
            ),
            (
                "POST",
                "/swarm/update?version=3",
                '{"CAConfig":{"SigningCAKey":"PEM"}}',
                "req",
                ["CAConfig", "SigningCAKey"],
            ),
            ("POST", "/v1.50/secrets/create", '{"Name":"s","Data":"c2VjcmV0"}', "req", ["Data"]),
            ("POST", "/secrets/abc/update?version=1", '{"Data":"c2VjcmV0"}', "req", ["Data"]),
            ("POST", "/configs/create", '{"Name":"c","Data":"Y29uZmln"}', "req", ["Data"]),
            ("POST", "/configs/abc/update", '{"Data":"Y29uZmln"}', "req", ["Data"]),
            ("GET", "/swarm", SWARM, "resp", ["JoinTokens", "Worker"]),
            ("GET", "/v1.41/swarm", SWARM, "resp", ["JoinTokens", "Manager"]),
            ("GET", "/swarm/unlockkey", '{"UnlockKey":"SWMKEY-1-x"}', "resp", ["UnlockKey"]),
            ("GET", "/configs/abc", '{"Spec":{"Data":"Y29uZmln"}}', "resp", ["Spec", "Data"]),
            ("GET", "/configs?filters=x", '[{"Spec":{"Data":"Y29uZmln"}},{"Spec":{}}]', "resp", [0, "Spec", "Data"]),
            ("GET", "/%73wArm".replace("A", "a"), SWARM, "resp", ["JoinTokens", "Worker"]),
        ):  # dockerd decodes %XX
            shown = self.shown(method, uri, body) if where == "req" else self.shown(method, uri, None, body)
            doc = json.loads(shown["ClientRequest" if where == "req" else "ServerResponse"]["Body"])
            for key in path:
                doc = doc[key]
            self.assertEqual(doc, REDACTED, (method, uri))

    def test_other_calls_are_shown_as_they_are(self) -> None:
        body = '{"Image": "busybox", "Env": ["password=x"]}'
        self.assertEqual(self.shown("POST", "/containers/create", body)["ClientRequest"]["Body"], body)
        self.assertEqual(self.shown("GET", "/info", None, SWARM)["ServerResponse"]["Body"], SWARM)

    def test_unreadable_body_is_hidden_whole(self) -> None:
        self.assertEqual(self.shown("POST", "/auth", '{"password": "x"')["ClientRequest"]["Body"], REDACTED)
        self.assertIsNone(self.shown("POST", "/auth", None)["ClientRequest"]["Body"])

    def test_headers(self) -> None:
        shown = redact.payload(
            call(
                "POST",
                "/images/create?fromImage=x",
                None,
                headers={
                    "X-Registry-Auth": [AUTH_HEADER],
                    "x-registry-config": ["e30="],
                    "Authorization": ["Basic x"],
                    "User-Agent": ["docker"],
                },
            )
        )
        self.assertEqual(
            shown["ClientRequest"]["Headers"],
            {
                "X-Registry-Auth": [REDACTED],
                "x-registry-config": [REDACTED],
                "Authorization": [REDACTED],
                "User-Agent": ["docker"],
            },
        )

    def test_the_original_is_not_touched(self) -> None:
        original = call("POST", "/auth", LOGIN, headers={"X-Registry-Auth": [AUTH_HEADER]})
        copy = json.loads(json.dumps(original))
        redact.payload(original)
        self.assertEqual(original, copy)


class RestoreTests(TestCase):
    original = call(
        "POST",
        "/v1.41/swarm/join",
        '{"JoinToken": "SWMTKN-1-x", "RemoteAddrs": ["m:2377"]}',
        headers={"X-Registry-Auth": [AUTH_HEADER], "Accept": ["*/*"]},
    )
    shown = redact.payload(original)

    def back(self, **request: Any) -> dict:
        reply = {"PowerstripProtocolVersion": 2, "ModifiedClientRequest": request}
        back = redact.restore_reply(reply, self.shown, self.original)["ModifiedClientRequest"]
        self.assertEqual(redact.restore_reply(request, self.shown, self.original), back)  # protocol 1's shape
        return back

    def test_unchanged_means_the_original_bytes(self) -> None:
        self.assertEqual(self.back(**self.shown["ClientRequest"]), self.original["ClientRequest"])

    def test_placeholders_left_in_place_are_put_back(self) -> None:
        back = self.back(
            Body='{"RemoteAddrs":["other:2377"],"JoinToken":"<redacted>"}', Headers={"x-registry-auth": [REDACTED]}
        )
        self.assertEqual(json.loads(back["Body"]), {"RemoteAddrs": ["other:2377"], "JoinToken": "SWMTKN-1-x"})
        self.assertEqual(back["Headers"], {"x-registry-auth": [AUTH_HEADER]})

    def test_what_a_hook_changes_or_removes_stays_so(self) -> None:
        back = self.back(Body='{"RemoteAddrs":["m:2377"],"JoinToken":"SWMTKN-new"}', Headers={"Accept": ["*/*"]})
        self.assertEqual(json.loads(back["Body"])["JoinToken"], "SWMTKN-new")
        self.assertEqual(back["Headers"], {"Accept": ["*/*"]})
        self.assertEqual(json.loads(self.back(Body='{"RemoteAddrs":[]}')["Body"]), {"RemoteAddrs": []})

    def test_a_placeholder_moved_elsewhere_is_just_text(self) -> None:
        back = self.back(Body='{"RemoteAddrs":["<redacted>"],"JoinToken":"<redacted>"}')
        self.assertEqual(json.loads(back["Body"]), {"RemoteAddrs": ["<redacted>"], "JoinToken": "SWMTKN-1-x"})

    def test_a_body_hidden_whole(self) -> None:
        original = call("POST", "/auth", "not json: hunter2")
        shown = redact.payload(original)
        reply = {"ModifiedClientRequest": {"Method": "POST", "Request": "/auth", "Body": REDACTED}}
        self.assertEqual(
            redact.restore_reply(reply, shown, original)["ModifiedClientRequest"]["Body"], "not json: hunter2"
        )

    def test_responses(self) -> None:
        original = call("GET", "/swarm", None, SWARM)
        shown = redact.payload(original)
        reply = {"ModifiedServerResponse": dict(shown["ServerResponse"], Code=200)}
        self.assertEqual(redact.restore_reply(reply, shown, original)["ModifiedServerResponse"]["Body"], SWARM)

    def test_hidden_and_scrub(self) -> None:
        hidden = redact.hidden(self.shown, self.original)
        self.assertEqual(sorted(hidden), sorted(["SWMTKN-1-x", AUTH_HEADER]))
        self.assertEqual(redact.scrub('no: "SWMTKN-1-x" for you', hidden), 'no: "<redacted>" for you')


def login_request() -> ClientRequest:
    return ClientRequest(
        "POST",
        "/v1.41/auth",
        [(b"Content-Type", b"application/json"), (b"X-Registry-Auth", AUTH_HEADER.encode())],
        LOGIN.encode(),
    )


class ChainTests(HookTestCase):
    """Through :class:`powerstrip.hooks.chain.HookChain`, with real HTTP adapters."""

    def capture(self) -> list[dict]:
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events

    def echo(self, version: int) -> Any:
        def handler(request: Request, payload: dict) -> bytes:
            key = "ModifiedClientRequest" if payload["Type"] == "pre-hook" else "ModifiedServerResponse"
            source = "ClientRequest" if payload["Type"] == "pre-hook" else "ServerResponse"
            return reply(request, json.dumps({"PowerstripProtocolVersion": version, key: payload[source]}).encode())

        return handler

    def secret_adapter(self, name: str, handler: Any, protocol: int = 1, secrets: bool = False) -> AdapterSpec:
        a = self.adapter(name, handler)
        return AdapterSpec(a.name, a.url, a.timeout, protocol=protocol, secrets=secrets)

    @defer.inlineCallbacks
    def test_hooks_see_placeholders_and_dockerd_gets_the_original(self) -> Any:
        events = self.capture()
        self.chain.verbose = True
        adapters = (self.secret_adapter("v1", self.echo(1)), self.secret_adapter("v2", self.echo(2), protocol=2))
        flow = yield self.chain.run_pre(Flow(login_request(), Route(("test",), pre=adapters)))
        self.assertEqual(flow.request.body, LOGIN.encode())  # byte for byte
        self.assertIn((b"X-Registry-Auth", AUTH_HEADER.encode()), flow.request.headers)
        seen = json.dumps(self.adapters.calls)
        self.assertNotIn("hunter2", seen)
        self.assertNotIn(AUTH_HEADER, seen)
        self.assertIn('"X-Registry-Auth": ["<redacted>"]', seen)
        logged = "\n".join(formatEvent(e) for e in events)
        self.assertIn("pre-hook v2 replied", logged)
        self.assertNotIn("hunter2", logged)
        self.assertNotIn(AUTH_HEADER, logged)

    @defer.inlineCallbacks
    def test_secrets_true_sees_everything_and_the_log_still_does_not(self) -> Any:
        events = self.capture()
        self.chain.verbose = True
        adapter = self.secret_adapter("trusted", self.echo(2), protocol=2, secrets=True)
        flow = yield self.chain.run_pre(Flow(login_request(), Route(("test",), pre=(adapter,))))
        self.assertEqual(flow.request.body, LOGIN.encode())
        self.assertIn("hunter2-pw", json.dumps(self.adapters.calls))
        self.assertIn(AUTH_HEADER, json.dumps(self.adapters.calls))
        logged = "\n".join(formatEvent(e) for e in events)
        self.assertIn("pre-hook trusted replied", logged)  # the reply echoes the secrets: redacted too
        self.assertNotIn("hunter2", logged)
        self.assertNotIn(AUTH_HEADER, logged)

    @defer.inlineCallbacks
    def test_refusal_echoing_a_secret_is_scrubbed_in_the_log(self) -> Any:
        events = self.capture()
        self.chain.verbose = True

        def deny(request: Request, payload: dict) -> bytes:
            password = json.loads(payload["ClientRequest"]["Body"])["password"]
            return reply(request, json.dumps({"message": f"bad password {password}"}).encode(), code=403)

        adapter = self.secret_adapter("deny", deny, secrets=True)
        yield self.assertFailure(self.chain.run_pre(Flow(login_request(), Route(("t",), pre=(adapter,)))), Refused)
        logged = "\n".join(formatEvent(e) for e in events)
        self.assertIn("bad password <redacted>", logged)
        self.assertNotIn("hunter2", logged)

    @defer.inlineCallbacks
    def test_post_hook_passes_the_real_tokens_to_the_client(self) -> Any:
        adapter = self.secret_adapter("echo", self.echo(1))
        flow = Flow(ClientRequest("GET", "/v1.41/swarm", [], b""), Route(("t",), post=(adapter,)))
        flow.response = ServerResponse(200, [(b"Content-Type", b"application/json")], SWARM.encode())
        flow = yield self.chain.run_post(flow)
        self.assertEqual(flow.response.body, SWARM.encode())
        self.assertNotIn("SWMTKN", json.dumps(self.adapters.calls))
        [(_, shown)] = self.adapters.calls
        self.assertEqual(
            json.loads(shown["ServerResponse"]["Body"])["JoinTokens"], {"Worker": REDACTED, "Manager": REDACTED}
        )

    @defer.inlineCallbacks
    def test_unwind_calls_are_redacted(self) -> Any:
        adapter = self.secret_adapter("u", lambda request, payload: reply(request, b"{}"), protocol=2)
        flow = Flow(login_request(), Route(("t",), pre=(adapter,)))
        flow.prepared.append(self.chain.adapter(adapter))
        yield self.chain.run_unwind(flow, "docker", None, "dockerd said no")
        [(_, payload)] = self.adapters.calls
        self.assertEqual(payload["Type"], "unwind")
        self.assertNotIn("hunter2", json.dumps(payload))


class AuthzTests(TestCase):
    def test_authz_payload_is_redacted(self) -> None:
        flow = Flow(
            ClientRequest(
                "POST",
                "/v1.41/secrets/create",
                [(b"Content-Type", b"application/json")],
                b'{"Name":"s","Data":"c2VjcmV0LXZhbHVl"}',
            ),
            Route(),
        )
        original = authz.request_payload(flow)
        shown = redact.authz(original)
        self.assertIn("c2VjcmV0LXZhbHVl", base64.b64decode(original["RequestBody"]).decode())
        self.assertEqual(json.loads(base64.b64decode(shown["RequestBody"])), {"Name": "s", "Data": REDACTED})
        flow = Flow(ClientRequest("GET", "/v1.41/swarm", [], b""), Route())
        flow.response = ServerResponse(200, [], SWARM.encode())
        shown = redact.authz(authz.response_payload(flow))
        self.assertNotIn(b"SWMTKN", base64.b64decode(shown["ResponseBody"]))
