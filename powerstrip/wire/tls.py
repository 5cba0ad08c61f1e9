"""TLS on both ends: a client-certificate listener, and TLS to dockerd.

Both are configured the way Docker configures them (``--tlsverify
--tlscacert --tlscert --tlskey`` on the listening side, ``DOCKER_TLS_VERIFY``
and ``DOCKER_CERT_PATH`` with ``ca.pem``/``cert.pem``/``key.pem`` towards the
daemon), and both run over :class:`HalfCloseableTLS`: Twisted's TLS transport
turns a peer's end-of-input into a full close and cannot shut only its own
write side, but ``docker run -i`` over TLS relies on exactly that (stdin EOF
travels one way while output keeps flowing back).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from OpenSSL.crypto import FILETYPE_PEM
from OpenSSL.SSL import Error, WantReadError, ZeroReturnError
from twisted.internet import defer, ssl
from twisted.internet.error import VerifyError
from twisted.internet.interfaces import IHalfCloseableProtocol, ITransport
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory, _representsEOF
from twisted.python.failure import Failure
from zope.interface import implementer

#: Log namespaces are part of the interface (log filters name them): kept across moves.
log = Logger(namespace="powerstrip.tls")

_IGNORE_UNEXPECTED_EOF = getattr(SSL, "OP_IGNORE_UNEXPECTED_EOF", 0)


class TLSConfigError(ValueError):
    """A certificate or key file is missing or unreadable."""


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise TLSConfigError(f"{what} {path}: {e.strerror}") from None


def _pem_certs(data: bytes, path: str | Path) -> list[ssl.Certificate]:
    marker = b"-----BEGIN CERTIFICATE-----"
    blocks = [marker + part for part in data.split(marker)[1:]]
    if not blocks:
        raise TLSConfigError(f"{path}: no PEM certificate in it")
    try:
        return [ssl.Certificate.loadPEM(block) for block in blocks]
    except Error as e:
        raise TLSConfigError(f"{path}: not a valid PEM certificate ({e})") from None


def _private_certificate(
    cert_path: str | Path, key_path: str | Path
) -> tuple[ssl.PrivateCertificate, list[ssl.Certificate]]:
    """The certificate (plus any chain after it in the file) and its key."""
    certs = _pem_certs(_read(cert_path, "certificate"), cert_path)
    key = _read(key_path, "key")
    try:
        private = ssl.PrivateCertificate.fromCertificateAndKeyPair(certs[0], ssl.KeyPair.load(key, FILETYPE_PEM))
    except Error as e:
        raise TLSConfigError(f"{key_path}: not a usable PEM key ({e})") from None
    except VerifyError:
        raise TLSConfigError(f"{key_path} does not fit {cert_path}: not the key of that certificate") from None
    return private, certs[1:]


@dataclass(frozen=True)
class ListenerTLS:
    """``--tls``/``--tlsverify`` for Powerstrip's TCP listeners, as dockerd takes them."""

    cert: str
    key: str
    #: With a CA, a client must present a certificate it signed (``--tlsverify``).
    ca: str | None = None

    def options(self) -> ssl.CertificateOptions:
        """Server-side TLS options (TLS 1.2 at least, like dockerd)."""
        private, chain = _private_certificate(self.cert, self.key)
        kw: dict[str, Any] = {}
        if self.ca is not None:
            # A client without a certificate from this CA fails the handshake,
            # before a single request byte is read.
            kw = {
                "verify": True,
                "requireCertificate": True,
                "caCerts": [c.original for c in _pem_certs(_read(self.ca, "CA certificate"), self.ca)],
            }
        options = ssl.CertificateOptions(
            privateKey=private.privateKey.original,
            certificate=private.original,
            extraCertChain=[c.original for c in chain],
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
            **kw,
        )
        try:
            options.getContext()  # checks that the key belongs to the certificate
        except Error as e:
            raise TLSConfigError(f"{self.key} does not fit {self.cert} ({e})") from None
        return options

    def wrap(self, factory: Any) -> TLSMemoryBIOFactory:
        """``factory`` behind TLS, for a plain TCP listening endpoint."""
        return HalfCloseableTLSFactory(self.options(), False, factory)


