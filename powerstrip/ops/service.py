"""Command-line options and the service ``twistd -n powerstrip`` runs."""

from __future__ import annotations

import os
import re
import resource as resource_module
import signal
import socket
import stat
from typing import Any

from twisted.application import service, strports
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import usage

from powerstrip.config.spec import DEFAULT_CONFIG, Config, ConfigError, load_config
from powerstrip.hooks.events import DEFAULT_QUEUE_BOUND, EventHooks
from powerstrip.ops.access import AccessLog
from powerstrip.ops.admin import admin_site
from powerstrip.ops.exposure import exposure_warning, in_container
from powerstrip.ops.logs import FORMATS, PowerstripService
from powerstrip.ops.metrics import Metrics
from powerstrip.ops.reload import ConfigWatcher, reload_config
from powerstrip.proxy.front import DEFAULT_CLIENT_TIMEOUT, FrontFactory
from powerstrip.proxy.route import Limits, Proxy
from powerstrip.wire.endpoints import DEFAULT_DOCKER, DockerAddress
from powerstrip.wire.tls import DockerTLS, ListenerTLS, TLSConfigError, default_cert_path

DEFAULT_LISTEN = "tcp:2375:interface=127.0.0.1"

#: Log namespaces are part of the interface (log filters name them): kept across moves.
log = Logger(namespace="powerstrip.service")


