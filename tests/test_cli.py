"""The ``powerstrip`` command: ``check`` and ``explain`` an adapters file."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys

from twisted.trial.unittest import TestCase

from powerstrip.ops.cli import main

CONFIG = """\
version: 1
endpoints:
  "POST /*/containers/create":
    pre: [flocker, weave]
  "* /*/containers/*":
    post: [weave]
adapters:
  flocker: http://flocker/hook
  weave: {url: "http+unix://%2Frun%2Fweave.sock/hook", timeout: 2s, failure: ignore}
"""


class CommandTests(TestCase):
    def setUp(self) -> None:
        self.path = self.mktemp()
        with open(self.path, "w") as f:
            f.write(CONFIG)

    def run_main(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as e:
                code = e.code
        return code, out.getvalue(), err.getvalue()

    def test_check_prints_the_routing_table(self) -> None:
        code, out, _ = self.run_main("check", self.path)
        self.assertEqual(code, 0)
        self.assertEqual(
            out.splitlines(),
            [
                f"{self.path}: valid, 2 endpoint rule(s), 2 adapter(s)",
                "",
                "  POST /*/containers/create  pre: flocker -> weave  post: -",
                "  * /*/containers/*          pre: -  post: weave",
                "",
                "  flocker  http://flocker/hook  (timeout 30s, failure: fail)",
                "  weave    http+unix://%2Frun%2Fweave.sock/hook  (timeout 2s, failure: ignore)",
            ],
        )

    def test_check_of_an_invalid_file_names_the_culprit(self) -> None:
        with open(self.path, "w") as f:
            f.write(CONFIG.replace("pre: [flocker, weave]", "pre: [flocker, nobody]"))
        code, out, err = self.run_main("check", self.path)
        self.assertEqual((code, out), (1, ""))
        self.assertIn("powerstrip: invalid configuration:", err)
        self.assertIn("nobody", err)

    def test_explain_lists_rules_and_hooks_in_order(self) -> None:
        code, out, _ = self.run_main("explain", "POST /v1.41/containers/create?name=web", "-c", self.path)
        self.assertEqual(code, 0)
        self.assertEqual(
            out.splitlines(),
            [
                "POST /v1.41/containers/create",
                "  path /containers/create at API version 1.41",
                "  matching rules (file order): POST /*/containers/create, * /*/containers/*",
                "  pre-hooks:  flocker -> weave",
                "  post-hooks: weave",
            ],
        )

    def test_explain_unversioned_path_and_streaming_call(self) -> None:
        _, out, _ = self.run_main("explain", "post /containers/abc/wait", "-c", self.path)
        self.assertIn("matching rules (file order): * /*/containers/*", out)
        self.assertIn("post-hooks: weave  (skipped: this call's response streams", out)

    def test_explain_unmatched_call(self) -> None:
        _, out, _ = self.run_main("explain", "GET /_ping", "-c", self.path)
        self.assertIn("no rule matches: passed straight to Docker", out)

    def test_explain_needs_method_and_path(self) -> None:
        code, _, err = self.run_main("explain", "/containers/json", "-c", self.path)
        self.assertEqual(code, 2)
        self.assertIn("expected 'METHOD /path'", err)

    def test_runs_as_a_program(self) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "powerstrip.ops.cli", "check", self.path], capture_output=True, text=True, timeout=60
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("valid, 2 endpoint rule(s)", done.stdout)
