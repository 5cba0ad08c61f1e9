"""One client request's way through Powerstrip, as an explicit state machine.

An :class:`Exchange` carries one request from the front to dockerd and the
answer back. Where it is, is one :class:`Stage`, changed in one place
(:meth:`Exchange._to`)::

    ROUTED ─┬─────────────────────────────┐
            └─ READING_BODY (for hooks) ──┤
                                          ├─ PRE_HOOKS ─┐
                                          └─────────────┴─ CONNECTING ─ AWAITING ─┬─ STREAMING ───┬─ DONE
                                                                                  ├─ POST_HOOKS ──┤
                                                                                  └─ SPLICED ─────┘
    any stage before DONE ── ABANDONED (the client went away, or was refused mid-request)

A request with no hooks is relayed as bytes: its head goes to dockerd as it
was received (when it can), and the response's head and body come back as
dockerd framed them, with only ``Powerstrip-Request-Id`` added. Hooked
requests take the Deferred-chained pipeline of :mod:`powerstrip.hooks.chain`.

The end of every exchange (``DONE`` or ``ABANDONED``) is reported once to
the proxy's observers (access log, metrics) and, after a failure, to the
``unwind: true`` adapters.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import Any, cast
from typing import Protocol as TypingProtocol

from twisted.internet import defer
from twisted.internet.interfaces import IPullProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from powerstrip.config.matching import Route, streams_unhooked
from powerstrip.hooks import body as hookbody
from powerstrip.hooks.authz import must_buffer
from powerstrip.hooks.chain import HookChain
from powerstrip.hooks.flow import REQUEST_ID_HEADER, ClientRequest, Flow, ServerResponse, error_response
from powerstrip.hooks.interface import AdapterFault, Refused, ShortCircuit
from powerstrip.proxy.front import FrontConnection
from powerstrip.proxy.splice import Splice
from powerstrip.proxy.upstream import (
    CHUNKED,
    CLOSE,
    DECODE,
    RELAY,
    SPLICE,
    UpstreamConnection,
    UpstreamPool,
    request_head,
)
from powerstrip.wire.headers import HOP_BY_HOP, end_to_end, header_value, is_json, media_type
from powerstrip.wire.http11 import (
    RequestHead,
    ResponseHead,
)
from powerstrip.wire.rules import request_path
from powerstrip.wire.target import BadTarget
from powerstrip.wire.tls import describe

#: Log namespaces are part of the interface (log filters name them): kept across moves.
log = Logger(namespace="powerstrip.exchange")


MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Memory and time bounds for what Powerstrip must hold whole."""

    #: A request body handed to pre-hooks (larger: 413).
    max_json_body: int = 16 * MiB
    #: A response handed to post-hooks (larger: 502).
    max_response_body: int = 64 * MiB
    #: All bytes held for hooks at once, across every connection (over it: 503).
    max_buffered: int = 256 * MiB
    #: Seconds a body held for hooks may take to arrive whole (408 after; None: no limit).
    body_deadline: float | None = 120.0


class Counters(TypingProtocol):
    """What the request path counts, as it happens (:class:`powerstrip.ops.metrics.Metrics` in a service)."""

    def request_done(self, exchange: Exchange) -> None:
        """An exchange ended (told once per exchange)."""

    def refused(self, code: int) -> None:
        """Powerstrip refused a request or a connection itself with ``code``."""

    def stream_started(self) -> None:
        """A hijacked or upgraded stream began."""

    def reloaded(self, ok: bool) -> None:
        """A configuration reload was tried, and took effect or not."""


class AccessLine(TypingProtocol):
    """Where one line per ended exchange goes (:class:`powerstrip.ops.access.AccessLog` in a service)."""

    def write(self, exchange: Exchange) -> None:
        """The line for ``exchange``."""

    def flush(self) -> None:
        """Write out what is buffered."""


class Shared(TypingProtocol):
    """What every exchange shares: :class:`powerstrip.proxy.route.Proxy`, seen from here."""

    reactor: Any
    limits: Limits
    upstream: UpstreamPool
    chain: HookChain
    metrics: Counters
    #: Requests being answered and hijacked streams: what a shutdown drains.
    inflight: set[Exchange]
    streams: set[Splice]
    #: Bytes held for hooks right now, across every connection (against ``limits.max_buffered``).
    buffered: int

    def route(self, method: str, path: str) -> Route:
        """The hooks for ``method path`` under the configuration in force."""

    def ended(self, exchange: Exchange) -> None:
        """``exchange`` is over: tell the observers."""


