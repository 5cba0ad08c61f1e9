"""Event hooks (:mod:`powerstrip.hooks.events`): Docker events POSTed to adapters.

An in-process fake dockerd serves a streaming ``GET /events`` the tests
control (it honours ``since`` from its history, and can drop its streams or
stop listening, as a dockerd restart does); in-process HTTP adapters record
what they get and answer as told. Timers (retry and reconnection backoff,
the drop-log interval, the shutdown deadline) run on a ``Clock`` the tests
advance; the network is real.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any
from unittest import mock

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from powerstrip.config.spec import AdapterSpec, Config, EventRule, parse_config
from powerstrip.hooks.event_stream import RECONNECT_MIN, since_param
from powerstrip.hooks.events import DROP_LOG_INTERVAL, RETRY_MIN, EventHooks, event_kind, match_event
from powerstrip.ops.cli import main as cli_main
from powerstrip.ops.metrics import Metrics
from powerstrip.ops.service import Options, make_service
from powerstrip.proxy.route import Proxy
from powerstrip.wire.endpoints import DockerAddress

SECOND = 1_000_000_000


def parse_since(text: str) -> int:
    secs, _, frac = text.partition(".")
    return int(secs) * SECOND + int(frac.ljust(9, "0")[:9] or 0)


class FakeEventDocker(Resource):
    """``GET /events`` as dockerd serves it: history since ``since``, then live events."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.history: list[dict] = []
        self.streams: list[Any] = []
        #: The ``since`` of every ``GET /events`` (None when absent), in order.
        self.sinces: list[str | None] = []
        self._last = 0

    def render_GET(self, request: Any) -> Any:
        if request.path.rstrip(b"/").split(b"/")[-1] != b"events":
            request.setResponseCode(404)
            return b'{"message": "page not found"}'
        since = request.args.get(b"since", [None])[0]
        self.sinces.append(since.decode() if since else None)
        request.setHeader(b"Content-Type", b"application/json")
        request.write(b"")  # the head goes out at once, as dockerd flushes it
        if since:
            cutoff = parse_since(since.decode())
            for event in self.history:
                if event["timeNano"] >= cutoff:  # inclusive, as dockerd's
                    request.write(json.dumps(event).encode() + b"\n")
        self.streams.append(request)
        request.notifyFinish().addBoth(lambda _: self.streams.remove(request))
        return NOT_DONE_YET

    def next_nano(self) -> int:
        self._last = max(self._last + 1000, time.time_ns())
        return self._last

    def emit(self, type_: str = "container", action: str = "start", id: str = "c1", nano: int | None = None) -> dict:
        """Log an event: to the history, and to every open stream."""
        nano = self.next_nano() if nano is None else nano
        self._last = max(self._last, nano)
        event = {
            "status": action,
            "id": id,
            "from": "busybox",
            "Type": type_,
            "Action": action,
            "Actor": {"ID": id, "Attributes": {"image": "busybox", "name": f"n-{id}"}},
            "scope": "local",
            "time": nano // SECOND,
            "timeNano": nano,
        }
        self.history.append(event)
        self.write(json.dumps(event).encode() + b"\n")
        return event

    def write(self, data: bytes) -> None:
        for request in list(self.streams):
            request.write(data)

    def drop(self) -> None:
        """Cut every stream (as a dying dockerd does)."""
        for request in list(self.streams):
            request.channel.transport.abortConnection()


