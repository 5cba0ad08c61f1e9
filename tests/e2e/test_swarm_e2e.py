"""Swarm through Powerstrip: a dockerd of its own in swarm mode, a real Powerstrip in front of it.

The shared dockerd stays out of swarm: this module starts a second dockerd
(``SecondDockerd``), loads ``busybox:latest`` into it, makes it a single-node swarm, and
shares it (and one Powerstrip in front of it) between its tests; both go at exit.

Hooks: ``spec`` rewrites every ``POST /services/create`` ServiceSpec (a label, an
environment variable in ``TaskTemplate.ContainerSpec``, a placement constraint in
``TaskTemplate.Placement``) and labels configs and secrets; ``audit`` comes after it in the
chain and records; ``seen`` is a post-hook on ``GET /services/*`` adding a label to what the
client is shown; ``events`` takes the ``service *`` and ``node *`` event hooks.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from twisted.trial.unittest import TestCase

from powerstrip.sdk.testing import RecordingAdapter, free_port
from tests.e2e.support import CLIS, IMAGE, Powerstrip, SecondDockerd, direct, require_daemon, run, timed_lines

HOOKED_ENV = "POWERSTRIP_HOOKED=1"
CONSTRAINT = "node.role==manager"

_shared: dict = {}


def spec_rewrite(payload: dict) -> tuple[int, dict]:
    """Pre-hook: label and constrain every new service, put a variable in its tasks; label configs and secrets."""
    request = dict(payload["ClientRequest"])
    body = json.loads(request["Body"])
    body["Labels"] = {**(body.get("Labels") or {}), "powerstrip.hooked": "1"}
    if "/services/create" in request["Request"]:
        task = body.setdefault("TaskTemplate", {})
        container = task.setdefault("ContainerSpec", {})
        container["Env"] = [*(container.get("Env") or []), HOOKED_ENV]
        placement = task.setdefault("Placement", {})
        placement["Constraints"] = [*(placement.get("Constraints") or []), CONSTRAINT]
    request["Body"] = json.dumps(body)
    return 200, {"PowerstripProtocolVersion": 1, "ModifiedClientRequest": request}


def seen(payload: dict) -> tuple[int, dict]:
    """Post-hook on ``GET /services/*``: mark the service the client is shown."""
    response = dict(payload["ServerResponse"])
    if response["Code"] == 200 and (response.get("ContentType") or "").startswith("application/json"):
        body = json.loads(response["Body"])
        if isinstance(body, dict) and "Spec" in body:
            body["Spec"]["Labels"] = {**(body["Spec"].get("Labels") or {}), "powerstrip.seen": "post-hook"}
            response["Body"] = json.dumps(body)
    return 200, {"PowerstripProtocolVersion": 1, "ModifiedServerResponse": response}


class Swarm:
    """The second dockerd in swarm mode, Powerstrip in front of it, and the adapters."""

    def __init__(self) -> None:
        base = Path(tempfile.mkdtemp(prefix="psw-", dir="/tmp"))  # short: it holds unix sockets
        self.daemon = SecondDockerd(base, f"unix://{base}/d.sock")
        try:
            loaded = self.daemon.direct("load", input=direct("save", IMAGE).stdout, timeout=120)
            if loaded.returncode != 0:
                raise RuntimeError(f"could not load {IMAGE} into the swarm dockerd: {loaded.stderr!r}")
            init = self.daemon.direct(
                "swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", f"127.0.0.1:{free_port()}"
            )
            if init.returncode != 0:
                raise RuntimeError(f"swarm init failed: {init.stderr!r}")
            self.spec, self.audit = RecordingAdapter(spec_rewrite), RecordingAdapter()
            self.seen, self.events = RecordingAdapter(seen), RecordingAdapter()
            self.proxy = Powerstrip(
                f"""\
version: 1
endpoints:
  "POST /*/services/create": {{pre: [spec, audit]}}
  "POST /*/services/*/update": {{pre: [audit]}}
  "DELETE /*/services/*": {{pre: [audit]}}
  "GET /*/services/*": {{post: [seen]}}
  "POST /*/configs/create": {{pre: [spec, audit]}}
  "POST /*/secrets/create": {{pre: [spec, audit]}}
  "POST /*/containers/create": {{pre: [audit]}}
events:
  "service *": [events]
  "node *": [events]
  "container start": [events]
adapters:
  spec: {self.spec.url}
  audit: {self.audit.url}
  seen: {self.seen.url}
  events: {self.events.url}
