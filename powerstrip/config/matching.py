"""Matching a request line against the endpoint rules of a :class:`Config`.

How one rule meets a request line (path identity: the API version prefix is
never part of a path) is :mod:`powerstrip.wire.rules`; this module merges the
hooks of every rule that matches (see :func:`match`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

from powerstrip.config.spec import AdapterSpec, Config
from powerstrip.wire.apipath import versions_match
from powerstrip.wire.rules import path_matches, request_path

#: Docker calls whose responses are streams or long polls. Post-hooks would
#: have to hold them until they end: ``docker run`` sends ``start`` only after
#: the ``wait`` response head arrived, so holding ``wait`` deadlocks it, and
#: ``events``/``logs -f`` never end. They stream through unhooked.
_STREAMING = re.compile(
    r"^(/v[0-9.]+)?/(events|build|session|grpc|images/create|images/load|images/.+/push"
    r"|containers/[^/]+/(wait|attach|logs|stats)|exec/[^/]+/start)$"
)


@dataclass(frozen=True)
class Route:
    """The hooks that apply to one request: what matched and what runs, in order."""

    patterns: tuple[str, ...] = ()
    pre: tuple[AdapterSpec, ...] = ()
    post: tuple[AdapterSpec, ...] = ()

    @property
    def hooked(self) -> bool:
        """Whether any hook at all applies (a pure pass-through otherwise)."""
        return bool(self.pre or self.post)


NO_ROUTE = Route()


def match(config: Config, method: str, path: str) -> Route:
    """Which rules of ``config`` match ``method path``, and the hooks they add.

    Matching rules contribute their hooks in the order the rules appear in the
    file, each rule's list in its own order. An adapter named by several
    matching rules runs once per phase, at its first position.
    """
    method = method.upper()
    version, path = request_path(path)
    patterns: list[str] = []
    pre: dict[str, AdapterSpec] = {}
    post: dict[str, AdapterSpec] = {}
    for ep in config.endpoints:
        if not (
            fnmatchcase(method, ep.method) and path_matches(ep.path, path) and versions_match(ep.versions, version)
        ):
            continue
        patterns.append(ep.pattern)
        for a in ep.pre:
            pre.setdefault(a.name, a)
        for a in ep.post:
            post.setdefault(a.name, a)
    if not patterns:
        return NO_ROUTE
    return Route(tuple(patterns), tuple(pre.values()), tuple(post.values()))


def streams_unhooked(path: str) -> bool:
    """Whether ``path`` is one of Docker's streaming calls, whose responses post-hooks never see."""
    return _STREAMING.match(path) is not None
