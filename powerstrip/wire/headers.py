"""Header lists on the wire, with no I/O: reading them as Go does, and the hop-by-hop rules.

A message's headers are a :data:`HeaderList`: ``(name, value)`` byte pairs in
wire order, duplicates kept (Go's net/http reads the first of two where one is
meant: :func:`header_value`). Also here: the hop-by-hop rules of RFC 9110
section 7.6.1 (:data:`HOP_BY_HOP`, :func:`end_to_end`), the headers that are
Powerstrip's own (:func:`is_owned`), protocol 2's header objects
(:func:`header_map`, :func:`headers_from_map`), and media types compared as
Docker compares them (:func:`media_type`, :func:`is_json`).
"""

from __future__ import annotations

import re

#: Headers that describe one connection, not the message: never forwarded,
#: except ``Connection``/``Upgrade`` on an upgrade handshake.
HOP_BY_HOP = frozenset(
    b"connection keep-alive te trailer trailers transfer-encoding upgrade proxy-connection "
    b"proxy-authenticate proxy-authorization".split()
)

HeaderList = list[tuple[bytes, bytes]]


def header_values(headers: HeaderList, name: bytes) -> list[bytes]:
    """All values of header ``name`` (case-insensitive), in order."""
    name = name.lower()
    return [v for k, v in headers if k.lower() == name]


def header_value(headers: HeaderList, name: bytes) -> bytes | None:
    """The last value of header ``name``, or None."""
    values = header_values(headers, name)
    return values[-1] if values else None


def connection_tokens(headers: HeaderList) -> set[bytes]:
    """The lower-cased tokens of every ``Connection`` header."""
    return {t.strip().lower() for v in header_values(headers, b"connection") for t in v.split(b",") if t.strip()}


def end_to_end(headers: HeaderList, keep_upgrade: bool = False) -> HeaderList:
    """``headers`` less the hop-by-hop ones and those named in ``Connection``.

    With ``keep_upgrade``, ``Connection: Upgrade`` and ``Upgrade`` survive, as
    the protocol switch itself must reach the other side.
    """
    named = connection_tokens(headers)
    out: HeaderList = []
    for k, v in headers:
        lk = k.lower()
        if keep_upgrade and lk == b"upgrade":
            out.append((k, v))
        elif lk in HOP_BY_HOP or lk in named or lk.startswith(b"proxy-"):
            continue
        else:
            out.append((k, v))
    if keep_upgrade:
        out.append((b"Connection", b"Upgrade"))
    return out


def is_owned(name: str | bytes) -> bool:
    """Whether a header belongs to Powerstrip (framing and hop-by-hop), not to hooks."""
    lower = (name.encode("latin-1") if isinstance(name, str) else name).lower()
    return lower in HOP_BY_HOP or lower == b"content-length" or lower.startswith(b"proxy-")


def header_map(headers: HeaderList) -> dict[str, list[str]]:
    """Protocol 2's ``Headers``: the end-to-end headers, name (as first sent) -> values in order."""
    out: dict[str, list[str]] = {}
    names: dict[bytes, str] = {}
    for k, v in end_to_end(headers):
        if k.lower() == b"content-length":
            continue
        name = names.setdefault(k.lower(), k.decode("latin-1"))
        out.setdefault(name, []).append(v.decode("latin-1"))
    return out


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: What a header value may not hold: anything but VCHAR, obs-text, SP and HTAB.
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def headers_from_map(obj: object) -> HeaderList:
    """A hook's ``Headers`` as a header list.

    :raises ValueError: a name that is not an HTTP token or is Powerstrip's own
        (framing, hop-by-hop), or a value that is not a string or holds CR, LF or NUL.
    """
    if not isinstance(obj, dict):
        raise ValueError("must be an object of header name -> list of values")
    out: HeaderList = []
    for name, values in obj.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(f"{name!r} is not a header name")
        if is_owned(name):
            raise ValueError(f"{name}: framing and hop-by-hop headers are Powerstrip's and cannot be set")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"{name}: expected a list of strings")
        for v in values:
            if _BAD_VALUE.search(v) or not v.isascii() and not all(ord(c) < 256 for c in v):
                raise ValueError(
                    f"{name}: {v[:40]!r} is not a header value (visible characters, space and tab only; Latin-1)"
                )
            out.append((name.encode("latin-1"), v.encode("latin-1")))
    return out


_ORIGIN_FORM = re.compile(r"/[\x21-\x7e]*")


def is_origin_form(uri: str) -> bool:
    """Whether ``uri`` is a request target Docker's API can have: a path (and
    query) of visible ASCII, starting with ``/``."""
    return _ORIGIN_FORM.fullmatch(uri) is not None  # fullmatch: "$" would let a final "\n" through


def media_type(content_type: bytes | str | None) -> str:
    """``application/json; charset=utf-8`` → ``application/json``."""
    if content_type is None:
        return ""
    if isinstance(content_type, bytes):
        content_type = content_type.decode("latin-1")
    return content_type.split(";", 1)[0].strip().lower()


def is_json(content_type: bytes | str | None) -> bool:
    """Whether a body of this type is JSON (the only bodies adapters see)."""
    mt = media_type(content_type)
    return mt == "application/json" or mt.endswith("+json")
