"""Issue 13, items 2 and 3: no request reaches dockerd unless its pre-hook saw it as dockerd reads it.

Every probe is a raw-socket request through a real Powerstrip in front of the real dockerd,
run twice: behind an *allow-when-blind* pre-hook (it refuses what it sees is privileged and
lets anything it cannot read through, as naive policies do) and behind the shipped
``examples/policy.py``. For each probe the test asserts Powerstrip's status, what the hook
was shown (nothing, for a refused body; the canonical document otherwise) and — asking
dockerd directly — that no container of that name exists and no privileged container or
exec exists at all.
"""

from __future__ import annotations

import json
import uuid

import docker
from twisted.trial.unittest import TestCase

from powerstrip.sdk.testing import RecordingAdapter, echo
from tests.e2e.support import IMAGE, LABEL, Powerstrip, direct, ensure_busybox_image, raw_request, require_daemon

HOOKED = ("POST /containers/create", "POST /containers/*/exec", "POST /containers/*/start")


def _privileged(doc: object, exec_: bool) -> bool:
    """What the blind hook refuses: a privileged container, host network, a bind of /, a privileged exec."""
    if not isinstance(doc, dict):
        return False
    if exec_:
        return doc.get("Privileged") is True
    host = doc.get("HostConfig") or {}
    return isinstance(host, dict) and (
        host.get("Privileged") is True
        or host.get("NetworkMode") == "host"
        or any(str(b).startswith("/:") for b in host.get("Binds") or [])
    )


def blind_reply(payload: dict) -> tuple[int, dict]:
    """Refuse what it can see is privileged; allow whatever it cannot read (the bug class under test)."""
    req = payload["ClientRequest"]
    try:
        doc = json.loads(req["Body"]) if req["Body"] else None
    except ValueError:
        doc = None
    if _privileged(doc, "/exec" in req["Request"]):
        return 403, {"message": "blind: privileged"}
    return echo(payload)


def create(spec: str) -> bytes:
    """A create body: ``spec`` is JSON text after the image and label (starting with a comma, or empty)."""
    key, value = LABEL.split("=")
    return ('{"Image":"' + IMAGE + '","Labels":{"' + key + '":"' + value + '"}' + spec + "}").encode("utf-8")


PRIV = ',"HostConfig":{"Privileged":true}'
# (name, body, Content-Type, extra headers, chunked, expected status behind each hook, hook shown)
# "hook shown": None = the hook is not called; a dict = what it must see of HostConfig.
CREATE_PROBES = [
    # item 2
    (
        "two Content-Types, JSON first",
        create(PRIV),
        b"application/json",
        [b"Content-Type: text/plain"],
        False,
        400,
        None,
    ),
    ("two Content-Types, chunked", create(PRIV), b"application/json", [b"Content-Type: text/plain"], True, 400, None),
    ("Content-Type applİcation/json", create(PRIV), "applİcation/json".encode(), [], False, 400, None),
    ("Content-Type text/plain on JSON", create(PRIV), b"text/plain", [], False, 400, None),
    ("Content-Type text/plain, chunked", create(PRIV), b"text/plain", [], True, 400, None),
    ("no Content-Type", create(PRIV), None, [], False, 403, {"Privileged": True}),
    (
        "non-UTF-8 byte in a string",
        create(',"Domainname":"\xff"' + PRIV).replace(b"\xc3\xbf", b"\xff"),
        b"application/json",
        [],
        False,
        400,
        None,
    ),
    (
        "non-UTF-8, chunked",
        create(',"Domainname":"\xff"' + PRIV).replace(b"\xc3\xbf", b"\xff"),
        b"application/json",
        [],
        True,
        400,
        None,
    ),
    ("trailing bytes", create(PRIV) + b"garbage", b"application/json", [], False, 400, None),
    ("a second value after", create(PRIV) + b'{"Image":"x"}', b"application/json", [], True, 400, None),
    # item 3
    (
        "lower-case keys",
        b'{"image":"%s","labels":{"%s":"%s"},"hostconfig":{"privileged":true}}'
        % (IMAGE.encode(), *LABEL.encode().split(b"=")),
        b"application/json",
        [],
        False,
        403,
        {"Privileged": True},
    ),
    (
        "HoſtConfig (U+017F)",
        create(',"HoſtConfig":{"Privileged":true}'),
        b"application/json",
        [],
        False,
        403,
        {"Privileged": True},
    ),
    (
        "NetworKMode (U+212A Kelvin)",
        create(',"HostConfig":{"NetworKMode":"host"}'),
        b"application/json",
        [],
        False,
        403,
        {"NetworkMode": "host"},
    ),
    (
        "Bindſ of / (U+017F)",
        create(',"HostConfig":{"Bindſ":["/:/host"]}'),
        b"application/json",
        [],
        True,
        403,
        {"Binds": ["/:/host"]},
    ),
    (
        "PRIVILEGED upper case",
        create(',"HOSTCONFIG":{"PRIVILEGED":true}'),
        b"application/json",
        [],
        False,
        403,
        {"Privileged": True},
    ),
    (
        "escaped key \\u0050rivileged",
        create(',"HostConfig":{"\\u0050rivileged":true}'),
        b"application/json",
        [],
        False,
        403,
        {"Privileged": True},
    ),
    (
        "top-level Privileged (dockerd 20.10 legacy)",
        create(',"Privileged":true'),
        b"application/json",
        [],
        False,
        400,
        None,
    ),
    ("top-level privileged, lower case", create(',"privileged":true'), b"application/json", [], True, 400, None),
    (
        "top-level Binds beside HostConfig",
        create(',"Binds":["/:/host"],"HostConfig":{}'),
        b"application/json",
        [],
        False,
        400,
        None,
    ),
    ("duplicate HostConfig", create(PRIV + ',"HostConfig":{}'), b"application/json", [], False, 400, None),
    ("HostConfig and hostconfig", create(PRIV + ',"hostconfig":{}'), b"application/json", [], False, 400, None),
    (
        "duplicate Privileged at depth",
        create(',"HostConfig":{"Privileged":false,"Privileged":true}'),
        b"application/json",
        [],
        False,
        400,
        None,
    ),
    (
        "Privileged and privileged at depth",
        create(',"HostConfig":{"Privileged":false,"privileged":true}'),
        b"application/json",
        [],
        True,
        400,
        None,
    ),
    # our variants
    ("nested 200 deep", create(',"X":' + "[" * 200 + "]" * 200 + PRIV), b"application/json", [], False, 400, None),
    ("nested 20000 deep", create(',"X":' + "[" * 20000 + "]" * 20000 + PRIV), b"application/json", [], True, 400, None),
    ("number 1e400", create(',"StopTimeout":1e400' + PRIV), b"application/json", [], False, 400, None),
    ("integer 2**64", create(',"StopTimeout":18446744073709551616' + PRIV), b"application/json", [], False, 400, None),
    ("NaN", create(',"StopTimeout":NaN' + PRIV), b"application/json", [], False, 400, None),
    ("-Infinity", create(',"StopTimeout":-Infinity' + PRIV), b"application/json", [], False, 400, None),
    ("lone surrogate escape", create(',"Domainname":"\\ud800"' + PRIV), b"application/json", [], False, 400, None),
    ("UTF-8 BOM", b"\xef\xbb\xbf" + create(PRIV), b"application/json", [], False, 400, None),
    ("an array, not an object", b"[" + create(PRIV) + b"]", b"application/json", [], False, 400, None),
]


