"""JSON Schemas of the adapter protocol, and a small validator for them.

The schemas live in ``powerstrip/sdk/schemas/v<N>/`` (package data) and are named
by that path without ``.json``: ``v1/pre-hook``, ``v1/pre-hook-reply``,
``v1/post-hook``, ``v1/post-hook-reply``, and protocol 2's ``v2/...`` (the
same four, plus ``v2/unwind`` and ``v2/event``). :func:`validate` checks a decoded
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

Which instances are valid is standard; the error messages are this
validator's own. ``propertyNames`` errors are led by the path of the
offending key (``ModifiedClientRequest.Headers.Content-Length: ...``). A
failed ``oneOf`` reports the errors of the one alternative whose ``required``
keys are all present, else says which alternatives (by ``title``) it expected
or found together; a failed ``not`` says the value is the inner schema's
``title``.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any, cast

#: The keywords the validator checks.
KEYWORDS = frozenset(
    {
        "type",
        "const",
        "enum",
        "properties",
        "required",
        "additionalProperties",
        "minimum",
        "maximum",
        "minLength",
        "pattern",
        "items",
        "$ref",
        "propertyNames",
        "not",
        "oneOf",
    }
)
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

#: The Python classes of each type, for :func:`_compile` (bool is excluded from integer and number there).
_CLASSES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}

_SCALARS = (int, float, str, type(None))
_SHOW = json.JSONEncoder(ensure_ascii=False)

#: A JSON Schema, as json.loads gives it.
Schema = dict[str, Any]
#: Where a value is in the instance: object keys and array indexes, from the root.
_Where = tuple[str | int, ...]

_cache: dict[str, Schema] = {}
_patterns: dict[str, re.Pattern[str]] = {}
_validators: dict[int, tuple[Schema, Callable[[Any], bool]]] = {}  # id(schema) -> (schema, is-valid test)


class SchemaError(ValueError):
    """No such schema, or a schema this validator cannot check faithfully."""


def names() -> list[str]:
    """Every schema shipped, e.g. ``['v1/post-hook', 'v1/post-hook-reply', ...]``."""
    root = resources.files("powerstrip.sdk").joinpath("schemas")
    return sorted(
        f"{d.name}/{f.name[:-5]}"
        for d in root.iterdir()
        if d.is_dir() and d.name.startswith("v")
        for f in d.iterdir()
        if f.name.endswith(".json") and f.name != "samples.json"
    )


def protocols() -> tuple[int, ...]:
    """The protocol versions that have schemas, e.g. ``(1, 2)``."""
    return tuple(sorted({int(name.split("/")[0][1:]) for name in names()}))


def load(schema_name: str) -> Schema:
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
            text = resources.files("powerstrip.sdk").joinpath(f"schemas/{name}.json").read_text("utf-8")
        except FileNotFoundError:
            raise SchemaError(f"no schema named {schema_name!r} (known: {', '.join(names())})") from None
        schema = json.loads(text)
        _vet(schema, name)
        _cache[schema_name] = _cache[name] = schema
    return schema


def validate(instance: Any, schema_name: str) -> list[str]:
    """What is wrong with ``instance`` (decoded JSON) against ``schema_name``; empty when valid."""
    schema = load(schema_name)
    entry = _validators.get(id(schema))
    if entry is None or entry[0] is not schema:
        entry = _validators[id(schema)] = (schema, _compile(schema, schema, {}))
    # Most instances are valid, and a yes/no costs a fraction of the messages:
    # those are worked out only for an instance that fails.
    if entry[1](instance):
        return []
    errors: list[str] = []
    _check(instance, schema, schema, (), errors)
    return errors


def check(instance: Any, schema: Schema) -> list[str]:
    """:func:`validate` against a schema given as a dict (vetted on every call, so not for hot paths).

    :raises SchemaError: ``schema`` uses a keyword this validator does not know.
    """
    _vet(schema, "(schema)")
    errors: list[str] = []
    _check(instance, schema, schema, (), errors)
    return errors


def _vet(schema: Schema, name: str) -> None:
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
        if not all(isinstance(sub.get(key, {}), dict) for key in ("not", "propertyNames")):
            raise SchemaError(f"{where}: 'not' and 'propertyNames' must be schemas")
        branches = sub.get("oneOf", [{}])
        if not isinstance(branches, list) or not branches or not all(isinstance(b, dict) for b in branches):
            raise SchemaError(f"{where}: 'oneOf' must be a non-empty list of schemas")


def _subschemas(schema: Schema, where: str) -> Iterator[tuple[str, Schema]]:
    """Every schema object in ``schema``, with where it is (for load-time errors)."""
    yield where, schema
    for key in ("properties", "$defs"):
        for name, sub in schema.get(key, {}).items():
            yield from _subschemas(sub, f"{where}/{key}/{name}")
    for key in ("items", "additionalProperties", "not", "propertyNames"):
        if isinstance(schema.get(key), dict):
            yield from _subschemas(schema[key], f"{where}/{key}")
    if isinstance(schema.get("oneOf"), list):
        for i, sub in enumerate(schema["oneOf"]):
            if isinstance(sub, dict):
                yield from _subschemas(sub, f"{where}/oneOf/{i}")


def _resolve(root: Schema, ref: str) -> Schema:
    """A local ``$ref`` (``#/$defs/Name``): the only kind these schemas use."""
    if not ref.startswith("#/"):
        raise SchemaError(f"$ref {ref!r}: only references within the same schema (#/...) are supported")
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise SchemaError(f"$ref {ref!r} points at nothing")
        node = node[part]
    return cast(Schema, node)  # what a $ref names is a subschema: a JSON object


def _pattern(text: str) -> re.Pattern[str]:
    compiled = _patterns.get(text)
    if compiled is None:
        # Python's "$" also matches before a final newline; ECMA-262's does not.
        source = text[:-1] + r"\Z" if text.endswith("$") and not text.endswith("\\$") else text
        compiled = _patterns[text] = re.compile(source)
    return compiled


def _path(path: _Where) -> str:
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
    text = ""
    for chunk in _SHOW.iterencode(value):  # stops early: the value may be a whole reply
        text += chunk
        if len(text) > 60:
            return text[:57] + "..."
    return text


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1``, ``1.0`` is ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) in _SCALARS and type(b) in _SCALARS and a == b


