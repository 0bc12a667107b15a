"""The API's HTTP/1.1 side: one asyncio protocol per client connection, the head parsed by
gunicorn_h1c's C parser, the body collected by Content-Length, one request at a time,
keep-alive as HTTP/1.1 has it.

Bytes are received into one buffer per connection (:class:`asyncio.BufferedProtocol`); a body
that came with its head is copied out of it, a longer one is received straight into a buffer
of its own, sized by its Content-Length (:mod:`.buffers`). While a request is answered, what
the client sends next waits in the buffer; reading pauses only when that passes
:data:`MAX_HEAD_BYTES` (botocore never sends a request before the last one's answer).

This is all botocore needs (it sends a Content-Length body, never chunked); a chunked body or
a malformed head is answered with a 400 and the connection closed.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus

from .. import h1
from .buffers import LARGE_BODY, MIN_POOLED, POOL, RECEIVE_BYTES, write_large
from .messages import Handler, Request, Response, encode_head

#: A head larger than this is refused (botocore's are well under 2 KiB).
MAX_HEAD_BYTES = 64 * 1024
#: A body declared larger than this is not read: the answer comes and the connection closes.
MAX_DRAIN_BYTES = 256 * 1024 * 1024


class Connections:
    """The open client connections, so that a stop can close the idle ones and wait for the
    others to finish their answer."""

    def __init__(self, handler: Handler, max_body: int) -> None:
        self.handler = handler
        self.max_body = max_body
        self.open: set[ApiConnection] = set()
        self.stopping = False
        self.all_closed = asyncio.Event()
        self.all_closed.set()

    def protocol(self) -> ApiConnection:
        return ApiConnection(self)

    def stop(self) -> None:
        """No more requests: idle connections close now, busy ones after their answer."""
        self.stopping = True
        for connection in list(self.open):
            if not connection.busy:
                connection.close()

    def added(self, connection: ApiConnection) -> None:
        self.open.add(connection)
        self.all_closed.clear()

    def removed(self, connection: ApiConnection) -> None:
        self.open.discard(connection)
        if not self.open:
            self.all_closed.set()


class ApiConnection(asyncio.BufferedProtocol):
    def __init__(self, connections: Connections) -> None:
        self.connections = connections
        self._loop = asyncio.get_running_loop()  # once: each call is a getpid() on 3.11
        self.transport: asyncio.Transport | None = None
        self.busy = False
        # received and not yet used: self._buffer[self._start:self._end]
        self._buffer = bytearray(RECEIVE_BYTES)
        self._view = memoryview(self._buffer)
        self._start = self._end = 0
        #: The parsed head of a request whose body is still arriving.
        self._pending: tuple[str, str, dict[str, str], int, bool] | None = None
        #: Where that body arrives when it did not come with its head, and how much has.
        self._body: bytearray | None = None
        self._body_view: memoryview | None = None
        self._received = 0
        self._discard = 0  # bytes of a refused body still to skip
        self._paused = False
        #: The request being answered: whether the connection stays open after it, and the
        #: pooled buffer its body is in.
        self._keep_alive = True
        self._request_buffer: bytearray | None = None
        self._in_next = False
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=LARGE_BODY)
        self.connections.added(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.writable.set()  # a write waiting for the buffer to drain sees the close
        self.connections.removed(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._body_view is not None:  # exactly the rest of the body: no byte after it
            return self._body_view[self._received :]
        if self._end == len(self._buffer):
            self._make_room()
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._body_view is not None:
            self._received += nbytes
            if self._received == len(self._body_view):
                self._body_received()
            return
        if self._discard:  # nothing else is waiting while a refused body is skipped
            skipped = min(self._discard, nbytes)
            self._discard -= skipped
            self._start = self._end + skipped
        self._end += nbytes
        if not self.busy:
            self._next()
        elif self._end - self._start > MAX_HEAD_BYTES and self.transport is not None:
            self.transport.pause_reading()
            self._paused = True

    def _make_room(self) -> None:
        waiting = self._view[self._start : self._end].tobytes()
        if len(waiting) > len(self._buffer) // 2:  # a long head: a larger buffer
            self._buffer = bytearray(2 * len(self._buffer))
            self._view = memoryview(self._buffer)
        self._buffer[: len(waiting)] = waiting
        self._start, self._end = 0, len(waiting)

    def _consume(self, count: int) -> None:
        self._start += count
        if self._start == self._end:
            self._start = self._end = 0

    def _next(self) -> None:
        """Answer the requests received, one at a time, until one is being answered or more
        bytes are needed (a loop, not a recursion: an answer may come at once)."""
        self._in_next = True
        try:
            while not self.busy and self._take_request():
                pass
        finally:
            self._in_next = False

    def _take_request(self) -> bool:
        """Dispatch the next request if it is whole; whether one was."""
        if self._pending is None and not self._read_head():
            return False
        assert self._pending is not None
        method, target, headers, length, keep_alive = self._pending
        available = self._end - self._start
        if length > self.connections.max_body:
            # not kept: answered at once, the rest skipped as it arrives
            self._pending = None
            kept = min(length, available)
            self._consume(kept)
            self._discard = length - kept
            if length > MAX_DRAIN_BYTES:
                keep_alive = False
            self._dispatch(Request(method, target, headers, b"", length), keep_alive)
            return True
        if available >= length:
            body = self._view[self._start : self._start + length].tobytes()
            self._consume(length)
            self._pending = None
            self._dispatch(Request(method, target, headers, body, length), keep_alive)
            return True
        # the rest of the body goes straight into a buffer of its own
        buffer = POOL.take(length) if length >= MIN_POOLED else bytearray(length)
        buffer[:available] = self._view[self._start : self._end]
        self._start = self._end = 0
        self._body, self._body_view, self._received = buffer, memoryview(buffer)[:length], available
        return False

    def _body_received(self) -> None:
        assert self._pending is not None
        assert self._body_view is not None
        method, target, headers, length, keep_alive = self._pending
        request = Request(method, target, headers, self._body_view, length)
        buffer = self._body if length >= MIN_POOLED else None
        self._pending = self._body = self._body_view = None
        self._dispatch(request, keep_alive, buffer)

    def _read_head(self) -> bool:
        if self._start == self._end:
            return False
        try:
            head = h1.parse_request(self._view[self._start : self._end])
        except h1.IncompleteError:
            if self._end - self._start > MAX_HEAD_BYTES:
                self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large")
            return False
        except h1.ParseError as exc:
            self._refuse(HTTPStatus.BAD_REQUEST, f"malformed request: {exc}")
            return False
        self._consume(head["consumed"])
        headers: dict[str, str] = {}
        for name, value in head["headers"]:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]},{text}" if key in headers else text
        if "transfer-encoding" in headers:
            self._refuse(HTTPStatus.BAD_REQUEST, "chunked request bodies are not supported")
            return False
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            length = -1
        if length < 0:
            self._refuse(HTTPStatus.BAD_REQUEST, "invalid Content-Length")
            return False
        connection = headers.get("connection", "").lower()
        keep_alive = (
            "close" not in connection if head["minor_version"] == 1 else "keep-alive" in connection
        )
        method = head["method"].decode("latin-1")
        target = head["path"].decode("latin-1")
        self._pending = (method, target, headers, length, keep_alive)
        if (
            "expect" in headers
            and headers["expect"].lower() == "100-continue"
            and self._end - self._start < length <= self.connections.max_body
            and self.transport is not None
        ):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _refuse(self, status: HTTPStatus, message: str) -> None:
        """Answer a request that cannot be read as the service would (a ValidationError:
        botocore raises its class), and close the connection."""
        headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", "ValidationError")]
        body = json.dumps({"message": message}).encode()
        self._start = self._end = 0
        if self.transport is not None:
            self.transport.write(encode_head(Response(status, headers, body), False) + body)
            self.transport.close()

    def _dispatch(
        self, request: Request, keep_alive: bool, buffer: bytearray | None = None
    ) -> None:
        self.busy = True
        self._keep_alive = keep_alive
        self._request_buffer = buffer
        self.connections.handler(request, self._respond)

    def _respond(self, response: Response) -> None:
        if self._request_buffer is not None:  # the request's body: the handler is done with it
            POOL.give(self._request_buffer)
            self._request_buffer = None
        keep_alive = self._keep_alive and not self.connections.stopping
        transport = self.transport
        if transport is None:  # the client went away
            if response.buffer is not None:
                POOL.give(response.buffer)
            self.busy = False
            return
        head = encode_head(response, keep_alive)
        if len(response.body) > LARGE_BODY:
            transport.write(head)
            self._loop.create_task(self._write_large(transport, response, keep_alive))
        else:
            transport.write(head + response.body)
            self._sent(transport, response, keep_alive)

    async def _write_large(
        self, transport: asyncio.Transport, response: Response, keep_alive: bool
    ) -> None:
        await write_large(transport, self.writable, response.body)
        self._sent(transport, response, keep_alive)

    def _sent(self, transport: asyncio.Transport, response: Response, keep_alive: bool) -> None:
        if not keep_alive:
            transport.close()
        if response.buffer is not None and not transport.get_write_buffer_size():
            POOL.give(response.buffer)
        self.busy = False
        if keep_alive and self.transport is not None:
            if self._paused:
                self._paused = False
                self.transport.resume_reading()
            if not self._in_next:  # else the loop there goes on
                self._next()
        elif self.connections.stopping:
            self.close()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()
