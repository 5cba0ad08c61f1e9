"""The ``powerstrip-adapter`` twistd plugin: ``twistd -n powerstrip-adapter --module mymodule``."""

from twisted.application.service import ServiceMaker

powerstrip_adapter = ServiceMaker(
    "powerstrip-adapter",
    "powerstrip.adapter_server",
    "Serve a Powerstrip adapter written with powerstrip.adapter over HTTP.",
    "powerstrip-adapter",
)
