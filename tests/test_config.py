"""Tests for :mod:`powerstrip.config.spec`: loading and validating ``adapters.yml``."""

from __future__ import annotations

import textwrap

from twisted.trial.unittest import TestCase

from powerstrip.config.spec import (
    DEFAULT_ADAPTER_TIMEOUT,
    AdapterSpec,
    Config,
    ConfigError,
    Endpoint,
    load_config,
    parse_config,
)

CANONICAL = """\
version: 1
endpoints:
  "POST /*/containers/create":
    pre: [flocker, weave]
  "POST /*/containers/*/start":
    post: [weave]
adapters:
  flocker: http://flocker/flocker-adapter
  weave: http://weave/extension
"""

FLOCKER = AdapterSpec("flocker", "http://flocker/flocker-adapter")
WEAVE = AdapterSpec("weave", "http://weave/extension")


def doc(text: str) -> str:
    """A dedented YAML document, so tests can indent their files."""
    return textwrap.dedent(text)


class ValidConfigTests(TestCase):
    """Files that must load, and what they load into."""

    def test_canonical_example_from_a_file(self) -> None:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(CANONICAL)
        config = load_config(path)
        self.assertIsInstance(config, Config)
        self.assertEqual(config.source, path)
        self.assertEqual(config.adapters, {"flocker": FLOCKER, "weave": WEAVE})
        self.assertEqual(
            config.endpoints,
            (
                Endpoint("POST /*/containers/create", "POST", "/*/containers/create", pre=(FLOCKER, WEAVE)),
                Endpoint("POST /*/containers/*/start", "POST", "/*/containers/*/start", post=(WEAVE,)),
            ),
        )
        self.assertEqual(FLOCKER.timeout, DEFAULT_ADAPTER_TIMEOUT)

    def test_parse_config_names_its_source(self) -> None:
        self.assertEqual(parse_config(CANONICAL).source, "<string>")
        self.assertEqual(parse_config(CANONICAL, source="x.yml").source, "x.yml")

    def test_multiple_endpoints_keep_file_order_and_both_phases(self) -> None:
        config = parse_config(
            doc("""\
            endpoints:
              "DELETE /*/containers/*":
                pre: [a]
                post: [b, a]
              "GET /*/containers/json":
                post: [b]
              "POST /*/volumes/create":
                pre: [b]
            adapters:
              a: http://a:8080/hook
              b: https://b/hook
            """)
        )
        a, b = AdapterSpec("a", "http://a:8080/hook"), AdapterSpec("b", "https://b/hook")
        self.assertEqual(
            [(e.pattern, e.method, e.path, e.pre, e.post) for e in config.endpoints],
            [
                ("DELETE /*/containers/*", "DELETE", "/*/containers/*", (a,), (b, a)),
                ("GET /*/containers/json", "GET", "/*/containers/json", (), (b,)),
                ("POST /*/volumes/create", "POST", "/*/volumes/create", (b,), ()),
            ],
        )

    def test_star_method(self) -> None:
        config = parse_config(
            doc("""\
            endpoints:
              "* /*/containers/*":
                pre: [a]
            adapters:
              a: http://a/
            """)
        )
        (ep,) = config.endpoints
        self.assertEqual((ep.method, ep.path), ("*", "/*/containers/*"))

    def test_method_is_upper_cased(self) -> None:
        config = parse_config(
            doc("""\
            endpoints:
              "post /*/containers/create":
                pre: [a]
            adapters:
              a: http://a/
            """)
        )
        self.assertEqual(config.endpoints[0].method, "POST")
        self.assertEqual(config.endpoints[0].pattern, "post /*/containers/create")

    def test_single_adapter_name_as_a_string(self) -> None:
        config = parse_config(
            doc("""\
            endpoints:
              "POST /*/containers/create":
                pre: a
            adapters:
              a: http://a/
            """)
        )
        self.assertEqual(config.endpoints[0].pre, (AdapterSpec("a", "http://a/"),))

    def test_version_may_be_omitted(self) -> None:
        config = parse_config(CANONICAL.replace("version: 1\n", ""))
        self.assertEqual(len(config.endpoints), 2)

    def test_empty_endpoints_and_adapters(self) -> None:
        config = parse_config("endpoints: {}\nadapters: {}\n")
        self.assertEqual((config.endpoints, config.adapters), ((), {}))

    def test_passthrough(self) -> None:
        config = Config.passthrough()
        self.assertEqual((config.endpoints, config.adapters), ((), {}))


