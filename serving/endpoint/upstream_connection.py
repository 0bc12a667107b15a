"""One keep-alive connection to a container, an asyncio protocol that carries one exchange at
a time: the request written, the answer's head parsed (:mod:`serving.h1`: gunicorn_h1c's C
parser when installed) and its body collected (by Content-Length, chunked, or up to the
close), the outcome reported to the exchange's callback from ``buffer_updated`` itself (no
task, no future: see :meth:`.upstream.Container.start`).

A body that does not come with its head is received straight into a buffer sized by its
Content-Length (:mod:`.buffers`).
"""

from __future__ import annotations

import asyncio

from .. import h1
from .buffers import LARGE_BODY, MIN_POOLED, POOL, RECEIVE_BYTES, write_large
from .replies import ChunkedBody, Done, Outcome, Reply, TimedOut, Unreachable, settle

#: A head larger than this is a broken container.
MAX_HEAD_BYTES = 64 * 1024


class UpstreamConnection(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()  # once: each call is a getpid() on 3.11
        self.transport: asyncio.Transport | None = None
        # the answer's head (and a body that is not received on its own) so far
        self._buffer = bytearray(RECEIVE_BYTES)
        self._view = memoryview(self._buffer)
        self._end = 0
        #: Who gets the outcome of the exchange under way (``None`` between exchanges).
        self._done: Done | None = None
        self.closed = False
        self.keep_alive = True
        self._head: tuple[int, dict[str, str], int] | None = None
        self._chunks: ChunkedBody | None = None
        #: A Content-Length body that did not come with its head: its buffer, and how much
        #: of it has arrived.
        self._body: bytearray | None = None
        self._body_view: memoryview | None = None
        self._received = 0
        #: When the exchange under way times out, and the timer that checks it (see
        #: :meth:`begin`).
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.writable = asyncio.Event()
        self.writable.set()

    @property
    def answering(self) -> bool:
        """Whether any byte of an answer has come."""
        return self._end > 0 or self._head is not None or self._body_view is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=LARGE_BODY)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.writable.set()  # a write waiting for the buffer to drain sees the close
        if self._done is not None:
            if self._head is not None and self._until_close():
                self._finish(self._view[self._head[2] : self._end].tobytes())
            else:
                self._complete(Unreachable("the container closed the connection"))
        if self._timer is not None:  # no exchange follows
            self._timer.cancel()
            self._timer = None

    def begin(self, timeout: float, done: Done) -> None:
        """An exchange starts (its request is written next): ``done`` gets its outcome, once;
        :class:`TimedOut` past ``timeout``.

        Exchanges on a connection share one timer rather than each making and cancelling
        its own: the timer, set for the deadline of the exchange that made it, finds the
        exchange under way then (if any) and times it out, or waits on for its later
        deadline. It is set anew only when there is none or it is set too late."""
        self._done = done
        self._end = 0
        self._head = None
        self._chunks = None
        deadline = self._deadline = self._loop.time() + timeout
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(deadline, self._check_deadline)

    async def send(self, parts: list[bytes | memoryview], timeout: float) -> Reply:
        """Send a request and wait for its answer (a large body written as the socket takes
        it); :class:`TimedOut` past ``timeout``."""
        assert self.transport is not None
        future: asyncio.Future[Reply] = self._loop.create_future()
        self.begin(timeout, lambda outcome: settle(future, outcome))
        if self.closed:
            self._complete(Unreachable("the container closed the connection"))
        elif sum(map(len, parts)) > LARGE_BODY:
            for part in parts:
                await write_large(self.transport, self.writable, part)
        else:
            self.transport.write(b"".join(parts))
        return await future

    def _complete(self, outcome: Outcome) -> None:
        done = self._done
        if done is None:
            return
        self._done = None
        done(outcome)  # last: it may start the next exchange on this connection

    def _check_deadline(self) -> None:
        self._timer = None
        if self._done is None:  # between exchanges: the next one sets a timer
            return
        if self._loop.time() < self._deadline:  # a later exchange's
            self._timer = self._loop.call_at(self._deadline, self._check_deadline)
            return
        self.close()  # and a write waiting for the container to read ends
        self._complete(TimedOut())

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def close(self) -> None:
        """Close the connection; at once, bytes unsent dropped, if some are left (so that no
        transport keeps a view of a body: see :mod:`.buffers`)."""
        self.closed = True
        if self.transport is not None:
            if self.transport.get_write_buffer_size():
                self.transport.abort()
            else:
                self.transport.close()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._body_view is not None:  # exactly the rest of the body
            return self._body_view[self._received :]
        if self._end == len(self._buffer):  # a long head, or a chunked answer: more room
            self._buffer = bytearray(2 * len(self._buffer))
            self._buffer[: self._end] = self._view
            self._view = memoryview(self._buffer)
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._body_view is not None:
            self._received += nbytes
            if self._received == len(self._body_view):
                view, buffer = self._body_view, self._body
                self._body = self._body_view = None
                self._finish(view, buffer if len(view) >= MIN_POOLED else None)
            return
        self._end += nbytes
        if self._done is None:
            self.close()  # bytes nobody asked for: the connection cannot be trusted
            return
        try:
            self._parse()
        except Unreachable as exc:
            self.close()
            self._complete(exc)

    def _parse(self) -> None:
        if self._head is None:
            try:
                head = h1.parse_response(self._view[: self._end])
            except h1.IncompleteError:
                if self._end > MAX_HEAD_BYTES:
                    raise Unreachable("the container's answer has no end of head") from None
                return
            except h1.ParseError as exc:
                raise Unreachable(f"the container's answer is malformed: {exc}") from None
            status, consumed = head["status"], head["consumed"]
            if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
                rest = self._view[consumed : self._end].tobytes()
                self._buffer[: len(rest)] = rest
                self._end = len(rest)
                self._parse()
                return
            headers: dict[str, str] = {}
            for name, value in head["headers"]:
                key = name.decode("latin-1").lower()
                text = value.decode("latin-1")
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
            connection = headers.get("connection", "").lower()
            self.keep_alive = head["minor_version"] == 1 and "close" not in connection
            self._head = (status, headers, consumed)
        status, headers, start = self._head
        if status in (204, 304):
            self._finish(b"")
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            if self._chunks is None:
                self._chunks = ChunkedBody(start)
            body = self._chunks.feed(self._buffer, self._end)
            if body is not None:
                self._finish(body)
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise Unreachable("the container's Content-Length is not a number") from None
            available = self._end - start
            if available >= length:
                if available > length:
                    self.keep_alive = False  # bytes after the answer: nobody asked for them
                self._finish(self._view[start : start + length].tobytes())
                return
            # the rest of the body goes straight into a buffer of its own
            buffer = POOL.take(length) if length >= MIN_POOLED else bytearray(length)
            buffer[:available] = self._view[start : self._end]
            self._body, self._body_view = buffer, memoryview(buffer)[:length]
            self._received = available
        # else: the body ends when the connection closes (connection_lost)

    def _until_close(self) -> bool:
        assert self._head is not None
        headers = self._head[1]
        return "content-length" not in headers and "transfer-encoding" not in headers

    def _finish(self, body: bytes | memoryview, buffer: bytearray | None = None) -> None:
        """The answer is whole: nothing of this exchange's state is touched after this (the
        outcome's callback may start the next exchange on this connection)."""
        assert self._head is not None
        status, headers, _ = self._head
        if self._until_close():
            self.keep_alive = False
        self._complete(Reply(status, headers, body, buffer))
