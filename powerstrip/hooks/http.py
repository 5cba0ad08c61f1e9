"""Calling one adapter: the wire protocol (versions 1 and 2) over treq.

An adapter is anything that answers an HTTP POST. :class:`AdapterClient`
sends it the hook payload, bounds the call in time and size, and turns every
way it can go wrong into one of two exceptions:

- :class:`Refused` — the adapter answered a non-2xx status on purpose; its
  answer goes to the client as is.
- :class:`AdapterFault` — it is down, slow, or answered something that is not
  the protocol; the client gets a Docker-style 502/504 naming the adapter.
"""

from __future__ import annotations

import json
import weakref
from typing import Any
from urllib.parse import unquote

from hyperlink import EncodedURL
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet.endpoints import UNIXClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError, ConnectingCancelledError, DNSLookupError
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from powerstrip.config.spec import AdapterSpec
from powerstrip.hooks.flow import ServerResponse, error_response
from powerstrip.sdk.schema import validate
from powerstrip.wire.endpoints import tcp_endpoint

#: The JSON Schema each protocol 2 reply is checked against (powerstrip/sdk/schemas/v2/).
_V2_REPLY_SCHEMAS = {"ModifiedClientRequest": "v2/pre-hook-reply", "ModifiedServerResponse": "v2/post-hook-reply"}

#: An adapter reply larger than this is a fault (it would otherwise sit in memory).
DEFAULT_MAX_REPLY = 64 * 1024 * 1024


class Refused(Exception):
    """An adapter answered a non-2xx status: the chain stops with its answer."""

    def __init__(self, adapter: AdapterSpec, response: ServerResponse) -> None:
        super().__init__(f"adapter {adapter.name!r} refused with {response.code}")
        self.adapter = adapter
        self.response = response


class AdapterFault(Exception):
    """An adapter could not be used: down, too slow, or off-protocol."""

    def __init__(self, adapter: AdapterSpec, what: str, code: int = 502) -> None:
        super().__init__(f"powerstrip: adapter '{adapter.name}' ({adapter.url}): {what}")
        self.adapter = adapter
        self.code = code

    def response(self) -> ServerResponse:
        """The error the client gets: the Docker CLI prints its message."""
        return error_response(self.code, str(self))


class _TooLarge(Exception):
    pass


def _timed_out(result: Any, timeout: float) -> Failure:
    # Whatever cancelling produced (ResponseNeverReceived, ConnectingCancelledError),
    # the cause is the timeout.
    return Failure(defer.TimeoutError(timeout, "adapter call"))


