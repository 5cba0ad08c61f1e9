"""Deprecated: ``powerstrip.adapter`` is now ``powerstrip.sdk``; this alias will be removed in 2.0.

Adapters written before the package was laid out in subpackages keep
working unchanged; they get a :class:`DeprecationWarning` naming the new import.
"""

import warnings

from powerstrip.sdk import *  # noqa: F403 -- the whole public surface, as before
from powerstrip.sdk import __all__  # noqa: F401

warnings.warn("powerstrip.adapter is deprecated: import from powerstrip.sdk", DeprecationWarning, stacklevel=2)
