"""The adapters file: what it says (:mod:`.spec`) and which rules a request meets (:mod:`.matching`).

An adapter's configuration is an :class:`~.spec.AdapterSpec` (a URL, a
protocol, a timeout...), never to be confused with the SDK's
:class:`powerstrip.sdk.Adapter`, which is an adapter's code.

May import: :mod:`powerstrip.wire`, :mod:`powerstrip.sdk` (a ``python:`` adapter URL names an SDK adapter).
"""
