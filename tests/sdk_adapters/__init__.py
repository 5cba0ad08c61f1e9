"""SDK adapters the tests load by name (``python:tests.sdk_adapters.sample:adapter``)."""
