"""The request's way, in the order a request meets these modules:

1. :mod:`.front` listens and reads: Powerstrip's own HTTP/1.1 server protocol, one per connection;
2. :mod:`.route` routes: :class:`~.route.Proxy`, the resource-shaped entry point every request is handed to;
3. :mod:`.exchange` carries it: pre-hooks, dockerd, post-hooks, as one explicit state machine;
4. :mod:`.upstream` is the link to dockerd (pooled connections, framing counted);
5. :mod:`.splice` joins client and dockerd after a hijack or upgrade; otherwise the
   exchange hands the answer back to the front, and so to the client.

May import: :mod:`powerstrip.wire`, :mod:`powerstrip.config`, :mod:`powerstrip.hooks`.
(The front knows the route and exchange only through the small interfaces it declares.)
"""