""",
                extra=["--docker", self.daemon.host],
            )
        except Exception:
            self.daemon.stop()
            raise

    def stop(self) -> None:
        """Leave the swarm (no task is restarted behind our back), stop everything."""
        self.proxy.stop()
        for adapter in (self.spec, self.audit, self.seen, self.events):
            adapter.stop()
        self.daemon.direct("swarm", "leave", "--force", timeout=60)
        self.daemon.stop()


def swarm() -> Swarm:
    """The swarm of this test run, started once."""
    if "swarm" not in _shared:
        _shared["swarm"] = Swarm()
        atexit.register(_shared["swarm"].stop)
    return _shared["swarm"]


class _SwarmTest:
    cli: str

    def setUp(self) -> None:
        require_daemon()
        self.swarm = swarm()
        self.addCleanup(
            lambda: self.assertTrue(self.swarm.proxy.alive(), "powerstrip died:\n" + self.swarm.proxy.log_text())
        )

    def docker(self, *args: str, input: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return run([self.cli, *args], host=self.swarm.proxy.url, input=input, timeout=timeout)

    def ok(self, *args: str, input: bytes | None = None, timeout: float = 120) -> bytes:
        result = self.docker(*args, input=input, timeout=timeout)
        self.assertEqual(result.returncode, 0, f"docker {' '.join(args)}: {result.stderr.decode()}")
        return result.stdout

    def direct(self, *args: str) -> bytes:
        result = self.swarm.daemon.direct(*args)
        self.assertEqual(result.returncode, 0, f"direct docker {' '.join(args)}: {result.stderr.decode()}")
        return result.stdout

    def same(self, *args: str) -> bytes:
        """Through Powerstrip and straight to the swarm dockerd: equal outputs; that output."""
        out = self.ok(*args)
        self.assertEqual(out, self.direct(*args), f"docker {' '.join(args)}: output differs")
        return out

    def spec_of(self, service: str) -> dict:
        return json.loads(self.direct("service", "inspect", "--format", "{{json .Spec}}", service))

    def wait_for(self, what: str, check, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                self.fail(f"timed out waiting for {what}")
            time.sleep(0.3)

    def service_events(self, name: str) -> list[str]:
        return [
            c["Event"]["Action"]
            for c in self.swarm.events.calls
            if c["Event"].get("Type") == "service" and c["Event"]["Actor"]["Attributes"].get("name") == name
        ]

    def name(self, prefix: str = "pse2e") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.addCleanup(self.swarm.daemon.direct, "service", "rm", name)
        return name

    def create(self, name: str, *args: str) -> None:
        self.ok(
            "service",
            "create",
            "--name",
            name,
            "--no-resolve-image",
            "--update-delay",
            "0s",
            "--update-monitor",
            "1s",
            "--rollback-delay",
            "0s",
            "--rollback-monitor",
            "1s",
            *args,
            timeout=180,
        )


class SwarmDocker28(_SwarmTest, TestCase):
    """Every service command with the 28.x CLI."""

    cli = CLIS["docker 28"]

    def test_service_lifecycle(self) -> None:
        name = self.name()
        self.create(
            name,
            "--env",
            "A=1",
            "--label",
            "app=e2e",
            IMAGE,
            "sh",
            "-c",
            "echo svc-up hooked=$POWERSTRIP_HOOKED A=$A; while true; do echo tick; sleep 1; done",
        )
        # The pre-hook got the ServiceSpec, and its rewrite is what the swarm stored...
        [call] = [
            c
            for c in self.swarm.spec.received("pre-hook", "POST /*/services/create")
            if json.loads(c["ClientRequest"]["Body"])["Name"] == name
        ]
        sent = json.loads(call["ClientRequest"]["Body"])
        self.assertEqual(sent["TaskTemplate"]["ContainerSpec"]["Image"], IMAGE)
        self.assertEqual(sent["TaskTemplate"]["ContainerSpec"]["Env"], ["A=1"])
        spec = self.spec_of(name)
        self.assertEqual(spec["Labels"], {"app": "e2e", "powerstrip.hooked": "1"})
        self.assertEqual(spec["TaskTemplate"]["ContainerSpec"]["Env"], ["A=1", HOOKED_ENV])
        self.assertEqual(spec["TaskTemplate"]["Placement"]["Constraints"], [CONSTRAINT])
        # ...the next adapter of the chain was handed the rewritten spec...
        audited = [
            json.loads(c["ClientRequest"]["Body"])
            for c in self.swarm.audit.received("pre-hook", "POST /*/services/create")
        ]
        [mine] = [s for s in audited if s["Name"] == name]
        self.assertIn(HOOKED_ENV, mine["TaskTemplate"]["ContainerSpec"]["Env"])
        # ...and the task's container runs with it.
        logs = self.same("service", "logs", "--raw", "--tail", "all", name)
        self.assertTrue(logs.startswith(b"svc-up hooked=1 A=1\n"), logs)

        # The post-hook on GET /services/*: what the client is shown, not what is stored.
        through = json.loads(self.ok("service", "inspect", name))[0]["Spec"]["Labels"]
        self.assertEqual(through.get("powerstrip.seen"), "post-hook")
        self.assertNotIn("powerstrip.seen", self.spec_of(name)["Labels"])
        self.swarm.seen.assert_received("post-hook", "GET /*/services/*")

        self.assertEqual(
            self.same("service", "ls", "--filter", f"name={name}", "--format", "{{.Name}} {{.Replicas}}"),
            f"{name} 1/1\n".encode(),
        )
        self.assertEqual(
            self.same("service", "ps", "--format", "{{.Name}} {{.DesiredState}}", name), f"{name}.1 Running\n".encode()
        )

        # logs -f streams.
        proc = subprocess.Popen(
            [self.cli, "service", "logs", "--raw", "-f", "--tail", "0", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "DOCKER_HOST": self.swarm.proxy.url},
        )
        self.addCleanup(lambda: (proc.kill(), proc.wait(), proc.stdout.close(), proc.stderr.close()))
        lines = timed_lines(proc, 3, timeout=30)
        self.assertEqual([text for _, text in lines], [b"tick"] * 3)
        self.assertGreater(lines[-1][0] - lines[0][0], 1.5)
        proc.kill()

        # update: the CLI sends back the spec it was shown, so the post-hook's label is now stored too.
        self.ok("service", "update", "--env-add", "B=2", name, timeout=180)
        [update] = [
            c
            for c in self.swarm.audit.received("pre-hook", "POST /*/services/*/update")
            if json.loads(c["ClientRequest"]["Body"])["Name"] == name
        ]
        self.assertIn("B=2", json.loads(update["ClientRequest"]["Body"])["TaskTemplate"]["ContainerSpec"]["Env"])
        spec = self.spec_of(name)
        self.assertEqual(sorted(spec["TaskTemplate"]["ContainerSpec"]["Env"]), ["A=1", "B=2", HOOKED_ENV])
        self.assertEqual(spec["Labels"].get("powerstrip.seen"), "post-hook")

        # scale, then rollback (to the spec before the scale: one replica, B=2 kept).
        self.ok("service", "scale", f"{name}=2", timeout=180)
        self.assertEqual(self.spec_of(name)["Mode"]["Replicated"]["Replicas"], 2)
        self.wait_for(
            "2/2 replicas",
            lambda: self.direct("service", "ls", "--filter", f"name={name}", "--format", "{{.Replicas}}") == b"2/2\n",
        )
        self.ok("service", "rollback", name, timeout=180)
        spec = self.spec_of(name)
        self.assertEqual(spec["Mode"]["Replicated"]["Replicas"], 1)
        self.assertIn("B=2", spec["TaskTemplate"]["ContainerSpec"]["Env"])

        self.assertEqual(self.ok("service", "rm", name), f"{name}\n".encode())
        self.swarm.audit.assert_received("pre-hook", "DELETE /*/services/*")
        self.assertNotEqual(self.swarm.daemon.direct("service", "inspect", name).returncode, 0)
        # The service events reached the event hook, in order.
        self.wait_for("service remove event", lambda: "remove" in self.service_events(name), timeout=30)
        actions = self.service_events(name)
        self.assertEqual((actions[0], actions[-1]), ("create", "remove"))
        self.assertIn("update", actions)

    def test_configs_and_secrets_through_a_hook(self) -> None:
        tag = uuid.uuid4().hex[:8]
        config, secret = f"pse2e-config-{tag}", f"pse2e-secret-{tag}"
        self.ok("config", "create", config, "-", input=b"config-data\n")
        self.addCleanup(self.swarm.daemon.direct, "config", "rm", config)
        self.ok("secret", "create", secret, "-", input=b"secret-data\n")
        self.addCleanup(self.swarm.daemon.direct, "secret", "rm", secret)
        for kind, name in (("config", config), ("secret", secret)):
            labels = json.loads(self.direct(kind, "inspect", "--format", "{{json .Spec.Labels}}", name))
            self.assertEqual(labels, {"powerstrip.hooked": "1"})
        [call] = [
            c
            for c in self.swarm.spec.received("pre-hook", "POST /*/secrets/create")
            if json.loads(c["ClientRequest"]["Body"])["Name"] == secret
        ]
        # The hook is shown no secret (no ``secrets: true``), and its rewrite, which hands the
        # redacted Data back, still stores the real one (the service below reads it).
        self.assertEqual(json.loads(call["ClientRequest"]["Body"])["Data"], "<redacted>")
        self.assertEqual(
            self.direct("config", "inspect", "--format", '{{printf "%s" .Spec.Data}}', config), b"config-data\n\n"
        )
        # A service using both sees the data.
        name = self.name()
        self.create(
            name,
            "--config",
            f"source={config},target=/cfg",
            "--secret",
            secret,
            IMAGE,
            "sh",
            "-c",
            f"cat /cfg /run/secrets/{secret}; sleep 3600",
        )
        self.wait_for(
            "the task's output", lambda: self.direct("service", "logs", "--raw", name) == b"config-data\nsecret-data\n"
        )
        self.ok("service", "rm", name)

    def test_stack_deploy_and_rm(self) -> None:
        stack = f"pse2e{uuid.uuid4().hex[:6]}"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "stack.yml")
            path.write_text(f"""\
