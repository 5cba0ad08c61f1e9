"""policy: refuse containers and calls that could take over the host. Fails closed.

Covered — every place dockerd (20.10 to 28) takes a host privilege from on the hooked
calls, each refused with 403 and nothing created:

``POST /*/containers/create`` (``HostConfig``, and the same fields at the *top level*
of the body, which dockerd 20.10 still honours when ``HostConfig`` is absent; both are
checked whatever Powerstrip already refused):

- ``Privileged`` (``--privileged``);
- ``CapAdd`` (``--cap-add``: any added capability), ``Devices`` (``--device``),
  ``DeviceCgroupRules`` (``--device-cgroup-rule``), ``DeviceRequests`` (``--gpus``);
- ``NetworkMode``, ``PidMode``, ``IpcMode``, ``UTSMode``, ``UsernsMode``,
  ``CgroupnsMode`` set to ``host`` (``--network host``, ``--pid host``...);
- ``SecurityOpt`` turning confinement off: ``seccomp=unconfined``,
  ``apparmor=unconfined``, ``label=disable`` (``:`` or ``=``), ``systempaths=unconfined``;
- bind mounts of host paths outside an allow-list, as ``-v /src:/dst[:opts]``
  (``Binds``), ``--mount type=bind,source=/src`` (``Mounts``), or a ``--mount
  type=volume`` whose local-driver options bind a host ``device`` (``o=bind``). Paths
  are normalised first (``/srv/../etc`` is ``/etc``). Named, anonymous and tmpfs
  volumes are not bind mounts and are allowed.

``POST /*/containers/*/exec``: ``Privileged`` (``docker exec --privileged``).

Other calls that reach the same privileges, hooked in the example configuration below:

- ``POST /*/build`` with ``networkmode=host`` (``docker build --network host``): the
  build's ``RUN`` steps get the host network;
- ``POST /*/services/create`` and ``POST /*/services/*/update`` (swarm):
  ``TaskTemplate.ContainerSpec`` ``CapabilityAdd``, ``Privileges`` (SELinux disabled,
  seccomp/AppArmor unconfined), bind ``Mounts``, and ``TaskTemplate.Networks`` on
  ``host``;
- ``POST /*/volumes/create``: a ``local`` volume binding a host ``device`` outside the
  allow-list (``docker volume create -o o=bind -o device=/``), then mounted by name;
- ``POST /*/plugins/pull`` and ``POST /*/plugins/*/upgrade``: a plugin's granted
  privileges (host network, mounts, devices, capabilities) — any is refused;
- ``POST /*/containers/*/start`` with a body: dockerd 20.10 reads a HostConfig from it
  for API versions below 1.24 (refused unless empty).

Fail closed: a hooked call whose body is missing, is not a JSON object, or is not
readable JSON is refused (the SDK raises ``UnreadableBody`` for the last; this file
turns every such case into a 403 naming it), and keys are matched as Go matches them
(``privileged`` is ``Privileged``; two spellings of one field are refused).

Not covered (a real policy would decide): ``--volumes-from`` (inherits another
container's mounts, themselves checked at its create), joining another container's
namespaces (``container:<id>`` modes), ``Sysctls``, ``Runtime``, image allow-lists, and
symbolic links: paths are compared as text, so only allow directories that untrusted
users cannot write to. ``POST /*/containers/*/update`` is not hooked: dockerd applies
only resource limits and the restart policy from it.

The docker CLI prints the reason, e.g. ``Error response from daemon: policy:
bind mount /etc is outside the allowed paths /srv, /tmp``; every violation of
a request is listed, separated by ``;``.

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
      "POST /containers/create":
        pre: [policy]
      "POST /containers/*/exec":
        pre: [policy]
      "POST /containers/*/start":
        pre: [policy]
      "POST /build":
        pre: [policy]
      "POST /services/create":
        pre: [policy]
      "POST /services/*/update":
        pre: [policy]
      "POST /volumes/create":
        pre: [policy]
      "POST /plugins/pull":
        pre: [policy]
      "POST /plugins/*/upgrade":
        pre: [policy]
    adapters:
      policy: python:examples.policy:adapter
"""

from __future__ import annotations

import os
import posixpath
from typing import Any

from powerstrip.sdk import Adapter, Refuse, Request, UnreadableBody
from powerstrip.wire.gotext import fold_key

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


def field(obj: dict, name: str) -> Any:
    """``obj[name]`` matched as Go matches JSON keys to fields (ASCII case-insensitively, and
    ``ſ``/``K`` as ``s``/``k``): Powerstrip already hands hooks canonical keys, but a policy
    must not depend on it (it may run behind another proxy, or in tests).

    :raises Unreadable: two keys of ``obj`` select the field (Go would merge them).
    """
    found = [key for key in obj if fold_key(key) == fold_key(name)]
    if len(found) > 1:
        raise Unreadable(f"the keys {', '.join(map(repr, found))} are one field")
    return obj[found[0]] if found else None


