"""env-inject: give every new container some environment variables and labels.

A pre-hook on ``POST /*/containers/create`` adds the configured variables to
the container's ``Env`` and the configured labels to its ``Labels``. A
variable or label the user set explicitly (``docker run -e A=mine``,
``--label team=mine``, ``-e A`` or ``--env-file``) is never overridden. Only
the create request is looked at: an injected variable does override an
``ENV`` of the image, as ``docker run -e`` would.

Settings (environment variables, read when the module is imported; a
malformed one stops the adapter, or Powerstrip, at start-up with a message):

``INJECT_ENV``
    Variables to add, ``NAME=value`` separated by commas, e.g.
    ``INJECT_ENV="DEPLOY_ENV=staging,HTTP_PROXY=http://proxy:3128"``. A value
    may contain ``=`` but not a comma. Unset or empty: none.
``INJECT_LABELS``
    Labels to add, ``key=value`` separated by commas, e.g.
    ``INJECT_LABELS="team=payments,com.example.owner=ops"``. Unset or empty: none.

Run it as its own service::

    INJECT_ENV="DEPLOY_ENV=staging" INJECT_LABELS="team=payments" \\
        twistd -n powerstrip-adapter --module examples.env_inject --listen tcp:8081:interface=127.0.0.1

with ``env_inject: http://127.0.0.1:8081/`` under ``adapters:`` in
adapters.yml, or inside Powerstrip (no HTTP hop; set the variables in
Powerstrip's environment) with ``env_inject: python:examples.env_inject:adapter``.
Either way, run it from the repository root so that ``examples`` is importable::

    version: 1
    endpoints:
      "POST /*/containers/create":
        pre: [env_inject]
    adapters:
      env_inject: python:examples.env_inject:adapter
"""

from __future__ import annotations

import os
import re

from powerstrip.sdk import Adapter, Request

adapter = Adapter("env-inject")

# What Docker accepts as a variable name is looser, but a name the shell cannot
# use is almost certainly a typo in the setting.
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_pairs(setting: str, value: str, *, env_names: bool = False) -> dict[str, str]:
    """Parse ``"A=1,B=2"`` into ``{"A": "1", "B": "2"}``.

    :param setting: the variable's name, for error messages.
    :param env_names: whether keys must be valid environment variable names.
    :raises ValueError: naming ``setting`` and the culprit.
    """
    pairs: dict[str, str] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, val = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{setting}: {item!r} is not NAME=value")
        if env_names and not _ENV_NAME.match(key):
            raise ValueError(f"{setting}: {key!r} is not a valid environment variable name")
        if key in pairs:
            raise ValueError(f"{setting}: {key!r} is given twice")
        pairs[key] = val
    return pairs


INJECT_ENV = parse_pairs("INJECT_ENV", os.environ.get("INJECT_ENV", ""), env_names=True)
INJECT_LABELS = parse_pairs("INJECT_LABELS", os.environ.get("INJECT_LABELS", ""))


def inject(spec: dict, env: dict[str, str], labels: dict[str, str]) -> None:
    """Add ``env`` and ``labels`` to a container create body, keeping what it sets."""
    # Fields of the wrong type are left alone for dockerd to reject.
    current = spec.get("Env") or []
    if env and isinstance(current, list):
        # An entry without "=" (``-e NAME`` with NAME unset) still names a variable the user chose.
        taken = {entry.partition("=")[0] for entry in current if isinstance(entry, str)}
        spec["Env"] = current + [f"{k}={v}" for k, v in env.items() if k not in taken]
    user_labels = spec.get("Labels") or {}
    if labels and isinstance(user_labels, dict):
        spec["Labels"] = {**labels, **user_labels}


@adapter.pre_hook("POST /*/containers/create")
def inject_defaults(request: Request) -> Request | None:
    """Add the configured variables and labels to the new container."""
    spec = request.json
    if not isinstance(spec, dict) or not (INJECT_ENV or INJECT_LABELS):
        return None  # nothing to do, or not a body dockerd would accept anyway
    inject(spec, INJECT_ENV, INJECT_LABELS)
    return request
