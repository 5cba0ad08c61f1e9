"""Matching a request line against the endpoint rules of a :class:`Config`.

Rules are ``METHOD PATH`` shell globs (:func:`fnmatch.fnmatchcase`), tried
against the request path with its query string stripped. A request may match
several rules; their hooks are merged in file order (see :func:`match`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import unquote

from powerstrip.config import Adapter, Config

_VERSIONED = re.compile(r"^/v[0-9]+(\.[0-9]+)?/")


@dataclass(frozen=True)
class Route:
    """The hooks that apply to one request: what matched and what runs, in order."""

    patterns: tuple[str, ...] = ()
    pre: tuple[Adapter, ...] = ()
    post: tuple[Adapter, ...] = ()

    @property
    def hooked(self) -> bool:
        """Whether any hook at all applies (a pure pass-through otherwise)."""
        return bool(self.pre or self.post)


NO_ROUTE = Route()


def candidate_paths(path: str) -> tuple[str, ...]:
    """The names a rule's path glob is tried against.

    Clients that send unversioned paths (``/containers/create``) must still hit
    ``/*/containers/create`` rules, so an unversioned path is also tried with a
    stand-in version segment (``/v/containers/create``).
    """
    # dockerd routes on the decoded path: /containers/%63reate is a create.
    path = unquote(path.split("?", 1)[0])
    if _VERSIONED.match(path):
        return (path,)
    return (path, "/v" + path)


def rule_matches(method_glob: str, path_glob: str, method: str, path: str) -> bool:
    """Whether a rule's globs match ``method path`` (query string ignored)."""
    return fnmatchcase(method.upper(), method_glob) and any(
        fnmatchcase(p, path_glob) for p in candidate_paths(path))


def match(config: Config, method: str, path: str) -> Route:
    """Which rules of ``config`` match ``method path``, and the hooks they add.

    Matching rules contribute their hooks in the order the rules appear in the
    file, each rule's list in its own order. An adapter named by several
    matching rules runs once per phase, at its first position.
    """
    method = method.upper()
    paths = candidate_paths(path)
    patterns: list[str] = []
    pre: dict[str, Adapter] = {}
    post: dict[str, Adapter] = {}
    for ep in config.endpoints:
        if not fnmatchcase(method, ep.method) or not any(fnmatchcase(p, ep.path) for p in paths):
            continue
        patterns.append(ep.pattern)
        for a in ep.pre:
            pre.setdefault(a.name, a)
        for a in ep.post:
            post.setdefault(a.name, a)
    if not patterns:
        return NO_ROUTE
    return Route(tuple(patterns), tuple(pre.values()), tuple(post.values()))
