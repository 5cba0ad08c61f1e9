"""Go's text rules that Powerstrip must reproduce to read requests as dockerd does.

dockerd is written in Go: ``encoding/json`` matches an object's keys to struct fields
with ``strings.EqualFold`` semantics, and ``mime.ParseMediaType`` lowers a media type
with ``strings.ToLower``. Both use Unicode *simple* mappings, which differ from
Python's ``str.casefold``/``str.lower`` (full mappings):

- ``EqualFold`` treats two runes as equal when they are in one orbit of
  ``unicode.SimpleFold``: the classes of Unicode's simple case folding (CaseFolding.txt
  statuses C and S). So ``ſ`` (U+017F) is ``s``/``S`` and ``K`` (U+212A, Kelvin) is
  ``k``/``K``; ``İ`` (U+0130) and ``ı`` (U+0131) are only themselves.
- ``ToLower`` maps each rune by its simple lowercase: ``İ`` → ``i`` (Python: ``i̇``),
  ``K`` → ``k``.

The Unicode data is Python's (``unicodedata``); Go's tables may be a version older or
newer, which only matters for code points assigned in between.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=4096)
def simple_fold(char: str) -> str:
    """The simple case folding (CaseFolding.txt C+S) of one character.

    Two characters are ``unicode.SimpleFold``-equivalent exactly when their simple
    foldings are equal (folding is idempotent, so the folding names the class).
    """
    folded = char.casefold()
    if len(folded) == 1:
        return folded  # status C (or no entry: the character itself)
    # Status F (a multi-character full folding): the S entry, where there is one, is the
    # simple lowercase (U+1E9E ẞ → ß, U+1F88 ᾈ → ᾀ); else the character folds to itself.
    lower = char.lower()
    return lower if len(lower) == 1 else char


def fold_key(text: str) -> str:
    """A key under which two strings are equal exactly when Go's ``strings.EqualFold`` says so."""
    if text.isascii():
        return text.lower()  # ASCII runes fold among ASCII only (ſ and K are not ASCII)
    return "".join(simple_fold(c) for c in text)


def equal_fold(a: str, b: str) -> bool:
    """Go's ``strings.EqualFold(a, b)`` for valid (surrogate-free) strings."""
    return len(a) == len(b) and fold_key(a) == fold_key(b)


def to_lower(text: str) -> str:
    """Go's ``strings.ToLower``: every rune by its simple lowercase mapping."""
    # A single character's full lowercase is its simple one except for U+0130, the only
    # unconditional multi-character lowercase in SpecialCasing.txt (simple: U+0069).
    return "".join("i" if c == "\u0130" else c.lower() for c in text)
