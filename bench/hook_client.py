"""One hook call's floor: the adapter POSTed a pre-hook payload by a Twisted client, one call at a time.

Two clients, each in its own process, on one keep-alive connection to the adapter:

- ``treq``: Powerstrip's own adapter client (:class:`powerstrip.hooks.http.AdapterClient`:
  treq's ``HTTPClient`` over a persistent pool, redirects off, unbuffered, the URL
  parsed once), nothing else: the payload is ready-made JSON, the reply is
  not checked or applied, there is no chain;
- ``raw``: the smallest Twisted client that could beat it: the request as one
  ``bytes``, the reply's head found with ``bytes.find`` and its body counted by
  Content-Length.

The difference between a hook's cost in Powerstrip and ``treq`` is Powerstrip's
own work per hook; ``treq`` against ``raw`` is what treq and twisted.web's client
cost. Prints one JSON line: ``{"calls", "seconds", "p50", "p90", "p99"}`` (ms).

    python bench/hook_client.py treq|raw URL SECONDS
"""

from __future__ import annotations

import json
import sys
import time
from urllib.parse import urlsplit

from twisted.internet import defer, endpoints, reactor, task
from twisted.internet.protocol import Protocol

PAYLOAD = json.dumps(
    {
        "PowerstripProtocolVersion": 1,
        "Type": "pre-hook",
        "ClientRequest": {"Method": "GET", "Request": "/_ping", "Body": None},
    }
).encode()


class RawClient(Protocol):
    """Keep-alive HTTP/1.1 POSTs, one at a time."""

    def __init__(self, host: str, path: str) -> None:
        self.request = (
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), host.encode(), len(PAYLOAD), PAYLOAD)
        )
        self.buf = b""
        self.want = -1
        self.done: defer.Deferred[bytes] | None = None

    def call(self) -> defer.Deferred[bytes]:
        self.done = defer.Deferred()
        self.transport.write(self.request)
        return self.done

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        if self.want < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lower = self.buf[: end + 2].lower()
            i = lower.find(b"\r\ncontent-length:")
            self.want = end + 4 + int(lower[i + 17 : lower.find(b"\r\n", i + 2)])
        if len(self.buf) >= self.want:
            body, self.buf, self.want = self.buf[: self.want], self.buf[self.want :], -1
            done, self.done = self.done, None
            assert done is not None
            done.callback(body)


@defer.inlineCallbacks
def run(kind: str, url: str, seconds: float) -> defer.Generator[defer.Deferred[object], object, None]:
    parts = urlsplit(url)
    if kind == "treq":
        from powerstrip.config.spec import AdapterSpec
        from powerstrip.hooks.http import AdapterClient

        adapters = AdapterClient(reactor)
        spec = AdapterSpec("bench", url)
        payload = json.loads(PAYLOAD)

        def call() -> defer.Deferred[object]:
            return adapters.post(spec, payload)
    else:
        client = yield endpoints.connectProtocol(
            endpoints.TCP4ClientEndpoint(reactor, parts.hostname, parts.port), RawClient(parts.netloc, parts.path)
        )
        call = client.call
    for _ in range(200):  # warm-up: connection made, code paths hot
        yield call()
    times = []
    end = time.perf_counter() + seconds
    while (now := time.perf_counter()) < end:
        yield call()
        times.append(time.perf_counter() - now)
    times.sort()

    def at(q: float) -> float:
        return times[min(len(times) - 1, int(q * len(times)))] * 1000

    out = {"calls": len(times), "seconds": seconds, "p50": at(0.5), "p90": at(0.9), "p99": at(0.99)}
    print(json.dumps(out), flush=True)


def main() -> None:
    kind, url, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    if kind not in ("treq", "raw"):
        raise SystemExit("usage: hook_client.py treq|raw URL SECONDS")
    task.react(lambda _reactor: run(kind, url, seconds))


if __name__ == "__main__":
    main()
