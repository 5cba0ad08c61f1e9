"""Tests for ``powerstrip adapter-test`` (:func:`powerstrip.ops.cli.adapter_test`).

The adapters are real HTTP servers in this process (twisted.web on a random
loopback port, and one on a unix socket): a correct one, one that answers
garbage, one that refuses, one too slow for ``--timeout``, one with a wrongly
typed field; for protocol 2, an SDK adapter (``tests.sdk_adapters.v2``) and
ones that get protocol 2 wrong. The command's function runs on trial's
reactor against them.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from typing import Any
from urllib.parse import quote

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase
from twisted.web.server import NOT_DONE_YET, Request, Site

from powerstrip.config.spec import AdapterSpec
from powerstrip.ops.cli import adapter_test, judge, main
from powerstrip.sdk.samples import samples
from powerstrip.sdk.server import adapter_site
from tests.sdk_adapters import v2 as v2_sample
from tests.support import FakeAdapters, Tracker, echo_post, echo_pre, reply

PRE = [s.name for s in samples(1) if s.hook == "pre-hook"]
POST = [s.name for s in samples(1) if s.hook == "post-hook"]


def correct(request: Request, payload: dict) -> bytes:
    """Echoes every call back unchanged: the smallest correct adapter."""
    return (echo_pre if payload["Type"] == "pre-hook" else echo_post)(request, payload)


def string_code(request: Request, payload: dict) -> bytes:
    """Correct pre-hooks, but post-hook replies with ``"Code": "201"``."""
    if payload["Type"] == "pre-hook":
        return echo_pre(request, payload)
    return reply(
        request,
        {"PowerstripProtocolVersion": 1, "ModifiedServerResponse": {**payload["ServerResponse"], "Code": "201"}},
    )


def never_answers(request: Request, payload: dict) -> Any:
    return NOT_DONE_YET


class AdapterServers(TestCase):
    """The fake adapters, served over TCP and a unix socket, and running the command against them."""

    def setUp(self) -> None:
        self.adapters = FakeAdapters()
        self.adapters.handlers.update(
            {
                "correct": correct,
                "garbage": lambda request, payload: reply(request, b"<html>It works!</html>", ctype=b"text/html"),
                "refuses": lambda request, payload: reply(request, {"message": "policy: not here"}, code=403),
                "slow": never_answers,
                "string-code": string_code,
            }
        )
        self.tracker = Tracker()
        site = self.tracker.track_factory(Site(self.adapters))
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.dir = tempfile.mkdtemp(prefix="adapter-test-")
        self.socket = os.path.join(self.dir, "a.sock")
        self.unix = reactor.listenUNIX(self.socket, site)
        self.addCleanup(self._shutdown)

    @defer.inlineCallbacks
    def _shutdown(self) -> Any:
        yield self.tracker.close_all()
        yield self.port.stopListening()
        yield self.unix.stopListening()
        shutil.rmtree(self.dir, ignore_errors=True)

    @defer.inlineCallbacks
    def run_test(
        self, name: str, timeout: float = 5, only: str | None = None, url: str | None = None, protocol: int = 1
    ) -> Any:
        """Run the command's function against adapter ``name``: (exit status, output lines)."""
        url = url or f"http://127.0.0.1:{self.port.getHost().port}/{name}"
        out = io.StringIO()
        code = yield defer.ensureDeferred(
            adapter_test(reactor, AdapterSpec("adapter-test", url, timeout), protocol, only, out)
        )
        return code, out.getvalue().splitlines()

    def assertTable(self, lines: list[str], verdicts: dict[str, str], summary: str, protocol: int = 1) -> None:
        """One line per sample (hook, name, time, verdict) between a header and ``summary``."""
        self.assertIn(f"{len(verdicts)} protocol-{protocol} sample call(s)", lines[0])
        rows = {}
        for line in lines[1:-1]:
            hook, name, ms, unit, verdict = line.split(None, 4)
            self.assertIn(hook, ("pre-hook", "post-hook", "unwind", "event"))
            self.assertGreaterEqual(float(ms), 0)
            self.assertEqual(unit, "ms")
            rows[name] = verdict
        self.assertEqual(rows, verdicts)
        self.assertEqual(lines[-1], summary)