class _ReplyReader(Protocol):
    """Reads an adapter's reply body, bounded in size; cancelling closes the connection."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.chunks: list[bytes] = []
        self.finished = defer.Deferred(lambda d: self.transport.loseConnection())

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            self.transport.loseConnection()
            if not self.finished.called:
                self.finished.errback(_TooLarge())
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure) -> None:
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.chunks))
        else:
            self.finished.errback(reason)


@implementer(IBodyProducer)
class _Payload:
    """A request body written at once (treq's file producer would wait a reactor turn)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> defer.Deferred:
        consumer.write(self.data)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _Endpoints:
    """Caches one client endpoint per adapter host, so no call builds its own.

    An ``http+unix://%2Frun%2Fa.sock/hook`` URL is handed to treq with a
    stand-in host name (treq would refuse ``%`` in a host), which maps back
    to the socket path here.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._tls = BrowserLikePolicyForHTTPS()
        self._cache: dict[tuple, Any] = {}
        self._sockets: dict[bytes, str] = {}  # stand-in host -> socket path

    def url_for(self, text: str) -> EncodedURL:
        """The URL treq is given for an adapter URL."""
        url = EncodedURL.from_text(text)
        if url.scheme != "http+unix":
            return url
        path = unquote(url.host)
        host = next((h for h, p in self._sockets.items() if p == path), b"unix-socket-%d" % len(self._sockets))
        self._sockets[host] = path
        return url.replace(host=host.decode())

    def endpointForURI(self, uri: Any) -> Any:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._cache.get(key)
        if endpoint is None:
            if uri.scheme == b"http+unix":
                endpoint = UNIXClientEndpoint(self._reactor, self._sockets[uri.host], timeout=10)
            else:
                endpoint = tcp_endpoint(self._reactor, uri.host.decode("ascii"), uri.port)
                if uri.scheme == b"https":
                    endpoint = wrapClientTLS(self._tls.creatorForNetloc(uri.host, uri.port), endpoint)
            self._cache[key] = endpoint
        return endpoint


def _unanswered_close(failure: Failure) -> bool:
    """Whether a request failed because its connection closed before any of
    the answer arrived (and not because the call was cancelled)."""
    if not failure.check(ResponseNeverReceived, RequestNotSent, RequestTransmissionFailed):
        return False
    reasons = getattr(failure.value, "reasons", [])
    return not any(r.check(defer.CancelledError) for r in reasons)


class _StalePooled(Exception):  # noqa: N818 -- a signal between the pool and the client, never shown
    """A request met a pooled connection the adapter had closed: it was never read."""


class _Reused:
    """A connection the pool had handed out before (kept alive since): a request
    that meets the adapter's close on it fails with :class:`_StalePooled`.

    An adapter may close an idle connection at any moment: one that closes
    after every reply without saying ``Connection: close`` (Python's
    ``http.server`` speaking HTTP/1.0) does so right after each answer, and
    the pool keeps the connection until it sees the close. A request written
    into that close was never read by the adapter, so sending it again is safe
    though the call is a POST; on a new connection there is no such race, so a
    close there is the adapter's fault and is not retried.
    """

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def request(self, request: Any) -> defer.Deferred:
        """Send ``request``; an unanswered close becomes :class:`_StalePooled`."""
        def stale(failure: Failure) -> Any:
            if _unanswered_close(failure):
                raise _StalePooled()
            return failure

        return self._connection.request(request).addErrback(stale)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


class _AdapterPool(HTTPConnectionPool):
    """The adapter calls' connection pool: it marks the connections it hands out again."""

    def __init__(self, reactor: Any, persistent: bool = True) -> None:
        super().__init__(reactor, persistent=persistent)
        self._handed_out: weakref.WeakSet[Any] = weakref.WeakSet()

    def getConnection(self, key: Any, endpoint: Any) -> defer.Deferred:
        """A connection for ``key``; one handed out before comes wrapped in :class:`_Reused`."""
        def mark(connection: Any) -> Any:
            if connection in self._handed_out:
                return _Reused(connection)
            self._handed_out.add(connection)
            return connection

        return super().getConnection(key, endpoint).addCallback(mark)


class AdapterClient:
    """Makes hook calls with treq over one persistent connection pool."""

    def __init__(self, reactor: Any, max_reply: int = DEFAULT_MAX_REPLY) -> None:
        self._reactor = reactor
        self.pool = _AdapterPool(reactor, persistent=True)
        # Hooks run on every matching Docker call: keep enough warm
        # connections per adapter that a burst does not pay for set-up.
        self.pool.maxPersistentPerHost = 16
        # Twisted's own retry covers idempotent methods only; _AdapterPool
        # retries the one case that is safe for a (non-idempotent) hook call.
        self.pool.retryAutomatically = False
        self._endpoints = _Endpoints(reactor)
        self._http = HTTPClient(Agent.usingEndpointFactory(reactor, self._endpoints, pool=self.pool))
        self.max_reply = max_reply
        self._urls: dict[str, EncodedURL] = {}

    def close(self) -> defer.Deferred:
        """Close the pooled connections (on shutdown, and at the end of tests)."""
        return self.pool.closeCachedConnections()

    def call(self, adapter: AdapterSpec, payload: dict, expect: str) -> defer.Deferred:
        """POST ``payload`` to ``adapter``; fire with the ``expect`` object of its
        reply (protocol 1), or its whole reply, schema-checked (protocol 2).

        Errbacks with :class:`Refused` or :class:`AdapterFault`.
        """
        if adapter.in_process is not None:
            # No HTTP hop, no JSON round trip: the reply object is used as is.
            d = self._in_process(adapter, payload)
            d.addCallback(self._check_object, adapter, expect)
        else:
            d = self.post(adapter, payload)
            d.addCallback(self._check, adapter, expect)
        return d

    def _in_process(self, adapter: AdapterSpec, payload: dict) -> defer.Deferred:
        d = adapter.in_process.handle(payload)
        d.addTimeout(adapter.timeout, self._reactor, onTimeoutCancel=_timed_out)
        return d.addErrback(self._fault, adapter)

    def post(self, adapter: AdapterSpec, payload: dict) -> defer.Deferred:
        """POST ``payload`` to ``adapter``, bounded by its timeout and the reply size limit.

        Fires with ``(status, content_type, body)`` whatever the status; errbacks
        with :class:`AdapterFault` when there is no usable answer. For tools
        that judge replies themselves (``powerstrip adapter-test``).
        """
        if adapter.in_process is not None:
            d = self._in_process(adapter, payload)
            return d.addCallback(lambda r: (r[0], "application/json", json.dumps(r[1]).encode()))
        url = self._urls.get(adapter.url)
        if url is None:
            url = self._urls[adapter.url] = self._endpoints.url_for(adapter.url)
        body = json.dumps(payload, separators=(",", ":")).encode()
        # A redirect is the adapter's answer like any other non-2xx status:
        # refused, not followed.
        d = self._send(url, body, self.pool.maxPersistentPerHost)
        d.addCallback(self._read, adapter)
        d.addTimeout(adapter.timeout, self._reactor, onTimeoutCancel=_timed_out)
        d.addErrback(self._fault, adapter)
        return d

    def _send(self, url: Any, body: bytes, retries: int) -> defer.Deferred:
        # A request that met a pooled connection the adapter had closed goes
        # again (each idle connection may be such a one; a new one never is).
        d = self._http.post(url, data=_Payload(body), headers={b"Content-Type": [b"application/json"]},
                            allow_redirects=False, unbuffered=True)
        if retries > 0:
            d.addErrback(lambda f: f.trap(_StalePooled) and self._send(url, body, retries - 1))
        return d

    def _read(self, response: Any, adapter: AdapterSpec) -> defer.Deferred:
        reader = _ReplyReader(self.max_reply)
        response.deliverBody(reader)
        ctype = response.headers.getRawHeaders(b"content-type", [None])[-1]
        return reader.finished.addCallback(
            lambda body: (response.code, ctype.decode("latin-1") if ctype else None, body))

    def _fault(self, failure: Any, adapter: AdapterSpec) -> None:
        if failure.check(Refused, AdapterFault, defer.CancelledError):
            return failure
        if failure.check(ConnectingCancelledError) or (failure.check(ResponseNeverReceived) and any(
                r.check(defer.CancelledError) for r in failure.value.reasons)):
            # Cancelled (a timeout was turned into TimeoutError before this):
            # the client went away. Not the adapter's fault, and not one that
            # ``failure: ignore`` may carry on from.
            raise defer.CancelledError()
        if failure.check(defer.TimeoutError):
            raise AdapterFault(adapter, f"no answer within {adapter.timeout:g}s", code=504)
        if failure.check(_TooLarge):
            raise AdapterFault(adapter, f"reply larger than {self.max_reply} bytes")
        if failure.check(ConnectError, DNSLookupError):
            raise AdapterFault(adapter, f"cannot connect: {failure.getErrorMessage()}")
        if failure.check(_StalePooled):
            raise AdapterFault(adapter, "connection lost before a reply (the adapter closed it)")
        if failure.check(ResponseNeverReceived):
            reasons = "; ".join(r.getErrorMessage() or r.type.__name__ for r in failure.value.reasons)
            raise AdapterFault(adapter, f"connection lost before a reply ({reasons})")
        raise AdapterFault(adapter, f"call failed: {failure.type.__name__}: {failure.getErrorMessage()}")

    def _check(self, result: tuple[int, str | None, bytes], adapter: AdapterSpec, expect: str) -> dict:
        code, ctype, body = result
        if not 200 <= code < 300:
            headers = [(b"Content-Type", ctype.encode("latin-1"))] if ctype else []
            raise Refused(adapter, ServerResponse(code, headers, body))
        try:
            reply = json.loads(body)
        except ValueError:
            raise AdapterFault(adapter, f"reply is not JSON: {body[:200]!r}") from None
        return self._unwrap(reply, adapter, expect)

    def _check_object(self, result: tuple[int, Any], adapter: AdapterSpec, expect: str) -> dict:
        code, reply = result
        if not 200 <= code < 300:
            body = json.dumps(reply).encode() + b"\n"
            raise Refused(adapter, ServerResponse(code, [(b"Content-Type", b"application/json")], body))
        return self._unwrap(reply, adapter, expect)

    @staticmethod
    def _unwrap(reply: Any, adapter: AdapterSpec, expect: str) -> dict:
        """The reply object a hook applies: protocol 1's ``expect`` object, or
        protocol 2's whole reply, checked against its JSON Schema."""
        if not isinstance(reply, dict):
            raise AdapterFault(adapter, "reply is not a JSON object")
        version = reply.get("PowerstripProtocolVersion")
        if version != adapter.protocol or isinstance(version, bool):
            raise AdapterFault(
                adapter, f"reply has PowerstripProtocolVersion {version!r}, expected {adapter.protocol}"
            )
        if adapter.protocol == 2:
            errors = validate(reply, _V2_REPLY_SCHEMAS[expect])
            if errors:
                raise AdapterFault(adapter, f"reply does not follow protocol 2: {errors[0]}")
            return reply
        inner = reply.get(expect)
        if not isinstance(inner, dict):
            raise AdapterFault(adapter, f"reply has no '{expect}' object")
        return inner
