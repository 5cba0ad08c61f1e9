"""The hook chain: pre-hooks and post-hooks as a chain of Deferreds.

Each hook's output is the next hook's input, in route order. A pre-hook
chain ends in one of four ways: the final request (go on to dockerd),
:class:`~powerstrip.hooks.interface.Refused` (the client gets the adapter's
answer, dockerd is never called), :class:`~powerstrip.hooks.interface.ShortCircuit`
(an adapter answered itself: likewise) or
:class:`~powerstrip.hooks.interface.AdapterFault` (the client gets a
502/504). A post-hook chain likewise ends with the final response, a
refusal, or a fault. When a request fails after ``unwind: true`` adapters'
pre-hooks succeeded, :meth:`HookChain.run_unwind` tells them.

The chain knows adapters only as :class:`~powerstrip.hooks.interface.IAdapter`:
what an adapter's protocol is, and how it is reached, is its own business
(:mod:`powerstrip.hooks.protocols`, :mod:`powerstrip.hooks.authz`). What the
chain does for every kind alike is the adapters file's policy: the order,
``failure: ignore``, ``unwind: true``, and a record of each call for the
access log and metrics.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from powerstrip.config.spec import AdapterSpec
from powerstrip.hooks.flow import Flow, HookRecord
from powerstrip.hooks.http import AdapterClient
from powerstrip.hooks.interface import POST_HOOK, PRE_HOOK, AdapterFault, IAdapter, IUnwindable
from powerstrip.hooks.protocols import adapter_for

#: Log namespaces are part of the interface (log filters name them): kept across moves.
log = Logger(namespace="powerstrip.hooks")

#: Adapters kept built (one per spec; a reload brings new specs, old ones are
#: dropped when there are more than this).
_KEPT = 1024


def _outcome(result: Any) -> str:
    """A call's outcome as recorded: ``ok``, or what ended it (an exception may name itself)."""
    if not isinstance(result, Failure):
        return "ok"
    return getattr(result.value, "outcome", None) or type(result.value).__name__


class HookChain:
    """Runs a flow's pre-hooks and post-hooks, each adapter as an :class:`IAdapter`.

    ``client`` reaches the adapters; with ``verbose``, each adapter logs every
    call it sends and every reply (or refusal).
    """

    def __init__(self, client: AdapterClient, verbose: bool = False) -> None:
        self.client = client
        self.verbose = verbose
        # By identity: equal specs may differ in what compares as equal
        # (a python: adapter's object), and a spec lives as long as its config.
        self._adapters: dict[int, tuple[AdapterSpec, IAdapter]] = {}

    def adapter(self, spec: AdapterSpec) -> IAdapter:
        """The adapter ``spec`` describes (built once per spec)."""
        entry = self._adapters.get(id(spec))
        if entry is None or entry[0] is not spec:
            if len(self._adapters) >= _KEPT:
                self._adapters.clear()
            entry = self._adapters[id(spec)] = (spec, adapter_for(spec, self.client, self.verbose))
        return entry[1]

    def run_pre(self, flow: Flow) -> defer.Deferred[Flow]:
        """Fire with ``flow`` once every pre-hook has had its turn at ``flow.request``."""
        return self._run(flow, flow.route.pre, PRE_HOOK)

    def run_post(self, flow: Flow) -> defer.Deferred[Flow]:
        """Fire with ``flow`` once every post-hook has had its turn at ``flow.response``."""
        return self._run(flow, flow.route.post, POST_HOOK)

    def _run(self, flow: Flow, specs: tuple[AdapterSpec, ...], phase: str) -> defer.Deferred[Flow]:
        d: defer.Deferred[Flow] = defer.succeed(flow)
        for spec in specs:
            d.addCallback(self._turn, self.adapter(spec), phase)
        return d

    def _turn(self, flow: Flow, adapter: IAdapter, phase: str) -> defer.Deferred[Flow]:
        """One adapter's turn: its call, recorded, and the adapters file's policy applied."""
        started = time.monotonic()

        def record(result: Any) -> Any:
            flow.hooks.append(HookRecord(adapter.spec.name, phase, time.monotonic() - started, _outcome(result)))
            return result

        d = adapter.call(flow, phase).addBoth(record)
        if phase == PRE_HOOK and adapter.spec.unwind:
            d.addCallback(self._prepared, adapter)
        if adapter.spec.ignore_faults:
            d.addErrback(self._ignore_fault, flow)
        return d

    @staticmethod
    def _prepared(flow: Flow, adapter: IAdapter) -> Flow:
        # The adapters file allows unwind: true only where the kind can unwind:
        # IUnwindable() says so, and fails loudly were it ever not so.
        flow.prepared.append(IUnwindable(adapter))
        return flow

    @staticmethod
    def _ignore_fault(failure: Failure, flow: Flow) -> Flow | Failure:
        """``failure: ignore``: a fault (never a refusal) leaves the flow as it was."""
        fault = failure.value
        if not isinstance(fault, AdapterFault):
            return failure
        log.warn(
            "{flow}: ignoring fault ({adapter} has failure: ignore): {error}",
            flow=flow.id,
            adapter=fault.adapter.name,
            error=str(fault),
            request_id=flow.id,
        )
        return flow

    def run_unwind(self, flow: Flow, stage: str, failed: str | None, message: str) -> defer.Deferred[None]:
        """Call the ``unwind: true`` adapters whose pre-hook succeeded, in reverse order.

        ``flow.response`` is what the client got (None: nothing, it went away);
        ``stage`` where the request failed (pre-hook, docker, post-hook, or
        client: it left before the request was sent) and ``failed`` the adapter
        that refused or faulted (None for dockerd or the client). Failures are
        logged and recorded, never raised.
        """
        d: defer.Deferred[None] = defer.succeed(None)
        for adapter in reversed(flow.prepared):
            d.addCallback(self._unwind_one, flow, adapter, stage, failed, message)
        return d

    @staticmethod
    def _unwind_one(
        _: None, flow: Flow, adapter: IUnwindable, stage: str, failed: str | None, message: str
    ) -> defer.Deferred[None]:
        started = time.monotonic()

        def record(result: Any) -> None:
            flow.hooks.append(HookRecord(adapter.spec.name, "unwind", time.monotonic() - started, _outcome(result)))

        return adapter.unwind(flow, stage, failed, message).addBoth(record)
