"""Issue 25: the request target as dockerd reads it (:mod:`powerstrip.wire.target`), and the
front's refusals built on it (:func:`powerstrip.wire.http11.parse_request_head`).

Each refusal is a case where Go's ``net/http``, gorilla/mux and ``url.ParseQuery`` (dockerd)
and a hook written in Python would read one request differently;
``tests/test_target_differential.py`` holds the reading to Go's own on generated targets.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from powerstrip.wire.http11 import BadRequest, parse_request_head
from powerstrip.wire.target import (
    MAX_PARAMS,
    BadTarget,
    canonical_target,
    decoded_path,
    endpoint,
    params,
    refuse_repeats,
)
from tests.support import ProxyTestCase, echo_pre, json_response, request


class CanonicalSpellingTests(SynchronousTestCase):
    """Escapes dockerd reads as plain characters are decoded; the rest keep upper-case hex."""

    def test_route_words_are_spelled_out(self) -> None:
        for sent, canonical in [
            ("/v1.41/containers/x/%65xport", "/v1.41/containers/x/export"),
            ("/v1.41/containers/x/%65%78%70%6f%72%74", "/v1.41/containers/x/export"),
            ("/v1.41/containers/x%2Fexport", "/v1.41/containers/x/export"),
            ("/v1.41/containers/x%2fexport?a=1", "/v1.41/containers/x/export?a=1"),
            ("/v1%2E41/version", "/v1.41/version"),
            ("/images/busybox%40sha256:abc/json", "/images/busybox@sha256:abc/json"),
            ("/images/a%3Ab%2Bc%7E/json", "/images/a:b+c~/json"),
        ]:
            self.assertEqual(canonical_target(sent), canonical, sent)

    def test_what_cannot_stand_as_itself_stays_escaped(self) -> None:
        for sent, canonical in [
            ("/containers/a%3fb/json", "/containers/a%3Fb/json"),  # ? would start the query
            ("/containers/a%23b/json", "/containers/a%23b/json"),  # # is refused as itself
            ("/containers/a%25b/json", "/containers/a%25b/json"),  # % would start an escape
            ("/networks/a%20b", "/networks/a%20b"),  # a space cannot stand in a request line
            ("/networks/%c3%a9", "/networks/%C3%A9"),  # non-ASCII
            ("/networks/a%0ab", "/networks/a%0Ab"),  # a control byte
        ]:
            self.assertEqual(canonical_target(sent), canonical, sent)

    def test_a_plain_target_is_returned_as_is(self) -> None:
        for sent in ["/_ping", "/v1.41/containers/json?all=1&filters=%7B%22label%22%3A%5B%22a%22%5D%7D", "/x?"]:
            self.assertIs(canonical_target(sent), sent)

    def test_the_query_is_never_rewritten(self) -> None:
        self.assertEqual(canonical_target("/x?a=%65&b=%2F"), "/x?a=%65&b=%2F")


class RefusedTargetTests(SynchronousTestCase):
    def refused(self, target: str, fragment: str) -> None:
        with self.assertRaises(BadTarget) as caught:
            canonical_target(target)
        self.assertIn(fragment, caught.exception.message)
        self.assertTrue(caught.exception.message.startswith("powerstrip: "))

    def test_a_fragment(self) -> None:
        # Go keeps '#' in the query: x=#&networkmode=host is a networkmode to dockerd.
        self.refused("/build?x=#&networkmode=host", "'#'")
        self.refused("/containers/x#/export", "'#'")

    def test_bad_path_escapes(self) -> None:
        for target in ["/containers/x/%zzport", "/containers/x/export%", "/containers/x/%6", "/x/%2%46"]:
            self.refused(target, "bad %-escape in the request path")

    def test_path_escapes_that_are_not_utf8(self) -> None:
        # Python's unquote reads U+FFFD for each: two names would look alike.
        self.refused("/containers/team-a-%ff/json", "not UTF-8")
        self.refused("/containers/%c3/json", "not UTF-8")

    def test_paths_dockerd_redirects(self) -> None:
        for target, clean in [
            ("/v1.41//containers/json", "/v1.41/containers/json"),
            ("/v1.41/./containers/json", "/v1.41/containers/json"),
            ("/v1.41/containers/x/../json", "/v1.41/containers/json"),
            ("/v1.41/containers/x/%2e%2e/json", "/v1.41/containers/json"),
            ("/v1.41/containers/x%2F%2Fexport", "/v1.41/containers/x/export"),
            ("/v1.41/containers/x/.", "/v1.41/containers/x"),
            ("//_ping", "/_ping"),
        ]:
            self.refused(target, f"answers 301 to {clean!r}")

    def test_clean_paths_with_dots_pass(self) -> None:
        for target in ["/containers/.x/json", "/images/a..b/json", "/containers/json/", "/x/...", "/v1.41/_ping"]:
            self.assertEqual(canonical_target(target), target)

    def test_semicolons_in_the_query(self) -> None:
        # Go drops the pair; /build without an error, so ?networkmode=bridge;&networkmode=host is host.
        self.refused("/build?networkmode=bridge;&networkmode=host", "'networkmode=bridge;'")
        self.refused("/build?a=1;networkmode=host", "holds ';'")

    def test_bad_query_escapes(self) -> None:
        self.refused("/build?networkmode=%zz&networkmode=host", "'networkmode=%zz' has a bad %-escape")
        self.refused("/build?net%workmode=host", "bad %-escape")
        self.refused("/build?x=%", "bad %-escape")

    def test_query_escapes_that_are_not_utf8(self) -> None:
        self.refused("/images/create?fromImage=%ff", "not UTF-8")

    def test_too_many_parameters(self) -> None:
        self.assertEqual(len(params("&".join(["a=1"] * MAX_PARAMS))["a"]), MAX_PARAMS)
        self.refused("/x?" + "&".join(["a=1"] * (MAX_PARAMS + 1)), f"more than {MAX_PARAMS}")


class ParamsTests(SynchronousTestCase):
    """``url.ParseQuery``'s reading."""

    def test_go_reading(self) -> None:
        self.assertEqual(
            params("a=1&a=2&b&c=&=d&e+f=g+h%2B&&%61=3&x=%3D%26"),
            {"a": ["1", "2", "3"], "b": [""], "c": [""], "": ["d"], "e f": ["g h+"], "x": ["=&"]},
        )

    def test_empty(self) -> None:
        self.assertEqual(params(""), {})
        self.assertEqual(params("&&"), {})

    def test_utf8(self) -> None:
        self.assertEqual(params("name=%C3%A9t%C3%A9"), {"name": ["été"]})


