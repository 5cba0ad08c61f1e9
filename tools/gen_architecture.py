#!/usr/bin/env python3
"""The module dependency listing of ``powerstrip/``, and the rule it must keep.

Reads every module's imports (all of them: top-level, inside functions, under
``TYPE_CHECKING``), as the code says them, and checks two things:

- **layers**: the subpackages are ordered ``wire < sdk < config < hooks < proxy < ops``
  and a module imports only from its own subpackage or one below it;
- **no circles**: the graph of modules has no cycle (not even one kept to type hints).

Then it writes the listing between ``<!-- dependencies:begin -->`` and
``<!-- dependencies:end -->`` in ``docs/architecture.md``.

    python3 tools/gen_architecture.py           # check, and rewrite the listing
    python3 tools/gen_architecture.py --check   # check, and fail if the listing is stale
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "powerstrip"
DOC = REPO / "docs" / "architecture.md"
BEGIN, END = "<!-- dependencies:begin -->", "<!-- dependencies:end -->"
#: Bottom to top: each may import those before it, never those after.
LAYERS = ("wire", "sdk", "config", "hooks", "proxy", "ops")


def module_name(path: Path) -> str:
    """``powerstrip/hooks/chain.py`` -> ``powerstrip.hooks.chain``."""
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports (a name imported from a package
    counts as its module when it is one, else as the package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: ``from . import x`` is this package, each further dot one up
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def layer(name: str) -> int | None:
    """The index of ``name``'s subpackage in :data:`LAYERS` (None: the package's top)."""
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def problems(graph: dict[str, set[str]]) -> list[str]:
    """Imports against the layers, and circles."""
    found = []
    for src, dsts in sorted(graph.items()):
        for dst in sorted(dsts):
            a, b = layer(src), layer(dst)
            if a is not None and b is not None and b > a:
                found.append(f"{src} imports {dst}: {LAYERS[a]} may not import {LAYERS[b]}")
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append("circle: " + " -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def listing(graph: dict[str, set[str]]) -> str:
    """The Markdown listing: per subpackage, each module and what it imports.

    No sizes: the listing changes when the graph does, not with every edit."""
    lines = ["| module | imports (within Powerstrip) |", "|---|---|"]
    order = sorted(graph, key=lambda n: (-1 if layer(n) is None else layer(n), n))
    for name in order:
        deps = ", ".join(f"`{d.removeprefix('powerstrip.')}`" for d in sorted(graph[name])) or "–"
        lines.append(f"| `{name.removeprefix('powerstrip.') or name}` | {deps} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Check the rule; write (or, with ``--check``, compare) the listing."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/architecture.md's listing is stale")
    args = parser.parse_args(argv)
    paths = modules()
    graph = {n: imports(n, p, set(paths)) for n, p in paths.items()}
    bad = problems(graph)
    for line in bad:
        print(line, file=sys.stderr)
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    if BEGIN not in text or END not in text:
        print(f"{DOC.relative_to(REPO)} has no {BEGIN} ... {END} section", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{listing(graph)}{END}{tail}"
    if args.check:
        if new != text:
            print(f"{DOC.relative_to(REPO)} is stale: run python3 tools/gen_architecture.py", file=sys.stderr)
            return 1
    elif new != text:
        DOC.write_text(new, encoding="utf-8")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
