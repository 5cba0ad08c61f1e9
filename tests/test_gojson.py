"""powerstrip.wire.gojson, gotext and hookbody: reading bodies as Go does, or refusing them."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from powerstrip.hooks.body import BodyRefused, read_for_hooks, wants_body
from powerstrip.wire import engine_api
from powerstrip.wire.gojson import MAX_DEPTH, GoJSONError, canonicalize, dumps, loads
from powerstrip.wire.gotext import equal_fold, to_lower

CREATE = engine_api.body_schema("POST", "/containers/create")


class EqualFold(TestCase):
    def test_go_semantics(self) -> None:
        # Pairs from Go's strings.EqualFold documentation and unicode.SimpleFold orbits.
        for a, b in [
            ("Go", "GO"),
            ("s", "\u017f"),
            ("S", "\u017f"),
            ("k", "\u212a"),
            ("K", "\u212a"),
            ("\u00df", "\u1e9e"),
            ("\u03c3", "\u03c2"),
            ("\u03a3", "\u03c2"),
            ("\u01c4", "\u01c5"),
            ("\u0398", "\u03d1"),
            ("\u1f80", "\u1f88"),
        ]:
            self.assertTrue(equal_fold(a, b), (a, b))
        for a, b in [("i", "\u0130"), ("I", "\u0131"), ("i", "\u0131"), ("ss", "\u00df"), ("a", "b"), ("K", "k\u0301")]:
            self.assertFalse(equal_fold(a, b), (a, b))

    def test_to_lower(self) -> None:
        self.assertEqual(to_lower("APPL\u0130CATION/JSON"), "application/json")
        self.assertEqual(to_lower("\u212a"), "k")
        self.assertEqual(to_lower("\u017f"), "\u017f")  # already lower case


class Loads(TestCase):
    def refused(self, data: bytes, why: str) -> None:
        with self.assertRaises(GoJSONError) as e:
            loads(data)
        self.assertIn(why, str(e.exception))

    def test_accepts_strict_json(self) -> None:
        self.assertEqual(
            loads(b' {"a": [1, -2.5e3, "x\\u00e9\\ud83d\\ude00", true, null, {}]} \n'),
            {"a": [1, -2500.0, "x\u00e9\U0001f600", True, None, {}]},
        )
        self.assertEqual(loads(b"18446744073709551615"), 2**64 - 1)
        self.assertEqual(loads(b"-9223372036854775808"), -(2**63))

    def test_refusals(self) -> None:
        self.refused(b'{"a":1,"a":2}', "duplicate key 'a'")
        self.refused(b'{"x":{"b":{"a":1,"a":{}}}}', "duplicate key 'a'")
        self.refused(b'{"a":"\xff"}', "invalid UTF-8")
        self.refused(b'{"a":"\xed\xa0\x80"}', "invalid UTF-8")  # a UTF-8-encoded surrogate
        self.refused(b'{"a":"\\ud800"}', "lone UTF-16 surrogate")
        self.refused(b'{"a":"\\udc00\\ud800"}', "lone UTF-16 surrogate")
        self.refused(b'{"a":1} {"b":2}', "data after the JSON value")
        self.refused(b'{"a":1}x', "data after the JSON value")
        for literal in (b"NaN", b"Infinity", b"-Infinity"):
            self.refused(b'{"a":' + literal + b"}", "NaN and Infinity")
        self.refused(b"[1e400]", "overflows a float64")
        self.refused(b"[-1e309]", "overflows a float64")
        self.refused(b"[18446744073709551616]", "range of Go's integers")
        self.refused(b"[" + b"9" * 5000 + b"]", "range of Go's integers")
        self.refused(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested deeper")
        self.refused(b'{"a":[' * 6000 + b"1" + b"]}" * 6000, "nested deeper")
        self.refused("[\u0663]".encode(), "invalid value")  # an Arabic-Indic digit: Python's \\d takes it
        self.refused(b"\xef\xbb\xbf{}", "invalid value")
        for bad in (b"[01]", b"[1,]", b'{"a":1,}', b"{'a':1}", b'"\x01"', b"[.5]", b"[1.]", b"tru", b"", b" "):
            with self.assertRaises(GoJSONError, msg=bad):
                loads(bad)
        self.assertEqual(len(loads(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)), 1)


class Canonicalize(TestCase):
    def canon(self, text: str) -> dict:
        return canonicalize(loads(text.encode()), CREATE)

    def test_keys_take_their_canonical_spelling(self) -> None:
        self.assertEqual(
            self.canon(
                '{"image":"busybox","hostconfig":{"privileged":true,"capadd":["ALL"],'
                '"devices":[{"pathonhost":"/dev/sda"}]}}'
            ),
            {
                "Image": "busybox",
                "HostConfig": {"Privileged": True, "CapAdd": ["ALL"], "Devices": [{"PathOnHost": "/dev/sda"}]},
            },
        )
        self.assertEqual(self.canon('{"Ho\u017ftConfig":{"Privileged":true}}'), {"HostConfig": {"Privileged": True}})
        self.assertEqual(self.canon('{"HostConfig":{"\u212aernelMemory":1}}'), {"HostConfig": {"KernelMemory": 1}})

    def test_map_keys_are_data(self) -> None:
        self.assertEqual(
            self.canon('{"Labels":{"privileged":"x","a":"1","A":"2"}}'),
            {"Labels": {"privileged": "x", "a": "1", "A": "2"}},
        )

    def test_fold_equal_keys_are_refused(self) -> None:
        for text in (
            '{"HostConfig":{},"hostconfig":{"Privileged":true}}',
            '{"HostConfig":{},"Ho\u017ftConfig":{}}',
            '{"HostConfig":{"Privileged":false,"PRIVILEGED":true}}',
            '{"Unknown":{"x":1,"X":2}}',
        ):
            with self.assertRaises(GoJSONError, msg=text):
                self.canon(text)


class ReadForHooks(TestCase):
    def read(self, body: bytes, ctype: bytes | None = b"application/json", path: str = "/containers/create") -> bytes:
        return read_for_hooks("POST", path, ctype, body)

    def test_json_routes(self) -> None:
        self.assertTrue(wants_body("POST", "/containers/create", b"text/plain"))
        self.assertTrue(wants_body("POST", "/containers/abc/exec", None))
        self.assertFalse(wants_body("POST", "/build", b"application/x-tar"))
        self.assertTrue(wants_body("POST", "/build", "appl\u0130cation/json".encode()))
        self.assertEqual(self.read(b'{"hostconfig":{"privileged":true}}'), b'{"HostConfig":{"Privileged":true}}')
        self.assertEqual(self.read(b'{"Image":"x"}', None), b'{"Image":"x"}')
        self.assertEqual(self.read(b"", b"text/plain"), b"")
        self.assertEqual(
            self.read(b'{"Privileged":true}', b"APPLICATION/JSON; charset=utf-8", "/containers/c1/exec"),
            b'{"Privileged":true}',
        )

    def test_refused(self) -> None:
        for body, ctype, path in [
            (b'{"Image":"x"}', b"text/plain", "/containers/create"),
            (b'{"Image":"x"}', "appl\u0130cation/json".encode(), "/containers/create"),
            (b'{"Image":"x","Privileged":true}', b"application/json", "/containers/create"),
            (b'{"Image":"x","binds":["/:/h"]}', b"application/json", "/containers/create"),
            (b'{"Image":"x"} trailing', b"application/json", "/containers/create"),
            (b'[{"Image":"x"}]', b"application/json", "/containers/create"),
            (b"null", b"application/json", "/containers/create"),
            (b'{"HostConfig":{"Privileged":true}}', b"application/json", "/containers/c1/start"),
            (b'{"a":1}', b"application/json", "/plugins/pull"),
            (b"not json", b"application/json", "/build"),
        ]:
            with self.assertRaises(BodyRefused, msg=(body, ctype, path)) as e:
                self.read(body, ctype, path)
            self.assertTrue(e.exception.message.startswith("powerstrip: "))

    def test_other_routes_pass(self) -> None:
        self.assertEqual(self.read(b"\x00tar", b"application/x-tar", "/build"), b"\x00tar")
        self.assertEqual(self.read(b"{}", b"application/json", "/containers/c1/start"), b"{}")


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_documents = st.recursive(
    _scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20,
)


class Properties(TestCase):
    @settings(max_examples=300, deadline=None)
    @given(_documents)
    def test_python_documents_round_trip(self, doc) -> None:
        # (st.text() draws no surrogates; astral characters become valid \ud8xx\udcxx pairs.)
        for text in (json.dumps(doc), json.dumps(doc, ensure_ascii=False), json.dumps(doc, indent=2)):
            self.assertEqual(loads(text.encode("utf-8")), doc)
        self.assertEqual(loads(dumps(doc)), doc)

    @settings(max_examples=500, deadline=None)
    @given(_documents, st.data())
    def test_mutated_documents_are_refused_or_read_as_python_does(self, doc, data) -> None:
        raw = bytearray(json.dumps(doc).encode())
        for _ in range(data.draw(st.integers(1, 3))):
            op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
            at = data.draw(st.integers(0, len(raw)))
            byte = data.draw(st.sampled_from(list(b'{}[],:"\\ \t\nuaeE01-+.\xff\xc3NIte')))
            if op == "insert":
                raw[at:at] = bytes([byte])
            elif raw and at < len(raw):
                if op == "flip":
                    raw[at] = byte
                else:
                    del raw[at]
        try:
            ours = loads(bytes(raw))
        except GoJSONError:
            return
        # Whatever we accept, Python's own reader accepts and reads the same.
        self.assertEqual(json.loads(bytes(raw).decode("utf-8")), ours)


class SDKRequestJson(TestCase):
    """The SDK's ``Request.json`` never turns an unreadable body into "nothing to check"."""

    def test_unreadable_bodies_raise(self) -> None:
        from powerstrip.sdk import Request, UnreadableBody

        self.assertIsNone(Request("POST", "/containers/create").json)
        self.assertIsNone(Request("POST", "/containers/create", "").json)
        self.assertEqual(Request("POST", "/x", '{"a": 1}').json, {"a": 1})
        for body in ('{"a":1} trailing', '{"a":1,"a":2}', "[NaN]", "not json", '"\ud800"'):
            request = Request("POST", "/containers/create", body)
            with self.assertRaises(UnreadableBody, msg=body):
                _ = request.json
            self.assertIsNotNone(request.json_error)
            request.json = {"replaced": True}  # assigning still works, and is sent
            self.assertEqual(json.loads(request.wire()["Body"]), {"replaced": True})

    def test_an_uncaught_unreadable_body_refuses_the_call(self) -> None:
        from powerstrip.sdk import Adapter

        adapter = Adapter("t")

        @adapter.pre_hook("POST /containers/create")
        def hook(request):
            request.json.get("HostConfig")

        payload = {
            "PowerstripProtocolVersion": 1,
            "Type": "pre-hook",
            "ClientRequest": {"Method": "POST", "Request": "/v1.41/containers/create", "Body": "{} x"},
        }
        status, reply = self.successResultOf(adapter.handle(payload))
        self.assertEqual(status, 400)
        self.assertIn("not readable JSON", reply["message"])
