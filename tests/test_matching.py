"""Tests for :mod:`powerstrip.config.matching`: which rules a request line hits."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from powerstrip.config.matching import NO_ROUTE, Route, match
from powerstrip.config.spec import AdapterSpec, Config, Endpoint, parse_config
from powerstrip.wire.apipath import parse_versions
from powerstrip.wire.rules import key_version, path_globs, request_path

A, B, C, D = (AdapterSpec(n, f"http://{n}/hook") for n in "abcd")


def rule(
    pattern: str, pre: tuple[AdapterSpec, ...] = (), post: tuple[AdapterSpec, ...] = (), versions: str | None = None
) -> Endpoint:
    """An endpoint as :func:`powerstrip.config.spec.parse_config` would build it."""
    method, path = pattern.split()
    return Endpoint(pattern, method.upper(), path, pre, post, parse_versions(versions) if versions else ())


def config(*endpoints: Endpoint) -> Config:
    return Config(endpoints=endpoints, adapters={a.name: a for a in (A, B, C, D)})


class MatchTestCase(TestCase):
    def assertMatches(self, cfg: Config, method: str, path: str, *patterns: str) -> Route:
        route = match(cfg, method, path)
        self.assertEqual(route.patterns, patterns, f"{method} {path}")
        return route

    def assertNoMatch(self, cfg: Config, method: str, path: str) -> None:
        route = match(cfg, method, path)
        self.assertIs(route, NO_ROUTE, f"{method} {path} matched {route.patterns}")
        self.assertFalse(route.hooked)


class GlobTests(MatchTestCase):
    def test_star(self) -> None:
        cfg = config(rule("POST /*/containers/*/start", pre=(A,)))
        route = self.assertMatches(cfg, "POST", "/v1.41/containers/abc123/start", "POST /*/containers/*/start")
        self.assertEqual(route.pre, (A,))
        self.assertTrue(route.hooked)
        self.assertNoMatch(cfg, "POST", "/v1.41/containers/abc123/stop")
        self.assertNoMatch(cfg, "POST", "/v1.41/containers/abc123/start/more")

    def test_exact_path(self) -> None:
        cfg = config(rule("GET /info", pre=(A,)))
        self.assertMatches(cfg, "GET", "/v1.41/info", "GET /info")
        self.assertMatches(cfg, "GET", "/info", "GET /info")
        self.assertNoMatch(cfg, "GET", "/v1.41/infos")
        self.assertNoMatch(cfg, "GET", "/v1.41/x/info")

    def test_question_mark(self) -> None:
        cfg = config(rule("GET /containers/?/json", pre=(A,)))
        self.assertMatches(cfg, "GET", "/v1.41/containers/a/json", "GET /containers/?/json")
        self.assertNoMatch(cfg, "GET", "/v1.41/containers/ab/json")

    def test_brackets(self) -> None:
        cfg = config(rule("DELETE /*/containers/[ab]*", pre=(A,)))
        self.assertMatches(cfg, "DELETE", "/v1.41/containers/abc", "DELETE /*/containers/[ab]*")
        self.assertMatches(cfg, "DELETE", "/v1.41/containers/b", "DELETE /*/containers/[ab]*")
        self.assertNoMatch(cfg, "DELETE", "/v1.41/containers/cab")

    def test_negated_brackets(self) -> None:
        cfg = config(rule("GET /*/containers/[!j]*", pre=(A,)))
        self.assertMatches(cfg, "GET", "/v1.41/containers/abc", "GET /*/containers/[!j]*")
        self.assertNoMatch(cfg, "GET", "/v1.41/containers/json")

    def test_path_match_is_case_sensitive(self) -> None:
        cfg = config(rule("GET /*/containers/json", pre=(A,)))
        self.assertNoMatch(cfg, "GET", "/v1.41/Containers/json")


class MethodTests(MatchTestCase):
    def test_star_method(self) -> None:
        cfg = config(rule("* /*/containers/create", pre=(A,)))
        for method in ("GET", "POST", "DELETE", "put", "HEAD"):
            self.assertMatches(cfg, method, "/v1.41/containers/create", "* /*/containers/create")

    def test_method_must_match(self) -> None:
        cfg = config(rule("POST /*/containers/create", pre=(A,)))
        self.assertNoMatch(cfg, "GET", "/v1.41/containers/create")
        self.assertNoMatch(cfg, "POSTS", "/v1.41/containers/create")

    def test_method_case_insensitive(self) -> None:
        cfg = config(rule("post /*/containers/create", pre=(A,)))
        for method in ("POST", "post", "Post"):
            self.assertMatches(cfg, method, "/v1.41/containers/create", "post /*/containers/create")

    def test_method_glob(self) -> None:
        cfg = config(rule("P* /*/containers/create", pre=(A,)))
        self.assertMatches(cfg, "put", "/v1.41/containers/create", "P* /*/containers/create")
        self.assertMatches(cfg, "POST", "/v1.41/containers/create", "P* /*/containers/create")
        self.assertNoMatch(cfg, "GET", "/v1.41/containers/create")


class QueryStringTests(MatchTestCase):
    def test_query_string_is_stripped(self) -> None:
        cfg = config(rule("POST /*/containers/create", pre=(A,)))
        self.assertMatches(cfg, "POST", "/v1.41/containers/create?name=web", "POST /*/containers/create")
        self.assertMatches(cfg, "POST", "/v1.41/containers/create?", "POST /*/containers/create")
        self.assertMatches(cfg, "POST", "/containers/create?name=web", "POST /*/containers/create")

    def test_query_string_cannot_make_a_match(self) -> None:
        cfg = config(rule("* /*/containers/create", pre=(A,)), rule("GET /*/info*", pre=(B,)))
        self.assertNoMatch(cfg, "POST", "/v1.41/images/create?x=/v1/containers/create")
        self.assertNoMatch(cfg, "GET", "/v1.41/version?q=/v1.41/info")

    def test_request_path_strips_the_query(self) -> None:
        self.assertEqual(request_path("/v1.41/containers/json?all=1"), ("1.41", "/containers/json"))
        self.assertEqual(request_path("/_ping?x=/v1.41/y"), (None, "/_ping"))


class UnversionedTests(MatchTestCase):
    def test_request_path(self) -> None:
        self.assertEqual(request_path("/v1.41/_ping"), ("1.41", "/_ping"))
        self.assertEqual(request_path("/v1/_ping"), ("1", "/_ping"))
        self.assertEqual(request_path("/_ping"), (None, "/_ping"))
        self.assertEqual(request_path("/version"), (None, "/version"))
        self.assertEqual(request_path("/%761.41/containers/%63reate"), ("1.41", "/containers/create"))

    def test_unversioned_path_hits_star_version_rule(self) -> None:
        cfg = config(rule("POST /*/containers/create", pre=(A,)))
        route = self.assertMatches(cfg, "POST", "/containers/create", "POST /*/containers/create")
        self.assertEqual(route.pre, (A,))
        self.assertMatches(cfg, "POST", "/v1.41/containers/create", "POST /*/containers/create")

    def test_ping_versioned_and_unversioned(self) -> None:
        star = config(rule("GET /*/_ping", pre=(A,)))
        self.assertMatches(star, "GET", "/_ping", "GET /*/_ping")
        self.assertMatches(star, "GET", "/v1.41/_ping", "GET /*/_ping")
        bare = config(rule("GET /_ping", pre=(A,)))
        self.assertMatches(bare, "GET", "/_ping", "GET /_ping")
        self.assertMatches(bare, "GET", "/v1.41/_ping", "GET /_ping")
        versioned = config(rule("GET /v1.41/_ping", pre=(A,)))
        self.assertMatches(versioned, "GET", "/v1.41/_ping", "GET /v1.41/_ping")
        self.assertMatches(versioned, "GET", "/v1.24/_ping", "GET /v1.41/_ping")
        self.assertMatches(versioned, "GET", "/_ping", "GET /v1.41/_ping")

    def test_unversioned_version_endpoint(self) -> None:
        """``/version`` is not mistaken for a version prefix."""
        cfg = config(rule("GET /*/version", pre=(A,)))
        self.assertMatches(cfg, "GET", "/version", "GET /*/version")
        self.assertMatches(cfg, "GET", "/v1.41/version", "GET /*/version")

    def test_unversioned_rule_path_is_not_tried_twice(self) -> None:
        """An unversioned path matching two ways still yields the rule once."""
        cfg = config(rule("GET /*", pre=(A,)))
        route = self.assertMatches(cfg, "GET", "/_ping", "GET /*")
        self.assertEqual(route.pre, (A,))


class MergeTests(MatchTestCase):
    def test_rules_merge_in_file_order(self) -> None:
        cfg = config(
            rule("POST /*/containers/create", pre=(A,), post=(C,)),
            rule("GET /*/containers/json", pre=(D,)),
            rule("POST /*/containers/*", pre=(B,), post=(D,)),
            rule("* /*", post=(A,)),
        )
        route = self.assertMatches(
            cfg, "POST", "/v1.41/containers/create", "POST /*/containers/create", "POST /*/containers/*", "* /*"
        )
        self.assertEqual(route.pre, (A, B))
        self.assertEqual(route.post, (C, D, A))

    def test_file_order_not_specificity(self) -> None:
        cfg = config(rule("* /*", pre=(B,)), rule("POST /*/containers/create", pre=(A,)))
        route = self.assertMatches(cfg, "POST", "/v1.41/containers/create", "* /*", "POST /*/containers/create")
        self.assertEqual(route.pre, (B, A))

    def test_each_rule_keeps_its_own_order(self) -> None:
        cfg = config(rule("POST /*/x", pre=(C, A)), rule("POST /*/*", pre=(D, B)))
        self.assertEqual(match(cfg, "POST", "/v1.41/x").pre, (C, A, D, B))

    def test_adapter_in_two_rules_runs_once_at_first_position(self) -> None:
        cfg = config(
            rule("POST /*/containers/create", pre=(A, B), post=(B,)),
            rule("POST /*/containers/*", pre=(C, A), post=(A, B)),
        )
        route = match(cfg, "POST", "/v1.41/containers/create")
        self.assertEqual(route.pre, (A, B, C))
        self.assertEqual(route.post, (B, A))

    def test_phases_are_deduplicated_separately(self) -> None:
        cfg = config(rule("POST /*/x", pre=(A,)), rule("POST /*/*", post=(A,)))
        route = match(cfg, "POST", "/v1.41/x")
        self.assertEqual((route.pre, route.post), ((A,), (A,)))

    def test_only_matching_rules_contribute(self) -> None:
        cfg = config(rule("POST /*/containers/create", pre=(A,)), rule("POST /*/containers/*/start", pre=(B,)))
        self.assertEqual(match(cfg, "POST", "/v1.41/containers/abc/start").pre, (B,))


class NoMatchTests(MatchTestCase):
    def test_no_rule_matches(self) -> None:
        cfg = config(rule("POST /*/containers/create", pre=(A,)))
        self.assertNoMatch(cfg, "GET", "/v1.41/images/json")
        self.assertEqual(NO_ROUTE, Route())
        self.assertEqual((NO_ROUTE.patterns, NO_ROUTE.pre, NO_ROUTE.post), ((), (), ()))

    def test_passthrough_config(self) -> None:
        self.assertNoMatch(Config.passthrough(), "POST", "/v1.41/containers/create")

    def test_post_only_route_is_hooked(self) -> None:
        cfg = config(rule("POST /*/containers/*/start", post=(B,)))
        route = match(cfg, "POST", "/v1.41/containers/abc/start")
        self.assertTrue(route.hooked)
        self.assertEqual((route.pre, route.post), ((), (B,)))


class FromYamlTests(MatchTestCase):
    def test_parsed_file(self) -> None:
        cfg = parse_config(
            "endpoints:\n"
            '  "post /*/containers/create": {pre: [a, b]}\n'
            '  "* /*/containers/*": {pre: [b], post: [a]}\n'
            'adapters: {a: "http://a/", b: "http://b/"}\n'
        )
        route = self.assertMatches(
            cfg, "POST", "/containers/create?name=x", "post /*/containers/create", "* /*/containers/*"
        )
        self.assertEqual([a.name for a in route.pre], ["a", "b"])
        self.assertEqual([a.name for a in route.post], ["a"])
        self.assertNoMatch(cfg, "GET", "/v1.41/images/json")


class DecodedPathTests(TestCase):
    def test_percent_encoded_path_still_matches(self) -> None:
        """dockerd decodes %XX before routing: an encoded create must not slip past the rule."""
        cfg = parse_config(
            'version: 1\nendpoints:\n  "POST /*/containers/create": {pre: [a]}\nadapters:\n  a: http://a/\n'
        )
        for path in ("/v1.41/containers/%63reate", "/containers/%63reate", "/v1.41/%63ontainers/create?name=x"):
            self.assertTrue(match(cfg, "POST", path).hooked, path)


class PathIdentityTests(MatchTestCase):
    """The version prefix is never part of a path (issue 13, item 1)."""

    SPELLINGS = (
        "POST /containers/create",
        "POST /*/containers/create",
        "POST /v1.41/containers/create",
        "POST /v1.*/containers/create",
        "POST /v*/containers/create",
        "POST /v1.4[01]/containers/create",
    )
    REQUESTS = (
        "/containers/create",
        "/v1.41/containers/create",
        "/v1.24/containers/create",
        "/v1.56/containers/create?name=x",
        "/v1/containers/create",
        "/%76%31.41/containers/create",
    )

    def test_every_spelling_matches_every_version(self) -> None:
        for spelling in self.SPELLINGS:
            cfg = config(rule(spelling, pre=(A,)))
            for path in self.REQUESTS:
                self.assertMatches(cfg, "POST", path, spelling)
            self.assertNoMatch(cfg, "POST", "/v1.41/containers/abc/start")
            if "/*/" not in spelling:  # whose * matches across /, as always: an over-match is harmless
                self.assertNoMatch(cfg, "POST", "/v1.41/v1.41/containers/create")  # dockerd: 404

    def test_start_at_any_version(self) -> None:
        cfg = config(rule("POST /v1.41/containers/*/start", pre=(A,)))
        for path in ("/v1.40/containers/c/start", "/containers/c/start", "/v1.41/containers/c/start"):
            self.assertMatches(cfg, "POST", path, "POST /v1.41/containers/*/start")

    def test_star_first_segment_keeps_its_old_meaning(self) -> None:
        """``/*/start`` matched any path ending in /start: it still does, versioned or not."""
        cfg = config(rule("POST /*/start", pre=(A,)))
        for path in ("/v1.41/containers/c/start", "/containers/c/start", "/exec/e/start"):
            self.assertMatches(cfg, "POST", path, "POST /*/start")

    def test_path_globs(self) -> None:
        self.assertEqual(path_globs("/v1.41/info"), ("/info",))
        self.assertEqual(path_globs("/v1.*/containers/*"), ("/containers/*",))
        self.assertEqual(path_globs("/*/info"), ("/info", "/*/info"))
        self.assertEqual(path_globs("/version"), ("/version",))
        self.assertEqual(path_globs("/volumes/*"), ("/volumes/*",))
        self.assertEqual(path_globs("*"), ("*",))
        self.assertEqual(
            (key_version("/v1.41/info"), key_version("/*/info"), key_version("/volumes")), ("v1.41", None, None)
        )

    def test_versions_field(self) -> None:
        cfg = config(rule("POST /containers/create", pre=(A,), versions=">=1.44"))
        self.assertMatches(cfg, "POST", "/v1.44/containers/create", "POST /containers/create")
        self.assertMatches(cfg, "POST", "/v1.50/containers/create", "POST /containers/create")
        self.assertNoMatch(cfg, "POST", "/v1.41/containers/create")
        self.assertNoMatch(cfg, "POST", "/v1.5/containers/create")  # 1.5 < 1.44, as dockerd orders them
        # Unversioned: dockerd's own current version, unknown here: the hook runs.
        self.assertMatches(cfg, "POST", "/containers/create", "POST /containers/create")

    def test_versions_range(self) -> None:
        cfg = config(rule("POST /containers/create", pre=(A,), versions=">1.40, <=1.43"))
        for v, hit in (("1.40", False), ("1.41", True), ("1.43", True), ("1.43.0", True), ("1.44", False)):
            self.assertEqual(match(cfg, "POST", f"/v{v}/containers/create").hooked, hit, v)

    def test_versions_from_yaml(self) -> None:
        cfg = parse_config(
            'endpoints:\n  "POST /containers/create": {pre: [a], versions: "==1.41"}\nadapters: {a: "http://a/"}\n'
        )
        self.assertTrue(match(cfg, "POST", "/v1.41/containers/create").hooked)
        self.assertFalse(match(cfg, "POST", "/v1.42/containers/create").hooked)
