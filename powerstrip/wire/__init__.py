"""How Docker's wire is read: the rules, with no Powerstrip policy in them.

HTTP/1.1 messages (:mod:`.http11`, :mod:`.headers`; :mod:`.sender` writes them
out), the Engine API's version prefix
(:mod:`.apipath`) and routes and schemas (:mod:`.engine_api`), Go's text and
JSON rules that dockerd reads bodies by (:mod:`.gotext`, :mod:`.gojson`), and
how endpoints are reached (:mod:`.endpoints`, :mod:`.tls`).

May import: nothing of Powerstrip outside this package. Everything else may import it.
"""
