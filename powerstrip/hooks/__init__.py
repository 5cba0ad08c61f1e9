"""The hook machinery: calling adapters and applying what they decide.

- :mod:`.flow`: one request as hooks see it (the hook call), and :mod:`.peer`: who sent it;
- :mod:`.interface`: :class:`~.interface.IAdapter`, the one interface every kind of adapter
  implements, and the outcomes of a call (:class:`~.interface.Refused`,
  :class:`~.interface.ShortCircuit`, :class:`~.interface.AdapterFault`);
- its implementations: :mod:`.protocols` (Powerstrip's hook calls, protocol 1 and 2, over HTTP
  or in process; :func:`~.protocols.adapter_for` picks the kind) and :mod:`.authz` (Docker's
  authorization-plugin protocol); :mod:`.http` reaches an adapter (treq, pooled), knowing no protocol;
- :mod:`.chain`: pre-hooks and post-hooks as a chain of Deferreds, knowing adapters only as
  :class:`~.interface.IAdapter`;
- :mod:`.body`: what hooks are shown of a body; :mod:`.redact`: credentials hidden from them;
- :mod:`.events`: Docker events posted to adapters.

May import: :mod:`powerstrip.wire`, :mod:`powerstrip.sdk`, :mod:`powerstrip.config`.
"""
