#!/usr/bin/env python3
"""Generate ``powerstrip/wire/engine_api.json`` from the Engine API's published swagger.

Usage::

    python3 tools/gen_engine_api.py [SWAGGER_DIR] [--output FILE] [--check]

``SWAGGER_DIR`` holds ``v1.41.yaml``, ``v1.50.yaml`` and ``v1.56.yaml`` (default:
``../shared/engine-api`` relative to the repository).  The output is committed data:

``versions``
    the API versions the data was generated from.
``routes``
    every ``[METHOD, path template]`` of any of those versions, sorted.
``types``
    request-schema type trees by swagger definition name (see *Nodes* below).
``bodies``
    ``"METHOD /path/template"`` → the node of the route's JSON request body, for every
    route whose ``in: body`` parameter is JSON (an object or an array, not a byte stream).
``list_params``
    ``"METHOD /path/template"`` → the query parameters dockerd reads *every* value of
    (``r.Form[name]``, not ``r.FormValue``): those any version documents as ``type: array``,
    and those :data:`LIST_PARAMS_FROM_SOURCE` names, which the swagger documents as strings.
    Every other parameter is read once, the first value.

*Nodes* describe what Go's ``encoding/json`` decodes a JSON value into, as far as the
swagger says; a node is an object with any of:

``type``
    the swagger type (``object``, ``array``, ``string``, ``boolean``, ``integer``,
    ``number``) when every version agrees on it;
``keys``
    an object's fields: canonical spelling → node (a Go struct: keys match case-folded);
``values``
    the node of a map's values (``additionalProperties``: keys are data, matched exactly);
``items``
    the node of an array's items;
``refs``
    names in ``types`` whose ``keys``/``values``/``items`` this node has too (``$ref`` and
    ``allOf`` are kept by name so the big shared types such as ``HostConfig`` appear once).

The data is the union over the versions: a key any version documents is canonical.
``--check`` exits 1 when FILE differs from what would be generated.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

VERSIONS = ("1.41", "1.50", "1.56")
METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
REPO = Path(__file__).resolve().parent.parent
DEFAULT_SWAGGER = REPO.parent / "shared" / "engine-api"
DEFAULT_OUTPUT = REPO / "powerstrip" / "wire" / "engine_api.json"

Node = dict[str, Any]

#: Query parameters dockerd reads as lists (``r.Form[name]``) though the swagger documents
#: them as plain strings (or not at all): from the daemon's handlers, and seen on the wire
#: (``docker build -t a -t b --add-host ... --security-opt ...`` sends each repeated).
LIST_PARAMS_FROM_SOURCE = {
    # api/server/router/build/build_routes.go, newImageBuildOptions
    "POST /build": ("t", "extrahosts", "securityopt"),
    # api/server/router/image/image_routes.go (postCommit; postImagesCreate reads it as the swagger says)
    "POST /commit": ("changes",),
}


def _fold(key: str) -> str:
    """A key's case-folded form, for the generator's own collision check (keys are ASCII)."""
    return key.casefold()


def _node(schema: dict[str, Any]) -> Node:
    """The node for one swagger schema (refs kept by name, never expanded)."""
    node: Node = {}
    if "$ref" in schema:
        node["refs"] = [schema["$ref"].rsplit("/", 1)[1]]
        return node
    for part in schema.get("allOf", ()):
        _merge(node, _node(part))
    if "type" in schema:
        node["type"] = schema["type"]
    props = schema.get("properties")
    if props:
        keys = node.setdefault("keys", {})
        for key, sub in props.items():
            child = _node(sub or {})
            if key in keys:
                _merge(keys[key], child)
            else:
                keys[key] = child
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        _merge(node.setdefault("values", {}), _node(extra))
    elif extra is True:
        node.setdefault("values", {})
    if "items" in schema:
        _merge(node.setdefault("items", {}), _node(schema["items"] or {}))
    if node.get("type") is None and ("keys" in node or "values" in node):
        node["type"] = "object"
    return node


def _merge(into: Node, other: Node) -> None:
    """Merge ``other`` into ``into``: the union of keys, refs, values and items."""
    for name in other.get("refs", ()):
        refs = into.setdefault("refs", [])
        if name not in refs:
            refs.append(name)
    if "type" in other:
        if "type" not in into:
            into["type"] = other["type"]
        elif into["type"] != other["type"]:
            into["type"] = None  # the versions disagree: leave it unknown
    for key, child in other.get("keys", {}).items():
        keys = into.setdefault("keys", {})
        if key in keys:
            _merge(keys[key], child)
        else:
            keys[key] = json.loads(json.dumps(child))
    for part in ("values", "items"):
        if part in other:
            _merge(into.setdefault(part, {}), other[part])


def _tidy(node: Node) -> Node:
    """Drop unknown types, sort keys and refs, so the output is stable."""
    out: Node = {}
    if node.get("type"):
        out["type"] = node["type"]
    if node.get("refs"):
        out["refs"] = sorted(node["refs"])
    if "keys" in node:
        out["keys"] = {k: _tidy(v) for k, v in sorted(node["keys"].items())}
    for part in ("values", "items"):
        if part in node:
            out[part] = _tidy(node[part])
    return out


def _is_json_body(schema: dict[str, Any]) -> bool:
    """Whether a body parameter's schema is a JSON document (not a byte stream)."""
    return schema.get("type") not in ("string", "file")


