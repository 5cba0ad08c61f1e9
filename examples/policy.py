"""policy: refuse containers that could take over the host.

A pre-hook on ``POST /*/containers/create`` refuses (403, nothing is created)
a container that asks for any of:

- ``--privileged`` (``HostConfig.Privileged``);
- the host's network (``--network host``: ``HostConfig.NetworkMode == "host"``);
- a bind mount of a host path outside an allow-list, whether given as
  ``-v /src:/dst[:opts]`` (``HostConfig.Binds``) or as ``--mount
  type=bind,source=/src,...`` (``HostConfig.Mounts``). Paths are normalised
  first, so ``/srv/../etc`` counts as ``/etc``. Named volumes (``-v
  name:/dst``, ``--mount type=volume``), anonymous volumes and tmpfs mounts
  are not bind mounts and are always allowed.

A pre-hook on ``POST /*/containers/*/exec`` refuses ``docker exec
--privileged``, which would otherwise hand full privileges to a process in
any running container.

``POST /*/containers/*/update`` is not hooked: its body holds only resource
limits and the restart policy, so none of the above can be changed there.

The docker CLI prints the reason, e.g. ``Error response from daemon: policy:
bind mount /etc is outside the allowed paths /srv, /tmp``; every violation of
a request is listed, separated by ``;``.

Limits: paths are compared as text, without resolving symbolic links (the
adapter may not even see the host's file system), so a symlink planted inside
an allowed directory can point a bind mount elsewhere: only allow directories
that untrusted users cannot write to. ``--volumes-from``, ``--cap-add``,
``--device``, ``--pid host`` and the like are not checked; a real policy
would add them.

Settings (environment variables, read when the module is imported; a
malformed one stops the adapter, or Powerstrip, at start-up with a message):

``POLICY_ALLOWED_BINDS``
    Host directories that may be bind-mounted (with everything below them),
    absolute paths separated by commas, e.g. ``POLICY_ALLOWED_BINDS="/srv,/tmp"``.
    Unset or empty: no bind mounts at all.

Run it as its own service::

    POLICY_ALLOWED_BINDS=/srv,/tmp \\
        twistd -n powerstrip-adapter --module examples.policy --listen tcp:8083:interface=127.0.0.1

with ``policy: http://127.0.0.1:8083/`` under ``adapters:`` in adapters.yml,
or inside Powerstrip (no HTTP hop; set the variable in Powerstrip's
environment) with ``policy: python:examples.policy:adapter``. Either way, run
it from the repository root so that ``examples`` is importable::

    version: 1
    endpoints:
      "POST /*/containers/create":
        pre: [policy]
      "POST /*/containers/*/exec":
        pre: [policy]
    adapters:
      policy: python:examples.policy:adapter
"""

from __future__ import annotations

import os
import posixpath

from powerstrip.adapter import Adapter, Refuse, Request

adapter = Adapter("policy")

FORBIDDEN = 403


def normalise(path: str) -> str:
    """``path`` with ``.``, ``..`` and repeated or trailing slashes resolved (as text)."""
    # normpath keeps a leading "//" (POSIX allows it a meaning); Linux gives it none.
    return posixpath.normpath("/" + path.lstrip("/"))


def parse_allowed(value: str) -> tuple[str, ...]:
    """Parse ``POLICY_ALLOWED_BINDS`` (``"/srv,/tmp"``) into normalised absolute paths.

    :raises ValueError: for a relative path.
    """
    allowed = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        if not item.startswith("/"):
            raise ValueError(f"POLICY_ALLOWED_BINDS: {item!r} is not an absolute path")
        allowed.append(normalise(item))
    return tuple(allowed)


ALLOWED_BINDS = parse_allowed(os.environ.get("POLICY_ALLOWED_BINDS", ""))


def is_allowed(path: str, allowed: tuple[str, ...]) -> bool:
    """Whether normalised ``path`` is one of ``allowed`` or below one (``/srvx`` is not below ``/srv``)."""
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in allowed)


def bind_sources(host_config: dict) -> list[str]:
    """The host paths a create body's ``HostConfig`` bind-mounts, as given."""
    sources = []
    for entry in host_config.get("Binds") or []:
        # "src:dst[:opts]"; a src that is not a path ("name:/dst") names a volume.
        if isinstance(entry, str):
            src, sep, _ = entry.partition(":")
            if sep and src.startswith("/"):
                sources.append(src)
    for mount in host_config.get("Mounts") or []:
        if isinstance(mount, dict) and mount.get("Type") == "bind":
            sources.append(str(mount.get("Source") or ""))
    return sources


def violations(spec: dict, allowed: tuple[str, ...]) -> list[str]:
    """What is wrong with a container create body, one phrase per violation."""
    host_config = spec.get("HostConfig")
    if not isinstance(host_config, dict):
        return []
    found = []
    if host_config.get("Privileged") is True:
        found.append("privileged containers are not allowed")
    if host_config.get("NetworkMode") == "host":
        found.append("the host network is not allowed")
    for source in bind_sources(host_config):
        if not source.startswith("/"):
            found.append(f"bind mount source {source!r} is not an absolute path")
            continue
        path = normalise(source)
        if is_allowed(path, allowed):
            continue
        shown = path if path == source else f"{source} ({path})"
        if allowed:
            found.append(f"bind mount {shown} is outside the allowed paths {', '.join(allowed)}")
        else:
            found.append(f"bind mount {shown} is not allowed (POLICY_ALLOWED_BINDS allows none)")
    return found


@adapter.pre_hook("POST /*/containers/create")
def check_create(request: Request) -> None:
    """Refuse a container create that breaks the policy; let the rest through unchanged."""
    spec = request.json
    found = violations(spec, ALLOWED_BINDS) if isinstance(spec, dict) else []
    if found:
        raise Refuse(FORBIDDEN, "policy: " + "; ".join(found))


@adapter.pre_hook("POST /*/containers/*/exec")
def check_exec(request: Request) -> None:
    """Refuse ``docker exec --privileged``."""
    spec = request.json
    if isinstance(spec, dict) and spec.get("Privileged") is True:
        raise Refuse(FORBIDDEN, "policy: privileged exec is not allowed")