class InvalidConfigTests(TestCase):
    """Every rejection is a ConfigError whose message names the file and the culprit."""

    def assertRejected(self, text: str, *fragments: str, source: str = "adapters.yml") -> str:
        """``text`` fails to parse, with a message holding the source name and ``fragments``."""
        e = self.assertRaises(ConfigError, parse_config, doc(text), source)
        message = str(e)
        self.assertTrue(message.startswith(source + ": "), message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message

    def test_not_yaml(self) -> None:
        self.assertRejected("endpoints: [unclosed\n", "not valid YAML")
        self.assertRejected("a: b: c\n", "not valid YAML")

    def test_not_a_mapping(self) -> None:
        for text in ("- version\n- endpoints\n", "just a string\n", "42\n", ""):
            self.assertRejected(text, "expected a mapping with 'version', 'endpoints' and 'adapters'")

    def test_unknown_top_level_key(self) -> None:
        message = self.assertRejected(CANONICAL + "hooks: {}\n", "unknown top-level key(s): hooks")
        self.assertIn("allowed: adapters, endpoints, events, version", message)

    def test_missing_endpoints(self) -> None:
        self.assertRejected("version: 1\nadapters: {a: http://a/}\n", "missing required key 'endpoints'")

    def test_missing_adapters(self) -> None:
        self.assertRejected('version: 1\nendpoints: {"POST /x": {pre: [a]}}\n', "missing required key 'adapters'")

    def test_endpoints_not_a_mapping(self) -> None:
        self.assertRejected(
            "endpoints: [POST /x]\nadapters: {a: http://a/}\n", "'endpoints' must be a mapping, not a list"
        )
        self.assertRejected("endpoints:\nadapters: {a: http://a/}\n", "'endpoints' must be a mapping, not nothing")

    def test_adapters_not_a_mapping(self) -> None:
        self.assertRejected(
            'endpoints: {"POST /x": {pre: [a]}}\nadapters: [http://a/]\n', "'adapters' must be a mapping, not a list"
        )

    def test_endpoint_key_without_path(self) -> None:
        self.assertRejected(
            """\
            endpoints:
              "POST":
                pre: [a]
            adapters:
              a: http://a/
            """,
            "endpoint 'POST'",
            'expected "METHOD /path"',
        )

    def test_endpoint_path_without_leading_slash(self) -> None:
        self.assertRejected(
            """\
            endpoints:
              "POST containers/create":
                pre: [a]
            adapters:
              a: http://a/
            """,
            "endpoint 'POST containers/create'",
            'expected "METHOD /path"',
        )

    def test_endpoint_key_with_too_many_words_or_bad_method(self) -> None:
        for key in ("POST /x /y", "PO-ST /x", "/x POST"):
            self.assertRejected(
                f"""\
                endpoints:
                  "{key}":
                    pre: [a]
                adapters:
                  a: http://a/
                """,
                f"endpoint {key!r}",
                'expected "METHOD /path"',
            )

    def test_endpoint_key_not_a_string(self) -> None:
        self.assertRejected(
            """\
            endpoints:
              42:
                pre: [a]
            adapters:
              a: http://a/
            """,
            "endpoint 42",
            "the key must be a string",
        )

    def test_endpoint_with_neither_pre_nor_post(self) -> None:
        for spec in ("{}", "{pre: [], post: []}", "{pre: []}", "{post: null}"):
            self.assertRejected(
                f"""\
                endpoints:
                  "POST /*/containers/create": {spec}
                adapters:
                  a: http://a/
                """,
                "endpoint 'POST /*/containers/create'",
                "has neither 'pre' nor 'post' adapters",
            )

    def test_endpoint_not_a_mapping(self) -> None:
        self.assertRejected(
            """\
            endpoints:
              "POST /*/containers/create": [a]
            adapters:
              a: http://a/
            """,
            "endpoint 'POST /*/containers/create'",
            "not a list",
        )

    def test_unknown_key_in_endpoint(self) -> None:
        self.assertRejected(
            """\
            endpoints:
              "POST /*/containers/create":
                pre: [a]
                prehooks: [a]
            adapters:
              a: http://a/
            """,
            "endpoint 'POST /*/containers/create'",
            "unknown key(s) prehooks",
            "allowed: pre, post, versions",
        )

    def test_versions_field(self) -> None:
        cfg = parse_config(
            'endpoints:\n  "POST /x": {pre: [a], versions: ">=1.40, <1.44"}\n  "POST /y": {pre: [a]}\n'
            'adapters: {a: {url: "http://a/", secrets: true}}\n'
        )
        self.assertEqual([e.versions for e in cfg.endpoints], [((">=", "1.40"), ("<", "1.44")), ()])
        self.assertTrue(cfg.adapters["a"].secrets)
        for bad in ('"1.44"', '">= 1.x"', "1.44", '">=1.40 <1.44"'):
            self.assertRejected(
                f'endpoints:\n  "POST /x": {{pre: [a], versions: {bad}}}\nadapters: {{a: "http://a/"}}\n',
                "endpoint 'POST /x': versions:",
                "comma-separated list of comparisons",
            )

    def test_hooks_not_a_list(self) -> None:
        self.assertRejected(
            """\
            endpoints:
              "POST /*/containers/create":
                post: {a: 1}
            adapters:
              a: http://a/
            """,
            "endpoint 'POST /*/containers/create'",
            "'post' must be a list of adapter names",
        )

    def test_undefined_pre_adapter(self) -> None:
        self.assertRejected(
            CANONICAL.replace("[flocker, weave]", "[flocker, weeve]"),
            "endpoint 'POST /*/containers/create'",
            "pre-hook adapter 'weeve' is not defined",
            "(defined: flocker, weave)",
        )

    def test_undefined_post_adapter(self) -> None:
        self.assertRejected(
            """\
            endpoints:
              "POST /*/containers/*/start":
                post: [missing]
            adapters: {}
            """,
            "endpoint 'POST /*/containers/*/start'",
            "post-hook adapter 'missing' is not defined",
            "(defined: none)",
        )

    def test_adapter_name_that_is_not_a_name(self) -> None:
        """A list or mapping where an adapter name belongs is a ConfigError, not a crash."""
        for names in ("[[flocker]]", "[{flocker: 1}]"):
            self.assertRejected(
                CANONICAL.replace("[flocker, weave]", names), "endpoint 'POST /*/containers/create'", "pre-hook adapter"
            )

    def test_adapter_url_not_http(self) -> None:
        for url in ("ftp://a/hook", "a/hook", "unix:///var/run/a.sock", "http://", "http:/a"):
            self.assertRejected(
                f"""\
                endpoints:
                  "POST /x":
                    pre: [a]
                adapters:
                  a: "{url}"
                """,
                f"adapter 'a': {url!r} is not an http://, https://, http+unix:// or python:module:name URL",
            )

    def test_adapter_url_not_a_string(self) -> None:
        self.assertRejected(
            """\
            endpoints:
              "POST /x":
                pre: [a]
            adapters:
              a: [http://a/]
            """,
            "adapter 'a': expected a URL string or a mapping with 'url', not a list",
        )
        self.assertRejected(
            """\
            endpoints:
              "POST /x":
                pre: [a]
            adapters:
              a:
            """,
            "adapter 'a': expected a URL string or a mapping with 'url', not nothing",
        )

    def test_adapter_mapping_with_policy(self) -> None:
        config = parse_config(
            textwrap.dedent("""\
            version: 1
            endpoints:
              "POST /x":
                pre: [plain, audit, quick]
            adapters:
              plain: http://plain/hook
              audit:
                url: http://audit/hook
                timeout: 2s
                failure: ignore
              quick: {url: "http://quick/hook", timeout: 250ms, failure: fail}
            """)
        )
        plain, audit, quick = config.endpoints[0].pre
        self.assertEqual((plain.timeout, plain.ignore_faults), (30.0, False))
        self.assertEqual((audit.url, audit.timeout, audit.ignore_faults), ("http://audit/hook", 2.0, True))
        self.assertEqual((quick.timeout, quick.ignore_faults), (0.25, False))

    def test_unix_socket_adapter(self) -> None:
        config = parse_config(
            textwrap.dedent("""\
            version: 1
            endpoints:
              "POST /x": {pre: [local]}
            adapters:
              local: http+unix://%2Frun%2Fpowerstrip%2Fa.sock/hook
            """)
        )
        self.assertEqual(config.endpoints[0].pre[0].url, "http+unix://%2Frun%2Fpowerstrip%2Fa.sock/hook")

    def test_adapter_mapping_rejections(self) -> None:
        base = """\
            endpoints:
              "POST /x":
                pre: [a]
            adapters:
              a: {SPEC}
            """
        for spec, message in (
            ("{timeout: 2s}", "adapter 'a': 'url' must be an http://, https://, http+unix:// or python: URL string"),
            ('{url: "http://a/", timeout: soon}', "adapter 'a': timeout 'soon' is not a duration"),
            ('{url: "http://a/", timeout: 0}', "adapter 'a': timeout 0 is not a duration"),
            ('{url: "http://a/", failure: retry}', "failure must be 'fail' or 'ignore', not 'retry'"),
            ('{url: "http://a/", retries: 3}', "adapter 'a': unknown key(s) retries"),
            ('{url: "http://a/", secrets: yes please}', "adapter 'a': secrets must be true or false"),
            ('{url: "http+unix://run%2Fa.sock/hook"}', "the host of an http+unix:// URL is the socket's absolute path"),
            ('{url: "http+unix://%2F' + "x" * 120 + '/hook"}', "is longer than the 107 bytes"),
        ):
            self.assertRejected(base.replace("{SPEC}", spec), message)

    def test_bad_version(self) -> None:
        for version, shown in (("2", "2"), ('"1"', "'1'"), ("true", "True"), ("null", "None")):
            self.assertRejected(
                CANONICAL.replace("version: 1", f"version: {version}"), f"unsupported version {shown}", "version 1"
            )

    def test_load_config_missing_path(self) -> None:
        path = self.mktemp()
        e = self.assertRaises(ConfigError, load_config, path)
        self.assertIn(path, str(e))
        self.assertIn("cannot read adapters file", str(e))
        self.assertIn("No such file or directory", str(e))

    def test_load_config_names_the_file_in_validation_errors(self) -> None:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write("endpoints: {}\n")
        e = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(str(e), f"{path}: missing required key 'adapters'")
