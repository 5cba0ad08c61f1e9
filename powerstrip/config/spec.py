"""The adapters file (``adapters.yml``): loading and validation.

The format is the original Powerstrip's version 1::

    version: 1
    endpoints:
      "POST /*/containers/create":
        pre: [flocker, weave]
      "POST /containers/*/start":   # the /vN.NN prefix is never part of a key
        post: [weave]
        versions: ">=1.40"          # optional: only these API versions
    adapters:
      flocker: http://flocker/flocker-adapter
      weave:
        url: http://weave/extension
        timeout: 2s          # per call; default 30s
        failure: ignore      # fail (default) | ignore
        secrets: true        # see credentials unredacted (powerstrip.hooks.redact); default false
      audit: python:mypackage.audit:adapter   # in-process (powerstrip.sdk.adapter SDK)

Everything wrong with a file is reported as a :class:`ConfigError` whose
message names the file and the culprit (key, endpoint or adapter), so an
operator can fix it without reading code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from powerstrip.sdk.adapter import load
from powerstrip.wire.apipath import Versions, parse_versions
from powerstrip.wire.rules import parse_rule

#: What an adapter call may take before it counts as a timeout fault.
DEFAULT_ADAPTER_TIMEOUT = 30.0
#: Where Powerstrip and the ``powerstrip`` command look without --config or $POWERSTRIP_CONFIG.
DEFAULT_CONFIG = "/etc/powerstrip/adapters.yml"

_TOP_KEYS = {"version", "endpoints", "adapters", "events"}
_ENDPOINT_KEYS = {"pre", "post", "versions"}
_ADAPTER_KEYS = {"url", "timeout", "failure", "protocol", "unwind", "type", "secrets"}
_MAX_SOCKET_PATH = 107  # sun_path on Linux, less its terminating NUL


class ConfigError(Exception):
    """An adapters file that cannot be used; the message says exactly why."""


@dataclass(frozen=True)
class AdapterSpec:
    """One named adapter: where to POST hook calls, how long to wait, what a fault does."""

    name: str
    url: str
    timeout: float = DEFAULT_ADAPTER_TIMEOUT
    #: ``failure: ignore``: on a fault, log a warning and go on with the unmodified input.
    ignore_faults: bool = False
    #: For a ``python:module:name`` URL, the in-process :class:`powerstrip.sdk.adapter.Adapter`.
    in_process: Any = field(default=None, compare=False, repr=False)
    #: The Powerstrip protocol version its hook calls use: 1 or 2 (``protocol:``).
    protocol: int = 1
    #: ``unwind: true`` (protocol 2): called with ``"Type": "unwind"`` when a request
    #: fails after its pre-hook succeeded.
    unwind: bool = False
    #: ``powerstrip`` (hook calls) or ``authz`` (Docker's authorization-plugin protocol).
    type: str = "powerstrip"
    #: ``secrets: true``: its hook calls show credentials as sent, not ``"<redacted>"``
    #: (:mod:`powerstrip.hooks.redact`).
    secrets: bool = False


@dataclass(frozen=True)
class EventRule:
    """One ``events:`` rule: Docker events whose ``"Type Action"`` match ``pattern``, and their adapters."""

    pattern: str
    type: str  # glob on the event's Type (container, image, network, volume, ...)
    action: str  # glob on its Action (die, start, create, exec_start: ..., ...)
    adapters: tuple[AdapterSpec, ...]


@dataclass(frozen=True)
class Endpoint:
    """One ``"METHOD /path/glob"`` rule and the adapters it hooks in."""

    pattern: str
    method: str
    path: str
    pre: tuple[AdapterSpec, ...] = ()
    post: tuple[AdapterSpec, ...] = ()
    #: ``versions:``: the API versions the rule applies to (every one when empty);
    #: see :func:`powerstrip.wire.apipath.versions_match`.
    versions: Versions = ()


@dataclass(frozen=True)
class Config:
    """A validated adapters file. Immutable: a request keeps the one it started with."""

    endpoints: tuple[Endpoint, ...] = ()
    adapters: dict[str, AdapterSpec] = field(default_factory=dict)
    source: str = "<pass-through>"
    #: The ``events:`` rules, in file order.
    events: tuple[EventRule, ...] = ()

    @classmethod
    def passthrough(cls) -> Config:
        """A configuration with no hooks at all: Powerstrip is a plain proxy."""
        return cls()


def load_config(path: str) -> Config:
    """Read and validate the adapters file at ``path``.

    :raises ConfigError: the file is missing, unreadable, not YAML, or invalid.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read adapters file: {e.strerror or e}") from e
    return parse_config(text, source=path)


