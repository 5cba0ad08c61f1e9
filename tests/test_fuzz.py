"""Property tests (hypothesis): config parsing, route matching, and the HTTP front.

Whatever the input, Powerstrip answers with a clear error or a valid result:
no other exception escapes, and nothing malformed is forwarded to dockerd.
"""

from __future__ import annotations

import re
import string

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from powerstrip.config.matching import match
from powerstrip.config.spec import Config, ConfigError, parse_config
from powerstrip.proxy.front import FrontFactory
from powerstrip.proxy.route import Proxy
from powerstrip.wire.endpoints import DockerAddress
from powerstrip.wire.http11 import ProtocolError, parse_response_head

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.text(max_size=12),
    st.sampled_from(["http://a/x", "https://b:1/y", "pre", "post", "url", "2s", "ignore"]),
)
keys = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "version",
            "endpoints",
            "adapters",
            "pre",
            "post",
            "url",
            "timeout",
            "failure",
            "POST /*/containers/create",
            "* /*",
            "GET /_ping",
        ]
    ),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=20,
)


class ConfigFuzz(SynchronousTestCase):
    @FAST
    @given(documents)
    def test_any_document_is_a_config_or_a_config_error(self, doc: object) -> None:
        try:
            config = parse_config(yaml.safe_dump(doc))
        except ConfigError as e:
            self.assertTrue(str(e).startswith("<string>: "))
            return
        self.assertIsInstance(config, Config)
        for ep in config.endpoints:
            self.assertTrue(ep.pre or ep.post)
            for adapter in ep.pre + ep.post:
                self.assertIs(config.adapters[adapter.name], adapter)

    @FAST
    @given(st.text(max_size=200))
    def test_any_text_is_a_config_or_a_config_error(self, text: str) -> None:
        try:
            parse_config(text)
        except ConfigError:
            pass


CONFIG = parse_config("""
version: 1
endpoints:
  "POST /*/containers/create": {pre: [a]}
  "* /*/containers/*/start": {post: [a]}
  "GET /v1.4?/info": {pre: [a]}
adapters:
  a: http://a/hook
""")
segments = st.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=8)


class MatchingFuzz(SynchronousTestCase):
    @FAST
    @given(st.text(max_size=10), st.text(max_size=60))
    def test_match_never_raises(self, method: str, path: str) -> None:
        route = match(CONFIG, method, path)
        self.assertEqual(route.hooked, bool(route.patterns))

    @FAST
    @given(st.lists(segments, min_size=1, max_size=4), st.sampled_from(["GET", "POST", "DELETE"]), st.text(max_size=10))
    def test_unversioned_paths_match_like_versioned_ones(self, parts: list[str], method: str, query: str) -> None:
        path = "/" + "/".join(parts)
        versioned = match(CONFIG, method, "/v1.41" + path + "?" + query)
        unversioned = match(CONFIG, method, path)
        # Rules written /*/... treat a missing version like any version.
        slash_star = [p for p in versioned.patterns if p.split()[1].startswith("/*/")]
        for pattern in slash_star:
            self.assertIn(pattern, unversioned.patterns)


def _request_lines() -> st.SearchStrategy[bytes]:
    methods = st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"G ET", b"", b"\x00"])
    paths = st.one_of(
        st.sampled_from([b"/_ping", b"/v1.41/containers/create", b"*", b"", b"/a b"]), st.binary(max_size=20)
    )
    versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"", b"HTTP/1.1 x"])
    headers = st.lists(
        st.one_of(
            st.sampled_from(
                [
                    b"Host: docker",
                    b"Content-Length: 5",
                    b"Content-Length: -1",
                    b"Content-Length: 1x",
                    b"Transfer-Encoding: chunked",
                    b"Transfer-Encoding: gzip",
                    b"Connection: Upgrade",
                    b"Upgrade: tcp",
                    b"Content-Type: application/json",
                    b" folded",
                    b"NoColon",
                    b"Bad Name: x",
                    b"X: a\x00b",
                ]
            ),
            st.binary(max_size=30),
        ),
        max_size=6,
    )
    bodies = st.one_of(
        st.just(b""), st.sampled_from([b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n"]), st.binary(max_size=40)
    )
    return st.builds(
        lambda m, p, v, hs, b: m + b" " + p + b" " + v + b"\r\n" + b"".join(h + b"\r\n" for h in hs) + b"\r\n" + b,
        methods,
        paths,
        versions,
        headers,
        bodies,
    )


def _parses_as_request(data: bytes) -> None:
    """Assert ``data`` (what reached dockerd) is one well-formed HTTP/1.1 request head (+ body)."""
    head, sep, _ = data.partition(b"\r\n\r\n")
    assert sep, f"no complete head: {data[:200]!r}"
    lines = head.split(b"\r\n")
    method, uri, version = lines[0].split(b" ")
    assert method.isalpha() and uri.startswith(b"/") and version == b"HTTP/1.1", lines[0]
    names = []
    for line in lines[1:]:
        name, colon, value = line.partition(b": ")
        assert colon and name and b" " not in name and b"\x00" not in value, line
        names.append(name.lower())
    assert not ({b"content-length", b"transfer-encoding"} <= set(names)), "ambiguous framing forwarded"
    # The status-line parser is the response-side twin; it must not choke on a reused head shape either.
    try:
        parse_response_head(b"HTTP/1.1 200 OK\r\n" + b"\r\n".join(lines[1:]) + b"\r\n\r\n")
    except ProtocolError as e:
        raise AssertionError(f"forwarded headers do not parse: {e}") from None


class FrontFuzz(SynchronousTestCase):
    """Random bytes at the HTTP front: no crash, nothing malformed forwarded."""

    def _feed(self, data: bytes) -> tuple[StringTransport, list[bytes]]:
        reactor = MemoryReactorClock()
        resource = Proxy(reactor, Config.passthrough(), DockerAddress.parse("unix:///fuzz.sock"))
        site = FrontFactory(resource)
        channel = site.buildProtocol(None)
        client = StringTransport()
        channel.makeConnection(client)
        channel.dataReceived(data)
        forwarded = []
        for _path, factory, *_ in reactor.unixClients:
            upstream = StringTransport()
            proto = factory.buildProtocol(None)
            proto.makeConnection(upstream)
            reactor.advance(0)
            forwarded.append(upstream.value())
        return client, forwarded

    @FAST
    @given(_request_lines())
    def test_request_shaped_garbage(self, data: bytes) -> None:
        client, forwarded = self._feed(data)
        for sent in forwarded:
            if sent:
                _parses_as_request(sent)
        if not forwarded:
            reply = client.value()
            status = reply.split(b"\r\n", 1)[0]
            self.assertTrue(reply == b"" or re.fullmatch(rb"HTTP/1\.[01] 400 .*", status), reply[:100])

    @FAST
    @given(st.binary(max_size=300))
    def test_random_bytes(self, data: bytes) -> None:
        _, forwarded = self._feed(data)
        for sent in forwarded:
            if sent:
                _parses_as_request(sent)

    def test_smuggling_framing_is_refused(self) -> None:
        data = (
            b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        client, forwarded = self._feed(data)
        self.assertEqual(forwarded, [])
        self.assertTrue(client.value().startswith(b"HTTP/1.1 400"))
