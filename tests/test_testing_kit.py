"""The adapter authors' test kit (:mod:`powerstrip.sdk.testing`), used as they would use it.

A real Powerstrip process in front of the kit's fake dockerd, with the kit's
recording adapter and an SDK adapter served by ``twistd powerstrip-adapter``.
(The end-to-end suite runs the same :class:`PowerstripProcess` in front of
the real dockerd: ``tests/e2e/support.py``.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from twisted.trial.unittest import TestCase

from powerstrip.ops.access import FLUSH_DELAY
from powerstrip.sdk import testing
from powerstrip.sdk.testing import AdapterProcess, FakeDocker, PowerstripProcess, RecordingAdapter

REPO = str(Path(__file__).resolve().parents[1])
ENV = {"PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
CREATE = "/v1.47/containers/create"


def refuse_privileged(payload: dict) -> tuple[int, dict]:
    """A recording adapter's reply: refuse privileged creates, pass the rest."""
    if payload["Type"] == "pre-hook":
        body = json.loads(payload["ClientRequest"]["Body"] or "{}")
        if (body.get("HostConfig") or {}).get("Privileged"):
            return 403, {"message": "no privileged containers"}
    key = "ModifiedClientRequest" if payload["Type"] == "pre-hook" else "ModifiedServerResponse"
    source = payload["ClientRequest"] if payload["Type"] == "pre-hook" else payload["ServerResponse"]
    return 200, {"PowerstripProtocolVersion": 1, key: source}


class KitTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.docker = FakeDocker({"POST /*/containers/create": (201, {"Id": "abc", "Warnings": []})})
        self.addCleanup(self.docker.stop)

    def proxy(self, config: dict) -> PowerstripProcess:
        proxy = PowerstripProcess(config, docker=self.docker.url, env=ENV, cwd=REPO)
        self.addCleanup(proxy.stop)
        return proxy

    def test_recording_adapter_sees_pre_and_post_hooks(self) -> None:
        adapter = RecordingAdapter()
        self.addCleanup(adapter.stop)
        proxy = self.proxy(
            {
                "endpoints": {"POST /*/containers/create": {"pre": ["rec"], "post": ["rec"]}},
                "adapters": {"rec": adapter.url},
            }
        )
        status, headers, body = proxy.request("POST", CREATE, {"Image": "busybox"})
        self.assertEqual((status, json.loads(body)["Id"]), (201, "abc"))
        self.assertRegex(headers["powerstrip-request-id"], "^[0-9a-f]{16}$")
        [call] = adapter.assert_received("pre-hook", "POST /*/containers/create", count=1)
        self.assertEqual(json.loads(call["ClientRequest"]["Body"]), {"Image": "busybox"})
        [call] = adapter.assert_received("post-hook")
        self.assertEqual(call["ServerResponse"]["Code"], 201)
        self.assertEqual([r[:2] for r in self.docker.received("POST /*/containers/create")], [("POST", CREATE)])
        # The access line is in the log as soon as the request is answered, for log_text at least.
        request_id = headers["powerstrip-request-id"]
        self.assertIn(f"#{request_id} POST {CREATE} -> 201", proxy.log_text())

    def test_log_text_waits_longer_than_access_lines_are_held(self) -> None:
        self.assertGreater(testing.LOG_SETTLE, FLUSH_DELAY)

    def test_assert_received_says_what_came(self) -> None:
        adapter = RecordingAdapter()
        self.addCleanup(adapter.stop)
        proxy = self.proxy({"endpoints": {"* /*": {"pre": ["rec"]}}, "adapters": {"rec": adapter.url}})
        proxy.request("GET", "/v1.47/version")
        with self.assertRaises(AssertionError) as caught:
            adapter.assert_received("pre-hook", "POST /*/containers/create")
        self.assertEqual(
            str(caught.exception),
            "expected some pre-hook call(s) for POST /*/containers/create, got 0; "
            "the adapter received:\n  pre-hook GET /v1.47/version",
        )

    def test_refusal_never_reaches_the_fake_docker(self) -> None:
        adapter = RecordingAdapter(refuse_privileged)
        self.addCleanup(adapter.stop)
        proxy = self.proxy(
            {"endpoints": {"POST /*/containers/create": {"pre": ["rec"]}}, "adapters": {"rec": adapter.url}}
        )
        status, _, body = proxy.request("POST", CREATE, {"HostConfig": {"Privileged": True}})
        self.assertEqual((status, json.loads(body)), (403, {"message": "no privileged containers"}))
        self.assertEqual(self.docker.received("POST /*/containers/create"), [])
        status, _, _ = proxy.request("POST", CREATE, {"Image": "busybox"})
        self.assertEqual(status, 201)

    def test_sdk_adapter_process_and_in_process(self) -> None:
        served = AdapterProcess("tests.sdk_adapters.sample", env=ENV, cwd=REPO)
        self.addCleanup(served.stop)
        for url in (served.url, "python:tests.sdk_adapters.sample:adapter"):
            self.docker.requests.clear()
            proxy = self.proxy(
                {"endpoints": {"POST /*/containers/create": {"pre": ["sample"]}}, "adapters": {"sample": url}}
            )
            status, _, _ = proxy.request("POST", CREATE, {"Image": "busybox"})
            self.assertEqual(status, 201, url)
            [(_, _, sent)] = self.docker.received("POST /*/containers/create")
            self.assertEqual(json.loads(sent)["Env"], ["SAMPLE=1"], url)
            proxy.stop()

    def test_fake_docker_answers_the_cli(self) -> None:
        proxy = self.proxy({})
        result = proxy.docker("version", "--format", "{{.Server.Version}}")
        self.assertEqual((result.returncode, result.stdout.strip()), (0, b"fake"), result.stderr)
