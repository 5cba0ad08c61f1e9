"""``--log-format json``: one JSON object per log line.

Each line has ``time`` (UTC, milliseconds), ``level``, ``namespace`` and
``message`` (the text the plain format shows after its ``[namespace#level]``
prefix), ``traceback`` for failures, and the event's structured fields: those
passed to the log call that its format string does not already print (so the
access line's ``method``, ``path``, ``status``... but not the ``{line}`` that
repeats them). ``request_id`` is always kept.

twistd picks its log observer in ``AppLogger.start``, after the plugin's
``makeService`` has run: it takes the application's
:class:`twisted.logger.ILogObserver` component if there is one, else it makes
its own text observer from ``-n``/``--logfile``/``--syslog``.
:class:`PowerstripService` is the top service; when twistd attaches it to the
application, it sets that component to an observer writing to the same place
twistd would have written to: JSON lines, or twistd's own text format (so that
the access log can write to the very same file object, in order). With
twistd's ``--syslog`` or ``--logger`` (text only) it sets nothing: twistd's
choice stands, and access lines go to it as logging events.
"""

from __future__ import annotations

import json
import signal
import string
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, cast

from twisted.application import service
from twisted.internet.protocol import Factory
from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogEvent,
    PredicateResult,
    formatEvent,
    textFileLogObserver,
)
from twisted.python import logfile
from twisted.python.components import Componentized
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from constantly import NamedConstant

FORMATS = ("text", "json")

#: Keys of legacy (``twisted.python.log``) events that repeat what the fixed
#: keys already say; dropped from the structured fields.
_LEGACY_KEYS = frozenset({"message", "time", "system", "isError", "format", "failure", "why", "printed", "logLevel"})
#: The keys every line has; an event field of the same name never replaces them.
_FIXED_KEYS = ("time", "level", "namespace", "message", "traceback", "request_id")


