"""One client request's way through Powerstrip.

An :class:`Exchange` owns one :class:`~powerstrip.flow.Flow` and moves it one
way: client request → matched route → pre-hooks → dockerd → post-hooks →
client. It is the :class:`~powerstrip.upstream.ResponseListener` of its
dockerd connection, so response heads are relayed the moment they arrive
and bodies stream through unless a post-hook needs them whole.
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IPullProducer, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from powerstrip.adapters import AdapterFault, Refused
from powerstrip.authz import must_buffer
from powerstrip.caller import caller_of
from powerstrip.flow import REQUEST_ID_HEADER, ClientRequest, Flow, ServerResponse, error_response
from powerstrip.hooks import ShortCircuit
from powerstrip.http11 import (
    ResponseHead,
    end_to_end,
    header_value,
    is_json,
    is_origin_form,
    is_upgrade,
    media_type,
)
from powerstrip.matching import match
from powerstrip.splice import Splice
from powerstrip.tls import describe
from powerstrip.upstream import UpstreamConnection, request_head

if TYPE_CHECKING:
    from powerstrip.resource import PowerstripResource
    from powerstrip.web import StreamingRequest

log = Logger()

_FRAMING = (b"content-length", b"transfer-encoding")
#: How much of a streamed Docker error is kept for unwind calls.
_ERROR_KEPT = 64 * 1024
#: The ``Failure.Message`` of an unwind call for a client that left before its request was sent.
CLIENT_GONE = "the client went away before the request was sent to Docker"


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


@implementer(IPushProducer)
class _ReadThrottle:
    """Lets dockerd's connection pause reading from the client (body upload)."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel

    def pauseProducing(self) -> None:
        self.channel.pause_reading()

    def resumeProducing(self) -> None:
        self.channel.resume_reading()

    def stopProducing(self) -> None:
        pass


#: Docker calls whose responses are streams or long polls. Post-hooks would
#: have to hold them until they end: ``docker run`` sends ``start`` only after
#: the ``wait`` response head arrived, so holding ``wait`` deadlocks it, and
#: ``events``/``logs -f`` never end. They stream through unhooked.
_STREAMING = re.compile(
    r"^(/v[0-9.]+)?/(events|build|session|grpc|images/create|images/load|images/.+/push"
    r"|containers/[^/]+/(wait|attach|logs|stats)|exec/[^/]+/start)$"
)


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


def _when_flushed(transport: Any, then: Any, lost: Any) -> None:
    """Run ``then`` when ``transport`` has flushed its write buffer (``lost`` if it closes first)."""
    if transport.producer is not None:
        transport.unregisterProducer()
    watcher = _FlushWatcher(transport, then, lost)
    transport.registerProducer(watcher, False)
    watcher.registering = False


def streams_unhooked(path: str) -> bool:
    """Whether ``path`` is one of Docker's streaming calls, whose responses post-hooks never see."""
    return _STREAMING.match(path) is not None


def _post_hookable(head: ResponseHead, method: str, path: str) -> bool:
    """Whether post-hooks may see this response: whole JSON, text or empty bodies."""
    if streams_unhooked(path):
        return False
    if method == "HEAD" or head.code in (204, 304) or head.header(b"content-length") == b"0":
        return True
    ctype = head.header(b"content-type")
    return is_json(ctype) or media_type(ctype).startswith("text/")