def parse_config(text: str, source: str = "<string>") -> Config:
    """Validate the YAML ``text`` of an adapters file (``source`` names it in errors)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from e

    def fail(msg: str) -> ConfigError:
        return ConfigError(f"{source}: {msg}")

    if not isinstance(doc, dict):
        raise fail("expected a mapping with 'version', 'endpoints' and 'adapters'")
    unknown = sorted(map(str, set(doc) - _TOP_KEYS))
    if unknown:
        raise fail(f"unknown top-level key(s): {', '.join(unknown)} (allowed: {', '.join(sorted(_TOP_KEYS))})")
    version = doc.get("version", 1)
    if version != 1 or isinstance(version, bool):
        raise fail(f"unsupported version {version!r} (this Powerstrip reads version 1)")
    for key in ("endpoints", "adapters"):
        if key not in doc:
            raise fail(f"missing required key '{key}'")
        if not isinstance(doc[key], dict):
            raise fail(f"'{key}' must be a mapping, not {_kind(doc[key])}")

    adapters = {name: _parse_adapter(name, spec, fail) for name, spec in doc["adapters"].items()}
    endpoints = tuple(_parse_endpoint(pattern, spec, adapters, fail) for pattern, spec in doc["endpoints"].items())
    events = doc.get("events") or {}
    if not isinstance(events, dict):
        raise fail(f"'events' must be a mapping of \"TYPE ACTION\" patterns to adapter lists, not {_kind(events)}")
    event_rules = tuple(_parse_event_rule(pattern, names, adapters, fail) for pattern, names in events.items())
    return Config(endpoints=endpoints, adapters=adapters, source=source, events=event_rules)


def _parse_event_rule(
    pattern: object, names: object, adapters: dict[str, AdapterSpec], fail: Callable[[str], ConfigError]
) -> EventRule:
    words = pattern.split() if isinstance(pattern, str) else []
    if not isinstance(pattern, str) or len(words) != 2:  # (words is empty unless a str: says so to mypy)
        raise fail(f'event {pattern!r}: expected "TYPE ACTION" globs, e.g. "container die" or "network *"')
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names:
        raise fail(f"event {pattern!r}: expected a list of adapter names")
    for n in names:
        if not isinstance(n, str) or n not in adapters:
            known = ", ".join(sorted(adapters)) or "none"
            raise fail(f"event {pattern!r}: adapter {n!r} is not defined under 'adapters' (defined: {known})")
        if adapters[n].type == "authz":
            raise fail(f"event {pattern!r}: adapter {n!r} is an authz plugin, which takes no events")
    return EventRule(pattern, words[0], words[1], tuple(adapters[n] for n in names))


def parse_adapter(name: str, spec: object) -> AdapterSpec:
    """Validate one adapter (a URL string, or a mapping with ``url``, ``timeout``,
    ``failure``) as the adapters file would, for tools given one on the command line.

    :raises ConfigError: the same message a file would get, without the file's name.
    """
    return _parse_adapter(name, spec, ConfigError)


def _parse_adapter(name: object, spec: object, fail: Callable[[str], ConfigError]) -> AdapterSpec:
    if not isinstance(name, str) or not name:
        raise fail(f"adapter name {name!r} must be a non-empty string")
    if isinstance(spec, str):
        spec = {"url": spec}
    if not isinstance(spec, dict):
        raise fail(f"adapter '{name}': expected a URL string or a mapping with 'url', not {_kind(spec)}")
    unknown = sorted(map(str, set(spec) - _ADAPTER_KEYS))
    if unknown:
        raise fail(
            f"adapter '{name}': unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_ADAPTER_KEYS))})"
        )
    url = spec.get("url")
    if not isinstance(url, str):
        raise fail(f"adapter '{name}': 'url' must be an http://, https://, http+unix:// or python: URL string")
    in_process = None
    if url.startswith("python:"):
        try:
            in_process = load(url.removeprefix("python:"))
        except ValueError as e:
            raise fail(f"adapter '{name}': {url!r}: {e}") from None
    parts = urlsplit(url)
    if in_process is None and (parts.scheme not in ("http", "https", "http+unix") or not parts.netloc):
        raise fail(f"adapter '{name}': {url!r} is not an http://, https://, http+unix:// or python:module:name URL")
    if parts.scheme == "http+unix":
        path = unquote(parts.netloc)
        if not path.startswith("/"):
            raise fail(
                f"adapter '{name}': {url!r}: the host of an http+unix:// URL is the socket's absolute "
                "path with each / written %2F (http+unix://%2Frun%2Fadapter.sock/hook)"
            )
        if len(path.encode()) > _MAX_SOCKET_PATH:
            raise fail(
                f"adapter '{name}': socket path {path!r} is longer than the {_MAX_SOCKET_PATH} bytes "
                "a unix socket address can hold"
            )
    timeout = _seconds(spec.get("timeout", DEFAULT_ADAPTER_TIMEOUT))
    if timeout is None:
        raise fail(f"adapter '{name}': timeout {spec.get('timeout')!r} is not a duration like 2s, 500ms or 30")
    failure = spec.get("failure", "fail")
    if failure not in ("fail", "ignore"):
        raise fail(f"adapter '{name}': failure must be 'fail' or 'ignore', not {failure!r}")
    protocol = spec.get("protocol", 1)
    if protocol not in (1, 2) or isinstance(protocol, bool):
        raise fail(f"adapter '{name}': protocol must be 1 or 2, not {protocol!r}")
    unwind = spec.get("unwind", False)
    if not isinstance(unwind, bool):
        raise fail(f"adapter '{name}': unwind must be true or false, not {unwind!r}")
    if unwind and protocol != 2:
        raise fail(f"adapter '{name}': unwind calls are protocol 2: add 'protocol: 2'")
    secrets = spec.get("secrets", False)
    if not isinstance(secrets, bool):
        raise fail(f"adapter '{name}': secrets must be true or false, not {secrets!r}")
    kind = spec.get("type", "powerstrip")
    if kind not in ("powerstrip", "authz"):
        raise fail(f"adapter '{name}': type must be 'powerstrip' or 'authz', not {kind!r}")
    if kind == "authz" and ("protocol" in spec or unwind or in_process is not None or failure == "ignore"):
        raise fail(
            f"adapter '{name}': an authz adapter speaks Docker's authorization-plugin protocol over "
            "HTTP and fails closed: no 'protocol', 'unwind', 'failure: ignore' or python: URL"
        )
    return AdapterSpec(
        name=name,
        url=url,
        timeout=timeout,
        ignore_faults=failure == "ignore",
        in_process=in_process,
        protocol=protocol,
        unwind=unwind,
        type=kind,
        secrets=secrets,
    )


def _seconds(value: object) -> float | None:
    """``30``, ``2s``, ``500ms``, ``1m`` → seconds (positive), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value > 0 else None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m)?\s*", str(value))
    if not m:
        return None
    seconds = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[m.group(2)]
    return seconds if seconds > 0 else None