def generate(swagger_dir: Path) -> dict[str, Any]:
    """The engine_api.json document for the swagger files in ``swagger_dir``."""
    routes: set[tuple[str, str]] = set()
    types: dict[str, Node] = {}
    bodies: dict[str, Node] = {}
    lists: dict[str, set[str]] = {route: set(names) for route, names in LIST_PARAMS_FROM_SOURCE.items()}
    for version in VERSIONS:
        doc = yaml.safe_load((swagger_dir / f"v{version}.yaml").read_text(encoding="utf-8"))
        for name, schema in doc.get("definitions", {}).items():
            _merge(types.setdefault(name, {}), _node(schema))
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                if method not in METHODS:
                    continue
                routes.add((method.upper(), path))
                for param in op.get("parameters", ()):
                    if param.get("in") == "body" and _is_json_body(param.get("schema", {})):
                        _merge(bodies.setdefault(f"{method.upper()} {path}", {}), _node(param["schema"]))
                    elif param.get("in") == "query" and param.get("type") == "array":
                        lists.setdefault(f"{method.upper()} {path}", set()).add(param["name"])
    result = {
        "versions": list(VERSIONS),
        "routes": [list(r) for r in sorted(routes)],
        "types": {name: _tidy(node) for name, node in sorted(types.items())},
        "bodies": {route: _tidy(node) for route, node in sorted(bodies.items())},
        "list_params": {route: sorted(names) for route, names in sorted(lists.items())},
    }
    _check_collisions(result)
    return result


def _check_collisions(doc: dict[str, Any]) -> None:
    """Fail when one object documents two keys equal under case folding: no canonical spelling."""

    def walk(where: str, node: Node) -> None:
        seen: dict[str, str] = {}
        for key, child in node.get("keys", {}).items():
            if _fold(key) in seen:
                raise SystemExit(f"{where}: keys {seen[_fold(key)]!r} and {key!r} fold equal")
            seen[_fold(key)] = key
            walk(f"{where}.{key}", child)
        for part in ("values", "items"):
            if part in node:
                walk(f"{where}[{part}]", node[part])

    for name, node in doc["types"].items():
        walk(name, node)
    for route, node in doc["bodies"].items():
        walk(route, node)


def render(doc: dict[str, Any]) -> str:
    """The file text for ``doc``: one stable, diff-friendly rendering."""
    return json.dumps(doc, indent=1, sort_keys=False, ensure_ascii=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("swagger_dir", nargs="?", type=Path, default=DEFAULT_SWAGGER)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--check", action="store_true", help="only compare with the output file")
    args = parser.parse_args(argv)
    text = render(generate(args.swagger_dir))
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is not what {Path(__file__).name} generates", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
