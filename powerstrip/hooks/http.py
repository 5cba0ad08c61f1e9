"""Reaching an adapter: one POST over treq (pooled), or one call in process.

An adapter is anything that answers an HTTP POST. :class:`AdapterClient`
sends it a payload, bounds the call in time and size, and turns every way
it can fail to answer into :class:`~powerstrip.hooks.interface.AdapterFault`
(down, too slow, too big: the client gets a Docker-style 502/504 naming the
adapter). What an answer means is its protocol's business
(:mod:`powerstrip.hooks.protocols`, :mod:`powerstrip.hooks.authz`,
:mod:`powerstrip.hooks.events`): this module knows no protocol.
"""

from __future__ import annotations

import json
import weakref
from typing import Any
from urllib.parse import unquote

from hyperlink import EncodedURL
from treq.client import HTTPClient
from treq.cookies import IndexableCookieJar
from twisted.internet import defer
from twisted.internet.endpoints import UNIXClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError, ConnectingCancelledError, DNSLookupError
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import (  # type: ignore[attr-defined]  # RequestNotSent: public, missing from __all__
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from powerstrip.config.spec import AdapterSpec
from powerstrip.hooks.interface import AdapterFault
from powerstrip.wire.endpoints import tcp_endpoint
from powerstrip.wire.sender import SendingEndpoint

#: Every hook call's headers. treq hands a ``Headers`` through as it is; each
#: agent under it that adds a header (``Host``, ``Accept-Encoding``) copies first.
_JSON = Headers({b"Content-Type": [b"application/json"]})

#: An adapter reply larger than this is a fault (it would otherwise sit in memory).
DEFAULT_MAX_REPLY = 64 * 1024 * 1024


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
        self.finished: defer.Deferred[bytes] = defer.Deferred(lambda d: self._close())

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            self._close()
            if not self.finished.called:
                self.finished.errback(_TooLarge())
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
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

    def startProducing(self, consumer: Any) -> defer.Deferred[None]:
        consumer.write(self.data)
        return defer.succeed(None)

    # Written at once: there is nothing to pause, resume or stop.
    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _NoCookies(IndexableCookieJar):
    """A cookie jar that keeps nothing: hook calls are stateless.

    An adapter's ``Set-Cookie`` must not change what a later call (made for
    another client's request) sends. And treq's jar runs ``http.cookiejar``'s
    policy on every call: with this jar and :class:`_URI`, a call through
    treq went from 0.32 to 0.27 ms at p50 (``bench/hook_client.py``).
    """

    def add_cookie_header(self, request: Any) -> None:
        """Add no ``Cookie`` header."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        """Keep no cookie the adapter set."""


class _URI(EncodedURL):
    """An adapter URL already in URI form, which treq need not convert on every call.

    treq calls ``to_uri()`` on each request's URL, and hyperlink runs every
    host label through IDNA each time: the largest piece of treq's own time
    per call in a profile.
    """

    @classmethod
    def of(cls, url: EncodedURL) -> _URI:
        """``url`` in URI form, converted this once."""
        u = url.to_uri()
        return cls(u.scheme, u.host, u.path, u.query, u.fragment, u.port, u.rooted, u.userinfo, u.uses_netloc)

    def to_uri(self) -> EncodedURL:
        """Itself: it is in URI form."""
        return self


class _Endpoints:
    """Caches one client endpoint per adapter host, so no call builds its own.

    An ``http+unix://%2Frun%2Fa.sock/hook`` URL is handed to treq with a
    stand-in host name (treq would refuse ``%`` in a host), which maps back
    to the socket path here.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._tls = BrowserLikePolicyForHTTPS()
        self._cache: dict[tuple[bytes, bytes, int], Any] = {}
        self._sockets: dict[bytes, str] = {}  # stand-in host -> socket path

    def url_for(self, text: str) -> EncodedURL:
        """The URL treq is given for an adapter URL."""
        url = EncodedURL.from_text(text)
        if url.scheme != "http+unix":
            return _URI.of(url)
        path = unquote(url.host)
        host = next((h for h, p in self._sockets.items() if p == path), b"unix-socket-%d" % len(self._sockets))
        self._sockets[host] = path
        return _URI.of(url.replace(host=host.decode()))

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
            # A hook call's two small writes (head, body) would each wait a reactor turn.
            endpoint = self._cache[key] = SendingEndpoint(endpoint)
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

    def request(self, request: Any) -> defer.Deferred[Any]:
        """Send ``request``; an unanswered close becomes :class:`_StalePooled`."""

        def stale(failure: Failure) -> Any:
            if _unanswered_close(failure):
                raise _StalePooled()
            return failure

        sent: defer.Deferred[Any] = self._connection.request(request)
        return sent.addErrback(stale)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


class _AdapterPool(HTTPConnectionPool):
    """The adapter calls' connection pool: it marks the connections it hands out again."""

    def __init__(self, reactor: Any, persistent: bool = True) -> None:
        super().__init__(reactor, persistent=persistent)  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self._handed_out: weakref.WeakSet[Any] = weakref.WeakSet()

    def getConnection(self, key: Any, endpoint: Any) -> defer.Deferred[Any]:
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
        self._http = HTTPClient(
            Agent.usingEndpointFactory(reactor, self._endpoints, pool=self.pool), cookiejar=_NoCookies()
        )
        self.max_reply = max_reply
        self._urls: dict[str, EncodedURL] = {}

    def url_for(self, text: str) -> EncodedURL:
        """The URL treq is given for adapter URL ``text`` (made once per adapter URL).

        It is in URI form already (an international host name in IDNA), so
        treq's conversion on every call is none; an ``http+unix`` URL names a
        stand-in host that maps back to its socket.
        """
        url = self._urls.get(text)
        if url is None:
            url = self._urls[text] = self._endpoints.url_for(text)
        return url

    def close(self) -> defer.Deferred[Any]:
        """Close the pooled connections (on shutdown, and at the end of tests)."""
        closed: defer.Deferred[Any] = self.pool.closeCachedConnections()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        return closed

    def call_in_process(self, adapter: AdapterSpec, payload: dict[str, Any]) -> defer.Deferred[Any]:
        """Hand ``payload`` to ``python:`` adapter ``adapter``, bounded by its timeout.

        Fires with ``(status, reply object)``: no HTTP hop, no JSON round trip.
        Errbacks with :class:`AdapterFault` when it fails or takes too long.
        """
        d: defer.Deferred[Any] = adapter.in_process.handle(payload)
        d.addTimeout(adapter.timeout, self._reactor, onTimeoutCancel=_timed_out)
        return d.addErrback(self._fault, adapter)

    def post(self, adapter: AdapterSpec, payload: dict[str, Any]) -> defer.Deferred[Any]:
        """POST ``payload`` to ``adapter``, bounded by its timeout and the reply size limit.

        Fires with ``(status, content_type, body)`` whatever the status; errbacks
        with :class:`AdapterFault` when there is no usable answer. A ``python:``
        adapter's reply object comes back as JSON, so every caller reads one form.
        """
        if adapter.in_process is not None:
            d = self.call_in_process(adapter, payload)
            return d.addCallback(lambda r: (r[0], "application/json", json.dumps(r[1]).encode()))
        url = self.url_for(adapter.url)
        body = json.dumps(payload, separators=(",", ":")).encode()
        # A redirect is the adapter's answer like any other non-2xx status:
        # refused, not followed.
        d = self._send(url, body, self.pool.maxPersistentPerHost)
        d.addCallback(self._read, adapter)
        d.addTimeout(adapter.timeout, self._reactor, onTimeoutCancel=_timed_out)
        d.addErrback(self._fault, adapter)
        return d

    def _send(self, url: Any, body: bytes, retries: int) -> defer.Deferred[Any]:
        # A request that met a pooled connection the adapter had closed goes
        # again (each idle connection may be such a one; a new one never is).
        d: defer.Deferred[Any] = self._http.post(
            url, data=_Payload(body), headers=_JSON, allow_redirects=False, unbuffered=True
        )
        if retries > 0:
            d.addErrback(lambda f: f.trap(_StalePooled) and self._send(url, body, retries - 1))
        return d

    def _read(self, response: Any, adapter: AdapterSpec) -> defer.Deferred[Any]:
        reader = _ReplyReader(self.max_reply)
        response.deliverBody(reader)
        ctype = response.headers.getRawHeaders(b"content-type", [None])[-1]
        return reader.finished.addCallback(
            lambda body: (response.code, ctype.decode("latin-1") if ctype else None, body)
        )

    def _fault(self, failure: Failure, adapter: AdapterSpec) -> Failure:
        if failure.check(AdapterFault, defer.CancelledError):
            return failure
        error = failure.value
        if failure.check(ConnectingCancelledError) or (
            isinstance(error, ResponseNeverReceived) and any(r.check(defer.CancelledError) for r in error.reasons)
        ):
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
        if isinstance(error, ResponseNeverReceived):
            reasons = "; ".join(r.getErrorMessage() or type(r.value).__name__ for r in error.reasons)
            raise AdapterFault(adapter, f"connection lost before a reply ({reasons})")
        raise AdapterFault(adapter, f"call failed: {type(error).__name__}: {failure.getErrorMessage()}")
