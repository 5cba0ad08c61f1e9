"""The one adapter interface, and the ways an adapter's turn can end.

Every kind of adapter Powerstrip calls is an :class:`IAdapter`: given a
:class:`~powerstrip.hooks.flow.Flow` at its turn in a chain, it fires with the
flow (changed or not) or fails with one of the outcomes below. The kinds are
implementations, not branches in the chain (:mod:`powerstrip.hooks.chain`
knows none of them):

- :class:`~powerstrip.hooks.protocols.HTTPHookAdapter`: Powerstrip's hook
  calls, protocol 1 or 2, POSTed over HTTP with treq;
- :class:`~powerstrip.hooks.protocols.InProcessHookAdapter`: the same calls to
  a ``python:`` adapter, in the process, with no HTTP hop and no JSON;
- :class:`~powerstrip.hooks.authz.AuthzAdapter`: Docker's authorization-plugin
  protocol (``type: authz``).

:func:`powerstrip.hooks.protocols.adapter_for` picks the one an adapter's spec
asks for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

from powerstrip.config.spec import AdapterSpec
from powerstrip.hooks.flow import Flow, ServerResponse, error_response

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

#: The phases of a chain an adapter is called in.
PRE_HOOK = "pre-hook"
POST_HOOK = "post-hook"


class IAdapter(Interface):
    """An adapter, as the hook chain calls it."""

    spec: AdapterSpec = Attribute("The adapter's entry in the adapters file (name, URL, timeout, policy).")

    def call(flow: Flow, phase: str) -> Deferred[Flow]:
        """Take this adapter's turn at ``flow`` in ``phase`` (:data:`PRE_HOOK` or :data:`POST_HOOK`).

        Fires with ``flow``, its request (pre-hook) or response (post-hook)
        replaced by what the adapter decided. Fails with :class:`Refused`,
        :class:`ShortCircuit`, :class:`AdapterFault`, or
        :class:`~twisted.internet.defer.CancelledError` when the call was
        cancelled (the client went away). A failed call leaves ``flow`` as it was.
        """


class IUnwindable(IAdapter):
    """An adapter that is told when a request it let through fails after all (``unwind: true``)."""

    def unwind(flow: Flow, stage: str, failed: str | None, message: str) -> Deferred[None]:
        """Tell the adapter that ``flow`` failed in ``stage`` (pre-hook, docker,
        post-hook, or client), at adapter ``failed`` (None: dockerd or the
        client), with ``message``; ``flow.response`` is what the client got.

        What goes wrong is logged here (the client has its answer already);
        fails with :class:`AdapterFault` when the adapter could not be reached,
        for the record of the call.
        """


class Refused(Exception):  # noqa: N818 -- named for what happened, as the adapter's answer
    """An adapter answered a non-2xx status on purpose: the chain stops, the client gets its answer."""

    def __init__(self, adapter: AdapterSpec, response: ServerResponse) -> None:
        super().__init__(f"adapter {adapter.name!r} refused with {response.code}")
        self.adapter = adapter
        self.response = response


class ShortCircuit(Exception):  # noqa: N818 -- named for what happens, like Refused
    """A protocol 2 pre-hook answered the request itself: the chain stops, dockerd is not called."""

    def __init__(self, adapter: AdapterSpec, response: ServerResponse) -> None:
        super().__init__(f"adapter {adapter.name!r} answered {response.code} itself")
        self.adapter = adapter
        self.response = response


class AdapterFault(Exception):
    """An adapter could not be used: down, too slow, or off-protocol; the client gets a 502/504."""

    def __init__(self, adapter: AdapterSpec, what: str, code: int = 502) -> None:
        super().__init__(f"powerstrip: adapter '{adapter.name}' ({adapter.url}): {what}")
        self.adapter = adapter
        self.code = code

    def response(self) -> ServerResponse:
        """The error the client gets: the Docker CLI prints its message."""
        return error_response(self.code, str(self))
