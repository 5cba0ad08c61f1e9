"""slowreq: make every call it hooks wait a while, without holding anything else up.

The original Powerstrip's demo of an asynchronous adapter: each pre-hook call
is answered, unchanged, after a delay. The delay is a timer on the reactor
(:func:`twisted.internet.task.deferLater`), not a sleep, so while one call
waits every other call keeps flowing: other hook calls to this adapter, and,
when it runs inside Powerstrip, everything Powerstrip proxies. Which calls
are delayed is up to adapters.yml.

Settings (environment variables, read when the module is imported; a
malformed one stops the adapter, or Powerstrip, at start-up with a message):

``SLOWREQ_DELAY``
    Seconds to wait before answering, a non-negative number (default ``1``).
    Keep it below the adapter's ``timeout`` in adapters.yml (30s by default).

Run it as its own service::

    SLOWREQ_DELAY=2 twistd -n powerstrip-adapter --module examples.slowreq --listen tcp:8084:interface=127.0.0.1

with ``slowreq: http://127.0.0.1:8084/`` under ``adapters:`` in adapters.yml,
or inside Powerstrip (no HTTP hop; set the variable in Powerstrip's
environment) with ``slowreq: python:examples.slowreq:adapter``. Either way,
run it from the repository root so that ``examples`` is importable::

    version: 1
    endpoints:
      "POST /*/containers/create":
        pre: [slowreq]
    adapters:
      slowreq: python:examples.slowreq:adapter
"""

from __future__ import annotations

import math
import os

from twisted.internet import defer, task

from powerstrip.sdk import Adapter, Request

adapter = Adapter("slowreq")


def parse_delay(value: str | None) -> float:
    """Parse ``SLOWREQ_DELAY`` (default 1 second).

    :raises ValueError: unless it is a finite, non-negative number.
    """
    if value is None or not value.strip():
        return 1.0
    try:
        delay = float(value)
    except ValueError:
        raise ValueError(f"SLOWREQ_DELAY: {value!r} is not a number of seconds") from None
    if not math.isfinite(delay) or delay < 0:
        raise ValueError(f"SLOWREQ_DELAY: {value!r} must be a non-negative number of seconds")
    return delay


SLOWREQ_DELAY = parse_delay(os.environ.get("SLOWREQ_DELAY"))


@adapter.pre_hook
def delay(request: Request) -> defer.Deferred:
    """Answer with the request unchanged, ``SLOWREQ_DELAY`` seconds from now."""
    # Imported at call time: importing it at module import would install the
    # default reactor before the program running this adapter chose one.
    from twisted.internet import reactor

    return task.deferLater(reactor, SLOWREQ_DELAY, lambda: None)
