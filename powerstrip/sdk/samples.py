"""Sample calls: real payloads, as Powerstrip sent them to an adapter.

Protocol 1's were captured with ``--verbose`` (and ``examples/label_adapter.py
--record``, which logs the same payloads) with Powerstrip in front of a real
dockerd 20.10, driven by the docker 28 CLI: a pre-hook each for
``containers/create`` (the CLI's full body), ``start`` and ``inspect``, and
post-hooks for their responses, an error (404) included.

Protocol 2's are the same calls recorded by a protocol 2 adapter, so they
carry the CLI's real headers, Docker's response headers, request ids and
callers (a uid-1000 user on Powerstrip's unix socket, a TLS client with a
certificate, plain TCP); plus ``unwind`` calls (dockerd's 409 for a name in
use; a later pre-hook's refusal; a client whose connection was reset while a
later pre-hook was at work) and ``event`` calls carrying events read from
that dockerd's ``GET /events``.

They live in ``powerstrip/sdk/schemas/v<N>/samples.json``, one list per protocol
version. ``powerstrip adapter-test`` sends them to an adapter; the tests check
that each one validates against its call schema (:mod:`powerstrip.sdk.schema`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

_cache: dict[int, tuple[Sample, ...]] = {}


@dataclass(frozen=True)
class Sample:
    """One hook call as Powerstrip sends it."""

    #: A short name, e.g. ``create`` or ``start-404``.
    name: str
    #: The call's ``Type``: ``pre-hook`` or ``post-hook`` (the call schema is ``v<N>/<hook>``, the
    #: reply's ``v<N>/<hook>-reply``), or, in protocol 2, ``unwind`` or ``event`` (any 2xx answer will do).
    hook: str
    #: How it was captured, or what makes it interesting.
    note: str
    #: The JSON payload (decoded). Shared between callers: do not modify it.
    payload: dict[str, Any]


def samples(protocol: int = 1) -> tuple[Sample, ...]:
    """The sample calls of protocol version ``protocol`` (read once, then cached).

    :raises FileNotFoundError: that version has no samples.
    """
    found = _cache.get(protocol)
    if found is None:
        text = resources.files("powerstrip.sdk").joinpath(f"schemas/v{protocol}/samples.json").read_text("utf-8")
        found = _cache[protocol] = tuple(
            Sample(s["name"], s["type"], s["note"], s["payload"]) for s in json.loads(text)
        )
    return found
