"""Issue 25: a differential property test of :mod:`powerstrip.wire.target` and the front's
form-body refusal against Go itself -- ``net/http``'s request reading, ``url.ParseQuery`` and
``mime.ParseMediaType``, the code dockerd runs -- compiled from ``tests/goreader/main.go``.

On generated request targets (escapes good and bad, of every byte class, dot segments, ``//``,
``;``, ``#``, ``+``, repeated keys) and ``Content-Type`` values:

- whatever Powerstrip accepts, Go accepts too, routes as it is (no clean-path redirect), reads
  the query of without error, and reads *exactly* as Powerstrip shows it to hooks: the
  decoded path, every parameter with its values in order; and Go reads the canonical spelling
  Powerstrip forwards exactly as it reads what the client sent;
- every ``Content-Type`` whose body Go reads as parameters (``r.FormValue``), and every one
  ``mime.ParseMediaType`` calls ``multipart/form-data``, is refused when a body follows.

Powerstrip may refuse what Go takes (it is deliberately stricter: ``#``, non-UTF-8 escapes,
any ``multipart/``); those examples only count for not being read differently.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from powerstrip.wire.http11 import BadRequest, parse_request_head
from powerstrip.wire.target import BadTarget, canonical_target, decoded_path, params

SOURCE = Path(__file__).resolve().parent / "goreader" / "main.go"


class GoReader:
    """The compiled goreader, one process answering a line per question."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="goreader-")
        binary = os.path.join(self.dir, "goreader")
        env = {**os.environ, "GOCACHE": os.path.join(self.dir, "cache"), "GO111MODULE": "off"}
        env.setdefault("HOME", self.dir)
        subprocess.run(["go", "build", "-o", binary, str(SOURCE)], check=True, env=env, capture_output=True)
        self.proc = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, **question: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(question) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return answer

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _go_form(answer: dict[str, Any]) -> dict[bytes, list[bytes]]:
    return {bytes.fromhex(k): [bytes.fromhex(v) for v in vs] for k, vs in answer["form"]}


# Targets built from the pieces Go and Python could read apart.
_PATH_PIECES = st.sampled_from(
    [
        "/", "/", "/", "//", "/.", "/..", ".", "..", "containers", "x", "export", "v1.41", "_ping",
        "%2F", "%2f", "%2E", "%2e", "%65", "%25", "%3F", "%23", "%20", "%C3%A9", "%FF", "%c3", "%00",
        "%", "%z", "%zz", "%4", "+", ";", "#", "@", ":", "!", "~", "\\", '"',
    ]
)  # fmt: skip
_QUERY_PIECES = st.sampled_from(
    [
        "&", "&", "=", "a", "a", "networkmode", "host", "b", "+", "%2B", "%26", "%3D", "%61", "%41",
        ";", "#", "%", "%zz", "%4", "%FF", "%C3%A9", "%c3", "%00", "?", "/", ".", "%3B", "=%",
    ]
)  # fmt: skip


@st.composite
def targets(draw: st.DrawFn) -> str:
    path = "/" + "".join(draw(st.lists(_PATH_PIECES, max_size=8)))
    if draw(st.booleans()):
        return path
    return path + "?" + "".join(draw(st.lists(_QUERY_PIECES, max_size=12)))


_CTYPE_PIECES = st.sampled_from(
    [
        "application/x-www-form-urlencoded", "APPLICATION/X-WWW-FORM-URLENCODED", "Application/X-Www-Form-Urlencoded",
        "multipart/form-data", "Multipart/Form-Data", "multipart/mixed", "application/json", "text/plain",
        " ", "\t", ";", "; charset=utf-8", "; boundary=x", ",", "=", '"', "x", "/", "form-urlencoded",
    ]
)  # fmt: skip


_reader: list[GoReader] = []


def go_reader() -> GoReader:
    """The one goreader of this run (built on first use, closed at exit)."""
    if not _reader:
        if shutil.which("go") is None:
            if os.environ.get("CI"):
                raise AssertionError("go is not installed (ci/test.sh installs golang-go)")
            raise SkipTest("go is not installed: apt-get install golang-go")
        _reader.append(GoReader())
        atexit.register(_reader[0].close)
    return _reader[0]


class DifferentialTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.go = go_reader()

    @settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(targets())
    @example("/v1.41/containers/x/%65xport")
    @example("/build?networkmode=bridge;&networkmode=host")
    @example("/build?x=#&networkmode=host")
    @example("/build?networkmode=%zz&networkmode=host")
    @example("/v1.41/containers/x%2F%2E%2E/json")
    @example("/images/create?fromImage=a+b&fromImage=c")
    def test_targets(self, target: str) -> None:
        try:
            canonical = canonical_target(target)
        except BadTarget:
            return  # stricter than Go is allowed
        sent, forwarded = self.go.ask(target=target), self.go.ask(target=canonical)
        self.assertTrue(sent["ok"], f"Go refuses {target!r}, which Powerstrip forwards")
        self.assertEqual(sent, forwarded, f"Go reads {target!r} and its canonical {canonical!r} differently")
        self.assertTrue(sent["clean"], f"dockerd redirects {target!r}, which Powerstrip forwards")
        self.assertFalse(sent["form_error"], f"Go drops a parameter of {target!r}")
        self.assertEqual(bytes.fromhex(sent["path"]), decoded_path(canonical.partition("?")[0]).encode())
        shown = {k.encode(): [v.encode() for v in vs] for k, vs in params(canonical.partition("?")[2]).items()}
        self.assertEqual(shown, _go_form(sent), f"the hooks are shown other parameters of {target!r} than Go reads")

    @settings(max_examples=600, deadline=None)
    @given(st.lists(_CTYPE_PIECES, min_size=1, max_size=5).map("".join))
    @example("application/x-www-form-urlencoded")
    @example("multipart/form-data; boundary=x")
    def test_form_content_types(self, ctype: str) -> None:
        answer = self.go.ask(content_type=ctype)
        if not answer["ok"]:
            return  # Go refuses the request itself
        reads_form = answer["form_read"] or answer["media_type"] == "multipart/form-data"
        head = b"POST /build HTTP/1.1\r\nHost: docker\r\nContent-Type: %s\r\nContent-Length: 4\r\n\r\n" % ctype.encode()
        try:
            parse_request_head(head)
        except BadRequest:
            return
        self.assertFalse(reads_form, f"Go reads a {ctype!r} body as parameters, and Powerstrip forwards it")
