"""The SDK's messages: what a hook function is given and returns.

:class:`Request` and :class:`Response` (bodies read as Docker reads JSON,
:class:`Headers` as protocol 2 carries them), who called (:class:`Caller`,
:class:`Certificate`), why an unwind call came (:class:`RequestFailure`), and
the exceptions a hook raises or meets (:class:`Refuse`, :class:`UnreadableBody`, :class:`UnreadableTarget`,
:class:`NeedsProtocol2`, :class:`BadPayload`). Also how a call's JSON becomes
these objects (:func:`request_from_call`, :func:`response_from_call`) and how a
hook's new object carries on what it left out (:func:`inherit`).
:mod:`powerstrip.sdk.adapter` dispatches calls to hook functions with them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import InitVar, dataclass, field
from typing import Any, cast

from powerstrip.wire import gojson, target

_UNSET = object()

# Headers that are Powerstrip's own (framing and hop-by-hop): a reply may not
# set them. The same list as the protocol 2 schemas' HeaderName.
_OWNED = frozenset(
    {"connection", "keep-alive", "te", "trailer", "trailers", "transfer-encoding", "upgrade", "content-length"}
)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(r"[^\x01-\x09\x0b\x0c\x0e-\xff]")


class Refuse(Exception):  # noqa: N818 -- it reads as what the hook does: raise Refuse(403, ...)
    """Raise in a hook to deny the call: the client gets ``status`` and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        if not 300 <= status <= 599:
            raise ValueError(f"a refusal's status must be 300-599 (2xx means 'go on'), not {status}")
        super().__init__(message)
        self.status = status
        self.message = message


class UnreadableBody(ValueError):
    """``Request.json`` of a body that is not strict JSON: the hook cannot know what dockerd reads.

    ``reason`` says why (invalid JSON, duplicate keys, NaN, invalid UTF-8..., as
    :mod:`powerstrip.wire.gojson` refuses them). Powerstrip itself refuses such bodies on the
    Engine API's JSON routes before any hook is called, so an adapter meets this on other
    routes, from another proxy, or in tests. Uncaught in a hook, the SDK answers 400.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"the request body is not readable JSON: {reason}")
        self.reason = reason


class UnreadableTarget(ValueError):
    """The request's path or query could be read two ways (dockerd's and Python's).

    ``reason`` says why. Powerstrip refuses such requests before any hook is called, so an
    adapter meets this only in calls that did not come from Powerstrip, or in tests.
    Uncaught in a hook, the SDK answers 400.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"the request target is not readable as dockerd reads it: {reason}")
        self.reason = reason


class NeedsProtocol2(Exception):  # noqa: N818 -- says what is missing
    """A hook asked for something a protocol 1 call cannot carry (a short-circuit, headers)."""


def _header_error(name: Any, values: Any) -> str | None:
    """What is wrong with one header a hook sets, or None."""
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        return f"{name!r} is not a header name (an HTTP token)"
    lower = name.lower()
    if lower in _OWNED or lower.startswith("proxy-"):
        return f"{name}: hop-by-hop headers and Content-Length are Powerstrip's own, a hook cannot set them"
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        return f"{name}: expected a list of strings, not {values!r}"
    for value in values:
        if _BAD_VALUE.search(value):
            return f"{name}: {value[:40]!r} is not a header value (Latin-1 text without CR, LF or NUL)"
    return None


