"""The README's "Developing Powerstrip": ``pip install -e .`` in the default
editable mode, then ``twistd -n powerstrip`` from another directory.

setuptools' default editable mode installs an import-hook finder, which
twistd's plugin scan cannot see (it scans the directories on ``sys.path``
for ``twisted/plugins/``): ``Unknown command: powerstrip``. setup.py's
``package_dir`` makes it a plain ``.pth`` naming the checkout instead.

The venv is made *without* ``--system-site-packages``: this machine's own
Python already has the checkout on ``sys.path`` (CI's editable install), which
would find the plugins whatever the install under test did. Its dependencies
come from the package index pip is configured with. A copy of the checkout
is installed, so nothing of /work is on its path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from twisted.trial.unittest import TestCase

from powerstrip.sdk.testing import free_port
from tests.e2e.support import DOCKER_SOCK, REPO, require_daemon


def _copy_checkout(dest: Path) -> None:
    """Tracked and unignored files of the checkout, as a fresh clone has them."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = REPO / os.fsdecode(name)
        if src.is_file():
            (dest / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / os.fsdecode(name))


class EditableInstallTests(TestCase):
    def setUp(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="editable-e2e-"))
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.checkout = self.dir / "powerstrip"
        _copy_checkout(self.checkout)
        self.venv = self.dir / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True, capture_output=True)
        self.elsewhere = self.dir / "elsewhere"  # not the checkout, not its parent
        self.elsewhere.mkdir()
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DOCKER_HOST")}

    def venv_run(self, *cmd: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.venv / "bin" / cmd[0]), *cmd[1:]],
            cwd=self.elsewhere,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def test_default_editable_install_then_twistd_from_anywhere(self) -> None:
        require_daemon()
        # The README's command, from the checkout; no --config-settings.
        install = subprocess.run(
            [str(self.venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "-e", "."],
            cwd=self.checkout,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.assertEqual(install.returncode, 0, install.stdout + install.stderr)
        where = self.venv_run(
            "python",
            "-c",
            "import powerstrip, twisted.plugins.powerstrip_plugin as p; print(powerstrip.__file__); print(p.__file__)",
        )
        self.assertEqual(
            where.stdout.split(),
            [
                str(self.checkout / "powerstrip" / "__init__.py"),
                str(self.checkout / "twisted" / "plugins" / "powerstrip_plugin.py"),
            ],
            where.stderr,
        )
        listed = self.venv_run("twistd", "--help")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        commands = [line.split()[0] for line in listed.stdout.splitlines() if line.startswith("    ") and line.split()]
        self.assertIn("powerstrip", commands, listed.stdout)
        self.assertIn("powerstrip-adapter", commands, listed.stdout)
        # And it runs: a pass-through answering /_ping from dockerd, no pid file left behind.
        port = free_port()
        proc = subprocess.Popen(
            [
                str(self.venv / "bin" / "twistd"),
                "-n",
                "--pidfile=",
                "powerstrip",
                "--docker",
                DOCKER_SOCK,
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            cwd=self.elsewhere,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_ping", timeout=2) as r:
                        self.assertEqual(r.read(), b"OK")
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        self.fail(f"twistd -n powerstrip did not serve: {proc.communicate()[0]!r}")
                    time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(20)
        self.assertEqual(os.listdir(self.elsewhere), [])
        # Edits to the checkout are live: that is what editable means.
        (self.checkout / "powerstrip" / "__init__.py").write_text('__version__ = "9.9.9-dev"\n')
        self.assertEqual(self.venv_run("powerstrip", "--version").stdout.strip(), "powerstrip 9.9.9-dev")
