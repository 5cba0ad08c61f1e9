"""What adapter authors import: write, serve and test an adapter in Python.

::

    from powerstrip.sdk import Adapter, Refuse

- :mod:`.adapter`: the SDK's :class:`Adapter` (hook functions registered by rule, calls
  dispatched to them, :func:`load`), and :mod:`.messages`: the typed :class:`Request`,
  :class:`Response`, :class:`Headers`, :class:`Caller` its hooks get; both re-exported here;
- :mod:`.server`: serving an :class:`Adapter` over HTTP (``twistd powerstrip-adapter``);
- :mod:`.testing`: a test kit (a real Powerstrip, a fake dockerd, a recording adapter);
- :mod:`.schema`: the protocol's JSON Schemas and their validator; :mod:`.samples`: real calls.

May import: :mod:`powerstrip.wire` (the rule grammar a hook is registered with is
:mod:`powerstrip.wire.rules`). Never the proxy or its configuration: an adapter runs without them.
"""

from powerstrip.sdk.adapter import PROTOCOL_VERSION, PROTOCOL_VERSIONS, Adapter, load
from powerstrip.sdk.messages import (
    BadPayload,
    Caller,
    Certificate,
    Headers,
    NeedsProtocol2,
    Refuse,
    Request,
    RequestFailure,
    Response,
    UnreadableBody,
    UnreadableTarget,
)

__all__ = [
    "PROTOCOL_VERSION",
    "PROTOCOL_VERSIONS",
    "Adapter",
    "BadPayload",
    "Caller",
    "Certificate",
    "Headers",
    "NeedsProtocol2",
    "Refuse",
    "Request",
    "RequestFailure",
    "Response",
    "UnreadableBody",
    "UnreadableTarget",
    "load",
]
