"""The benchmark (bench/run.py): a package so that Powerstrip can import
``bench.sdk_adapter`` in-process (adapter URL ``python:bench.sdk_adapter:adapter``)."""