class FakeAdapters(Resource):
    """``POST /NAME``: records the payload, answers ``answers[NAME](payload)`` (a status, or a
    Deferred firing with one; default 200)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, list[dict]] = defaultdict(list)
        self.answers: dict[str, Callable[[dict], Any]] = {}

    def render_POST(self, request: Any) -> Any:
        name = request.path.decode().strip("/")
        payload = json.loads(request.content.read())
        self.calls[name].append(payload)
        answer = self.answers.get(name, lambda p: 200)(payload)

        def send(code: int) -> None:
            if not request._disconnected:
                request.setResponseCode(code)
                request.write(b"{}")
                request.finish()

        if isinstance(answer, defer.Deferred):
            answer.addCallback(send)
            return NOT_DONE_YET
        request.setResponseCode(answer)
        return b"{}"

    def events(self, name: str) -> list[dict]:
        """The Docker events adapter ``name`` was POSTed, in order."""
        return [p["Event"] for p in self.calls[name]]


def failing(times: int) -> Callable[[dict], int]:
    """An answer: 500 for the first ``times`` calls, then 200."""
    count = [0]

    def answer(payload: dict) -> int:
        count[0] += 1
        return 500 if count[0] <= times else 200

    return answer


def scrape(resource: Proxy) -> dict[tuple[str, frozenset], float]:
    text = generate_latest(resource.metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def sleep(seconds: float) -> defer.Deferred:
    return deferLater(reactor, seconds, lambda: None)


class EventHooksTestCase(TestCase):
    """A fake dockerd on a unix socket, fake adapters on a port, hooks on a Clock."""

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="psev-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.sock = os.path.join(self.dir, "d.sock")
        self.docker = FakeEventDocker()
        self.docker_port: Any = None
        self.listen_docker()
        self.adapters = FakeAdapters()
        site = Site(self.adapters)
        site.log = lambda request: None
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        self.clock = Clock()
        self.logged: list[dict] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def listen_docker(self) -> None:
        site = Site(self.docker)
        site.log = lambda request: None
        self.docker_port = reactor.listenUNIX(self.sock, site)

    def stop_docker(self) -> defer.Deferred:
        """dockerd goes away: its streams are cut and its socket stops answering."""
        self.docker.drop()
        port, self.docker_port = self.docker_port, None
        d = defer.maybeDeferred(port.stopListening)
        return d.addCallback(lambda _: os.path.exists(self.sock) and os.unlink(self.sock))

    def config(self, events: str, adapters: tuple[str, ...] = ("a", "b", "c")) -> Config:
        listed = "\n".join(f"  {name}: {self.base}/{name}" for name in adapters)
        text = (
            f"version: 1\nendpoints: {{}}\nevents:\n{events}\nadapters:\n{listed}\n"
            if events
            else f"version: 1\nendpoints: {{}}\nadapters:\n{listed}\n"
        )
        return parse_config(text, "test")

    def start(self, events: str | Config, bound: int = 100, drain_timeout: float = 5.0) -> EventHooks:
        config = events if isinstance(events, Config) else self.config(events)
        self.resource = Proxy(reactor, config, DockerAddress.parse(f"unix://{self.sock}"), metrics=Metrics)
        hooks = EventHooks(self.resource, reactor, queue_bound=bound, drain_timeout=drain_timeout, clock=self.clock)
        hooks.startService()
        self.addCleanup(self.shut, hooks)
        self.hooks = hooks
        return hooks

    @defer.inlineCallbacks
    def shut(self, hooks: EventHooks) -> Any:
        if hooks.running:
            d = hooks.stopService()
            self.clock.advance(hooks.drain_timeout)
            yield d
        yield self.resource.close()
        yield self.until(lambda: not self.docker.streams, "the event stream to close")
        if self.docker_port is not None:
            yield self.docker_port.stopListening()
        yield sleep(0.01)  # the closed connections' last reactor turn

    @defer.inlineCallbacks
    def until(self, predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
        # A bound for a loaded 2-core machine: it costs nothing when the wait ends early.
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                self.fail(f"timed out waiting for {what}")
            yield sleep(0.005)

    def following(self, n: int = 1) -> defer.Deferred:
        """Wait until the fake has served ``n`` event streams in all, and one is open and followed."""
        return self.until(
            lambda: len(self.docker.sinces) >= n and self.docker.streams and self.hooks.follower.connected,
            f"event stream #{n}",
        )

    def delivered(self, adapter: str) -> float:
        return value(scrape(self.resource), "powerstrip_events_delivered_total", adapter=adapter)

    @defer.inlineCallbacks
    def attempt_fails(self, hooks: EventHooks) -> Any:
        """Let the pending connection attempt happen, and wait until it has failed (the next is due)."""
        due = hooks.follower.next_attempt
        self.clock.advance(due - self.clock.seconds())
        yield self.until(lambda: hooks.follower.next_attempt is not None, "the attempt to fail")
        return hooks.follower.next_attempt - self.clock.seconds()

    def failures(self, adapter: str) -> float:
        return value(scrape(self.resource), "powerstrip_event_delivery_failures_total", adapter=adapter)

    def lines(self, text: str) -> list[str]:
        """Log lines (formatted) containing ``text``."""
        return [line for line in map(formatEvent, self.logged) if line and text in line]

    @defer.inlineCallbacks
    def advance(self, seconds: float) -> Any:
        """Let the clock run ``seconds`` and the reactor act on it."""
        self.clock.advance(seconds)
        yield sleep(0.02)


class MatchingTests(TestCase):
    CONFIG = parse_config("""\
