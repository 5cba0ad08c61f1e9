"""Event hooks end to end: a real Powerstrip process following a real dockerd's events.

- :class:`DockerdRestart`: a second dockerd of this test's own (its own data
  and exec roots, unix socket and bridge; the shared daemon is never
  restarted) is stopped with SIGTERM and started again mid-test. Powerstrip
  reaches it through a symlink to its socket that the test removes while the
  daemon is away and puts back only after containers have already run on
  the restarted daemon: those events happened while Powerstrip was not
  connected, and must still arrive (``since``), once each, in dockerd's order.
- :class:`AdapterDown`: against the shared dockerd, one adapter that nothing
  listens on and one that records. The recording one gets every event at
  once; the dead one's full queue and drops show in ``GET /metrics``.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import TestCase

from powerstrip.sdk.testing import RecordingAdapter
from tests.e2e.support import CLIS, IMAGE, LABEL, Powerstrip, SecondDockerd, direct, free_port, require_daemon

DOCKER28 = CLIS["docker 28"]


def accept(payload: dict) -> tuple[int, dict]:
    """An event hook's answer: any 2xx will do."""
    return 200, {}


def events_config(rules: dict[str, list[str]], adapters: dict[str, str]) -> str:
    """An adapters file with only event rules."""
    return json.dumps({"version": 1, "endpoints": {}, "events": rules, "adapters": adapters})


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self._path)


def past_events(socket_path: str, type_: str = "container") -> list[dict]:
    """Every event of ``type_`` a dockerd still holds (its in-memory buffer), straight from its API."""
    conn = _UnixHTTP(socket_path)
    try:
        filters = json.dumps({"type": [type_]})
        until = f"{time.time() + 1:.9f}"  # a moment ahead: an event stamped just now is included
        conn.request("GET", f"/events?since=0&until={until}&filters={urllib.request.quote(filters)}")
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 200, body
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def wait_for(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Dockerd(SecondDockerd):
    """A second real dockerd on a unix socket in a directory of its own; can be restarted."""

    def __init__(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="psev-"))
        self.socket = str(directory / "docker.sock")
        super().__init__(directory, f"unix://{self.socket}")


