"""Splicing: joining the client's and dockerd's raw transports after a hijack.

After ``101 UPGRADED`` (``attach``, ``exec``, BuildKit ``h2c``) the HTTP
connection is a bidirectional byte stream. Bytes are relayed unchanged, each
side's transport throttles the other (a slow reader pauses the far writer),
and an end-of-file travels as a half-close: the client's stdin EOF shuts
dockerd's write side while output keeps flowing back until dockerd closes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IHalfCloseableDescriptor

if TYPE_CHECKING:
    from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer, ITCPTransport

    class IStreamTransport(ITCPTransport, IConsumer, IPushProducer):
        """For mypy only: a connection's transport as Powerstrip uses it, on either side (TCP, unix
        socket or TLS: no one Twisted interface says all of it)."""

        #: The registered producer, if any (FileDescriptor's and TLS's attribute).
        producer: IProducer | None


def half_close(transport: Any) -> bool:
    """Shut ``transport``'s write side, if it can; returns whether it did.

    The producer feeding it is unregistered first: it has nothing more to
    send, and a transport whose producer is paused when its buffer drains
    resumes the producer instead of shutting its write side.
    """
    if getattr(transport, "producer", None) is not None:
        transport.unregisterProducer()
    if IHalfCloseableDescriptor.providedBy(transport) or hasattr(transport, "loseWriteConnection"):
        try:
            transport.loseWriteConnection()
            return True
        except (AttributeError, NotImplementedError):
            pass
    return False


class Splice:
    """A bidirectional relay between two connected transports.

    The owners of the transports feed it events (``client_*`` from the HTTP
    channel, ``upstream_*`` from the dockerd connection).
    """

    def __init__(self, client: Any, upstream: Any, on_close: Callable[[Splice], None] | None = None) -> None:
        self.client = client
        self.upstream = upstream
        self.bytes_in = 0  # client → dockerd
        self.bytes_out = 0  # dockerd → client
        self._client_eof = False
        self._upstream_eof = False
        self._closed = False
        self._on_close = on_close
        # Flow control: when one side cannot keep up writing, stop reading the other.
        for consumer, producer in ((client, upstream), (upstream, client)):
            if getattr(consumer, "producer", None) is not None:
                consumer.unregisterProducer()
            consumer.registerProducer(producer, True)

    def client_data(self, data: bytes) -> None:
        """Bytes from the client (stdin, h2c frames) go to dockerd unchanged."""
        self.bytes_in += len(data)
        self.upstream.write(data)

    def upstream_data(self, data: bytes) -> None:
        """Bytes from dockerd (output, frames) go to the client unchanged."""
        self.bytes_out += len(data)
        self.client.write(data)

    def client_eof(self) -> None:
        """The client shut its write side (stdin EOF): pass the EOF to dockerd."""
        if self._client_eof:
            return
        self._client_eof = True
        # A transport that cannot half-close (TLS) keeps the stream open
        # instead; dockerd ends it when the program exits.
        half_close(self.upstream)
        self._maybe_done()

    def upstream_eof(self) -> None:
        """dockerd shut its write side: the output is complete."""
        if self._upstream_eof:
            return
        self._upstream_eof = True
        if not half_close(self.client):
            self.close()
            return
        self._maybe_done()

    def client_lost(self) -> None:
        """The client connection is gone entirely."""
        self._client_eof = self._upstream_eof = True
        self.close()

    def upstream_lost(self) -> None:
        """The dockerd connection is gone entirely."""
        self._client_eof = self._upstream_eof = True
        self.close()

    def _maybe_done(self) -> None:
        if self._client_eof and self._upstream_eof:
            self.close()

    def close(self) -> None:
        """Close both transports (after flushing what they hold)."""
        if self._closed:
            return
        self._closed = True
        for t in (self.client, self.upstream):
            if getattr(t, "producer", None) is not None:
                t.unregisterProducer()
            t.loseConnection()
        if self._on_close is not None:
            self._on_close(self)
