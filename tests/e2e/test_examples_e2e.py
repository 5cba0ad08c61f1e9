"""The SDK example adapters (examples/*.py) end to end: a real Powerstrip, a real dockerd, both CLIs.

Every example runs both ways: served by ``twistd -n powerstrip-adapter`` as
its own process (settings in its environment), and in-process inside
Powerstrip as ``python:examples.NAME:adapter`` (settings in Powerstrip's
environment). The plain ``*Rules`` classes check the examples' pure
functions without a daemon.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from twisted.trial.unittest import TestCase

from examples import env_inject, policy, slowreq
from tests.e2e.support import (
    CLIS,
    IMAGE,
    LABEL,
    Powerstrip,
    SDKAdapter,
    direct,
    require_daemon,
    run,
)

TWISTD = "twistd"
IN_PROCESS = "in-process"


class _Example:
    """Set-up shared by every example's tests: the adapter, run ``mode``'s way, behind Powerstrip."""

    cli: str
    mode: str
    example: str  # module under examples/
    settings: dict[str, str] = {}

    def endpoints(self) -> str:
        """The ``endpoints:`` mapping of adapters.yml, as YAML lines naming adapter ``ex``."""
        raise NotImplementedError

    def setUp(self) -> None:
        require_daemon()
        self.tmp = Path(tempfile.mkdtemp(prefix="example-e2e-", dir="/tmp"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        settings = self.make_settings()
        if self.mode == TWISTD:
            self.adapter = SDKAdapter(f"examples.{self.example}", settings)
            self.addCleanup(self.adapter.stop)
            url, proxy_env = self.adapter.url, None
        else:
            self.adapter = None
            url, proxy_env = f"python:examples.{self.example}:adapter", settings
        config = f"version: 1\nendpoints:\n{self.endpoints()}adapters:\n  ex: {url}\n"
        self.proxy = Powerstrip(config, env=proxy_env)
        self.addCleanup(self.proxy.stop)

    def make_settings(self) -> dict[str, str]:
        """The adapter's environment variables (may use ``self.tmp``)."""
        return dict(self.settings)

    def docker(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """This class's CLI through Powerstrip."""
        return run([self.cli, *args], host=self.proxy.url, timeout=timeout)

    def name(self) -> str:
        """A fresh container name, removed at the end of the test."""
        name = f"ps-example-{uuid.uuid4().hex[:10]}"
        self.addCleanup(direct, "rm", "-f", name)
        return name

    def adapter_log(self) -> str:
        """Where the adapter logs: its own twistd log, or Powerstrip's when in-process."""
        return self.adapter.log_text() if self.adapter else self.proxy.log_text()


def _variants(base: type, combos: list[tuple[str, str]]) -> dict[str, type]:
    """Concrete TestCase classes of ``base`` for each (CLI name, mode)."""
    classes = {}
    for cli_name, mode in combos:
        suffix = cli_name.replace("docker ", "Docker").replace(".", "") + ("Twistd" if mode == TWISTD else "InProcess")
        name = base.__name__.lstrip("_") + suffix
        classes[name] = type(name, (base, TestCase), {"cli": CLIS[cli_name], "mode": mode})
    return classes


# Each CLI against both ways of running the adapter.
ALL = [("docker 28", TWISTD), ("docker 28", IN_PROCESS), ("docker 20.10", TWISTD), ("docker 20.10", IN_PROCESS)]


# --- env_inject ---------------------------------------------------------------


class _EnvInject(_Example):
    example = "env_inject"
    settings = {
        "INJECT_ENV": "PS_STAGE=staging,PS_EMPTY=,PS_URL=http://proxy:3128/?a=b,PS_KEEP=injected",
        "INJECT_LABELS": "com.example.team=payments,com.example.keep=injected",
    }

    def endpoints(self) -> str:
        return '  "POST /*/containers/create":\n    pre: [ex]\n'

    def labels(self, name: str) -> dict:
        result = self.docker("inspect", "--format", "{{json .Config.Labels}}", name)
        self.assertEqual(result.returncode, 0, result.stderr)
        return json.loads(result.stdout)

    def test_variables_and_labels_are_injected(self) -> None:
        result = self.docker("run", "--rm", "--label", LABEL, IMAGE, "env")
        self.assertEqual(result.returncode, 0, result.stderr)
        env = result.stdout.decode().splitlines()
        for line in ("PS_STAGE=staging", "PS_EMPTY=", "PS_URL=http://proxy:3128/?a=b", "PS_KEEP=injected"):
            self.assertIn(line, env)
        name = self.name()
        result = self.docker("create", "--name", name, "--label", LABEL, "--label", "mine=1", IMAGE, "true")
        self.assertEqual(result.returncode, 0, result.stderr)
        labels = self.labels(name)
        self.assertEqual(
            (labels.get("com.example.team"), labels.get("com.example.keep"), labels.get("mine")),
            ("payments", "injected", "1"),
        )

    def test_values_the_user_set_are_kept(self) -> None:
        name = self.name()
        result = self.docker(
            "run",
            "--name",
            name,
            "--label",
            LABEL,
            "-e",
            "PS_KEEP=mine",
            "--label",
            "com.example.keep=mine",
            IMAGE,
            "env",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        env = result.stdout.decode().splitlines()
        self.assertEqual([line for line in env if line.startswith("PS_KEEP=")], ["PS_KEEP=mine"])
        self.assertIn("PS_STAGE=staging", env)
        labels = self.labels(name)
        self.assertEqual((labels.get("com.example.keep"), labels.get("com.example.team")), ("mine", "payments"))


globals().update(_variants(_EnvInject, ALL))


class EnvInjectRules(TestCase):
    """``examples.env_inject``'s parsing and merging, without a daemon."""

    def test_parse_pairs(self) -> None:
        self.assertEqual(env_inject.parse_pairs("X", " A=1 , B=x=y,,C= "), {"A": "1", "B": "x=y", "C": ""})
        self.assertEqual(env_inject.parse_pairs("X", ""), {})
        for bad in ("A", "=1", "A=1,A=2"):
            with self.assertRaises(ValueError) as e:
                env_inject.parse_pairs("INJECT_LABELS", bad)
            self.assertIn("INJECT_LABELS", str(e.exception))
        with self.assertRaises(ValueError):
            env_inject.parse_pairs("INJECT_ENV", "1A=1", env_names=True)
        self.assertEqual(env_inject.parse_pairs("INJECT_LABELS", "com.example/x=1"), {"com.example/x": "1"})

    def test_inject_keeps_the_users_values(self) -> None:
        spec = {"Env": ["A=mine", "B"], "Labels": {"team": "mine"}}
        env_inject.inject(spec, {"A": "1", "B": "2", "C": "3"}, {"team": "x", "owner": "y"})
        self.assertEqual(spec, {"Env": ["A=mine", "B", "C=3"], "Labels": {"team": "mine", "owner": "y"}})
        spec = {"Env": None, "Labels": None}
        env_inject.inject(spec, {"C": "3"}, {"owner": "y"})
        self.assertEqual(spec, {"Env": ["C=3"], "Labels": {"owner": "y"}})


# --- policy -------------------------------------------------------------------


class _Policy(_Example):
    example = "policy"
    settings = {"POLICY_ALLOWED_BINDS": "/srv,/tmp"}
    outside = b"is outside the allowed paths /srv, /tmp"

    def endpoints(self) -> str:
        return '  "POST /*/containers/create":\n    pre: [ex]\n  "POST /*/containers/*/exec":\n    pre: [ex]\n'

    def assertRefused(self, *args: str, message: bytes) -> None:
        """``docker run ARGS`` fails with ``message`` and creates nothing."""
        name = self.name()
        result = self.docker("run", "--rm", "--name", name, "--label", LABEL, *args)
        self.assertNotEqual(result.returncode, 0, result.stdout)
        self.assertIn(b"Error response from daemon: policy: ", result.stderr)
        self.assertIn(message, result.stderr)
        created = direct("ps", "-a", "-q", "--filter", f"name={name}", "--filter", f"label={LABEL}").stdout
        self.assertEqual(created, b"", f"a refused container was created ({args})")

    def test_privileged_is_refused(self) -> None:
        self.assertRefused("--privileged", IMAGE, "true", message=b"privileged containers are not allowed")

    def test_host_network_is_refused(self) -> None:
        self.assertRefused("--network", "host", IMAGE, "true", message=b"the host network is not allowed")

    def test_binds_outside_the_allow_list_are_refused(self) -> None:
        self.assertRefused("-v", "/etc:/host-etc:ro", IMAGE, "true", message=b"bind mount /etc " + self.outside)
        # The CLI may clean the path itself; either way /etc is what gets refused.
        self.assertRefused("-v", "/srv/../etc:/host-etc", IMAGE, "true", message=self.outside)
        self.assertRefused("-v", "/srv/../etc:/host-etc", IMAGE, "true", message=b"/etc")
        self.assertRefused(
            "--mount",
            "type=bind,source=/etc,target=/host-etc",
            IMAGE,
            "true",
            message=b"bind mount /etc " + self.outside,
        )
        # Several violations are all named.
        self.assertRefused(
            "--privileged",
            "-v",
            "/root:/r",
            IMAGE,
            "true",
            message=b"privileged containers are not allowed; bind mount /root " + self.outside,
        )

    def test_allowed_binds_and_volumes_work(self) -> None:
        (self.tmp / "hello").write_text("from the host\n")
        for mount in (["-v", f"{self.tmp}:/data:ro"], ["--mount", f"type=bind,source={self.tmp},target=/data"]):
            result = self.docker("run", "--rm", "--label", LABEL, *mount, IMAGE, "cat", "/data/hello")
            self.assertEqual((result.returncode, result.stdout), (0, b"from the host\n"), result.stderr)
        # A named volume looks like "name:/dst" in Binds, and is not a bind mount.
        volume = f"ps-example-{uuid.uuid4().hex[:10]}"
        self.addCleanup(direct, "volume", "rm", "-f", volume)
        result = self.docker(
            "run",
            "--rm",
            "--label",
            LABEL,
            "-v",
            f"{volume}:/data",
            IMAGE,
            "sh",
            "-c",
            "echo kept > /data/f && cat /data/f",
        )
        self.assertEqual((result.returncode, result.stdout), (0, b"kept\n"), result.stderr)

    def test_privileged_exec_is_refused(self) -> None:
        name = self.name()
        result = self.docker("run", "-d", "--name", name, "--label", LABEL, IMAGE, "sleep", "60")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = self.docker("exec", "--privileged", name, "true")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"Error response from daemon: policy: privileged exec is not allowed", result.stderr)
        result = self.docker("exec", name, "echo", "plain exec")
        self.assertEqual((result.returncode, result.stdout), (0, b"plain exec\n"), result.stderr)


globals().update(_variants(_Policy, ALL))


class PolicyRules(TestCase):
    """``examples.policy``'s path rules, without a daemon."""

    allowed = ("/srv", "/tmp")

    def check(self, host_config: dict) -> list[str]:
        return policy.violations({"HostConfig": host_config}, self.allowed)

    def test_normalise(self) -> None:
        self.assertEqual(policy.normalise("/srv/../etc"), "/etc")
        self.assertEqual(policy.normalise("//srv//a/./b/"), "/srv/a/b")
        self.assertEqual(policy.normalise("/../../etc"), "/etc")
        self.assertEqual(policy.parse_allowed(" /srv/ , /tmp/x/.. ,"), ("/srv", "/tmp"))
        with self.assertRaises(ValueError):
            policy.parse_allowed("/srv,relative")

    def test_allow_list(self) -> None:
        self.assertEqual(self.check({"Binds": ["/srv:/a", "/srv/x/y:/b:ro", "/tmp/../tmp/z:/c"]}), [])
        self.assertEqual(
            self.check({"Binds": ["/srvx:/a"]}), ["bind mount /srvx is outside the allowed paths /srv, /tmp"]
        )
        self.assertEqual(
            self.check({"Binds": ["/srv/../etc:/a"]}),
            ["bind mount /srv/../etc (/etc) is outside the allowed paths /srv, /tmp"],
        )
        self.assertEqual(
            policy.violations({"HostConfig": {"Binds": ["/srv:/a"]}}, ()),
            ["bind mount /srv is not allowed (POLICY_ALLOWED_BINDS allows none)"],
        )

    def test_what_is_a_bind(self) -> None:
        # Named and anonymous volumes, tmpfs: not binds.
        self.assertEqual(
            self.check(
                {
                    "Binds": ["data:/etc", "/anon"],
                    "Mounts": [{"Type": "volume", "Source": "data", "Target": "/x"}, {"Type": "tmpfs", "Target": "/t"}],
                }
            ),
            [],
        )
        self.assertEqual(
            self.check({"Mounts": [{"Type": "bind", "Source": "/", "Target": "/host"}]}),
            ["bind mount / is outside the allowed paths /srv, /tmp"],
        )
        self.assertEqual(
            self.check({"Mounts": [{"Type": "bind", "Source": "etc", "Target": "/x"}]}),
            ["bind mount source 'etc' is not an absolute path"],
        )

    def test_other_rules(self) -> None:
        self.assertEqual(
            self.check({"Privileged": True, "NetworkMode": "host"}),
            ["privileged containers are not allowed", "the host network is not allowed"],
        )
        self.assertEqual(self.check({"Privileged": False, "NetworkMode": "bridge"}), [])
        self.assertEqual(policy.violations({"Image": "busybox"}, self.allowed), [])


# --- slowreq ------------------------------------------------------------------

DELAY = 3.0


class _SlowReq(_Example):
    example = "slowreq"
    settings = {"SLOWREQ_DELAY": str(DELAY)}

    def endpoints(self) -> str:
        return '  "POST /*/containers/create":\n    pre: [ex]\n'

    def start(self, *args: str) -> subprocess.Popen:
        """This class's CLI through Powerstrip, in the background."""
        env = {**os.environ, "DOCKER_HOST": self.proxy.url}
        env.pop("DOCKER_CONTEXT", None)
        proc = subprocess.Popen([self.cli, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        return proc

    def test_a_delayed_run_does_not_hold_up_other_calls(self) -> None:
        started = time.monotonic()
        # Named, so that the container goes even if the test fails with the run still pending.
        slow = self.start("run", "--rm", "--name", self.name(), "--label", LABEL, IMAGE, "echo", "late")
        time.sleep(1)
        # The create is now waiting in the adapter; an unhooked call goes straight through.
        before = time.monotonic()
        version = self.docker("version", "--format", "{{.Server.Version}}")
        version_took = time.monotonic() - before
        self.assertEqual(version.returncode, 0, version.stderr)
        self.assertIsNone(slow.poll(), "the delayed run finished before the delay was over")
        self.assertLess(version_took, DELAY - 1)
        out, err = slow.communicate(timeout=60)
        self.assertEqual((slow.returncode, out), (0, b"late\n"), err)
        self.assertGreaterEqual(time.monotonic() - started, DELAY)

    def test_delayed_calls_wait_side_by_side(self) -> None:
        names = [self.name(), self.name()]
        started = time.monotonic()
        procs = [self.start("create", "--name", n, "--label", LABEL, IMAGE, "true") for n in names]
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            self.assertEqual(proc.returncode, 0, err)
        took = time.monotonic() - started
        # One after the other would take twice the delay.
        self.assertGreaterEqual(took, DELAY)
        self.assertLess(took, 2 * DELAY - 0.5)


globals().update(_variants(_SlowReq, ALL))


class SlowReqRules(TestCase):
    """``examples.slowreq``'s setting, without a daemon."""

    def test_parse_delay(self) -> None:
        self.assertEqual(slowreq.parse_delay(None), 1.0)
        self.assertEqual(slowreq.parse_delay(""), 1.0)
        self.assertEqual(slowreq.parse_delay("0.25"), 0.25)
        for bad in ("-1", "soon", "nan", "inf"):
            with self.assertRaises(ValueError):
                slowreq.parse_delay(bad)


# --- debug --------------------------------------------------------------------


class _Debug(_Example):
    example = "debug"

    def endpoints(self) -> str:
        return '  "* /*":\n    pre: [ex]\n    post: [ex]\n'

    def make_settings(self) -> dict[str, str]:
        self.record = self.tmp / "hooks.jsonl"
        return {"POWERSTRIP_DEBUG_FILE": str(self.record)}

    def test_create_is_recorded_pre_and_post(self) -> None:
        name = self.name()
        result = self.docker("run", "--name", name, "--label", LABEL, "--label", "debug-me=yes", IMAGE, "echo", "hi")
        self.assertEqual((result.returncode, result.stdout), (0, b"hi\n"), result.stderr)
        entries = [json.loads(line) for line in self.record.read_text().splitlines()]
        creates = [e for e in entries if e["ClientRequest"]["Request"].split("?")[0].endswith("/containers/create")]
        self.assertEqual([e["Type"] for e in creates], ["pre-hook", "post-hook"], entries)
        pre, post = creates
        self.assertEqual(pre["ClientRequest"]["Method"], "POST")
        self.assertEqual(json.loads(pre["ClientRequest"]["Body"])["Labels"]["debug-me"], "yes")
        # Nothing was changed: dockerd got exactly what the client sent.
        self.assertEqual(post["ClientRequest"], pre["ClientRequest"])
        self.assertEqual(post["ServerResponse"]["Code"], 201)
        container_id = json.loads(post["ServerResponse"]["Body"])["Id"]
        inspected = direct("inspect", "--format", "{{.Id}}", name)
        self.assertEqual(inspected.stdout.decode().strip(), container_id)
        # And it went to the log, pretty-printed, with the body decoded.
        log = self.adapter_log()
        self.assertIn("pre-hook POST /v", log)
        self.assertIn('"debug-me": "yes"', log)


globals().update(_variants(_Debug, ALL))
