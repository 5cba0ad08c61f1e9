"""A module that cannot be imported."""

raise ImportError("this adapter module is broken on purpose")