def _parse_endpoint(
    pattern: object, spec: object, adapters: dict[str, AdapterSpec], fail: Callable[[str], ConfigError]
) -> Endpoint:
    if not isinstance(pattern, str):
        raise fail(f'endpoint {pattern!r}: the key must be a string like "POST /*/containers/create"')
    try:
        method, path = parse_rule(pattern)
    except ValueError as e:
        raise fail(f"endpoint {e}") from None
    if not isinstance(spec, dict):
        raise fail(f"endpoint {pattern!r}: expected a mapping with 'pre' and/or 'post', not {_kind(spec)}")
    unknown = sorted(map(str, set(spec) - _ENDPOINT_KEYS))
    if unknown:
        raise fail(f"endpoint {pattern!r}: unknown key(s) {', '.join(unknown)} (allowed: pre, post, versions)")
    try:
        versions = parse_versions(spec["versions"]) if "versions" in spec else ()
    except ValueError as e:
        raise fail(f"endpoint {pattern!r}: versions: {e}") from None
    if not spec.get("pre") and not spec.get("post"):
        raise fail(f"endpoint {pattern!r}: has neither 'pre' nor 'post' adapters")
    hooks: dict[str, tuple[AdapterSpec, ...]] = {}
    for phase in ("pre", "post"):
        names = spec.get(phase) or []
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list):
            raise fail(f"endpoint {pattern!r}: '{phase}' must be a list of adapter names")
        for n in names:
            if not isinstance(n, str) or n not in adapters:
                known = ", ".join(sorted(adapters)) or "none"
                raise fail(
                    f"endpoint {pattern!r}: {phase}-hook adapter {n!r} is not defined "
                    f"under 'adapters' (defined: {known})"
                )
        hooks[phase] = tuple(adapters[n] for n in names)
    return Endpoint(pattern=pattern, method=method, path=path, versions=versions, **hooks)


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )
