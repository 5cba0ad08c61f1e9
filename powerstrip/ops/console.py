"""The ``powerstrip`` console script: ``healthcheck`` at once, every other command through :mod:`.cli`.

A container health check runs every few seconds: ``powerstrip healthcheck``
answers from :mod:`.healthcheck` alone, without importing Twisted, and only
the other commands pay for loading :mod:`.cli` (imported when one is asked for).
"""

from __future__ import annotations

import argparse
import sys

from powerstrip.ops import healthcheck


def console() -> int:
    """Run the command ``sys.argv`` names; return its exit status."""
    if sys.argv[1:2] == ["healthcheck"]:
        parser = argparse.ArgumentParser(prog="powerstrip healthcheck")
        healthcheck.add_arguments(parser)
        return healthcheck.run(parser.parse_args(sys.argv[2:]), parser)
    from powerstrip.ops.cli import main  # the heavy part, for the commands that need it

    return main()
