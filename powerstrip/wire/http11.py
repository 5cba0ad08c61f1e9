"""HTTP/1.1 on the wire, with no I/O: the one reading of every message.

- :func:`parse_request_head`: a client's request head, read strictly (RFC
  9112) and exactly once. Whatever Powerstrip and dockerd (Go's net/http)
  could read differently is refused here with :class:`BadRequest`, before a
  hook or dockerd sees any of it.
- :func:`parse_response_head`: dockerd's response head.
- :class:`ChunkedFraming`: finds where a chunked body ends, and decodes it
  when asked (raw bytes are relayed untouched otherwise).
Header lists and their rules are :mod:`powerstrip.wire.headers`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from powerstrip.wire.headers import HOP_BY_HOP, HeaderList
from powerstrip.wire.target import BadTarget, canonical_target


class ProtocolError(Exception):
    """dockerd (or whatever answers upstream) sent something that is not HTTP/1.1."""


class ResponseHead:
    """A response's status line and headers, with the raw bytes kept for relaying.

    The headers a relay needs (framing, ``Connection``, whether any
    hop-by-hop header is present) are found in one scan when the head is
    read; the full header list only when first asked for, and :attr:`raw`
    is relayed as it came.
    """

    __slots__ = (
        "version",
        "code",
        "reason",
        "raw",
        "framing",
        "transfer_encoding",
        "content_length",
        "connection",
        "hop",
        "_lower",
        "_headers",
    )

    def __init__(
        self, version: bytes, code: int, reason: bytes, headers: HeaderList | None = None, raw: bytes = b""
    ) -> None:
        self.version, self.code, self.reason, self.raw = version, code, reason, raw
        self._headers = headers
        self._lower: bytes | None = None
        #: How the body is delimited, once the reader has decided (``powerstrip.proxy.upstream``'s LENGTH, CHUNKED...).
        self.framing: str | None = None
        #: The first values of ``Transfer-Encoding``, ``Content-Length`` and ``Connection`` (None: absent).
        self.transfer_encoding: bytes | None = None
        self.content_length: bytes | None = None
        self.connection: bytes | None = None
        #: Whether a hop-by-hop header other than ``Transfer-Encoding`` is present
        #: (the head cannot then be relayed as it is).
        self.hop = False
        if raw or headers:
            self._scan(raw or self._lowered())  # (the scan ignores case: lowered names read the same)

    def _scan(self, raw: bytes) -> None:
        # One regex pass in C; the loop sees only the few headers it names.
        for name, value in _WATCHED_RESPONSE.findall(raw):
            name = name.lower()
            if name == b"content-length":
                if self.content_length is None:
                    self.content_length = value.rstrip(b" \t")
            elif name == b"transfer-encoding":
                if self.transfer_encoding is None:
                    self.transfer_encoding = value.rstrip(b" \t")
            else:
                self.hop = True
                if name == b"connection" and self.connection is None:
                    self.connection = value.rstrip(b" \t")

    def __repr__(self) -> str:
        return f"ResponseHead({self.version!r}, {self.code}, {self.reason!r}, {self.headers!r})"

    @property
    def headers(self) -> HeaderList:
        """The headers in order, as (name, value) pairs."""
        if self._headers is None:
            self._headers = _response_headers(self.raw)
        return self._headers

    def _lowered(self) -> bytes:
        if self._lower is None:
            self._lower = (
                self.raw.lower()
                if self.raw
                else b"\r\n" + b"\r\n".join(k.lower() + b": " + v for k, v in self.headers) + b"\r\n"
            )
        return self._lower

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or None."""
        low = self._lowered()
        at = low.find(b"\r\n" + name + b":")
        if at < 0:
            return None
        start = at + len(name) + 3
        source = self.raw or low
        return source[start : low.find(b"\r\n", start)].strip(b" \t")


