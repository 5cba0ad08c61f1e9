"""How Powerstrip reaches what it calls: dockerd's address, TCP endpoints, a fixed endpoint factory.

Shared by the proxy's upstream pool, the adapter client, event hooks and the
admin listener's readiness check, so all dial the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet import endpoints
from twisted.internet.abstract import isIPAddress, isIPv6Address

from powerstrip.wire.tls import DockerTLS, TLSClientEndpoint

DEFAULT_DOCKER = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class DockerAddress:
    """Where dockerd listens: ``unix:///path`` or ``tcp://host:port``."""

    scheme: str  # "unix" or "tcp"
    location: str  # socket path, or host
    port: int = 0

    @classmethod
    def parse(cls, url: str) -> DockerAddress:
        """Parse a ``DOCKER_HOST``-style URL; plain ``HOST:PORT`` means tcp."""
        url = url.strip()
        if url.startswith("unix://"):
            path = url[len("unix://") :]
            if not path.startswith("/"):
                raise ValueError(f"unix socket URL {url!r} needs an absolute path (unix:///run/docker.sock)")
            return cls("unix", path)
        for prefix in ("tcp://", "http://"):
            if url.startswith(prefix):
                url = url[len(prefix) :]
                break
        else:
            if "://" in url:
                raise ValueError(f"unsupported Docker URL {url!r}: use unix:///path or tcp://host:port")
        hostport = url.rstrip("/")
        host, sep, port = hostport.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"Docker URL {url!r} needs HOST:PORT (e.g. tcp://127.0.0.1:2375)")
        return cls("tcp", host.strip("[]"), int(port))

    def __str__(self) -> str:
        return f"unix://{self.location}" if self.scheme == "unix" else f"tcp://{self.location}:{self.port}"

    def endpoint(self, reactor: Any, tls: DockerTLS | None = None) -> Any:
        """A Twisted client endpoint that connects to this address (over
        ``tls`` if given; only for tcp)."""
        if self.scheme == "unix":
            return endpoints.UNIXClientEndpoint(reactor, self.location, timeout=10)
        tcp = tcp_endpoint(reactor, self.location, self.port)
        return tcp if tls is None else TLSClientEndpoint(tls.creator(self.location), tcp)


def tcp_endpoint(reactor: Any, host: str, port: int) -> Any:
    """A TCP client endpoint for ``host:port`` (dockerd's or an adapter's):
    direct for an IP address, so a refused connection fails at once.
    HostnameEndpoint, needed for a name, reports the last refusal only after
    its 0.3 s attempt interval: every call to a down adapter (``failure:
    ignore`` ones included) would pay that."""
    if isIPAddress(host):
        return endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=10)
    if isIPv6Address(host):
        return endpoints.TCP6ClientEndpoint(reactor, host, port, timeout=10)
    return endpoints.HostnameEndpoint(reactor, host, port, timeout=10)


class FixedEndpoint:
    """An Agent endpoint factory (``IAgentEndpointFactory``) that dials one endpoint whatever the URL:
    dockerd, for the callers that reach it through twisted.web's ``Agent``."""

    def __init__(self, endpoint: Any) -> None:
        self._endpoint = endpoint

    def endpointForURI(self, uri: Any) -> Any:  # noqa: N802 -- Twisted's interface name
        """The one endpoint, for any ``uri``."""
        return self._endpoint
