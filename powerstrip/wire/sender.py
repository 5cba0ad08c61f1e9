"""Writing to a connection at once, while nothing waits in its transport's buffer.

A Twisted transport's ``write`` queues the bytes and asks the reactor for a
writable event: two ``epoll_ctl`` calls and one more turn of the event loop
before ``send`` runs, for every write. A relay answering small requests writes
twice a request (the request to dockerd, the answer to the client), so that is
most of what a write costs. The socket almost always has room, so a
:class:`Sender` calls ``send`` itself; the first time the socket takes less
than all of it (or fails), the rest goes to the transport, and from then on
every write does, for the life of the connection: bytes already in the
kernel are ahead of anything queued, so order is kept without looking into the
transport's buffer.

Only plain TCP and unix sockets are written to directly: a TLS transport's
handle is its TLS connection, which must not be written to behind its back.
A TCP socket written to directly gets ``TCP_NODELAY`` (as Go's net/http, and so
dockerd, sets on every connection): without it, the second of two writes in a
row (a response head, then its first chunk) waits for the peer's delayed ACK,
up to 40 ms, because no reactor turn joins them into one send any more.
And whoever writes through a sender writes what belongs together in one
call (a request head and the body bytes at hand): dockerd reads an attach's
body with its head and drops it, but one that arrives apart from the head
becomes the container's first stdin bytes.

:class:`SendingEndpoint` gives the same to a client protocol Powerstrip did
not write: twisted.web's HTTP client under treq, for the adapter calls.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint, ISystemHandle, ITCPTransport
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import implementer

__all__ = ["SendingEndpoint", "Sender"]


class Sender:
    """Writes to ``transport``, sending at once while it has nothing queued."""

    __slots__ = ("transport", "_socket")

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        handle = transport.getHandle() if ISystemHandle.providedBy(transport) else None
        self._socket: socket.socket | None = handle if isinstance(handle, socket.socket) else None
        if self._socket is not None and ITCPTransport.providedBy(transport):
            transport.setTcpNoDelay(True)

    @property
    def direct(self) -> bool:
        """Whether writes still go straight to the socket."""
        return self._socket is not None

    def write(self, data: bytes) -> None:
        """Send ``data``: straight to the socket if it takes it all, else the rest through the transport."""
        sock = self._socket
        if sock is not None:
            transport = self.transport
            if transport.connected and not transport.disconnecting:
                try:
                    sent = sock.send(data)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    # The peer is gone: the transport finds out on its own, and drops the bytes.
                    sent = 0
                if sent == len(data):
                    return
                data = data[sent:]
            self._socket = None
        self.transport.write(data)

    def queue(self) -> None:
        """From now on, every write goes through the transport (others write to it directly now)."""
        self._socket = None


class _SendingWrapper(ProtocolWrapper):
    """Stands between a protocol we did not write and its transport: its writes go through a :class:`Sender`."""

    _sender: Sender

    def makeConnection(self, transport: Any) -> None:
        self._sender = Sender(transport)
        super().makeConnection(transport)  # type: ignore[no-untyped-call]  # unannotated in Twisted

    def write(self, data: bytes) -> None:
        self._sender.write(data)

    def writeSequence(self, data: Any) -> None:
        self._sender.write(b"".join(data))


class _SendingFactory(WrappingFactory):
    protocol = _SendingWrapper
    noisy = False  # one per connection: no "Starting factory" line for each


@implementer(IStreamClientEndpoint)
class SendingEndpoint:
    """A client endpoint whose connections' writes go through a :class:`Sender`.

    For clients whose protocol is not ours (twisted.web's HTTP client under
    treq, for the adapter calls, writes a request's head and body each a
    reactor turn later): the protocol it connects is the one the caller's
    factory built, writing to a stand-in transport.
    """

    def __init__(self, endpoint: Any) -> None:
        self._endpoint = endpoint

    def connect(self, factory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        """Connect as the wrapped endpoint does; fires with ``factory``'s protocol."""
        connected: defer.Deferred[Any] = self._endpoint.connect(_SendingFactory(factory))  # type: ignore[no-untyped-call]
        return connected.addCallback(lambda wrapper: wrapper.wrappedProtocol)
