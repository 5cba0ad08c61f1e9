"""Tests for :mod:`powerstrip.wire.apipath`: the API version prefix, as dockerd's router reads it."""

from __future__ import annotations

import doctest

from twisted.trial.unittest import TestCase

from powerstrip.wire import apipath
from powerstrip.wire.apipath import compare_versions, parse_versions, split_version, versions_match


class SplitVersionTests(TestCase):
    def test_versioned_and_not(self) -> None:
        self.assertEqual(split_version("/v1.41/containers/create"), ("1.41", "/containers/create"))
        self.assertEqual(split_version("/containers/create"), (None, "/containers/create"))
        self.assertEqual(split_version("/v1/_ping"), ("1", "/_ping"))
        self.assertEqual(split_version("/v1.41/"), ("1.41", "/"))

    def test_only_dockers_version_characters(self) -> None:
        """``/v{version:[0-9.]+}``: digits and dots, at least one."""
        for path in ("/version", "/volumes/x", "/v/containers/json", "/v1.41", "/v1-41/info", "/vx/info", "v1.41/info"):
            self.assertEqual(split_version(path), (None, path))
        self.assertEqual(split_version("/v../info"), ("..", "/info"))  # routes; dockerd then refuses the version

    def test_one_prefix_only(self) -> None:
        self.assertEqual(split_version("/v1.41/v1.40/info"), ("1.41", "/v1.40/info"))

    def test_doctests(self) -> None:
        self.assertEqual(doctest.testmod(apipath).failed, 0)


class VersionTests(TestCase):
    def test_compare_as_dockerd(self) -> None:
        for a, b, result in (
            ("1.41", "1.41", 0),
            ("1.5", "1.41", -1),
            ("1.41", "1.41.0", 0),
            ("2", "1.99", 1),
            ("1..41", "1.0.41", 0),
            ("1.99999999999999999999", "1.9223372036854775807", 0),
        ):
            self.assertEqual(compare_versions(a, b), result, (a, b))
            self.assertEqual(compare_versions(b, a), -result, (b, a))

    def test_parse(self) -> None:
        self.assertEqual(parse_versions(">=1.44"), ((">=", "1.44"),))
        self.assertEqual(parse_versions(" > 1.40 ,<=1.43,==1.42"), ((">", "1.40"), ("<=", "1.43"), ("==", "1.42")))
        for bad in ("1.44", "=>1.44", ">=", ">=1.x", "", ">=1.40,", "~1.4", None, 1.44):
            self.assertRaises(ValueError, parse_versions, bad)

    def test_match(self) -> None:
        spec = parse_versions(">=1.40, <1.44")
        self.assertEqual(
            [versions_match(spec, v) for v in ("1.39", "1.40", "1.43", "1.44")], [False, True, True, False]
        )
        self.assertTrue(versions_match(spec, None))  # unversioned: dockerd's current version, unknown
        self.assertTrue(versions_match((), "1.12"))
        for op, hits in (("<", "1.39"), ("<=", "1.39 1.40"), ("==", "1.40"), (">=", "1.40 1.41"), (">", "1.41")):
            self.assertEqual(
                [v for v in ("1.39", "1.40", "1.41") if versions_match(((op, "1.40"),), v)], hits.split(), op
            )
