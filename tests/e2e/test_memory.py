"""Bodies stream with bounded memory: large cp and export through Powerstrip.

Not a timing test: it asserts on Powerstrip's peak resident memory (VmHWM)
while 256 MiB goes in and out with ``docker cp`` and a 512 MiB container is
exported, and that the bytes are exactly right.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.e2e.support import CLIS, IMAGE, LABEL, Powerstrip, direct, require_daemon, run

MiB = 1024 * 1024
#: What the issue allows a 256 MiB cp / 512 MiB export to grow the process by.
BUDGET = 64 * MiB


class BoundedMemory(TestCase):
    def setUp(self) -> None:
        require_daemon()
        self.proxy = Powerstrip()
        self.addCleanup(self.proxy.stop)
        self.name = f"ps-e2e-mem-{os.getpid()}"
        result = direct("run", "-d", "--label", LABEL, "--name", self.name, IMAGE, "sleep", "600")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.addCleanup(direct, "rm", "-f", self.name)

    def _growth(self, before_kib: int) -> int:
        return (self.proxy.rss_kib("VmHWM") - before_kib) * 1024

    def test_cp_256mib_both_ways_and_export_512mib(self) -> None:
        docker = CLIS["docker 28"]
        # Warm up the code paths, so first-use allocations do not count.
        run([docker, "cp", f"{self.name}:/bin/busybox", "/dev/null"], host=self.proxy.url)
        base = self.proxy.rss_kib("VmRSS")
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp, "big.bin")
            with open(src, "wb") as f:
                for _ in range(256):
                    f.write(os.urandom(MiB))
            result = run([docker, "cp", str(src), f"{self.name}:/tmp/big.bin"], host=self.proxy.url, timeout=300)
            self.assertEqual(result.returncode, 0, result.stderr)
            cp_in = self._growth(base)
            result = run(
                [docker, "cp", f"{self.name}:/tmp/big.bin", str(Path(tmp, "back.bin"))],
                host=self.proxy.url,
                timeout=300,
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            cp_out = self._growth(base)
            self.assertEqual(_sha(Path(tmp, "back.bin")), _sha(src))
            Path(tmp, "back.bin").unlink()
        # Grow the container to > 512 MiB and export it, hashing as it streams.
        fill = direct("exec", self.name, "dd", "if=/dev/zero", "of=/tmp/zero.bin", "bs=1M", "count=260")
        self.assertEqual(fill.returncode, 0, fill.stderr)
        env = {**os.environ, "DOCKER_HOST": self.proxy.url}
        proc = subprocess.Popen([docker, "export", self.name], stdout=subprocess.PIPE, env=env)
        h, size = hashlib.sha256(), 0
        while chunk := proc.stdout.read(MiB):
            h.update(chunk)
            size += len(chunk)
        self.assertEqual(proc.wait(300), 0)
        export = self._growth(base)
        self.assertGreater(size, 512 * MiB)
        report = (
            f"powerstrip peak RSS growth over {base // 1024} MiB: cp in 256 MiB +{cp_in / MiB:.1f} MiB, "
            f"cp out +{cp_out / MiB:.1f} MiB, export {size / MiB:.0f} MiB +{export / MiB:.1f} MiB"
        )
        sys.stderr.write(f"\n{report}\n")
        for label, growth in (("cp in", cp_in), ("cp out", cp_out), ("export", export)):
            self.assertLess(growth, BUDGET, f"{label}: {report}")


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()
