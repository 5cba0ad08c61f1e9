"""The module dependency rule of ``powerstrip/`` (``tools/gen_architecture.py``).

The package's subpackages are layers (``wire < sdk < config < hooks < proxy <
ops``): a module imports only from its own layer or one below, and no import
circle exists, not even one kept to type hints. ``docs/architecture.md``
carries the generated listing, which must be current.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from twisted.trial.unittest import TestCase

REPO = Path(__file__).resolve().parents[1]


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_architecture", REPO / "tools" / "gen_architecture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_architecture", module)
    spec.loader.exec_module(module)
    return module


tool = _tool()


class PackageTests(TestCase):
    def graph(self) -> dict[str, set[str]]:
        paths = tool.modules()
        return {n: tool.imports(n, p, set(paths)) for n, p in paths.items()}

    def test_no_layer_violations_and_no_circles(self) -> None:
        self.assertEqual(tool.problems(self.graph()), [])

    def test_every_module_is_in_a_layer(self) -> None:
        """A new subpackage must be given its place in the order (or the rule would not see it)."""
        outside = [
            n
            for n in self.graph()
            if tool.layer(n) is None and n.count(".") > 0 and n.split(".")[1] not in ("adapter", "testing")
        ]
        self.assertEqual(outside, [])

    def test_the_listing_in_docs_is_current(self) -> None:
        self.assertEqual(
            tool.main(["--check"]), 0, "docs/architecture.md is stale: run python3 tools/gen_architecture.py"
        )

    def test_the_listing_shows_the_graph(self) -> None:
        text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
        self.assertIn("| `hooks.chain` | ", text)
        self.assertIn("`hooks.interface`", text.split("| `hooks.chain` | ", 1)[1].split("\n", 1)[0])


class RuleTests(TestCase):
    """The checker itself finds what it is there to find."""

    def test_an_import_upwards_is_reported(self) -> None:
        graph = {"powerstrip.wire.http11": {"powerstrip.proxy.front"}, "powerstrip.proxy.front": set()}
        self.assertEqual(
            tool.problems(graph), ["powerstrip.wire.http11 imports powerstrip.proxy.front: wire may not import proxy"]
        )

    def test_a_circle_is_reported(self) -> None:
        graph = {"powerstrip.hooks.a": {"powerstrip.hooks.b"}, "powerstrip.hooks.b": {"powerstrip.hooks.a"}}
        self.assertEqual(
            tool.problems(graph), ["circle: powerstrip.hooks.a -> powerstrip.hooks.b -> powerstrip.hooks.a"]
        )

    def test_imports_are_read_everywhere(self) -> None:
        """Inside functions and under TYPE_CHECKING too: a circle kept to type hints is still one."""
        path = self.mktemp()
        Path(path).write_text(
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from powerstrip.proxy import front\n"
            "def f():\n    import powerstrip.ops.metrics\n",
            encoding="utf-8",
        )
        known = {"powerstrip.proxy.front", "powerstrip.ops.metrics", "powerstrip.wire.x"}
        self.assertEqual(
            tool.imports("powerstrip.wire.x", Path(path), known), {"powerstrip.proxy.front", "powerstrip.ops.metrics"}
        )
