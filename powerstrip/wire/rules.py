"""A rule's ``METHOD PATH`` globs, and how a request line meets them.

The rule of path identity, as dockerd routes: **the API version prefix is never
part of a path.** A request's path is %-decoded, its query string dropped and
its ``/vN.NN`` prefix split off (:func:`powerstrip.wire.apipath.split_version`);
a rule's ``METHOD PATH`` shell globs (:func:`fnmatch.fnmatchcase`) are tried
against what is left. A version segment at the start of a rule's path
(``/v1.41/``, ``/v1.*/``, ``/v*/``) is dropped the same way, and a leading
``/*/`` may stand for no segment at all, so ``/containers/create``,
``/*/containers/create`` and ``/v1.41/containers/create`` all mean container
create at every version. Which versions a rule applies to is its ``versions:``
field. A request may match several rules; their hooks are merged in file order
(see :func:`powerstrip.config.matching.match`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from fnmatch import fnmatchcase, translate
from functools import lru_cache
from urllib.parse import unquote

from powerstrip.wire.apipath import split_version

#: A rule path's leading version segment: ``/v1.41``, ``/v1.*``, ``/v1.4[01]``, ``/v*``.
_KEY_VERSION = re.compile(r"/v[0-9.*?\[\]!-]*(?=/)")
#: A rule's method glob.
_METHOD = re.compile(r"^[A-Za-z*?\[\]!]+$")


def parse_rule(text: str) -> tuple[str, str]:
    """Split a ``"METHOD /path/glob"`` rule into its method and path globs.

    :raises ValueError: ``text`` is not two words, a method glob and a path glob.
    """
    words = text.split() if isinstance(text, str) else []
    if len(words) != 2 or not _METHOD.match(words[0]) or not words[1].startswith(("/", "*")):
        raise ValueError(f'{text!r}: expected "METHOD /path" (e.g. "POST /*/containers/create")')
    return words[0].upper(), words[1]


def request_path(path: str) -> tuple[str | None, str]:
    """``(version, path)`` of a request target as dockerd routes it: query string
    dropped, ``%XX`` decoded (``/containers/%63reate`` is a create), version split off."""
    return split_version(unquote(path.split("?", 1)[0]))


def key_version(path_glob: str) -> str | None:
    """The version segment a rule's path starts with (``v1.41`` of ``/v1.41/info``), if any."""
    m = _KEY_VERSION.match(path_glob)
    return m.group()[1:] if m else None


@lru_cache(maxsize=1024)
def path_globs(path_glob: str) -> tuple[str, ...]:
    """The globs a rule's path stands for, tried on unversioned request paths.

    ``/v1.41/info`` → ``/info``; ``/*/info`` → ``/info`` and, as ``*`` always
    matched across ``/``, ``/*/info`` itself; anything else as written.
    """
    m = _KEY_VERSION.match(path_glob)
    if m:
        return (path_glob[m.end() :],)
    if path_glob.startswith("/*/"):
        return (path_glob[2:], path_glob)
    return (path_glob,)


def path_matches(path_glob: str, path: str) -> bool:
    """Whether a rule's path glob matches an unversioned, decoded request path."""
    return any(fnmatchcase(path, g) for g in path_globs(path_glob))


Token = tuple[Callable[[str], bool], bool]  # (accepts this character, may repeat: ``*``)


def _any(_: str) -> bool:
    return True


def _glob_tokens(glob: str, chars: set[str]) -> list[Token]:
    """A shell glob as :func:`fnmatch.translate` reads it; adds the characters it names to ``chars``."""
    tokens: list[Token] = []
    i = 0
    while i < len(glob):
        c, i = glob[i], i + 1
        if c == "*":
            if not tokens or tokens[-1] != (_any, True):
                tokens.append((_any, True))
            continue
        if c == "?":
            tokens.append((_any, False))
            continue
        j = i
        if c == "[":
            j += j < len(glob) and glob[j] == "!"
            j += j < len(glob) and glob[j] == "]"
            while j < len(glob) and glob[j] != "]":
                j += 1
        if c != "[" or j >= len(glob):  # an unclosed [ is a literal, as in fnmatch
            chars.add(c)
            tokens.append((c.__eq__, False))
            continue
        body, i = glob[i:j], j + 1
        chars.update(body)
        for lo, hi in re.findall(r"(.)-(.)", body):  # a range's inner characters matter too
            chars.update(map(chr, range(ord(lo), min(ord(hi), ord(lo) + 256) + 1)))
        rx = re.compile(translate(f"[{body}]"))

        # A def, not a lambda: mypy cannot infer a lambda whose default binds ``rx``.
        def accepts(ch: str, rx: re.Pattern[str] = rx) -> bool:
            return rx.match(ch) is not None

        tokens.append((accepts, False))
    return tokens


#: Where dockerd's router takes ``{name:.*}`` (image, plugin and distribution
#: references contain ``/``); every other ``{param}`` is one path segment.
_SLASHED_NAMES = ("/images/", "/plugins/", "/distribution/")


def _template_tokens(template: str, chars: set[str], slashed_names: bool) -> list[Token]:
    """An Engine API path template (``/containers/{id}/start``): a ``{param}`` is one or more characters."""
    tokens: list[Token] = []
    slashed = slashed_names and template.startswith(_SLASHED_NAMES)
    for n, piece in enumerate(re.split(r"\{[^}]*\}", template)):
        if n:
            one: Callable[[str], bool] = _any if slashed else "/".__ne__
            tokens += [(one, False), (one, True)]
        chars.update(piece)
        tokens += [(c.__eq__, False) for c in piece]
    return tokens


def glob_meets_template(glob: str, template: str, slashed_names: bool = True) -> bool:
    """Whether some path matches both a rule's path glob (after :func:`path_globs`)
    and an Engine API path template: the product of the two automata, searched.

    A template's ``{param}`` is a non-empty path segment, except the image,
    plugin or distribution ``{name}``, which may hold ``/`` unless ``slashed_names`` is false.
    """
    chars = {"/", "\ue000"}  # U+E000: stands for every character neither names
    a, b = _glob_tokens(glob, chars), _template_tokens(template, chars, slashed_names)
    todo, seen = [(0, 0)], set()
    while todo:
        state = todo.pop()
        if state in seen:
            continue
        seen.add(state)
        i, j = state
        if i == len(a) and j == len(b):
            return True
        if i < len(a) and a[i][1]:
            todo.append((i + 1, j))
        if j < len(b) and b[j][1]:
            todo.append((i, j + 1))
        if i < len(a) and j < len(b):
            todo += [(i + (not a[i][1]), j + (not b[j][1])) for c in chars if a[i][0](c) and b[j][0](c)]
    return False


def rule_matches(method_glob: str, path_glob: str, method: str, path: str) -> bool:
    """Whether a rule's globs match ``method path`` (a request target: query ignored,
    any API version)."""
    return fnmatchcase(method.upper(), method_glob) and path_matches(path_glob, request_path(path)[1])
