"""The Docker Engine API's routes and request-body schemas, as shipped data.

``powerstrip/wire/engine_api.json`` is generated from the Engine API's published swagger by
``tools/gen_engine_api.py`` (which documents its format); this module loads it once and
answers questions about it: which routes exist (:func:`routes`, :func:`route_for`) and
what a route's JSON request body decodes into (:func:`body_schema`), with each object's
keys in their canonical spelling, and which query parameters it reads as lists
(:func:`list_params`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from powerstrip.wire.gotext import fold_key

DATA_FILE = "engine_api.json"


@lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    """The shipped JSON document, read once."""
    text = resources.files("powerstrip.wire").joinpath(DATA_FILE).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def versions() -> tuple[str, ...]:
    """The API versions the data was generated from, e.g. ``("1.41", "1.50", "1.56")``."""
    return tuple(_data()["versions"])


def routes() -> tuple[tuple[str, str], ...]:
    """Every ``(METHOD, path template)`` of those versions, sorted; templates as ``/containers/{id}/start``."""
    return tuple((method, path) for method, path in _data()["routes"])


@lru_cache(maxsize=1)
def _route_patterns() -> tuple[tuple[str, str, re.Pattern[str], re.Pattern[str]], ...]:
    """Per route: its method, template, and a one-segment and an any-segments regex."""
    out = []
    for method, template in routes():
        parts = re.split(r"(\{[^}]+\})", template)
        one = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
        many = "".join(".+" if p.startswith("{") else re.escape(p) for p in parts)
        out.append((method, template, re.compile(one), re.compile(many)))
    # Most literal text first, so /images/{name}/json wins over /images/{name} for its paths.
    out.sort(key=lambda r: -len(re.sub(r"\{[^}]+\}", "", r[1])))
    return tuple(out)


@lru_cache(maxsize=1024)
def route_for(method: str, path: str) -> str | None:
    """The Engine API template a concrete, version-less path is an instance of, or None.

    A ``{name}`` matches one path segment, or failing that several: image and plugin
    names hold slashes (``/images/library/busybox/push``), as dockerd's router allows.
    """
    for pattern in (2, 3):
        for m, template, *regexes in _route_patterns():
            if m == method and regexes[pattern - 2].fullmatch(path):
                return template
    return None


@dataclass(eq=False)
class Node:
    """What the Engine API says one JSON value decodes into.

    ``keys`` are a Go struct's fields (canonical spelling → node; JSON keys match them
    case-folded), ``values`` is a map's value node (map keys are data: exact), ``items``
    an array's item node, ``type`` the swagger type when known.
    """

    type: str | None = None
    keys: dict[str, Node] = field(default_factory=dict)
    values: Node | None = None
    items: Node | None = None
    _folded: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def is_struct(self) -> bool:
        """Whether the value is a Go struct (has documented fields)."""
        return bool(self.keys)

    @property
    def is_map(self) -> bool:
        """Whether the value is a Go map (``additionalProperties``) and not a struct."""
        return self.values is not None and not self.keys

    def canonical(self, key: str) -> str | None:
        """The documented field a JSON key selects under Go's matching, or None.

        Go's ``encoding/json`` prefers an exact match, else the first field equal to the
        key under ``strings.EqualFold``; documented fields never fold-collide (the
        generator checks), so this is the one field.
        """
        if key in self.keys:
            return key
        return self._folded.get(fold_key(key))

    def field(self, name: str) -> Node | None:
        """The node of a documented field, by canonical name."""
        return self.keys.get(name)


@lru_cache(maxsize=1)
def _types() -> dict[str, Node]:
    """Every schema type by name, refs resolved (types may refer to each other cyclically)."""
    raw = _data()["types"]
    nodes: dict[str, Node] = {name: Node() for name in raw}
    for name, spec in raw.items():
        _fill(nodes[name], spec, nodes)
    return nodes


def _fill(node: Node, spec: dict[str, Any], types: dict[str, Node]) -> None:
    """Fill ``node`` from its JSON spec, merging referenced types in."""
    if spec.get("type") and node.type is None:
        node.type = spec["type"]
    for ref in spec.get("refs", ()):
        _fill(node, _raw_type(ref), types)
    for key, sub in spec.get("keys", {}).items():
        if key not in node.keys:
            node.keys[key] = _build(sub, types)
            node._folded[fold_key(key)] = key
    if "values" in spec and node.values is None:
        node.values = _build(spec["values"], types)
    if "items" in spec and node.items is None:
        node.items = _build(spec["items"], types)


def _raw_type(name: str) -> dict[str, Any]:
    """The JSON spec of a named type."""
    spec: dict[str, Any] = _data()["types"][name]
    return spec


def _build(spec: dict[str, Any], types: dict[str, Node]) -> Node:
    """A node for a spec; a bare reference to one type is that type's shared node."""
    refs = spec.get("refs", ())
    if len(refs) == 1 and set(spec) <= {"refs", "type"}:
        return types[refs[0]]  # shared: lets recursive types (e.g. a schema of schemas) terminate
    node = Node()
    _fill(node, spec, types)
    return node


def type_schema(name: str) -> Node:
    """The node of a named swagger definition, e.g. ``type_schema("HostConfig")``."""
    return _types()[name]


@lru_cache(maxsize=64)
def body_schema(method: str, template: str) -> Node | None:
    """The node of a route's JSON request body (template spelling), or None if it has none."""
    spec = _data()["bodies"].get(f"{method} {template}")
    if spec is None:
        return None
    return _build(spec, _types())


@lru_cache(maxsize=256)
def list_params(method: str, template: str) -> frozenset[str]:
    """The query parameters of a route (template spelling) that dockerd reads every value
    of; it reads the first value of any other."""
    return frozenset(_data()["list_params"].get(f"{method} {template}", ()))


def json_body_routes() -> tuple[tuple[str, str], ...]:
    """The ``(METHOD, template)`` of every route whose request body is JSON."""
    return tuple(tuple(k.split(" ", 1)) for k in _data()["bodies"])