CRLF = b"\r\n"
_STATUS = re.compile(rb"(HTTP/1\.[0-9]) ([0-9]{3})(?: ([^\r\n]*))?\r\n")
#: The response headers a relay reads: framing, and the hop-by-hop ones (as
#: :meth:`ResponseHead.header` finds a name: at a line's start, right before its colon).
_WATCHED_RESPONSE = re.compile(
    rb"\r\n(content-length|transfer-encoding|connection|keep-alive|te|trailers?|upgrade|proxy-[^:\r\n]*)"
    rb":[ \t]*([^\r\n]*)",
    re.IGNORECASE,
)


def parse_response_head(raw: bytes) -> ResponseHead:
    """Read the status line of ``raw`` (status line through the blank line);
    the headers are read when first asked for.

    :raises ProtocolError: not an HTTP/1.x status line.
    """
    m = _STATUS.match(raw)
    if m is None:
        raise ProtocolError(f"bad status line {raw.partition(CRLF)[0][:80]!r}")
    return ResponseHead(m.group(1), int(m.group(2)), m.group(3) or b"", None, raw)


def _response_headers(raw: bytes) -> HeaderList:
    # Line by line: obsolete folding joined, anything else not "name: value" refused.
    headers: HeaderList = []
    for line in raw[raw.find(CRLF) + 2 : -4].split(CRLF):
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
    return headers


