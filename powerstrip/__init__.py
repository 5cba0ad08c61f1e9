"""Powerstrip: extend Docker without patching it.

An HTTP proxy between Docker clients and dockerd that calls HTTP adapters
(pre-hooks and post-hooks) for the API calls matched in ``adapters.yml``.
"""

__version__ = "1.0.0"
