"""A module with two adapters: loading it needs a name."""

from powerstrip.sdk.adapter import Adapter

first = Adapter("first")
second = Adapter("second")
