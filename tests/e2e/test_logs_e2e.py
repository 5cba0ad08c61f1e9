"""``--log-format json`` end to end: a real ``twistd -n powerstrip`` in front of the real dockerd.

Every line twistd writes (its own start-up and shut-down lines too) must be
one JSON object, to ``--logfile`` or, without it, to stdout; the access lines
of ``docker run`` carry request ids, and the id a client gets in the
``Powerstrip-Request-Id`` header is the one in the log.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.e2e.support import (
    CLIS,
    DOCKER_SOCK,
    IMAGE,
    LABEL,
    PASSTHROUGH,
    REPO,
    Powerstrip,
    free_port,
    require_daemon,
    run,
    wait_for_port,
)

JSON_ARGS = ["--log-format", "json"]
REQUEST_ID = re.compile(r"^[0-9a-f]{16}$")
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def parse_lines(text: str) -> list[dict]:
    """Every line of ``text`` as a JSON object (a line that is not one fails the caller)."""
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        record = json.loads(line)  # a ValueError names the line's position
        assert isinstance(record, dict), f"line {number} is not an object: {line!r}"
        assert {"time", "level", "namespace", "message"} <= set(record), f"line {number}: {line!r}"
        assert ISO_MS.match(record["time"]), f"line {number}: {line!r}"
        records.append(record)
    return records


def ping(port: int) -> str:
    """``GET /_ping`` over TCP; returns the ``Powerstrip-Request-Id`` of the answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/_ping")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"OK", resp.status
        return resp.getheader("Powerstrip-Request-Id")
    finally:
        conn.close()


class LogfileTests(TestCase):
    """``twistd -n --logfile=... powerstrip --log-format json`` (the e2e Powerstrip)."""

    def setUp(self) -> None:
        require_daemon()
        self.proxy = Powerstrip(extra=JSON_ARGS)
        self.addCleanup(self.proxy.stop)

    def wait_for_records(self, predicate, what: str, path: Path | None = None) -> list[dict]:
        """Poll the log until ``predicate(records)`` is true; returns the records."""
        deadline = time.monotonic() + 20
        while True:
            text = (path or self.proxy.log).read_text()
            records = parse_lines(text)
            if predicate(records):
                return records
            if time.monotonic() > deadline:
                self.fail(f"{what} never logged:\n{text}")
            time.sleep(0.1)

    def access(self, records: list[dict], method: str, pattern: str) -> list[dict]:
        return [r for r in records if r.get("method") == method and re.search(pattern, r.get("path", ""))]

    def test_docker_run_access_lines_carry_request_ids(self) -> None:
        result = run([CLIS["docker 28"], "run", "--rm", "--label", LABEL, IMAGE, "true"], host=self.proxy.url)
        self.assertEqual(result.returncode, 0, result.stderr)
        calls = {
            "create": ("POST", r"/containers/create(\?|$)"),
            "start": ("POST", r"/containers/\w+/start$"),
            "wait": ("POST", r"/containers/\w+/wait(\?|$)"),
        }
        records = self.wait_for_records(
            lambda rs: all(self.access(rs, *call) for call in calls.values()), "create/start/wait"
        )
        ids = set()
        for name, call in calls.items():
            [record] = self.access(records, *call)
            self.assertRegex(record["request_id"], REQUEST_ID, name)
            self.assertIn(f"#{record['request_id']} {record['method']} {record['path']} -> ", record["message"])
            self.assertEqual((record["level"], record["namespace"]), ("info", "powerstrip.access"), name)
            self.assertIsInstance(record["status"], int)
            self.assertLess(record["status"], 300, record)
            self.assertIsInstance(record["bytes"], int)
            self.assertIsInstance(record["duration_ms"], float)
            self.assertEqual(record["hooks"], [])
            ids.add(record["request_id"])
        self.assertEqual(len(ids), 3, "one id per request")
        # docker run attaches: the stream's line has its byte counts.
        records = self.wait_for_records(lambda rs: self.access(rs, "POST", r"/attach\?"), "the attach stream")
        [attach] = self.access(records, "POST", r"/attach\?")
        self.assertEqual(attach["status"], 101)
        self.assertIsInstance(attach["stream_bytes_out"], int)
        self.assertIsInstance(attach["stream_bytes_in"], int)
        # twistd's own start-up lines, and Powerstrip's, are JSON too.
        messages = [r["message"] for r in records]
        self.assertTrue(any(re.match(r"twistd [\d.]+\S* \(.*\) starting up\.$", m) for m in messages), messages)
        self.assertTrue(any(m.startswith("reactor class: ") for m in messages), messages)
        self.assertTrue(any(m.startswith("powerstrip: proxying to Docker at ") for m in messages), messages)
        self.assertIn(f"export DOCKER_HOST={self.proxy.url}", messages)

    def test_request_id_header_is_in_the_log(self) -> None:
        request_id = ping(self.proxy.port)
        self.assertRegex(request_id, REQUEST_ID)
        records = self.wait_for_records(
            lambda rs: any(r.get("request_id") == request_id for r in rs), f"request {request_id}"
        )
        [record] = [r for r in records if r.get("request_id") == request_id]
        self.assertEqual(
            (record["method"], record["path"], record["status"], record["bytes"]), ("GET", "/_ping", 200, 2)
        )

    def test_sigusr1_rotates_and_json_goes_on(self) -> None:
        first = ping(self.proxy.port)
        self.wait_for_records(lambda rs: any(r.get("request_id") == first for r in rs), "the first ping")
        self.proxy.proc.send_signal(signal.SIGUSR1)
        rotated = Path(f"{self.proxy.log}.1")
        deadline = time.monotonic() + 10
        while not rotated.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertTrue(rotated.exists(), "SIGUSR1 did not rotate the log")
        second = ping(self.proxy.port)
        self.wait_for_records(lambda rs: any(r.get("request_id") == second for r in rs), "the second ping")
        old = parse_lines(rotated.read_text())
        self.assertIn(first, [r.get("request_id") for r in old])
        self.assertNotIn(second, [r.get("request_id") for r in old])
        self.assertTrue(self.proxy.alive())


