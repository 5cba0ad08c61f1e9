"""The adapter SDK: write a Powerstrip adapter in Python in a few lines.

::

    from powerstrip.adapter import Adapter, Refuse

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
with the body parsed as JSON when it is JSON. It returns the (modified)
object, or ``None`` for "unchanged", or raises :class:`Refuse` to deny the
call with a status and a message the Docker CLI prints. It may also return a
Deferred or be ``async def``.

An :class:`Adapter` is served over HTTP by ``twistd -n powerstrip-adapter
--module mymodule`` (see :mod:`powerstrip.adapter_server`), or runs inside
Powerstrip with an adapter URL ``python:mymodule:adapter`` (no HTTP hop).
Both speak the same protocol through :meth:`Adapter.handle`.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from powerstrip.config import parse_rule
from powerstrip.matching import rule_matches

log = Logger()

PROTOCOL_VERSION = 1

_UNSET = object()


class Refuse(Exception):  # noqa: N818 -- it reads as what the hook does: raise Refuse(403, ...)
    """Raise in a hook to deny the call: the client gets ``status`` and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        if not 300 <= status <= 599:
            raise ValueError(f"a refusal's status must be 300-599 (2xx means 'go on'), not {status}")
        super().__init__(message)
        self.status = status
        self.message = message


class _Body:
    """A message body as text, with a lazily parsed, editable JSON view."""

    body: str | None
    _json: Any
    _original: Any = None

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
            self._original = self._parsed()
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


@dataclass(eq=False)
class Request(_Body):
    """The client's request as dockerd will get it: ``method``, ``uri`` and ``body``.

    Change ``method``, ``uri``, ``body`` or ``json``. ``body`` is ``None``
    when the request has no body, or one that streams to Docker unseen
    (e.g. a build context) -- then it must stay ``None``.
    """

    method: str
    uri: str
    body: str | None = None
    _json: Any = field(default=_UNSET, init=False, repr=False)

    @property
    def path(self) -> str:
        """The URI without its query string, e.g. ``/v1.47/containers/create``."""
        return self.uri.split("?", 1)[0]

    @property
    def query(self) -> dict[str, list[str]]:
        """The query string's parameters, e.g. ``{"name": ["web"]}``."""
        return parse_qs(urlsplit(self.uri).query)

    def set_body(self, text: str | None) -> None:
        """Replace the body text (and drop the JSON view)."""
        self.body, self._json = text, _UNSET

    def wire(self) -> dict:
        """The protocol's ``ClientRequest`` object for this request."""
        return {"Method": self.method, "Request": self.uri, "Body": self._wire_body()}


@dataclass(eq=False)
class Response(_Body):
    """Docker's response as the client will get it: ``code``, ``content_type`` and ``body``."""

    code: int
    content_type: str | None = None
    body: str | None = None
    _json: Any = field(default=_UNSET, init=False, repr=False)

    def set_body(self, text: str | None) -> None:
        """Replace the body text (and drop the JSON view)."""
        self.body, self._json = text, _UNSET

    def wire(self) -> dict:
        """The protocol's ``ServerResponse`` object for this response."""
        return {"ContentType": self.content_type, "Body": self._wire_body(), "Code": self.code}


class BadPayload(ValueError):
    """A hook call that is not the Powerstrip protocol (the server answers 400)."""