class ChunkedFraming:
    """The framing of one chunked body, scanned incrementally.

    :meth:`scan` says how many bytes of each piece belong to the body, so a
    relay can pass them on untouched (zero copies) and knows where the body
    ends; given a ``sink`` it also hands over the decoded payload. Sizes are
    read as Go reads them (hex digits, at most 16, optional extension), and a
    bare LF anywhere in the framing is an error, as it is to Go.
    """

    _SIZE, _DATA, _DATA_CRLF, _TRAILER = range(4)
    _SIZE_LINE = re.compile(rb"([0-9a-fA-F]{1,16})[ \t]*(?:;[^\r\n]*)?")

    def __init__(self, max_line: int = 4096) -> None:
        self._state = self._SIZE
        self._line = b""
        self._left = 0
        self._max_line = max_line
        #: The terminating chunk and trailers have been read.
        self.done = False
        #: Payload bytes seen so far (the body less its framing).
        self.payload = 0

    def scan(self, data: bytes, sink: Callable[[bytes], None] | None = None) -> int:
        """Read ``data``; return how many of its bytes belong to the body
        (all of them unless the body ends inside it).

        :raises ProtocolError: the framing is broken.
        """
        pos, n = 0, len(data)
        while pos < n and not self.done:
            if self._state == self._DATA:
                take = min(self._left, n - pos)
                self.payload += take
                if sink is not None:
                    sink(data if take == n else data[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state = self._DATA_CRLF
                continue
            eol = data.find(b"\n", pos)
            if eol < 0:
                self._line += data[pos:]
                if len(self._line) > self._max_line:
                    raise ProtocolError("chunk framing line too long")
                return n
            line = self._line + data[pos : eol + 1] if self._line else data[pos : eol + 1]
            self._line = b""
            pos = eol + 1
            if line[-2:-1] != b"\r":
                raise ProtocolError("bare LF in chunk framing")
            self._line_done(line[:-2])
        return pos

    def _line_done(self, line: bytes) -> None:
        if self._state == self._SIZE:
            m = self._SIZE_LINE.fullmatch(line)
            if m is None:
                raise ProtocolError(f"bad chunk size line {line[:20]!r}")
            self._left = int(m.group(1), 16)
            self._state = self._DATA if self._left else self._TRAILER
        elif self._state == self._DATA_CRLF:
            if line:
                raise ProtocolError("missing CRLF after chunk data")
            self._state = self._SIZE
        elif not line:  # _TRAILER: trailers end at the blank line
            self.done = True
        elif _BAD_FIELD.search(line) or b":" not in line:
            raise ProtocolError(f"bad trailer line {line[:40]!r}")


# -- the client's request head ----------------------------------------------------


class BadRequest(Exception):
    """A request Powerstrip refuses to read: ``code`` (400, 413, 431...) and why.

    Nothing of such a request reaches a hook or dockerd.
    """

    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


#: Bytes no request head may hold: controls but HTAB, and CR or LF other than
#: as a CRLF line end. (DEL too.) Go's net/http refuses most of these; the
#: rest (\x01, \x0b...) it takes, and answers oddly: refused here either way.
_BAD_HEAD = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n")
_BAD_FIELD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (/[\x21-\x7e]*) HTTP/1\.([01])")
_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_DIGITS = re.compile(rb"[0-9]{1,18}")
#: Bodies Go's ``r.ParseForm`` (``application/x-www-form-urlencoded``, POST, PUT and PATCH)
#: and ``r.FormValue`` (also ``multipart/form-data``, any method) read as parameters. Matched
#: anywhere in the value, in any case: wider than Go's media-type test, never narrower.
_FORM = re.compile(rb"form-urlencoded|multipart/", re.IGNORECASE)
#: Headers that must not repeat: their two readings (first value for Go, last
#: for many others) are exactly where a hook and dockerd come apart.
_SINGLE = frozenset((b"content-length", b"transfer-encoding", b"content-type", b"host"))


@dataclass(slots=True)
class RequestHead:
    """One client request head, as Powerstrip, its hooks and dockerd all read it."""

    method: str
    #: The request target: an origin-form path and query, visible ASCII, in its canonical
    #: spelling (:func:`powerstrip.wire.target.canonical_target`), as hooks and dockerd get it.
    target: str
    #: 1 for HTTP/1.1, 0 for HTTP/1.0.
    minor: int
    headers: HeaderList
    #: The head as received (request line through the blank line).
    raw: bytes
    content_length: int | None = None
    chunked: bool = False
    content_type: bytes | None = None
    keep_alive: bool = True
    #: ``Connection: Upgrade`` with an ``Upgrade`` header (attach, exec, h2c).
    upgrade: bool = False
    expect_continue: bool = False
    #: Whether :attr:`raw` can be sent to dockerd as it is (HTTP/1.1, a Host,
    #: no hop-by-hop header but chunked framing).
    plain: bool = True
    #: The target without its query string.
    path: str = ""
    #: Whether a body follows the head.
    has_body: bool = False


def find_head_end(buf: bytes, max_head: int) -> int:
    """Where the head in ``buf`` ends (the index after its blank line), or -1
    while it is incomplete.

    :raises BadRequest: a bare LF (Go would take it; a hang until the timeout
        helps nobody), or no end within ``max_head`` bytes (431).
    """
    end = buf.find(b"\r\n\r\n")
    if end >= 0 and end + 4 <= max_head:
        return end + 4
    if _BARE_LF.search(buf, 0, max_head):
        raise BadRequest("powerstrip: bare LF line ending in the request head (CRLF required)")
    if len(buf) >= max_head:
        raise BadRequest(f"powerstrip: request head larger than {max_head} bytes (see --max-header-size)", 431)
    return -1


_FIELD = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t \x21-\x7e\x80-\xff]*\r\n"
#: A whole valid request head, in one match (the fast path: C speed).
_VALID_HEAD = re.compile(
    rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (/[\x21-\x7e]*) HTTP/1\.([01])\r\n((?:" + _FIELD + rb")*)\r\n"
)
_PAIRS = re.compile(rb"([^:]+):[\t ]*([^\r\n]*)\r\n")


#: The header names whose values the framing and the connection depend on.
_WATCHED = frozenset(
    (b"content-length", b"transfer-encoding", b"content-type", b"host", b"connection", b"upgrade", b"expect")
)


def parse_request_head(raw: bytes) -> RequestHead:
    """Read one request head (request line through the blank line) strictly.

    :raises BadRequest: with the reason, for anything that is not a request
        Powerstrip and dockerd would read the same way.
    """
    m = _VALID_HEAD.fullmatch(raw)
    if m is None:
        _explain(raw)
    method_b, target_b, minor_b, block = m.groups()
    sent, minor = target_b.decode("ascii"), minor_b == b"1"
    try:
        target = canonical_target(sent)
    except BadTarget as e:
        raise BadRequest(e.message) from None
    headers: HeaderList = _PAIRS.findall(block)  # name, value less leading whitespace
    if b" \r\n" in block or b"\t\r\n" in block:  # rare: strip trailing whitespace only then
        headers = [(k, v.rstrip(b" \t")) for k, v in headers]
    head = RequestHead(method_b.decode("ascii"), target, int(minor), headers, raw, path=target.partition("?")[0])
    seen: dict[bytes, bytes] = {}
    connection: list[bytes] = []
    plain = minor and target == sent  # a respelled target: dockerd gets the head rebuilt with it
    for name, value in headers:
        lower = name.lower()
        if lower in _WATCHED:
            if lower in _SINGLE:
                if lower in seen:
                    raise BadRequest(f"powerstrip: more than one {name.decode()} header")
                seen[lower] = value
            elif lower == b"connection":
                connection.append(value)
                plain = False
            elif lower == b"upgrade":
                head.upgrade = True  # confirmed by Connection: Upgrade below
                plain = False
            else:  # expect
                head.expect_continue = value.lower() == b"100-continue"
                plain = False
        elif plain and (lower in HOP_BY_HOP or lower.startswith(b"proxy-")):
            plain = False
    if len(seen) > (b"host" in seen):  # a framing header or Content-Type to read
        _framing(head, seen)
    if connection:
        tokens = {t.strip().lower() for v in connection for t in v.split(b",")}
        head.keep_alive = b"close" not in tokens and (minor or b"keep-alive" in tokens)
        head.upgrade = head.upgrade and b"upgrade" in tokens
    else:
        head.keep_alive = minor
        head.upgrade = False
    if b"host" not in seen:
        if minor:
            # RFC 9112 3.2; Go's net/http (dockerd) answers this 400 too.
            raise BadRequest("powerstrip: HTTP/1.1 request without a Host header")
        plain = False  # HTTP/1.0 may omit it; dockerd gets one (and HTTP/1.1) from Powerstrip
    head.plain = plain
    return head


def _explain(raw: bytes) -> NoReturn:
    """Raise the :class:`BadRequest` that says what is wrong with a head the fast path refused."""
    bad = _BAD_HEAD.search(raw, 0, len(raw) - 4)
    if bad is not None:
        raise BadRequest(f"powerstrip: control character {bad.group()!r} in the request head")
    lines = raw[:-4].split(b"\r\n")
    if _REQUEST_LINE.fullmatch(lines[0]) is None:
        raise BadRequest(f"powerstrip: malformed request line {lines[0][:80]!r} (METHOD /path HTTP/1.1, single spaces)")
    for line in lines[1:]:
        name, sep, _ = line.partition(b":")
        if not sep or _NAME.fullmatch(name) is None:
            if line[:1] in (b" ", b"\t"):
                raise BadRequest("powerstrip: obsolete line folding in the request head")
            raise BadRequest(f"powerstrip: malformed header line {line[:80]!r}")
    raise BadRequest("powerstrip: malformed request head")


def _framing(head: RequestHead, seen: dict[bytes, bytes]) -> None:
    te, cl, ctype = seen.get(b"transfer-encoding"), seen.get(b"content-length"), seen.get(b"content-type")
    if te is not None:
        if te.lower() != b"chunked":
            raise BadRequest(f"powerstrip: unsupported Transfer-Encoding {te[:40]!r} (only chunked)")
        if cl is not None:
            raise BadRequest("powerstrip: both Content-Length and Transfer-Encoding")
        if head.minor == 0:
            raise BadRequest("powerstrip: Transfer-Encoding in an HTTP/1.0 request")
        head.chunked = head.has_body = True
    elif cl is not None:
        if _DIGITS.fullmatch(cl) is None:
            raise BadRequest(f"powerstrip: bad Content-Length {cl[:20]!r}")
        head.content_length = int(cl)
        head.has_body = head.content_length > 0
    if ctype is not None:
        if not ctype.isascii():
            raise BadRequest("powerstrip: non-ASCII byte in Content-Type (Go and Python read it differently)")
        if head.has_body and _FORM.search(ctype):
            raise BadRequest(
                f"powerstrip: a form body ({ctype[:60].decode()!r}) is refused: dockerd reads its fields as "
                "query parameters, and before the query's own, so a hook would check parameters dockerd "
                "does not use (no Docker client sends one: send parameters in the query)"
            )
        head.content_type = ctype
