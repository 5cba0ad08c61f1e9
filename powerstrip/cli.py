"""The ``powerstrip`` command: look at an adapters file without running the proxy.

- ``powerstrip check [adapters.yml]`` validates the file and prints the
  routing table: each endpoint rule with its pre- and post-hooks in the order
  they run, and each adapter's URL and policy.
- ``powerstrip explain "POST /v1.41/containers/create" [--config FILE]``
  shows which rules match that call and which hooks would run, in order.

Exit status: 0, or 1 for an invalid file (its error on stderr), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys

from powerstrip.config import DEFAULT_CONFIG, Adapter, Config, ConfigError, load_config
from powerstrip.exchange import streams_unhooked
from powerstrip.matching import match


def _names(adapters: tuple[Adapter, ...]) -> str:
    return " -> ".join(a.name for a in adapters) or "-"


def _policy(adapter: Adapter) -> str:
    return f"timeout {adapter.timeout:g}s, failure: {'ignore' if adapter.ignore_faults else 'fail'}"


def routing_table(config: Config) -> str:
    """The rules and adapters of ``config``, as ``check`` prints them."""
    lines = [f"{config.source}: valid, {len(config.endpoints)} endpoint rule(s), "
             f"{len(config.adapters)} adapter(s)", ""]
    width = max((len(e.pattern) for e in config.endpoints), default=0)
    lines += [f"  {e.pattern:<{width}}  pre: {_names(e.pre)}  post: {_names(e.post)}" for e in config.endpoints]
    if config.adapters:
        lines.append("")
        width = max(len(name) for name in config.adapters)
        lines += [f"  {name:<{width}}  {a.url}  ({_policy(a)})" for name, a in config.adapters.items()]
    return "\n".join(lines)


def explain(config: Config, call: str) -> str:
    """Which rules match ``call`` (``"METHOD /path?query"``) and which hooks run."""
    method, _, uri = call.strip().partition(" ")
    path = uri.strip().split("?", 1)[0]
    if not method or not path.startswith("/"):
        raise ValueError(f"expected 'METHOD /path', e.g. 'POST /v1.41/containers/create', not {call!r}")
    route = match(config, method.upper(), path)
    lines = [f"{method.upper()} {path}"]
    if not route.hooked:
        lines.append("  no rule matches: passed straight to Docker")
        return "\n".join(lines)
    lines.append(f"  matching rules (file order): {', '.join(route.patterns)}")
    lines.append(f"  pre-hooks:  {_names(route.pre)}")
    post = _names(route.post)
    if route.post and streams_unhooked(path):
        post += "  (skipped: this call's response streams, see the README's limits)"
    lines.append(f"  post-hooks: {post}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``powerstrip`` console script."""
    default = os.environ.get("POWERSTRIP_CONFIG", DEFAULT_CONFIG)
    parser = argparse.ArgumentParser(prog="powerstrip", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate an adapters file and print its routing table")
    check.add_argument("config", nargs="?", default=default, help=f"[default: $POWERSTRIP_CONFIG or {DEFAULT_CONFIG}]")
    why = commands.add_parser("explain", help="show which rules and hooks a Docker API call gets")
    why.add_argument("call", help='e.g. "POST /v1.41/containers/create"')
    why.add_argument("--config", "-c", default=default, help=f"[default: $POWERSTRIP_CONFIG or {DEFAULT_CONFIG}]")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"powerstrip: invalid configuration: {e}", file=sys.stderr)
        return 1
    if args.command == "check":
        print(routing_table(config))
        return 0
    try:
        print(explain(config, args.call))
    except ValueError as e:
        parser.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