class _Visibility:
    """The probes; a subclass says which pre-hook stands in front (``hook``) and how it refuses."""

    hook: str
    #: What the hook answers a privileged request it can see.
    seen_status = 403
    seen_message = b""

    def setUp(self) -> None:
        require_daemon()
        ensure_busybox_image()
        self.recorder = RecordingAdapter(blind_reply)
        self.addCleanup(self.recorder.stop)
        adapter = self.recorder.url if self.hook == "blind" else "python:examples.policy:adapter"
        endpoints = "".join(f'  "{rule}":\n    pre: [hook]\n' for rule in HOOKED)
        self.proxy = Powerstrip(f"version: 1\nendpoints:\n{endpoints}adapters:\n  hook: {adapter}\n")
        self.addCleanup(self.proxy.stop)
        self.client = docker.DockerClient(base_url="unix:///var/run/docker.sock")
        self.addCleanup(self.client.close)
        # Clean-ups run last first: this check runs after each probe's own clean-up is registered.
        self.addCleanup(self.assertNothingPrivileged)

    def assertNothingPrivileged(self) -> None:
        """Straight from dockerd: no container of ours is privileged, no exec in ours is."""
        # Only this module's containers (every probe names its own ps-vis-...): other tests run beside it.
        for c in self.client.api.containers(all=True, filters={"label": LABEL, "name": "ps-vis-"}):
            try:
                info = self.client.api.inspect_container(c["Id"])
            except docker.errors.NotFound:
                continue  # removed meanwhile
            host = info["HostConfig"]
            self.assertFalse(
                host["Privileged"]
                or host["NetworkMode"] == "host"
                or any(b.startswith("/:") for b in host.get("Binds") or []),
                f"a privileged container exists: {info['Name']}",
            )
            for exec_id in info.get("ExecIDs") or []:
                self.assertFalse(self.client.api.exec_inspect(exec_id)["Privileged"], "a privileged exec exists")

    def calls_for(self, marker: str) -> list[dict]:
        return [c for c in self.recorder.calls if marker in c["ClientRequest"]["Request"]]

    def probe(
        self,
        target: str,
        marker: str,
        body: bytes,
        ctype: bytes | None,
        headers: list,
        chunked: bool,
        expected: int,
        shown: dict | None,
        what: str,
    ) -> None:
        status, answer = raw_request(self.proxy.port, target, body, headers, chunked, ctype)
        want = expected if expected == 400 else self.seen_status
        self.assertEqual(status, want, f"{what}: {answer[:300]!r}")
        if expected == 400:
            self.assertIn(b"powerstrip: ", answer, what)
        elif self.seen_message:
            self.assertIn(self.seen_message, answer, what)
        if self.hook == "blind":
            calls = self.calls_for(marker)
            if shown is None:
                self.assertEqual(calls, [], f"{what}: the hook was called for a refused body")
            else:
                self.assertEqual(len(calls), 1, what)
                doc = json.loads(calls[0]["ClientRequest"]["Body"])
                view = doc if "/exec" in target else doc["HostConfig"]
                self.assertEqual({k: view.get(k) for k in shown}, shown, f"{what}: the hook saw {doc}")

    def test_create_probes(self) -> None:
        for what, body, ctype, headers, chunked, expected, shown in CREATE_PROBES:
            name = f"ps-vis-{uuid.uuid4().hex[:10]}"
            self.addCleanup(direct, "rm", "-f", name)
            self.probe(
                f"/v1.41/containers/create?name={name}", name, body, ctype, headers, chunked, expected, shown, what
            )
            self.assertEqual(
                direct("ps", "-aq", "--filter", f"name=^/{name}$").stdout, b"", f"{what}: dockerd created the container"
            )

    def test_exec_probes(self) -> None:
        box = f"ps-vis-{uuid.uuid4().hex[:10]}"
        self.addCleanup(direct, "rm", "-f", box)
        self.assertEqual(direct("run", "-d", "--name", box, "--label", LABEL, IMAGE, "sleep", "300").returncode, 0)
        cmd = '"Cmd":["true"]'
        for what, body, ctype, chunked, expected in [
            ("exec Privileged", '{"Privileged":true,' + cmd + "}", b"application/json", False, 403),
            ("exec privileged lower case", '{"privileged":true,' + cmd + "}", b"application/json", True, 403),
            ("exec Privileged, no Content-Type", '{"Privileged":true,' + cmd + "}", None, False, 403),
            ("exec text/plain", '{"Privileged":true,' + cmd + "}", b"text/plain", False, 400),
            (
                "exec duplicate Privileged",
                '{"Privileged":false,"Privileged":true,' + cmd + "}",
                b"application/json",
                False,
                400,
            ),
            (
                "exec Privileged/PRIVILEGED",
                '{"Privileged":false,"PRIVILEGED":true,' + cmd + "}",
                b"application/json",
                True,
                400,
            ),
            ("exec trailing data", '{"Privileged":true,' + cmd + "}]", b"application/json", False, 400),
        ]:
            marker = uuid.uuid4().hex[:10]
            # A query parameter dockerd ignores lets the test find the hook call of this probe.
            self.probe(
                f"/v1.41/containers/{box}/exec?probe={marker}",
                marker,
                body.encode(),
                ctype,
                [],
                chunked,
                expected,
                {"Privileged": True} if expected == 403 else None,
                what,
            )

    def test_start_with_a_host_config_body(self) -> None:
        # dockerd 20.10 applies a start body as HostConfig below API 1.24.
        name = f"ps-vis-{uuid.uuid4().hex[:10]}"
        self.addCleanup(direct, "rm", "-f", name)
        self.assertEqual(direct("create", "--name", name, "--label", LABEL, IMAGE, "true").returncode, 0)
        status, answer = raw_request(self.proxy.port, f"/v1.23/containers/{name}/start", b'{"Privileged":true}')
        self.assertEqual(status, 400, answer)
        self.assertIn(b"must not carry a body", answer)
        self.assertFalse(self.client.api.inspect_container(name)["HostConfig"]["Privileged"])

    def test_readable_creates_still_work(self) -> None:
        # The control: an ordinary create, spelt oddly but unambiguously, goes through canonicalised.
        name = f"ps-vis-{uuid.uuid4().hex[:10]}"
        self.addCleanup(direct, "rm", "-f", name)
        body = create(',"cmd":["true"],"hostconfig":{"privileged":false,"memory":16777216}')
        status, answer = raw_request(self.proxy.port, f"/v1.41/containers/create?name={name}", body, chunked=True)
        self.assertEqual(status, 201, answer)
        self.assertEqual(self.client.api.inspect_container(name)["HostConfig"]["Memory"], 16777216)
        if self.hook == "blind":
            doc = json.loads(self.calls_for(name)[0]["ClientRequest"]["Body"])
            self.assertEqual(doc["HostConfig"], {"Privileged": False, "Memory": 16777216})


class BlindHookVisibility(_Visibility, TestCase):
    hook = "blind"
    seen_message = b"blind: privileged"


class PolicyExampleVisibility(_Visibility, TestCase):
    hook = "policy"
    seen_message = b"policy: "
