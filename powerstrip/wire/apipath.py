"""The API version prefix of a Docker Engine API path.

dockerd registers every route twice (``api/server/server.go``): once under
``/v{version:[0-9.]+}`` and once bare. Which version a request asked for is
therefore not part of *what* it asks for: ``/v1.41/containers/create``,
``/v1.24/containers/create`` and ``/containers/create`` are one endpoint.
"""

from __future__ import annotations

import re

# Same character class as dockerd's router; exactly one prefix is stripped
# (``/v1.41/v1.40/x`` routes, if at all, as ``/v1.40/x`` at version 1.41).
_PREFIX = re.compile(r"/v([0-9.]+)(/.*)", re.DOTALL)


def split_version(path: str) -> tuple[str | None, str]:
    """Split a %-decoded request path (no query string) into version and route path.

    >>> split_version("/v1.41/containers/create")
    ('1.41', '/containers/create')
    >>> split_version("/containers/create")
    (None, '/containers/create')
    """
    m = _PREFIX.fullmatch(path)
    if m is None:
        return None, path
    return m.group(1), m.group(2)


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as API version ``a`` is lower than, equal to or higher than ``b``.

    dockerd's own ordering (``api/types/versions.compare``): dot-separated parts
    compared as integers, a missing or non-numeric part counting as 0, so
    ``1.5 < 1.41`` and ``1.41 == 1.41.0``.
    """
    pa, pb = a.split("."), b.split(".")
    for i in range(max(len(pa), len(pb))):
        x, y = (_part(p[i]) if i < len(p) else 0 for p in (pa, pb))
        if x != y:
            return 1 if x > y else -1
    return 0


def _part(text: str) -> int:
    # Go's strconv.Atoi: an error gives 0, an out-of-range number the clamped maximum.
    return min(int(text), 2**63 - 1) if text.isdigit() and text.isascii() else 0


_OPS = {">=": (0, 1), "<=": (-1, 0), ">": (1,), "<": (-1,), "==": (0,)}
_CONSTRAINT = re.compile(r"\s*(>=|<=|==|>|<)\s*([0-9]+(?:\.[0-9]+)*)\s*")

#: A parsed ``versions:`` field: every ``(operator, version)`` must hold.
Versions = tuple[tuple[str, str], ...]


def parse_versions(spec: str) -> Versions:
    """Parse a ``versions:`` field such as ``">=1.44"`` or ``">=1.40, <1.44"`` (an AND).

    :raises ValueError: ``spec`` is not a comma-separated list of ``OP VERSION``,
        OP one of ``>=``, ``<=``, ``>``, ``<``, ``==``.
    """
    out = []
    for item in spec.split(",") if isinstance(spec, str) else [None]:
        m = _CONSTRAINT.fullmatch(item) if item is not None else None
        if m is None:
            raise ValueError(
                f"{spec!r} is not a comma-separated list of comparisons like '>=1.44' (operators >=, <=, >, <, ==)"
            )
        out.append((m.group(1), m.group(2)))
    return tuple(out)


def versions_match(versions: Versions, version: str | None) -> bool:
    """Whether a request at API ``version`` is within ``versions``.

    An unversioned request (``version`` None) is within every range: dockerd
    serves it at its own current version, which a policy gate cannot know, so
    the rule's hooks must see it.
    """
    return version is None or all(compare_versions(version, v) in _OPS[op] for op, v in versions)