class Stage(enum.Enum):
    """Where one request is on its way."""

    ROUTED = "routed"
    READING_BODY = "reading body"
    PRE_HOOKS = "pre-hooks"
    CONNECTING = "connecting"
    AWAITING = "awaiting response"
    STREAMING = "streaming"
    POST_HOOKS = "post-hooks"
    SPLICED = "spliced"
    DONE = "done"
    ABANDONED = "abandoned"


#: What unwind calls say a hook failed in.
_FAILED_IN = {Stage.PRE_HOOKS: "pre-hook", Stage.POST_HOOKS: "post-hook"}
#: Stages in which the request may already be at dockerd.
AT_DOCKER = frozenset((Stage.AWAITING, Stage.STREAMING, Stage.POST_HOOKS, Stage.SPLICED))

_FRAMING = (b"content-length", b"transfer-encoding")
#: How much of a streamed Docker error is kept for unwind calls.
_ERROR_KEPT = 64 * 1024
#: The ``Failure.Message`` of an unwind call for a client that left before its request was sent.
CLIENT_GONE = "the client went away before the request was sent to Docker"
_REASONS = {
    200: b"OK",
    201: b"Created",
    204: b"No Content",
    304: b"Not Modified",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    409: b"Conflict",
    413: b"Payload Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}

#: The calls dockerd hijacks for clients that ask for no upgrade ("200 OK" and a raw stream).
_HIJACKS = re.compile(r"^(/v[0-9.]+)?/(containers/[^/]+/attach|exec/[^/]+/start)$")


def _message(resp: ServerResponse) -> str:
    """The error message of a response: its JSON ``message``, else its text."""
    text = resp.body[:_ERROR_KEPT].decode("utf-8", "replace")
    try:
        message = json.loads(text).get("message")
        if isinstance(message, str):
            return message
    except (ValueError, AttributeError):
        pass
    return text.strip() or f"status {resp.code}"


@implementer(IPullProducer)
class _FlushWatcher:
    """Calls ``then`` once a transport has written out everything it holds,
    or ``lost`` if its connection is lost first."""

    def __init__(self, transport: Any, then: Any, lost: Any) -> None:
        self.transport, self.then, self.lost = transport, then, lost
        self.registering = True

    def resumeProducing(self) -> None:
        # A pull producer is asked for data at registration (ignored) and then
        # whenever the transport's buffer has drained: the moment we wait for.
        if self.registering:
            return
        self.transport.unregisterProducer()
        self.then()

    def stopProducing(self) -> None:
        # The transport is going away with the data unsent: ``then`` never comes.
        self.lost()


def when_flushed(transport: Any, then: Any, lost: Any) -> None:
    """Run ``then`` when ``transport`` has flushed its write buffer (``lost`` if it closes first)."""
    if transport.producer is not None:
        transport.unregisterProducer()
    watcher = _FlushWatcher(transport, then, lost)
    transport.registerProducer(watcher, False)
    watcher.registering = False


def _post_hookable(head: ResponseHead, method: str, path: str) -> bool:
    """Whether post-hooks may see this response: whole JSON, text or empty bodies."""
    if streams_unhooked(path):
        return False
    if method == "HEAD" or head.code in (204, 304) or head.content_length == b"0":
        return True
    ctype = head.header(b"content-type")
    return is_json(ctype) or media_type(ctype).startswith("text/")


class Exchange:
    """Carries one request from the client to dockerd and the answer back."""

    def __init__(self, proxy: Shared, client: FrontConnection, head: RequestHead) -> None:
        self.proxy = proxy
        self.client = client
        self.head = head
        self.stage = Stage.ROUTED
        route = proxy.route(head.method, head.path)  # rules ignore the query: one cache entry per path
        self.flow = Flow(
            ClientRequest(head.method, head.target, head.headers), route, caller=client.caller if route.hooked else None
        )
        self.conn: UpstreamConnection | None = None
        self.status: int | None = None
        self.docker_status: int | None = None
        #: Response bytes sent to the client (body only), and request body bytes passed on.
        self.bytes_out = 0
        self.bytes_in = 0
        #: The hijacked stream, once there is one (its bytes count too).
        self.splice: Splice | None = None
        self.head_sent = False
        #: The answer will be the connection's last.
        self.closing = not head.keep_alive
        #: (stage, adapter or None) of a failure unwind calls must hear of.
        self._failure: tuple[str, str | None] | None = None
        self._pending: defer.Deferred[Any] | None = None  # hooks' or the pool's
        self._early: list[bytes] | None = None
        self._chunks: list[bytes] | None = None
        self._held = 0  # bytes counted against --max-buffered
        self._resp_head: ResponseHead | None = None
        self._err_head: ResponseHead | None = None
        self._err_body: list[bytes] | None = None
        self._relay_close = False  # the response ends with dockerd's connection
        self._head_out: bytes | None = None  # a relayed response head not written yet
        self._producing = False
        self._eof = False
        self._attempts = 0
        proxy.inflight.add(self)

    # -- the one place the stage changes -------------------------------------------------

    def _to(self, stage: Stage) -> None:
        self.stage = stage
        if stage is Stage.DONE or stage is Stage.ABANDONED:  # (Enum hashing is Python code: no set here)
            if self._held:
                self._release_held()
            self.proxy.inflight.discard(self)
            if self.flow.prepared:
                self._unwind()
            self.proxy.ended(self)

    @property
    def ended(self) -> bool:
        """Whether this exchange is over (answered, or abandoned)."""
        return self.stage is Stage.DONE or self.stage is Stage.ABANDONED

    # -- the request and its body -------------------------------------------------------

    def start(self) -> None:
        """Begin: gather what the pre-hooks need, then run them (or go straight to dockerd)."""
        head = self.head  # read strictly by the front: an origin-form target, one framing
        if self.flow.route.hooked and "?" in head.target:
            try:
                self.flow.request.check_params()
            except BadTarget as e:
                self.closing = True
                self._respond(error_response(400, e.message))
                return
        if head.has_body:
            if self._buffers_body():
                self._to(Stage.READING_BODY)
                self._chunks = []
                self.client.read_body(decode=True, deadline=self.proxy.limits.body_deadline)
                return
            # Streamed bodies are never held: reading pauses until dockerd is
            # connected, and a slow dockerd then paces the client.
            self.flow.request.streamed = True
            self._early = []
            self.client.read_body(decode=False)
        self._run_pre()

    def _buffers_body(self) -> bool:
        route, head = self.flow.route, self.head
        if must_buffer(route.pre + route.post, head.method, head.path):
            return True
        if not route.pre:
            return False
        return hookbody.wants_body(head.method, request_path(head.path)[1], head.content_type)

    def request_data(self, data: bytes) -> None:
        """A piece of the request body from the front (de-framed when buffered for hooks)."""
        if self.stage is Stage.READING_BODY:
            self._hold(data)
            return
        if self._early is not None:  # dockerd is not connected yet: hold this, read no more
            self._early.append(data)
            self.client.pause()
            return
        if self.conn is not None:
            self.conn.write(data)

    def request_end(self) -> None:
        """The whole request body has arrived."""
        if self.flow.request.streamed:
            self.bytes_in = self.client.body_payload
        if self.stage is Stage.READING_BODY:
            self._body_buffered()
        elif self.conn is not None and self._early is None:
            self._upload_done()

    def _hold(self, data: bytes) -> None:
        limits = self.proxy.limits
        size = self.bytes_in + len(data)
        if size > limits.max_json_body:
            self.closing = True
            self._respond(
                error_response(
                    413,
                    f"powerstrip: request body larger than {limits.max_json_body} bytes cannot be handed "
                    "to adapters (see --max-json-body)",
                )
            )
            return
        if not self._reserve(len(data)):
            return
        self.bytes_in = size
        cast(list[bytes], self._chunks).append(data)  # a list while READING_BODY

    def _reserve(self, n: int) -> bool:
        """Count ``n`` more bytes held for hooks against ``--max-buffered``; answer 503 if over."""
        proxy = self.proxy
        if proxy.buffered + n > proxy.limits.max_buffered:
            proxy.metrics.refused(503)
            self.closing = True
            self._respond(
                error_response(
                    503,
                    f"powerstrip: too many bytes held for hooks across all requests (over "
                    f"{proxy.limits.max_buffered}, see --max-buffered); try again shortly",
                )
            )
            return False
        proxy.buffered += n
        self._held += n
        return True

    def _release_held(self) -> None:
        # (By _to at the end, when bytes are held.)
        self.proxy.buffered -= self._held
        self._held = 0

    def _body_buffered(self) -> None:
        head = self.head
        body = b"".join(cast(list[bytes], self._chunks))  # the body read (READING_BODY)
        self._chunks = None
        if self.flow.route.pre:
            try:
                body = hookbody.read_for_hooks(head.method, request_path(head.path)[1], head.content_type, body)
            except hookbody.BodyRefused as e:
                self._respond(error_response(400, e.message))
                return
        self.flow.request.body = body
        self._run_pre()

    # -- pre-hooks -------------------------------------------------------------------

    def _run_pre(self) -> None:
        if self.flow.route.pre:
            # Reading goes on meanwhile (pipelined bytes wait in the front's buffer),
            # so that a client that goes away is noticed and its hook calls cancelled.
            self._to(Stage.PRE_HOOKS)
            self._pending = self.proxy.chain.run_pre(self.flow)
            self._pending.addCallbacks(lambda _: self._connect(), self._hook_failed)
        else:
            self._connect()

    def _hook_failed(self, failure: Failure) -> None:
        if failure.check(defer.CancelledError) or self.ended:
            return
        # isinstance, as failure.check would: it narrows failure.value for mypy.
        if isinstance(failure.value, Refused | ShortCircuit):
            if isinstance(failure.value, Refused) or failure.value.response.code >= 400:
                self._failure = (_FAILED_IN[self.stage], failure.value.adapter.name)
            self._respond(failure.value.response)
        elif isinstance(failure.value, AdapterFault):
            self._failure = (_FAILED_IN[self.stage], failure.value.adapter.name)
            log.warn("{flow}: {error}", flow=self.name, error=str(failure.value), request_id=self.flow.id)
            self._respond(failure.value.response())
        else:
            self.crash(failure)

    # -- dockerd -----------------------------------------------------------------------

    def _connect(self) -> None:
        if self.ended:
            return
        self._to(Stage.CONNECTING)
        self._attempts += 1
        idle = self.proxy.upstream.idle()
        if idle is not None:  # no Deferred on the fast path
            self._send(idle)
            return
        if self.flow.request.streamed and self.client.body_pending:
            self.client.pause()
        self._pending = self.proxy.upstream.connect()
        self._pending.addCallbacks(self._send, self._connect_failed)

    def _connect_failed(self, failure: Failure) -> None:
        self._pending = None
        if failure.check(defer.CancelledError) or self.ended:
            return
        self._failure = ("docker", None)
        self._respond(
            error_response(
                502, f"powerstrip: cannot reach Docker at {self.proxy.upstream.address}: {describe(failure)}"
            )
        )

    def _request_head(self) -> bytes:
        head, req = self.head, self.flow.request
        if head.plain and not self.flow.route.pre:
            return head.raw  # as received: strictly read, nothing to change
        headers = [
            (k, v)
            for k, v in end_to_end(req.headers, keep_upgrade=head.upgrade)
            if k.lower() not in _FRAMING and k.lower() != b"expect"
        ]
        if header_value(headers, b"host") is None:
            headers.insert(0, (b"Host", b"docker"))
        if req.streamed:
            if head.chunked:
                headers.append((b"Transfer-Encoding", b"chunked"))
            else:
                headers.append((b"Content-Length", b"%d" % cast(int, head.content_length)))  # not chunked: set
        elif req.body or head.has_body or head.content_length is not None:
            headers.append((b"Content-Length", b"%d" % len(req.body or b"")))
        return request_head(req.method, req.uri, headers)

    def _send(self, conn: UpstreamConnection) -> None:
        self._pending = None
        if self.ended:
            conn.transport.loseConnection()
            return
        self.conn = conn
        self._to(Stage.AWAITING)
        req = self.flow.request
        if req.streamed:
            early, self._early = cast(list[bytes], self._early), None  # a list for a streamed body until now
            at_hand = b"".join(early)
        else:
            at_hand = req.body or b""
        # The head and the body bytes at hand in one write, as the client sent them:
        # dockerd reads an attach's body with its head and drops it; a body that
        # arrives apart from the head becomes the container's first stdin bytes.
        conn.start(self, self._request_head() + at_hand, head_only=req.method == "HEAD")
        if not req.streamed:
            conn.request_finished()
            self.client.resume()
            if self._eof:
                self.client_eof()
            return
        if not self.client.body_pending:
            self._upload_done()
            self.client.resume()
            return
        conn.transport.registerProducer(self.client, True)
        self.client.resume()

    def _upload_done(self) -> None:
        conn = cast(UpstreamConnection, self.conn)  # called once the request is on its way
        if conn.transport.producer is not None:
            conn.transport.unregisterProducer()
        self.client.resumeProducing()  # dockerd's pace no longer holds the client (unregistering does not say so)
        conn.request_finished()
        if self._eof:
            self.client_eof()

    def client_eof(self) -> None:
        """The client shut its write side after sending its whole request."""
        self._eof = True
        self.closing = True
        # Not for a connection that may still become a stream (an upgrade, or
        # stream bytes already sent): the splice passes the EOF on after them.
        if self.head.upgrade or self.client.has_buffered_input():
            return
        if self.conn is not None and self._early is None and self.stage in (Stage.AWAITING, Stage.STREAMING):
            self.conn.end_after_response()

    # -- the response (ResponseListener) ------------------------------------------------

    def head_received(self, head: ResponseHead) -> str:
        self.status = self.docker_status = head.code
        req = self.flow.request
        if head.code == 101:
            if not self.head.upgrade:
                return RELAY  # a protocol switch nobody asked for: the connection fails (502)
            self._hijacked(head)
            return SPLICE
        if head.framing is CLOSE:
            if (
                head.code == 200
                and _HIJACKS.match(req.path)
                and (head.header(b"content-type") or b"").startswith(b"application/vnd.docker.")
            ):
                self._hijacked(head)  # an old client's attach or exec: "200 OK" and a raw stream
                return SPLICE
            self._relay_close = self.closing = True
        if self.flow.route.post:
            if _post_hookable(head, req.method, req.path) and not self._relay_close:
                self._resp_head, self._chunks = head, []
                return DECODE
            log.info(
                "{flow}: post-hooks skipped: {ctype} response streams unseen",
                flow=self.name,
                ctype=(head.header(b"content-type") or b"streaming").decode("latin-1"),
                request_id=self.flow.id,
            )
        if head.code >= 400 and self.flow.prepared:
            # Unwind calls will want Docker's error, which streams past otherwise.
            self._err_head, self._err_body = head, []
        how = RELAY
        if not self.head.minor and head.framing is CHUNKED:
            # An HTTP/1.0 client cannot read chunked framing: the body goes de-chunked,
            # delimited by the connection's end.
            how, self._relay_close, self.closing = DECODE, True, True
        # Relay the head now: `docker run` sends `start` only once the `wait`
        # response head has arrived, and its body comes much later.
        self._to(Stage.STREAMING)
        self.head_sent = True
        # Written with the first body bytes, or at the latest when this read
        # of dockerd's ends (body_continues): one write instead of two.
        self._head_out = self._relay_head(head, keep_framing=how is RELAY)
        return how

    def _relay_head(self, head: ResponseHead, keep_framing: bool = True) -> bytes:
        if self.client.body_pending or self.client.read_eof:
            # Answered before the body was all read, the rest is dropped; or the client is done.
            self.closing = True
        stamp = b"%s: %s\r\n" % (REQUEST_ID_HEADER, self.flow.id.encode())
        if self.closing:
            stamp += b"Connection: close\r\n"
        if keep_framing and not head.hop:
            return head.raw[:-2] + stamp + b"\r\n"
        lines = [b"HTTP/1.1 %d %s" % (head.code, head.reason)]
        lines.extend(k + b": " + v for k, v in end_to_end(head.headers))
        if keep_framing:
            lines.extend(k + b": " + v for k, v in head.headers if k.lower() == b"transfer-encoding")
        return b"\r\n".join(lines) + b"\r\n" + stamp + b"\r\n"

    def body_data(self, data: bytes) -> None:
        if self._resp_head is None:
            if self._err_body is not None and cast(UpstreamConnection, self.conn).payload <= _ERROR_KEPT:
                self._err_body.append(data)
            if self._head_out is not None:
                data, self._head_out = self._head_out + data, None
            self.client.write(data)
            return
        limit = self.proxy.limits.max_response_body
        if self._held + len(data) > limit:
            self._resp_head = None
            self._abort_upstream()
            self._respond(
                error_response(
                    502,
                    f"powerstrip: Docker's response is larger than {limit} bytes, the most "
                    "post-hooks can be given (see --max-response-body)",
                )
            )
            return
        if self._reserve(len(data)):
            cast(list[bytes], self._chunks).append(data)  # a list with _resp_head
        else:
            self._abort_upstream()

    def body_continues(self) -> None:
        if self._head_out is not None:
            head, self._head_out = self._head_out, None
            self.client.write(head)
        if self.stage is Stage.STREAMING and not self._producing:
            # A slow client pauses dockerd's side (and lets it go at the end).
            self._producing = True
            self.client.transport.registerProducer(cast(UpstreamConnection, self.conn).transport, True)

    def body_done(self) -> None:
        # The connection may go back to the pool now.
        conn, self.conn = cast(UpstreamConnection, self.conn), None
        if self._resp_head is None:
            self.bytes_out = conn.payload
            if self._head_out is not None:
                raw_head, self._head_out = self._head_out, None
                self.client.write(raw_head)
            if self._producing:
                self._producing = False
                self.client.transport.unregisterProducer()
                conn.transport.resumeProducing()  # a slow client may have paused it
            self._finish()
            return
        head, body = self._resp_head, b"".join(cast(list[bytes], self._chunks))  # a list with _resp_head
        self._resp_head = self._chunks = None
        self.flow.response = ServerResponse(head.code, end_to_end(head.headers), body)
        self._to(Stage.POST_HOOKS)
        self._pending = self.proxy.chain.run_post(self.flow)
        self._pending.addCallbacks(lambda flow: self._respond(flow.response), self._hook_failed)

    def _hijacked(self, head: ResponseHead) -> None:
        conn = cast(UpstreamConnection, self.conn)  # dockerd's answer came on it
        self.head_sent = True
        if self.flow.route.post:
            log.info(
                "{flow}: post-hooks skipped: connection hijacked ({code})",
                flow=self.name,
                code=head.code,
                request_id=self.flow.id,
            )
        # The head goes out verbatim and on its own: docker-py reads it with a
        # buffered reader and can lose stream bytes that share its segment.
        # So dockerd is not read again until the head has left.
        conn.transport.pauseProducing()
        self._to(Stage.SPLICED)
        self.proxy.inflight.discard(self)  # a stream is drained as a stream, not as a request
        transport = self.client.transport
        transport.write(head.raw)
        when_flushed(transport, lambda: self._splice(conn), lambda: self._lost_before_splice(conn))

    def _lost_before_splice(self, conn: UpstreamConnection) -> None:
        # The client left before the head was out: no stream will start, so
        # the paused dockerd connection must not be left open.
        conn.transport.loseConnection()
        if not self.ended:
            self._to(Stage.DONE)

    def _splice(self, conn: UpstreamConnection) -> None:
        self.conn = None
        if not conn.connected:
            self.client.close()  # dockerd went away before the stream began
            self._to(Stage.DONE)
            return
        splice = self.splice = Splice(self.client.transport, conn.transport, on_close=self._splice_closed)
        self.proxy.streams.add(splice)
        self.proxy.metrics.stream_started()
        leftover = conn.take_raw(splice)
        if leftover:
            splice.upstream_data(leftover)
        conn.transport.resumeProducing()
        self.client.hijack(splice)

    def _splice_closed(self, splice: Splice) -> None:
        self.proxy.streams.discard(splice)
        if not self.ended:
            self._to(Stage.DONE)

    def failed(self, reason: Failure) -> None:
        conn, self.conn = self.conn, None
        if self.ended:
            return
        replayable = not self.flow.request.streamed
        if conn is not None and conn.reused and not conn.got_bytes and replayable and self._attempts < 8:
            # An idle keep-alive connection dockerd had already closed: retry
            # on another (nothing was answered, the body is in hand).
            self._connect()
            return
        self._failure = ("docker", None)
        if self.head_sent:
            if conn is not None:
                self.bytes_out = conn.payload
            log.warn(
                "{flow}: Docker connection lost mid-response: {why}",
                flow=self.name,
                why=describe(reason),
                request_id=self.flow.id,
            )
            self.client.transport.loseConnection()
            self._to(Stage.DONE)
            return
        self._respond(
            error_response(
                502, f"powerstrip: lost the connection to Docker at {self.proxy.upstream.address}: {describe(reason)}"
            )
        )

    # -- the end ------------------------------------------------------------------------

    def _respond(self, resp: ServerResponse) -> None:
        """Answer the client with a complete response (error, adapter or hooked)."""
        if self.ended:
            return
        if self.head_sent:
            # Too late for a clean error: cutting the stream short is the signal.
            self.client.transport.loseConnection()
            self._to(Stage.DONE)
            return
        self._abort_pending()
        self.status = resp.code
        self.flow.response = resp  # what the client got, for unwind calls
        if self.client.body_pending or self.client.read_eof:
            # Answered before the body was all read: the rest is read and dropped, then close.
            self.closing = True
        length = b"%d" % len(resp.body)
        if self.flow.request.method == "HEAD" and not resp.body:
            # A HEAD answer describes the body a GET would get: keep dockerd's length.
            length = header_value(resp.headers, b"content-length") or length
        lines = [b"HTTP/1.1 %d %s" % (resp.code, _REASONS.get(resp.code, b"Status"))]
        lines.extend(
            k + b": " + v for k, v in resp.headers if k.lower() not in _FRAMING and k.lower() not in HOP_BY_HOP
        )
        lines.append(b"Content-Length: " + length)
        lines.append(b"%s: %s" % (REQUEST_ID_HEADER, self.flow.id.encode()))
        if self.closing:
            lines.append(b"Connection: close")
        self.head_sent = True
        self.client.write(b"\r\n".join(lines) + b"\r\n\r\n" + resp.body)
        self.bytes_out = len(resp.body)
        self._finish()

    def _finish(self) -> None:
        if self._relay_close:
            self.closing = True
        self._to(Stage.DONE)
        self.client.answered(keep_alive=not self.closing)

    def crash(self, failure: Failure) -> None:
        """A bug surfaced while handling this request: log it, answer 500, keep serving."""
        log.failure("{flow}: internal error", failure, flow=self.name, request_id=self.flow.id)
        self._abort_upstream()
        self._respond(error_response(500, f"powerstrip: internal error: {failure.getErrorMessage()}"))

    def _abort_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            # Even if "called": a hook chain starts fired and waits on each call in turn.
            pending.cancel()

    def _abort_upstream(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None and conn.transport is not None:
            conn.listener = None
            conn.transport.abortConnection()

    def abandon(self) -> None:
        """The client went away (or was refused) before its answer was complete."""
        if self.ended:
            return
        sent = self.stage in AT_DOCKER
        if self.stage is Stage.STREAMING and self.conn is not None:
            self.bytes_out = self.conn.payload  # what was relayed until now
        self._abort_pending()  # records the interrupted hook call
        self._abort_upstream()
        log.info("{flow}: client went away", flow=self.name, request_id=self.flow.id)
        if not sent:
            # dockerd never got the request: what pre-hooks set up for it is for nothing.
            # (Once it was sent, dockerd may have carried it out: nothing is unwound.)
            self._failure = ("client", None)
        self._to(Stage.ABANDONED)

    @property
    def name(self) -> str:
        """``#id METHOD target``, as log lines name this request."""
        return f"#{self.flow.id} {self.head.method} {self.head.target}"

    def _unwind(self) -> None:
        """After a failed request, let ``unwind: true`` adapters release what their pre-hooks set up.

        Called by :meth:`_to` at the end, and only when a pre-hook prepared something."""
        flow = self.flow
        prepared, flow.prepared = flow.prepared, []
        failure = self._failure
        if failure is None and self.docker_status is not None and self.docker_status >= 400:
            failure = ("docker", None)
        if failure is None:
            return
        flow.prepared = prepared
        stage, adapter = failure
        if stage == "client":
            flow.response, message = None, CLIENT_GONE  # it got no answer
        else:
            if self._err_head is not None:
                head = self._err_head
                flow.response = ServerResponse(
                    head.code, end_to_end(head.headers), b"".join(cast(list[bytes], self._err_body))
                )  # set with _err_head
            elif flow.response is None:
                flow.response = ServerResponse(self.status or 502, [])
            message = _message(flow.response)
        # After the client has its answer, and never in its way.
        self.proxy.reactor.callLater(0, self.proxy.chain.run_unwind, flow, stage, adapter, message)