class RepeatTests(SynchronousTestCase):
    """dockerd takes the first of a repeated parameter, except the few it reads as lists."""

    def test_a_scalar_given_twice(self) -> None:
        for method, path, query, name in [
            ("POST", "/containers/x/kill", "signal=SIGTERM&signal=SIGKILL", "signal"),
            ("POST", "/build", "networkmode=bridge&networkmode=host", "networkmode"),
            ("POST", "/images/create", "fromImage=ok&fromImage=evil", "fromImage"),
            ("POST", "/images/create", "fromImage=ok&%66romImage=evil", "fromImage"),  # the same key, decoded
            ("GET", "/not/an/api/route", "a=1&a=2", "a"),
        ]:
            with self.assertRaises(BadTarget) as caught:
                refuse_repeats(method, path, params(query))
            self.assertIn(f"{name!r} given 2 times", caught.exception.message)

    def test_lists_dockerd_reads_whole(self) -> None:
        # What `docker build -t a -t b --add-host ... --security-opt ...` sends.
        refuse_repeats("POST", "/build", params("t=a&t=b&extrahosts=a:1&extrahosts=b:2&securityopt=x&securityopt=y"))
        refuse_repeats("POST", "/commit", params("changes=ENV+A=1&changes=ENV+B=2"))
        refuse_repeats("POST", "/images/create", params("fromSrc=-&changes=A&changes=B"))
        refuse_repeats("GET", "/images/get", params("names=a&names=b"))
        refuse_repeats("DELETE", "/images/busybox", params("platforms=a&platforms=b"))
        refuse_repeats("GET", "/system/df", params("type=container&type=image"))

    def test_a_list_on_one_route_is_a_scalar_on_another(self) -> None:
        with self.assertRaises(BadTarget):
            refuse_repeats("POST", "/containers/create", params("t=a&t=b"))


class EndpointTests(SynchronousTestCase):
    def test_endpoint(self) -> None:
        self.assertEqual(endpoint("/v1.41/containers/x/export?a=1"), ("1.41", "/containers/x/export"))
        self.assertEqual(endpoint("/containers/a%3Fb/json"), (None, "/containers/a?b/json"))
        self.assertEqual(decoded_path("/networks/%C3%A9"), "/networks/é")


