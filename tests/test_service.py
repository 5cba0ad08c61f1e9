"""The twistd plugin's options: defaults, environment variables, start-up errors."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

from twisted.python import usage
from twisted.trial.unittest import TestCase

from powerstrip.ops.metrics import Metrics
from powerstrip.ops.service import DEFAULT_LISTEN, Options, docker_url_for, make_service
from powerstrip.wire.endpoints import DockerAddress
from tests.support import CA, parse_options

VALID = 'version: 1\nendpoints:\n  "POST /*/containers/create":\n    pre: [a]\nadapters:\n  a: http://a/x\n'


class OptionsTests(TestCase):
    def parse(self, *argv: str, env: dict | None = None) -> Options:
        return parse_options(self, *argv, env=env)

    def config_file(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_defaults_are_a_loopback_pass_through(self) -> None:
        options = self.parse()
        self.assertEqual(options["listen"], [DEFAULT_LISTEN])
        self.assertEqual(str(options["docker_address"]), "unix:///var/run/docker.sock")
        self.assertIsNone(options["config_obj"])  # default file missing: pass-through
        self.assertEqual((options["max-json-body"], options["max-response-body"]), (16 << 20, 64 << 20))

    def test_environment(self) -> None:
        path = self.config_file(VALID)
        options = self.parse(
            env={
                "POWERSTRIP_CONFIG": path,
                "DOCKER_HOST": "tcp://10.0.0.1:2376",
                "POWERSTRIP_LISTEN": "tcp:2400 unix:/tmp/ps.sock",
            }
        )
        self.assertEqual(options["listen"], ["tcp:2400", "unix:/tmp/ps.sock"])
        self.assertEqual(options["docker_address"], DockerAddress("tcp", "10.0.0.1", 2376))
        self.assertEqual(len(options["config_obj"].endpoints), 1)

    def test_options_beat_environment(self) -> None:
        options = self.parse(
            "--docker",
            "127.0.0.1:2377",
            "--listen",
            "tcp:2401",
            "--max-json-body",
            "1k",
            env={"DOCKER_HOST": "tcp://10.0.0.1:2376", "POWERSTRIP_LISTEN": "tcp:2400"},
        )
        self.assertEqual(str(options["docker_address"]), "tcp://127.0.0.1:2377")
        self.assertEqual(options["listen"], ["tcp:2401"])
        self.assertEqual(options["max-json-body"], 1024)

    def test_named_config_missing_is_fatal(self) -> None:
        with self.assertRaises(SystemExit) as ctx:
            self.parse("--config", "/nonexistent/adapters.yml")
        self.assertIn("/nonexistent/adapters.yml: cannot read adapters file", str(ctx.exception))

    def test_invalid_config_is_fatal_with_culprit(self) -> None:
        path = self.config_file(VALID.replace("pre: [a]", "pre: [b]"))
        with self.assertRaises(SystemExit) as ctx:
            self.parse("--config", path)
        self.assertIn("pre-hook adapter 'b' is not defined", str(ctx.exception))

    def test_bad_docker_url(self) -> None:
        for url in ("unix://relative.sock", "ftp://x:1", "tcp://nohost"):
            self.assertRaises(usage.UsageError, self.parse, "--docker", url)

    def test_refuses_to_proxy_to_itself(self) -> None:
        with self.assertRaises(usage.UsageError) as ctx:
            self.parse(env={"DOCKER_HOST": "tcp://127.0.0.1:2375"})
        self.assertIn("Powerstrip's own listener", str(ctx.exception))

    def test_docker_url_for_listeners(self) -> None:
        self.assertEqual(docker_url_for("tcp:2375:interface=127.0.0.1"), "tcp://127.0.0.1:2375")
        self.assertEqual(docker_url_for("tcp:2375:interface=0.0.0.0"), "tcp://127.0.0.1:2375")
        self.assertEqual(docker_url_for("tcp:2375"), "tcp://127.0.0.1:2375")
        self.assertEqual(docker_url_for("unix:/run/ps.sock:mode=660"), "unix:///run/ps.sock")
        self.assertIsNone(docker_url_for("systemd:domain=INET:index=0"))

    def test_make_service_listens_everywhere_asked(self) -> None:
        options = self.parse("--listen", "tcp:0:interface=127.0.0.1", "--listen", f"unix:{self.mktemp()}")
        top = make_service(options)
        self.assertEqual(len(list(top)), 3)  # two listeners and the announcer


class ReloadTests(TestCase):
    def test_reload_swaps_config_and_keeps_old_on_error(self) -> None:
        from twisted.internet import reactor

        from powerstrip.config.spec import load_config
        from powerstrip.ops.reload import reload_config
        from powerstrip.proxy.route import Proxy

        path = self.mktemp()
        with open(path, "w") as f:
            f.write(VALID)
        resource = Proxy(reactor, load_config(path), DockerAddress.parse("unix:///nonexistent"), metrics=Metrics)
        self.addCleanup(resource.close)
        first = resource.config
        with open(path, "w") as f:
            f.write(VALID.replace("POST /*/containers/create", "POST /*/volumes/create"))
        self.assertTrue(reload_config(resource, path))
        self.assertEqual(resource.config.endpoints[0].pattern, "POST /*/volumes/create")
        self.assertIsNot(resource.config, first)
        second = resource.config
        with open(path, "w") as f:
            f.write("version: 1\nendpoints: nope\n")
        self.assertFalse(reload_config(resource, path))
        self.assertIs(resource.config, second)


class AccessLogOptionTests(TestCase):
    def test_access_log_on_by_default_and_can_be_turned_off(self) -> None:
        for argv, expected in (([], True), (["--no-access-log"], False)):
            options = parse_options(self, "--listen", "tcp:0:interface=127.0.0.1", *argv)
            top = make_service(options)
            site = next(s for s in top if hasattr(s, "factory")).factory
            self.assertIs(site.proxy.access_log is not None, expected)


class StaleSocketTests(TestCase):
    def test_stale_socket_removed_live_one_kept(self) -> None:
        import socket

        from powerstrip.ops.service import clear_stale_socket

        path = self.mktemp()
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()  # the file stays, nobody accepts on it
        clear_stale_socket(path)
        self.assertFalse(os.path.exists(path))
        live = socket.socket(socket.AF_UNIX)
        live.bind(path)
        live.listen(1)
        self.addCleanup(live.close)
        clear_stale_socket(path)
        self.assertTrue(os.path.exists(path))
        regular = self.mktemp()
        with open(regular, "w") as f:
            f.write("not a socket")
        clear_stale_socket(regular)
        self.assertTrue(os.path.exists(regular))


class TLSOptionTests(TestCase):
    """``--tls``/``--tlsverify`` for listeners, ``DOCKER_TLS_VERIFY`` for dockerd."""

    def parse(self, *argv: str, env: dict | None = None) -> Options:
        return parse_options(self, *argv, env=env)

    def setUp(self) -> None:
        ca = CA()
        self.server = ca.write(Path(self.mktemp()), "localhost", server=True)
        self.client = ca.write(Path(self.mktemp()), "alice", server=False)

    def tls_args(self, *names: str) -> list[str]:
        files = {"tlscacert": "ca.pem", "tlscert": "cert.pem", "tlskey": "key.pem"}
        return [arg for n in names for arg in (f"--{n}", str(self.server / files[n]))]

    def test_tlsverify_wraps_tcp_listeners_only(self) -> None:
        from powerstrip.wire.tls import HalfCloseableTLSFactory

        options = self.parse(
            "--tlsverify",
            *self.tls_args("tlscacert", "tlscert", "tlskey"),
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--listen",
            f"unix:{self.mktemp()}",
        )
        self.assertEqual(options["listener_tls"].ca, str(self.server / "ca.pem"))
        factories = [s.factory for s in make_service(options) if hasattr(s, "factory")]
        self.assertEqual([type(f).__name__ for f in factories], ["HalfCloseableTLSFactory", "FrontFactory"])
        self.assertIsInstance(factories[0], HalfCloseableTLSFactory)

    def test_tls_option_errors(self) -> None:
        cases = [
            (["--tlsverify", *self.tls_args("tlscert", "tlskey")], "--tlsverify needs --tlscacert"),
            (["--tls", *self.tls_args("tlscert")], "--tls needs --tlskey"),
            (self.tls_args("tlscert", "tlskey"), "--tlscert needs --tls or --tlsverify"),
            (["--tls", *self.tls_args("tlscert", "tlskey"), "--listen", "unix:/tmp/x.sock"], "apply to tcp: listeners"),
            (["--docker-tlsverify"], "--docker-tlsverify needs a tcp:// Docker address"),
        ]
        for argv, message in cases:
            with self.assertRaises(usage.UsageError) as ctx:
                self.parse(*argv)
            self.assertIn(message, str(ctx.exception))

    def test_unreadable_certificate_stops_the_start(self) -> None:
        with self.assertRaises(SystemExit) as ctx:
            self.parse("--tls", "--tlscert", "/nonexistent/cert.pem", "--tlskey", str(self.server / "key.pem"))
        self.assertIn("powerstrip: TLS: certificate /nonexistent/cert.pem", str(ctx.exception))

    def test_docker_tls_from_environment_like_the_cli(self) -> None:
        from powerstrip.wire.tls import DockerTLS

        env = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(self.client)}
        options = self.parse("--docker", "tcp://127.0.0.1:2376", env=env)
        self.assertEqual(options["docker_tls"], DockerTLS(str(self.client)))
        # Meaningless for a unix socket, as for the docker CLI:
        self.assertIsNone(self.parse(env=env)["docker_tls"])
        self.assertIsNone(self.parse("--docker", "tcp://127.0.0.1:2376")["docker_tls"])
        options = self.parse(
            "--docker", "tcp://127.0.0.1:2376", "--docker-tlsverify", "--docker-cert-path", str(self.client)
        )
        self.assertEqual(options["docker_tls"], DockerTLS(str(self.client)))

    def test_docker_cert_path_without_certificates_stops_the_start(self) -> None:
        with self.assertRaises(SystemExit) as ctx:
            self.parse(
                "--docker", "tcp://127.0.0.1:2376", env={"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/nonexistent"}
            )
        self.assertIn("/nonexistent/ca.pem", str(ctx.exception))


class ConfigWatcherTests(TestCase):
    """``--watch-config``: a changed file is reloaded once it has settled."""

    def setUp(self) -> None:
        from twisted.internet.task import Clock

        from powerstrip.config.spec import load_config
        from powerstrip.ops.reload import ConfigWatcher

        self.path = self.mktemp()
        self.write(VALID)
        self.resource = mock.Mock(config=load_config(self.path))
        self.clock = Clock()
        self.watcher = ConfigWatcher(self.resource, self.path, self.clock, interval=1.0)
        self.watcher.startService()
        self.addCleanup(self.watcher.stopService)

    def write(self, text: str) -> None:
        tmp = self.path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.path)  # as editors and config managers do

    def test_change_is_reloaded_after_settling(self) -> None:
        first = self.resource.config
        self.write(VALID.replace("POST /*/containers/create", "POST /*/volumes/create"))
        self.clock.advance(1)
        self.assertIs(self.resource.config, first)  # seen once: maybe still being written
        self.clock.advance(1)
        self.assertEqual(self.resource.config.endpoints[0].pattern, "POST /*/volumes/create")
        second = self.resource.config
        self.clock.advance(5)
        self.assertIs(self.resource.config, second)  # no change, no reload

    def test_invalid_file_keeps_the_old_config_then_a_fix_is_taken(self) -> None:
        first = self.resource.config
        self.write("version: 1\nendpoints: nope\n")
        self.clock.pump([1, 1])
        self.assertIs(self.resource.config, first)
        self.write(VALID.replace("pre: [a]", "post: [a]"))
        self.clock.pump([1, 1])
        self.assertEqual(self.resource.config.endpoints[0].post[0].name, "a")

    def test_removed_file_keeps_the_config(self) -> None:
        first = self.resource.config
        os.unlink(self.path)
        self.clock.pump([1, 1, 1])
        self.assertIs(self.resource.config, first)
