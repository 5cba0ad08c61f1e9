"""Example Powerstrip adapters.

A package so that ``python:examples.policy:adapter`` (in-process) and
``twistd -n powerstrip-adapter --module examples.policy`` import them from the
repository root.
"""