class Exchange:
    """Carries one request from the client to dockerd and the answer back."""

    def __init__(self, request: StreamingRequest, resource: PowerstripResource) -> None:
        self.request = request
        self.resource = resource
        self.channel = request.channel
        config = resource.config  # a snapshot: a reload does not change this request
        method = request.method.decode("latin-1").upper()
        uri = request.uri.decode("latin-1")
        headers = [(k, v) for k, vs in request.requestHeaders.getAllRawHeaders() for v in vs]
        self.flow = Flow(ClientRequest(method, uri, headers), match(config, method, uri),
                         caller=caller_of(self.channel))
        te = (header_value(headers, b"transfer-encoding") or b"").lower()
        self.chunked_in = b"chunked" in te
        cl = header_value(headers, b"content-length")
        self.length_in = int(cl) if cl is not None and cl.isdigit() else None
        self.has_body = self.chunked_in or bool(self.length_in)
        self.upgrade = is_upgrade(headers)
        self.conn: UpstreamConnection | None = None
        self.status: int | None = None
        self.bytes_out = 0
        #: Request body bytes passed on (to dockerd, or whole to the pre-hooks).
        self.bytes_in = 0
        #: The hijacked stream, once there is one (its bytes count too).
        self.splice: Splice | None = None
        self._counted = False
        self.head_sent = False
        self.done = False
        #: Where the request is: pre-hook, docker, post-hook (for unwind calls).
        self._stage = "pre-hook"
        #: (stage, adapter or None) of a failure unwind calls must hear of.
        self._failure: tuple[str, str | None] | None = None
        #: Whether the request has been sent to dockerd (a client leaving before that unwinds).
        self._sent = False
        self.docker_status: int | None = None
        self._err_head: ResponseHead | None = None
        self._err_body: list[bytes] | None = None
        self._pending: defer.Deferred | None = None
        self._stream_buf: list[bytes] | None = None
        self._resp_head: ResponseHead | None = None
        self._resp_buf: list[bytes] | None = None
        self._resp_size = 0
        self._attempts = 0
        resource.inflight.add(request)
        request.notifyFinish().addBoth(self._request_ended)
        request.on_error = self.crash
        request.on_client_eof = self._client_eof

    # -- stage 1: the request body -------------------------------------------

    def start(self) -> None:
        """Begin: gather what the pre-hooks need, then run them."""
        req, route, request = self.flow.request, self.flow.route, self.request
        if not is_origin_form(req.uri):
            # Docker's API only has paths; anything else is not forwarded.
            self.channel.persistent = False
            self._respond(error_response(400, f"powerstrip: bad request target {req.uri[:80]!r}"))
            return
        if self.has_body and (route.pre and is_json(header_value(req.headers, b"content-type"))
                              or must_buffer(route.pre + route.post, req.method, req.path)):
            self._buffer_body()
            return
        if self.has_body:
            # Streamed bodies are never held: reading pauses until dockerd is
            # connected, and a slow dockerd then paces the client.
            req.streamed = True
            self._stream_buf = request.take_early()
            request.body_sink = self._stream_buf.append
            request.body_end = self._body_end
            if not request.body_complete:
                self.channel.pause_reading()
        self._run_pre()

    def _buffer_body(self) -> None:
        limit = self.resource.limits.max_json_body
        chunks = self.request.take_early()
        size = sum(map(len, chunks))

        def sink(data: bytes) -> None:
            nonlocal size
            size += len(data)
            if size > limit:
                # Answer once the body has been read (and dropped): answering from
                # inside the parser's body callback would end the request under it.
                chunks.clear()
                self.request.body_sink = lambda data: None
                self.request.body_end = lambda: self._respond(error_response(
                    413, f"powerstrip: JSON request body larger than {limit} bytes cannot be "
                         "handed to adapters (see --max-json-body)"))
            else:
                chunks.append(data)

        def end() -> None:
            self.flow.request.body = b"".join(chunks)
            self.bytes_in = size
            self._run_pre()

        self.request.body_sink = sink
        self.request.body_end = end
        if self.request.body_complete:
            end()

    # -- stage 2: pre-hooks ------------------------------------------------------

    def _run_pre(self) -> None:
        if self.flow.route.pre:
            self._pending = self.resource.chain.run_pre(self.flow)
            self._pending.addCallbacks(lambda _: self._connect(), self._hook_failed)
        else:
            self._connect()

    def _hook_failed(self, failure: Failure) -> None:
        if failure.check(defer.CancelledError) or self.done:
            return
        if failure.check(Refused, ShortCircuit):
            if failure.check(Refused) or failure.value.response.code >= 400:
                self._failure = (self._stage, failure.value.adapter.name)
            self._respond(failure.value.response)
        elif failure.check(AdapterFault):
            self._failure = (self._stage, failure.value.adapter.name)
            log.warn("{flow}: {error}", flow=self._name(), error=str(failure.value), request_id=self.flow.id)
            self._respond(failure.value.response())
        else:
            self.crash(failure)

    # -- stage 3: dockerd ----------------------------------------------------------

    def _connect(self) -> None:
        if self.done:
            return
        self._stage = "docker"
        self._attempts += 1
        self._pending = self.resource.upstream.acquire()
        self._pending.addCallbacks(self._send, self._connect_failed)

    def _connect_failed(self, failure: Failure) -> None:
        if failure.check(defer.CancelledError) or self.done:
            return
        self._failure = ("docker", None)
        self._respond(error_response(
            502, f"powerstrip: cannot reach Docker at {self.resource.upstream.address}: "
                 f"{describe(failure)}"))

    def _send(self, conn: UpstreamConnection) -> None:
        self._pending = None
        if self.done:
            conn.transport.loseConnection()
            return
        self.conn = conn
        req = self.flow.request
        headers = [(k, v) for k, v in end_to_end(req.headers, keep_upgrade=self.upgrade)
                   if k.lower() not in _FRAMING]
        if header_value(headers, b"host") is None:
            headers.insert(0, (b"Host", b"docker"))
        if req.streamed:
            if self.chunked_in:
                headers.append((b"Transfer-Encoding", b"chunked"))
            else:
                headers.append((b"Content-Length", b"%d" % self.length_in))
        elif req.body or self.length_in is not None or self.chunked_in:
            headers.append((b"Content-Length", b"%d" % len(req.body or b"")))
        conn.start(self, request_head(req.method, req.uri, headers), head_only=req.method == "HEAD")
        self._sent = True
        if not req.streamed:
            if req.body:
                conn.transport.write(req.body)
            conn.request_finished()
            if self.channel.read_eof:
                self._client_eof()
            return
        for piece in self._stream_buf:
            self._write_body(piece)
        self._stream_buf = None
        if self.request.body_complete:
            self._body_end()
            return
        self.request.body_sink = self._write_body
        conn.transport.registerProducer(_ReadThrottle(self.channel), True)
        self.channel.resume_reading()

    def _client_eof(self) -> None:
        # Not for a connection that may still become a stream (an upgrade, or
        # stream bytes already sent): the splice passes the EOF on after them.
        if self.upgrade or self.channel.has_buffered_input():
            return
        if self.conn is not None and not self.done and self._stream_buf is None:
            self.conn.end_after_response()

    def _write_body(self, data: bytes) -> None:
        if self.conn is None:
            return  # dockerd is gone; the client is being answered already
        self.bytes_in += len(data)
        if self.chunked_in:
            self.conn.transport.writeSequence([b"%x\r\n" % len(data), data, b"\r\n"])
        else:
            self.conn.transport.write(data)

    def _body_end(self) -> None:
        conn = self.conn
        if conn is None or self._stream_buf is not None:
            return  # still waiting for dockerd; _send finishes the body
        if self.chunked_in:
            conn.transport.write(b"0\r\n\r\n")
        if conn.transport.producer is not None:
            conn.transport.unregisterProducer()
        conn.request_finished()

    # -- stage 4: the response (ResponseListener) ------------------------------

    def head_received(self, head: ResponseHead) -> None:
        self.status = self.docker_status = head.code
        if self.flow.route.post:
            if _post_hookable(head, self.flow.request.method, self.flow.request.path):
                self._resp_head, self._resp_buf = head, []
                return
            log.info("{flow}: post-hooks skipped: {ctype} response streams unseen",
                     flow=self._name(), ctype=(head.header(b"content-type") or b"streaming").decode("latin-1"),
                     request_id=self.flow.id)
        if head.code >= 400 and self.flow.prepared:
            # Unwind calls will want Docker's error, which streams past otherwise.
            self._err_head, self._err_body = head, []
        request = self.request
        request.setResponseCode(head.code, head.reason or None)
        for k, v in end_to_end(head.headers):
            request.responseHeaders.addRawHeader(k, v)
        self._stamp()
        # Relay the head now: `docker run` sends `start` only once the `wait`
        # response head has arrived, and its body comes much later.
        request.write(b"")
        self.head_sent = True
        request.registerProducer(self.conn.transport, True)

    def body_data(self, data: bytes) -> None:
        if self._resp_buf is None:
            self.bytes_out += len(data)
            self.request.write(data)
            if self._err_body is not None and self.bytes_out <= _ERROR_KEPT:
                self._err_body.append(data)
            return
        self._resp_size += len(data)
        limit = self.resource.limits.max_response_body
        if self._resp_size > limit:
            self._resp_buf = None
            self._abort_upstream()
            self._respond(error_response(
                502, f"powerstrip: Docker's response is larger than {limit} bytes, the most "
                     "post-hooks can be given (see --max-response-body)"))
            return
        self._resp_buf.append(data)

    def body_done(self) -> None:
        conn, self.conn = self.conn, None  # the connection may go back to the pool now
        if self._resp_buf is None:
            self.request.unregisterProducer()
            conn.transport.resumeProducing()  # a slow client may have paused it
            self._finish()
            return
        head, body = self._resp_head, b"".join(self._resp_buf)
        self._resp_buf = None
        self.flow.response = ServerResponse(head.code, end_to_end(head.headers), body)
        self._stage = "post-hook"
        self._pending = self.resource.chain.run_post(self.flow)
        self._pending.addCallbacks(lambda flow: self._respond(flow.response), self._hook_failed)

    def hijacked(self, conn: UpstreamConnection, head: ResponseHead, leftover: bytes) -> None:
        self.status = self.docker_status = head.code
        self.done = self.head_sent = True
        if self.flow.route.post:
            log.info("{flow}: post-hooks skipped: connection hijacked ({code})",
                     flow=self._name(), code=head.code, request_id=self.flow.id)
        # The 101 head goes out verbatim and on its own: docker-py reads it with
        # a buffered reader and can lose stream bytes that share its segment.
        # So dockerd is not read again until the head has left.
        conn.transport.pauseProducing()
        self.channel.transport.write(head.raw)
        _when_flushed(self.channel.transport, lambda: self._splice(conn, leftover),
                      lambda: self._lost_before_splice(conn))

    def _lost_before_splice(self, conn: UpstreamConnection) -> None:
        # The client left before the 101 head was out: no stream will start,
        # so the paused dockerd connection must not be left open.
        self.resource.inflight.discard(self.request)
        conn.transport.loseConnection()
        self._log_line()

    def _splice(self, conn: UpstreamConnection, leftover: bytes) -> None:
        client = self.channel.transport
        # A stream never finishes as a request: from here on it is drained as a stream.
        self.resource.inflight.discard(self.request)
        if not conn.connected:
            client.loseConnection()  # dockerd went away before the stream began
            self._log_line()
            return
        splice = Splice(client, conn.transport, on_close=self._splice_closed)
        self.resource.streams.add(splice)
        self.splice = splice
        self.resource.metrics.streams.inc()
        conn.raw_sink = splice
        if leftover:
            splice.upstream_data(leftover)
        conn.transport.resumeProducing()
        self.channel.hijack(splice)

    def failed(self, reason: Failure) -> None:
        conn, self.conn = self.conn, None
        if self.done:
            return
        replayable = not self.flow.request.streamed
        if conn is not None and conn.reused and not conn.got_bytes and replayable and self._attempts < 8:
            # An idle keep-alive connection dockerd had already closed: retry
            # once more on another (nothing was answered, the body is in hand).
            self._connect()
            return
        self._failure = ("docker", None)
        if self.head_sent:
            log.warn("{flow}: Docker connection lost mid-response: {why}",
                     flow=self._name(), why=describe(reason), request_id=self.flow.id)
            self.done = True
            self.channel.transport.loseConnection()
            self._log_line()
            return
        self._respond(error_response(
            502, f"powerstrip: lost the connection to Docker at {self.resource.upstream.address}: "
                 f"{describe(reason)}"))

    # -- the end ----------------------------------------------------------------

    def _respond(self, resp: ServerResponse) -> None:
        """Answer the client with a complete response (error, adapter or hooked)."""
        if self.done:
            return
        if self.head_sent:
            # Too late for a clean error: cutting the stream short is the signal.
            self.done = True
            self.channel.transport.loseConnection()
            self._log_line()
            return
        self.status = resp.code
        self.flow.response = resp  # what the client got, for unwind calls
        request = self.request
        request.setResponseCode(resp.code)
        for k, v in resp.headers:
            if k.lower() not in _FRAMING:
                request.responseHeaders.addRawHeader(k, v)
        self._stamp()
        length = b"%d" % len(resp.body)
        if self.flow.request.method == "HEAD" and not resp.body:
            # A HEAD answer describes the body a GET would get: keep dockerd's length.
            length = header_value(resp.headers, b"content-length") or length
        request.responseHeaders.setRawHeaders(b"Content-Length", [length])
        request.write(resp.body)
        self.bytes_out = len(resp.body)
        self._finish()

    def _stamp(self) -> None:
        """The headers Powerstrip adds to every answer it sends (not to a 101, relayed verbatim)."""
        self.request.responseHeaders.setRawHeaders(REQUEST_ID_HEADER, [self.flow.id.encode()])
        self._say_if_closing()

    def _say_if_closing(self) -> None:
        """Add ``Connection: close`` to a response after which the connection ends.

        An answer that comes before the request body was all read (refused,
        failed, or dockerd answering early) ends the connection once the rest
        is read (see :meth:`_finish`); a keep-alive client not told so sends its
        next request into a closing connection.
        """
        if not self.request.body_complete:
            self.channel.persistent = False
        if not self.channel.persistent:
            self.request.responseHeaders.setRawHeaders(b"Connection", [b"close"])

    def crash(self, failure: Failure) -> None:
        """A bug surfaced while handling this request: log it, answer 500, keep serving."""
        log.failure("{flow}: internal error", failure, flow=self._name(), request_id=self.flow.id)
        self._abort_upstream()
        self._respond(error_response(500, f"powerstrip: internal error: {failure.getErrorMessage()}"))

    def _abort_upstream(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None and conn.transport is not None:
            conn.listener = None
            conn.transport.abortConnection()

    def _finish(self) -> None:
        self.done = True
        self._log_line()
        if self.request._disconnected:
            return
        if not self.request.body_complete:
            # Answered before the body was all read (refused, failed): the
            # answer is out, the rest of the body is read and dropped, and the
            # request ends with it -- ending it under the parser would break
            # the parser. The connection cannot carry another request.
            self.channel.persistent = False
            self.request.body_sink = lambda data: None
            self.request.body_end = self.request.finish
            self.channel.resume_reading()
            return
        if self.channel.read_eof:
            self.channel.persistent = False
        self.request.finish()

    def _request_ended(self, result: Failure | None) -> None:
        self.resource.inflight.discard(self.request)
        if isinstance(result, Failure):
            self._client_gone(result)

    def _client_gone(self, failure: Failure) -> None:
        if self.done:
            # Counted already, unless a hijack's client left before its stream began.
            self._count()
            return
        self.done = True
        if self._pending is not None:
            self._pending.cancel()
        self._abort_upstream()
        self._count()  # after the cancel, which records the interrupted hook call
        log.info("{flow}: client went away", flow=self._name(), request_id=self.flow.id)
        if not self._sent:
            # dockerd never got the request: what pre-hooks set up for it is for nothing.
            # (Once it was sent, dockerd may have carried it out: nothing is unwound.)
            self._failure = ("client", None)
            self._unwind()

    def _splice_closed(self, splice: Splice) -> None:
        self.resource.streams.discard(splice)
        self._log_line(f" stream in={splice.bytes_in}B out={splice.bytes_out}B",
                       stream_bytes_in=splice.bytes_in, stream_bytes_out=splice.bytes_out)

    def _name(self) -> str:
        return f"#{self.flow.id} {self.flow.request.method} {self.flow.request.uri}"

    def _count(self) -> None:
        """Record this request in the metrics, once, however it ended."""
        if not self._counted:
            self._counted = True
            self.resource.metrics.request_done(self)

    def _unwind(self) -> None:
        """After a failed request, let ``unwind: true`` adapters release what their pre-hooks set up."""
        prepared, self.flow.prepared = self.flow.prepared, []
        failure = self._failure
        if failure is None and self.docker_status is not None and self.docker_status >= 400:
            failure = ("docker", None)
        if not prepared or failure is None:
            return
        flow = self.flow
        flow.prepared = prepared
        stage, adapter = failure
        if stage == "client":
            flow.response, message = None, CLIENT_GONE  # it got no answer
        else:
            if self._err_head is not None:
                head = self._err_head
                flow.response = ServerResponse(head.code, end_to_end(head.headers), b"".join(self._err_body))
            elif flow.response is None:
                flow.response = ServerResponse(self.status or 502, [])
            message = _message(flow.response)
        # After the client has its answer, and never in its way.
        self.resource.reactor().callLater(0, self.resource.chain.run_unwind, flow, stage, adapter, message)

    def _log_line(self, extra: str = "", **fields: Any) -> None:
        self._count()  # metrics count with the access log off too
        self._unwind()
        if not self.resource.access_log:
            return
        ms = (time.monotonic() - self.flow.started) * 1000
        hooks = "".join(f" {h.phase}:{h.adapter}={h.seconds * 1000:.1f}ms({h.outcome})"
                        for h in self.flow.hooks)
        # The text line says it all; the fields are for --log-format json.
        req = self.flow.request
        log.info("{line}", line=f"{self._name()} -> {self.status} {self.bytes_out}B {ms:.1f}ms{hooks}{extra}",
                 request_id=self.flow.id, method=req.method, path=req.uri, status=self.status,
                 bytes=self.bytes_out, duration_ms=round(ms, 1),
                 hooks=[{"adapter": h.adapter, "phase": h.phase, "ms": round(h.seconds * 1000, 1),
                         "outcome": h.outcome} for h in self.flow.hooks], **fields)
