"""HTTP/1.1 to one container: keep-alive connections kept in a pool, each an asyncio protocol
that parses the answer's head (:mod:`serving.h1`: gunicorn_h1c's C parser when installed) and
collects its body (by Content-Length, chunked, or up to the close).

A connection taken from the pool may have been closed by the container meanwhile (its
keep-alive timeout, a restart); a request that fails on such a connection before any byte of
an answer arrived is sent once more on a new one, which is what HTTP clients do for a stale
keep-alive connection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .. import h1
from .connection import LARGE_BODY, write_large

#: Idle connections kept per container.
MAX_IDLE = 64
#: Seconds to wait for a container to accept a connection.
CONNECT_TIMEOUT = 5.0
#: A head larger than this is a broken container.
MAX_HEAD_BYTES = 64 * 1024


class Unreachable(Exception):
    """No answer could be had: refused, reset, closed, or a malformed answer."""


class TimedOut(Exception):
    """The container did not answer within the timeout."""


@dataclass(frozen=True)
class Reply:
    status: int
    #: Header names in lower case, values as sent (Latin-1).
    headers: dict[str, str]
    body: bytes


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Reply] | None = None
        self.closed = False
        self.keep_alive = True
        self._head: tuple[int, dict[str, str], int] | None = None
        self._chunks: _Chunks | None = None
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=LARGE_BODY)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.writable.set()  # a write waiting for the buffer to drain sees the close
        if self.waiter is not None and not self.waiter.done():
            if self._head is not None and self._until_close():
                with memoryview(self.buffer) as view:
                    self._finish(bytes(view[self._head[2] :]))
            else:
                self.waiter.set_exception(Unreachable("the container closed the connection"))

    async def send(self, parts: list[bytes]) -> Reply:
        assert self.transport is not None
        self.waiter = waiter = asyncio.get_running_loop().create_future()
        self.buffer.clear()
        self._head = None
        self._chunks = None
        if self.closed:
            raise Unreachable("the container closed the connection")
        if sum(len(part) for part in parts) > LARGE_BODY:
            for part in parts:
                await write_large(self.transport, self.writable, part)
        else:
            self.transport.write(b"".join(parts))
        reply: Reply = await waiter
        return reply

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            self.close()  # bytes nobody asked for: the connection cannot be trusted
            return
        try:
            self._parse()
        except Unreachable as exc:
            self.waiter.set_exception(exc)
            self.close()

    def _parse(self) -> None:
        if self._head is None:
            try:
                head = h1.parse_response(bytes(self.buffer))
            except h1.IncompleteError:
                if len(self.buffer) > MAX_HEAD_BYTES:
                    raise Unreachable("the container's answer has no end of head") from None
                return
            except h1.ParseError as exc:
                raise Unreachable(f"the container's answer is malformed: {exc}") from None
            status, consumed = head["status"], head["consumed"]
            if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
                del self.buffer[:consumed]
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
                self._chunks = _Chunks(start)
            body = self._chunks.feed(self.buffer)
            if body is not None:
                self._finish(body)
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise Unreachable("the container's Content-Length is not a number") from None
            if len(self.buffer) - start >= length:
                with memoryview(self.buffer) as view:
                    self._finish(bytes(view[start : start + length]))
        # else: the body ends when the connection closes (connection_lost)

    def _until_close(self) -> bool:
        assert self._head is not None
        headers = self._head[1]
        return "content-length" not in headers and "transfer-encoding" not in headers

    def _finish(self, body: bytes) -> None:
        assert self._head is not None
        assert self.waiter is not None
        status, headers, _ = self._head
        if self._until_close():
            self.keep_alive = False
        self.waiter.set_result(Reply(status, headers, body))


class _Chunks:
    """A chunked body, decoded as it arrives: each call goes on from where the last stopped."""

    def __init__(self, start: int) -> None:
        self.position = start
        self.parts: list[bytes] = []

    def feed(self, buffer: bytearray) -> bytes | None:
        """The whole body once its last chunk and trailers are in ``buffer``, else ``None``."""
        while True:
            end = buffer.find(b"\r\n", self.position)
            if end < 0:
                return None
            size_text = bytes(buffer[self.position : end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise Unreachable("the container's chunked answer is malformed") from None
            if size == 0:
                if buffer.find(b"\r\n\r\n", end) < 0:
                    return None
                return b"".join(self.parts)
            if len(buffer) < end + 2 + size + 2:
                return None
            self.parts.append(bytes(buffer[end + 2 : end + 2 + size]))
            self.position = end + 2 + size + 2


class Container:
    """One container's address, and its idle keep-alive connections."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._idle: list[_Connection] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, connection = await loop.create_connection(_Connection, self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise Unreachable(f"cannot connect to {self.url}: {exc}") from None
        return connection

    async def request(self, parts: list[bytes], timeout: float) -> Reply:
        """Send a request (its head and body as ``parts``) and wait for the answer."""
        connection = None
        while self._idle:
            candidate = self._idle.pop()
            if not candidate.closed:
                connection = candidate
                break
        if connection is not None:
            try:
                return await self._exchange(connection, parts, timeout)
            except Unreachable:
                if connection.buffer:  # part of an answer came: not a stale connection
                    raise
        return await self._exchange(await self._connect(), parts, timeout)

    async def _exchange(self, connection: _Connection, parts: list[bytes], timeout: float) -> Reply:
        try:
            async with asyncio.timeout(timeout):
                reply = await connection.send(parts)
        except TimeoutError:
            connection.close()
            raise TimedOut from None
        except BaseException:
            connection.close()
            raise
        if connection.keep_alive and not connection.closed and len(self._idle) < MAX_IDLE:
            connection.waiter = None
            self._idle.append(connection)
        else:
            connection.close()
        return reply

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
