"""Print the shell block of README.md (or another page) that follows ``<!-- ci-run: NAME -->``.

ci/image.sh runs the README's image commands and docs/examples.md's Compose
commands as written (with only the image tag, container name and ports swapped
for its own): this is where it reads them, so an edit that breaks them breaks CI.

    python3 ci/readme_block.py NAME [FILE]     # FILE: README.md by default
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def block(name: str, text: str) -> str:
    """The code of the fenced block right after the ``ci-run: name`` marker."""
    m = re.search(rf"<!-- ci-run: {re.escape(name)} -->\n```[a-z]*\n(.*?)```", text, re.S)
    if m is None:
        raise SystemExit(f"no block marked <!-- ci-run: {name} -->")
    return m.group(1)


if __name__ == "__main__":
    readme = Path(sys.argv[2] if len(sys.argv) > 2 else Path(__file__).resolve().parents[1] / "README.md")
    sys.stdout.write(block(sys.argv[1], readme.read_text(encoding="utf-8")))
