"""A trivial pass-through adapter written with the SDK (powerstrip.sdk), for bench/run.py.

The same module runs two ways in the hook-cost section:

- in-process: adapter URL ``python:bench.sdk_adapter:adapter`` (Powerstrip runs
  from the repository root, so ``bench`` is importable);
- over HTTP: ``twistd -n powerstrip-adapter --module bench.sdk_adapter:adapter
  --listen tcp:PORT:interface=127.0.0.1``.

Both hooks leave the call unchanged (return ``None``), like bench/fast_adapter.py
echoes it back. They count their calls; with ``$BENCH_SDK_STATS`` set, the counts
are written there as JSON when the process shuts down (so that run.py can check
every request went through the hook, without a stats endpoint).
"""

from __future__ import annotations

import json
import os

from powerstrip.sdk import Adapter, Request, Response

adapter = Adapter("bench-sdk")

CALLS = {"pre": 0, "post": 0}
_dump_armed = False


def _count(kind: str) -> None:
    global _dump_armed
    CALLS[kind] += 1
    if not _dump_armed:
        _dump_armed = True
        path = os.environ.get("BENCH_SDK_STATS")
        if path:
            from twisted.internet import reactor  # the running one: installed by twistd by now

            def dump() -> None:
                with open(path, "w") as f:
                    json.dump(CALLS, f)

            reactor.addSystemEventTrigger("before", "shutdown", dump)


@adapter.pre_hook
def pass_request(request: Request) -> None:
    _count("pre")


@adapter.post_hook
def pass_response(request: Request, response: Response) -> None:
    _count("post")
