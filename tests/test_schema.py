"""Tests for :mod:`powerstrip.schema` (the protocol's JSON Schemas and their
validator) and :mod:`powerstrip.samples` (the captured hook calls).

Besides the validator's keywords and error paths, these pin the schemas to
Powerstrip itself: a reply Powerstrip accepts must validate, and one it turns
into a fault must not.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase

from powerstrip import schema
from powerstrip.adapters import AdapterClient, AdapterFault
from powerstrip.config import Adapter
from powerstrip.flow import ClientRequest, Flow, ServerResponse
from powerstrip.hooks import HookChain
from powerstrip.matching import Route
from powerstrip.samples import samples
from powerstrip.schema import SchemaError, check, load, validate

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
        self.assertEqual(self.errors({"n": 200, "items": [{"id": "a"}], "s": None, "x": 1.5, "one": 1.0,
                                      "flag": False, "kind": "post-hook", "map": {"a": "b"}}), [])

    def test_types(self) -> None:
        self.assertEqual(self.errors({"n": "200", "items": {}, "x": True, "flag": 0, "s": 5}), [
            "n: \"200\" is not of type 'integer'",
            "x: true is not of type 'number'",
            "flag: 0 is not of type 'boolean'",
            "s: 5 is not of type 'string' or 'null'",
            "items: {} is not of type 'array'",
        ])

    def test_integer_is_not_bool_nor_a_float(self) -> None:
        for value in (True, False, 201.0):
            self.assertEqual(self.errors({"n": value, "items": []}),
                             [f"n: {json.dumps(value)} is not of type 'integer'"])

    def test_required_and_additional_properties(self) -> None:
        self.assertEqual(self.errors({"extra": 1, "map": {"k": 2}}), [
            "(root): 'n' is required",
            "(root): 'items' is required",
            "map.k: 2 is not of type 'string'",
            "(root): unexpected key 'extra' (no other keys are allowed here)",
        ])

    def test_minimum_and_maximum(self) -> None:
        self.assertEqual(self.errors({"n": 199, "items": []}), ["n: 199 is less than the minimum 200"])
        self.assertEqual(self.errors({"n": 700, "items": []}), ["n: 700 is greater than the maximum 599"])

    def test_enum_and_const_use_json_equality(self) -> None:
        self.assertEqual(self.errors({"n": 200, "items": [], "kind": "x", "one": True}), [
            'kind: "x" is not one of ["pre-hook", "post-hook"]',
            "one: expected 1, got true",
        ])

    def test_pattern_and_min_length(self) -> None:
        self.assertEqual(self.errors({"n": 200, "items": [], "s": "", "titled": "x"}), [
            "s: \"\" is shorter than 1 character(s)",
            "s: \"\" does not match '^[a-z]+$'",
            "titled: \"x\" is not a path (pattern '^/')",
        ])

    def test_final_dollar_is_the_end_of_the_string(self) -> None:
        # Python's "$" would accept a trailing newline; JSON Schema's (ECMA-262) does not.
        self.assertEqual(self.errors({"n": 200, "items": [], "s": "abc\n"}),
                         ["s: \"abc\\n\" does not match '^[a-z]+$'"])

    def test_items_and_ref_report_nested_paths(self) -> None:
        self.assertEqual(self.errors({"n": 200, "items": [{"id": "a"}, {}, {"id": 3}]}), [
            "items[1]: 'id' is required",
            "items[2].id: 3 is not of type 'string'",
        ])

    def test_odd_keys_are_quoted_in_paths(self) -> None:
        self.assertEqual(check({"a b": {"c.d": 1}}, {"properties": {"a b": {"additionalProperties": False}}}),
                         ['["a b"]: unexpected key \'c.d\' (no other keys are allowed here)'])

    def test_long_values_are_cut_short(self) -> None:
        [error] = check("x" * 500, {"type": "integer"})
        self.assertLess(len(error), 100)

    def test_unknown_keywords_types_refs_and_patterns_are_refused(self) -> None:
        for bad in ({"anyOf": []}, {"type": "date"}, {"$ref": "#/$defs/nothing"},
                    {"$ref": "other.json#/x"}, {"pattern": "("},
                    {"properties": {"a": {"format": "uri"}}}, {"items": False}):
            self.assertRaises(SchemaError, check, 1, bad)

    def test_unknown_schema_names(self) -> None:
        for name in ("v1/nothing", "v9/pre-hook", "../setup", "v1/samples"):
            self.assertRaises(SchemaError, load, name)

    def test_schemas_are_cached(self) -> None:
        self.assertIs(load("v1/pre-hook"), load("v1/pre-hook.json"))

    def test_every_shipped_schema_loads(self) -> None:
        self.assertEqual(schema.names(), ["v1/post-hook", "v1/post-hook-reply", "v1/pre-hook", "v1/pre-hook-reply"])
        self.assertEqual(schema.protocols(), (1,))
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
        cases = [(s.payload, f"v1/{s.hook}") for s in samples(1)]
        cases += [(reply, "v1/pre-hook-reply") for reply, _ in PRE_CASES]
        cases += [(reply, "v1/post-hook-reply") for reply, _ in POST_CASES]
        for instance, name in cases:
            if instance is FLOAT_CODE or instance is NEWLINE_REQUEST:
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
        self.assertEqual(validate(sample, "v1/pre-hook"), [
            'ClientRequest.Body: "" is shorter than 1 character(s)',
            "(root): unexpected key 'Extra' (no other keys are allowed here)",
        ])
        self.assertEqual(validate(sample, "v1/post-hook")[:2], [
            "(root): 'ServerResponse' is required",
            'Type: expected "post-hook", got "pre-hook"',
        ])


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

    adapter = Adapter("a", "http://127.0.0.1:9/hook")

    def powerstrip_accepts(self, reply: Any, expect: str) -> bool:
        flow = Flow(ClientRequest("POST", "/v1.41/containers/create", [], b'{"Image":"busybox"}'), Route())
        flow.response = ServerResponse(201, [(b"Content-Type", b"application/json")], b'{"Id":"abc"}')
        apply = HookChain._apply_request if expect == "ModifiedClientRequest" else HookChain._apply_response
        answer = (200, "application/json", json.dumps(reply).encode())
        try:
            # The two steps of a hook call after the HTTP exchange: the reply's
            # envelope (AdapterClient), then its object (HookChain).
            apply(AdapterClient(MemoryReactorClock())._check(answer, self.adapter, expect), flow, self.adapter)
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
        self.assertEqual(validate(post_reply(Code=700), "v1/post-hook-reply"),
                         ["ModifiedServerResponse.Code: 700 is greater than the maximum 599"])
        self.assertEqual(validate(pre_reply(Request="/x"), "v1/pre-hook-reply"),
                         ["ModifiedClientRequest: 'Method' is required"])
