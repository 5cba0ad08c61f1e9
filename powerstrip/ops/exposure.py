"""Who can reach a listener: the start-up warning for one that accepts other hosts.

The Docker API gives root on the host, and the admin listener tells anyone who
asks the routes, the adapters and the adapters file's path; both listen on
loopback by default, and any other TCP interface gets a warning at start.

Inside a container that warning would be half the truth: the container's
``0.0.0.0`` is only what its own network namespace sees. Who can reach it from
outside is decided by how the port is published (``-p 127.0.0.1:2375:2375``
keeps it to the host's loopback, ``-p 2375:2375`` opens it to the network),
or by ``--network host``, where the container's interfaces are the host's.
Powerstrip cannot see that from the inside, so there the warning says what to
check instead of asserting an exposure that may not exist.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

#: Files container runtimes leave at the root of a container's filesystem
#: (Docker and Podman); systemd-nspawn and others set $container instead.
CONTAINER_MARKERS = ("/.dockerenv", "/run/.containerenv")


def in_container(markers: tuple[str, ...] = CONTAINER_MARKERS, env: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs in a container (Docker, Podman, or one that sets ``$container``)."""
    env = os.environ if env is None else env
    return bool(env.get("container")) or any(os.path.exists(m) for m in markers)


def is_tcp(listen: str) -> bool:
    """Whether a Twisted server endpoint string listens on TCP."""
    return listen.startswith(("tcp:", "tcp6:"))


def loopback_only(listen: str) -> bool:
    """Whether a TCP endpoint string names a loopback interface (no interface: all of them)."""
    # Split on unescaped colons only: an IPv6 interface is written with "\\:".
    args = [a.replace("\\:", ":") for a in re.split(r"(?<!\\):", listen)[1:]]
    interface = next((a.split("=", 1)[1] for a in args if a.startswith("interface=")), None)
    return interface is not None and (interface.startswith("127.") or interface in ("localhost", "::1"))


def exposure_warning(
    listen: str, serves: str, tls: bool, verified: bool, container: bool, verify_option: str = "--tlsverify"
) -> str | None:
    """The warning for listener ``listen`` (a Twisted endpoint string), or ``None``.

    ``serves`` says what a stranger would get (``"controls Docker, and so this
    host, as root"``); ``tls``: the listener serves TLS; ``verified``: it also
    requires client certificates, which makes other hosts no concern;
    ``container``: Powerstrip runs in a container (see the module docstring);
    ``verify_option`` is the option that would require client certificates.
    """
    if not is_tcp(listen) or loopback_only(listen) or verified:
        return None
    how = f"with TLS but no client certificates ({verify_option})" if tls else "without TLS"
    if container:
        return (
            f"WARNING: {listen} accepts connections from any address that reaches this container, {how}; "
            f"anyone who can connect {serves}. Running in a container: who can connect depends on how "
            "the port is published. `-p 127.0.0.1:PORT:PORT` keeps it to this host; `-p PORT:PORT` "
            "or `--network host` opens it to other hosts. Check with `docker port CONTAINER`."
        )
    return f"WARNING: {listen} accepts connections from other hosts {how}. Anyone who can reach it {serves}."
