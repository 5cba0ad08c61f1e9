"""The ``powerstrip`` command: look at an adapters file without running the proxy.

- ``powerstrip check [adapters.yml]`` validates the file and prints the
  routing table: each endpoint rule with its pre- and post-hooks in the order
  they run, the event rules with their adapters, and each adapter's URL and policy;
  then a warning for each rule that can never match an Engine API call, and a
  notice for each key that spells an API version (:func:`lint`).
- ``powerstrip explain "POST /v1.41/containers/create" [--config FILE]``
  shows which rules match that call and which hooks would run, in order;
  ``powerstrip explain "container die"``, which adapters a Docker event goes to.
- ``powerstrip healthcheck [--listen ENDPOINT | --admin ENDPOINT]`` asks a
  running Powerstrip for ``/_ping`` (or the admin ``/readyz``): exit 0 when it
  answers 200, else 1 (:mod:`powerstrip.ops.healthcheck`).
- ``powerstrip adapter-test URL [--timeout 5s] [--protocol 1|2] [--only pre-hook|post-hook|unwind|event]``
  sends an adapter real sample calls (:mod:`powerstrip.sdk.samples`) and
  checks each answer against the protocol's schemas (:mod:`powerstrip.sdk.schema`).

Exit status: 0, or 1 for an invalid file (its error on stderr) or an adapter
that does not speak the protocol, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import time
from fnmatch import fnmatchcase
from typing import Any, TextIO

from twisted.internet import defer, task

from powerstrip import __version__
from powerstrip.config.matching import match, streams_unhooked
from powerstrip.config.spec import DEFAULT_CONFIG, AdapterSpec, Config, ConfigError, load_config, parse_adapter
from powerstrip.hooks.events import DOCKER_EVENT_TYPES, match_event
from powerstrip.hooks.http import AdapterClient
from powerstrip.hooks.interface import AdapterFault
from powerstrip.ops import healthcheck
from powerstrip.sdk.samples import samples
from powerstrip.sdk.schema import protocols, validate
from powerstrip.wire import engine_api
from powerstrip.wire.apipath import Versions, versions_match
from powerstrip.wire.rules import glob_meets_template, key_version, path_globs, request_path, rule_matches


def _names(adapters: tuple[AdapterSpec, ...]) -> str:
    return " -> ".join(a.name for a in adapters) or "-"


def _policy(adapter: AdapterSpec) -> str:
    return f"timeout {adapter.timeout:g}s, failure: {'ignore' if adapter.ignore_faults else 'fail'}"


def _versions(versions: Versions) -> str:
    return ", ".join(op + v for op, v in versions)


#: dockerd routes the swagger leaves out (api/server/router/{grpc,build}), so no warning is given for them.
_UNDOCUMENTED = (("POST", "/grpc"), ("POST", "/build/cancel"))


def engine_api_routes() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """``(versions, routes)`` of the shipped Engine API data (:mod:`powerstrip.wire.engine_api`):
    ``(METHOD, template)`` pairs, plus the few routes dockerd has and the swagger omits."""
    return engine_api.versions(), engine_api.routes() + _UNDOCUMENTED


def lint(config: Config) -> list[str]:
    """What ``check`` says about rules that are valid but likely wrong, one line each:

    - a ``warning`` for a rule whose path matches no route of the Engine API (a
      glob's ``*`` matches any characters, a template's ``{id}`` any non-empty
      segment), or whose method matches no method of the routes it does match:
      its hooks would never run;
    - a ``notice`` for a key that spells an API version, which is not part of a
      path: the rule applies at every version unless its ``versions:`` says otherwise.
    """
    versions, routes = engine_api_routes()
    templates = sorted({t for _, t in routes})
    out = []
    for ep in config.endpoints:
        globs = path_globs(ep.path)
        version = key_version(ep.path)
        if version is not None:
            example = version[1:] if version[1:].replace(".", "").isdigit() else "1.41"
            scope = (
                f"at the API versions {_versions(ep.versions)} (its versions: field) and unversioned"
                if ep.versions
                else f'at every API version (/vN.NN/... or none); to limit it, add versions: "=={example}"'
            )
            out.append(
                f"notice: {ep.pattern!r}: an API version in a key is not part of the path: this rule "
                f"applies to {globs[0]} {scope}"
            )
        hits = [(m, t) for m, t in routes if glob_meets_template(globs[0], t)]
        if not hits and len(globs) > 1:
            # /*/start: a * that stands for more than the version spans the path's
            # segments, not the inside of an image name (or every such rule would
            # match some DELETE /images/{name}).
            hits = [(m, t) for m, t in routes if glob_meets_template(globs[1], t, slashed_names=False)]
        if not hits:
            near = difflib.get_close_matches(globs[0], templates, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            out.append(
                f"warning: {ep.pattern!r}: {globs[0]} matches no Engine API route (API "
                f"{', '.join(versions)}){hint}: its hooks would never run"
            )
        elif not any(fnmatchcase(m, ep.method) for m, _ in hits):
            methods = ", ".join(sorted({m for m, _ in hits}))
            out.append(
                f"warning: {ep.pattern!r}: {ep.method} matches no method of the routes {globs[0]} "
                f"matches ({methods}): its hooks would never run"
            )
    return out


def routing_table(config: Config) -> str:
    """The rules and adapters of ``config``, as ``check`` prints them."""
    events = f"{len(config.events)} event rule(s), " if config.events else ""
    lines = [
        f"{config.source}: valid, {len(config.endpoints)} endpoint rule(s), {events}{len(config.adapters)} adapter(s)",
        "",
    ]
    width = max((len(e.pattern) for e in config.endpoints), default=0)
    lines += [
        f"  {e.pattern:<{width}}  pre: {_names(e.pre)}  post: {_names(e.post)}"
        + (f"  versions: {_versions(e.versions)}" if e.versions else "")
        for e in config.endpoints
    ]
    if config.events:
        # Each adapter gets each matching event on its own queue: a list, not a chain.
        width = max(len(rule.pattern) for rule in config.events)
        lines += [""] * bool(config.endpoints) + [
            "  events (each adapter gets each matching Docker event, on its own queue):"
        ]
        lines += [f"  {rule.pattern:<{width}}  -> {', '.join(a.name for a in rule.adapters)}" for rule in config.events]
    if config.adapters:
        lines.append("")
        width = max(len(name) for name in config.adapters)
        lines += [f"  {name:<{width}}  {a.url}  ({_policy(a)})" for name, a in config.adapters.items()]
    return "\n".join(lines)


def explain(config: Config, call: str) -> str:
    """Which rules match ``call`` (``"METHOD /path?query"``) and which hooks run; or, for a
    Docker event (``"container die"``, ``"event network connect"``), which adapters get it."""
    words = call.split()
    if words and words[0] == "event" or len(words) >= 2 and words[0] in DOCKER_EVENT_TYPES:
        return explain_event(config, words[1:] if words[0] == "event" else words)
    method, _, uri = call.strip().partition(" ")
    path = uri.strip().split("?", 1)[0]
    if not method or not path.startswith("/"):
        raise ValueError(f"expected 'METHOD /path', e.g. 'POST /v1.41/containers/create', not {call!r}")
    route = match(config, method.upper(), path)
    version, route_path = request_path(path)
    lines = [
        f"{method.upper()} {path}",
        f"  path {route_path} at API version {version}"
        if version
        else f"  path {route_path}, unversioned: dockerd's current API version, within every rule's versions:",
    ]
    # Rules the call would match but for their versions: field.
    lines += [
        f"  not matched: {e.pattern} (versions: {_versions(e.versions)})"
        for e in config.endpoints
        if rule_matches(e.method, e.path, method, path) and not versions_match(e.versions, version)
    ]
    if not route.hooked:
        lines.append("  no rule matches: passed straight to Docker")
        return "\n".join(lines)
    lines.append(f"  matching rules (file order): {', '.join(route.patterns)}")
    lines.append(f"  pre-hooks:  {_names(route.pre)}")
    post = _names(route.post)
    if route.post and streams_unhooked(path):
        post += "  (skipped: this call's response streams; see docs/security.md, What passes unhooked)"
    lines.append(f"  post-hooks: {post}")
    return "\n".join(lines)


def explain_event(config: Config, words: list[str]) -> str:
    """Which event rules match a Docker event given as ``[TYPE, ACTION...]`` and which adapters get it."""
    if len(words) < 2:
        raise ValueError(f"expected 'TYPE ACTION' for an event, e.g. 'container die', not {' '.join(words)!r}")
    type_, action = words[0], " ".join(words[1:])  # an action may have spaces: "exec_start: sh -c ..."
    patterns, adapters = match_event(config, type_, action)
    lines = [f"event {type_} {action}"]
    if not patterns:
        lines.append("  no event rule matches: no adapter gets it")
        return "\n".join(lines)
    lines.append(f"  matching event rules (file order): {', '.join(patterns)}")
    lines.append(f"  delivered to: {', '.join(a.name for a in adapters)}  (each on its own queue)")
    return "\n".join(lines)


#: The calls whose 2xx answer is a reply with a schema (``v<N>/<hook>-reply``).
_HOOKS = ("pre-hook", "post-hook")


def judge(answer: tuple[int, str | None, bytes], reply_schema: str | None) -> tuple[str, str]:
    """The verdict on an adapter's ``(status, content_type, body)`` answer:
    ``(kind, text)``, kind ``valid``, ``refused``, ``failed`` or ``INVALID``.

    A non-2xx answer is a refusal, valid protocol whatever its body; a 2xx
    answer must be a JSON reply that ``reply_schema`` accepts (a protocol 2
    pre-hook's short-circuit included). With no ``reply_schema`` (unwind and
    event calls) any 2xx answer is valid, and any other one ``failed``: also
    valid protocol (Powerstrip logs it, or delivers the event again).
    """
    code, _, body = answer
    if not 200 <= code < 300:
        try:
            message = json.loads(body)["message"]
        except (ValueError, TypeError, KeyError):
            message = body.decode("utf-8", "replace")
        message = " ".join(str(message).split()) or "(empty body)"
        kind = "refused" if reply_schema else "failed"
        return kind, f"{kind} {code}: {message[:100]}"
    if reply_schema is None:
        return "valid", "valid"
    try:
        reply = json.loads(body)
    except ValueError:
        return "INVALID", f"INVALID: reply is not JSON: {body[:60]!r}"
    errors = validate(reply, reply_schema)
    if errors:
        return "INVALID", "INVALID: " + "; ".join(errors)
    if "ServerResponse" in reply and reply_schema.endswith("/pre-hook-reply"):
        return "valid", f"valid (short-circuit {reply['ServerResponse']['Code']})"
    return "valid", "valid"


async def adapter_test(
    reactor: Any, adapter: AdapterSpec, protocol: int = 1, only: str | None = None, out: TextIO | None = None
) -> int:
    """Send ``adapter`` each sample call (of type ``only``, if given) and print a table of
    verdicts and times to ``out`` (stdout); return the exit status: 0 when every answer is
    valid protocol, else 1."""
    out = out or sys.stdout
    calls = [s for s in samples(protocol) if only in (None, s.hook)]
    print(f"{adapter.url}: {len(calls)} protocol-{protocol} sample call(s), timeout {adapter.timeout:g}s", file=out)
    width = max((len(s.name) for s in calls), default=0)
    client = AdapterClient(reactor)
    counts = dict.fromkeys(("valid", "refused", "failed", "INVALID", "FAULT"), 0)
    fault_prefix = f"powerstrip: adapter '{adapter.name}' ({adapter.url}): "
    try:
        for sample in calls:
            started = time.monotonic()
            try:
                answer = await client.post(adapter, sample.payload)
            except AdapterFault as e:
                kind, verdict = "FAULT", "FAULT: " + str(e).removeprefix(fault_prefix)
            else:
                reply_schema = f"v{protocol}/{sample.hook}-reply" if sample.hook in _HOOKS else None
                kind, verdict = judge(answer, reply_schema)
            ms = (time.monotonic() - started) * 1000
            counts[kind] += 1
            print(f"  {sample.hook:<9}  {sample.name:<{width}}  {ms:8.1f} ms  {verdict}", file=out, flush=True)
    finally:
        # A reply read in full returns its connection to the pool a reactor turn later.
        await task.deferLater(reactor, 0, lambda: None)
        await client.close()
    bad = counts["INVALID"] + counts["FAULT"]
    failed = f"{counts['failed']} failed, " if protocol >= 2 else ""  # unwind and event calls only
    print(
        f"{len(calls)} call(s): {counts['valid']} valid, {counts['refused']} refused, {failed}"
        f"{counts['INVALID']} invalid, {counts['FAULT']} fault(s): "
        + (f"NOT protocol {protocol}" if bad else f"the adapter speaks protocol {protocol}"),
        file=out,
    )
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``powerstrip`` console script."""
    default = os.environ.get("POWERSTRIP_CONFIG", DEFAULT_CONFIG)
    parser = argparse.ArgumentParser(prog="powerstrip", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"powerstrip {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate an adapters file and print its routing table")
    check.add_argument("config", nargs="?", default=default, help=f"[default: $POWERSTRIP_CONFIG or {DEFAULT_CONFIG}]")
    why = commands.add_parser("explain", help="show which rules and hooks a Docker API call (or event) gets")
    why.add_argument("call", help='e.g. "POST /v1.41/containers/create", or an event: "container die"')
    why.add_argument("--config", "-c", default=default, help=f"[default: $POWERSTRIP_CONFIG or {DEFAULT_CONFIG}]")
    probe = commands.add_parser("adapter-test", help="send an adapter sample hook calls and check its answers")
    probe.add_argument("url", help="http://, https:// or http+unix://%%2Fpath%%2Fto.sock/path")
    probe.add_argument("--timeout", default="5s", help="per call: 5s, 500ms, 1m [default: 5s]")
    probe.add_argument(
        "--protocol", type=int, default=1, choices=protocols(), help="the protocol version of the calls [default: 1]"
    )
    probe.add_argument(
        "--only", choices=(*_HOOKS, "unwind", "event"), help="send only these calls (unwind and event: protocol 2)"
    )
    health = commands.add_parser(
        "healthcheck", help="exit 0 if a running Powerstrip answers (for container health checks), else 1"
    )
    healthcheck.add_arguments(health)
    args = parser.parse_args(argv)
    if args.command == "healthcheck":
        return healthcheck.run(args, health)
    if args.command == "adapter-test":
        if args.url.startswith("python:"):
            probe.error("an in-process adapter has no URL to call: give an http://, https:// or http+unix:// URL")
        try:
            adapter = parse_adapter("adapter-test", {"url": args.url, "timeout": args.timeout})
        except ConfigError as e:
            probe.error(str(e).removeprefix("adapter 'adapter-test': "))
        if args.only and not any(s.hook == args.only for s in samples(args.protocol)):
            probe.error(f"protocol {args.protocol} has no {args.only} calls (unwind and event calls are protocol 2)")

        def reader_gone(failure: Any) -> None:
            failure.trap(BrokenPipeError)
            # `| head` stopped reading: stop quietly, as shell tools do (and
            # keep Python's flush of stdout at exit from failing again).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)

        def run(reactor: Any) -> defer.Deferred[None]:
            d = defer.ensureDeferred(adapter_test(reactor, adapter, args.protocol, args.only))
            return d.addCallbacks(sys.exit, reader_gone)  # react() exits with a SystemExit's code

        task.react(run)  # never returns
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"powerstrip: invalid configuration: {e}", file=sys.stderr)
        return 1
    if args.command == "check":
        print(routing_table(config))
        findings = lint(config)
        if findings:
            print("\n" + "\n".join(findings))
        return 0
    try:
        print(explain(config, args.call))
    except ValueError as e:
        parser.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
