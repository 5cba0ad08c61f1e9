"""Read a JSON request body the way dockerd (Go's ``encoding/json``) reads it — or refuse it.

Policy hooks decide on what Python reads; dockerd acts on what Go reads. Where the two
readings of one byte string could differ, :func:`loads` raises :class:`GoJSONError`
(a ``ValueError``) with the reason, so Powerstrip can answer 400 instead of letting a
hook approve a document dockerd reads otherwise. Refused:

- **invalid UTF-8** anywhere (Go replaces it with U+FFFD inside strings; Python's
  readers fail or replace differently);
- **lone surrogate escapes** such as ``"\\ud800"`` (Go decodes them to U+FFFD, Python
  to a lone surrogate code point);
- **duplicate keys** in one object (Python keeps the last value; Go decodes each
  occurrence into the same field in turn, *merging* objects and maps — so
  ``{"HostConfig": {"Privileged": true}, "HostConfig": {}}`` is privileged to Go and
  not to Python) — see :func:`canonicalize` for keys equal under Go's case folding;
- **trailing data** after the value (``json.Decoder.Decode``, which dockerd uses,
  reads the first value and ignores the rest; Python's ``json.loads`` refuses);
- ``NaN``, ``Infinity``, ``-Infinity`` (Python accepts them, Go does not), numbers that
  overflow a float64 (``1e400``: Python reads ``inf``, Go fails) and integers outside
  ``[-2**63, 2**64-1]`` (no Go integer holds them; Python reads them exactly);
- nesting deeper than :data:`MAX_DEPTH` (Go's own limit is 10000, Python's ``json``
  fails at its recursion limit — far below that; no Engine API document nests past a
  dozen levels, so refusing early keeps Powerstrip and every Python adapter safe);
- anything else that is not strict RFC 8259 JSON (Go's grammar: ASCII digits only,
  JSON whitespace only, no BOM, no control characters in strings).

Numbers are read as Python ``int`` (integer literals) or ``float``; :func:`dumps`
writes floats in their shortest round-trip form, which Go parses to the same float64.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any, cast

from powerstrip.wire.engine_api import Node
from powerstrip.wire.gotext import fold_key

#: Deepest nesting of arrays and objects accepted.
MAX_DEPTH = 128
_INT_MIN, _UINT_MAX = -(2**63), 2**64 - 1

_WS = re.compile(r"[ \t\n\r]*")
#: ``_WS.match``, typed as never None (a ``*`` pattern matches anywhere, if only "").
_ws_match = cast("Callable[[str, int], re.Match[str]]", _WS.match)
# ASCII digits only: Python's \d would take any Unicode digit.
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_LITERALS = {"true": True, "false": False, "null": None}


class GoJSONError(ValueError):
    """A document Powerstrip refuses because Go and Python could read it differently."""

    def __init__(self, reason: str, offset: int | None = None) -> None:
        self.reason = reason
        self.offset = offset
        super().__init__(reason if offset is None else f"{reason} (at byte {offset})")


def _string(text: str, pos: int) -> tuple[str, int]:
    """The JSON string starting after the quote at ``pos - 1``, and the index after it."""
    try:
        value, end = scanstring(text, pos, True)
    except json.JSONDecodeError as e:
        raise GoJSONError(f"invalid string: {e.msg}", e.pos) from None
    if _SURROGATE.search(value):
        raise GoJSONError("a \\u escape names a lone UTF-16 surrogate (Go reads it as U+FFFD)", pos)
    return value, end


def _number(text: str, pos: int) -> tuple[int | float, int]:
    m = _NUMBER.match(text, pos)
    if m is None:
        if text.startswith("-Infinity", pos):
            raise GoJSONError("NaN and Infinity are not JSON (Python reads them, Go refuses)", pos)
        raise GoJSONError("invalid value", pos)
    literal = m.group(0)
    if m.group(1) is None and m.group(2) is None:
        if len(literal) > 21:  # longer than any 64-bit integer: skip int()'s digit limit
            raise GoJSONError("integer out of the range of Go's integers", pos)
        value: int | float = int(literal)
        if not _INT_MIN <= value <= _UINT_MAX:
            raise GoJSONError("integer out of the range of Go's integers", pos)
    else:
        value = float(literal)
        if value in (float("inf"), float("-inf")):
            raise GoJSONError("number overflows a float64 (Go refuses it)", pos)
    return value, m.end()


def loads(data: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``data`` as Go would, refusing what Go and Python could read differently.

    Objects come back as ``dict`` (exact duplicate keys refused here; keys equal only
    under case folding are :func:`canonicalize`'s business, as Go treats them so only
    where it decodes into a struct).

    :raises GoJSONError: see the module docstring for every reason.
    """
    try:
        text = data.decode("utf-8")  # strict: also refuses UTF-8-encoded surrogates, as Go does
    except UnicodeDecodeError as e:
        raise GoJSONError("invalid UTF-8", e.start) from None
    # Offsets in errors are character offsets; for ASCII documents they are byte offsets.
    pos = _ws_match(text, 0).end()
    if pos == len(text):
        raise GoJSONError("no JSON value", pos)
    # An explicit stack, so depth is bounded by max_depth and not by Python's recursion limit.
    stack: list[tuple[dict[str, Any] | list[Any], str | None]] = []
    key: str | None
    while True:
        char = text[pos] if pos < len(text) else ""
        value: Any
        if char == "{" or char == "[":
            if len(stack) >= max_depth:
                raise GoJSONError(f"nested deeper than {max_depth} levels", pos)
            pos = _ws_match(text, pos + 1).end()
            if char == "{":
                if text.startswith("}", pos):
                    value, pos = {}, pos + 1
                else:
                    key, pos = _key(text, pos)
                    stack.append(({}, key))
                    continue
            else:
                if text.startswith("]", pos):
                    value, pos = [], pos + 1
                else:
                    stack.append(([], None))
                    continue
        elif char == '"':
            value, pos = _string(text, pos + 1)
        elif char in "-0123456789" and char:
            value, pos = _number(text, pos)
        else:
            for word, literal in _LITERALS.items():
                if text.startswith(word, pos):
                    value, pos = literal, pos + len(word)
                    break
            else:
                if text.startswith(("NaN", "Infinity", "-Infinity"), pos):
                    raise GoJSONError("NaN and Infinity are not JSON (Python reads them, Go refuses)", pos)
                raise GoJSONError("invalid value" if char else "unexpected end of data", pos)
        # A complete value: put it in its container and close every container it completes.
        while True:
            pos = _ws_match(text, pos).end()
            if not stack:
                if pos != len(text):
                    raise GoJSONError("data after the JSON value (Go's Decoder reads only the first value)", pos)
                return value
            container, key = stack[-1]
            if isinstance(container, dict):
                if key in container:
                    raise GoJSONError(f"duplicate key {key!r} (Go merges duplicates, Python keeps the last)", pos)
                container[key] = value  # type: ignore[index]
            else:
                container.append(value)
            char = text[pos] if pos < len(text) else ""
            if char == ",":
                pos = _ws_match(text, pos + 1).end()
                if isinstance(container, dict):
                    key, pos = _key(text, pos)
                    stack[-1] = (container, key)
                break  # the next member's value
            if char == ("}" if isinstance(container, dict) else "]"):
                stack.pop()
                value, pos = container, pos + 1
                continue
            raise GoJSONError("expected ',' or a closing bracket" if char else "unexpected end of data", pos)


