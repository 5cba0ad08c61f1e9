"""The adapter SDK: write a Powerstrip adapter in Python in a few lines.

::

    from powerstrip.sdk.adapter import Adapter, Refuse

    adapter = Adapter("env-inject")

    @adapter.pre_hook("POST /*/containers/create")
    def add_env(request):
        request.json.setdefault("Env", []).append("INJECTED=1")
        return request

    @adapter.post_hook
    def tag_errors(request, response):
        if response.code >= 400 and response.json:
            response.json["message"] = "[env-inject] " + response.json.get("message", "")
            return response

A hook function gets typed objects (:class:`Request`, :class:`Response`),
with the body parsed as JSON when it is JSON. ``request.json`` is ``None`` only
when the request has no body (or one that streams unseen): a body that is not
strict JSON raises :class:`UnreadableBody` (a ``ValueError``), never reads as
"nothing to check"; a hook that lets it escape refuses the call with a 400
saying why (catch it, or test ``request.json_error``, to decide otherwise).
It returns the (modified)
object, or ``None`` for "unchanged", or raises :class:`Refuse` to deny the
call with a status and a message the Docker CLI prints. It may also return a
Deferred or be ``async def``.

The same adapter answers protocol 1 and protocol 2 calls, each in the call's
own version. Under protocol 2 a request also has ``headers``, ``request_id``
and ``caller``, a pre-hook may answer the request itself by returning a
:class:`Response` (a short-circuit), and the adapter can take ``unwind``
calls (:meth:`Adapter.unwind`) and Docker events (:meth:`Adapter.event`).

An :class:`Adapter` is served over HTTP by ``twistd -n powerstrip-adapter
--module mymodule`` (see :mod:`powerstrip.sdk.server`), or runs inside
Powerstrip with an adapter URL ``python:mymodule:adapter`` (no HTTP hop).
Both speak the same protocol through :meth:`Adapter.handle`.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import InitVar, dataclass, field
from fnmatch import fnmatchcase
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from powerstrip.wire import gojson
from powerstrip.wire.rules import parse_rule, rule_matches

#: Log namespaces are part of the interface (log filters name them): kept across moves.
log = Logger(namespace="powerstrip.adapter")

#: The protocol version of the original hook calls (the SDK answers each call in its own version).
PROTOCOL_VERSION = 1
#: The protocol versions the SDK speaks.
PROTOCOL_VERSIONS = (1, 2)

_UNSET = object()

# Headers that are Powerstrip's own (framing and hop-by-hop): a reply may not
# set them. The same list as the protocol 2 schemas' HeaderName.
_OWNED = frozenset({"connection", "keep-alive", "te", "trailer", "trailers", "transfer-encoding", "upgrade",
                    "content-length"})
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
                isinstance(vs, list) and all(isinstance(v, str) for v in vs) for vs in obj.values()):
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
        certificate = None if cert is None else Certificate(cert.get("Subject", ""), cert.get("CommonName"),
                                                            cert.get("Fingerprint", ""))
        return cls(obj["Transport"], obj.get("RemoteAddress"), obj.get("Uid"), obj.get("Gid"), obj.get("Pid"),
                   obj.get("User"), certificate)


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
        if self._json is _UNSET or (self._json == self._original
                                    and json.dumps(self._json) == json.dumps(self._original)):
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
        """The URI without its query string, e.g. ``/v1.47/containers/create``."""
        return self.uri.split("?", 1)[0]

    @property
    def query(self) -> dict[str, list[str]]:
        """The query string's parameters, e.g. ``{"name": ["web"]}``."""
        return parse_qs(urlsplit(self.uri).query)

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


@dataclass(frozen=True)
class _Hook:
    function: Callable[..., Any]
    rule: tuple[str, str] | None  # (method glob, path glob), None = every call

    def applies(self, request: Request) -> bool:
        return self.rule is None or rule_matches(*self.rule, request.method, request.uri)

    def describe(self) -> str:
        return f"{self.function.__name__} ({' '.join(self.rule) if self.rule else 'any call'})"


@dataclass(frozen=True)
class _EventHook:
    function: Callable[..., Any]
    rule: tuple[str, str] | None  # (type glob, action glob), None = every event

    def applies(self, kind: tuple[str, str]) -> bool:
        return self.rule is None or (fnmatchcase(kind[0], self.rule[0]) and fnmatchcase(kind[1], self.rule[1]))

    def describe(self) -> str:
        return f"{self.function.__name__} ({' '.join(self.rule) if self.rule else 'any event'})"