class DockerdRestart(TestCase):
    """No event lost, none twice, across a dockerd restart."""

    def setUp(self) -> None:
        require_daemon()
        self.dockerd = Dockerd()
        self.addCleanup(self.dockerd.stop)
        loaded = self.dockerd.direct("load", input=direct("save", IMAGE).stdout, timeout=120)
        self.assertEqual(loaded.returncode, 0, loaded.stderr)
        # Powerstrip dials this link; without it, it cannot reconnect.
        self.link = self.dockerd.dir / "ps.sock"
        self.link.symlink_to(self.dockerd.socket)
        self.rec = RecordingAdapter(accept)
        self.addCleanup(self.rec.stop)
        config = events_config({"container *": ["rec"]}, {"rec": self.rec.url})
        self.proxy = Powerstrip(config, extra=["--docker", f"unix://{self.link}"])
        self.addCleanup(self.proxy.stop)
        wait_for(lambda: "events: following Docker events at" in self.proxy.log_text(), "Powerstrip to follow")

    def run_container(self, name: str) -> None:
        result = self.dockerd.direct("run", "--name", name, "--label", LABEL, "--network", "none", IMAGE, "true")
        self.assertEqual(result.returncode, 0, result.stderr)

    def received(self) -> list[dict]:
        return [call["Event"] for call in self.rec.calls]

    def wait_received(self, expected: list[dict], what: str) -> None:
        try:
            wait_for(lambda: len(self.received()) >= len(expected), what)
        except AssertionError:
            self.fail(
                f"{what}: got {self.summary(self.received())}, expected {self.summary(expected)}\n"
                f"{self.proxy.log_text()[-4000:]}"
            )
        time.sleep(0.5)  # anything extra (a duplicate) would come now

    @staticmethod
    def summary(events: list[dict]) -> list[str]:
        return [f"{e['Actor']['Attributes'].get('name')} {e['Action']}" for e in events]

    def test_events_across_a_dockerd_restart(self) -> None:
        self.run_container("before-1")
        self.run_container("before-2")
        before = past_events(self.dockerd.socket)
        self.wait_received(before, "the events before the restart")
        self.assertEqual(self.received(), before)

        # dockerd goes away; Powerstrip cannot come back until the link is back.
        self.link.unlink()
        self.dockerd.terminate()
        wait_for(lambda: "events: not following Docker events" in self.proxy.log_text(), "the loss to be logged")
        self.dockerd.start()
        # These happen while Powerstrip is not connected.
        self.run_container("during-1")
        self.run_container("during-2")
        started = self.dockerd.direct("start", "-a", "before-1")  # an old container, anew
        self.assertEqual(started.returncode, 0, started.stderr)
        self.assertEqual(len(self.received()), len(before), "Powerstrip cannot have been connected")
        self.assertNotIn("following Docker events at unix://" + str(self.link) + " again", self.proxy.log_text())
        self.link.symlink_to(self.dockerd.socket)
        during = past_events(self.dockerd.socket)  # the restarted daemon's events, all after the restart
        self.wait_received(before + during, "the events while Powerstrip was away")

        self.run_container("after-1")
        after = past_events(self.dockerd.socket)
        self.wait_received(before + after, "the events after reconnecting")
        got = self.received()
        self.assertEqual(got, before + after, "all of them, once each, in dockerd's order")
        self.assertEqual(len({json.dumps(e, sort_keys=True) for e in got}), len(got), "no duplicates")
        for name in ("before-1", "before-2", "during-1", "during-2", "after-1"):
            actions = [e["Action"] for e in got if e["Actor"]["Attributes"].get("name") == name]
            self.assertEqual(
                [a for a in actions if a in ("create", "start", "die")][:3],
                ["create", "start", "die"],
                f"{name}: {actions}",
            )
        self.assertEqual(
            [e["Action"] for e in got if e["Actor"]["Attributes"].get("name") == "before-1"],
            ["create", "attach", "start", "die", "attach", "start", "die"],
        )
        log = self.proxy.log_text()
        self.assertEqual(log.count("events: not following Docker events"), 1, log[-4000:])
        self.assertEqual(log.count(" again"), 1, log[-4000:])
        for payload in self.rec.calls:
            self.assertEqual(set(payload), {"PowerstripProtocolVersion", "Type", "Event"})
            self.assertEqual((payload["PowerstripProtocolVersion"], payload["Type"]), (2, "event"))


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class AdapterDown(TestCase):
    """A dead adapter holds up nobody; its queue and drops show in the metrics."""

    def setUp(self) -> None:
        require_daemon()

    def test_recording_adapter_unaffected_by_a_dead_one(self) -> None:
        arrived: dict[str, float] = {}

        def record(payload: dict) -> tuple[int, dict]:
            event = payload["Event"]
            arrived.setdefault(f"{event['id']} {event['Action']}", time.monotonic())
            return 200, {}

        rec = RecordingAdapter(record)
        self.addCleanup(rec.stop)
        dead = f"http://127.0.0.1:{free_port()}/hook"
        admin = free_port()
        config = events_config({"container *": ["rec", "dead"]}, {"rec": rec.url, "dead": dead})
        proxy = Powerstrip(config, extra=["--admin", f"tcp:{admin}:interface=127.0.0.1", "--event-queue", "5"])
        self.addCleanup(proxy.stop)
        wait_for(lambda: value(scrape(admin), "powerstrip_events_connected") == 1, "Powerstrip to follow")
        delays = []
        ids = []
        for _ in range(4):
            result = direct("run", "-d", "--label", LABEL, "--network", "none", IMAGE, "true")
            self.assertEqual(result.returncode, 0, result.stderr)
            cid = result.stdout.decode().strip()
            ids.append(cid)
            self.addCleanup(direct, "rm", "-f", cid)
            self.assertEqual(direct("wait", cid).returncode, 0)
            exited = time.monotonic()
            wait_for(lambda c=cid: f"{c} die" in arrived, f"{cid[:12]}'s die event", timeout=10)
            delays.append(arrived[f"{cid} die"] - exited)
        # Prompt: the dead adapter's retries and full queue hold up nothing.
        self.assertLess(max(delays), 2.0, delays)
        for cid in ids:
            got = [c["Event"]["Action"] for c in rec.calls if c["Event"]["id"] == cid]
            self.assertEqual(got, ["create", "start", "die"], cid)
        # A scrape with nothing waiting for rec (the shared daemon may have other events going on).
        samples: list[dict] = []
        wait_for(
            lambda: (
                samples.append(scrape(admin)) or value(samples[-1], "powerstrip_event_queue_depth", adapter="rec") == 0
            ),
            "rec's queue to be empty",
        )
        m = samples[-1]
        received = value(m, "powerstrip_events_received_total")
        self.assertGreaterEqual(received, 12)
        self.assertEqual(value(m, "powerstrip_event_queue_depth", adapter="dead"), 5)
        # Every event rec took went to dead's queue too: 5 wait there, the rest were dropped.
        matched = value(m, "powerstrip_events_delivered_total", adapter="rec")
        self.assertEqual(value(m, "powerstrip_events_dropped_total", adapter="dead", reason="queue_full"), matched - 5)
        self.assertGreaterEqual(value(m, "powerstrip_event_delivery_failures_total", adapter="dead"), 1)
        self.assertEqual(value(m, "powerstrip_events_delivered_total", adapter="dead"), 0)
        self.assertGreaterEqual(matched, 12)
        log = proxy.log_text()
        self.assertEqual(log.count("events: adapter dead's queue is full (5 events)"), 1, log[-3000:])
        self.assertEqual(log.count("events: delivery to adapter dead failed"), 1, log[-3000:])
        # SIGTERM: the dead adapter's events are dropped and counted in the log, not waited for.
        proxy.proc.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        self.assertEqual(proxy.proc.wait(30), 0)
        self.assertLess(time.monotonic() - stopping, 5)
        self.assertIn("events: shutdown: dropped 5 undelivered event(s) (dead: 5)", proxy.log_text())
