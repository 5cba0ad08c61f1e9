"""The HTTP front: a twisted.web Site whose requests stream and can be hijacked.

Stock twisted.web buffers a whole request body before rendering, answers a
client's half-close by dropping the connection, and cannot switch protocols.
Docker needs all three, so:

- :class:`StreamingRequest` dispatches to the resource as soon as the head is
  parsed; body pieces then arrive through :meth:`StreamingRequest.body_sink`.
- :class:`PowerstripChannel` provides ``IHalfCloseableProtocol`` and can be
  :meth:`~PowerstripChannel.hijack`-ed: from then on its bytes go to a
  :class:`~powerstrip.splice.Splice` instead of the HTTP parser.

The channel also owns the client-side limits: the size of a request head
(413), and the time a client may keep Powerstrip waiting (idle, or dribbling
a head or body: 408 or a close). Time spent answering is never held against
the client, so a quiet ``logs -f``, ``events`` or hijacked stream stays open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.python.failure import Failure
from twisted.web import http, server
from zope.interface import implementer

from powerstrip.flow import error_response
from powerstrip.splice import Splice

#: dockerd (Go's net/http) accepts request heads up to 1 MiB; registry
#: credentials in ``X-Registry-Config`` can be far larger than twisted.web's 16 KiB.
DEFAULT_MAX_HEAD = 1024 * 1024
#: How long a client may keep Powerstrip waiting for a request (or the next one).
DEFAULT_CLIENT_TIMEOUT = 120.0


class StreamingRequest(server.Request):
    """A request that renders at the end of its head and streams its body."""

    # Add no Content-Type the daemon did not send (``logs`` has none).
    defaultContentType = None

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.body_sink: Callable[[bytes], None] | None = None
        self.body_end: Callable[[], None] | None = None
        self.body_complete = False
        self._early: list[bytes] = []
        #: Called with a Failure when a body callback raised (a bug, not bad input).
        self.on_error: Callable[[Failure], None] = self.processingFailed
        self.on_client_eof: Callable[[], None] | None = None

    def begin(self, command: bytes, uri: bytes, version: bytes) -> None:
        """The head is parsed: set the request line (body may still be coming)."""
        self.method, self.uri, self.clientproto = command, uri, version
        self.path = uri.split(b"?", 1)[0]
        self.args = {}
        self.site = self.channel.site
        self.prepath = []
        self.postpath = self.path[1:].split(b"/")

    def gotLength(self, length: int | None) -> None:
        # No content file: the body is streamed (or buffered by the exchange).
        self.content = None
        try:
            self.render(self.site.getResourceFor(self))
        except BaseException:
            self.processingFailed(Failure())

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_sink is None:
            self._early.append(data)
            return
        try:
            self.body_sink(data)
        except Exception:
            self.on_error(Failure())

    def client_eof(self) -> None:
        """The client shut its write side after sending this whole request."""
        if self.on_client_eof is not None:
            self.on_client_eof()

    def take_early(self) -> list[bytes]:
        """Body pieces that arrived before a sink was attached."""
        early, self._early = self._early, []
        return early

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # Called by the channel when the body is complete; rendering began long ago.
        self.body_complete = True
        if self.body_end is not None:
            try:
                self.body_end()
            except Exception:
                self.on_error(Failure())


@implementer(IHalfCloseableProtocol)
class PowerstripChannel(http.HTTPChannel):
    """An HTTP channel that honours half-close and can turn into a raw splice."""

    #: Set per connection by the site (``--max-header-size``): the largest
    #: request line plus headers, and so also the longest single line.
    totalHeadersSize = MAX_LENGTH = DEFAULT_MAX_HEAD

    def __init__(self) -> None:
        super().__init__()
        self.splice: Splice | None = None
        self.read_eof = False
        #: Powerstrip stopped reading this client (waiting for an adapter or dockerd).
        self.reading_paused = False
        self._head_deadline: Any = None
        self._host: Any = None
        self._peer: Any = None

    def getHost(self) -> Any:
        # twisted.web asks for it on every request: one getsockname() per connection.
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def getPeer(self) -> Any:
        if self._peer is None:
            self._peer = super().getPeer()
        return self._peer

    def allHeadersReceived(self) -> None:
        self._cancel_head_deadline()
        self.requests[-1].begin(self._command, self._path, self._version)
        super().allHeadersReceived()

    # -- reading, and the client's limits -------------------------------------------

    def pause_reading(self) -> None:
        """Stop reading from the client (its time does not count meanwhile)."""
        self.reading_paused = True
        self.transport.pauseProducing()

    def resume_reading(self) -> None:
        """Read from the client again."""
        self.reading_paused = False
        self.transport.resumeProducing()

    def _reading_head(self) -> bool:
        return self._transferDecoder is None and not self._handlingRequest and self.splice is None

    def lineReceived(self, line: bytes) -> None:
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._head_too_large()
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._head_too_large()

    def _head_too_large(self) -> None:
        self.reject(413, f"powerstrip: request head larger than {self.totalHeadersSize} bytes "
                         "(see --max-header-size)")

    def _respondToBadRequestAndDisconnect(self) -> None:
        # twisted.web's answer to a malformed request line or header, or to
        # ambiguous framing (Content-Length with Transfer-Encoding, ...).
        self.reject(400, "powerstrip: malformed or ambiguous HTTP request (not forwarded)")

    def reject(self, code: int, message: str) -> None:
        """Answer ``code`` with a Docker-style JSON error and close; nothing
        of this request was or will be forwarded."""
        self._cancel_head_deadline()
        if any(r.startedWriting for r in self.requests):
            self.transport.abortConnection()  # mid-answer: a clean error is impossible
            return
        body = error_response(code, message).body
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (code, http.RESPONSES.get(code, b"Error"), len(body), body))
        self.persistent = False
        self.dataReceived = self.lineReceived = lambda *args: None  # type: ignore[method-assign]
        self.loseConnection()

    def timeoutConnection(self) -> None:
        """``--client-timeout`` passed with nothing from the client."""
        if self.reading_paused or any(r.startedWriting for r in self.requests):
            # Powerstrip is the one waiting (adapter, dockerd) or answering.
            self.resetTimeout()
            return
        if self.requests or self._head_deadline is not None:
            self.reject(408, "powerstrip: the request did not arrive in time (see --client-timeout)")
            return
        super().timeoutConnection()  # an idle keep-alive connection: close quietly

    def _start_head_deadline(self) -> None:
        # The idle timer restarts with every byte, so a client that sends one
        # every few seconds would hold the connection for ever: the whole head
        # must arrive within one timeout (slowloris).
        if self.timeOut and self._head_deadline is None:
            self._head_deadline = self.callLater(self.timeOut, self._head_overdue)

    def _head_overdue(self) -> None:
        self._head_deadline = None
        self.reject(408, "powerstrip: the request head did not arrive in time (see --client-timeout)")

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            if self._head_deadline.active():
                self._head_deadline.cancel()
            self._head_deadline = None

    def body_pending(self) -> bool:
        """Whether the current request's body is still being received."""
        return self._transferDecoder is not None and not self._handlingRequest

    def has_buffered_input(self) -> bool:
        """Whether the client sent bytes past the current request (held back)."""
        return any(self._dataBuffer)

    def hijack(self, splice: Splice) -> None:
        """From now on, every byte from the client goes to ``splice``."""
        self.splice = splice
        self.setTimeout(None)
        self._savedTimeOut = None
        buffered, self._dataBuffer = b"".join(self._dataBuffer), []
        self._handlingRequest = True
        # Pipelined bytes the parser held back are stream bytes (e.g. stdin).
        if buffered:
            splice.client_data(buffered)
        if self.read_eof:
            splice.client_eof()  # the client finished sending before the stream began
        elif self._networkProducer is not None:
            self._networkProducer.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.splice is not None:
            self.splice.client_data(data)
            return
        if self._reading_head():
            self._start_head_deadline()
        super().dataReceived(data)

    def readConnectionLost(self) -> None:
        """The client shut its write side: EOF for a splice, else end politely."""
        self.read_eof = True
        if self.splice is not None:
            self.splice.client_eof()
        elif not self.requests or self.body_pending():
            # Idle, or a body cut short: nothing more can be answered usefully.
            self.transport.loseConnection()
        else:
            # A request is being answered: finish it, then close. dockerd gets
            # the same EOF (as a client talking to it directly would give it),
            # so a call the client abandoned (`events`, `logs -f`) ends there too.
            self.persistent = False
            for request in self.requests:
                request.client_eof()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        self._cancel_head_deadline()
        if self.splice is not None:
            self.setTimeout(None)
            self.splice.client_lost()
            for request in self.requests:
                request._disconnected = True
            return
        super().connectionLost(reason)


class PowerstripSite(server.Site):
    """A Site of :class:`PowerstripChannel` and :class:`StreamingRequest`.

    ``timeout`` is ``--client-timeout`` (seconds; ``None``: never);
    ``max_head``, the largest request head accepted.
    """

    protocol = PowerstripChannel
    requestFactory = StreamingRequest

    def __init__(self, resource: Any, timeout: float | None = DEFAULT_CLIENT_TIMEOUT,
                 max_head: int = DEFAULT_MAX_HEAD, **kw: Any) -> None:
        super().__init__(resource, timeout=timeout, **kw)
        self.max_head = max_head

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        channel.totalHeadersSize = channel.MAX_LENGTH = self.max_head
        return channel

    def log(self, request: Any) -> None:
        # The exchange writes its own access-log line (with hooks and timings).
        pass