version: 1
endpoints: {}
events:
  "container die": [a]
  "container *": [b, a]
  "network *": c
  "* exec_start*": [c]
  "[iv]* [dp]*": [b]
adapters: {a: "http://a/x", b: "http://b/x", c: "http://c/x"}
""")

    def names(self, type_: str, action: str) -> tuple[tuple[str, ...], list[str]]:
        patterns, adapters = match_event(self.CONFIG, type_, action)
        return patterns, [a.name for a in adapters]

    def test_globs_on_type_and_action_in_file_order_each_adapter_once(self) -> None:
        self.assertEqual(self.names("container", "die"), (("container die", "container *"), ["a", "b"]))
        self.assertEqual(self.names("container", "start"), (("container *",), ["b", "a"]))
        self.assertEqual(self.names("network", "connect"), (("network *",), ["c"]))
        self.assertEqual(
            self.names("container", "exec_start: sh -c ls"), (("container *", "* exec_start*"), ["b", "a", "c"])
        )
        self.assertEqual(self.names("image", "pull"), (("[iv]* [dp]*",), ["b"]))
        self.assertEqual(self.names("volume", "destroy"), (("[iv]* [dp]*",), ["b"]))
        self.assertEqual(self.names("volume", "create"), ((), []))
        self.assertEqual(self.names("Container", "die"), ((), []))  # case-sensitive, as Docker's names are

    def test_event_kind_and_since(self) -> None:
        self.assertEqual(event_kind({"Type": "network", "Action": "connect"}), ("network", "connect"))
        self.assertEqual(event_kind({"status": "die", "id": "x"}), ("container", "die"))  # API < 1.22
        self.assertEqual(since_param(1732540000123456789), "1732540000.123456789")
        self.assertEqual(since_param(1732540000000000005), "1732540000.000000005")


class DeliveryTests(EventHooksTestCase):
    @defer.inlineCallbacks
    def test_events_reach_the_adapters_of_matching_rules_in_order(self) -> Any:
        self.start('  "container *": [a]\n  "network connect": [b]\n  "container die": [b]')
        yield self.following()
        self.assertEqual(self.docker.sinces, [None])  # from now: no replay at start-up
        sent = [
            self.docker.emit("container", "create"),
            self.docker.emit("network", "connect"),
            self.docker.emit("container", "start"),
            self.docker.emit("image", "pull"),
            self.docker.emit("container", "die"),
        ]
        yield self.until(lambda: self.delivered("a") == 3 and self.delivered("b") == 2, "deliveries")
        self.assertEqual(self.adapters.events("a"), [sent[0], sent[2], sent[4]])
        self.assertEqual(self.adapters.events("b"), [sent[1], sent[4]])
        self.assertEqual(
            self.adapters.calls["a"][0], {"PowerstripProtocolVersion": 2, "Type": "event", "Event": sent[0]}
        )
        yield sleep(0.05)
        self.assertEqual(len(self.adapters.calls["a"]) + len(self.adapters.calls["b"]), 5, "nothing twice")
        m = scrape(self.resource)
        self.assertEqual(value(m, "powerstrip_events_received_total"), 5)
        self.assertEqual(value(m, "powerstrip_events_delivered_total", adapter="a"), 3)
        self.assertEqual(value(m, "powerstrip_events_delivered_total", adapter="b"), 2)
        self.assertEqual(value(m, "powerstrip_event_queue_depth", adapter="a"), 0)
        self.assertEqual(value(m, "powerstrip_events_connected"), 1)
        self.assertEqual(len(self.lines("events: following Docker events at unix://")), 1)

    @defer.inlineCallbacks
    def test_stream_lines_split_across_writes_and_garbage(self) -> Any:
        self.start('  "container *": [a]')
        yield self.following()
        line = json.dumps({"Type": "container", "Action": "start", "id": "x", "time": 1, "timeNano": SECOND + 5})
        self.docker.write(line[:20].encode())
        yield sleep(0.02)
        self.docker.write(line[20:].encode() + b"\nnot json\n\n[1, 2]\n")
        event = self.docker.emit("container", "die")
        yield self.until(lambda: len(self.adapters.calls["a"]) == 2, "deliveries")
        self.assertEqual(self.adapters.events("a"), [json.loads(line), event])
        self.assertEqual(len(self.lines("not JSON")), 1)

    @defer.inlineCallbacks
    def test_failing_adapter_is_retried_with_backoff_while_another_gets_its_events(self) -> Any:
        self.adapters.answers["b"] = failing(3)
        self.start('  "container *": [a, b]')
        yield self.following()
        first, second = self.docker.emit(action="create"), self.docker.emit(action="start")
        yield self.until(lambda: len(self.adapters.calls["a"]) == 2 and self.adapters.calls["b"], "deliveries")
        self.assertEqual(self.adapters.events("a"), [first, second])  # at once, whatever b does
        for failures, delay in enumerate((RETRY_MIN, RETRY_MIN * 2, RETRY_MIN * 4), 1):
            # The failure is known once its answer is read, not when the adapter got the call.
            yield self.until(lambda n=failures: self.failures("b") == n, f"failure #{failures}")
            calls = len(self.adapters.calls["b"])
            yield self.advance(delay * 0.9)
            self.assertEqual(len(self.adapters.calls["b"]), calls, f"retried before {delay}s")
            yield self.advance(delay * 0.1 + 0.001)
            yield self.until(lambda n=calls + 1: len(self.adapters.calls["b"]) >= n, f"the retry after {delay}s")
        # The fourth attempt succeeded; the second event follows at once, in order.
        yield self.until(lambda: self.delivered("b") == 2, "the queued event")
        self.assertEqual(self.adapters.events("b"), [first] * 4 + [second])
        m = scrape(self.resource)
        self.assertEqual(value(m, "powerstrip_event_delivery_failures_total", adapter="b"), 3)
        self.assertEqual(value(m, "powerstrip_events_delivered_total", adapter="b"), 2)
        self.assertEqual(value(m, "powerstrip_event_delivery_failures_total", adapter="a"), 0)
        self.assertEqual(len(self.lines("delivery to adapter b failed (answered 500)")), 1)  # not one per retry
        self.assertEqual(len(self.lines("adapter b takes events again after 3 failed attempt(s)")), 1)

    @defer.inlineCallbacks
    def test_adapter_down_is_a_fault_and_retried(self) -> Any:
        config = parse_config(
            f'version: 1\nendpoints: {{}}\nevents:\n  "container *": [a, gone]\nadapters:\n'
            f"  a: {self.base}/a\n  gone: http://127.0.0.1:1/hook\n",
            "test",
        )
        self.start(config)
        yield self.following()
        event = self.docker.emit()
        yield self.until(
            lambda: value(scrape(self.resource), "powerstrip_event_delivery_failures_total", adapter="gone") == 1,
            "the fault",
        )
        # Each adapter has its own queue: a's delivery and gone's fault race each other.
        yield self.until(lambda: self.delivered("a") == 1, "the delivery to a")
        self.assertEqual(self.adapters.events("a"), [event])
        self.assertEqual(len(self.lines("delivery to adapter gone failed (cannot connect")), 1)
        self.assertEqual(value(scrape(self.resource), "powerstrip_event_queue_depth", adapter="gone"), 1)

    @defer.inlineCallbacks
    def test_full_queue_drops_new_events_counts_them_and_logs_sparingly(self) -> Any:
        stuck: list[defer.Deferred] = []
        self.adapters.answers["b"] = lambda payload: stuck.append(defer.Deferred()) or stuck[-1]
        self.start('  "container *": [a, b]', bound=3)
        yield self.following()
        sent = []
        for i in range(10):  # a takes each before the next comes: its queue (bound 3 too) never fills
            sent.append(self.docker.emit(id=f"c{i}"))
            yield self.until(
                lambda n=i + 1: value(scrape(self.resource), "powerstrip_events_delivered_total", adapter="a") == n,
                f"a's delivery #{i + 1}",
            )
        self.assertEqual(self.adapters.events("a"), sent)
        self.assertEqual(self.adapters.events("b"), sent[:1])  # one in flight, never answered
        m = scrape(self.resource)
        self.assertEqual(value(m, "powerstrip_event_queue_depth", adapter="b"), 3)
        self.assertEqual(value(m, "powerstrip_events_dropped_total", adapter="b", reason="queue_full"), 7)
        self.assertEqual(value(m, "powerstrip_events_dropped_total", adapter="a", reason="queue_full"), 0)
        self.assertEqual(len(self.lines("queue is full")), 1)
        yield self.advance(DROP_LOG_INTERVAL)
        self.assertEqual(len(self.lines("dropped 6 more event(s) for adapter b in 10s")), 1)
        yield self.advance(DROP_LOG_INTERVAL)
        self.assertEqual(len(self.lines("queue is full")), 2, "no line without new drops")
        # Once it answers, its three events arrive in order.
        for i in range(3):
            yield self.until(lambda n=i + 1: len(stuck) == n, f"b's delivery #{i + 1}")
            stuck[i].callback(200)
        yield self.until(
            lambda: value(scrape(self.resource), "powerstrip_events_delivered_total", adapter="b") == 3,
            "b's deliveries",
        )
        self.assertEqual(self.adapters.events("b"), sent[:3])

    @defer.inlineCallbacks
    def test_in_process_adapter_drains_a_long_backlog(self) -> Any:
        answers = [500]

        class InProcess:
            def __init__(self) -> None:
                self.events: list[dict] = []

            def handle(self, payload: dict) -> defer.Deferred:
                code = answers.pop(0) if answers else 200
                if code == 200:
                    self.events.append(payload["Event"])
                return defer.succeed((code, {}))  # synchronous, as an SDK adapter may be

        inproc = InProcess()
        adapter = AdapterSpec("inproc", "python:tests:inproc", in_process=inproc)
        config = Config(adapters={"inproc": adapter}, events=(EventRule("container *", "container", "*", (adapter,)),))
        self.start(config, bound=5000)
        yield self.following()
        sent = [self.docker.emit(id=f"c{i}") for i in range(1500)]
        yield self.until(
            lambda: value(scrape(self.resource), "powerstrip_event_queue_depth", adapter="inproc") == 1500,
            "the backlog",
        )
        yield self.advance(RETRY_MIN)  # one retry drains the lot, without nesting a frame per event
        self.assertEqual(inproc.events, sent)


class ResumeTests(EventHooksTestCase):
    @defer.inlineCallbacks
    def test_resume_with_since_after_a_dropped_stream_no_loss_no_duplicate(self) -> Any:
        hooks = self.start('  "container *": [a]')
        yield self.following()
        t = time.time_ns()
        a = self.docker.emit(action="create", nano=t)
        b = self.docker.emit(action="start", id="c1", nano=t + 1000)
        c = self.docker.emit(action="start", id="c2", nano=t + 1000)  # the same nanosecond
        yield self.until(lambda: len(self.adapters.calls["a"]) == 3, "deliveries")
        self.docker.drop()
        yield self.until(lambda: not hooks.follower.connected, "the stream to be lost")
        self.assertEqual(value(scrape(self.resource), "powerstrip_events_connected"), 0)
        # While Powerstrip is away: one more at the boundary's nanosecond, one after.
        d = self.docker.emit(action="start", id="c3", nano=t + 1000)
        e = self.docker.emit(action="die", id="c1", nano=t + 2000)
        yield self.advance(RECONNECT_MIN)
        yield self.following(2)
        self.assertEqual(self.docker.sinces, [None, since_param(t + 1000)])
        yield self.until(lambda: len(self.adapters.calls["a"]) == 5, "the missed events")
        yield sleep(0.05)
        self.assertEqual(self.adapters.events("a"), [a, b, c, d, e])
        self.assertEqual(value(scrape(self.resource), "powerstrip_events_received_total"), 5)
        self.assertEqual(len(self.lines("not following Docker events")), 1)
        self.assertEqual(len(self.lines("following Docker events at unix://" + self.sock + " again")), 1)

    @defer.inlineCallbacks
    def test_dockerd_down_at_start_then_restarted(self) -> Any:
        yield self.stop_docker()
        old = self.docker.emit(action="old", nano=(int(time.time()) - 5) * SECOND)
        hooks = self.start('  "container *": [a]')
        yield self.until(lambda: hooks.follower.next_attempt is not None, "the first attempt to fail")
        for _ in range(4):  # quiet retries
            yield self.attempt_fails(hooks)
        self.assertEqual(len(self.lines("not following Docker events")), 1)
        self.assertIn("cannot reach it", self.lines("not following Docker events")[0])
        self.assertEqual(self.docker.sinces, [])
        self.listen_docker()
        yield self.advance(hooks.follower.next_attempt - self.clock.seconds())
        yield self.following()
        self.assertEqual(self.docker.sinces, [None])
        self.assertEqual(len(self.lines("events: following Docker events at")), 1)
        yield self.advance(1.0)  # a stream that lasts: the reconnection backoff starts afresh
        # Lost before any event came: the resume point is when the stream began
        # (dockerd's Date), so what happens while it is away is not missed.
        yield self.stop_docker()
        yield self.until(lambda: not hooks.follower.connected, "the stream to be lost")
        missed = self.docker.emit(action="create", id="c9")
        self.listen_docker()
        yield self.advance(RECONNECT_MIN)
        yield self.following(2)
        self.assertIsNotNone(self.docker.sinces[1])
        self.assertLessEqual(parse_since(self.docker.sinces[1]), missed["timeNano"])
        self.assertGreater(parse_since(self.docker.sinces[1]), old["timeNano"])
        after = self.docker.emit(action="start", id="c9")
        yield self.until(lambda: len(self.adapters.calls["a"]) == 2, "deliveries")
        self.assertEqual(self.adapters.events("a"), [missed, after])  # and not the old one
        self.assertEqual(len(self.lines("not following Docker events")), 2)
        self.assertEqual(len(self.lines("following Docker events at unix://" + self.sock + " again")), 1)

    @defer.inlineCallbacks
    def test_reconnection_backoff_grows_and_resets(self) -> Any:
        hooks = self.start('  "container *": [a]')
        yield self.following()
        yield self.stop_docker()
        yield self.until(lambda: not hooks.follower.connected, "the stream to be lost")
        self.assertAlmostEqual(hooks.follower.next_attempt - self.clock.seconds(), RECONNECT_MIN)
        waits = []
        for _ in range(6):
            waits.append(round((yield self.attempt_fails(hooks)), 6))
        self.assertEqual(waits, [0.4, 0.8, 1.6, 3.2, 6.4, 10.0])  # doubling, up to 10s
        self.listen_docker()
        yield self.advance(9.9)
        self.assertEqual(len(self.docker.sinces), 1, "the next attempt waits its turn")
        yield self.advance(0.1)
        yield self.following(2)
        # A stream that lasted: after the next loss, the first attempt comes quickly again.
        yield self.advance(1.0)
        self.docker.drop()
        yield self.until(lambda: not hooks.follower.connected, "the stream to be lost")
        self.assertAlmostEqual(hooks.follower.next_attempt - self.clock.seconds(), RECONNECT_MIN)


class ReloadTests(EventHooksTestCase):
    @defer.inlineCallbacks
    def test_reload_adding_and_removing_rules_starts_and_stops_following(self) -> Any:
        hooks = self.start("")
        yield sleep(0.05)
        self.assertEqual(self.docker.sinces, [], "no event rules: not following")
        self.assertFalse(hooks.follower.running)
        self.resource.config = self.config('  "container *": [a, b]')
        yield self.following()
        e1 = self.docker.emit(id="e1")
        yield self.until(lambda: len(self.adapters.calls["a"]) == 1 and len(self.adapters.calls["b"]) == 1, "e1")
        self.adapters.answers["b"] = lambda payload: 500
        e2 = self.docker.emit(id="e2")
        yield self.until(lambda: len(self.adapters.calls["b"]) == 2, "e2's first attempt")
        # A reload that stops naming b: its queue goes; matching uses the new rules at once.
        self.resource.config = self.config('  "container *": [a]\n  "network *": [c]')
        m = scrape(self.resource)
        self.assertEqual(value(m, "powerstrip_events_dropped_total", adapter="b", reason="removed"), 1)
        self.assertEqual(value(m, "powerstrip_event_queue_depth", adapter="b"), 0)
        self.assertEqual(len(self.lines("adapter b has no event rule any more: dropped its 1")), 1)
        e3, n1 = self.docker.emit(id="e3"), self.docker.emit("network", "connect")
        yield self.until(lambda: len(self.adapters.calls["a"]) == 3 and self.adapters.calls["c"], "e3")
        yield self.advance(RETRY_MIN * 4)
        self.assertEqual(self.adapters.events("a"), [e1, e2, e3])
        self.assertEqual(self.adapters.events("b"), [e1, e2])
        self.assertEqual(self.adapters.events("c"), [n1])
        self.assertEqual(self.docker.sinces, [None], "the stream went on through the reload")
        # No rules left: following stops.
        self.resource.config = self.config("")
        yield self.until(lambda: not self.docker.streams, "the stream to close")
        self.assertEqual(value(scrape(self.resource), "powerstrip_events_connected"), 0)
        self.docker.emit(id="e4")
        # Rules again: from now, not from where it stopped.
        self.resource.config = self.config('  "container *": [a]')
        yield self.following(2)
        self.assertEqual(self.docker.sinces, [None, None])
        e5 = self.docker.emit(id="e5")
        yield self.until(lambda: len(self.adapters.calls["a"]) == 4, "e5")
        self.assertEqual(self.adapters.events("a")[-1], e5)
        # An adapter whose URL changes keeps its queue and uses the new URL.
        self.adapters.answers["a"] = lambda payload: 500
        e6 = self.docker.emit(id="e6")
        yield self.until(lambda: self.failures("a") == 1, "e6's first attempt")
        self.resource.config = parse_config(
            f'version: 1\nendpoints: {{}}\nevents:\n  "container *": [a]\nadapters:\n  a: {self.base}/a2\n'
        )
        yield self.advance(RETRY_MIN)
        yield self.until(lambda: self.delivered("a") == 5, "e6 at the new URL")
        self.assertEqual(self.adapters.events("a2"), [e6])


class ShutdownTests(EventHooksTestCase):
    @defer.inlineCallbacks
    def test_shutdown_stops_following_and_drops_what_is_undelivered(self) -> Any:
        self.adapters.answers["b"] = lambda payload: 500
        hooks = self.start('  "container *": [a, b]', drain_timeout=30)
        yield self.following()
        for i in range(4):
            self.docker.emit(id=f"c{i}")
        yield self.until(lambda: len(self.adapters.calls["a"]) == 4 and self.adapters.calls["b"], "deliveries")
        d = hooks.stopService()
        # b is failing: not retried, not waited for; a has nothing left. Done without the clock moving.
        yield d
        self.assertEqual(len(self.adapters.calls["b"]), 1)
        self.assertEqual(
            value(scrape(self.resource), "powerstrip_events_dropped_total", adapter="b", reason="shutdown"), 4
        )
        self.assertEqual(len(self.lines("events: shutdown: dropped 4 undelivered event(s) (b: 4)")), 1)
        yield self.until(lambda: not self.docker.streams, "the stream to close")
        self.assertEqual(value(scrape(self.resource), "powerstrip_events_connected"), 0)

    @defer.inlineCallbacks
    def test_shutdown_waits_for_a_slow_delivery_at_most_the_drain_timeout(self) -> Any:
        self.adapters.answers["a"] = lambda payload: defer.Deferred()  # never answers
        hooks = self.start('  "container *": [a]', drain_timeout=5)
        yield self.following()
        self.docker.emit(id="c1")
        self.docker.emit(id="c2")
        yield self.until(lambda: self.adapters.calls["a"], "the delivery")
        d = hooks.stopService()
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        yield d
        self.assertEqual(
            value(scrape(self.resource), "powerstrip_events_dropped_total", adapter="a", reason="shutdown"), 2
        )


class WiringTests(TestCase):
    def parse(self, *argv: str) -> Options:
        options = Options()
        with (
            mock.patch.dict(os.environ, {}, clear=True),
            mock.patch("powerstrip.ops.service.DEFAULT_CONFIG", self.mktemp()),
        ):
            options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", *argv])
        return options

    def test_event_queue_option_reaches_the_hooks(self) -> None:
        for argv, bound in (((), 10_000), (("--event-queue", "50"), 50)):
            top = make_service(self.parse(*argv))
            announce = next(s for s in top if hasattr(s, "events"))
            self.assertIsInstance(announce.events, EventHooks)
            self.assertEqual(announce.events.queue_bound, bound)
        self.assertRaises(usage.UsageError, self.parse, "--event-queue", "0")
        self.assertRaises(usage.UsageError, self.parse, "--event-queue", "many")


class CommandTests(TestCase):
    CONFIG = """\
