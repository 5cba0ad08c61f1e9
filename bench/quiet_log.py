"""A twistd log observer for the benchmark's "access log off" experiment.

``twistd --logger quiet_log.observer`` (with bench/ on PYTHONPATH): events
below ``warn`` are dropped before they are formatted or written, so the
per-request access line Powerstrip emits at ``info`` costs only its
``Logger.info`` call. It shows what the text log observer costs per
request; Powerstrip itself is run unchanged.
"""

import sys

from twisted.logger import FilteringLogObserver, LogLevel, LogLevelFilterPredicate, textFileLogObserver


def observer():
    return FilteringLogObserver(textFileLogObserver(sys.stdout),
                                [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)])
