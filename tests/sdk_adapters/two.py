"""A module with two adapters: loading it needs a name."""

from powerstrip.sdk import Adapter

first = Adapter("first")
second = Adapter("second")
