"""Reading the README and ``docs/`` as Markdown: the pages, their fenced blocks (with the
marker before each), their prose and their heading anchors.

Shared by :mod:`tests.test_docs` (links, every command block accounted for) and
:mod:`tests.e2e.test_docs_e2e` (runs the ``doc-run`` blocks).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Languages whose blocks are commands a user types.
COMMAND_LANGUAGES = frozenset({"sh", "bash", "shell", "console"})
_FENCE = re.compile(r"^( *)(```+|~~~+)\s*([^\s`]*)")
_MARKER = re.compile(r"^\s*<!--\s*([a-z-]+)(?::\s*(.*?))?\s*-->\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def doc_files() -> list[Path]:
    """The README and every page of ``docs/``."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Block:
    """A fenced code block and the marker on the line before it (if any)."""

    path: Path
    line: int  #: 1-based line of the opening fence
    language: str
    text: str
    marker: str | None  #: ``walkthrough-run``, ``ci-run``, ``doc-run``, ``doc-file``, ``not-run``...
    argument: str  #: what follows the marker's colon

    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file, in order (indented ones, in lists, too)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, language = len(m.group(1)), m.group(2), m.group(3)
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence[0] * len(fence)):
            line = lines[i]
            body.append(line[indent:] if line[:indent].strip() == "" else line)
            i += 1
        i += 1  # the closing fence
        marker, argument = None, ""
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        if before >= 0 and (mm := _MARKER.match(lines[before])):
            marker, argument = mm.group(1), (mm.group(2) or "").strip()
        found.append(Block(path, start + 1, language, "\n".join(body) + "\n", marker, argument))
    return found


def prose(path: Path) -> list[tuple[int, str]]:
    """``(line number, line)`` of the file outside fenced blocks."""
    out, fence = [], None
    for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m.group(2)[0] * len(m.group(2))
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is None:
            out.append((n, line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: inline markup's text kept, lower case,
    everything but letters, digits, spaces, ``-`` and ``_`` dropped, spaces to ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, repeats numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line in prose(path):
        m = _HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found