def _compile(schema: Schema, root: Schema, done: dict[int, Callable[[Any], bool]]) -> Callable[[Any], bool]:
    """``schema`` as a function telling whether a value is valid: the same verdict as
    :func:`_check`, without building messages (``done`` holds the schemas compiled so far)."""
    key = id(schema)
    if key in done:
        return done[key]
    tests: list[Callable[[Any], bool]] = []

    def every(value: Any) -> bool:
        for test in tests:  # a loop, not all(): this is the hot path
            if not test(value):
                return False
        return True

    done[key] = every  # tests are filled in below; a $ref may come back here
    if "$ref" in schema:
        tests.append(_compile(_resolve(root, schema["$ref"]), root, done))
    strings = _string_test(schema)
    fused = schema.get("type") == "string"
    if fused:  # the common case, in one call
        tests.append(lambda v: isinstance(v, str) and strings(v))
    elif "type" in schema:
        types = [schema["type"]] if isinstance(schema["type"], str) else schema["type"]
        classes = tuple(c for t in types for c in _CLASSES[t])
        if "boolean" in types or not {"integer", "number"} & set(types):
            tests.append(lambda v: isinstance(v, classes))
        else:  # bool is an int to Python, never an integer or number to JSON
            tests.append(lambda v: isinstance(v, classes) and v.__class__ is not bool)
    if "const" in schema:
        const = schema["const"]
        tests.append(lambda v: _same(v, const))
    if "enum" in schema:
        choices = schema["enum"]
        tests.append(lambda v: any(_same(v, c) for c in choices))
    if "oneOf" in schema:
        branches = [_compile(b, root, done) for b in schema["oneOf"]]
        tests.append(lambda v: sum(1 for b in branches if b(v)) == 1)
    if "not" in schema:
        inner = _compile(schema["not"], root, done)
        tests.append(lambda v: not inner(v))
    tests.extend(_compile_object(schema, root, done))
    if not fused and ("minLength" in schema or "pattern" in schema):
        tests.append(lambda v: not isinstance(v, str) or strings(v))
    for word, compare in (("minimum", operator.ge), ("maximum", operator.le)):
        if word in schema:
            # A def, not a lambda: mypy cannot infer a lambda whose defaults bind the loop's values.
            def in_bound(v: Any, bound: Any = schema[word], compare: Callable[[Any, Any], bool] = compare) -> bool:
                return not isinstance(v, int | float) or isinstance(v, bool) or compare(v, bound)

            tests.append(in_bound)
    if isinstance(schema.get("items"), dict):
        item = _compile(schema["items"], root, done)

        def items_ok(v: Any) -> bool:
            if isinstance(v, list):
                for x in v:
                    if not item(x):
                        return False
            return True

        tests.append(items_ok)
    if len(tests) == 1:
        done[key] = tests[0]
    return done[key]


