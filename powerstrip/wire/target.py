"""The request target as dockerd reads it: the path it routes, the parameters it reads.

dockerd is Go. ``net/http`` %-decodes the path into ``r.URL.Path`` (a bad escape is a
400 there; ``#`` is no fragment but part of the path or query), gorilla/mux routes that
decoded path, after answering ``301`` to any path that ``path.Clean`` would change
(``//``, ``/./``, ``/../``), and handlers read parameters from ``url.ParseQuery``: pairs
split on ``&`` only, a pair holding ``;`` or a bad ``%`` escape *dropped* (an error most
routes answer 400; ``/build`` ignores it), ``+`` a space, the first of repeated keys
taken by ``FormValue``. Python reads several of these differently (``urlsplit`` takes
``#`` for a fragment, ``parse_qs`` keeps a bad escape as text, ``unquote`` turns any
non-UTF-8 escape into U+FFFD), so this module is the one reading:

- :func:`canonical_target` -- a target in the one spelling hooks are shown and dockerd
  gets, or :class:`BadTarget` where no spelling would be read alike;
- :func:`decoded_path` and :func:`endpoint` -- the path as dockerd routes it;
- :func:`params` -- the query as ``url.ParseQuery`` reads it (refusing what Go would drop);
- :func:`refuse_repeats` -- a parameter given twice that dockerd reads once.

The canonical spelling: every ``%XX`` escape of a character that may stand in a
request target as itself (visible ASCII but ``%``, ``?`` and ``#``) is decoded, every
other escape is kept with upper-case hex. dockerd reads both spellings alike
(``r.URL.Path`` is the same decoded string), so rewriting is invisible to it, and a hook
that matches the path as text sees every route word spelled out: ``%65xport`` is
``export``, ``%2F`` is ``/``. The query is kept as sent (it is checked, not rewritten).
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from powerstrip.wire import engine_api
from powerstrip.wire.apipath import split_version

#: More parameters than this in one query are refused: no Docker client sends more than a
#: few dozen, and Go since 1.24.12 refuses a query of over 10,000 (urlmaxqueryparams),
#: which an older dockerd reads whole.
MAX_PARAMS = 1000

_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
#: A query needs the full reading only when it holds one of these: a ``;``, a bad
#: escape, or an escape of a non-ASCII byte (whose decoding must be UTF-8).
_SUSPECT_QUERY = re.compile(r";|%(?![0-9A-Fa-f]{2})|%[89A-Fa-f]")
#: Bytes that stand for themselves in a request target (and so in the canonical spelling).
_LITERAL = frozenset(range(0x21, 0x7F)) - {ord("%"), ord("?"), ord("#")}


class BadTarget(ValueError):
    """A request target that hooks and dockerd could read differently: refused (400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _canonical_escape(m: re.Match[str]) -> str:
    byte = int(m.group(1), 16)
    return chr(byte) if byte in _LITERAL else "%" + m.group(1).upper()


def canonical_target(target: str) -> str:
    """``target`` (an origin-form path and optional query) in its canonical spelling.

    :raises BadTarget: a ``#`` anywhere, a path escape that is not ``%XX`` or not UTF-8,
        a path dockerd redirects rather than routes (not in ``path.Clean`` form), or a
        query :func:`check_query` refuses.
    """
    if "#" in target:
        raise BadTarget(
            "powerstrip: '#' in the request target: a request has no fragment, and dockerd reads "
            "the '#' and what follows as part of the path or query (send it as %23)"
        )
    path, mark, query = target.partition("?")
    if query:
        check_query(query)
    decoded = path
    if "%" in path:
        # Checked before respelling, which could complete a broken escape (%2%46 -> %2F).
        if _BAD_ESCAPE.search(path):
            raise BadTarget(f"powerstrip: bad %-escape in the request path {path[:80]!r}")
        respelled = _ESCAPE.sub(_canonical_escape, path)
        decoded = decoded_path(respelled)
        if respelled != path:
            target = respelled + mark + query
    if "//" in decoded or "/." in decoded:
        clean = _clean(decoded)
        if clean != decoded:
            raise BadTarget(
                f"powerstrip: the request path {decoded[:80]!r} is not in clean form: dockerd does not "
                f"route it (it answers 301 to {clean[:80]!r}); send that path"
            )
    return target


def decoded_path(path: str) -> str:
    """A request path (no query) %-decoded, as Go's ``r.URL.Path``.

    :raises BadTarget: an escape that is not ``%XX``, or bytes that are not UTF-8 (Go
        keeps them as they are; Python would read U+FFFD for each, so two names would look alike).
    """
    if "%" not in path:
        return path
    if _BAD_ESCAPE.search(path):
        raise BadTarget(f"powerstrip: bad %-escape in the request path {path[:80]!r}")
    try:
        return unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise BadTarget(f"powerstrip: the request path {path[:80]!r} decodes to bytes that are not UTF-8") from None


def endpoint(target: str) -> tuple[str | None, str]:
    """``(version, route path)`` of a canonical target, as dockerd routes it:
    ``("1.41", "/containers/web/export")`` for ``/v1.41/containers/web/export?x=1``."""
    return split_version(decoded_path(target.partition("?")[0]))


def _clean(path: str) -> str:
    """gorilla/mux's ``cleanPath``: Go's ``path.Clean``, keeping a trailing slash."""
    parts: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if parts:
                parts.pop()
        elif segment and segment != ".":
            parts.append(segment)
    clean = "/" + "/".join(parts)
    return clean + "/" if path.endswith("/") and clean != "/" else clean


def check_query(query: str) -> None:
    """Refuse a query string that Go's ``url.ParseQuery`` and a hook could read differently.

    Cheap when there is nothing to refuse (one regular-expression scan); see :func:`params`.
    """
    if _SUSPECT_QUERY.search(query) or query.count("&") >= MAX_PARAMS:
        params(query)


def params(query: str) -> dict[str, list[str]]:
    """The parameters of a query string (after the ``?``) as Go's ``url.ParseQuery`` reads
    them: name -> values in order (``FormValue`` takes the first), a pair without ``=`` an
    empty value, ``+`` a space.

    :raises BadTarget: a pair Go would drop (one holding ``;``, a bad ``%`` escape), an
        escape that is not UTF-8, more than :data:`MAX_PARAMS` pairs. Each names the pair.
    """
    out: dict[str, list[str]] = {}
    count = 0
    for pair in query.split("&"):
        if not pair:
            continue
        count += 1
        if count > MAX_PARAMS:
            raise BadTarget(f"powerstrip: more than {MAX_PARAMS} query parameters")
        if ";" in pair:
            raise BadTarget(
                f"powerstrip: query parameter {pair[:60]!r} holds ';': Docker's Go reader drops such a "
                "parameter (on /build without an error), so a hook would check one dockerd ignores"
            )
        name, _, value = pair.partition("=")
        out.setdefault(_unescape(name, pair), []).append(_unescape(value, pair))
    return out


def _unescape(text: str, pair: str) -> str:
    if "%" not in text:
        return text.replace("+", " ")
    if _BAD_ESCAPE.search(text):
        raise BadTarget(
            f"powerstrip: query parameter {pair[:60]!r} has a bad %-escape: Docker's Go reader drops "
            "such a parameter, so a hook would check one dockerd ignores"
        )
    try:
        return unquote_to_bytes(text.replace("+", " ")).decode("utf-8")
    except UnicodeDecodeError:
        raise BadTarget(
            f"powerstrip: query parameter {pair[:60]!r} decodes to bytes that are not UTF-8 "
            "(dockerd reads the bytes, a hook could not)"
        ) from None


def refuse_repeats(method: str, route_path: str, parameters: dict[str, list[str]]) -> None:
    """Refuse a parameter given more than once that dockerd reads one value of.

    dockerd takes the first value (``FormValue``) of every parameter but the few it reads
    as lists (``t``, ``extrahosts`` and ``securityopt`` on ``/build``, ``changes`` on
    commit and import...: :func:`powerstrip.wire.engine_api.list_params`), where every
    value counts and a hook sees them all.

    :raises BadTarget: naming the parameter.
    """
    lists: frozenset[str] | None = None
    for name, values in parameters.items():
        if len(values) < 2:
            continue
        if lists is None:
            template = engine_api.route_for(method.upper(), route_path)
            lists = engine_api.list_params(method.upper(), template) if template else frozenset()
        if name not in lists:
            raise BadTarget(
                f"powerstrip: query parameter {name[:60]!r} given {len(values)} times: dockerd reads "
                "only the first, a hook could read another (send it once)"
            )