@dataclass(frozen=True)
class DockerTLS:
    """TLS towards dockerd, configured like the docker CLI.

    ``DOCKER_TLS_VERIFY`` (any non-empty value) turns on TLS and verifies the
    daemon's certificate against ``$DOCKER_CERT_PATH/ca.pem``; the client
    certificate is ``cert.pem``/``key.pem`` in the same directory.
    """

    cert_path: str

    def _file(self, name: str) -> Path:
        return Path(self.cert_path, name)

    def creator(self, hostname: str) -> Any:
        """A client connection creator for ``hostname`` (checked against the certificate)."""
        client = None
        if self._file("cert.pem").exists() or self._file("key.pem").exists():
            client, _ = _private_certificate(self._file("cert.pem"), self._file("key.pem"))
        ca = _pem_certs(_read(self._file("ca.pem"), "CA certificate"), self._file("ca.pem"))
        try:
            return ssl.optionsForClientTLS(
                hostname,
                trustRoot=ssl.trustRootFromCertificates(ca),
                clientCertificate=client,
                extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
            )
        except Error as e:
            raise TLSConfigError(f"{self._file('key.pem')} does not fit {self._file('cert.pem')} ({e})") from None


def describe(failure: Failure) -> str:
    """A connection failure in words; OpenSSL's error lists made readable."""
    value = failure.value  # what failure.check(Error) looks at, narrowed by isinstance
    if isinstance(value, Error) and value.args and isinstance(value.args[0], list):
        reasons = "; ".join(r[-1] for r in value.args[0] if r and r[-1]) or "unknown error"
        return f"TLS error: {reasons}"
    return failure.getErrorMessage()


def default_cert_path() -> str:
    """Where the docker CLI looks for certificates: ``~/.docker``."""
    return str(Path.home() / ".docker")


class TLSClientEndpoint:
    """A client endpoint that runs TLS (half-closeable) over another endpoint."""

    def __init__(self, creator: Any, wrapped: Any) -> None:
        self._creator = creator
        self._wrapped = wrapped

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        """Connect, and fire with ``factory``'s protocol once TCP is up."""
        tls_factory = HalfCloseableTLSFactory(self._creator, True, factory)
        d: defer.Deferred[Any] = self._wrapped.connect(tls_factory)
        return d.addCallback(lambda tls: tls.wrappedProtocol)


