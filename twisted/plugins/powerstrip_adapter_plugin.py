"""The ``powerstrip-adapter`` twistd plugin: ``twistd -n powerstrip-adapter --module mymodule``."""

from twisted.application.service import ServiceMaker

powerstrip_adapter = ServiceMaker(
    "powerstrip-adapter",
    "powerstrip.sdk.server",
    "Serve a Powerstrip adapter written with powerstrip.sdk.adapter over HTTP.",
    "powerstrip-adapter",
)