def _size(value: str) -> int:
    """``16M``, ``512k``, ``1048576`` → bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)i?[bB]?\s*", value)
    if not m:
        raise ValueError(f"not a size: {value!r} (e.g. 16M)")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]


class Options(usage.Options):
    """``twistd powerstrip`` options; some fall back to an environment variable."""

    synopsis = "[--config adapters.yml] [--docker URL] [--listen ENDPOINT ...]"
    optFlags = [
        ["no-access-log", None, "Log no line per request"],
        ["verbose", "v", "Also log every hook payload and adapter reply"],
        ["watch-config", None, "Reload the adapters file when it changes (as on SIGHUP)"],
        ["tls", None, "Serve TLS on tcp: listeners (--tlscert, --tlskey)"],
        ["tlsverify", None, "Serve TLS and require client certificates signed by --tlscacert"],
        [
            "docker-tlsverify",
            None,
            "Talk TLS to Docker, verifying it, with certificates from "
            "--docker-cert-path [default: on if $DOCKER_TLS_VERIFY is set]",
        ],
    ]
    optParameters = [
        ["tlscacert", None, None, "CA certificate clients must be signed by (PEM)"],
        ["tlscert", None, None, "Powerstrip's server certificate (PEM; a chain may follow it)"],
        ["tlskey", None, None, "The key of --tlscert (PEM)"],
        [
            "docker-cert-path",
            None,
            None,
            "Directory with ca.pem, cert.pem, key.pem for TLS to Docker [default: $DOCKER_CERT_PATH, else ~/.docker]",
        ],
        [
            "client-timeout",
            None,
            DEFAULT_CLIENT_TIMEOUT,
            "Seconds a client may keep Powerstrip waiting: idle between requests, or sending a request "
            "head/body (0: never). Answers in progress and streams are never cut off",
            float,
        ],
        ["max-header-size", None, "1M", "Largest request head (request line + headers) accepted (413 above)", _size],
        [
            "admin",
            None,
            None,
            "Twisted endpoint for the admin listener: GET /healthz, GET /readyz, GET /metrics "
            "(e.g. tcp:9375:interface=127.0.0.1) [default: none]",
        ],
        ["admin-tlscert", None, None, "Serve TLS on a tcp: --admin with this certificate (PEM; a chain may follow)"],
        ["admin-tlskey", None, None, "The key of --admin-tlscert (PEM)"],
        ["admin-tlscacert", None, None, "With --admin-tlscert: require admin clients' certificates signed by this CA"],
        [
            "config",
            "c",
            None,
            f"Adapters file [default: $POWERSTRIP_CONFIG, else {DEFAULT_CONFIG}; pass-through if that is missing]",
        ],
        ["docker", "d", None, f"Docker daemon URL [default: $DOCKER_HOST, else {DEFAULT_DOCKER}]"],
        ["max-json-body", None, "16M", "Largest JSON request body handed to pre-hooks (413 above)", _size],
        ["max-response-body", None, "64M", "Largest response handed to post-hooks (502 above)", _size],
        ["max-buffered", None, "256M", "Most bytes held for hooks at once, all requests together (503 above)", _size],
        [
            "max-connections",
            None,
            None,
            "Most client connections open at once; more are answered 503 and "
            "closed [default: the open-file limit less 64, at most 10000]",
            int,
        ],
        [
            "log-format",
            None,
            "text",
            "text (twistd's lines) or json (one JSON object a line), written "
            "where twistd logs: stdout with -n, else --logfile",
        ],
        [
            "drain-timeout",
            None,
            10.0,
            "On SIGTERM, seconds to let requests in flight finish before streams are closed",
            float,
        ],
        [
            "event-queue",
            None,
            DEFAULT_QUEUE_BOUND,
            "Docker events held per event hook adapter awaiting delivery; more are dropped (counted and logged)",
            int,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Twisted server endpoint to listen on; repeatable
        [default: $POWERSTRIP_LISTEN (space-separated), else tcp:2375:interface=127.0.0.1]"""
        self["listen"].append(endpoint)

    opt_l = opt_listen

    def postOptions(self) -> None:
        env = os.environ
        self._check_log_format()
        if self["event-queue"] < 1:
            raise usage.UsageError(f"--event-queue must be at least 1, not {self['event-queue']}")
        for key in ("max-json-body", "max-response-body", "max-header-size", "max-buffered"):
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
                    "unset DOCKER_HOST or pass --docker unix:///var/run/docker.sock"
                )
        self["listener_tls"] = self._listener_tls()
        self["admin_tls"] = self._admin_tls()
        self["docker_tls"] = self._docker_tls(env)
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

    def _check_log_format(self) -> None:
        if self["log-format"] not in FORMATS:
            raise usage.UsageError(f"--log-format must be one of {', '.join(FORMATS)}, not {self['log-format']!r}")
        twistd = self.parent  # twistd's own options, parsed before ours
        if self["log-format"] == "json" and twistd is not None:
            for other in ("syslog", "logger"):
                if twistd.get(other):
                    raise usage.UsageError(
                        f"--log-format json writes to stdout or --logfile, not with twistd's --{other}"
                    )

    def _listener_tls(self) -> ListenerTLS | None:
        if not (self["tls"] or self["tlsverify"]):
            for name in ("tlscacert", "tlscert", "tlskey"):
                if self[name]:
                    raise usage.UsageError(f"--{name} needs --tls or --tlsverify")
            return None
        missing = [
            f"--{n}" for n in ("tlscert", "tlskey") + (("tlscacert",) if self["tlsverify"] else ()) if not self[n]
        ]
        if missing:
            raise usage.UsageError(f"{'--tlsverify' if self['tlsverify'] else '--tls'} needs {', '.join(missing)}")
        if not any(_is_tcp(listen) for listen in self["listen"]):
            raise usage.UsageError("--tls/--tlsverify apply to tcp: listeners, and none is given")
        tls = ListenerTLS(self["tlscert"], self["tlskey"], self["tlscacert"] if self["tlsverify"] else None)
        _check_tls(tls.options)
        return tls

    def _admin_tls(self) -> ListenerTLS | None:
        # The admin listener's own certificates: its clients (probes,
        # Prometheus) are not the Docker API's, and need not share a CA.
        cert, key, ca = self["admin-tlscert"], self["admin-tlskey"], self["admin-tlscacert"]
        if not (cert or key or ca):
            return None
        if not self["admin"]:
            raise usage.UsageError("--admin-tlscert/--admin-tlskey/--admin-tlscacert need --admin")
        if not (cert and key):
            raise usage.UsageError("TLS on --admin needs both --admin-tlscert and --admin-tlskey")
        if not _is_tcp(self["admin"]):
            raise usage.UsageError(f"--admin-tlscert applies to a tcp: --admin, not {self['admin']}")
        tls = ListenerTLS(cert, key, ca)
        _check_tls(tls.options)
        return tls

    def _docker_tls(self, env: Any) -> DockerTLS | None:
        explicit = self["docker-tlsverify"]
        if not (explicit or env.get("DOCKER_TLS_VERIFY")):
            return None
        if self["docker_address"].scheme != "tcp":
            if explicit:
                raise usage.UsageError("--docker-tlsverify needs a tcp:// Docker address")
            return None  # like the docker CLI: DOCKER_TLS_VERIFY means nothing for a unix socket
        tls = DockerTLS(self["docker-cert-path"] or env.get("DOCKER_CERT_PATH") or default_cert_path())
        _check_tls(lambda: tls.creator(self["docker_address"].location))
        return tls


