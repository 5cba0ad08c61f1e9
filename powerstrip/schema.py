"""JSON Schemas of the adapter protocol, and a small validator for them.

The schemas live in ``powerstrip/schemas/v<N>/`` (package data) and are named
by that path without ``.json``: ``v1/pre-hook``, ``v1/pre-hook-reply``,
``v1/post-hook``, ``v1/post-hook-reply``. :func:`validate` checks a decoded
JSON value against one and returns readable errors, each led by the JSON path
of the culprit::

    >>> validate({"PowerstripProtocolVersion": 1, "ModifiedServerResponse": {"Code": 700}},
    ...          "v1/post-hook-reply")
    ['ModifiedServerResponse.Code: 700 is greater than the maximum 599']

The validator knows only the draft 2020-12 keywords these schemas use (listed
in :data:`KEYWORDS`); a schema with any other keyword is refused when loaded,
so a keyword can never be silently ignored. Not the ``jsonschema`` package:
it pulls in the Rust-built ``rpds-py`` and ``referencing`` for four small files.
Two deliberate differences from JSON Schema: ``integer`` excludes ``201.0``
(Powerstrip does too), and patterns are Python regular expressions whose
final ``$`` means the very end of the string, as it does in ECMA-262.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

#: The keywords the validator checks.
KEYWORDS = frozenset({
    "type", "const", "enum", "properties", "required", "additionalProperties",
    "minimum", "maximum", "minLength", "pattern", "items", "$ref",
})
#: Keywords that only annotate, or hold sub-schemas reached by ``$ref``.
ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "$comment", "title", "description", "examples", "default"})

_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}

_SCALARS = (int, float, str, type(None))

_cache: dict[str, dict] = {}
_patterns: dict[str, re.Pattern] = {}


class SchemaError(ValueError):
    """No such schema, or a schema this validator cannot check faithfully."""


def names() -> list[str]:
    """Every schema shipped, e.g. ``['v1/post-hook', 'v1/post-hook-reply', ...]``."""
    root = resources.files("powerstrip").joinpath("schemas")
    return sorted(
        f"{d.name}/{f.name[:-5]}" for d in root.iterdir() if d.is_dir() and d.name.startswith("v")
        for f in d.iterdir() if f.name.endswith(".json") and f.name != "samples.json"
    )


def protocols() -> tuple[int, ...]:
    """The protocol versions that have schemas, e.g. ``(1,)``."""
    return tuple(sorted({int(name.split("/")[0][1:]) for name in names()}))


def load(schema_name: str) -> dict:
    """The schema ``schema_name`` (``"v1/pre-hook"``), read and vetted once, then cached.
    The dict is shared: do not modify it.

    :raises SchemaError: there is no such schema, or it uses an unknown keyword.
    """
    schema = _cache.get(schema_name)
    if schema is None:
        name = schema_name.removesuffix(".json")
        if name in _cache:
            return _cache[name]
        if not re.fullmatch(r"v[0-9]+/[a-z-]+", name) or name.endswith("/samples"):
            raise SchemaError(f"no schema named {schema_name!r} (known: {', '.join(names())})")
        try:
            text = resources.files("powerstrip").joinpath(f"schemas/{name}.json").read_text("utf-8")
        except FileNotFoundError:
            raise SchemaError(f"no schema named {schema_name!r} (known: {', '.join(names())})") from None
        schema = json.loads(text)
        _vet(schema, name)
        _cache[schema_name] = _cache[name] = schema
    return schema


def validate(instance: Any, schema_name: str) -> list[str]:
    """What is wrong with ``instance`` (decoded JSON) against ``schema_name``; empty when valid."""
    schema = load(schema_name)
    errors: list[str] = []
    _check(instance, schema, schema, (), errors)
    return errors


def check(instance: Any, schema: dict) -> list[str]:
    """:func:`validate` against a schema given as a dict (vetted on every call, so not for hot paths).

    :raises SchemaError: ``schema`` uses a keyword this validator does not know.
    """
    _vet(schema, "(schema)")
    errors: list[str] = []
    _check(instance, schema, schema, (), errors)
    return errors


def _vet(schema: dict, name: str) -> None:
    """Refuse a schema with a keyword (or type, or $ref) the validator would not honour."""
    for where, sub in _subschemas(schema, name):
        unknown = set(sub) - KEYWORDS - ANNOTATIONS
        if unknown:
            raise SchemaError(f"{where}: keyword(s) {', '.join(sorted(unknown))} not supported by this validator")
        types = sub.get("type", [])
        if not set([types] if isinstance(types, str) else types) <= _TYPES.keys():
            raise SchemaError(f"{where}: unknown type {types!r}")
        if "pattern" in sub:
            try:
                _pattern(sub["pattern"])
            except re.error as e:
                raise SchemaError(f"{where}: bad pattern {sub['pattern']!r}: {e}") from None
        if "$ref" in sub:
            _resolve(schema, sub["$ref"])
        extra = sub.get("additionalProperties", True)
        if not isinstance(sub.get("items", {}), dict) or not isinstance(extra, bool | dict):
            raise SchemaError(f"{where}: 'items' must be a schema, 'additionalProperties' a schema or a boolean")


def _subschemas(schema: dict, where: str) -> Iterator[tuple[str, dict]]:
    """Every schema object in ``schema``, with where it is (for load-time errors)."""
    yield where, schema
    for key in ("properties", "$defs"):
        for name, sub in schema.get(key, {}).items():
            yield from _subschemas(sub, f"{where}/{key}/{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from _subschemas(schema[key], f"{where}/{key}")


def _resolve(root: dict, ref: str) -> dict:
    """A local ``$ref`` (``#/$defs/Name``): the only kind these schemas use."""
    if not ref.startswith("#/"):
        raise SchemaError(f"$ref {ref!r}: only references within the same schema (#/...) are supported")
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise SchemaError(f"$ref {ref!r} points at nothing")
        node = node[part]
    return node


def _pattern(text: str) -> re.Pattern:
    compiled = _patterns.get(text)
    if compiled is None:
        # Python's "$" also matches before a final newline; ECMA-262's does not.
        source = text[:-1] + r"\Z" if text.endswith("$") and not text.endswith("\\$") else text
        compiled = _patterns[text] = re.compile(source)
    return compiled


def _path(path: tuple) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or "(root)"


def _show(value: Any) -> str:
    """``value`` as JSON, cut short: errors quote what they got."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1``, ``1.0`` is ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) in _SCALARS and type(b) in _SCALARS and a == b


def _check(value: Any, schema: dict, root: dict, path: tuple, errors: list[str]) -> None:
    if "$ref" in schema:
        _check(value, _resolve(root, schema["$ref"]), root, path, errors)
    types = schema.get("type")
    if types is not None:
        allowed = [types] if isinstance(types, str) else types
        if not any(_TYPES[t](value) for t in allowed):
            kinds = " or ".join(repr(t) for t in allowed)
            errors.append(f"{_path(path)}: {_show(value)} is not of type {kinds}")
            return  # the other keywords would only repeat the point
    if "const" in schema and not _same(value, schema["const"]):
        errors.append(f"{_path(path)}: expected {_show(schema['const'])}, got {_show(value)}")
    if "enum" in schema and not any(_same(value, v) for v in schema["enum"]):
        errors.append(f"{_path(path)}: {_show(value)} is not one of {_show(schema['enum'])}")
    if isinstance(value, dict):
        _check_object(value, schema, root, path, errors)
    elif isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{_path(path)}: {_show(value)} is shorter than {schema['minLength']} character(s)")
        if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
            pattern = schema["pattern"]
            what = f"is not {schema['title']} (pattern {pattern!r})" if "title" in schema else "does not match"
            errors.append(f"{_path(path)}: {_show(value)} {what}" + ("" if "title" in schema else f" {pattern!r}"))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{_path(path)}: {_show(value)} is less than the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{_path(path)}: {_show(value)} is greater than the maximum {schema['maximum']}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _check(item, schema["items"], root, (*path, i), errors)


def _check_object(value: dict, schema: dict, root: dict, path: tuple, errors: list[str]) -> None:
    for name in schema.get("required", ()):
        if name not in value:
            errors.append(f"{_path(path)}: {name!r} is required")
    properties = schema.get("properties", {})
    for name, sub in properties.items():
        if name in value:
            _check(value[name], sub, root, (*path, name), errors)
    extra = schema.get("additionalProperties", True)
    if extra is True:
        return
    for name in value:
        if name not in properties:
            if extra is False:
                errors.append(f"{_path(path)}: unexpected key {name!r} (no other keys are allowed here)")
            else:
                _check(value[name], extra, root, (*path, name), errors)
