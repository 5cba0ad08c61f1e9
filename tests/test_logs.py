"""Tests for :mod:`powerstrip.ops.logs`: ``--log-format json``.

Three layers: the JSON line made from one event; the observer twistd picks
up from the application (``--logfile``, ``-n``, rotation); and the events
the proxy really logs about requests (request ids, access-line fields).
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import sys
import tempfile
from typing import Any

from twisted.application import service
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogPublisher,
    globalLogPublisher,
)
from twisted.python import log as legacy
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from powerstrip.ops import logs
from powerstrip.ops.access import AccessLog
from powerstrip.ops.logs import PowerstripService, format_json_line, twistd_log_file
from powerstrip.ops.service import Options
from tests.support import (
    ATTACH_URI,
    CREATE_PRE,
    FRAME,
    PASSTHROUGH,
    UPGRADED,
    VERSION_RESPONSE,
    ProxyTestCase,
    add_env,
    attach_request,
    json_request,
    json_response,
    reply,
    request,
    unused_port,
)

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def lines_of(emit: Any) -> list[str]:
    """The JSON lines ``emit(log)`` produces through a fresh :class:`Logger`."""
    out: list[str] = []
    publisher = LogPublisher()
    publisher.addObserver(lambda event: out.append(format_json_line(event)))
    emit(Logger(namespace="test.ns", observer=publisher))
    return out


def one(emit: Any) -> dict:
    """The single JSON object ``emit(log)`` logs, checked to be exactly one line."""
    [line] = lines_of(emit)
    assert line.endswith("\n") and line.count("\n") == 1, repr(line)
    return json.loads(line)


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class FormatTests(TestCase):
    """One event → one JSON object on one line."""

    def test_info_event(self) -> None:
        record = one(lambda log: log.info("hello {who}", who="world"))
        self.assertEqual(set(record), {"time", "level", "namespace", "message"})
        self.assertEqual((record["level"], record["namespace"], record["message"]), ("info", "test.ns", "hello world"))
        self.assertRegex(record["time"], ISO_MS)

    def test_time_is_utc_with_milliseconds(self) -> None:
        line = format_json_line({"log_format": "x", "log_time": 1700000000.1234, "log_namespace": "n"})
        self.assertEqual(json.loads(line)["time"], "2023-11-14T22:13:20.123Z")

    def test_levels(self) -> None:
        for name in ("debug", "info", "warn", "error", "critical"):
            record = one(lambda log, name=name: getattr(log, name)("at {name}", name=name))
            self.assertEqual((record["level"], record["message"]), (name, f"at {name}"))

    def test_failure_carries_traceback(self) -> None:
        def emit(log: Logger) -> None:
            try:
                raise ZeroDivisionError("division by zero")
            except ZeroDivisionError:
                log.failure("{flow}: internal error", flow="#abc GET /x", request_id="abc")

        record = one(emit)
        self.assertEqual(record["level"], "critical")
        self.assertEqual(record["message"], "#abc GET /x: internal error")
        self.assertEqual(record["request_id"], "abc")
        self.assertIn("ZeroDivisionError", record["traceback"])
        self.assertIn("Traceback", record["traceback"])

    def test_multiline_message_stays_one_line(self) -> None:
        record = one(lambda log: log.warn("first\nsecond\r\nthird"))
        self.assertEqual(record["message"], "first\nsecond\r\nthird")

    def test_request_id_and_unprinted_fields_are_kept(self) -> None:
        hooks = [{"adapter": "label", "phase": "pre", "ms": 1.5, "outcome": "ok"}]
        record = one(
            lambda log: log.info(
                "{line}",
                line="#abc POST /v1.41/containers/create -> 201 88B 3.2ms",
                request_id="abc",
                method="POST",
                path="/v1.41/containers/create",
                status=201,
                bytes=88,
                duration_ms=3.2,
                hooks=hooks,
            )
        )
        self.assertEqual(
            record,
            {
                "time": record["time"],
                "level": "info",
                "namespace": "test.ns",
                "message": "#abc POST /v1.41/containers/create -> 201 88B 3.2ms",
                "request_id": "abc",
                "method": "POST",
                "path": "/v1.41/containers/create",
                "status": 201,
                "bytes": 88,
                "duration_ms": 3.2,
                "hooks": hooks,
            },
        )

    def test_printed_fields_are_not_repeated(self) -> None:
        record = one(lambda log: log.info("{a} {b.real} {c()} {d[0]}", a=1, b=2, c=lambda: 3, d=[4], e=5))
        self.assertEqual(record["message"], "1 2 3 4")
        self.assertEqual(record["e"], 5)
        self.assertFalse({"a", "b", "c", "d"} & set(record))

    def test_fields_never_replace_the_fixed_keys(self) -> None:
        record = one(lambda log: log.info("text", message="other", time="then", namespace="y", traceback="z"))
        self.assertEqual((record["message"], record["namespace"]), ("text", "test.ns"))
        self.assertNotIn("traceback", record)
        self.assertRegex(record["time"], ISO_MS)

    def test_unserialisable_values_are_reprs(self) -> None:
        loop: dict = {}
        loop["self"] = loop
        thing = object()
        record = one(
            lambda log: log.info(
                "values",
                thing=thing,
                tags={"a"},
                raw=b"\xff",
                nan=float("nan"),
                inf=float("-inf"),
                keyed={(1, 2): "tuple key", "ok": [1, thing]},
                loop=loop,
                bad=_BadRepr(),
                text="caf\u00e9 \udcff",
            )
        )
        self.assertEqual(record["thing"], repr(thing))
        self.assertEqual(record["tags"], "{'a'}")
        self.assertEqual(record["raw"], "b'\\xff'")
        self.assertEqual((record["nan"], record["inf"]), ("nan", "-inf"))
        self.assertEqual(record["keyed"], {"(1, 2)": "tuple key", "ok": [1, repr(thing)]})
        self.assertIn("{...}", json.dumps(record["loop"]))
        self.assertEqual(record["bad"], "<unrepresentable _BadRepr>")
        self.assertEqual(record["text"], "caf\u00e9 \udcff")

    def test_output_is_ascii(self) -> None:
        [line] = lines_of(lambda log: log.info("caf\u00e9 \udcff"))
        self.assertTrue(line.isascii())
        self.assertEqual(json.loads(line)["message"], "caf\u00e9 \udcff")

    def test_unformattable_event_still_logged(self) -> None:
        record = one(lambda log: log.info("{missing}"))
        self.assertIn("Unable to format event", record["message"])

    def test_nothing_for_an_event_without_text(self) -> None:
        self.assertEqual(lines_of(lambda log: log.info(None, request_id="abc")), [None])

    def test_a_bug_in_formatting_still_gives_a_line(self) -> None:
        def broken(event: Any) -> Any:
            raise RuntimeError("bug")

        self.patch(logs, "json_record", broken)
        record = one(lambda log: log.info("hello"))
        self.assertEqual((record["level"], record["namespace"]), ("error", "powerstrip.logs"))
        self.assertIn("RuntimeError('bug')", record["message"])

    def test_legacy_events(self) -> None:
        """twistd and twisted.internet still log through twisted.python.log."""
        out: list[str] = []

        def observer(event: Any) -> None:
            out.append(format_json_line(event))

        globalLogPublisher.addObserver(observer)
        try:
            legacy.msg("PowerstripSite starting on 2375")
            legacy.err(Failure(ZeroDivisionError("oops")), "while testing")
        finally:
            globalLogPublisher.removeObserver(observer)
        self.flushLoggedErrors(ZeroDivisionError)
        msg, err = (json.loads(line) for line in out)
        self.assertEqual(msg["message"], "PowerstripSite starting on 2375")
        self.assertEqual((msg["level"], msg["namespace"]), ("info", "log_legacy"))
        self.assertFalse({"isError", "system", "format"} & set(msg), msg)
        self.assertEqual((err["level"], err["message"]), ("critical", "while testing"))
        self.assertIn("ZeroDivisionError: oops", err["traceback"])
        self.assertFalse({"isError", "why", "failure"} & set(err), err)


class InstallTests(TestCase):
    """The observer twistd finds on the application (app.py, AppLogger.start)."""

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.path = os.path.join(self.dir, "powerstrip.log")
        # twistd_log_file claims SIGUSR1 for rotation when nobody has it.
        old = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        self.addCleanup(signal.signal, signal.SIGUSR1, old)

    def attach(self, log_format: str, twistd_options: dict | None) -> Any:
        app = service.Application("powerstrip")
        PowerstripService(log_format, twistd_options).setServiceParent(app)
        return app

    def emit(self, observer: Any, text: str) -> None:
        Logger(namespace="test.ns", observer=observer).info(text)

    def read_lines(self, path: str) -> list[dict]:
        with open(path) as f:
            return [json.loads(line) for line in f]

    def test_json_sets_the_application_observer_to_the_logfile(self) -> None:
        app = self.attach("json", {"logfile": self.path, "nodaemon": True})
        observer = app.getComponent(ILogObserver)
        self.assertIsInstance(observer, FilteringLogObserver)
        self.emit(observer, "one")
        self.emit(observer, "two")
        self.assertEqual([r["message"] for r in self.read_lines(self.path)], ["one", "two"])
        # The service is still the application's, as with a plain MultiService.
        self.assertEqual(len(list(service.IServiceCollection(app))), 1)

    def test_text_is_twistds_own_format_on_a_shared_file(self) -> None:
        """Text lines as twistd writes them, to a file the access log shares (one buffer, in order)."""
        access = AccessLog(None)
        top = PowerstripService("text", {"logfile": self.path, "nodaemon": True})
        top.log_file_users.append(access)
        app = service.Application("powerstrip")
        top.setServiceParent(app)
        observer = app.getComponent(ILogObserver)
        observer({"log_format": "hello {x}", "x": 1, "log_time": 0.0, "log_namespace": "t", "log_level": LogLevel.info})
        access.out.flush()
        with open(self.path, encoding="utf-8") as f:
            line = f.read()
        self.assertIn("[t#info] hello 1", line)

    def test_text_with_syslog_or_logger_leaves_twistd_its_choice(self) -> None:
        for option in ("syslog", "logger"):
            access = AccessLog(None)
            top = PowerstripService("text", {option: True, "nodaemon": True})
            top.log_file_users.append(access)
            app = service.Application("powerstrip")
            top.setServiceParent(app)
            self.assertIsNone(app.getComponent(ILogObserver, None), option)
            self.assertIsNone(access.out, option)  # access lines go as events, to twistd's observer

    def test_an_observer_already_set_is_kept(self) -> None:
        app = service.Application("powerstrip")
        mine: list = []
        app.setComponent(ILogObserver, mine.append)
        PowerstripService("json", {"nodaemon": True}).setServiceParent(app)
        self.assertEqual(app.getComponent(ILogObserver), mine.append)

    def test_outside_an_application_nothing_happens(self) -> None:
        top = service.MultiService()
        PowerstripService("json", None).setServiceParent(top)
        self.assertEqual(len(list(top)), 1)

    def test_stdout_with_nodaemon_and_no_logfile(self) -> None:
        for options in ({"nodaemon": True, "logfile": None}, {"nodaemon": True, "logfile": "-"}, None):
            out = io.StringIO()
            self.patch(sys, "stdout", out)
            self.emit(self.attach("json", options).getComponent(ILogObserver), "hello")
            self.assertEqual(json.loads(out.getvalue())["message"], "hello")

    def test_daemon_cannot_log_to_stdout(self) -> None:
        self.assertRaises(SystemExit, twistd_log_file, {"nodaemon": False, "logfile": "-"})

    def test_daemon_default_is_twistd_log(self) -> None:
        cwd = os.getcwd()
        os.chdir(self.dir)
        self.addCleanup(os.chdir, cwd)
        self.emit(self.attach("json", {"nodaemon": False, "logfile": None}).getComponent(ILogObserver), "hi")
        self.assertEqual(self.read_lines(os.path.join(self.dir, "twistd.log"))[0]["message"], "hi")

    @defer.inlineCallbacks
    def test_sigusr1_rotates_the_logfile(self) -> Any:
        observer = self.attach("json", {"logfile": self.path, "nodaemon": False}).getComponent(ILogObserver)
        self.emit(observer, "before")
        handler = signal.getsignal(signal.SIGUSR1)
        self.assertTrue(callable(handler))
        handler(signal.SIGUSR1, None)
        yield deferLater(reactor, 0.05, lambda: None)
        self.emit(observer, "after")
        self.assertEqual([r["message"] for r in self.read_lines(self.path + ".1")], ["before"])
        self.assertEqual([r["message"] for r in self.read_lines(self.path)], ["after"])

    def held_access_lines(self, options: dict, read: Any) -> None:
        """Access lines written to the service's log file are held until a flush (the access log's
        timer, or the next log event, which lands after them); ``read()`` is the file's text."""
        app = service.Application("powerstrip")
        top = PowerstripService("text", options)
        access = AccessLog(reactor)
        top.log_file_users.append(access)
        top.setServiceParent(app)
        assert access.out is not None
        access.out.write("access line 1\n")
        access.out.write("access line 2\n")
        self.assertEqual(read(), "", "a write per access line reached the file")
        self.emit(app.getComponent(ILogObserver), "an event")
        lines = read().splitlines()
        self.assertEqual(lines[:2], ["access line 1", "access line 2"])
        self.assertTrue(lines[2].endswith("an event"), lines)
        access.out.write("access line 3\n")
        access.flush()
        self.assertEqual(read().splitlines()[-1], "access line 3")

    def test_access_lines_to_a_logfile_are_held(self) -> None:
        """twistd's LogFile is unbuffered: one write system call a line, unless held."""

        def read() -> str:
            with open(self.path) as f:
                return f.read()

        self.held_access_lines({"logfile": self.path, "nodaemon": False}, read)

    def test_access_lines_to_an_unbuffered_stdout_are_held(self) -> None:
        """Under PYTHONUNBUFFERED (the image sets it) stdout writes at once: held, too."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.held_access_lines({"nodaemon": True, "logfile": None}, out.getvalue)

    def test_sigusr1_left_alone_when_taken(self) -> None:
        def mine(*_: Any) -> None:
            pass

        signal.signal(signal.SIGUSR1, mine)
        twistd_log_file({"logfile": self.path, "nodaemon": False})
        self.assertIs(signal.getsignal(signal.SIGUSR1), mine)

    def twistd_config(self, *args: str) -> Any:
        from twisted.scripts.twistd import ServerOptions

        config = ServerOptions()
        config.parseOptions(list(args))
        return config

    def test_through_twistd_options(self) -> None:
        """As twistd runs it: parse, makeService, attach (app.py createOrGetApplication)."""
        from twisted.scripts._twistd_unix import UnixApplicationRunner

        cfg = os.path.join(self.dir, "adapters.yml")
        with open(cfg, "w") as f:
            f.write(PASSTHROUGH)
        config = self.twistd_config(
            "-n",
            f"--logfile={self.path}",
            "powerstrip",
            "--log-format",
            "json",
            "--config",
            cfg,
            "--listen",
            f"tcp:{unused_port()}:interface=127.0.0.1",
        )
        app = UnixApplicationRunner(config).createOrGetApplication()
        self.emit(app.getComponent(ILogObserver), "via twistd")
        self.assertEqual(self.read_lines(self.path)[0]["message"], "via twistd")

    def test_bad_format_is_a_usage_error(self) -> None:
        options = Options()
        error = self.assertRaises(usage.UsageError, options.parseOptions, ["--log-format", "yaml"])
        self.assertIn("--log-format must be one of text, json", str(error))

    def test_json_with_syslog_is_a_usage_error(self) -> None:
        error = self.assertRaises(
            usage.UsageError, self.twistd_config, "--syslog", "powerstrip", "--log-format", "json"
        )
        self.assertIn("--syslog", str(error))


def access_events(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("log_namespace") == "powerstrip.access" and "status" in e]


class RequestLogTests(ProxyTestCase):
    """What the proxy logs about requests carries the request id and the access fields."""

    def setUp(self) -> None:
        super().setUp()
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def records(self, **match: Any) -> list[dict]:
        """The JSON objects of the events so far that have all of ``match``'s values."""
        out = []
        for event in self.events:
            line = format_json_line(event)
            if line is None:
                continue
            record = json.loads(line)
            if all(record.get(k) == v for k, v in match.items()):
                out.append(record)
        return out

    @defer.inlineCallbacks
    def wait_for(self, **match: Any) -> Any:
        for _ in range(200):
            found = self.records(**match)
            if found:
                return found
            yield deferLater(reactor, 0.01, lambda: None)
        self.fail(f"no log record with {match}: {[format_json_line(e) for e in self.events]}")

    @defer.inlineCallbacks
    def test_access_line_fields_and_response_header(self) -> Any:
        self.start()
        client = yield self.connect()
        _, _, resp = yield self.roundtrip(client, request(b"GET", b"/v1.41/version?x=1"), VERSION_RESPONSE)
        request_id = resp.value(b"powerstrip-request-id").decode()
        self.assertRegex(request_id, r"^[0-9a-f]{16}$")
        [record] = yield self.wait_for(request_id=request_id)
        self.assertEqual(
            {k: record[k] for k in ("level", "namespace", "method", "path", "status", "hooks")},
            {
                "level": "info",
                "namespace": "powerstrip.access",
                "method": "GET",
                "path": "/v1.41/version?x=1",
                "status": 200,
                "hooks": [],
            },
        )
        self.assertEqual(record["bytes"], len(resp.body))
        self.assertIsInstance(record["duration_ms"], float)
        self.assertEqual(
            record["message"],
            f"#{request_id} GET /v1.41/version?x=1 -> 200 {len(resp.body)}B {record['duration_ms']:.1f}ms",
        )

    @defer.inlineCallbacks
    def test_access_line_lists_hooks(self) -> Any:
        self.start(CREATE_PRE, hook=add_env)
        client = yield self.connect()
        _, _, resp = yield self.roundtrip(
            client,
            json_request(b"POST", b"/v1.41/containers/create", {"Image": "busybox"}),
            json_response(b"201 Created", {"Id": "abc", "Warnings": []}),
        )
        request_id = resp.value(b"powerstrip-request-id").decode()
        [record] = yield self.wait_for(request_id=request_id, status=201)
        [hook] = record["hooks"]
        self.assertEqual((hook["adapter"], hook["phase"], hook["outcome"]), ("hook", "pre-hook", "ok"))
        self.assertIsInstance(hook["ms"], float)
        self.assertIn(f" pre-hook:hook={hook['ms']:.1f}ms(ok)", record["message"])

    @defer.inlineCallbacks
    def test_adapter_fault_warning_carries_request_id(self) -> Any:
        port = unused_port()
        self.start(
            f'version: 1\nendpoints:\n  "POST /*/containers/create":\n    pre: [gone]\n'
            f"adapters:\n  gone: http://127.0.0.1:{port}/gone\n"
        )
        client = yield self.connect()
        client.send(json_request(b"POST", b"/v1.41/containers/create", {"Image": "busybox"}))
        resp = yield client.response()
        request_id = resp.value(b"powerstrip-request-id").decode()
        [warning] = yield self.wait_for(request_id=request_id, level="warn")
        self.assertIn("adapter 'gone'", warning["message"])
        [access] = self.records(request_id=request_id, status=502)
        self.assertEqual(access["hooks"][0]["adapter"], "gone")

    @defer.inlineCallbacks
    def test_verbose_hook_lines_carry_request_id(self) -> Any:
        def refuse(call: Any, payload: dict) -> bytes:
            return reply(call, {"message": "no"}, code=403)

        self.start(CREATE_PRE, verbose=True, hook=refuse)
        client = yield self.connect()
        client.send(json_request(b"POST", b"/v1.41/containers/create", {"Image": "busybox"}))
        resp = yield client.response()
        request_id = resp.value(b"powerstrip-request-id").decode()
        yield self.wait_for(request_id=request_id, status=resp.code)
        sent = self.records(request_id=request_id, adapter="hook", phase="pre-hook")
        self.assertTrue(sent and all(r["request_id"] == request_id for r in sent), self.records())
        self.assertTrue(any(" sent " in r["message"] for r in sent))
        self.assertTrue(any(" refused " in r["message"] for r in sent))

    @defer.inlineCallbacks
    def test_stream_access_line_has_stream_bytes(self) -> Any:
        self.start()
        client = yield self.connect()
        client.send(attach_request())
        conn, _ = yield self.dockerd.next_request()
        conn.send(UPGRADED)
        yield client.wait_bytes(len(UPGRADED))
        client.send(b"stdin")
        yield conn.wait_stream(5)
        conn.send(FRAME)
        yield client.wait_bytes(len(FRAME), len(UPGRADED))
        conn.transport.loseConnection()
        yield client.wait_eof()
        client.transport.loseConnection()
        [record] = yield self.wait_for(path=ATTACH_URI.decode(), status=101)
        self.assertEqual((record["stream_bytes_in"], record["stream_bytes_out"]), (5, len(FRAME)))
        self.assertRegex(record["request_id"], r"^[0-9a-f]{16}$")
        self.assertTrue(record["message"].endswith(f" stream in=5B out={len(FRAME)}B"), record)
