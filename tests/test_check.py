"""``powerstrip check`` on rule files that used to miss silently (issue 13, item 1)."""

from __future__ import annotations

import contextlib
import glob
import io
import os

from twisted.trial.unittest import TestCase

from powerstrip.config.spec import load_config, parse_config
from powerstrip.ops.cli import engine_api_routes, lint, main
from powerstrip.wire.rules import glob_meets_template

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def findings(*rules: str) -> list[str]:
    """What ``check`` says about a file made of ``rules`` (each with a pre-hook)."""
    text = "endpoints:\n" + "".join(f'  "{r}": {{pre: [a]}}\n' for r in rules) + "adapters: {a: http://a/}\n"
    return lint(parse_config(text))


class LintTests(TestCase):
    def test_correct_spellings_are_silent(self) -> None:
        self.assertEqual(
            findings(
                "POST /containers/create",
                "POST /*/containers/create",
                "POST /containers/*/start",
                "* /*/containers/*",
                "POST /exec/*/start",
                "GET /_ping",
                "HEAD /_ping",
                "* *",
                "* /*",
                "POST /*/start",
                "GET /images/library/busybox/json",
                "POST /session",
                "DELETE /containers/[ab]*",
                "POST /grpc",
            ),
            [],
        )

    def test_version_in_a_key_gets_a_notice(self) -> None:
        [create] = findings("POST /v1.41/containers/create")
        self.assertTrue(
            create.startswith(
                "notice: 'POST /v1.41/containers/create': an API version in a key is "
                "not part of the path: this rule applies to /containers/create at every "
                "API version (/vN.NN/... or none)"
            ),
            create,
        )
        self.assertIn('add versions: "==1.41"', create)
        [start] = findings("POST /v1.41/containers/*/start")
        self.assertIn("applies to /containers/*/start at every API version", start)
        [glob_] = findings("POST /v1.*/containers/create")
        self.assertIn("applies to /containers/create at every API version", glob_)

    def test_notice_names_the_versions_field(self) -> None:
        cfg = parse_config(
            'endpoints:\n  "POST /v1.44/containers/create": {pre: [a], versions: ">=1.44"}\nadapters: {a: http://a/}\n'
        )
        [notice] = lint(cfg)
        self.assertIn("at the API versions >=1.44 (its versions: field) and unversioned", notice)

    def test_misspelt_paths_are_warned_about(self) -> None:
        for rule, near in (
            ("POST /*/container/create", "/containers/create"),
            ("POST /containers/*/sart", "/containers/{id}/start"),
            ("POST /*/contianers/*/exec", "/containers/{id}/exec"),
            ("POST /Containers/create", "/containers/create"),  # paths are case-sensitive
            ("POST /containers/create/", "/containers/create"),
        ):
            [warning] = findings(rule)
            self.assertTrue(warning.startswith(f"warning: {rule!r}: "), warning)
            self.assertIn("matches no Engine API route", warning)
            self.assertIn(f"did you mean {near}?", warning)
            self.assertIn("its hooks would never run", warning)

    def test_versioned_misspelling_gets_both(self) -> None:
        notice, warning = findings("POST /v1.41/containers/crate")
        self.assertTrue(notice.startswith("notice: "))
        # /containers/crate is a path dockerd knows: DELETE of a container named crate.
        self.assertIn("POST matches no method of the routes /containers/crate matches (DELETE)", warning)
        notice, warning = findings("POST /v1.41/contianers/create")
        self.assertIn("/contianers/create matches no Engine API route", warning)

    def test_method_that_no_matched_route_takes(self) -> None:
        [warning] = findings("GET /containers/*/start")
        self.assertEqual(
            warning,
            "warning: 'GET /containers/*/start': GET matches no method of the routes "
            "/containers/*/start matches (POST): its hooks would never run",
        )
        [warning] = findings("PUT /containers/create")
        self.assertIn("(DELETE, POST)", warning)  # /containers/{id} of a container named create
        self.assertEqual(findings("P* /containers/create", "[GH]* /_ping"), [])

    def test_shipped_configurations_are_clean(self) -> None:
        paths = [
            os.path.join(ROOT, "adapters.yml"),
            *glob.glob(os.path.join(ROOT, "examples", "**", "*.yml"), recursive=True),
        ]
        for path in paths:
            text = open(path, encoding="utf-8").read()
            if "endpoints:" in text and "python:" not in text:
                self.assertEqual(lint(load_config(path)), [], path)


class TemplateTests(TestCase):
    def test_glob_meets_template(self) -> None:
        for glob_, template, meets in (
            ("/containers/*/start", "/containers/{id}/start", True),
            ("/containers/*", "/containers/{id}/start", True),  # * spans segments
            ("/containers//start", "/containers/{id}/start", False),  # {id} is never empty
            ("/containers/a/b/start", "/containers/{id}/start", False),  # nor two segments
            ("/images/a/b/json", "/images/{name}/json", True),  # but an image name is
            ("/containers/[!j]son", "/containers/json", False),
            ("/containers/[a-k]son", "/containers/json", True),
            ("/containers/?son", "/containers/json", True),
            ("/containers/[", "/containers/{id}", True),  # an unclosed [ is a literal
            ("*", "/_ping", True),
        ):
            self.assertEqual(glob_meets_template(glob_, template), meets, (glob_, template))

    def test_route_data_is_loaded(self) -> None:
        versions, routes = engine_api_routes()
        self.assertIn("1.41", versions)
        self.assertIn(("POST", "/containers/create"), routes)
        self.assertIn(("POST", "/containers/{id}/start"), routes)


class CommandTests(TestCase):
    def test_check_prints_findings_after_the_table(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(
                'endpoints:\n  "POST /v1.41/containers/create": {pre: [a], versions: ">=1.40, <1.44"}\n'
                '  "POST /*/container/create": {pre: [a]}\nadapters: {a: http://a/}\n'
            )
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(main(["check", path]), 0)  # valid: warnings do not fail the check
        lines = out.getvalue().splitlines()
        self.assertIn("  POST /v1.41/containers/create  pre: a  post: -  versions: >=1.40, <1.44", lines)
        self.assertTrue(lines[-2].startswith("notice: 'POST /v1.41/containers/create'"), lines)
        self.assertTrue(lines[-1].startswith("warning: 'POST /*/container/create'"), lines)

    def test_explain_shows_path_identity(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(
                'endpoints:\n  "POST /containers/create": {pre: [a]}\n'
                '  "POST /v1.41/containers/create": {pre: [b], versions: ">=1.44"}\n'
                "adapters: {a: http://a/, b: http://b/}\n"
            )
        for call, expected in (
            (
                "POST /v1.24/containers/create",
                [
                    "POST /v1.24/containers/create",
                    "  path /containers/create at API version 1.24",
                    "  not matched: POST /v1.41/containers/create (versions: >=1.44)",
                    "  matching rules (file order): POST /containers/create",
                    "  pre-hooks:  a",
                    "  post-hooks: -",
                ],
            ),
            (
                "POST /containers/%63reate?name=x",
                [
                    "POST /containers/%63reate",
                    "  path /containers/create, unversioned: dockerd's current API version, within every "
                    "rule's versions:",
                    "  matching rules (file order): POST /containers/create, POST /v1.41/containers/create",
                    "  pre-hooks:  a -> b",
                    "  post-hooks: -",
                ],
            ),
        ):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                self.assertEqual(main(["explain", call, "-c", path]), 0)
            self.assertEqual(out.getvalue().splitlines(), expected)
