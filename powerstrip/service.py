"""Command-line options and the service ``twistd -n powerstrip`` runs."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
from typing import Any

from twisted.application import service, strports
from twisted.logger import Logger
from twisted.python import usage

from powerstrip.config import Config, ConfigError, load_config
from powerstrip.resource import Limits, PowerstripResource
from powerstrip.upstream import DEFAULT_DOCKER, DockerAddress
from powerstrip.web import PowerstripSite

DEFAULT_CONFIG = "/etc/powerstrip/adapters.yml"
DEFAULT_LISTEN = "tcp:2375:interface=127.0.0.1"

log = Logger()


def _size(value: str) -> int:
    """``16M``, ``512k``, ``1048576`` → bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)i?[bB]?\s*", value)
    if not m:
        raise ValueError(f"not a size: {value!r} (e.g. 16M)")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]


class Options(usage.Options):
    """``twistd powerstrip`` options; each also has an environment variable."""

    synopsis = "[--config adapters.yml] [--docker URL] [--listen ENDPOINT ...]"
    optFlags = [
        ["no-access-log", None, "Log no line per request (about 20% more small requests/s)"],
    ]
    optParameters = [
        ["config", "c", None, "Adapters file [default: $POWERSTRIP_CONFIG, else "
                              f"{DEFAULT_CONFIG}; pass-through if that is missing]"],
        ["docker", "d", None, f"Docker daemon URL [default: $DOCKER_HOST, else {DEFAULT_DOCKER}]"],
        ["max-json-body", None, "16M", "Largest JSON request body handed to pre-hooks (413 above)", _size],
        ["max-response-body", None, "64M", "Largest response handed to post-hooks (502 above)", _size],
        ["drain-timeout", None, 10.0, "On SIGTERM, seconds to let requests in flight finish before "
                                      "streams are closed", float],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Twisted server endpoint to listen on; repeatable
        [default: $POWERSTRIP_LISTEN (space-separated), else tcp:2375:interface=127.0.0.1]"""
        self["listen"].append(endpoint)

    opt_l = opt_listen

    def postOptions(self) -> None:
        env = os.environ
        for key in ("max-json-body", "max-response-body"):
            if isinstance(self[key], str):  # twisted.python.usage leaves defaults uncoerced
                self[key] = _size(self[key])
        if not self["listen"]:
            self["listen"] = env.get("POWERSTRIP_LISTEN", DEFAULT_LISTEN).split()
        docker_url = self["docker"] or env.get("DOCKER_HOST") or DEFAULT_DOCKER
        try:
            self["docker_address"] = DockerAddress.parse(docker_url)
        except ValueError as e:
            raise usage.UsageError(f"--docker: {e}") from None
        for listen in self["listen"]:
            if docker_url_for(listen) == str(self["docker_address"]):
                raise usage.UsageError(
                    f"the Docker URL {docker_url} is Powerstrip's own listener ({listen}): "
                    "unset DOCKER_HOST or pass --docker unix:///var/run/docker.sock")
        path = self["config"] or env.get("POWERSTRIP_CONFIG")
        self["config_path"] = path or DEFAULT_CONFIG
        if path is None and not os.path.exists(DEFAULT_CONFIG):
            self["config_obj"] = None  # the default is optional: pass-through
            return
        try:
            self["config_obj"] = load_config(path or DEFAULT_CONFIG)
        except ConfigError as e:
            # Not a usage error: say what is wrong with the file, without the option list.
            raise SystemExit(f"powerstrip: invalid configuration: {e}") from None


def docker_url_for(listen: str) -> str | None:
    """The ``DOCKER_HOST`` a client uses to reach a listen endpoint, if known."""
    parts = re.split(r"(?<!\\):", listen)
    kind, args = parts[0], parts[1:]
    kw = dict(a.split("=", 1) for a in args if "=" in a)
    pos = [a for a in args if "=" not in a]
    if kind == "tcp" and pos:
        host = kw.get("interface", "127.0.0.1")
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"tcp://{host}:{pos[0]}"
    if kind == "unix" and (pos or "address" in kw):
        return f"unix://{kw.get('address', pos[0] if pos else '')}"
    return None


def clear_stale_socket(path: str) -> None:
    """Remove a unix socket left behind by a process that is gone.

    A socket something still accepts on is left alone (the listen then fails
    with "address already in use"), and so is anything that is not a socket.
    """
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return
    except OSError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
            return  # alive
        except ConnectionRefusedError:
            pass
        except OSError:
            return
    log.info("removing stale socket {path}", path=path)
    os.unlink(path)


def _loopback_only(listen: str) -> bool:
    m = re.search(r":interface=([^:]*)", listen)
    return bool(m) and (m.group(1).startswith("127.") or m.group(1) in ("localhost", "\\:\\:1", "::1"))


def make_service(options: Options, reactor: Any = None) -> service.IService:
    """Build the Powerstrip service from parsed ``options``."""
    if reactor is None:
        from twisted.internet import reactor
    config: Config | None = options["config_obj"]
    if config is None:
        log.warn("no adapters file at {path}: running as a pure pass-through proxy",
                 path=DEFAULT_CONFIG)
        config = Config.passthrough()
    limits = Limits(max_json_body=options["max-json-body"], max_response_body=options["max-response-body"])
    resource = PowerstripResource(reactor, config, options["docker_address"], limits,
                                  access_log=not options["no-access-log"])
    site = PowerstripSite(resource)
    top = service.MultiService()
    for listen in options["listen"]:
        url = docker_url_for(listen)
        if url and url.startswith("unix://"):
            clear_stale_socket(url[len("unix://"):])
        strports.service(listen, site, reactor=reactor).setServiceParent(top)
    _Announce(options, config, resource, reactor).setServiceParent(top)
    return top


def reload_config(resource: PowerstripResource, path: str) -> bool:
    """Swap in the adapters file at ``path``; on any error keep the old one.

    Requests already in flight finish with the configuration they started
    with (each exchange holds its own reference); new requests use the new one.
    """
    try:
        config = load_config(path)
    except ConfigError as e:
        log.error("powerstrip: reload rejected, keeping the current configuration: {error}", error=str(e))
        return False
    resource.config = config
    log.info("powerstrip: reloaded {src}: {routes} endpoint rule(s)", src=path, routes=len(config.endpoints))
    return True


class _Announce(service.Service):
    """Says where Powerstrip listens (the original printed the line users need)."""

    def __init__(self, options: Options, config: Config, resource: PowerstripResource, reactor: Any) -> None:
        self.options, self.config, self.resource, self.reactor = options, config, resource, reactor

    def startService(self) -> None:
        super().startService()
        routes = len(self.config.endpoints)
        log.info("powerstrip: proxying to Docker at {docker}; {routes} hooked endpoint rule(s) from {src}",
                 docker=self.options["docker_address"], routes=routes, src=self.config.source)
        for listen in self.options["listen"]:
            if listen.startswith("tcp:") and not _loopback_only(listen):
                log.warn("WARNING: {listen} accepts connections from other hosts without TLS. Anyone who "
                         "can reach it controls Docker, and so this host, as root.", listen=listen)
            url = docker_url_for(listen)
            if url:
                print(f"export DOCKER_HOST={url}", flush=True)
        # SIGHUP re-reads the adapters file (the handler runs between reactor
        # iterations, never in the middle of a request's processing).
        signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(
            reload_config, self.resource, self.options["config_path"]))
        # SIGTERM is the ordinary way to stop a service: drain (stopService),
        # then exit 0, rather than Twisted's default of re-raising the signal.
        # (Installed once the reactor runs, after its own handlers.)
        self.reactor.callWhenRunning(
            signal.signal, signal.SIGTERM, lambda *_: self.reactor.callFromThread(self._stop))

    def _stop(self) -> None:
        if self.reactor.running:  # a second SIGTERM while draining changes nothing
            self.reactor.stop()

    def stopService(self) -> Any:
        # The listeners stop accepting at the same time (MultiService stops
        # all children); requests in flight get up to --drain-timeout.
        super().stopService()
        d = self.resource.drain(self.options["drain-timeout"])
        d.addCallback(lambda _: self.resource.close())
        return d


def makeService(options: Options) -> service.IService:
    """The entry point twistd's ServiceMaker calls."""
    return make_service(options)