class Unreadable(Exception):  # noqa: N818 -- reads as what the body is
    """A body the policy cannot judge: refused (fail closed)."""


def _items(value: Any) -> list:
    return value if isinstance(value, list) else []


def bind_sources(host_config: dict) -> list[str]:
    """The host paths a ``HostConfig`` bind-mounts, as given (volume ``device`` binds too)."""
    sources = []
    for entry in _items(field(host_config, "Binds")):
        # "src:dst[:opts]"; a src that is not a path ("name:/dst") names a volume.
        if isinstance(entry, str):
            src, sep, _ = entry.partition(":")
            if sep and src.startswith("/"):
                sources.append(src)
    for mount in _items(field(host_config, "Mounts")):
        sources.extend(_mount_sources(mount))
    return sources


def _mount_sources(mount: Any) -> list[str]:
    """Host paths one ``Mount`` object binds: a bind's ``Source``, a volume's ``device`` option."""
    if not isinstance(mount, dict):
        return []
    kind = str(field(mount, "Type") or "").lower()
    if kind == "bind":
        return [str(field(mount, "Source") or "")]
    options = field(field(mount, "VolumeOptions") or {}, "DriverConfig") or {}
    return _device_sources(field(options, "Options") if isinstance(options, dict) else None)


def _device_sources(options: Any) -> list[str]:
    """The host ``device`` a local-driver volume's options bind (``o=bind,device=/src``)."""
    if not isinstance(options, dict):
        return []
    # Driver options are a map (exact keys) read by the local driver: "device" with "o" holding "bind".
    if "bind" in str(options.get("o", "")).split(",") and options.get("device") is not None:
        return [str(options["device"])]
    return []


def bind_violations(sources: list[str], allowed: tuple[str, ...]) -> list[str]:
    """One phrase per host path of ``sources`` outside ``allowed``."""
    found = []
    for source in sources:
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


_NAMESPACES = (
    ("NetworkMode", "the host network"),
    ("PidMode", "the host PID namespace"),
    ("IpcMode", "the host IPC namespace"),
    ("UTSMode", "the host UTS namespace"),
    ("UsernsMode", "the host user namespace"),
    ("CgroupnsMode", "the host cgroup namespace"),
)
_UNCONFINED = (
    "seccomp=unconfined",
    "seccomp:unconfined",
    "apparmor=unconfined",
    "apparmor:unconfined",
    "label=disable",
    "label:disable",
    "systempaths=unconfined",
)


def host_config_violations(host_config: dict, allowed: tuple[str, ...]) -> list[str]:
    """What is wrong with one ``HostConfig`` (or the legacy top level of a create body)."""
    found = []
    if field(host_config, "Privileged") not in (None, False):
        found.append("privileged containers are not allowed")
    for name, what in _NAMESPACES:
        if str(field(host_config, name) or "").lower() == "host":
            found.append(f"{what} is not allowed" if name != "NetworkMode" else "the host network is not allowed")
    caps = _items(field(host_config, "CapAdd"))
    if caps:
        found.append(f"added capabilities are not allowed ({', '.join(map(str, caps))})")
    for name, what in (
        ("Devices", "host devices"),
        ("DeviceCgroupRules", "device cgroup rules"),
        ("DeviceRequests", "device requests (GPUs)"),
    ):
        if _items(field(host_config, name)):
            found.append(f"{what} are not allowed")
    for opt in _items(field(host_config, "SecurityOpt")):
        if str(opt).lower().replace(" ", "") in _UNCONFINED:
            found.append(f"security option {opt} is not allowed")
    found.extend(bind_violations(bind_sources(host_config), allowed))
    return found


def violations(spec: dict, allowed: tuple[str, ...]) -> list[str]:
    """What is wrong with a container create body, one phrase per violation."""
    found = []
    host_config = field(spec, "HostConfig")
    if host_config is not None and not isinstance(host_config, dict):
        raise Unreadable("HostConfig is not an object")
    if isinstance(host_config, dict):
        found.extend(host_config_violations(host_config, allowed))
    # dockerd 20.10 also reads HostConfig fields at the top level (wholly when HostConfig is
    # absent): check them there too; a phrase already found is not repeated.
    found.extend(v for v in host_config_violations(spec, allowed) if v not in found)
    return found


def service_violations(spec: dict, allowed: tuple[str, ...]) -> list[str]:
    """What is wrong with a swarm service spec (create or update body)."""
    task = field(spec, "TaskTemplate") or {}
    container = field(task, "ContainerSpec") if isinstance(task, dict) else None
    found = []
    if isinstance(container, dict):
        caps = _items(field(container, "CapabilityAdd"))
        if caps:
            found.append(f"added capabilities are not allowed ({', '.join(map(str, caps))})")
        privileges = field(container, "Privileges") or {}
        if isinstance(privileges, dict):
            selinux = field(privileges, "SELinuxContext") or {}
            if isinstance(selinux, dict) and field(selinux, "Disable"):
                found.append("disabling SELinux is not allowed")
            for name in ("Seccomp", "AppArmor"):
                mode = field(privileges, name) or {}
                if isinstance(mode, dict) and str(field(mode, "Mode") or "").lower() == "unconfined":
                    found.append(f"an unconfined {name} profile is not allowed")
        sources = [s for m in _items(field(container, "Mounts")) for s in _mount_sources(m)]
        found.extend(bind_violations(sources, allowed))
    if isinstance(task, dict):
        for net in _items(field(task, "Networks")):
            if isinstance(net, dict) and str(field(net, "Target") or "").lower() == "host":
                found.append("the host network is not allowed")
    for net in _items(field(spec, "Networks")):  # the deprecated top-level spelling
        if isinstance(net, dict) and str(field(net, "Target") or "").lower() == "host":
            found.append("the host network is not allowed")
    return found


def _json(request: Request, what: str) -> Any:
    """The request's JSON document (``None``: no body), or a 403 if it cannot be read (fail closed)."""
    try:
        return request.json
    except UnreadableBody as e:
        raise Refuse(FORBIDDEN, f"policy: {what} refused: {e.reason}") from None


def _body(request: Request, what: str) -> dict:
    """The request's JSON object, or a 403 saying why there is none (fail closed)."""
    spec = _json(request, what)
    if not isinstance(spec, dict):
        raise Refuse(
            FORBIDDEN,
            f"policy: {what} refused: the body is not a JSON object"
            if spec is not None
            else f"policy: {what} refused: no body to check",
        )
    return spec


def _judge(what: str, check: Any, *args: Any) -> None:
    try:
        found = check(*args)
    except Unreadable as e:
        raise Refuse(FORBIDDEN, f"policy: {what} refused: {e}") from None
    if found:
        raise Refuse(FORBIDDEN, "policy: " + "; ".join(found))


@adapter.pre_hook("POST /*/containers/create")
def check_create(request: Request) -> None:
    """Refuse a container create that breaks the policy; let the rest through unchanged."""
    _judge("container create", violations, _body(request, "container create"), ALLOWED_BINDS)


@adapter.pre_hook("POST /*/containers/*/exec")
def check_exec(request: Request) -> None:
    """Refuse ``docker exec --privileged``."""
    spec = _body(request, "exec")
    _judge("exec", lambda: ["privileged exec is not allowed"] if field(spec, "Privileged") not in (None, False) else [])


@adapter.pre_hook("POST /*/containers/*/start")
def check_start(request: Request) -> None:
    """Refuse a start that carries settings (a HostConfig, for dockerd 20.10 at API < 1.24)."""
    if _json(request, "container start") not in (None, {}):
        raise Refuse(FORBIDDEN, "policy: container start refused: settings belong on create")


@adapter.pre_hook("POST /*/build")
def check_build(request: Request) -> None:
    """Refuse ``docker build --network host`` (the build context itself streams unseen)."""
    # The value dockerd reads (a second networkmode never reaches a hook: Powerstrip refuses it).
    if (request.param("networkmode") or "").lower() == "host":
        raise Refuse(FORBIDDEN, "policy: building on the host network is not allowed")


@adapter.pre_hook("POST /*/services/create")
@adapter.pre_hook("POST /*/services/*/update")
def check_service(request: Request) -> None:
    """Refuse swarm services whose tasks would get host privileges."""
    _judge("service", service_violations, _body(request, "service"), ALLOWED_BINDS)


@adapter.pre_hook("POST /*/volumes/create")
def check_volume(request: Request) -> None:
    """Refuse a volume that binds a host directory outside the allow-list."""
    spec = _body(request, "volume create")
    _judge("volume create", lambda: bind_violations(_device_sources(field(spec, "DriverOpts")), ALLOWED_BINDS))


@adapter.pre_hook("POST /*/plugins/pull")
@adapter.pre_hook("POST /*/plugins/*/upgrade")
def check_plugin(request: Request) -> None:
    """Refuse a plugin install or upgrade that is granted any privilege."""
    if _json(request, "plugin install"):  # a non-empty list of privileges (or anything else: not what the CLI sends)
        raise Refuse(FORBIDDEN, "policy: plugins with privileges are not allowed")