@implementer(IHalfCloseableProtocol)
class HalfCloseableTLS(BufferingTLSTransport):
    """Twisted's TLS transport, able to close one direction at a time.

    - The peer's end of input (a ``close_notify`` alert, or a TCP FIN as the
      docker CLI sends for stdin EOF) reaches a half-closeable wrapped
      protocol as ``readConnectionLost``, and output keeps flowing.
    - :meth:`loseWriteConnection` sends a FIN (no ``close_notify``, see
      :meth:`_send_fin`) while reading goes on.
    """

    factory: HalfCloseableTLSFactory
    transport: ITransport  # set by makeConnection, before any other call
    _peer_done = False  # no more application data will arrive
    _tcp_read_eof = False
    _write_shut = False
    _shut_pending = False

    def makeConnection(self, transport: Any) -> None:
        super().makeConnection(transport)  # type: ignore[no-untyped-call]  # unannotated in Twisted
        # OpenSSL 3 fails the whole connection (and alerts the peer) on a
        # FIN without close_notify; Go, and so Docker, take it as end of input.
        if self._tlsConnection is not None:
            self._tlsConnection.set_options(_IGNORE_UNEXPECTED_EOF)

    # -- the peer's direction ---------------------------------------------------

    def _flushReceiveBIO(self) -> None:
        # Twisted's loop, except that the end of the peer's data is a
        # half-close for a protocol that can take one (the base class tears the
        # whole connection down).
        while not self._lostTLSConnection and not self._peer_done:
            try:
                data = self._tlsConnection.recv(2**15)
            except WantReadError:
                break
            except ZeroReturnError:
                self._input_ended()
            except Error as e:
                if self._tcp_read_eof and _representsEOF(e):
                    self._input_ended()  # a FIN at a record boundary: the docker CLI's CloseWrite
                else:
                    self._tlsShutdownFinished(Failure())
            else:
                if not self._aborted:
                    ProtocolWrapper.dataReceived(self, data)
        if self._tlsConnection is not None:  # the EOF may have ended the connection already
            self._flushSendBIO()  # type: ignore[no-untyped-call]  # unannotated in Twisted

    def _input_ended(self) -> None:
        self._peer_done = True
        if IHalfCloseableProtocol.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.readConnectionLost()
        else:
            self._shutdownTLS()
            self._tlsShutdownFinished(None)

    def _tlsShutdownFinished(self, reason: Failure | None) -> None:
        if reason is not None and not self._handshakeDone and not self.factory.is_client:
            # A client refused (no certificate, wrong CA, not TLS at all): say so.
            log.warn("TLS client {peer} refused: {why}", peer=_address(self.transport), why=describe(reason))
        super()._tlsShutdownFinished(reason)  # type: ignore[no-untyped-call]  # unannotated in Twisted

    def readConnectionLost(self) -> None:
        """TCP FIN from the peer: deliver what is buffered, then the EOF."""
        self._tcp_read_eof = True
        if not self._handshakeDone or self._lostTLSConnection:
            self.transport.loseConnection()
            return
        self._tlsConnection.bio_shutdown()
        self._flushReceiveBIO()

    def writeConnectionLost(self) -> None:
        """Our FIN went out; nothing to do."""

    # -- our direction ----------------------------------------------------------

    def loseWriteConnection(self) -> None:
        """Finish sending (a FIN); keep reading."""
        if self._write_shut or self.disconnecting or self._lostTLSConnection:
            return
        self._aggregator.flush()
        self._write_shut = True
        # Later writes are dropped, as on a TCP transport after its FIN.
        # (one no-op for write(data) and writeSequence(sequence): their parameter names differ)
        self.write = self.writeSequence = _drop  # type: ignore[method-assign, assignment]
        if self._appSendBuffer:
            self._shut_pending = True  # after what OpenSSL still holds
        else:
            self._send_fin()

    def _unbufferPendingWrites(self) -> None:
        super()._unbufferPendingWrites()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        if self._shut_pending and not self._appSendBuffer:
            self._shut_pending = False
            self._send_fin()

    def _send_fin(self) -> None:
        # A FIN only, as the docker CLI and dockerd end one direction under
        # TLS: the peer reads it as end of input, whereas a close_notify
        # announces the end of the whole TLS session while the peer may
        # still have output to send.
        if hasattr(self.transport, "loseWriteConnection"):
            self.transport.loseWriteConnection()

    def _shutdownTLS(self) -> None:
        super()._shutdownTLS()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        # The base waits for the peer's close_notify before closing the
        # socket; after the peer's EOF none is coming, and after our FIN ours
        # cannot go out.
        if self._peer_done or self._tcp_read_eof or self._write_shut:
            self.transport.loseConnection()


def _drop(data: Any) -> None:
    pass


class HalfCloseableTLSFactory(TLSMemoryBIOFactory):
    """A TLS wrapping factory whose connections are :class:`HalfCloseableTLS`."""

    protocol = HalfCloseableTLS

    def __init__(self, creator: Any, is_client: bool, factory: Any) -> None:
        super().__init__(creator, is_client, factory)
        self.is_client = is_client


def _address(transport: Any) -> str:
    try:
        peer = transport.getPeer()
        return f"{peer.host}:{peer.port}"
    except Exception:  # already gone
        return "a client"