version: 1
endpoints:
  "POST /*/containers/create":
    pre: [flocker]
events:
  "container die": [flocker, weave]
  "network *": [audit]
adapters:
  flocker: http://flocker/hook
  weave: http://weave/hook
  audit: http://audit/hook
"""

    def run_main(self, *argv: str) -> tuple[int, str, str]:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(self.CONFIG)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli_main([a.replace("$FILE", path) for a in argv])
            except SystemExit as e:
                code = e.code
        return code, out.getvalue().replace(path, "FILE"), err.getvalue()

    def test_check_prints_the_event_rules(self) -> None:
        code, out, _ = self.run_main("check", "$FILE")
        self.assertEqual(code, 0)
        self.assertEqual(
            out.splitlines()[:8],
            [
                "FILE: valid, 1 endpoint rule(s), 2 event rule(s), 3 adapter(s)",
                "",
                "  POST /*/containers/create  pre: flocker  post: -",
                "",
                "  events (each adapter gets each matching Docker event, on its own queue):",
                "  container die  -> flocker, weave",
                "  network *      -> audit",
                "",
            ],
        )

    def test_explain_an_event(self) -> None:
        _, out, _ = self.run_main("explain", "container die", "-c", "$FILE")
        self.assertEqual(
            out.splitlines(),
            [
                "event container die",
                "  matching event rules (file order): container die",
                "  delivered to: flocker, weave  (each on its own queue)",
            ],
        )
        _, out, _ = self.run_main("explain", "event network connect", "-c", "$FILE")
        self.assertIn("delivered to: audit", out)
        _, out, _ = self.run_main("explain", "image pull", "-c", "$FILE")
        self.assertIn("no event rule matches", out)
        _, out, _ = self.run_main("explain", "POST /containers/create", "-c", "$FILE")
        self.assertIn("pre-hooks:  flocker", out)
