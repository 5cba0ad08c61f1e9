"""Who is calling: the client's transport, address, and identity (protocol 2's ``Caller``).

On a unix-socket listener the kernel says which process connected
(``SO_PEERCRED``: uid, gid, pid); on a TLS listener with client certificates
the certificate says who it is. Both are fixed for the life of a connection,
so they are read once per connection.
"""

from __future__ import annotations

import pwd
import socket
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import ISSLTransport

if TYPE_CHECKING:
    from OpenSSL.crypto import X509


@dataclass(frozen=True)
class Peer:
    """The client of one connection, as adapters see it."""

    transport: str  # unix | tcp | tls
    remote_address: str | None = None
    uid: int | None = None
    gid: int | None = None
    pid: int | None = None
    user: str | None = None
    certificate: dict[str, str | None] | None = None  # {"Subject", "CommonName", "Fingerprint"}
    #: The client certificate itself (DER), for AuthZ plugins' ``RequestPeerCertificates``.
    certificate_der: bytes | None = field(default=None, compare=False, repr=False)

    def wire(self) -> dict[str, Any]:
        """The protocol's ``Caller`` object."""
        return {
            "Transport": self.transport,
            "RemoteAddress": self.remote_address,
            "Uid": self.uid,
            "Gid": self.gid,
            "Pid": self.pid,
            "User": self.user,
            "Certificate": self.certificate,
        }


def read_caller(transport: Any) -> Peer:
    """The :class:`Peer` on the other end of ``transport`` (read it once per connection)."""
    peer = transport.getPeer()
    if ISSLTransport.providedBy(transport):
        cert = _certificate(transport)
        # ISSLTransport declares an object; a TLS transport's is pyOpenSSL's X509 (or None).
        peer_cert = cast("X509 | None", transport.getPeerCertificate())
        der = peer_cert.to_cryptography().public_bytes(Encoding.DER) if peer_cert is not None else None
        return Peer(
            "tls", _address(peer), user=cert["CommonName"] if cert else None, certificate=cert, certificate_der=der
        )
    if isinstance(peer, UNIXAddress):
        return _peer_credentials(transport)
    return Peer("tcp", _address(peer))


def _address(peer: Any) -> str | None:
    if isinstance(peer, IPv6Address):
        return f"[{peer.host}]:{peer.port}"
    if isinstance(peer, IPv4Address):
        return f"{peer.host}:{peer.port}"
    return None


def _peer_credentials(transport: Any) -> Peer:
    try:
        raw = transport.getHandle().getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):  # not Linux, or not a real socket
        return Peer("unix")
    pid, uid, gid = struct.unpack("3i", raw)
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid with no account (a container's user, say)
        user = None
    return Peer("unix", None, uid, gid, pid, user)


def _certificate(transport: Any) -> dict[str, str | None] | None:
    cert = transport.getPeerCertificate()
    if cert is None:
        return None
    # RFC 4514 writes the most specific component first: CN=alice,O=dev.
    parts = [(k.decode(), v.decode("utf-8", "replace")) for k, v in cert.get_subject().get_components()]
    names = [v for k, v in parts if k == "CN"]
    return {
        "Subject": ",".join(f"{k}={v}" for k, v in reversed(parts)),
        "CommonName": names[-1] if names else None,
        "Fingerprint": "sha256:" + cert.digest("sha256").decode().replace(":", "").lower(),
    }