class Headers(MutableMapping[str, list[str]]):
    """HTTP headers as protocol 2 carries them: name -> list of values.

    Names are matched case-insensitively and kept as first written. A name's
    list is live: ``headers["Accept"].append("text/plain")`` edits it.
    Setting a name takes a list of strings, or one string. Powerstrip's own
    headers (hop-by-hop ones, ``Content-Length``) cannot be set.

    Headers built from a call know what they were: only changed headers go
    back in the reply (as the complete new set). Headers you build yourself
    (``Headers({...})``, ``Response(..., headers={...})``) are always sent.
    """

    def __init__(self, headers: Mapping[str, str | Iterable[str]] | None = None) -> None:
        self._items: dict[str, tuple[str, list[str]]] = {}
        self._original: tuple[tuple[str, tuple[str, ...]], ...] | None = None  # None: built by a hook, always sent
        for name, values in (headers or {}).items():
            self[name] = values

    @classmethod
    def _from_call(cls, obj: Any, where: str) -> Headers:
        """The headers of a call (trusted to be Powerstrip's, but shape-checked)."""
        headers = cls()
        if obj is None:
            obj = {}
        if not isinstance(obj, dict) or not all(
            isinstance(vs, list) and all(isinstance(v, str) for v in vs) for vs in obj.values()
        ):
            raise BadPayload(f"'{where}' must be an object of header name -> list of strings")
        for name, values in obj.items():
            lower = name.lower()
            if lower in headers._items:  # the same name twice in different case: one header
                headers._items[lower][1].extend(values)
            else:
                headers._items[lower] = (name, list(values))
        headers._original = headers._snapshot()
        return headers

    def _snapshot(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return tuple((name, tuple(values)) for name, values in self._items.values())

    @property
    def changed(self) -> bool:
        """Whether these headers go back in the reply: edited since the call, or built by a hook."""
        return self._original is None or self._snapshot() != self._original

    def __getitem__(self, name: str) -> list[str]:
        return self._items[name.lower()][1]

    def __setitem__(self, name: str, values: str | Iterable[str]) -> None:
        if isinstance(values, str):
            values = [values]
        elif isinstance(values, Iterable) and not isinstance(values, Mapping):
            values = list(values)
        error = _header_error(name, values)
        if error:
            raise ValueError(error)
        old = self._items.get(name.lower())
        # Replacing keeps the name as first written, like the value's position.
        self._items[name.lower()] = (old[0] if old else name, cast(list[str], values))  # _header_error: a list

    def __delitem__(self, name: str) -> None:
        del self._items[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({ {name: values for name, values in self._items.values()}!r})"

    def first(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default`` when it has none."""
        values = self.get(name)
        return values[0] if values else default

    def add(self, name: str, value: str) -> None:
        """Append one value to ``name`` (creating it)."""
        if name.lower() in self._items:
            self[name] = [*self[name], value]
        else:
            self[name] = [value]

    def wire(self) -> dict[str, list[str]]:
        """The protocol's ``Headers`` object (checked: a hook may have edited a list in place).

        :raises ValueError: a header Powerstrip would refuse.
        """
        out = {}
        for name, values in self._items.values():
            error = _header_error(name, values)
            if error:
                raise ValueError(error)
            out[name] = list(values)
        return out


@dataclass(frozen=True)
class Certificate:
    """A TLS client certificate, as protocol 2's ``Caller.Certificate`` describes it."""

    subject: str  # RFC 4514: CN=alice,O=dev
    common_name: str | None
    fingerprint: str  # sha256:<64 hex digits>


@dataclass(frozen=True)
class Caller:
    """Who sent the request (protocol 2's ``Caller``); fields that do not apply are None."""

    transport: str  # unix | tcp | tls
    remote_address: str | None = None  # "IP:port"; None on a unix socket
    uid: int | None = None  # the client process's, on a unix socket
    gid: int | None = None
    pid: int | None = None
    user: str | None = None  # uid's account name, or the certificate's common name
    certificate: Certificate | None = None

    @classmethod
    def from_wire(cls, obj: Any) -> Caller | None:
        """A ``Caller`` object of a call as a :class:`Caller` (None for null)."""
        if obj is None:
            return None
        if not isinstance(obj, dict) or not isinstance(obj.get("Transport"), str):
            raise BadPayload("'Caller' must be null or an object with a 'Transport' string")
        cert = obj.get("Certificate")
        if cert is not None and not isinstance(cert, dict):
            raise BadPayload("'Caller.Certificate' must be null or an object")
        certificate = (
            None
            if cert is None
            else Certificate(cert.get("Subject", ""), cert.get("CommonName"), cert.get("Fingerprint", ""))
        )
        return cls(
            obj["Transport"],
            obj.get("RemoteAddress"),
            obj.get("Uid"),
            obj.get("Gid"),
            obj.get("Pid"),
            obj.get("User"),
            certificate,
        )


class _Body:
    """A message body as text, with a lazily parsed, editable JSON view."""

    body: str | None
    _json: Any
    _original: Any = None
    # Set by _init_headers: a dataclass InitVar in the subclasses, so not a field.
    headers: Headers
    _headers_given: bool

    @property
    def json(self) -> Any:
        """The body parsed as JSON (``None`` when empty or not JSON); edit it in place or assign it."""
        if self._json is _UNSET:
            self._json = self._parsed()
            self._original = self._parsed()  # a second copy, to tell later whether it changed
        return self._json

    @json.setter
    def json(self, value: Any) -> None:
        if self._json is _UNSET:
            try:
                self._original = self._parsed()
            except UnreadableBody:
                self._original = _UNSET  # replacing an unreadable body: whatever is assigned differs
        self._json = value

    def _parsed(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    def _wire_body(self) -> str | None:
        # An unchanged JSON view sends the body back byte for byte: a hook
        # that only reads must not reformat what Docker gets.
        # (== alone would take True for 1: the serialised forms must agree too.)
        if self._json is _UNSET or (
            self._json == self._original and json.dumps(self._json) == json.dumps(self._original)
        ):
            return self.body
        return json.dumps(self._json)

    def set_body(self, text: str | None) -> None:
        """Replace the body text (and drop the JSON view)."""
        self.body, self._json = text, _UNSET


def _init_headers(obj: _Body, headers: Mapping[str, Any] | None) -> None:
    obj.headers = headers if isinstance(headers, Headers) else Headers(headers)
    # Not given: nothing to send, and a hook's new object takes the headers
    # of the one it replaces (see _inherit).
    obj._headers_given = headers is not None
    if headers is None:
        obj.headers._original = ()


@dataclass(eq=False)
class Request(_Body):
    """The client's request as dockerd will get it: ``method``, ``uri`` and ``body``.

    Change ``method``, ``uri``, ``body`` or ``json``. ``body`` is ``None``
    when the request has no body, or one that streams to Docker unseen
    (e.g. a build context) -- then it must stay ``None``.

    Protocol 2 calls also give ``headers`` (:class:`Headers`: edit them to
    send the request on with new ones), ``request_id`` (Powerstrip's id of
    the client request) and ``caller`` (:class:`Caller`); under protocol 1
    they are empty, None and None. ``protocol`` is the call's version.
    """

    method: str
    uri: str
    body: str | None = None
    headers: InitVar[Mapping[str, Any] | None] = None
    request_id: str | None = None
    caller: Caller | None = None
    #: The protocol version of the call (1 or 2): what the reply can carry.
    protocol: int = field(default=1, init=False)
    _json: Any = field(default=_UNSET, init=False, repr=False)

    def __post_init__(self, headers: Mapping[str, Any] | None) -> None:
        _init_headers(self, headers)

    @property
    def json(self) -> Any:
        """The body parsed as JSON: ``None`` only when there is no body; edit it in place or assign it.

        Read the way dockerd's Go decoder reads it (:func:`powerstrip.wire.gojson.loads`).

        :raises UnreadableBody: the body is there but is not strict JSON (a policy must not
            take that for "nothing to check").
        """
        return _Body.json.fget(self)  # type: ignore[attr-defined]

    @json.setter
    def json(self, value: Any) -> None:
        _Body.json.fset(self, value)  # type: ignore[attr-defined]

    @property
    def json_error(self) -> str | None:
        """Why the body is not readable JSON (what :attr:`json` would raise), or None if it is."""
        try:
            self._parsed()
        except UnreadableBody as e:
            return e.reason
        return None

    def _parsed(self) -> Any:
        if not self.body:
            return None
        try:
            return gojson.loads(self.body.encode("utf-8", "surrogatepass"))
        except gojson.GoJSONError as e:
            raise UnreadableBody(str(e)) from None

    @property
    def path(self) -> str:
        """The URI without its query string, as sent to dockerd, e.g. ``/v1.47/containers/create``.

        In canonical spelling when Powerstrip sent the call (no route word is ``%``-encoded),
        but with its version prefix: to tell which endpoint this is, use :attr:`endpoint`.
        """
        return self.uri.split("?", 1)[0]

    @property
    def endpoint(self) -> str:
        """The path as dockerd routes it: ``%``-decoded, without the version prefix, e.g.
        ``/containers/web/export`` for ``/v1.41/containers/web/%65xport``.

        :raises UnreadableTarget: a path dockerd and Python would decode differently.
        """
        return self._endpoint()[1]

    @property
    def version(self) -> str | None:
        """The API version the path asks for (``"1.41"``), or None when it has no prefix."""
        return self._endpoint()[0]

    def _endpoint(self) -> tuple[str | None, str]:
        try:
            return target.endpoint(self.uri)
        except target.BadTarget as e:
            raise UnreadableTarget(e.message) from None

    @property
    def query(self) -> dict[str, list[str]]:
        """Every parameter of the query as dockerd reads it (Go's ``url.ParseQuery``):
        name -> values in order, e.g. ``{"name": ["web"]}``; ``force`` alone is ``{"force": [""]}``.

        :raises UnreadableTarget: a query Go would read otherwise (a ``;``, a bad ``%`` escape).
        """
        try:
            return target.params(self.uri.partition("?")[2])
        except target.BadTarget as e:
            raise UnreadableTarget(e.message) from None

    def param(self, name: str, default: str | None = None) -> str | None:
        """The value dockerd reads for parameter ``name`` (its first, as Go's ``FormValue``),
        or ``default`` when the query has none. The one way to check a parameter::

            if request.param("networkmode") == "host": raise Refuse(403, "no host network")
        """
        values = self.query.get(name)
        return values[0] if values else default

    def params(self, name: str) -> list[str]:
        """Every value of parameter ``name`` (``[]`` if none): for the few dockerd reads as a
        list (build's ``t``, ``extrahosts``, ``securityopt``; ``changes``...), check each."""
        return list(self.query.get(name, ()))

    def flag(self, name: str) -> bool:
        """Parameter ``name`` as dockerd reads a boolean (``httputils.BoolValue``): true unless
        absent or, trimmed and lower-cased, ``""``, ``0``, ``no``, ``false`` or ``none``."""
        value = (self.param(name) or "").strip().lower()
        return value not in ("", "0", "no", "false", "none")

    def wire(self, protocol: int = 1) -> dict[str, Any]:
        """The protocol's ``ClientRequest`` object for this request (``Headers`` only when changed).

        :raises NeedsProtocol2: headers changed, and ``protocol`` is 1.
        """
        out: dict[str, Any] = {"Method": self.method, "Request": self.uri, "Body": self._wire_body()}
        if self.headers.changed:
            if protocol < 2:
                raise NeedsProtocol2("setting headers needs protocol 2 (this call is protocol 1)")
            out["Headers"] = self.headers.wire()
        return out


@dataclass(eq=False)
class Response(_Body):
    """Docker's response as the client will get it: ``code``, ``content_type`` and ``body``.

    Under protocol 2 it also has ``headers`` (:class:`Headers`), and a
    pre-hook may return a new ``Response`` to answer the request itself.
    ``content_type``, when you set it, wins over a ``Content-Type`` in
    ``headers``; leave it and edit ``headers`` to change both.
    """

    code: int
    content_type: str | None = None
    body: str | None = None
    headers: InitVar[Mapping[str, Any] | None] = None
    _json: Any = field(default=_UNSET, init=False, repr=False)
    _sent_content_type: Any = field(default=_UNSET, init=False, repr=False)  # as the call had it

    def __post_init__(self, headers: Mapping[str, Any] | None) -> None:
        _init_headers(self, headers)

    def wire(self, protocol: int = 1) -> dict[str, Any]:
        """The protocol's ``ServerResponse`` object for this response (``Headers`` only when changed).

        :raises NeedsProtocol2: headers changed, and ``protocol`` is 1.
        """
        out: dict[str, Any] = {"ContentType": self.content_type, "Body": self._wire_body(), "Code": self.code}
        if self.headers.changed:
            if protocol < 2:
                raise NeedsProtocol2("setting headers needs protocol 2 (this call is protocol 1)")
            out["Headers"] = self.headers.wire()
            if self.content_type == self._sent_content_type:
                del out["ContentType"]  # left alone: the edited headers say what it is
        return out


@dataclass(frozen=True)
class RequestFailure:
    """Why an unwind call came: where the request failed and what the client got."""

    stage: str  # pre-hook | docker | post-hook | client (it went away before dockerd was sent the request)
    adapter: str | None  # the adapter that refused or faulted; None for dockerd and the client
    code: int | None  # the status the client got; None if it got none (stage client)
    message: str
    response: Response | None  # what the client got; None if nothing


class BadPayload(ValueError):
    """A hook call that is not the Powerstrip protocol (the server answers 400)."""


def inherit(new: Request | Response, old: Request | Response) -> None:
    """A hook's new object carries on what it did not say: headers, request id, caller."""
    if not new._headers_given:
        new.headers = old.headers
    if isinstance(new, Request) and isinstance(old, Request):
        if new.request_id is None:
            new.request_id = old.request_id
        if new.caller is None:
            new.caller = old.caller
        new.protocol = old.protocol
    if isinstance(new, Response) and isinstance(old, Response) and new._sent_content_type is _UNSET:
        new._sent_content_type = old._sent_content_type


def request_from_call(payload: dict[str, Any], version: int) -> Request:
    req = payload.get("ClientRequest")
    if not isinstance(req, dict) or not isinstance(req.get("Method"), str) or not isinstance(req.get("Request"), str):
        raise BadPayload("'ClientRequest' must be an object with 'Method' and 'Request' strings")
    request = Request(req["Method"], req["Request"], req.get("Body"))
    request.protocol = version
    if version >= 2:
        request.headers = Headers._from_call(req.get("Headers"), "ClientRequest.Headers")
        request_id = payload.get("RequestId")
        request.request_id = request_id if isinstance(request_id, str) else None
        request.caller = Caller.from_wire(payload.get("Caller"))
    return request


def response_from_call(resp: Any, version: int) -> Response:
    if not isinstance(resp, dict) or not isinstance(resp.get("Code"), int):
        raise BadPayload("'ServerResponse' must be an object with an integer 'Code'")
    response = Response(resp["Code"], resp.get("ContentType"), resp.get("Body"))
    response.headers = Headers._from_call(resp.get("Headers") if version >= 2 else None, "ServerResponse.Headers")
    response._sent_content_type = response.content_type
    return response
