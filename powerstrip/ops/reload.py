"""Replacing the adapters file while Powerstrip runs: SIGHUP, or a file watch."""

from __future__ import annotations

import os
from typing import Any

from twisted.application import service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from powerstrip.config.spec import ConfigError, load_config

#: Log namespaces are part of the interface (log filters name them): kept across moves.
log = Logger(namespace="powerstrip.reload")


def reload_config(resource: Any, path: str) -> bool:
    """Swap in the adapters file at ``path``; on any error keep the old one.

    Requests already in flight finish with the configuration they started
    with (each exchange holds its own reference); new requests use the new one.
    """
    try:
        config = load_config(path)
    except ConfigError as e:
        log.error("powerstrip: reload rejected, keeping the current configuration: {error}", error=str(e))
        resource.metrics.reloaded(False)
        return False
    resource.config = config
    resource.metrics.reloaded(True)
    log.info("powerstrip: reloaded {src}: {routes} endpoint rule(s)", src=path, routes=len(config.endpoints))
    return True


def _signature(path: str) -> tuple[int, int, int, int] | None:
    # stat() follows symlinks, so an atomic rename and a Kubernetes ConfigMap's
    # symlink swap are seen as well as an edit in place.
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class ConfigWatcher(service.Service):
    """``--watch-config``: reload when the file changes (polled).

    A change is acted on once the file has looked the same for one more
    interval, so an editor still writing it does not cause a rejected reload.
    A file that disappears is reported and the current configuration kept.
    """

    def __init__(self, resource: Any, path: str, reactor: Any, interval: float = 1.0) -> None:
        self.resource, self.path, self.interval = resource, path, interval
        self._loop = LoopingCall(self.check)
        self._loop.clock = reactor
        self._current = _signature(path)
        self._seen = self._current

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self._loop.start(self.interval, now=False)

    def stopService(self) -> Any:
        super().stopService()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        if self._loop.running:
            self._loop.stop()

    def check(self) -> None:
        """One poll: reload if the file changed and has settled."""
        now = _signature(self.path)
        settled, self._seen = now == self._seen, now
        if now == self._current or not settled:
            return
        self._current = now
        if now is None:
            log.error("powerstrip: {path} is gone; keeping the current configuration", path=self.path)
            self.resource.metrics.reloaded(False)  # a change that could not be applied
            return
        reload_config(self.resource, self.path)
