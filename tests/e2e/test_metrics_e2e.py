"""``GET /metrics`` on ``--admin``, scraped after real CLI commands through a real Powerstrip."""

from __future__ import annotations

import re
import signal
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import TestCase

from tests.e2e.support import CLIS, IMAGE, LabelAdapter, Powerstrip, free_port, require_daemon, run

CREATE = "POST /*/containers/create"

#: An access-log line: ``#<id> METHOD URI -> STATUS ...``.
ACCESS_LINE = re.compile(r"#[0-9a-f]+ [A-Z]+ \S+ -> ")


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """``GET /metrics`` on the admin port, parsed: ``{(sample name, labels): value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain"), r.headers["Content-Type"]
        text = r.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: dict, name: str, **labels: str) -> float:
    """Sum over the series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


class Metrics(TestCase):
    """Counters after ``docker run`` and ``docker ps`` through Powerstrip (28.x CLI)."""

    def setUp(self) -> None:
        require_daemon()

    def start(self, config: str | None = None, extra: list[str] | None = None) -> tuple[Powerstrip, int]:
        admin = free_port()
        args = ["--admin", f"tcp:{admin}:interface=127.0.0.1", *(extra or [])]
        proxy = Powerstrip(config, extra=args) if config else Powerstrip(extra=args)
        self.addCleanup(proxy.stop)
        return proxy, admin

    def docker(self, proxy: Powerstrip, *args: str) -> None:
        result = run([CLIS["docker 28"], *args], host=proxy.url)
        self.assertEqual(result.returncode, 0, result.stderr)

    def settled(self, admin: int) -> dict:
        """Scrape once nothing is in flight and no stream is open (the CLI may exit a moment before
        Powerstrip has seen the last connection close)."""
        deadline = time.monotonic() + 10
        while True:
            m = scrape(admin)
            if value(m, "powerstrip_requests_in_flight") == 0 and value(m, "powerstrip_streams_active") == 0:
                return m
            if time.monotonic() > deadline:
                self.fail(f"requests or streams still open: {m}")
            time.sleep(0.05)

    def test_run_and_ps(self) -> None:
        adapter = LabelAdapter()
        self.addCleanup(adapter.stop)
        config = f'version: 1\nendpoints:\n  "{CREATE}":\n    pre: [label]\nadapters:\n  label: {adapter.url}\n'
        proxy, admin = self.start(config)
        self.docker(proxy, "run", "--rm", IMAGE, "true")
        self.docker(proxy, "ps")
        m = self.settled(admin)
        # docker run: create (hooked), attach (a hijacked stream), wait, start...
        self.assertEqual(value(m, "powerstrip_requests_total", route=CREATE, method="POST", code="201"), 1)
        self.assertEqual(value(m, "powerstrip_hook_calls_total", adapter="label", phase="pre-hook", outcome="ok"), 1)
        self.assertEqual(value(m, "powerstrip_hook_duration_seconds_count", adapter="label", phase="pre-hook"), 1)
        self.assertEqual(total(m, "powerstrip_hook_faults_total"), 0)
        self.assertEqual(value(m, "powerstrip_requests_total", route="none", method="POST", code="101"), 1)
        self.assertEqual(value(m, "powerstrip_streams_total"), 1)
        self.assertEqual(value(m, "powerstrip_streams_active"), 0)
        # ...start answers 204 with no body; docker ps lists containers.
        self.assertGreaterEqual(total(m, "powerstrip_requests_total", method="POST", code="204"), 1)
        self.assertGreaterEqual(value(m, "powerstrip_requests_total", route="none", method="GET", code="200"), 1)
        self.assertGreater(value(m, "powerstrip_client_received_bytes_total"), 0)  # the create body
        self.assertGreater(value(m, "powerstrip_client_sent_bytes_total"), 0)
        # Every request counted once: as many as the access log has lines.
        requests = total(m, "powerstrip_requests_total")
        self.assertEqual(
            requests,
            value(m, "powerstrip_request_duration_seconds_count", route="none")
            + value(m, "powerstrip_request_duration_seconds_count", route=CREATE),
        )
        self.assertEqual(requests, len(ACCESS_LINE.findall(proxy.log_text())), proxy.log_text())

    def test_counts_without_access_log_and_reloads(self) -> None:
        proxy, admin = self.start(extra=["--no-access-log"])
        self.docker(proxy, "ps")
        m = self.settled(admin)
        self.assertGreaterEqual(value(m, "powerstrip_requests_total", route="none", method="GET", code="200"), 1)
        self.assertEqual(ACCESS_LINE.findall(proxy.log_text()), [])
        proxy.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while value(scrape(admin), "powerstrip_config_reloads_total", result="ok") < 1:
            self.assertLess(time.monotonic(), deadline, "SIGHUP's reload was not counted")
            time.sleep(0.05)
        self.assertEqual(value(scrape(admin), "powerstrip_config_reloads_total", result="failed"), 0)