class AdapterTestTests(AdapterServers):
    @defer.inlineCallbacks
    def test_a_correct_adapter(self) -> Any:
        code, lines = yield self.run_test("correct")
        self.assertEqual(code, 0)
        self.assertTable(
            lines,
            dict.fromkeys(PRE + POST, "valid"),
            "8 call(s): 8 valid, 0 refused, 0 invalid, 0 fault(s): the adapter speaks protocol 1",
        )
        # It was sent every sample, as is.
        self.assertEqual([payload for _, payload in self.adapters.calls], [s.payload for s in samples(1)])

    @defer.inlineCallbacks
    def test_over_a_unix_socket(self) -> Any:
        code, lines = yield self.run_test("x", url=f"http+unix://{quote(self.socket, safe='')}/correct")
        self.assertEqual(code, 0, lines)
        self.assertIn("8 valid", lines[-1])

    @defer.inlineCallbacks
    def test_an_adapter_that_answers_garbage(self) -> Any:
        code, lines = yield self.run_test("garbage")
        self.assertEqual(code, 1)
        self.assertTable(
            lines,
            dict.fromkeys(PRE + POST, "INVALID: reply is not JSON: b'<html>It works!</html>'"),
            "8 call(s): 0 valid, 0 refused, 8 invalid, 0 fault(s): NOT protocol 1",
        )

    @defer.inlineCallbacks
    def test_refusals_are_valid_protocol(self) -> Any:
        code, lines = yield self.run_test("refuses")
        self.assertEqual(code, 0)
        self.assertTable(
            lines,
            dict.fromkeys(PRE + POST, "refused 403: policy: not here"),
            "8 call(s): 0 valid, 8 refused, 0 invalid, 0 fault(s): the adapter speaks protocol 1",
        )

    @defer.inlineCallbacks
    def test_a_slow_adapter_is_a_fault(self) -> Any:
        code, lines = yield self.run_test("slow", timeout=0.2, only="pre-hook")
        self.assertEqual(code, 1)
        self.assertTable(
            lines,
            dict.fromkeys(PRE, "FAULT: no answer within 0.2s"),
            "3 call(s): 0 valid, 0 refused, 0 invalid, 3 fault(s): NOT protocol 1",
        )
        for line in lines[1:-1]:
            self.assertGreaterEqual(float(line.split()[2]), 190)

    @defer.inlineCallbacks
    def test_a_wrong_field_is_named(self) -> Any:
        code, lines = yield self.run_test("string-code")
        self.assertEqual(code, 1)
        wrong = "INVALID: ModifiedServerResponse.Code: \"201\" is not of type 'integer'"
        self.assertTable(
            lines,
            {**dict.fromkeys(PRE, "valid"), **dict.fromkeys(POST, wrong)},
            "8 call(s): 3 valid, 0 refused, 5 invalid, 0 fault(s): NOT protocol 1",
        )

    @defer.inlineCallbacks
    def test_only_one_hook_type(self) -> Any:
        code, lines = yield self.run_test("string-code", only="pre-hook")
        self.assertEqual(code, 0)
        self.assertEqual([line.split()[1] for line in lines[1:-1]], PRE)
        code, lines = yield self.run_test("correct", only="post-hook")
        self.assertEqual((code, [line.split()[1] for line in lines[1:-1]]), (0, POST))

    @defer.inlineCallbacks
    def test_nobody_listening_is_a_fault(self) -> Any:
        port = self.port.getHost().port
        yield self.port.stopListening()
        code, lines = yield self.run_test("correct", only="pre-hook", url=f"http://127.0.0.1:{port}/correct")
        self.assertEqual(code, 1)
        self.assertIn("FAULT: cannot connect", lines[1])


PRE2 = [s.name for s in samples(2) if s.hook == "pre-hook"]
POST2 = [s.name for s in samples(2) if s.hook == "post-hook"]
UNWIND2 = [s.name for s in samples(2) if s.hook == "unwind"]
EVENT2 = [s.name for s in samples(2) if s.hook == "event"]


def bad_v2(request: Request, payload: dict) -> bytes:
    """Protocol 2 gone wrong: an owned header, a version 1 reply, failed unwinds, unknown events."""
    kind = payload["Type"]
    if kind == "pre-hook":
        sent = payload["ClientRequest"]
        go_on = {**sent, "Headers": {**sent["Headers"], "Content-Length": ["0"]}}
        return reply(request, {"PowerstripProtocolVersion": 2, "ModifiedClientRequest": go_on})
    if kind == "post-hook":
        return reply(request, {"PowerstripProtocolVersion": 1, "ModifiedServerResponse": payload["ServerResponse"]})
    if kind == "unwind":
        return reply(request, {"message": "cannot release"}, code=500)
    return reply(request, b"no such path", code=404, ctype=b"text/plain")