@dataclass
class _Call:
    """One parsed call."""

    version: int
    kind: str  # pre-hook | post-hook | unwind | event
    request: Request | None = None
    response: Response | None = None
    failure: RequestFailure | None = None
    event: dict[str, Any] | None = None


class Adapter:
    """A named set of hook functions that answers Powerstrip's hook calls.

    Several functions may hook the same phase: they run in the order they
    were registered, each seeing the previous one's output, and only those
    whose rule (``"METHOD /path/glob"``, as in adapters.yml) matches.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.pre: list[_Hook] = []
        self.post: list[_Hook] = []
        self.unwinds: list[_Hook] = []
        self.events: list[_EventHook] = []

    def pre_hook(self, rule: str | Callable[..., Any] | None = None) -> Any:
        """Decorate ``fn(request) -> Request | Response | None`` as a pre-hook (optionally for one rule).

        Returning a :class:`Response` answers the request without Docker (protocol 2 only).
        """
        return self._register(self.pre, rule)

    def post_hook(self, rule: str | Callable[..., Any] | None = None) -> Any:
        """Decorate ``fn(request, response) -> Response | None`` as a post-hook."""
        return self._register(self.post, rule)

    def unwind(self, rule: str | Callable[..., Any] | None = None) -> Any:
        """Decorate ``fn(request, failure: RequestFailure)``, called on protocol 2 ``unwind`` calls:
        a request this adapter's pre-hook let through failed later. Its return value is ignored;
        an exception is logged and answered 500 (Powerstrip logs it)."""
        return self._register(self.unwinds, rule)

    def event(self, pattern: str | Callable[..., Any] | None = None) -> Any:
        """Decorate ``fn(event: dict)`` for Docker events whose ``"TYPE ACTION"`` match ``pattern``
        (shell globs, as under adapters.yml's ``events:``, e.g. ``"container die"``; none = every event).

        ``event`` is Docker's event object. The adapter answers 200 when every matching function
        succeeded, 500 otherwise (so Powerstrip delivers the event again).
        """
        if callable(pattern):  # used bare: @adapter.event
            self.events.append(_EventHook(pattern, None))
            return pattern
        rule = None
        if pattern is not None:
            words = pattern.split() if isinstance(pattern, str) else []
            if len(words) != 2:
                raise ValueError(f"event {pattern!r}: expected \"TYPE ACTION\" globs, e.g. \"container die\" "
                                 "or \"network *\"")
            rule = (words[0], words[1])

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.events.append(_EventHook(fn, rule))
            return fn

        return decorate

    def _register(self, hooks: list[_Hook], rule: str | Callable[..., Any] | None) -> Any:
        if callable(rule):  # used bare: @adapter.pre_hook
            hooks.append(_Hook(rule, None))
            return rule
        parsed = parse_rule(rule) if rule is not None else None

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            hooks.append(_Hook(fn, parsed))
            return fn

        return decorate

    def describe(self) -> dict[str, Any]:
        """What this adapter hooks, for ``GET`` on its server and for logs
        (``unwind`` and ``events`` only when it has some)."""
        out: dict[str, Any] = {"adapter": self.name, "pre-hooks": [h.describe() for h in self.pre],
                               "post-hooks": [h.describe() for h in self.post]}
        if self.unwinds:
            out["unwind"] = [h.describe() for h in self.unwinds]
        if self.events:
            out["events"] = [h.describe() for h in self.events]
        return out

    def handle(self, payload: Any) -> defer.Deferred[tuple[int, dict[str, Any]]]:
        """Answer one call: fire with ``(status, reply object)``.

        200 with the protocol reply (in the call's version), a :class:`Refuse`'s
        status with a Docker error body, or 500 naming the exception when a hook
        raised. Unwind and event calls: 200 when every matching function
        succeeded, else 500. Errbacks with :class:`BadPayload` when ``payload``
        is not a call.
        """
        try:
            call = _parse(payload)
        except BadPayload:
            return defer.fail()
        if call.kind == "event":
            return self._event(call.event or {})
        if call.kind == "unwind":
            return self._unwind(call)
        version, request = call.version, call.request
        assert request is not None
        if call.kind == "pre-hook":
            d = self._run(self.pre, request, request, (), version)
            d.addCallback(self._pre_reply, version)
        else:
            d = self._run(self.post, request, call.response, (request,), version)
            d.addCallback(lambda resp: {"PowerstripProtocolVersion": version,
                                        "ModifiedServerResponse": resp.wire(version)})
        d.addCallbacks(lambda reply: (200, reply), self._refused, errbackArgs=(call.kind, request))
        return d

    @staticmethod
    def _pre_reply(result: Request | Response, version: int) -> dict[str, Any]:
        if isinstance(result, Response):  # a short-circuit (_run allows it under protocol 2 only)
            return {"PowerstripProtocolVersion": version, "ServerResponse": result.wire(version)}
        return {"PowerstripProtocolVersion": version, "ModifiedClientRequest": result.wire(version)}

    @defer.inlineCallbacks
    def _run(self, hooks: list[_Hook], request: Request, subject: Any, before: tuple[Any, ...], version: int) -> Any:
        for hook in hooks:
            if not hook.applies(request):
                continue
            result = yield _maybe_async(hook.function, *before, subject)
            if result is None:
                continue
            name = hook.function.__name__
            if isinstance(subject, Request) and isinstance(result, Response):
                if version < 2:
                    raise NeedsProtocol2(f"{name} returned a Response: short-circuit needs protocol 2 "
                                         f"(this call is protocol {version})")
                return result  # a short-circuit: the chain stops here
            if not isinstance(result, type(subject)):
                expected = "Request, Response or None" if isinstance(subject, Request) and version >= 2 \
                    else f"{type(subject).__name__} or None"
                raise TypeError(f"{name} returned {type(result).__name__}, expected {expected}")
            if result is not subject:
                _inherit(result, subject)
            subject = result
            if isinstance(subject, Request):
                request = subject
        return subject

    def _refused(self, failure: Failure, kind: str, request: Request) -> Any:
        if failure.check(defer.CancelledError):
            return failure  # the caller gave up (in-process timeout): not the hook's fault
        if isinstance(failure.value, Refuse):  # failure.check(Refuse), narrowing for mypy
            return failure.value.status, {"message": failure.value.message}
        if failure.check(UnreadableBody):
            # Fail closed: a hook that could not read the body did not approve it.
            return 400, {"message": f"adapter '{self.name}': {failure.getErrorMessage()}"}
        if failure.check(NeedsProtocol2):
            # The adapter's own mistake, not a crash: its message says it all.
            log.error("adapter {name}: {kind} for {method} {uri}: {error}", name=self.name, kind=kind,
                      method=request.method, uri=request.uri, error=failure.getErrorMessage())
            return 500, {"message": f"adapter '{self.name}' failed: {failure.getErrorMessage()}"}
        log.failure("adapter {name}: {kind} for {method} {uri} raised", failure,
                    name=self.name, kind=kind, method=request.method, uri=request.uri)
        return 500, {"message": f"adapter '{self.name}' failed: {failure.type.__name__}: "  # type: ignore[union-attr]  # None only for a Failure of no exception
                                f"{failure.getErrorMessage()}"}

    @defer.inlineCallbacks
    def _each(self, functions: list[Callable[..., Any]], args: tuple[Any, ...], what: str) -> Any:
        """Call every function (one failing does not stop the others): ``(200, ...)``, or 500 naming the failures."""
        failed: list[str] = []
        for fn in functions:
            try:
                yield _maybe_async(fn, *args)
            except defer.CancelledError:
                raise
            except Exception:
                failure = Failure()
                log.failure("adapter {name}: {what}: {function} raised", failure, name=self.name, what=what,
                            function=fn.__name__)
                failed.append(f"{fn.__name__}: {failure.type.__name__}: {failure.getErrorMessage()}")  # type: ignore[union-attr]  # None only for a Failure of no exception
        if failed:
            return 500, {"message": f"adapter '{self.name}' failed: {what}: " + "; ".join(failed)}
        return 200, {"PowerstripProtocolVersion": 2}

    def _unwind(self, call: _Call) -> defer.Deferred[tuple[int, dict[str, Any]]]:
        request = call.request
        assert request is not None
        functions = [h.function for h in self.unwinds if h.applies(request)]
        return self._each(functions, (request, call.failure), f"unwind of {request.method} {request.uri}")

    def _event(self, event: dict[str, Any]) -> defer.Deferred[tuple[int, dict[str, Any]]]:
        kind = _event_kind(event)
        functions = [h.function for h in self.events if h.applies(kind)]
        return self._each(functions, (event,), f"event {kind[0]} {kind[1]}")


def _inherit(new: Request | Response, old: Request | Response) -> None:
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


def _event_kind(event: dict[str, Any]) -> tuple[str, str]:
    # Events of API versions before 1.22 have only "status" (and are all container events).
    return str(event.get("Type") or "container"), str(event.get("Action") or event.get("status") or "")


def _maybe_async(fn: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
    result = defer.maybeDeferred(fn, *args)
    # An ``async def`` hook returns a coroutine: run it as a Deferred.
    return result.addCallback(lambda r: defer.ensureDeferred(r) if inspect.iscoroutine(r) else r)


def _parse(payload: Any) -> _Call:
    """Turn a call into typed objects, or raise :class:`BadPayload` saying why."""
    if not isinstance(payload, dict):
        raise BadPayload("a hook call is a JSON object")
    version = payload.get("PowerstripProtocolVersion", 1)
    if version not in PROTOCOL_VERSIONS or isinstance(version, bool):
        raise BadPayload(f"'PowerstripProtocolVersion' must be 1 or 2, not {version!r}")
    kind = payload.get("Type")
    if version == 1 and kind not in ("pre-hook", "post-hook"):
        raise BadPayload(f"'Type' must be 'pre-hook' or 'post-hook', not {kind!r}"
                         + (" (unwind and event calls are protocol 2)" if kind in ("unwind", "event") else ""))
    if kind not in ("pre-hook", "post-hook", "unwind", "event"):
        raise BadPayload(f"'Type' must be 'pre-hook', 'post-hook', 'unwind' or 'event', not {kind!r}")
    if kind == "event":
        if not isinstance(payload.get("Event"), dict):
            raise BadPayload("'Event' must be an object")
        return _Call(version, kind, event=payload["Event"])
    request = _request(payload, version)
    if kind == "pre-hook":
        return _Call(version, kind, request)
    resp = payload.get("ServerResponse")
    if kind == "unwind":
        failure = payload.get("Failure")
        if not isinstance(failure, dict) or not isinstance(payload.get("Stage"), str):
            raise BadPayload("an unwind call needs a 'Stage' string and a 'Failure' object")
        response = _response(resp, version) if isinstance(resp, dict) else None
        return _Call(version, kind, request, failure=RequestFailure(
            payload["Stage"], failure.get("Adapter"), failure.get("Code"), failure.get("Message", ""), response))
    return _Call(version, kind, request, _response(resp, version))


def _request(payload: dict[str, Any], version: int) -> Request:
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


def _response(resp: Any, version: int) -> Response:
    if not isinstance(resp, dict) or not isinstance(resp.get("Code"), int):
        raise BadPayload("'ServerResponse' must be an object with an integer 'Code'")
    response = Response(resp["Code"], resp.get("ContentType"), resp.get("Body"))
    response.headers = Headers._from_call(resp.get("Headers") if version >= 2 else None, "ServerResponse.Headers")
    response._sent_content_type = response.content_type
    return response


def load(spec: str) -> Adapter:
    """Import the :class:`Adapter` named by ``spec``: ``package.module:name``, or
    ``package.module`` when the module holds exactly one Adapter.

    Like ``python -m``, the current directory is importable.

    :raises ValueError: with a message saying what is wrong.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not all(part.isidentifier() for part in module_name.split(".")):
        raise ValueError(f"{spec!r} is not 'package.module' or 'package.module:name'")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # an adapter module's own import error is the operator's to see
        raise ValueError(f"cannot import {module_name!r}: {type(e).__name__}: {e}") from e
    if attr:
        obj = getattr(module, attr, None)
        if not isinstance(obj, Adapter):
            raise ValueError(f"{module_name}.{attr} is not a powerstrip.sdk.Adapter")
        return obj
    found = [v for v in vars(module).values() if isinstance(v, Adapter)]
    if len(found) != 1:
        raise ValueError(f"module {module_name!r} holds {len(found)} Adapter objects; "
                         f"name one as {module_name}:NAME")
    return found[0]
