"""Every ``<!-- doc-run: NAME -->`` block of the README and ``docs/``, run against the real dockerd.

A block is typed as a user would type it: the blocks of one NAME, in page order, in one
``bash -euo pipefail`` shell, in an empty directory laid out like the checkout's root (its
``adapters.yml``, ``examples/``), with a ``HOME`` of its own. ``<!-- doc-file: NAME -->``
before a block of another language (YAML, Python) makes it a file of the next doc-run
block's directory. A ``console`` block's commands are its ``$ `` lines; each may fail (the
output shows what the user sees), so its failure is printed, not fatal.

Only the ports are this test's own, as ``ci/image.sh`` does it: every port number of
:data:`PORTS` in the blocks, their files and ``adapters.yml`` is replaced by a free port
(``2375`` by a running pass-through Powerstrip's when :attr:`Run.proxy` says the block
expects one; ``$POWERSTRIP_LISTEN`` moves the default listener, which no command
spells). A command left running in the background (``... &``) is followed by a wait for
the ports it opens (:attr:`Run.wait`), as a person would wait a moment; everything the
shell started is stopped at the end.

What each block must print is :data:`RUNS`; tests/test_docs.py checks that every doc-run
block has its entry here and every entry its block.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from twisted.trial.unittest import TestCase

from powerstrip.sdk.testing import PowerstripProcess, free_port
from tests.certs import CA
from tests.docblocks import Block, blocks, doc_files
from tests.e2e.support import REPO, ensure_busybox_image, require_daemon

#: The ports the docs use, each replaced by a free one in every run.
PORTS = (2375, 2376, 2380, 8080, 8081, 8082, 8083, 9090, 9375)
_BACKGROUND = re.compile(r"(?<![&|])&\s*(#.*)?$")


@dataclass(frozen=True)
class Run:
    """How to run the blocks of one doc-run NAME, and what they must print."""

    expect: tuple[str, ...]  #: each must be in the output
    wait: tuple[tuple[int, ...], ...] = ()  #: per command left in the background, in order: the ports it opens
    proxy: bool = False  #: a pass-through Powerstrip is running; 2375 is its port
    certs: bool = False  #: ca.pem, server-cert.pem, server-key.pem here; ca/cert/key.pem in ~/.docker
    in_repo: bool = False  #: run from the checkout itself (the developing commands)
    after: str = ""  #: a check run after the blocks (not part of the docs)
    cleanup: str = ""  #: always run at the end, straight against dockerd
    timeout: float = 90


_COMPOSE_FILE = "services:\n  app:\n    image: busybox\n    command: sleep 600\n    init: true\n"
_COMPOSE_DOWN = "docker-compose down -t 1 >/dev/null 2>&1 || true"

RUNS: dict[str, Run] = {
    # README.md
    "try-a-hook": Run(
        ("\n1\n", "refused by label-adapter: no", "[label-adapter] No such container: no-such-container"),
        wait=((8080,), (2375,)),
    ),
    # docs/configuration.md
    "tls": Run(("Server:", "Powerstrip in front of Powerstrip: ok"), wait=((2376,), (2380,)), certs=True),
    "check-file": Run(
        (
            "adapters.yml: valid, 2 endpoint rule(s), 1 adapter(s)",
            "POST /*/containers/create  pre: label  post: -",
            "label  http://127.0.0.1:",
            "matching rules (file order): * /*/containers/*",
            "post-hooks: label  (skipped: this call's response streams",
        )
    ),
    "check-warnings": Run(
        (
            "notice: 'POST /v1.41/containers/*/start': an API version in a key is not part of the path",
            "warning: 'POST /*/container/create': /container/create matches no Engine API route",
            "(did you mean /containers/create?)",
            "warning: 'GET /containers/*/start': GET matches no method",
        )
    ),
    "healthcheck": Run(("powerstrip 1.0.0", "powerstrip healthcheck: OK:"), proxy=True),
    # docs/events.md
    "events-check": Run(
        (
            "adapters.yml: valid, 1 endpoint rule(s), 3 event rule(s), 3 adapter(s)",
            "container die    -> flocker",
            "network *        -> audit",
            "matching event rules (file order): container die",
            "delivered to: flocker",
        )
    ),
    # docs/authz.md
    "authz": Run(
        ("authorization denied by plugin authz: privileged containers are not allowed", "\nfine\n"),
        wait=((9090,), (2375,)),
    ),
    # docs/sdk.md
    "sdk-serve": Run(('"audit"', "pre-hooks", "the adapter speaks protocol 1"), wait=((8082,),)),
    "sdk-quota": Run(
        ("Conflict", '{"root": 1}', '{"quota.user":"root"}'),
        wait=((),),
        cleanup="docker rm -f quota-demo >/dev/null 2>&1 || true",
    ),
    # docs/testing-adapters.md
    "adapter-test": Run(
        ("8 call(s): 8 valid, 0 refused, 0 invalid, 0 fault(s): the adapter speaks protocol 1",), wait=((8080,),)
    ),
    "adapter-test-v2": Run(
        ("14 call(s): 14 valid, 0 refused, 0 failed, 0 invalid, 0 fault(s): the adapter speaks protocol 2",),
        wait=((8082,),),
    ),
    # docs/examples.md
    "examples-policy": Run(
        (
            "the adapter speaks protocol 1",
            "policy: privileged containers are not allowed",
            "policy: bind mount /srv/../etc (/etc) is outside the allowed paths /srv, /tmp",
        ),
        wait=((8083,), (2375,)),
    ),
    # docs/operating.md
    "metrics": Run(
        ("powerstrip healthcheck: OK:", "powerstrip_requests_total{", 'route="none"', 'method="GET"'),
        wait=((9375, 2375),),
    ),
    "json-logs": Run(('"namespace":"powerstrip.access"', '"path":"/_ping"'), wait=((2375,),)),
    # docs/clients.md
    "compose": Run(("powerstrip-docs-app-1", "Started", "Removed"), proxy=True, cleanup=_COMPOSE_DOWN, timeout=120),
    "compose-plugin": Run(("Docker Compose version",), after="docker compose version"),
    # docs/developing.md
    "developing": Run(
        ("All checks passed!", "files already formatted", "Success: no issues found", "PASSED"),
        in_repo=True,
        timeout=300,
    ),
}


def marked(name: str) -> tuple[list[Block], dict[str, str]]:
    """The blocks marked ``doc-run: name`` (page order) and the doc-file blocks before them."""
    runs: list[Block] = []
    files: dict[str, str] = {}
    for path in doc_files():
        pending: dict[str, str] = {}
        for b in blocks(path):
            if b.marker == "doc-file":
                pending[b.argument] = b.text
            elif b.marker == "doc-run":
                if b.argument == name:
                    runs.append(b)
                    files.update(pending)
                pending = {}
    return runs, files


def commands(block: Block) -> list[str]:
    """A block's logical command lines (a trailing ``\\`` joins lines); a console block's ``$ `` lines."""
    lines = block.text.rstrip("\n").split("\n")
    if block.language == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    out: list[str] = []
    for line in lines:
        if out and out[-1].endswith("\\"):
            out[-1] += "\n" + line
        else:
            out.append(line)
    return out


def script(name: str, run: Run, ports: dict[int, int]) -> tuple[str, dict[str, str]]:
    """The shell script typing every command of ``name``, and the files to create; ports swapped."""
    runs, files = marked(name)
    waits = list(run.wait)
    lines = [
        "wait_port() { for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; "
        'sleep 0.1; done; echo "port $1 never opened"; exit 1; }'
    ]
    for b in runs:
        for cmd in commands(b):
            background = bool(_BACKGROUND.search(cmd.split("\n")[-1]))
            if b.language == "console" and not background:
                cmd = f'{{ {cmd}\n}} || echo "(exit status $?)"'
            lines.append(cmd)
            if background:
                if not waits:
                    raise AssertionError(f"doc-run {name}: more commands left running than Run.wait says: {cmd!r}")
                lines += [f"wait_port {p}" for p in waits.pop(0)]
    if waits:
        raise AssertionError(
            f"doc-run {name}: Run.wait names {len(run.wait)} background command(s), "
            f"the blocks have {len(run.wait) - len(waits)}"
        )
    if run.after:
        lines.append(run.after)
    return swap_ports("\n".join(lines) + "\n", ports), {f: swap_ports(t, ports) for f, t in files.items()}


def swap_ports(text: str, ports: dict[int, int]) -> str:
    for old, new in ports.items():
        text = re.sub(rf"(?<!\d){old}(?!\d)", str(new), text)
    return text


class DocRuns(TestCase):
    timeout = 170

    def setUp(self) -> None:
        require_daemon()
        ensure_busybox_image()

    def run_doc(self, name: str) -> str:
        run = RUNS[name]
        blocks_, _ = marked(name)
        self.assertTrue(blocks_, f"no block is marked <!-- doc-run: {name} -->")
        work = Path(tempfile.mkdtemp(prefix=f"doc-{name}-"))
        self.addCleanup(shutil.rmtree, work, True)
        home = work / "home"
        (home / ".docker").mkdir(parents=True)
        ports = {p: free_port() for p in PORTS}
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONFIG")
        }
        # This checkout's code, as `pip install .` would install it (see test_walkthrough_e2e).
        if run.proxy:
            proxy = PowerstripProcess()
            self.addCleanup(proxy.stop)
            ports[2375] = proxy.port
        # Powerstrip's default listener (tcp:2375) is in no command to swap: the variable
        # that stands in for --listen moves it, for twistd and `powerstrip healthcheck` alike.
        env.update(
            HOME=str(home),
            PYTHONPATH=str(REPO),
            COMPOSE_PROJECT_NAME="powerstrip-docs",
            POWERSTRIP_LISTEN=f"tcp:{ports[2375]}:interface=127.0.0.1",
        )
        cwd = REPO if run.in_repo else work
        if not run.in_repo:
            (work / "adapters.yml").write_text(swap_ports((REPO / "adapters.yml").read_text(), ports))
            (work / "examples").symlink_to(REPO / "examples")
        if run.certs:
            ca = CA()
            cert, key = ca.issue("localhost", server=True)
            (work / "ca.pem").write_bytes(ca.pem)
            (work / "server-cert.pem").write_bytes(cert)
            (work / "server-key.pem").write_bytes(key)
            ca.write(home / ".docker", "alice", server=False)  # the docker CLI's ca.pem, cert.pem, key.pem
        if name == "compose":
            (work / "compose.yaml").write_text(_COMPOSE_FILE)
        if name in ("compose", "compose-plugin"):
            plugins = home / ".docker" / "cli-plugins"
            if name == "compose":  # the plugin as the compose-plugin block links it
                plugins.mkdir()
                (plugins / "docker-compose").symlink_to(shutil.which("docker-compose") or "docker-compose")
        text, files = script(name, run, ports)
        for fname, content in files.items():
            (work / fname).write_text(content)
        out = work / "output"
        with open(out, "wb") as f:
            proc = subprocess.Popen(
                ["bash", "-euo", "pipefail", "-c", text],
                cwd=cwd,
                env=env,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            status = proc.wait(timeout=run.timeout)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # the servers it left in the background
            except ProcessLookupError:
                pass  # none are left
            proc.wait()
            if run.cleanup:
                subprocess.run(["bash", "-c", run.cleanup], cwd=work, env=env, timeout=60)
        output = out.read_text(errors="replace")
        shown = f"doc-run {name}: the script\n{text}\nprinted\n{output}"
        self.assertEqual(status, 0, f"exit status {status} (None: it ran over {run.timeout}s); {shown}")
        for needle in run.expect:
            self.assertIn(needle, output, shown)
        self.assertNotIn("Traceback", output, shown)
        return output


def _make_test(name: str):
    def test(self: DocRuns) -> None:
        self.run_doc(name)

    test.__doc__ = f"The <!-- doc-run: {name} --> block(s) run as written and print what the docs say."
    return test


for _name in RUNS:
    setattr(DocRuns, f"test_{_name.replace('-', '_')}", _make_test(_name))
