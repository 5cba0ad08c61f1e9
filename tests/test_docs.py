"""The README and ``docs/``: links that resolve, and no shell block that nothing runs.

- Every relative link (``[text](docs/x.md)``, ``[text](#anchor)``, ``[text](x.md#anchor)``)
  names a file of the checkout, and its ``#anchor`` a heading of that file, by GitHub's
  slug rules (lower case, punctuation dropped, spaces to hyphens, ``-1``, ``-2`` for repeats).
- Every fenced block says its language, and every command block (``sh``, ``bash``,
  ``shell``, ``console``) follows a marker saying what runs it:
  ``<!-- walkthrough-file: … -->`` / ``<!-- walkthrough-run… -->`` (README only:
  :mod:`tests.e2e.test_walkthrough_e2e`), ``<!-- ci-run: NAME -->`` (``ci/image.sh`` reads
  NAME), ``<!-- doc-run: NAME -->`` (:mod:`tests.e2e.test_docs_e2e` runs NAME), or
  ``<!-- not-run: reason -->`` for the very few that cannot run here.

The Markdown reading is :mod:`tests.docblocks`, shared with :mod:`tests.e2e.test_docs_e2e`, which runs the
doc-run blocks.
"""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.docblocks import COMMAND_LANGUAGES, REPO, anchors, blocks, doc_files, prose, slug
from tests.e2e.test_docs_e2e import RUNS

_LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def broken_links(path: Path) -> list[str]:
    """The relative links of ``path`` whose file or anchor does not exist."""
    problems = []
    for n, line in prose(path):
        for target in _LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(REPO)}:{n}: ({target})"
            if not dest.exists():
                problems.append(f"{where}: no file {file_part}")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{where}: {dest.relative_to(REPO)} has no heading #{anchor}")
    return problems


def run_by_ci(name: str, path: Path) -> bool:
    """Whether ``ci/image.sh`` reads the ``ci-run: name`` block of ``path``."""
    rel = str(path.relative_to(REPO))
    for line in (REPO / "ci" / "image.sh").read_text().split("\n"):
        if re.search(rf"(readme_block\.py\"? |readme_cmds ){re.escape(name)}\b", line):
            if rel == "README.md" and "docs/" not in line or rel in line:
                return True
    return False


def unmarked(path: Path, doc_runs: set[str]) -> list[str]:
    """The blocks of ``path`` that break the rules above, each with why."""
    problems = []
    for b in blocks(path):
        if not b.language:
            problems.append(
                f"{b.where()}: a block without a language (a command block needs a marker, "
                "any other block a language: text, yaml, json, python...)"
            )
            continue
        if b.language not in COMMAND_LANGUAGES:
            continue
        ok = {
            "walkthrough-run": path.name == "README.md",
            "walkthrough-file": path.name == "README.md",
            "ci-run": run_by_ci(b.argument, path),
            "doc-run": b.argument in doc_runs,
            "not-run": bool(b.argument),
        }.get(b.marker or "", False)
        if not ok:
            problems.append(
                f"{b.where()}: ```{b.language} block after "
                f"{'<!-- ' + b.marker + ': ' + b.argument + ' -->' if b.marker else 'no marker'}: "
                f"{b.text.strip().splitlines()[0][:80]!r}"
            )
    return problems


def doc_run_names() -> set[str]:
    """The block names :mod:`tests.e2e.test_docs_e2e` knows how to run."""
    return set(RUNS)


class Links(TestCase):
    def test_slug(self) -> None:
        """GitHub's rules, on headings of these docs."""
        self.assertEqual(slug("Authorization plugins (`type: authz`)"), "authorization-plugins-type-authz")
        self.assertEqual(slug("Log format: `--log-format text|json`"), "log-format---log-format-textjson")
        self.assertEqual(slug("adapters.yml"), "adaptersyml")
        self.assertEqual(slug("What passes unhooked (limits)"), "what-passes-unhooked-limits")

    def test_links_resolve(self) -> None:
        """Every relative link and anchor of the README and docs/ leads somewhere."""
        problems = [p for f in doc_files() for p in broken_links(f)]
        self.assertEqual(problems, [], "broken links:\n" + "\n".join(problems))

    def test_a_broken_link_is_found(self) -> None:
        """The check itself: a missing file and a missing anchor are both reported."""
        page = REPO / "docs" / "_test_docs_probe.md"
        page.write_text("# Probe\n\n[a](nowhere.md) [b](#probe) [c](#none) [d](../README.md#two-commands)\n")
        self.addCleanup(page.unlink)
        self.assertEqual(len(broken_links(page)), 2, broken_links(page))

    def test_every_page_is_linked_from_the_readme(self) -> None:
        """The README's "Where to read next" names every page of docs/, and each page links back."""
        readme = (REPO / "README.md").read_text()
        for page in sorted((REPO / "docs").glob("*.md")):
            self.assertIn(f"](docs/{page.name})", readme, f"README.md does not link {page.name}")
            self.assertIn("](../README.md", page.read_text(), f"{page.name} does not link back to the README")


class Commands(TestCase):
    def test_every_command_block_is_run(self) -> None:
        """No shell block in the README or docs/ that no test or CI step runs."""
        names = doc_run_names()
        problems = [p for f in doc_files() for p in unmarked(f, names)]
        self.assertEqual(problems, [], "unmarked blocks:\n" + "\n".join(problems))

    def test_doc_runs_match(self) -> None:
        """Every doc-run block has its run in tests/e2e/test_docs_e2e.py, and every run its block."""
        marked = [b.argument for f in doc_files() for b in blocks(f) if b.marker == "doc-run"]
        self.assertEqual(sorted(set(marked)), sorted(doc_run_names()))

    def test_an_unmarked_block_is_found(self) -> None:
        """The check itself: an unmarked sh block, an unlabelled block and an unknown doc-run are reported."""
        page = REPO / "docs" / "_test_docs_probe.md"
        page.write_text(
            "# P\n\n```sh\nls\n```\n\n```\nx\n```\n\n<!-- doc-run: nothing-runs-this -->\n"
            "```console\n$ ls\n```\n\n```yaml\na: 1\n```\n\n<!-- not-run: a reason -->\n```sh\nls\n```\n"
        )
        self.addCleanup(page.unlink)
        self.assertEqual(
            [p.split(": ")[0] for p in unmarked(page, set())],
            ["docs/_test_docs_probe.md:3", "docs/_test_docs_probe.md:7", "docs/_test_docs_probe.md:12"],
        )

    def test_ci_blocks_are_read(self) -> None:
        """ci/image.sh reads the image blocks from the README and the Compose block from docs/examples.md."""
        readme, examples = REPO / "README.md", REPO / "docs" / "examples.md"
        for name in ("image-build", "image-run", "image-run-host"):
            self.assertTrue(run_by_ci(name, readme), name)
        self.assertTrue(run_by_ci("compose", examples))
        self.assertFalse(run_by_ci("compose", readme))
        marked = {(b.path.name, b.argument) for f in doc_files() for b in blocks(f) if b.marker == "ci-run"}
        self.assertEqual(
            marked,
            {
                ("README.md", "image-build"),
                ("README.md", "image-run"),
                ("README.md", "image-run-host"),
                ("examples.md", "compose"),
            },
        )
