"""HTTP/1.1 wire details the proxy needs and twisted.web does not expose.

Parsing of dockerd's response head (status line and repeated headers, kept
in order), incremental chunked-body decoding, and the hop-by-hop header rules
of RFC 9110 section 7.6.1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Headers that describe one connection, not the message: never forwarded,
#: except ``Connection``/``Upgrade`` on an upgrade handshake.
HOP_BY_HOP = frozenset(
    b"connection keep-alive te trailer trailers transfer-encoding upgrade proxy-connection "
    b"proxy-authenticate proxy-authorization".split()
)

Headers = list[tuple[bytes, bytes]]


class ProtocolError(Exception):
    """dockerd (or whatever answers upstream) sent something that is not HTTP/1.1."""


def header_values(headers: Headers, name: bytes) -> list[bytes]:
    """All values of header ``name`` (case-insensitive), in order."""
    name = name.lower()
    return [v for k, v in headers if k.lower() == name]


def header_value(headers: Headers, name: bytes) -> bytes | None:
    """The last value of header ``name``, or None."""
    values = header_values(headers, name)
    return values[-1] if values else None


def connection_tokens(headers: Headers) -> set[bytes]:
    """The lower-cased tokens of every ``Connection`` header."""
    return {
        t.strip().lower()
        for v in header_values(headers, b"connection")
        for t in v.split(b",")
        if t.strip()
    }


def is_upgrade(headers: Headers) -> bool:
    """Whether these headers ask to switch protocols (``Connection: Upgrade``)."""
    return b"upgrade" in connection_tokens(headers) and bool(header_values(headers, b"upgrade"))


def end_to_end(headers: Headers, keep_upgrade: bool = False) -> Headers:
    """``headers`` less the hop-by-hop ones and those named in ``Connection``.

    With ``keep_upgrade``, ``Connection: Upgrade`` and ``Upgrade`` survive, as
    the protocol switch itself must reach the other side.
    """
    named = connection_tokens(headers)
    out: Headers = []
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


def header_map(headers: Headers) -> dict[str, list[str]]:
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
_BAD_VALUE = re.compile(r"[\x00\r\n]")


def headers_from_map(obj: object) -> Headers:
    """A hook's ``Headers`` as a header list.

    :raises ValueError: a name that is not an HTTP token or is Powerstrip's own
        (framing, hop-by-hop), or a value that is not a string or holds CR, LF or NUL.
    """
    if not isinstance(obj, dict):
        raise ValueError("must be an object of header name -> list of values")
    out: Headers = []
    for name, values in obj.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(f"{name!r} is not a header name")
        if is_owned(name):
            raise ValueError(f"{name}: framing and hop-by-hop headers are Powerstrip's and cannot be set")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"{name}: expected a list of strings")
        for v in values:
            if _BAD_VALUE.search(v) or not v.isascii() and not all(ord(c) < 256 for c in v):
                raise ValueError(f"{name}: {v[:40]!r} is not a header value (no CR, LF, NUL; Latin-1 only)")
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


@dataclass
class ResponseHead:
    """A parsed status line and header block, with the raw bytes kept for hijacks."""

    version: bytes
    code: int
    reason: bytes
    headers: Headers = field(default_factory=list)
    raw: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        """The last value of header ``name``, or None."""
        return header_value(self.headers, name)


def parse_response_head(raw: bytes) -> ResponseHead:
    """Parse ``raw`` (status line through the blank line) into a :class:`ResponseHead`."""
    lines = raw.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or not status[0].startswith(b"HTTP/1.") or not status[1].isdigit():
        raise ProtocolError(f"bad status line {lines[0][:80]!r}")
    headers: Headers = []
    for line in lines[1:]:
        if not line:
            continue
        if line[:1] in b" \t" and headers:  # obsolete line folding
            k, v = headers[-1]
            headers[-1] = (k, v + b" " + line.strip())
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"bad header line {line[:80]!r}")
        headers.append((name, value.strip()))
    reason = status[2] if len(status) > 2 else b""
    return ResponseHead(status[0], int(status[1]), reason, headers, raw)


class ChunkedDecoder:
    """Incremental decoder of a chunked body: ``feed`` returns payload, sets ``done``.

    Bytes past the terminating chunk are kept in ``rest`` (they belong to the
    next response on the connection, which a well-behaved dockerd never sends
    unasked).
    """

    _SIZE, _DATA, _DATA_CRLF, _TRAILER = range(4)

    def __init__(self) -> None:
        self._state = self._SIZE
        self._buf = b""
        self._left = 0
        self.done = False
        self.rest = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Decode ``data``; returns the payload pieces it completed, in order."""
        out: list[bytes] = []
        buf = self._buf + data if self._buf else data
        self._buf = b""
        pos = 0
        n = len(buf)
        while pos < n and not self.done:
            if self._state == self._DATA:
                take = min(self._left, n - pos)
                out.append(buf[pos:pos + take] if (pos or take < n) else buf)
                pos += take
                self._left -= take
                if not self._left:
                    self._state = self._DATA_CRLF
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if n - pos > 4096:
                    raise ProtocolError("chunk size line too long")
                self._buf = buf[pos:]
                return out
            line = buf[pos:eol]
            pos = eol + 2
            if self._state == self._SIZE:
                size = line.split(b";", 1)[0].strip()
                try:
                    self._left = int(size, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {size[:20]!r}") from None
                if self._left < 0:
                    raise ProtocolError("negative chunk size")
                self._state = self._DATA if self._left else self._TRAILER
            elif self._state == self._DATA_CRLF:
                if line:
                    raise ProtocolError("missing CRLF after chunk data")
                self._state = self._SIZE
            elif not line:  # _TRAILER: trailers end at the blank line
                self.done = True
        if self.done:
            self.rest = buf[pos:]
        return out