version: "3.8"
services:
  app:
    image: {IMAGE}
    command: ["sh", "-c", "echo stack hooked=$$POWERSTRIP_HOOKED; sleep 3600"]
    deploy: {{replicas: 1, update_config: {{delay: 0s}}}}
    configs: [{{source: settings, target: /settings}}]
configs:
  settings:
    file: {path}
""")
            self.addCleanup(self.swarm.daemon.direct, "stack", "rm", stack)
            self.ok("stack", "deploy", "--resolve-image", "never", "-c", str(path), stack)
        name = f"{stack}_app"
        spec = self.spec_of(name)
        self.assertEqual(spec["Labels"].get("com.docker.stack.namespace"), stack)
        self.assertEqual(spec["Labels"].get("powerstrip.hooked"), "1")
        self.swarm.spec.assert_received("pre-hook", "POST /*/configs/create")
        self.assertEqual(self.same("stack", "services", "--format", "{{.Name}}", stack), f"{name}\n".encode())
        self.wait_for(
            "the stack's task output", lambda: self.direct("service", "logs", "--raw", name) == b"stack hooked=1\n"
        )
        self.ok("stack", "rm", stack)
        self.wait_for(
            "the stack gone",
            lambda: self.direct("stack", "ls", "--format", "{{.Name}}").split().count(stack.encode()) == 0,
        )
        self.wait_for("service remove event", lambda: "remove" in self.service_events(name), timeout=30)

    def test_node_events(self) -> None:
        node = self.direct("node", "ls", "-q").split()[0].decode()
        label = f"pse2e{uuid.uuid4().hex[:6]}=1"
        self.ok("node", "update", "--label-add", label, node)
        self.addCleanup(self.swarm.daemon.direct, "node", "update", "--label-rm", label.split("=")[0], node)
        self.assertIn(
            label.split("=")[0], json.loads(self.same("node", "inspect", "--format", "{{json .Spec.Labels}}", node))
        )

        def node_updates() -> list[dict]:
            return [
                c["Event"]
                for c in self.swarm.events.calls
                if c["Event"].get("Type") == "node"
                and c["Event"]["Action"] == "update"
                and c["Event"]["Actor"]["ID"] == node
            ]

        self.wait_for("a node update event", lambda: node_updates(), timeout=30)


class SwarmDocker2010(_SwarmTest, TestCase):
    """The 20.10 CLI: create, ls, ps, rm through the same hooks."""

    cli = CLIS["docker 20.10"]

    def test_service_create_ls_rm(self) -> None:
        name = self.name()
        self.create(name, IMAGE, "sh", "-c", "echo cli2010 hooked=$POWERSTRIP_HOOKED; sleep 3600")
        self.assertEqual(self.spec_of(name)["TaskTemplate"]["Placement"]["Constraints"], [CONSTRAINT])
        self.assertEqual(
            self.same("service", "ls", "--filter", f"name={name}", "--format", "{{.Name}} {{.Replicas}}"),
            f"{name} 1/1\n".encode(),
        )
        self.wait_for(
            "the task's output", lambda: self.direct("service", "logs", "--raw", name) == b"cli2010 hooked=1\n"
        )
        # The swarm agent starts task containers inside dockerd, not through its API: no
        # containers/create hook sees them; the container events do reach event hooks.
        self.assertEqual(self.swarm.audit.received("pre-hook", "POST /*/containers/create"), [])
        self.wait_for(
            "the task's container start event",
            lambda: [
                c
                for c in self.swarm.events.calls
                if c["Event"].get("Type") == "container"
                and c["Event"]["Actor"]["Attributes"].get("com.docker.swarm.service.name") == name
            ],
            timeout=30,
        )
        self.assertEqual(self.ok("service", "rm", name), f"{name}\n".encode())