@dataclass(frozen=True)
class _Hook:
    function: Callable[..., Any]
    rule: tuple[str, str] | None  # (method glob, path glob), None = every call

    def applies(self, request: Request) -> bool:
        return self.rule is None or rule_matches(*self.rule, request.method, request.uri)


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

    def pre_hook(self, rule: str | Callable | None = None) -> Any:
        """Decorate ``fn(request) -> Request | None`` as a pre-hook (optionally for one rule)."""
        return self._register(self.pre, rule)

    def post_hook(self, rule: str | Callable | None = None) -> Any:
        """Decorate ``fn(request, response) -> Response | None`` as a post-hook."""
        return self._register(self.post, rule)

    def _register(self, hooks: list[_Hook], rule: str | Callable | None) -> Any:
        if callable(rule):  # used bare: @adapter.pre_hook
            hooks.append(_Hook(rule, None))
            return rule
        parsed = parse_rule(rule) if rule is not None else None

        def decorate(fn: Callable) -> Callable:
            hooks.append(_Hook(fn, parsed))
            return fn

        return decorate

    def describe(self) -> dict:
        """What this adapter hooks, for ``GET`` on its server and for logs."""
        def names(hooks: list[_Hook]) -> list[str]:
            return [f"{h.function.__name__} ({' '.join(h.rule) if h.rule else 'any call'})" for h in hooks]
        return {"adapter": self.name, "pre-hooks": names(self.pre), "post-hooks": names(self.post)}

    def handle(self, payload: Any) -> defer.Deferred:
        """Answer one hook call: fire with ``(status, reply object)``.

        200 with the protocol reply, a :class:`Refuse`'s status with a Docker
        error body, or 500 naming the exception when a hook raised. Errbacks
        with :class:`BadPayload` when ``payload`` is not a hook call.
        """
        try:
            kind, request, response = _parse(payload)
        except BadPayload:
            return defer.fail()
        if kind == "pre-hook":
            d = self._run(self.pre, request, request, ())
            d.addCallback(lambda req: {"PowerstripProtocolVersion": PROTOCOL_VERSION,
                                       "ModifiedClientRequest": req.wire()})
        else:
            d = self._run(self.post, request, response, (request,))
            d.addCallback(lambda resp: {"PowerstripProtocolVersion": PROTOCOL_VERSION,
                                        "ModifiedServerResponse": resp.wire()})
        d.addCallbacks(lambda reply: (200, reply), self._refused, errbackArgs=(kind, request))
        return d

    @defer.inlineCallbacks
    def _run(self, hooks: list[_Hook], request: Request, subject: Any, before: tuple) -> Any:
        for hook in hooks:
            if not hook.applies(request):
                continue
            result = yield _maybe_async(hook.function, *before, subject)
            if result is not None:
                if not isinstance(result, type(subject)):
                    raise TypeError(f"{hook.function.__name__} returned {type(result).__name__}, "
                                    f"expected {type(subject).__name__} or None")
                subject = result
                if isinstance(subject, Request):
                    request = subject
        return subject

    def _refused(self, failure: Failure, kind: str, request: Request) -> Any:
        if failure.check(defer.CancelledError):
            return failure  # the caller gave up (in-process timeout): not the hook's fault
        if failure.check(Refuse):
            return failure.value.status, {"message": failure.value.message}
        log.failure("adapter {name}: {kind} for {method} {uri} raised", failure,
                    name=self.name, kind=kind, method=request.method, uri=request.uri)
        return 500, {"message": f"adapter '{self.name}' failed: {failure.type.__name__}: "
                                f"{failure.getErrorMessage()}"}


def _maybe_async(fn: Callable, *args: Any) -> defer.Deferred:
    result = defer.maybeDeferred(fn, *args)
    # An ``async def`` hook returns a coroutine: run it as a Deferred.
    return result.addCallback(lambda r: defer.ensureDeferred(r) if inspect.iscoroutine(r) else r)


def _parse(payload: Any) -> tuple[str, Request, Response | None]:
    """Turn a hook call into typed objects, or raise :class:`BadPayload` saying why."""
    if not isinstance(payload, dict):
        raise BadPayload("a hook call is a JSON object")
    kind = payload.get("Type")
    if kind not in ("pre-hook", "post-hook"):
        raise BadPayload(f"'Type' must be 'pre-hook' or 'post-hook', not {kind!r}")
    req = payload.get("ClientRequest")
    if not isinstance(req, dict) or not isinstance(req.get("Method"), str) or not isinstance(req.get("Request"), str):
        raise BadPayload("'ClientRequest' must be an object with 'Method' and 'Request' strings")
    request = Request(req["Method"], req["Request"], req.get("Body"))
    if kind == "pre-hook":
        return kind, request, None
    resp = payload.get("ServerResponse")
    if not isinstance(resp, dict) or not isinstance(resp.get("Code"), int):
        raise BadPayload("'ServerResponse' must be an object with an integer 'Code'")
    return kind, request, Response(resp["Code"], resp.get("ContentType"), resp.get("Body"))


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
            raise ValueError(f"{module_name}.{attr} is not a powerstrip.adapter.Adapter")
        return obj
    found = [v for v in vars(module).values() if isinstance(v, Adapter)]
    if len(found) != 1:
        raise ValueError(f"module {module_name!r} holds {len(found)} Adapter objects; "
                         f"name one as {module_name}:NAME")
    return found[0]