def _iso_time(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    try:
        moment = datetime.fromtimestamp(timestamp, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fields_in(fmt: Any) -> set[str]:
    """The event keys a Twisted format string prints (``{a}``, ``{a.b}``, ``{a()}``, ``{a[0]}``)."""
    if not isinstance(fmt, str):
        return set()
    names = set()
    try:
        for _, name, _, _ in string.Formatter().parse(fmt):
            if name:
                names.add(name.split(".", 1)[0].split("[", 1)[0].removesuffix("()"))
    except ValueError:  # a broken format: formatEvent says so in the message
        pass
    return names


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def _encode(value: Any, depth: int = 0) -> str:
    """``value`` as JSON; whatever JSON cannot hold (objects, NaN, odd keys, cycles) as its repr."""
    try:
        # ASCII only: a lone surrogate or an odd stdout encoding never breaks a line.
        return json.dumps(value, default=_safe_repr, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        pass
    # Keep what can be kept of a container; a cycle ends in the repr at the depth limit.
    if isinstance(value, Mapping) and depth < 8:
        return "{" + ", ".join(f"{json.dumps(_key(k))}: {_encode(v, depth + 1)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)) and depth < 8:
        return "[" + ", ".join(_encode(v, depth + 1) for v in value) + "]"
    return json.dumps(_safe_repr(value))


def _key(key: Any) -> str:
    return key if isinstance(key, str) else _safe_repr(key)


def _failure_of(event: LogEvent) -> Failure | None:
    failure = event.get("log_failure")
    if failure is None and event.get("isError"):
        failure = event.get("failure")  # legacy log.err()
    return failure if isinstance(failure, Failure) else None


def _traceback(failure: Failure) -> str:
    try:
        return failure.getTraceback()
    except Exception as e:
        return f"(unable to obtain traceback: {_safe_repr(e)})"


def json_record(event: LogEvent) -> dict[str, Any] | None:
    """The JSON object for ``event``, or ``None`` for one the text format prints nothing for."""
    failure = _failure_of(event)
    if "log_text" in event and failure is not None and "log_failure" not in event:
        # A legacy log.err(): its log_text has the traceback after the "why".
        message = str(event.get("why") or "Unhandled Error")
    else:
        message = formatEvent(event)
    if not message and failure is None:
        return None
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": _iso_time(event.get("log_time")),
        "level": getattr(level, "name", None) or "info",
        "namespace": event.get("log_namespace", "-"),
        "message": message,
    }
    if failure is not None:
        record["traceback"] = _traceback(failure)
    if event.get("request_id") is not None:
        record["request_id"] = event["request_id"]
    printed = _fields_in(event.get("log_format"))
    for key, value in event.items():
        if (
            not isinstance(key, str)
            or key.startswith("log_")
            or key in printed
            or key in _FIXED_KEYS
            or ("isError" in event and key in _LEGACY_KEYS)
        ):
            continue
        record[key] = value
    return record


def format_json_line(event: LogEvent) -> str | None:
    """One log line for ``event``: a JSON object and a newline (``None``: nothing to log)."""
    try:
        record = json_record(event)
        if record is None:
            return None
        return "{" + ", ".join(f"{json.dumps(k)}: {_encode(v)}" for k, v in record.items()) + "}\n"
    except Exception as e:
        # Never lose the event to a bug here: say what is known about it.
        return (
            json.dumps(
                {
                    "time": _iso_time(event.get("log_time")),
                    "level": "error",
                    "namespace": "powerstrip.logs",
                    "message": f"unable to format a log event: {_safe_repr(e)}",
                }
            )
            + "\n"
        )


def json_file_observer(out: IO[Any]) -> FileLogObserver:
    """An observer writing JSON lines to ``out`` (a text or binary file)."""
    return FileLogObserver(out, format_json_line)


def twistd_log_file(twistd_options: Mapping[str, Any] | None, reactor: Any = None) -> IO[Any]:
    """Where twistd would write its log: the same choice as twistd's own (Unix) logger.

    stdout for ``--logfile=-`` or ``-n`` without ``--logfile``; else the
    ``--logfile`` (default ``twistd.log``) as a size-rotated
    :class:`~twisted.python.logfile.LogFile` that SIGUSR1 also rotates; either way with its
    writes held until a flush (:class:`HeldLog`).
    """
    opts = twistd_options or {}
    name = opts.get("logfile") or ""
    nodaemon = opts.get("nodaemon", False) if twistd_options is not None else True
    if name == "-":
        if not nodaemon:
            sys.exit("Daemons cannot log to stdout, exiting!")
        return cast(IO[Any], HeldLog(sys.stdout))
    if not name and nodaemon:
        return cast(IO[Any], HeldLog(sys.stdout))
    out = HeldLog(logfile.LogFile.fromFullPath(name or "twistd.log"))
    if not signal.getsignal(signal.SIGUSR1):  # unless someone has a use for it already
        if reactor is None:
            from twisted.internet import reactor

        signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(out.rotate))
    return cast(IO[Any], out)  # not an IO, but file-like: write and flush, all a log observer uses


class HeldLog:
    """A log file (twistd's LogFile, or stdout) whose writes wait for ``flush``.

    twistd's LogFile is unbuffered, and so is stdout under ``PYTHONUNBUFFERED``
    (which the image sets, as most Python images do): a ``write`` system call for
    every write. The log observer flushes after each event, so its lines go out
    as before; the access log writes a line per request and flushes within
    :data:`powerstrip.ops.access.FLUSH_DELAY`, so those lines go out in batches,
    in their order among the rest (one buffer for both).
    """

    #: Held text beyond which a write flushes at once.
    LIMIT = 64 * 1024

    def __init__(self, log_file: Any) -> None:
        self.log_file = log_file
        self._held: list[str] = []
        self._size = 0

    def write(self, data: str | bytes) -> None:
        """Hold ``data`` (text; bytes are UTF-8) until the next flush."""
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        self._held.append(text)
        self._size += len(text)
        if self._size >= self.LIMIT:
            self.flush()

    def flush(self) -> None:
        """Write what is held to the file, in one write."""
        if self._held:
            text, self._held, self._size = "".join(self._held), [], 0
            self.log_file.write(text)
        self.log_file.flush()

    def rotate(self) -> None:
        """Flush, then rotate the file (SIGUSR1; a LogFile only)."""
        self.flush()
        self.log_file.rotate()

    def close(self) -> None:
        """Flush and close the file."""
        self.flush()
        self.log_file.close()


def _chatter(event: LogEvent) -> NamedConstant:  # a PredicateResult, as ILogFilterPredicate says
    # "Starting factory" / "Stopping factory" of twisted.web's HTTP client: one
    # pair per adapter or readiness connection, which is most of a log otherwise.
    factory = event.get("factory")
    if (
        isinstance(factory, Factory)
        and type(factory).__module__.startswith("twisted.web.")
        and str(event.get("log_format", "")).startswith(("Starting factory", "Stopping factory"))
    ):
        return PredicateResult.no
    return PredicateResult.maybe


def quiet_client_factories(observer: Any) -> FilteringLogObserver:
    """``observer`` without twisted.web's per-connection client factory lines."""
    # A plain function is a predicate to Twisted (it only calls it); mypy wants the interface.
    return FilteringLogObserver(observer, [cast(ILogFilterPredicate, _chatter)])


class PowerstripService(service.MultiService):
    """Powerstrip's top service; under twistd it also sets up the log format.

    ``twistd_options`` are twistd's own options (``--logfile``, ``-n``):
    ``None`` outside twistd.
    """

    def __init__(self, log_format: str = "text", twistd_options: Mapping[str, Any] | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self.log_format = log_format
        self.twistd_options = twistd_options
        #: Objects with an ``out`` attribute (the access log) given the log file once it is known.
        self.log_file_users: list[Any] = []

    def setServiceParent(self, parent: Any) -> None:
        # twistd attaches the service to its Componentized application right
        # before AppLogger.start looks the observer up on it (app.py, run()).
        # The observer is set here in both formats, so that the access log can
        # write to the very file object it writes to (one buffer, in order).
        opts = self.twistd_options or {}
        elsewhere = self.log_format == "text" and (opts.get("syslog") or opts.get("logger"))
        if isinstance(parent, Componentized) and parent.getComponent(ILogObserver, None) is None and not elsewhere:
            out = twistd_log_file(self.twistd_options)
            observer = json_file_observer(out) if self.log_format == "json" else textFileLogObserver(out)
            parent.setComponent(ILogObserver, quiet_client_factories(observer))
            for user in self.log_file_users:
                if user is not None:
                    user.out = out
        super().setServiceParent(parent)  # type: ignore[no-untyped-call]  # unannotated in Twisted
