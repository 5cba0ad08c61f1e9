"""Tests for :mod:`powerstrip.sdk.schema` (the protocol's JSON Schemas, versions 1
and 2, and their validator) and :mod:`powerstrip.sdk.samples` (the captured calls).

Besides the validator's keywords and error paths, these pin the schemas to
Powerstrip itself: a reply Powerstrip accepts must validate, and one it turns
into a fault must not.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

from twisted.trial.unittest import TestCase

from powerstrip.config.matching import Route
from powerstrip.config.spec import AdapterSpec
from powerstrip.hooks.flow import ClientRequest, Flow, ServerResponse
from powerstrip.hooks.interface import AdapterFault, ShortCircuit
from powerstrip.hooks.protocols import PROTOCOLS
from powerstrip.sdk import Headers as SDKHeaders
from powerstrip.sdk import schema
from powerstrip.sdk.samples import samples
from powerstrip.sdk.schema import SchemaError, check, load, validate

#: A schema with every keyword the validator knows.
EVERYTHING: dict = {
    "type": "object",
    "required": ["n", "items"],
    "additionalProperties": False,
    "properties": {
        "n": {"type": "integer", "minimum": 200, "maximum": 599},
        "x": {"type": "number"},
        "flag": {"type": "boolean"},
        "s": {"type": ["string", "null"], "minLength": 1, "pattern": "^[a-z]+$"},
        "titled": {"type": "string", "pattern": "^/", "title": "a path"},
        "kind": {"enum": ["pre-hook", "post-hook"]},
        "one": {"const": 1},
        "items": {"type": "array", "items": {"$ref": "#/$defs/item"}},
        "map": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "$defs": {"item": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}},
}


def pre_reply(**request: Any) -> dict:
    return {"PowerstripProtocolVersion": 1, "ModifiedClientRequest": request}


def post_reply(**response: Any) -> dict:
    return {"PowerstripProtocolVersion": 1, "ModifiedServerResponse": response}


class ValidatorTests(TestCase):
    def errors(self, instance: Any) -> list[str]:
        return check(instance, EVERYTHING)

    def test_valid(self) -> None:
        self.assertEqual(
            self.errors(
                {
                    "n": 200,
                    "items": [{"id": "a"}],
                    "s": None,
                    "x": 1.5,
                    "one": 1.0,
                    "flag": False,
                    "kind": "post-hook",
                    "map": {"a": "b"},
                }
            ),
            [],
        )

    def test_types(self) -> None:
        self.assertEqual(
            self.errors({"n": "200", "items": {}, "x": True, "flag": 0, "s": 5}),
            [
                "n: \"200\" is not of type 'integer'",
                "x: true is not of type 'number'",
                "flag: 0 is not of type 'boolean'",
                "s: 5 is not of type 'string' or 'null'",
                "items: {} is not of type 'array'",
            ],
        )

    def test_integer_is_not_bool_nor_a_float(self) -> None:
        for value in (True, False, 201.0):
            self.assertEqual(
                self.errors({"n": value, "items": []}), [f"n: {json.dumps(value)} is not of type 'integer'"]
            )

    def test_required_and_additional_properties(self) -> None:
        self.assertEqual(
            self.errors({"extra": 1, "map": {"k": 2}}),
            [
                "(root): 'n' is required",
                "(root): 'items' is required",
                "map.k: 2 is not of type 'string'",
                "(root): unexpected key 'extra' (no other keys are allowed here)",
            ],
        )

    def test_minimum_and_maximum(self) -> None:
        self.assertEqual(self.errors({"n": 199, "items": []}), ["n: 199 is less than the minimum 200"])
        self.assertEqual(self.errors({"n": 700, "items": []}), ["n: 700 is greater than the maximum 599"])

    def test_enum_and_const_use_json_equality(self) -> None:
        self.assertEqual(
            self.errors({"n": 200, "items": [], "kind": "x", "one": True}),
            [
                'kind: "x" is not one of ["pre-hook", "post-hook"]',
                "one: expected 1, got true",
            ],
        )

    def test_pattern_and_min_length(self) -> None:
        self.assertEqual(
            self.errors({"n": 200, "items": [], "s": "", "titled": "x"}),
            [
                's: "" is shorter than 1 character(s)',
                "s: \"\" does not match '^[a-z]+$'",
                "titled: \"x\" is not a path (pattern '^/')",
            ],
        )

    def test_final_dollar_is_the_end_of_the_string(self) -> None:
        # Python's "$" would accept a trailing newline; JSON Schema's (ECMA-262) does not.
        self.assertEqual(
            self.errors({"n": 200, "items": [], "s": "abc\n"}), ["s: \"abc\\n\" does not match '^[a-z]+$'"]
        )

    def test_items_and_ref_report_nested_paths(self) -> None:
        self.assertEqual(
            self.errors({"n": 200, "items": [{"id": "a"}, {}, {"id": 3}]}),
            [
                "items[1]: 'id' is required",
                "items[2].id: 3 is not of type 'string'",
            ],
        )

    def test_odd_keys_are_quoted_in_paths(self) -> None:
        self.assertEqual(
            check({"a b": {"c.d": 1}}, {"properties": {"a b": {"additionalProperties": False}}}),
            ["[\"a b\"]: unexpected key 'c.d' (no other keys are allowed here)"],
        )

    def test_long_values_are_cut_short(self) -> None:
        [error] = check("x" * 500, {"type": "integer"})
        self.assertLess(len(error), 100)

    def test_unknown_keywords_types_refs_and_patterns_are_refused(self) -> None:
        for bad in (
            {"anyOf": []},
            {"type": "date"},
            {"$ref": "#/$defs/nothing"},
            {"$ref": "other.json#/x"},
            {"pattern": "("},
            {"properties": {"a": {"format": "uri"}}},
            {"items": False},
        ):
            self.assertRaises(SchemaError, check, 1, bad)

    def test_unknown_schema_names(self) -> None:
        for name in ("v1/nothing", "v9/pre-hook", "../setup", "v1/samples"):
            self.assertRaises(SchemaError, load, name)

    def test_schemas_are_cached(self) -> None:
        self.assertIs(load("v1/pre-hook"), load("v1/pre-hook.json"))

    def test_every_shipped_schema_loads(self) -> None:
        self.assertEqual(schema.names()[:4], ["v1/post-hook", "v1/post-hook-reply", "v1/pre-hook", "v1/pre-hook-reply"])
        self.assertEqual(schema.protocols(), (1, 2))
        for name in schema.names():
            self.assertEqual(load(name)["$schema"], "https://json-schema.org/draft/2020-12/schema")
            self.assertIn("description", load(name))


class MetaschemaTests(TestCase):
    """The schemas are standard draft 2020-12, and a standard validator agrees
    with ours (when the ``jsonschema`` package happens to be installed)."""

    def setUp(self) -> None:
        try:
            import jsonschema
        except ImportError:
            self.skipTest("jsonschema is not installed")
        self.jsonschema = jsonschema

    def test_schemas_are_valid_draft_2020_12(self) -> None:
        for name in schema.names():
            self.jsonschema.Draft202012Validator.check_schema(load(name))

    def test_a_standard_validator_agrees(self) -> None:
        cases = [(s.payload, f"v{v}/{s.hook}") for v in (1, 2) for s in samples(v)]
        cases += [(reply, "v1/pre-hook-reply") for reply, _ in PRE_CASES]
        cases += [(reply, "v1/post-hook-reply") for reply, _ in POST_CASES]
        cases += [(reply, "v2/pre-hook-reply") for reply, _ in PRE2_CASES]
        cases += [(reply, "v2/post-hook-reply") for reply, _ in POST2_CASES]
        for instance, name in cases:
            if instance is FLOAT_CODE or instance is NEWLINE_REQUEST or instance is FLOAT_CODE_2:
                continue
            theirs = self.jsonschema.Draft202012Validator(load(name)).is_valid(instance)
            self.assertEqual(validate(instance, name) == [], theirs, (name, instance))


class SampleTests(TestCase):
    def test_every_sample_validates_against_its_call_schema(self) -> None:
        for sample in samples(1):
            self.assertEqual(validate(sample.payload, f"v1/{sample.hook}"), [], sample.name)
            self.assertEqual(sample.payload["Type"], sample.hook)

    def test_the_samples_needed_are_there(self) -> None:
        by_name = {s.name: s.payload for s in samples(1)}
        create = by_name["create"]["ClientRequest"]
        self.assertEqual((create["Method"], create["Request"]), ("POST", "/v1.41/containers/create?name=ps-sample-web"))
        self.assertEqual(json.loads(create["Body"])["Image"], "busybox:latest")
        start = by_name["start"]["ClientRequest"]
        self.assertRegex(start["Request"], r"^/v1\.41/containers/[0-9a-f]{64}/start$")
        self.assertIsNone(start["Body"])
        created = by_name["create-201"]["ServerResponse"]
        self.assertEqual(created["Code"], 201)
        self.assertEqual(set(json.loads(created["Body"])), {"Id", "Warnings"})
        inspect = by_name["inspect-200"]["ServerResponse"]
        self.assertEqual(json.loads(inspect["Body"])["State"]["Running"], True)
        self.assertGreater(len(inspect["Body"]), 2000)
        gone = by_name["start-404"]["ServerResponse"]
        self.assertEqual(gone["Code"], 404)
        self.assertEqual(json.loads(gone["Body"]), {"message": "No such container: ps-sample-gone"})

    def test_call_schemas_reject_what_powerstrip_never_sends(self) -> None:
        sample = copy.deepcopy(samples(1)[0].payload)
        sample["ClientRequest"]["Body"] = ""
        sample["Extra"] = 1
        self.assertEqual(
            validate(sample, "v1/pre-hook"),
            [
                'ClientRequest.Body: "" is shorter than 1 character(s)',
                "(root): unexpected key 'Extra' (no other keys are allowed here)",
            ],
        )
        self.assertEqual(
            validate(sample, "v1/post-hook")[:2],
            [
                "(root): 'ServerResponse' is required",
                'Type: expected "post-hook", got "pre-hook"',
            ],
        )


# Where jsonschema departs from the standard: 201.0 is an integer to JSON
# Schema (not to Powerstrip, nor to us), and its patterns are Python's, whose
# "$" also matches before a final newline (ECMA-262's does not).
FLOAT_CODE = post_reply(Code=201.0)
NEWLINE_REQUEST = pre_reply(Method="POST", Request="/x\n")

#: Replies, and whether Powerstrip accepts them.
PRE_CASES: list[tuple[Any, bool]] = [
    (pre_reply(Method="POST", Request="/v1.41/containers/create", Body='{"Image":"busybox"}'), True),
    (pre_reply(Method="get", Request="/v1.41/containers/json?all=1&filters=%7B%7D"), True),  # no Body: none
    ({**pre_reply(Method="POST", Request="/x", Body=None, Extra=1), "Type": "pre-hook"}, True),
    (pre_reply(Method="GE T", Request="/x"), False),
    (pre_reply(Method="M-SEARCH", Request="/x"), False),
    (pre_reply(Method=5, Request="/x"), False),
    (pre_reply(Request="/x"), False),
    (pre_reply(Method="POST", Request="http://docker/v1.41/info"), False),
    (pre_reply(Method="POST", Request="/a b"), False),
    (NEWLINE_REQUEST, False),
    (pre_reply(Method="POST", Request="/x", Body={"Image": "busybox"}), False),
    ({"PowerstripProtocolVersion": 2, "ModifiedClientRequest": {"Method": "GET", "Request": "/x"}}, False),
    ({"PowerstripProtocolVersion": "1", "ModifiedClientRequest": {"Method": "GET", "Request": "/x"}}, False),
    ({"PowerstripProtocolVersion": 1, "ModifiedClientRequest": [1]}, False),
    ({"PowerstripProtocolVersion": 1, "ModifiedServerResponse": {"Code": 200}}, False),
    ([1], False),
]
POST_CASES: list[tuple[Any, bool]] = [
    (post_reply(Code=201, ContentType="application/json", Body='{"Id":"abc"}'), True),
    (post_reply(Code=204, ContentType=None, Body=None), True),
    (post_reply(Code=599), True),
    ({**post_reply(Code=403, Body="no", Note="extra keys are ignored"), "Type": "post-hook"}, True),
    (post_reply(Code=700), False),
    (post_reply(Code=199), False),
    (post_reply(Code=True), False),
    (post_reply(Code="201"), False),
    (FLOAT_CODE, False),
    (post_reply(ContentType="text/plain"), False),
    (post_reply(Code=200, ContentType="text/plain\r\nX-Evil: 1"), False),
    (post_reply(Code=200, ContentType=5), False),
    (post_reply(Code=200, Body=["a"]), False),
    ({"PowerstripProtocolVersion": 1, "ModifiedClientRequest": {"Method": "GET", "Request": "/x"}}, False),
]


class PowerstripAgreesTests(TestCase):
    """The reply schemas accept exactly the replies Powerstrip accepts."""

    adapter = AdapterSpec("a", "http://127.0.0.1:9/hook")

    def powerstrip_accepts(self, reply: Any, expect: str) -> bool:
        flow = Flow(ClientRequest("POST", "/v1.41/containers/create", [], b'{"Image":"busybox"}'), Route())
        flow.response = ServerResponse(201, [(b"Content-Type", b"application/json")], b'{"Id":"abc"}')
        phase = "pre-hook" if expect == "ModifiedClientRequest" else "post-hook"
        protocol = PROTOCOLS[self.adapter.protocol]
        try:
            # The two steps of a hook call after the HTTP exchange: the reply
            # checked (once), then applied to the flow.
            protocol.apply(
                protocol.check(json.loads(json.dumps(reply)), self.adapter, phase), flow, self.adapter, phase
            )
        except AdapterFault:
            return False
        return True

    def test_pre_hook_replies(self) -> None:
        for reply, accepted in PRE_CASES:
            self.assertEqual(self.powerstrip_accepts(reply, "ModifiedClientRequest"), accepted, reply)
            self.assertEqual(validate(reply, "v1/pre-hook-reply") == [], accepted, reply)

    def test_post_hook_replies(self) -> None:
        for reply, accepted in POST_CASES:
            self.assertEqual(self.powerstrip_accepts(reply, "ModifiedServerResponse"), accepted, reply)
            self.assertEqual(validate(reply, "v1/post-hook-reply") == [], accepted, reply)

    def test_the_error_names_the_field(self) -> None:
        self.assertEqual(
            validate(post_reply(Code=700), "v1/post-hook-reply"),
            ["ModifiedServerResponse.Code: 700 is greater than the maximum 599"],
        )
        self.assertEqual(
            validate(pre_reply(Request="/x"), "v1/pre-hook-reply"), ["ModifiedClientRequest: 'Method' is required"]
        )


# -- protocol 2 ---------------------------------------------------------------------------


def pre2_reply(**request: Any) -> dict:
    return {"PowerstripProtocolVersion": 2, "ModifiedClientRequest": request}


def short_circuit(**response: Any) -> dict:
    return {"PowerstripProtocolVersion": 2, "ServerResponse": response}


def post2_reply(**response: Any) -> dict:
    return {"PowerstripProtocolVersion": 2, "ModifiedServerResponse": response}


GO_ON = {"Method": "POST", "Request": "/v1.47/containers/create", "Body": '{"Image":"busybox"}'}
OWNED = [
    "Connection",
    "Keep-Alive",
    "TE",
    "Trailer",
    "Trailers",
    "Transfer-Encoding",
    "Upgrade",
    "Content-Length",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Connection",
]
#: Names that look like owned ones but are not.
NOT_OWNED = [
    "Content-Type",
    "Content-Lengths",
    "Connections",
    "Tea",
    "T",
    "Upgrade-Insecure-Requests",
    "Proxy",
    "X-Proxy-Id",
    "Keep",
    "Trailerx",
    "Host",
    "X-Registry-Auth",
]

#: Protocol 2 pre-hook replies, and whether Powerstrip accepts them.
PRE2_CASES: list[tuple[Any, bool]] = [
    (pre2_reply(**GO_ON), True),
    (pre2_reply(**GO_ON, Headers={"Content-Type": ["application/json"], "X-Tenant": ["a", "b"], "X-Empty": []}), True),
    (pre2_reply(**GO_ON, Headers={}), True),  # no headers at all (Powerstrip keeps its own)
    (pre2_reply(**GO_ON, Headers={"X-Latin": ["caf\u00e9\t!"]}), True),
    ({**pre2_reply(**GO_ON, Extra=1), "Note": "extra keys are ignored"}, True),
    (short_circuit(Code=200, ContentType="application/json", Body='{"Id":"cached"}'), True),
    (short_circuit(Code=101), True),
    (short_circuit(Code=503, Headers={"Retry-After": ["60"]}), True),
    (short_circuit(Code=599, ContentType=None, Body=None), True),
    ({"PowerstripProtocolVersion": 2}, False),  # neither
    ({**pre2_reply(**GO_ON), "ServerResponse": {"Code": 200}}, False),  # both
    ({**pre2_reply(**GO_ON), "ServerResponse": {"Code": 700}}, False),  # both, one of them wrong
    (pre2_reply(**GO_ON, Headers={"Content-Length": ["5"]}), False),
    (pre2_reply(**GO_ON, Headers={"content-LENGTH": ["5"]}), False),
    (pre2_reply(**GO_ON, Headers={"Accept": "*/*"}), False),
    (pre2_reply(**GO_ON, Headers={"Accept": [1]}), False),
    (pre2_reply(**GO_ON, Headers={"X-A": ["a\r\nX-B: b"]}), False),
    (pre2_reply(**GO_ON, Headers={"X-A": ["nul\u0000"]}), False),
    (pre2_reply(**GO_ON, Headers={"X-A": ["\u20ac"]}), False),
    (pre2_reply(**GO_ON, Headers={"X-A": ["\U0001f600"]}), False),
    (pre2_reply(**GO_ON, Headers={"Bad Name": ["1"]}), False),
    (pre2_reply(**GO_ON, Headers={"": ["1"]}), False),
    (pre2_reply(**GO_ON, Headers=[["Accept", "*/*"]]), False),
    (pre2_reply(**GO_ON, Headers=None), False),
    (pre2_reply(Method="GE T", Request="/x"), False),
    (short_circuit(Code=99), False),
    (short_circuit(Code=600), False),
    (FLOAT_CODE_2 := short_circuit(Code=200.0), False),
    (short_circuit(ContentType="text/plain"), False),
    (short_circuit(Code=200, ContentType="text/plain\r\nX-Evil: 1"), False),
    (short_circuit(Code=200, Headers={"Transfer-Encoding": ["chunked"]}), False),
    ({"PowerstripProtocolVersion": 1, "ModifiedClientRequest": GO_ON}, False),
    ({"ModifiedClientRequest": GO_ON}, False),
    ({"PowerstripProtocolVersion": 2, "ModifiedServerResponse": {"Code": 200}}, False),
    ([], False),
]
#: Protocol 2 post-hook replies, and whether Powerstrip accepts them.
POST2_CASES: list[tuple[Any, bool]] = [
    (post2_reply(Code=201, ContentType="application/json", Body='{"Id":"abc"}'), True),
    (post2_reply(Code=201, Headers={"Content-Type": ["application/json"], "X-Seen": ["yes"]}), True),
    (post2_reply(Code=204, ContentType=None, Body=None, Headers={}), True),
    (post2_reply(Code=199), False),
    (post2_reply(Code=101), False),
    (post2_reply(Code=200, Headers={"Connection": ["close"]}), False),
    (post2_reply(Code=200, Headers={"proxy-authenticate": ["Basic"]}), False),
    (post2_reply(Code=200, Headers={"X-A": "b"}), False),
    ({"PowerstripProtocolVersion": 2, "ServerResponse": {"Code": 200}}, False),
    ({"PowerstripProtocolVersion": 1, "ModifiedServerResponse": {"Code": 200}}, False),
]


class V2SchemaTests(TestCase):
    def test_shipped(self) -> None:
        self.assertEqual(
            [n for n in schema.names() if n.startswith("v2/")],
            ["v2/event", "v2/post-hook", "v2/post-hook-reply", "v2/pre-hook", "v2/pre-hook-reply", "v2/unwind"],
        )

    def test_pre_hook_replies(self) -> None:
        for reply, valid in PRE2_CASES:
            self.assertEqual(validate(reply, "v2/pre-hook-reply") == [], valid, reply)

    def test_post_hook_replies(self) -> None:
        for reply, valid in POST2_CASES:
            self.assertEqual(validate(reply, "v2/post-hook-reply") == [], valid, reply)

    def test_errors_name_the_field(self) -> None:
        for reply, error in [
            (
                pre2_reply(**GO_ON, Headers={"Content-Length": ["5"]}),
                'ModifiedClientRequest.Headers.Content-Length: "Content-Length" is one of Powerstrip\'s own headers '
                "(hop-by-hop, or Content-Length), which is not allowed",
            ),
            (
                pre2_reply(**GO_ON, Headers={"Accept": "*/*"}),
                "ModifiedClientRequest.Headers.Accept: \"*/*\" is not of type 'array'",
            ),
            (
                pre2_reply(**GO_ON, Headers={"Accept": ["a", 5]}),
                "ModifiedClientRequest.Headers.Accept[1]: 5 is not of type 'string'",
            ),
            (
                pre2_reply(**GO_ON, Headers={"X-A": ["a\nb"]}),
                'ModifiedClientRequest.Headers.X-A[0]: "a\\nb" is not a header value: Latin-1 text without CR, LF or '
                "NUL (pattern '^[\\\\x01-\\\\x09\\\\x0b\\\\x0c\\\\x0e-\\\\xff]*$')",
            ),
            (
                pre2_reply(**GO_ON, Headers={"Bad Name": ["1"]}),
                'ModifiedClientRequest.Headers["Bad Name"]: "Bad Name" is not a header name (an HTTP token) '
                '(pattern "^[-!#$%&\'*+.^_`|~0-9A-Za-z]+$")',
            ),
            (
                {"PowerstripProtocolVersion": 2},
                "(root): expected 'ModifiedClientRequest' (to go on) or 'ServerResponse' (to short-circuit)",
            ),
            (
                {**pre2_reply(**GO_ON), "ServerResponse": {"Code": 700}},
                "(root): 'ModifiedClientRequest' (to go on) and 'ServerResponse' (to short-circuit) together; "
                "only one is allowed",
            ),
            (short_circuit(Code=99), "ServerResponse.Code: 99 is less than the minimum 100"),
            (
                short_circuit(Code=200, Headers={"trailers": []}),
                'ServerResponse.Headers.trailers: "trailers" is one of Powerstrip\'s own headers (hop-by-hop, or '
                "Content-Length), which is not allowed",
            ),
            (
                {"PowerstripProtocolVersion": 1, "ModifiedClientRequest": GO_ON},
                "PowerstripProtocolVersion: expected 2, got 1",
            ),
        ]:
            self.assertEqual(validate(reply, "v2/pre-hook-reply")[:1], [error], reply)
        self.assertEqual(
            validate(post2_reply(Code=200, Headers={"Upgrade": ["h2c"]}), "v2/post-hook-reply"),
            [
                'ModifiedServerResponse.Headers.Upgrade: "Upgrade" is one of Powerstrip\'s own headers '
                "(hop-by-hop, or Content-Length), which is not allowed"
            ],
        )

    def test_owned_headers_in_any_letter_case(self) -> None:
        for name in OWNED:
            for spelled in (name, name.lower(), name.upper(), name.swapcase()):
                for reply, which in [
                    (pre2_reply(**GO_ON, Headers={spelled: ["x"]}), "v2/pre-hook-reply"),
                    (short_circuit(Code=200, Headers={spelled: ["x"]}), "v2/pre-hook-reply"),
                    (post2_reply(Code=200, Headers={spelled: ["x"]}), "v2/post-hook-reply"),
                ]:
                    [error] = validate(reply, which)
                    self.assertIn(f".Headers.{spelled}: ", error)
        for name in NOT_OWNED:
            self.assertEqual(validate(pre2_reply(**GO_ON, Headers={name: ["x"]}), "v2/pre-hook-reply"), [], name)

    def test_the_sdk_refuses_the_headers_the_schema_does(self) -> None:
        for name in OWNED + NOT_OWNED + ["Bad Name", "x" * 3, "Proxy-"]:
            try:
                SDKHeaders({name: ["x"]})
            except ValueError:
                sdk_accepts = False
            else:
                sdk_accepts = True
            self.assertEqual(
                validate(pre2_reply(**GO_ON, Headers={name: ["x"]}), "v2/pre-hook-reply") == [], sdk_accepts, name
            )

    def test_call_schemas_are_exact(self) -> None:
        create = copy.deepcopy(next(s.payload for s in samples(2) if s.name == "create"))
        create["ClientRequest"]["Headers"]["Content-Length"] = ["1234"]
        create["RequestId"] = "B599371CAAC4BEBB"
        create["Caller"]["Certificate"] = {"Subject": "CN=x", "CommonName": None, "Fingerprint": "sha256:ab"}
        create["Caller"]["Uid"] = -1
        del create["Caller"]["User"]
        self.assertEqual(
            validate(create, "v2/pre-hook"),
            [
                "RequestId: \"B599371CAAC4BEBB\" is not 16 lower-case hex digits (pattern '^[0-9a-f]{16}$')",
                "Caller: 'User' is required",
                "Caller.Uid: -1 is less than the minimum 0",
                'Caller.Certificate.Fingerprint: "sha256:ab" is not sha256: and 64 lower-case hex digits '
                "(pattern '^sha256:[0-9a-f]{64}$')",
                'ClientRequest.Headers.Content-Length: "Content-Length" is one of Powerstrip\'s own headers '
                "(hop-by-hop, or Content-Length), which is not allowed",
            ],
        )
        unwind = copy.deepcopy(next(s.payload for s in samples(2) if s.hook == "unwind"))
        unwind["Stage"] = "dockerd"
        del unwind["Failure"]["Adapter"]
        unwind["Failure"]["Code"] = "409"
        self.assertEqual(
            validate(unwind, "v2/unwind"),
            [
                'Stage: "dockerd" is not one of ["pre-hook", "docker", "post-hook", "client"]',
                "Failure: 'Adapter' is required",
                "Failure.Code: \"409\" is not of type 'integer' or 'null'",
            ],
        )
        event = copy.deepcopy(next(s.payload for s in samples(2) if s.hook == "event"))
        event["Event"]["timeNano"] = "now"
        event["RequestId"] = "b599371caac4bebb"
        self.assertEqual(
            validate(event, "v2/event"),
            [
                "Event.timeNano: \"now\" is not of type 'integer'",
                "(root): unexpected key 'RequestId' (no other keys are allowed here)",
            ],
        )

    def test_the_fast_path_agrees_with_the_messages(self) -> None:
        # validate() answers a valid instance without working out messages; check() always works them out.
        cases = [(r, "v2/pre-hook-reply") for r, _ in PRE2_CASES] + [(r, "v2/post-hook-reply") for r, _ in POST2_CASES]
        cases += [(r, "v1/pre-hook-reply") for r, _ in PRE_CASES] + [(r, "v1/post-hook-reply") for r, _ in POST_CASES]
        cases += [(s.payload, f"v{v}/{s.hook}") for v in (1, 2) for s in samples(v)]
        cases += [(s.payload, f"v2/{other}") for s in samples(2) for other in ("pre-hook", "unwind", "event")]
        for instance, name in cases:
            self.assertEqual(validate(instance, name), check(instance, load(name)), (name, instance))
        everything = [
            {"n": 200, "items": [], "s": "", "titled": "x"},
            {"n": True, "items": [{}]},
            {"n": 599, "items": [{"id": "a"}], "map": {"a": 1}},
            {"n": 200.5, "items": []},
        ]
        for instance in everything:
            self.assertEqual(check(instance, EVERYTHING) == [], schema._compile(EVERYTHING, EVERYTHING, {})(instance))

    def test_validation_is_fast(self) -> None:
        create = next(s.payload for s in samples(2) if s.name == "create")["ClientRequest"]
        reply = pre2_reply(
            **{k: create[k] for k in ("Method", "Request", "Body")}, Headers={**create["Headers"], "X-Tenant": ["blue"]}
        )
        self.assertEqual(validate(reply, "v2/pre-hook-reply"), [])
        started = time.perf_counter()
        for _ in range(1000):
            validate(reply, "v2/pre-hook-reply")
        # ~12 us on a 2020s CPU; the bound only catches a return to the slow path (~150 us).
        self.assertLess((time.perf_counter() - started) / 1000, 100e-6)


class NewKeywordTests(TestCase):
    """``oneOf``, ``not`` and ``propertyNames``: standard verdicts, and messages that say what is wrong."""

    ONE_OF: dict = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
        "oneOf": [
            {"title": "an a", "required": ["a"], "not": {"required": ["b"]}},
            {"title": "a b", "required": ["b"], "not": {"required": ["a"]}},
        ],
    }

    def test_one_of(self) -> None:
        self.assertEqual(check({"a": 1}, self.ONE_OF), [])
        self.assertEqual(check({"b": "x"}, self.ONE_OF), [])
        self.assertEqual(check({}, self.ONE_OF), ["(root): expected an a or a b"])
        self.assertEqual(check({"a": 1, "b": "x"}, self.ONE_OF), ["(root): an a and a b together; only one is allowed"])
        self.assertEqual(check({"a": "1"}, self.ONE_OF), ["a: \"1\" is not of type 'integer'"])

    def test_one_of_reports_the_branch_meant(self) -> None:
        schema = {
            "oneOf": [{"type": "object", "required": ["x"], "properties": {"x": {"minimum": 5}}}, {"type": "string"}]
        }
        self.assertEqual(check({"x": 1}, schema), ["x: 1 is less than the minimum 5"])
        self.assertEqual(
            check(5, schema),
            ['(root): expected {"type": "object", "required": ["x"], "properties": {"x":... or {"type": "string"}'],
        )
        self.assertEqual(
            check({"x": 5}, {"oneOf": [{"required": ["x"]}, {"type": "object"}]}),
            ['(root): {"required": ["x"]} and {"type": "object"} together; only one is allowed'],
        )

    def test_not(self) -> None:
        self.assertEqual(
            check("a", {"not": {"const": "a"}}), ['(root): "a" is valid against {"const": "a"}, which is not allowed']
        )
        self.assertEqual(
            check("a", {"not": {"const": "a", "title": "the letter a"}}),
            ['(root): "a" is the letter a, which is not allowed'],
        )
        self.assertEqual(check("b", {"not": {"const": "a"}}), [])

    def test_property_names_lead_with_the_key(self) -> None:
        schema = {"properties": {"h": {"propertyNames": {"pattern": "^[a-z]+$"}}}}
        self.assertEqual(
            check({"h": {"ok": 1, "Not-OK": 2}}, schema), ["h.Not-OK: \"Not-OK\" does not match '^[a-z]+$'"]
        )

    def test_bad_uses_are_refused(self) -> None:
        for bad in (
            {"oneOf": []},
            {"oneOf": {}},
            {"oneOf": [5]},
            {"not": 5},
            {"propertyNames": []},
            {"properties": {"a": {"oneOf": [{"format": "uri"}]}}},
            {"not": {"anyOf": []}},
        ):
            self.assertRaises(SchemaError, check, 1, bad)


class V2SampleTests(TestCase):
    def test_every_sample_validates_against_its_call_schema(self) -> None:
        for sample in samples(2):
            self.assertEqual(validate(sample.payload, f"v2/{sample.hook}"), [], sample.name)
            self.assertEqual(sample.payload["Type"], sample.hook)

    def test_they_are_the_protocol_1_calls_and_more(self) -> None:
        v2 = {s.name: s for s in samples(2)}
        for sample in samples(1):
            self.assertEqual(v2[sample.name].hook, sample.hook)
        self.assertEqual([s.hook for s in samples(2)].count("unwind"), 3)
        self.assertEqual([s.hook for s in samples(2)].count("event"), 3)

    def test_what_they_show(self) -> None:
        by_name = {s.name: s.payload for s in samples(2)}
        create = by_name["create"]
        self.assertEqual(create["ClientRequest"]["Headers"]["User-Agent"], ["Docker-Client/28.2.2 (linux)"])
        self.assertEqual(create["ClientRequest"]["Headers"]["Content-Type"], ["application/json"])
        self.assertEqual((create["Caller"]["Transport"], create["Caller"]["Uid"]), ("unix", 1000))
        self.assertEqual(by_name["create-201"]["RequestId"], create["RequestId"])  # one request, one id
        inspect = by_name["inspect"]["Caller"]
        self.assertEqual(
            (inspect["Transport"], inspect["User"], inspect["Certificate"]["CommonName"]), ("tls", "alice", "alice")
        )
        self.assertEqual(by_name["start-404"]["Caller"]["Transport"], "tcp")
        self.assertIn("Api-Version", by_name["start-204"]["ServerResponse"]["Headers"])
        self.assertIsNone(by_name["create-201-unseen-body"]["ClientRequest"]["Body"])
        self.assertEqual((by_name["create-409"]["Stage"], by_name["create-409"]["Failure"]["Code"]), ("docker", 409))
        refused = by_name["create-refused"]
        self.assertEqual(
            (refused["Stage"], refused["Failure"]["Adapter"], refused["ServerResponse"]["Code"]),
            ("pre-hook", "policy", 403),
        )
        die = by_name["container-die"]["Event"]
        self.assertEqual(
            (die["Type"], die["Action"], die["Actor"]["Attributes"]["exitCode"]), ("container", "die", "137")
        )


class V2PowerstripAgreesTests(TestCase):
    """Powerstrip's own handling of protocol 2 replies agrees with the schemas."""

    adapter = AdapterSpec("a", "http://127.0.0.1:9/hook", protocol=2)

    def powerstrip_accepts(self, reply: Any, expect: str) -> bool:
        flow = Flow(
            ClientRequest(
                "POST", "/v1.47/containers/create", [(b"Content-Type", b"application/json")], b'{"Image":"busybox"}'
            ),
            Route(),
        )
        flow.response = ServerResponse(201, [(b"Content-Type", b"application/json")], b'{"Id":"abc"}')
        phase = "pre-hook" if expect == "ModifiedClientRequest" else "post-hook"
        protocol = PROTOCOLS[self.adapter.protocol]
        try:
            protocol.apply(
                protocol.check(json.loads(json.dumps(reply)), self.adapter, phase), flow, self.adapter, phase
            )
        except ShortCircuit:
            return True
        except AdapterFault:
            return False
        return True

    def test_pre_hook_replies(self) -> None:
        for reply, accepted in PRE2_CASES:
            self.assertEqual(self.powerstrip_accepts(reply, "ModifiedClientRequest"), accepted, reply)

    def test_post_hook_replies(self) -> None:
        for reply, accepted in POST2_CASES:
            self.assertEqual(self.powerstrip_accepts(reply, "ModifiedServerResponse"), accepted, reply)