class FrontTests(SynchronousTestCase):
    """The front reads every request's target this way: refused before anything else sees it."""

    def head(self, target: str, *headers: bytes) -> bytes:
        return b"\r\n".join([b"POST " + target.encode() + b" HTTP/1.1", b"Host: docker", *headers]) + b"\r\n\r\n"

    def test_the_target_is_respelled_and_the_head_rebuilt(self) -> None:
        head = parse_request_head(self.head("/v1.41/containers/x/%65xport?a=1"))
        self.assertEqual((head.target, head.path), ("/v1.41/containers/x/export?a=1", "/v1.41/containers/x/export"))
        self.assertFalse(head.plain)  # dockerd gets the respelled target, not the raw head

    def test_a_plain_target_keeps_the_raw_head(self) -> None:
        self.assertTrue(parse_request_head(self.head("/v1.41/containers/x/export?a=%65")).plain)

    def test_refusals_are_bad_requests(self) -> None:
        for target in ["/x#y", "/v1.41//x", "/x?a=;", "/x/%zz", "/x?a=%zz"]:
            with self.assertRaises(BadRequest) as caught:
                parse_request_head(self.head(target))
            self.assertEqual(caught.exception.code, 400, target)

    def test_form_bodies(self) -> None:
        # Go's ParseForm reads them (body values before the query's); FormValue reads multipart too.
        for ctype in [
            b"application/x-www-form-urlencoded",
            b"APPLICATION/X-WWW-FORM-URLENCODED",
            b"application/x-www-form-urlencoded; charset=utf-8",
            b"application/x-www-form-urlencoded ;",
            b"multipart/form-data; boundary=x",
            b"Multipart/Form-Data",
        ]:
            for framing in (b"Content-Length: 20", b"Transfer-Encoding: chunked"):
                with self.assertRaises(BadRequest) as caught:
                    parse_request_head(self.head("/images/create?fromImage=ok", b"Content-Type: " + ctype, framing))
                self.assertIn("form body", caught.exception.message)

    def test_a_form_type_without_a_body_is_harmless(self) -> None:
        # curl -d '' sends one: an empty form has no parameters.
        for framing in (b"Content-Length: 0",):
            head = parse_request_head(
                self.head("/containers/x/start", b"Content-Type: application/x-www-form-urlencoded", framing)
            )
            self.assertFalse(head.has_body)
        parse_request_head(self.head("/containers/x/start", b"Content-Type: application/x-www-form-urlencoded"))

    def test_other_bodies_pass(self) -> None:
        for ctype in [b"application/json", b"application/x-tar", b"text/plain", b"application/octet-stream"]:
            parse_request_head(self.head("/build", b"Content-Type: " + ctype, b"Content-Length: 3"))


class ProxyTests(ProxyTestCase):
    """Through a Powerstrip in front of the fake dockerd: refused requests reach nothing."""

    RULES = 'version: 1\nendpoints:\n  "POST /*/containers/*/kill":\n    pre: [a]\nadapters:\n  a: $BASE/a\n'

    @defer.inlineCallbacks
    def refused(self, data: bytes, fragment: str) -> Any:
        self.start(self.RULES, a=echo_pre)
        client = yield self.connect()
        client.send(data)
        resp = yield client.response()
        message = self.assertDockerError(resp, 400, "powerstrip: ")
        self.assertIn(fragment, message)
        self.assertEqual(self.adapters.calls, [], "a hook was called")
        self.assertNothingReachedDocker()

    def test_a_scalar_given_twice_on_a_hooked_route(self) -> Any:
        return self.refused(
            request(b"POST", b"/v1.41/containers/x/kill?signal=SIGTERM&signal=SIGKILL"), "'signal' given 2 times"
        )

    @defer.inlineCallbacks
    def test_refused_before_its_body_was_asked_for(self) -> Any:
        # The body came with the head and was never asked for: it is dropped, then the connection ends.
        self.start(self.RULES, a=echo_pre)
        client = yield self.connect()
        client.send(
            request(b"POST", b"/v1.41/containers/x/kill?signal=A&signal=B", (b"Content-Length", b"2"), body=b"{}")
        )
        resp = yield client.response()
        self.assertEqual((resp.code, resp.value(b"connection")), (400, b"close"))
        yield client.wait_eof()
        self.assertNothingReachedDocker()

    def test_a_form_body_on_any_route(self) -> Any:
        body = b"signal=SIGKILL"
        return self.refused(
            request(
                b"POST",
                b"/v1.41/containers/x/wait?condition=x",  # not hooked
                (b"Content-Type", b"application/x-www-form-urlencoded"),
                (b"Content-Length", b"%d" % len(body)),
                body=body,
            ),
            "form body",
        )

    def test_a_fragment_on_any_route(self) -> Any:
        return self.refused(request(b"GET", b"/v1.41/build?x=#&networkmode=host"), "'#'")

    @defer.inlineCallbacks
    def test_a_scalar_given_twice_on_an_unhooked_route_is_forwarded(self) -> Any:
        # Nothing reads it but dockerd, which takes the first.
        self.start(self.RULES, a=echo_pre)
        client = yield self.connect()
        target = b"/v1.41/containers/x/wait?condition=a&condition=b"
        req, _, resp = yield self.roundtrip(client, request(b"POST", target), json_response(b"200 OK", {}))
        self.assertEqual((req.start, resp.code), (b"POST " + target + b" HTTP/1.1", 200))

    @defer.inlineCallbacks
    def test_an_unhooked_respelled_target_reaches_dockerd_respelled(self) -> Any:
        self.start(self.RULES, a=echo_pre)
        client = yield self.connect()
        req, _, _ = yield self.roundtrip(
            client, request(b"GET", b"/v1.41/containers/x/%65xport"), json_response(b"200 OK", {})
        )
        self.assertEqual(req.start, b"GET /v1.41/containers/x/export HTTP/1.1")