def _key(text: str, pos: int) -> tuple[str, int]:
    """An object key and its colon: returns the key and the index of its value."""
    if not text.startswith('"', pos):
        raise GoJSONError("expected a string key", pos)
    key, pos = _string(text, pos + 1)
    pos = _ws_match(text, pos).end()
    if not text.startswith(":", pos):
        raise GoJSONError("expected ':' after an object key", pos)
    return key, _ws_match(text, pos + 1).end()


def canonicalize(value: Any, node: Node | None, where: str = "") -> Any:
    """``value`` with every key the schema ``node`` documents in its canonical spelling.

    Go's ``encoding/json`` matches a JSON key to a struct field exactly or, failing
    that, under ``strings.EqualFold`` (``privileged``, ``PRIVILEGED`` and ``Privilegeᴅ``
    do not all match, but ``privileged`` and ``priviLeged`` do, and ``HoſtConfig`` is
    ``HostConfig``). So in an object decoded into a struct (documented ``keys``) — and,
    erring safe, in any object the schema does not describe — two keys equal under
    EqualFold are refused (Go would decode both into one field, merging), and a key
    matching a field becomes the field's spelling. Map keys (``additionalProperties``,
    e.g. ``Labels``) are data to Go: kept as they are, and only exact duplicates (already
    refused by :func:`loads`) are a problem there.

    :raises GoJSONError: fold-equal keys in one object.
    """
    if isinstance(value, list):
        items = node.items if node is not None else None
        return [canonicalize(v, items, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    if node is not None and node.is_map:
        for key, child in value.items():
            out[key] = canonicalize(child, node.values, f"{where}.{key}")
        return out
    seen: dict[str, str] = {}
    for key, child in value.items():
        folded = fold_key(key)
        if folded in seen:
            raise GoJSONError(
                f"keys {seen[folded]!r} and {key!r} in {where or 'the document'} are one field "
                "to Go (case-insensitive match; Go merges them)"
            )
        seen[folded] = key
        name = node.canonical(key) if node is not None else None
        if name is not None:
            out[name] = canonicalize(child, node.field(name), f"{where}.{name}")  # type: ignore[union-attr]
        else:
            sub = node.values if node is not None else None  # a struct that also takes extra keys
            out[key] = canonicalize(child, sub, f"{where}.{key}")
    return out


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON for a value :func:`loads` produced (Go reads it to the same values)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