def _check_tls(make: Any) -> None:
    # Read the certificates now, so a wrong path stops the start with its reason.
    try:
        make()
    except TLSConfigError as e:
        raise SystemExit(f"powerstrip: TLS: {e}") from None


def _is_tcp(listen: str) -> bool:
    return listen.startswith(("tcp:", "tcp6:"))


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


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit, as Go does for dockerd;
    returns (before, after). CPython leaves it at the common 1,024, which a
    thousand idle sockets would exhaust."""
    soft, hard = resource_module.getrlimit(resource_module.RLIMIT_NOFILE)
    if hard == resource_module.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource_module.RLIM_INFINITY and soft < hard:
        try:
            resource_module.setrlimit(resource_module.RLIMIT_NOFILE, (hard, hard))
            return soft, hard
        except (ValueError, OSError):
            pass
    return soft, soft


def connection_limit() -> int:
    """The default ``--max-connections``: the open-file limit less room for
    dockerd, adapter and listener sockets (each client may hold one of
    dockerd's too), at most 10,000."""
    soft, _ = resource_module.getrlimit(resource_module.RLIMIT_NOFILE)
    if soft == resource_module.RLIM_INFINITY:
        soft = 1 << 20
    return max(16, min(10_000, (soft - 64) // 2))


def make_service(options: Options, reactor: Any = None) -> service.IService:
    """Build the Powerstrip service from parsed ``options``."""
    if reactor is None:
        from twisted.internet import reactor
    config: Config | None = options["config_obj"]
    if config is None:
        log.warn("no adapters file at {path}: running as a pure pass-through proxy", path=DEFAULT_CONFIG)
        config = Config.passthrough()
    before, after = raise_open_file_limit()
    log.info("open-file limit: {before} -> {after}", before=before, after=after)
    timeout = options["client-timeout"] or None
    limits = Limits(
        max_json_body=options["max-json-body"],
        max_response_body=options["max-response-body"],
        max_buffered=options["max-buffered"],
        body_deadline=timeout,
    )
    # Under twistd, options.parent holds twistd's -n/--logfile: where log lines go.
    top = PowerstripService(options["log-format"], options.parent)
    access = None if options["no-access-log"] else AccessLog(reactor, fmt=options["log-format"])
    top.log_file_users.append(access)
    resource = Proxy(
        reactor,
        config,
        options["docker_address"],
        limits,
        access_log=access,
        docker_tls=options["docker_tls"],
        verbose=options["verbose"],
        metrics=Metrics,
    )
    site = FrontFactory(
        resource,
        timeout=timeout,
        max_head=options["max-header-size"],
        max_connections=options["max-connections"] or connection_limit(),
    )
    log.info("at most {n} client connections at once (--max-connections)", n=site.max_connections)
    tls: ListenerTLS | None = options["listener_tls"]
    for listen in options["listen"]:
        url = docker_url_for(listen)
        if url and url.startswith("unix://"):
            clear_stale_socket(url[len("unix://") :])
        factory = tls.wrap(site) if tls is not None and _is_tcp(listen) else site
        strports.service(listen, factory, reactor=reactor).setServiceParent(top)
    if options["watch-config"]:
        ConfigWatcher(resource, options["config_path"], reactor).setServiceParent(top)  # type: ignore[no-untyped-call]  # unannotated in Twisted
    if options["admin"]:
        admin_tls: ListenerTLS | None = options.get("admin_tls")
        warning = exposure_warning(
            options["admin"],
            "reads the routes, adapter names and metrics (/metrics) and the adapters file's path (/readyz)",
            admin_tls is not None,
            admin_tls is not None and admin_tls.ca is not None,
            in_container(),
            verify_option="--admin-tlscacert",
        )
        if warning:
            log.warn("{warning}", warning=warning.replace("WARNING: ", "WARNING: --admin ", 1))
        admin = admin_site(reactor, resource)
        strports.service(
            options["admin"], admin_tls.wrap(admin) if admin_tls else admin, reactor=reactor
        ).setServiceParent(top)
    # Not a child of its own: _Announce stops it, then closes the adapter pool it delivers through.
    events = EventHooks(resource, reactor, queue_bound=options["event-queue"], drain_timeout=options["drain-timeout"])
    _Announce(options, config, resource, reactor, events).setServiceParent(top)  # type: ignore[no-untyped-call]  # unannotated in Twisted
    return top


class _Announce(service.Service):
    """Says where Powerstrip listens (the original printed the line users need); on stop, drains
    requests and event hooks, then closes the connection pools."""

    def __init__(
        self, options: Options, config: Config, resource: Proxy, reactor: Any, events: EventHooks | None = None
    ) -> None:
        self.options, self.config, self.resource, self.reactor = options, config, resource, reactor
        #: The event hooks, started and stopped with this service.
        self.events = events

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        routes = len(self.config.endpoints)
        log.info(
            "powerstrip: proxying to Docker at {docker}{tls}; {routes} hooked endpoint rule(s) from {src}",
            docker=self.options["docker_address"],
            routes=routes,
            src=self.config.source,
            tls=" (TLS)" if self.options["docker_tls"] else "",
        )
        tls: ListenerTLS | None = self.options["listener_tls"]
        for listen in self.options["listen"]:
            verified = _is_tcp(listen) and tls is not None and tls.ca is not None
            warning = exposure_warning(
                listen, "controls Docker, and so this host, as root", tls is not None, verified, in_container()
            )
            if warning:
                log.warn("{warning}", warning=warning)
            url = docker_url_for(listen)
            if url:
                suffix = " DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=<client certificates>" if verified else ""
                print(f"export DOCKER_HOST={url}{suffix}", flush=True)
        # SIGHUP re-reads the adapters file (the handler runs between reactor
        # iterations, never in the middle of a request's processing).
        signal.signal(
            signal.SIGHUP,
            lambda *_: self.reactor.callFromThread(reload_config, self.resource, self.options["config_path"]),
        )
        # SIGTERM is the ordinary way to stop a service: drain (stopService),
        # then exit 0, rather than Twisted's default of re-raising the signal.
        # (Installed once the reactor runs, after its own handlers.)
        self.reactor.callWhenRunning(signal.signal, signal.SIGTERM, lambda *_: self.reactor.callFromThread(self._stop))
        if self.events is not None:
            self.events.startService()

    def _stop(self) -> None:
        if self.reactor.running:  # a second SIGTERM while draining changes nothing
            self.reactor.stop()

    def stopService(self) -> Any:
        # The listeners stop accepting at the same time (MultiService stops
        # all children); requests in flight get up to --drain-timeout.
        super().stopService()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        # (Any: fires with None, or with [None, None] after gatherResults; twistd ignores it.)
        d: defer.Deferred[Any] = self.resource.drain(self.options["drain-timeout"])
        if self.events is not None:  # undelivered events get the same time, alongside
            d = defer.gatherResults([d, self.events.stopService()], consumeErrors=True)
        d.addCallback(lambda _: self.resource.close())
        return d


def makeService(options: Options) -> service.IService:
    """The entry point twistd's ServiceMaker calls."""
    return make_service(options)
