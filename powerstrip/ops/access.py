"""The access log: one line per request, on by default, as cheap as a formatted write.

Each line says ``#id METHOD target -> status bytes duration`` and the hooks
called (``pre:name=1.2ms(ok)``); a hijacked stream's line comes when it
closes, with the bytes it carried. Lines are ``%``-formatted and written to
the same file as the rest of the log (twistd's, or ``--log-format json``'s),
buffered and flushed within :data:`FLUSH_DELAY` seconds -- not one
twisted.logger event each, which cost a third of a pass-through request.
Outside twistd (tests, embedding) they are twisted.logger events instead,
with the same text and fields.
"""

from __future__ import annotations

import json
import time
from typing import IO, TYPE_CHECKING, Any

from twisted.logger import Logger

if TYPE_CHECKING:
    from powerstrip.proxy.exchange import Exchange

#: The log namespace of access lines.
NAMESPACE = "powerstrip.access"
#: Seconds a written line may wait in the buffer.
FLUSH_DELAY = 0.2

log = Logger(namespace=NAMESPACE)


def line_of(exchange: Exchange) -> tuple[str, float]:
    """The access line's text (``#id METHOD target -> ...``) and the duration in ms."""
    flow = exchange.flow
    ms = (time.monotonic() - flow.started) * 1000
    head = exchange.head
    # One %-formatted line per request: the cost the access log is held to.
    line = "#%s %s %s -> %s %dB %.1fms" % (  # noqa: UP031
        flow.id,
        head.method,
        head.target,
        exchange.status,
        exchange.bytes_out,
        ms,
    )
    if flow.hooks:
        line += "".join(f" {h.phase}:{h.adapter}={h.seconds * 1000:.1f}ms({h.outcome})" for h in flow.hooks)
    splice = exchange.splice
    if splice is not None:
        line += f" stream in={splice.bytes_in}B out={splice.bytes_out}B"
    return line, ms


def fields_of(exchange: Exchange, ms: float) -> dict[str, Any]:
    """The structured fields of an access line (``--log-format json``)."""
    flow = exchange.flow
    fields: dict[str, Any] = {
        "request_id": flow.id,
        "method": exchange.head.method,
        "path": exchange.head.target,
        "status": exchange.status,
        "bytes": exchange.bytes_out,
        "duration_ms": round(ms, 1),
        "hooks": [
            {"adapter": h.adapter, "phase": h.phase, "ms": round(h.seconds * 1000, 1), "outcome": h.outcome}
            for h in flow.hooks
        ],
    }
    if exchange.splice is not None:
        fields["stream_bytes_in"] = exchange.splice.bytes_in
        fields["stream_bytes_out"] = exchange.splice.bytes_out
    return fields


class AccessLog:
    """Writes access lines to ``out`` (``None``: as twisted.logger events) in ``fmt`` (text or json)."""

    def __init__(self, reactor: Any, out: IO[str] | None = None, fmt: str = "text") -> None:
        self.reactor = reactor
        self.out = out
        self.fmt = fmt
        self._flush_call: Any = None
        self._second = -1
        self._stamp = ""

    def write(self, exchange: Exchange) -> None:
        """Log the line of an exchange that has ended."""
        text, ms = line_of(exchange)
        out = self.out
        if out is None:
            log.info("{line}", line=text, **fields_of(exchange, ms))
            return
        now = time.time()
        if self.fmt == "json":
            record = {"time": self._iso(now), "level": "info", "namespace": NAMESPACE, "message": text}
            record.update(fields_of(exchange, ms))
            out.write(json.dumps(record) + "\n")
        else:
            out.write("%s [%s#info] %s\n" % (self._text_time(now), NAMESPACE, text))  # noqa: UP031 -- cheapest
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(FLUSH_DELAY, self.flush)

    def _text_time(self, now: float) -> str:
        # twistd's own timestamp (local time, second resolution), formatted once a second.
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second))
        return self._stamp

    @staticmethod
    def _iso(now: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%03dZ" % (int(now * 1000) % 1000)  # noqa: UP031

    def flush(self) -> None:
        """Write out what is buffered."""
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()
        if self.out is not None:
            try:
                self.out.flush()
            except (OSError, ValueError):  # a closed or broken log file: lines are lost, not the proxy
                pass
