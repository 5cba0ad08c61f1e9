"""The adapter SDK: write a Powerstrip adapter in Python in a few lines.

::

    from powerstrip.sdk import Adapter, Refuse

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
import sys
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from powerstrip.sdk.messages import (
    BadPayload,
    NeedsProtocol2,
    Refuse,
    Request,
    RequestFailure,
    Response,
    UnreadableBody,
    UnreadableTarget,
    inherit,
    request_from_call,
    response_from_call,
)
from powerstrip.wire.rules import parse_rule, rule_matches

# The messages (Request, Refuse...) are powerstrip.sdk.messages'; the SDK's surface is powerstrip.sdk.
__all__ = ["PROTOCOL_VERSION", "PROTOCOL_VERSIONS", "Adapter", "load"]

#: Log namespaces are part of the interface (log filters name them): kept across moves.
log = Logger(namespace="powerstrip.adapter")

#: The protocol version of the original hook calls (the SDK answers each call in its own version).
PROTOCOL_VERSION = 1
#: The protocol versions the SDK speaks.
PROTOCOL_VERSIONS = (1, 2)


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
                raise ValueError(
                    f'event {pattern!r}: expected "TYPE ACTION" globs, e.g. "container die" or "network *"'
                )
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
        out: dict[str, Any] = {
            "adapter": self.name,
            "pre-hooks": [h.describe() for h in self.pre],
            "post-hooks": [h.describe() for h in self.post],
        }
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
            d.addCallback(
                lambda resp: {"PowerstripProtocolVersion": version, "ModifiedServerResponse": resp.wire(version)}
            )
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
                    raise NeedsProtocol2(
                        f"{name} returned a Response: short-circuit needs protocol 2 (this call is protocol {version})"
                    )
                return result  # a short-circuit: the chain stops here
            if not isinstance(result, type(subject)):
                expected = (
                    "Request, Response or None"
                    if isinstance(subject, Request) and version >= 2
                    else f"{type(subject).__name__} or None"
                )
                raise TypeError(f"{name} returned {type(result).__name__}, expected {expected}")
            if result is not subject:
                inherit(result, subject)
            subject = result
            if isinstance(subject, Request):
                request = subject
        return subject

    def _refused(self, failure: Failure, kind: str, request: Request) -> Any:
        if failure.check(defer.CancelledError):
            return failure  # the caller gave up (in-process timeout): not the hook's fault
        if isinstance(failure.value, Refuse):  # failure.check(Refuse), narrowing for mypy
            return failure.value.status, {"message": failure.value.message}
        if failure.check(UnreadableBody, UnreadableTarget):
            # Fail closed: a hook that could not read the body or target did not approve it.
            return 400, {"message": f"adapter '{self.name}': {failure.getErrorMessage()}"}
        if failure.check(NeedsProtocol2):
            # The adapter's own mistake, not a crash: its message says it all.
            log.error(
                "adapter {name}: {kind} for {method} {uri}: {error}",
                name=self.name,
                kind=kind,
                method=request.method,
                uri=request.uri,
                error=failure.getErrorMessage(),
            )
            return 500, {"message": f"adapter '{self.name}' failed: {failure.getErrorMessage()}"}
        log.failure(
            "adapter {name}: {kind} for {method} {uri} raised",
            failure,
            name=self.name,
            kind=kind,
            method=request.method,
            uri=request.uri,
        )
        return 500, {
            "message": f"adapter '{self.name}' failed: {failure.type.__name__}: "  # type: ignore[union-attr]  # None only for a Failure of no exception
            f"{failure.getErrorMessage()}"
        }

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
                log.failure(
                    "adapter {name}: {what}: {function} raised",
                    failure,
                    name=self.name,
                    what=what,
                    function=fn.__name__,
                )
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
        raise BadPayload(
            f"'Type' must be 'pre-hook' or 'post-hook', not {kind!r}"
            + (" (unwind and event calls are protocol 2)" if kind in ("unwind", "event") else "")
        )
    if kind not in ("pre-hook", "post-hook", "unwind", "event"):
        raise BadPayload(f"'Type' must be 'pre-hook', 'post-hook', 'unwind' or 'event', not {kind!r}")
    if kind == "event":
        if not isinstance(payload.get("Event"), dict):
            raise BadPayload("'Event' must be an object")
        return _Call(version, kind, event=payload["Event"])
    request = request_from_call(payload, version)
    if kind == "pre-hook":
        return _Call(version, kind, request)
    resp = payload.get("ServerResponse")
    if kind == "unwind":
        failure = payload.get("Failure")
        if not isinstance(failure, dict) or not isinstance(payload.get("Stage"), str):
            raise BadPayload("an unwind call needs a 'Stage' string and a 'Failure' object")
        response = response_from_call(resp, version) if isinstance(resp, dict) else None
        return _Call(
            version,
            kind,
            request,
            failure=RequestFailure(
                payload["Stage"], failure.get("Adapter"), failure.get("Code"), failure.get("Message", ""), response
            ),
        )
    return _Call(version, kind, request, response_from_call(resp, version))


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
        raise ValueError(f"module {module_name!r} holds {len(found)} Adapter objects; name one as {module_name}:NAME")
    return found[0]
