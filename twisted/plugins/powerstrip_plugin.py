"""The ``powerstrip`` twistd plugin: ``twistd -n powerstrip --config adapters.yml``."""

from twisted.application.service import ServiceMaker

powerstrip = ServiceMaker(
    "powerstrip",
    "powerstrip.ops.service",
    "Docker API proxy that runs adapter pre-hooks and post-hooks on matching calls.",
    "powerstrip",
)
