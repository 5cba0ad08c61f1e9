"""The README's "Write your first adapter in 5 minutes", run verbatim against the real dockerd.

The README marks its code blocks: ``<!-- walkthrough-file: NAME -->`` before a
file to create, ``<!-- walkthrough-run -->`` before commands to type (``wait
PORT``: a command in it starts a server on PORT; a person would wait a moment
for it, the test waits for the port). The blocks are run in order, in one
shell, in an empty directory, with each docker CLI first on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.e2e.support import CLIS, REPO, require_daemon

_BLOCK = re.compile(r"<!-- walkthrough-(file|run)(?::\s*(.*?))? -->\n```[a-z]*\n(.*?)```", re.S)


def walkthrough() -> list[tuple[str, str, str]]:
    """The marked blocks of the README: ``(kind, argument, text)`` in order."""
    return [(kind, (arg or "").strip(), text) for kind, arg, text in _BLOCK.findall((REPO / "README.md").read_text())]


def script() -> tuple[dict[str, str], str]:
    """The files to create and one shell script that types every command."""
    files: dict[str, str] = {}
    lines = [
        "set -u",
        "wait_port() { for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null "
        '&& return 0; sleep 0.1; done; echo "port $1 never opened"; exit 1; }',
    ]
    for kind, arg, text in walkthrough():
        if kind == "file":
            files[arg] = text
            continue
        lines.append(text)
        if arg.startswith("wait "):
            lines.append(f"wait_port {arg.split()[1]}")
    return files, "\n".join(lines) + "\n"


class Walkthrough(TestCase):
    timeout = 240

    def setUp(self) -> None:
        require_daemon()

    def test_blocks_are_marked(self) -> None:
        """The section keeps its files and commands (a lost marker would silently shrink the test)."""
        files, commands = script()
        self.assertEqual(sorted(files), ["hello.yml", "hello_adapter.py", "test_hello.py"])
        for needle in ("powerstrip-adapter", "adapter-test", "powerstrip check", "docker run", "unittest"):
            self.assertIn(needle, commands)

    def run_walkthrough(self, cli: str) -> str:
        files, commands = script()
        work = Path(tempfile.mkdtemp(prefix="walkthrough-"))
        self.addCleanup(shutil.rmtree, work, True)
        for name, text in files.items():
            (work / name).write_text(text)
        bindir = work / "bin"
        bindir.mkdir()
        (bindir / "docker").symlink_to(cli)
        env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
        env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
        # This checkout's code, as `pip install .` would install it (an editable
        # install does not show twisted/plugins to twistd outside the checkout).
        env["PYTHONPATH"] = str(REPO)
        # Output to a file, not a pipe: the servers started in the background
        # keep their copy of it open after the script is done.
        out = work / "output"
        with open(out, "wb") as f:
            proc = subprocess.Popen(
                ["bash", "-c", commands], cwd=work, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            proc.wait(timeout=180)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # the servers it started in the background
            except ProcessLookupError:
                pass  # they are gone already
            proc.wait()
        return out.read_text()

    def test_walkthrough(self) -> None:
        for name, cli in CLIS.items():
            out = self.run_walkthrough(cli)
            self.assertIn("hello from my adapter", out, f"{name}:\n{out}")
            self.assertIn("Error response from daemon: hello: no privileged containers, please", out, f"{name}:\n{out}")
            self.assertRegex(out, r"(?m)^OK$", f"{name}: the unittest did not pass:\n{out}")
            self.assertIn("hello.yml: valid", out, f"{name}:\n{out}")
            self.assertNotIn("INVALID", out, f"{name}:\n{out}")
            self.assertNotIn("FAULT", out, f"{name}:\n{out}")
