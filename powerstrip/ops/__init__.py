"""Operating Powerstrip: the service twistd runs and what watches it.

:mod:`.service` (options, listeners, start and stop), :mod:`.cli` and
:mod:`.healthcheck` (the ``powerstrip`` command), :mod:`.metrics` and
:mod:`.access` (observers of every request's end), :mod:`.logs` (log formats),
:mod:`.admin` (the admin listener), :mod:`.reload` (SIGHUP and file watch),
:mod:`.exposure` (who can reach a listener).

May import: everything below it (:mod:`powerstrip.proxy`, :mod:`powerstrip.hooks`,
:mod:`powerstrip.sdk`, :mod:`powerstrip.config`, :mod:`powerstrip.wire`).
Nothing in the package imports it but the twistd plugins.
"""