class StdoutTests(TestCase):
    """``twistd -n powerstrip --log-format json`` without ``--logfile``: JSON lines on stdout."""

    def setUp(self) -> None:
        require_daemon()
        self.dir = Path(tempfile.mkdtemp(prefix="powerstrip-e2e-"))
        self.addCleanup(shutil.rmtree, self.dir, True)

    def test_every_stdout_line_is_json_from_start_to_shutdown(self) -> None:
        port = free_port()
        cfg = self.dir / "adapters.yml"
        cfg.write_text(PASSTHROUGH)
        out, err = self.dir / "stdout", self.dir / "stderr"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("DOCKER_HOST", None)
        cmd = [
            shutil.which("twistd") or "twistd",
            "-n",
            "--pidfile=",
            "powerstrip",
            *JSON_ARGS,
            "--docker",
            DOCKER_SOCK,
            "--config",
            str(cfg),
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
        ]
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=stdout, stderr=stderr)
        try:
            wait_for_port(port, proc, "powerstrip", out)
            request_id = ping(port)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.assertEqual(proc.returncode, 0, err.read_text())
        self.assertEqual(err.read_text(), "")
        records = parse_lines(out.read_text())
        [access] = [r for r in records if r.get("request_id") == request_id]
        self.assertEqual((access["path"], access["status"]), ("/_ping", 200))
        messages = [r["message"] for r in records]
        self.assertTrue(any(m.startswith("twistd ") and m.endswith(" starting up.") for m in messages), messages)
        self.assertIn(f"export DOCKER_HOST=tcp://127.0.0.1:{port}", messages)
        self.assertEqual(messages[-1], "Server Shut Down.")
