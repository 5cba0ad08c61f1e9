"""The HTTP front: a twisted.web Site whose requests stream and can be hijacked.

Stock twisted.web buffers a whole request body before rendering, answers a
client's half-close by dropping the connection, and cannot switch protocols.
Docker needs all three, so:

- :class:`StreamingRequest` dispatches to the resource as soon as the head is
  parsed; body pieces then arrive through :meth:`StreamingRequest.body_sink`.
- :class:`PowerstripChannel` provides ``IHalfCloseableProtocol`` and can be
  :meth:`~PowerstripChannel.hijack`-ed: from then on its bytes go to a
  :class:`~powerstrip.splice.Splice` instead of the HTTP parser.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.python.failure import Failure
from twisted.web import http, server
from zope.interface import implementer

from powerstrip.splice import Splice


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

    def __init__(self) -> None:
        super().__init__()
        self.splice: Splice | None = None
        self.read_eof = False
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
        self.requests[-1].begin(self._command, self._path, self._version)
        super().allHeadersReceived()

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
        else:
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
        if self.splice is not None:
            self.setTimeout(None)
            self.splice.client_lost()
            for request in self.requests:
                request._disconnected = True
            return
        super().connectionLost(reason)


class PowerstripSite(server.Site):
    """A Site of :class:`PowerstripChannel` and :class:`StreamingRequest`."""

    protocol = PowerstripChannel
    requestFactory = StreamingRequest

    def log(self, request: Any) -> None:
        # The exchange writes its own access-log line (with hooks and timings).
        pass