def both(request: Request, payload: dict) -> bytes:
    """A pre-hook reply that goes on and short-circuits at once."""
    return reply(
        request,
        {
            "PowerstripProtocolVersion": 2,
            "ModifiedClientRequest": payload["ClientRequest"],
            "ServerResponse": {"Code": 200},
        },
    )


class Protocol2Tests(AdapterServers):
    """``--protocol 2``: the SDK's adapter served over HTTP in this process, and adapters that get it wrong."""

    def setUp(self) -> None:
        super().setUp()
        self.adapters.handlers.update({"bad-v2": bad_v2, "both": both})
        site = self.tracker.track_factory(adapter_site(v2_sample.adapter))
        self.sdk_port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.sdk_port.stopListening)
        v2_sample.maintenance["on"] = True
        v2_sample.unwound.clear()
        v2_sample.events.clear()

    @defer.inlineCallbacks
    def test_the_sdk_speaks_protocol_2(self) -> Any:
        url = f"http://127.0.0.1:{self.sdk_port.getHost().port}/"
        code, lines = yield self.run_test("sdk", url=url, protocol=2)
        self.assertEqual(code, 0, lines)
        self.assertTable(
            lines,
            {**dict.fromkeys(PRE2 + POST2 + UNWIND2 + EVENT2, "valid"), "start": "valid (short-circuit 503)"},
            "14 call(s): 14 valid, 0 refused, 0 failed, 0 invalid, 0 fault(s): the adapter speaks protocol 2",
            protocol=2,
        )
        self.assertEqual(len(v2_sample.unwound), 3)
        self.assertEqual([action for action, _ in v2_sample.events], ["start", "die"])

    @defer.inlineCallbacks
    def test_the_same_sdk_adapter_speaks_protocol_1(self) -> Any:
        url = f"http://127.0.0.1:{self.sdk_port.getHost().port}/"
        code, lines = yield self.run_test("sdk", url=url)
        self.assertEqual(code, 0, lines)
        self.assertIn("8 valid", lines[-1])

    @defer.inlineCallbacks
    def test_bad_v2_replies(self) -> Any:
        code, lines = yield self.run_test("bad-v2", protocol=2)
        self.assertEqual(code, 1)
        owned = (
            'INVALID: ModifiedClientRequest.Headers.Content-Length: "Content-Length" is one of Powerstrip\'s '
            "own headers (hop-by-hop, or Content-Length), which is not allowed"
        )
        self.assertTable(
            lines,
            {
                **dict.fromkeys(PRE2, owned),
                **dict.fromkeys(POST2, "INVALID: PowerstripProtocolVersion: expected 2, got 1"),
                **dict.fromkeys(UNWIND2, "failed 500: cannot release"),
                **dict.fromkeys(EVENT2, "failed 404: no such path"),
            },
            "14 call(s): 0 valid, 0 refused, 6 failed, 8 invalid, 0 fault(s): NOT protocol 2",
            protocol=2,
        )

    @defer.inlineCallbacks
    def test_a_protocol_1_adapter_is_not_protocol_2(self) -> Any:
        code, lines = yield self.run_test("correct", protocol=2, only="pre-hook")
        self.assertEqual(code, 1)
        self.assertTable(
            lines,
            dict.fromkeys(PRE2, "INVALID: PowerstripProtocolVersion: expected 2, got 1"),
            "3 call(s): 0 valid, 0 refused, 0 failed, 3 invalid, 0 fault(s): NOT protocol 2",
            protocol=2,
        )

    @defer.inlineCallbacks
    def test_going_on_and_short_circuiting_at_once(self) -> Any:
        code, lines = yield self.run_test("both", protocol=2, only="pre-hook")
        self.assertEqual(code, 1)
        self.assertIn(
            "INVALID: (root): 'ModifiedClientRequest' (to go on) and 'ServerResponse' (to short-circuit) "
            "together; only one is allowed",
            lines[1],
        )

    @defer.inlineCallbacks
    def test_only_events(self) -> Any:
        url = f"http://127.0.0.1:{self.sdk_port.getHost().port}/"
        code, lines = yield self.run_test("sdk", url=url, protocol=2, only="event")
        self.assertEqual((code, [line.split()[1] for line in lines[1:-1]]), (0, EVENT2))


