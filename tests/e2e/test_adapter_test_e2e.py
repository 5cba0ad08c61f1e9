"""``powerstrip adapter-test`` as users run it: the real command in a child
process, against the example adapters running as real processes.

- ``examples/label_adapter.py`` (Python, stdlib only), over TCP and over a
  unix socket: every sample call must come out valid.
- ``examples/policy_adapter.sh`` (POSIX shell behind socat), a pre-hook-only
  adapter: its pre-hook answers must come out valid (``--only pre-hook``),
  while its echo of a post-hook call is not a post-hook reply (exit 1).

No dockerd is needed: adapter-test talks only to the adapter.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import TestCase

from tests.e2e.support import REPO, LabelAdapter, shell_policy_adapter


def adapter_test(*args: str) -> subprocess.CompletedProcess:
    """Run ``powerstrip adapter-test ARGS`` from this checkout; text output."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "powerstrip.cli", "adapter-test", *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO, env=env)


class LabelAdapterTests(TestCase):
    def check_all_valid(self, adapter: LabelAdapter) -> None:
        result = adapter_test(adapter.url, "--timeout", "10s")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual(lines[0], f"{adapter.url}: 8 protocol-1 sample call(s), timeout 10s")
        self.assertEqual([line.split(None, 4)[4] for line in lines[1:-1]], ["valid"] * 8)
        self.assertEqual(lines[-1], "8 call(s): 8 valid, 0 refused, 0 invalid, 0 fault(s): "
                                    "the adapter speaks protocol 1")
        self.assertEqual([p["Type"] for p in adapter.payloads()], ["pre-hook"] * 3 + ["post-hook"] * 5)

    def test_over_tcp(self) -> None:
        adapter = LabelAdapter()
        self.addCleanup(adapter.stop)
        self.check_all_valid(adapter)

    def test_over_a_unix_socket(self) -> None:
        adapter = LabelAdapter(unix=True)
        self.addCleanup(adapter.stop)
        self.check_all_valid(adapter)


class ShellPolicyAdapterTests(TestCase):
    def setUp(self) -> None:
        self.url = shell_policy_adapter(self)

    def test_its_pre_hook_answers_are_valid(self) -> None:
        result = adapter_test(self.url, "--only", "pre-hook")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual([line.split(None, 4)[4] for line in lines[1:-1]], ["valid"] * 3)
        self.assertEqual(lines[-1], "3 call(s): 3 valid, 0 refused, 0 invalid, 0 fault(s): "
                                    "the adapter speaks protocol 1")

    def test_it_is_no_post_hook(self) -> None:
        result = adapter_test(self.url)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual([line.split(None, 4)[4] for line in lines[1:-1]],
                         ["valid"] * 3 + ["INVALID: (root): 'ModifiedServerResponse' is required"] * 5)
        self.assertTrue(lines[-1].endswith("NOT protocol 1"), lines[-1])
