"""Issue 25: no way past a hook by parameters, forms or paths, against the real dockerd.

A real Powerstrip runs ``tests/sdk_adapters/param_policy.py`` on ``"* *"``: a policy written
the obvious way with the SDK (``request.param``, ``request.params``, ``request.path``,
``request.endpoint``). Each probe is a raw-socket request that tries to show the hook one
value while dockerd acts on another -- a form body, ``#``, ``;``, a bad escape, a key given
twice, a %-spelled path, dot segments -- and asserts Powerstrip's answer *and*, from dockerd
(the container's state, the image store, its events), that nothing happened. The same calls
made the ordinary way, with both docker CLIs, still work through the same policy.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
import uuid

import docker
from twisted.trial.unittest import TestCase

from tests.e2e.support import CLIS, IMAGE, LABEL, Powerstrip, direct, raw_request, require_daemon, run

POLICY = (
    'version: 1\nendpoints:\n  "* *":\n    pre: [policy]\n'
    "adapters:\n  policy: python:tests.sdk_adapters.param_policy:adapter\n"
)
FORM = b"application/x-www-form-urlencoded"


def _form_variants(body: bytes) -> list[tuple[str, dict]]:
    """The ways of sending ``body`` as a form that Go's ParseForm or FormValue reads."""
    return [
        ("form", {"content_type": FORM}),
        ("form, chunked", {"content_type": FORM, "chunked": True}),
        ("form, upper case, a parameter", {"content_type": b"APPLICATION/X-WWW-FORM-URLENCODED; charset=utf-8"}),
        ("form after 100-continue", {"content_type": FORM, "headers": [b"Expect: 100-continue"]}),
        ("multipart form", {"content_type": b"multipart/form-data; boundary=XX"}),
    ]


