"""The hook machinery: calling adapters and applying what they decide.

- :mod:`.flow`: one request as hooks see it (the hook call), and :mod:`.peer`: who sent it;
- :mod:`.interface`: :class:`~.interface.IAdapter`, the one interface every kind of adapter
  implements, and the outcomes of a call (:class:`~.interface.Refused`, :class:`~.interface.AdapterFault`);
- its implementations: :mod:`.protocols` (hook calls of protocol 1 and 2, over HTTP or in process)
  and :mod:`.authz` (Docker's authorization-plugin protocol); :mod:`.http` is their treq client;
- :mod:`.chain`: pre-hooks and post-hooks as a chain of Deferreds, knowing no protocol;
- :mod:`.body`: what hooks are shown of a body; :mod:`.redact`: credentials hidden from them;
- :mod:`.events`: Docker events posted to adapters.

May import: :mod:`powerstrip.wire`, :mod:`powerstrip.config`, :mod:`powerstrip.sdk`.
"""