class JudgeTests(TestCase):
    def test_verdicts(self) -> None:
        ok = b'{"PowerstripProtocolVersion": 1, "ModifiedClientRequest": {"Method": "GET", "Request": "/_ping"}}'
        for answer, verdict in [
            ((200, "application/json", ok), ("valid", "valid")),
            ((204, None, ok), ("valid", "valid")),  # any 2xx; its Content-Type is not checked
            ((302, None, b""), ("refused", "refused 302: (empty body)")),
            ((500, "text/plain", b"boom\nat line 3"), ("refused", "refused 500: boom at line 3")),
            ((403, "application/json", b'{"message": "no"}'), ("refused", "refused 403: no")),
            ((403, "application/json", b'["no"]'), ("refused", 'refused 403: ["no"]')),
            (
                (200, "application/json", b'{"PowerstripProtocolVersion": 1}'),
                ("INVALID", "INVALID: (root): 'ModifiedClientRequest' is required"),
            ),
            ((200, None, b"\xff"), ("INVALID", "INVALID: reply is not JSON: b'\\xff'")),
        ]:
            self.assertEqual(judge(answer, "v1/pre-hook-reply"), verdict, answer)

    def test_protocol_2_verdicts(self) -> None:
        short = b'{"PowerstripProtocolVersion": 2, "ServerResponse": {"Code": 403, "Body": "no"}}'
        self.assertEqual(judge((200, None, short), "v2/pre-hook-reply"), ("valid", "valid (short-circuit 403)"))
        self.assertEqual(judge((200, None, short), "v1/pre-hook-reply")[0], "INVALID")
        # Unwind and event calls: any 2xx will do; anything else is a failure Powerstrip logs or retries.
        self.assertEqual(judge((204, None, b""), None), ("valid", "valid"))
        self.assertEqual(judge((200, "text/html", b"<html>"), None), ("valid", "valid"))
        self.assertEqual(judge((503, None, b'{"message": "busy"}'), None), ("failed", "failed 503: busy"))


class UsageTests(TestCase):
    def run_main(self, *argv: str) -> tuple[Any, str]:
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            try:
                code = main(["adapter-test", *argv])
            except SystemExit as e:
                code = e.code
        return code, err.getvalue()

    def test_usage_errors_exit_2(self) -> None:
        for argv, message in [
            (["ftp://adapter/hook"], "'ftp://adapter/hook' is not an http://, https://, http+unix://"),
            (["http+unix://run%2Fa.sock/hook"], "the socket's absolute path"),
            (["http://adapter/hook", "--timeout", "soon"], "timeout 'soon' is not a duration"),
            (["http://adapter/hook", "--protocol", "9"], "invalid choice: 9"),
            (["http://adapter/hook", "--only", "both"], "invalid choice: 'both'"),
            (["http://adapter/hook", "--only", "event"], "protocol 1 has no event calls"),
            (["http://adapter/hook", "--only", "unwind", "--protocol", "1"], "protocol 1 has no unwind calls"),
            (["python:examples.debug:adapter"], "an in-process adapter has no URL"),
            ([], "the following arguments are required: url"),
        ]:
            code, err = self.run_main(*argv)
            self.assertEqual(code, 2, argv)
            self.assertIn(message, err)
            self.assertIn("powerstrip adapter-test: error:", err)

    def test_a_reader_that_stops_is_no_error(self) -> None:
        """``powerstrip adapter-test URL | head -2``: the output's reader leaving ends the run quietly."""
        with socket.socket() as sock:  # accepts, never answers: each call's line comes after its timeout
            sock.bind(("127.0.0.1", 0))
            sock.listen(16)
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "powerstrip.ops.cli",
                    "adapter-test",
                    f"http://127.0.0.1:{sock.getsockname()[1]}/",
                    "--timeout",
                    "200ms",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            self.assertIn(b"8 protocol-1 sample call(s)", proc.stdout.readline())
            proc.stdout.close()  # before the first call's line is written
            _, err = proc.communicate(timeout=60)
        self.assertEqual((proc.returncode, err.decode()), (1, ""))