def _string_test(schema: Schema) -> Callable[[str], bool]:
    """``minLength`` and ``pattern`` as one test of a string."""
    least = schema.get("minLength", 0)
    if "pattern" not in schema:
        return lambda v: len(v) >= least
    search = _pattern(schema["pattern"]).search
    return lambda v: len(v) >= least and search(v) is not None


def _remembered(test: Callable[[Any], bool], size: int = 4096) -> Callable[[Any], bool]:
    """``test`` remembering its verdicts on property names: the same few header names come every time."""
    seen: dict[str, bool] = {}

    def remembered(name: str) -> bool:
        verdict = seen.get(name)
        if verdict is None:
            if len(seen) >= size:
                seen.clear()
            verdict = seen[name] = test(name)
        return verdict

    return remembered


def _compile_object(
    schema: Schema, root: Schema, done: dict[int, Callable[[Any], bool]]
) -> list[Callable[[Any], bool]]:
    required = schema.get("required", ())
    properties = {name: _compile(sub, root, done) for name, sub in schema.get("properties", {}).items()}
    extra = schema.get("additionalProperties", True)
    extra_ok = _compile(extra, root, done) if isinstance(extra, dict) else None
    names_ok = _remembered(_compile(schema["propertyNames"], root, done)) if "propertyNames" in schema else None
    if not (required or properties or extra is not True or names_ok):
        return []

    def object_ok(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        for name in required:
            if name not in v:
                return False
        for name, value in v.items():
            if names_ok is not None and not names_ok(name):
                return False
            test = properties.get(name)
            if test is not None:
                if not test(value):
                    return False
            elif extra is False or extra_ok is not None and not extra_ok(value):
                return False
        return True

    return [object_ok]


def _check(value: Any, schema: Schema, root: Schema, path: _Where, errors: list[str]) -> None:
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
    if "oneOf" in schema:
        _check_one_of(value, schema["oneOf"], root, path, errors)
    if "not" in schema:
        inner = schema["not"]
        if _valid(value, inner, root, path):
            what = inner.get("title") or f"valid against {_show(inner)}"
            errors.append(f"{_path(path)}: {_show(value)} is {what}, which is not allowed")
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


def _valid(value: Any, schema: Schema, root: Schema, path: _Where) -> bool:
    errors: list[str] = []
    _check(value, schema, root, path, errors)
    return not errors


def _check_one_of(value: Any, branches: list[Schema], root: Schema, path: _Where, errors: list[str]) -> None:
    results = []
    for branch in branches:
        found: list[str] = []
        _check(value, branch, root, path, found)
        results.append(found)
    valid = [i for i, found in enumerate(results) if not found]
    if len(valid) == 1:
        return

    def titles(indexes: list[int], joiner: str) -> str:
        return joiner.join(branches[i].get("title") or _show(branches[i]) for i in indexes)

    if valid:
        errors.append(f"{_path(path)}: {titles(valid, ' and ')} together; only one is allowed")
        return
    # The alternative the value meant is the one whose required keys it has:
    # its errors say what is wrong, where "matches none of" would not.
    meant = [
        i
        for i, branch in enumerate(branches)
        if isinstance(value, dict) and branch.get("required") and all(k in value for k in branch["required"])
    ]
    if len(meant) == 1:
        errors.extend(results[meant[0]])
    elif meant:
        errors.append(f"{_path(path)}: {titles(meant, ' and ')} together; only one is allowed")
    else:
        errors.append(f"{_path(path)}: expected {titles(list(range(len(branches))), ' or ')}")


def _check_object(value: dict[str, Any], schema: Schema, root: Schema, path: _Where, errors: list[str]) -> None:
    names = schema.get("propertyNames")
    if names is not None:
        for name in value:  # led by the key's own path: the field is what is wrong
            _check(name, names, root, (*path, name), errors)
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