def _context(dockerfile: str) -> bytes:
    """A build context: a tar holding just a Dockerfile."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class TargetE2ETests(TestCase):
    timeout = 600

    def setUp(self) -> None:
        require_daemon()
        self.proxy = Powerstrip(POLICY)
        self.addCleanup(self.proxy.stop)
        self.client = docker.DockerClient(base_url="unix:///var/run/docker.sock")
        self.addCleanup(self.client.close)
        self.since = int(time.time()) - 1
        self.tag = uuid.uuid4().hex[:8]

    def name(self, what: str) -> str:
        return f"ps-t-{what}-{self.tag}"

    def box(self, what: str, *labels: str) -> str:
        """A running container of this test (removed at the end); its id."""
        name = self.name(what)
        self.addCleanup(direct, "rm", "-f", name)
        args = ["run", "-d", "--name", name, "--label", LABEL]
        for label in labels:
            args += ["--label", label]
        done = direct(*args, IMAGE, "sleep", "600")
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout.decode().strip()

    def send(self, method: str, target: str, body: bytes = b"", **kw: object) -> tuple[int, dict]:
        kw.setdefault("content_type", None)
        status, answer = raw_request(self.proxy.port, target, body, method=method, **kw)  # type: ignore[arg-type]
        try:
            return status, json.loads(answer) if answer.strip() else {}
        except ValueError:
            return status, {"raw": answer[:200].decode("latin-1")}

    def refused(self, code: int, method: str, target: str, body: bytes = b"", **kw: object) -> None:
        status, answer = self.send(method, target, body, **kw)
        self.assertEqual(status, code, f"{method} {target} {kw}: {answer}")
        prefix = "powerstrip: " if code == 400 else "param-policy: "
        self.assertTrue(answer.get("message", "").startswith(prefix), f"{method} {target}: {answer}")

    def events(self, **filters: str) -> list[dict]:
        """dockerd's events since the test began, for ``filters``."""
        until = int(time.time()) + 1
        return list(self.client.api.events(since=self.since, until=until, filters=filters, decode=True))

    def running(self, ident: str) -> bool:
        return bool(self.client.api.inspect_container(ident)["State"]["Running"])

    def image_exists(self, name: str) -> bool:
        try:
            self.client.images.get(name)
        except docker.errors.ImageNotFound:
            return False
        return True

    # -- 1. a form body replaces the query the hook checked --------------------------------

    def test_kill_signal(self) -> None:
        ident = self.box("kill")
        target = f"/v1.41/containers/{ident}/kill?signal=SIGWINCH"
        for what, kw in _form_variants(b"signal=SIGKILL"):
            with self.subTest(what):
                self.refused(400, "POST", target, b"signal=SIGKILL", **kw)
        for query in [
            "signal=SIGWINCH&x=#&signal=SIGKILL",  # a fragment
            "signal=SIGWINCH;&signal=SIGKILL",  # a semicolon
            "signal=SIGWINCH%zz&signal=SIGKILL",  # a bad escape
            "signal=SIGKILL&signal=SIGWINCH",  # a key twice
            "%73ignal=SIGKILL&signal=SIGWINCH",  # a key twice, one escaped
            "signal=SIGWINCH&x=%ff&signal=SIGKILL",  # an escape that is not UTF-8
        ]:
            self.refused(400, "POST", f"/v1.41/containers/{ident}/kill?{query}")
        # The policy sees every spelling of what dockerd reads, and refuses it.
        for query in ["signal=SIGKILL", "signal=%53IGKILL", "signal=SIG%4bILL", "", "x=1"]:
            self.refused(403, "POST", f"/v1.41/containers/{ident}/kill?{query}")
        self.refused(403, "POST", f"/v1.41/containers/{ident}/%6bill?signal=SIGKILL")
        self.refused(403, "POST", f"/v1.41/containers/{ident}%2Fkill?signal=SIGKILL")
        self.assertTrue(self.running(ident), "dockerd killed the container")
        self.assertEqual(
            [e["Actor"]["Attributes"].get("signal") for e in self.events(container=ident, event="kill")], []
        )
        # What the policy allows works, by raw socket and by both CLIs.
        self.assertEqual(self.send("POST", f"/v1.41/containers/{ident}/kill?signal=SIGWINCH")[0], 204)
        for cli in CLIS.values():
            done = run([cli, "kill", "-s", "SIGWINCH", ident], host=self.proxy.url)
            self.assertEqual(done.returncode, 0, done.stderr)
            self.assertIn(b"only SIGWINCH", run([cli, "kill", ident], host=self.proxy.url).stderr)
        self.assertTrue(self.running(ident))
        sent = [e["Actor"]["Attributes"]["signal"] for e in self.events(container=ident, event="kill")]
        self.assertEqual(sent, ["28", "28", "28"])  # SIGWINCH, three times, and nothing else

    def test_rename(self) -> None:
        ident = self.box("rename")
        for what, kw in _form_variants(b"name=evil"):
            with self.subTest(what):
                self.refused(400, "POST", f"/v1.41/containers/{ident}/rename?name=ok-{self.tag}", b"name=evil", **kw)
        for query in ["name=ok&x=#&name=evil", "name=ok;&name=evil", f"name=ok-{self.tag}&name=evil"]:
            self.refused(400, "POST", f"/v1.41/containers/{ident}/rename?{query}")
        self.refused(403, "POST", f"/v1.41/containers/{ident}/rename?name=%65vil-{self.tag}")
        self.assertEqual(self.client.api.inspect_container(ident)["Name"], "/" + self.name("rename"))
        self.assertEqual(self.events(container=ident, event="rename"), [])

    def test_tag(self) -> None:
        for what, kw in _form_variants(b"repo=evil"):
            with self.subTest(what):
                self.refused(400, "POST", f"/v1.41/images/{IMAGE}/tag?repo=ok&tag={self.tag}", b"repo=evil", **kw)
        for query in ["repo=ok&x=#&repo=evil", "repo=ok;&repo=evil", "repo=ok&repo=evil", "repo=%zz&repo=evil"]:
            self.refused(400, "POST", f"/v1.41/images/{IMAGE}/tag?{query}&tag={self.tag}")
        self.refused(403, "POST", f"/v1.41/images/{IMAGE}/tag?repo=%65vil&tag={self.tag}")
        self.assertFalse(self.image_exists(f"evil:{self.tag}"), "dockerd tagged the image")
        self.addCleanup(direct, "rmi", f"ok-ps-t:{self.tag}")
        status, _ = self.send("POST", f"/v1.41/images/{IMAGE}/tag?repo=ok-ps-t&tag={self.tag}")
        self.assertEqual(status, 201)

    def test_prune(self) -> None:
        victim = self.name("victim")
        self.addCleanup(direct, "rm", "-f", victim)
        direct("create", "--name", victim, "--label", LABEL, "--label", "ps-t-victim=1", IMAGE, "true")
        ok = '{"label":["ps-t-nothing=1"]}'
        evil = '{"label":["ps-t-victim=1"]}'
        body = b"filters=" + evil.encode()
        for what, kw in _form_variants(body):
            with self.subTest(what):
                self.refused(400, "POST", f"/v1.41/containers/prune?filters={ok}", body, **kw)
        for query in [
            f"filters={ok}&x=#&filters={evil}",
            f"filters={ok};&filters={evil}",
            f"filters={evil}&filters={ok}",
        ]:
            self.refused(400, "POST", f"/v1.41/containers/prune?{query}")
        self.refused(403, "POST", "/v1.41/containers/prune?filters=%7B%22label%22%3A%5B%22ps-t-victim%3D1%22%5D%7D")
        left = direct("ps", "-aq", "--filter", f"name=^/{victim}$")
        self.assertEqual(left.returncode, 0, left.stderr)
        self.assertNotEqual(left.stdout, b"", "dockerd pruned it")

    def test_pull(self) -> None:
        evil = f"localhost:1/evil-{self.tag}"  # nothing listens there: a pull dockerd tries fails, but is an event
        for what, kw in _form_variants(b"fromImage=" + evil.encode()):
            with self.subTest(what):
                self.refused(
                    400, "POST", f"/v1.41/images/create?fromImage={IMAGE}", b"fromImage=" + evil.encode(), **kw
                )
        for query in [f"fromImage={IMAGE}&x=#&fromImage={evil}", f"fromImage={IMAGE};&fromImage={evil}"]:
            self.refused(400, "POST", f"/v1.41/images/create?{query}")
        self.refused(400, "POST", f"/v1.41/images/create?fromImage={evil}&fromImage={IMAGE}")
        self.refused(403, "POST", f"/v1.41/images/create?fromImage=localhost:1/%65vil-{self.tag}")
        # dockerd reports a pull it tried in its log, not its events: its image store is the witness.
        self.assertFalse(self.image_exists(evil))

    def test_build(self) -> None:
        context = _context(f"FROM {IMAGE}\nLABEL ps-t=1\n")
        evil = f"ps-t-evil-{self.tag}"
        self.addCleanup(direct, "rmi", "-f", evil)
        base = f"/v1.41/build?t={evil}&networkmode=bridge"
        # A form body, padded past the 4 KiB dockerd peeks at first.
        form = b"networkmode=host&x=" + b"a" * 5000
        for what, kw in _form_variants(form):
            with self.subTest(what):
                self.refused(400, "POST", base, form, **kw)
        tar = {"content_type": b"application/x-tar"}
        for query in [
            f"t={evil}&x=#&networkmode=host",
            f"t={evil}&networkmode=bridge;&networkmode=host",
            f"t={evil}&networkmode=bridge%zz&networkmode=host",
            f"t={evil}&networkmode=host&networkmode=bridge",
        ]:
            self.refused(400, "POST", f"/v1.41/build?{query}", context, **tar)
        self.refused(403, "POST", f"/v1.41/build?t={evil}&networkmode=%68ost", context, **tar)
        self.refused(403, "POST", f"/v1.41/build?t=ok&t={evil}", context, **tar)  # every t is checked
        self.assertFalse(self.image_exists(evil), "dockerd built the refused image")
        # Two tags, host entries and a security option, as the CLIs send them (each repeated).
        good = [f"ps-t-good-{self.tag}:a", f"ps-t-good-{self.tag}:b"]
        for name in good:
            self.addCleanup(direct, "rmi", "-f", name)
        for cli in CLIS.values():
            done = run(
                [
                    cli,
                    "build",
                    "-q",
                    "-t",
                    good[0],
                    "-t",
                    good[1],
                    "--add-host",
                    "a:1.2.3.4",
                    "--add-host",
                    "b:1.2.3.5",
                    "-",
                ],  # fmt: skip
                host=self.proxy.url,
                input=context,
                env={"DOCKER_BUILDKIT": "0"},
                timeout=180,
            )
            self.assertEqual(done.returncode, 0, done.stderr)
            self.assertTrue(all(self.image_exists(name) for name in good))
            refused = run(
                [cli, "build", "-q", "--network", "host", "-"],
                host=self.proxy.url,
                input=context,
                env={"DOCKER_BUILDKIT": "0"},
                timeout=180,
            )
            self.assertIn(b"no builds on the host network", refused.stderr)

    # -- 3. the path the hook sees is the path dockerd routes --------------------------------

    def test_export(self) -> None:
        ident = self.box("export")
        for path in [
            f"/v1.41/containers/{ident}/%65xport",
            f"/v1.41/containers/{ident}/%65%78%70%6F%72%74",
            f"/v1.41/containers/{ident}%2Fexport",
            f"/v1.41/containers/{ident}%2fexport",
            f"/v1%2E41/containers/{ident}/export",
            f"/containers/{ident}/exp%6Frt",
        ]:
            self.refused(403, "GET", path)
        for path in [
            f"/v1.41/containers/{ident}/./export",
            f"/v1.41/containers/{ident}//export",
            f"/v1.41/containers/x/../{ident}/export",
            f"/v1.41/containers/{ident}/%2E/export",
            f"/v1.41/containers/{ident}%2F%2Fexport",
            f"/v1.41/containers/{ident}/export#",
            f"/v1.41/containers/{ident}/%zzexport",
        ]:
            self.refused(400, "GET", path)
        self.assertEqual(self.events(container=ident, event="export"), [], "dockerd exported the container")
        # Everything else a reader does works.
        for cli in CLIS.values():
            done = run([cli, "inspect", "-f", "{{.State.Running}}", ident], host=self.proxy.url)
            self.assertEqual(done.stdout.strip(), b"true", done.stderr)
            self.assertIn(b"no exports", run([cli, "export", ident], host=self.proxy.url).stderr)
        self.assertEqual(self.events(container=ident, event="export"), [])
