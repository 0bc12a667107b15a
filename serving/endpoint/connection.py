"""The API's HTTP/1.1 side: one asyncio protocol per client connection, the head parsed by
gunicorn_h1c's C parser, the body collected by Content-Length, one request at a time (reading
pauses while one is answered), keep-alive as HTTP/1.1 has it.

This is all botocore needs (it sends a Content-Length body, never chunked); a chunked body or
a malformed head is answered with a 400 and the connection closed.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from http import HTTPStatus

from .. import h1

log = logging.getLogger("serving.endpoint")

#: A head larger than this is refused (botocore's are well under 2 KiB).
MAX_HEAD_BYTES = 64 * 1024
#: A body declared larger than this is not read: the answer comes and the connection closes.
MAX_DRAIN_BYTES = 256 * 1024 * 1024


@dataclass
class Request:
    method: str
    #: The request line's target as sent: path and query, percent-escapes kept.
    target: str
    #: By lower-case name; repeated headers joined with ``,`` (as SigV4 signs them).
    headers: dict[str, str]
    body: bytes
    #: The declared body length; ``body`` is empty when it is over the limit (not kept).
    body_length: int


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


Handler = Callable[[Request], Coroutine[None, None, Response]]

_REASONS = {status.value: status.phrase for status in HTTPStatus}
_date = ["", 0]


def _http_date() -> str:
    now = int(time.time())
    if now != _date[1]:
        _date[:] = [email.utils.formatdate(now, usegmt=True), now]
    return str(_date[0])


def encode(response: Response, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in response.headers]
    lines.append(f"Date: {_http_date()}")
    lines.append(f"Content-Length: {len(response.body)}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


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


class ApiConnection(asyncio.Protocol):
    def __init__(self, connections: Connections) -> None:
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        #: The parsed head of a request whose body is still arriving.
        self._pending: tuple[str, str, dict[str, str], int, bool] | None = None
        self._discard = 0  # bytes of a refused body still to skip
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

    def data_received(self, data: bytes) -> None:
        if self._discard:
            skipped = min(self._discard, len(data))
            self._discard -= skipped
            data = data[skipped:]
        self.buffer += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        if self._pending is None and not self._read_head():
            return
        assert self._pending is not None
        method, target, headers, length, keep_alive = self._pending
        if length > self.connections.max_body:
            # not kept: answered at once, the rest skipped as it arrives
            self._pending = None
            kept = min(length, len(self.buffer))
            del self.buffer[:kept]
            self._discard = length - kept
            if length > MAX_DRAIN_BYTES:
                keep_alive = False
            self._dispatch(Request(method, target, headers, b"", length), keep_alive)
            return
        if len(self.buffer) < length:
            return
        with memoryview(self.buffer) as view:
            body = bytes(view[:length])
        del self.buffer[:length]
        self._pending = None
        self._dispatch(Request(method, target, headers, body, length), keep_alive)

    def _read_head(self) -> bool:
        if not self.buffer:
            return False
        try:
            head = h1.parse_request(self.buffer)
        except h1.IncompleteError:
            if len(self.buffer) > MAX_HEAD_BYTES:
                self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large")
            return False
        except h1.ParseError as exc:
            self._refuse(HTTPStatus.BAD_REQUEST, f"malformed request: {exc}")
            return False
        del self.buffer[: head["consumed"]]
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
            headers.get("expect", "").lower() == "100-continue"
            and len(self.buffer) < length <= self.connections.max_body
            and self.transport is not None
        ):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _refuse(self, status: HTTPStatus, message: str) -> None:
        """Answer a request that cannot be read as the service would (a ValidationError:
        botocore raises its class), and close the connection."""
        headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", "ValidationError")]
        body = json.dumps({"message": message}).encode()
        self._send(Response(status, headers, body), False)

    def _dispatch(self, request: Request, keep_alive: bool) -> None:
        self.busy = True
        if self.transport is not None:
            self.transport.pause_reading()
        asyncio.get_running_loop().create_task(self._answer(request, keep_alive))

    async def _answer(self, request: Request, keep_alive: bool) -> None:
        try:
            response = await self.connections.handler(request)
        except Exception:
            log.exception("unexpected error answering a request")
            response = Response(500, [("Content-Type", "application/json")], b'{"message": ""}')
        keep_alive = keep_alive and not self.connections.stopping
        if len(response.body) > LARGE_BODY and self.transport is not None:
            await write_large(self.transport, self.writable, encode(response, keep_alive))
            if not keep_alive:
                self.close()
        else:
            self._send(response, keep_alive)
        self.busy = False
        if keep_alive and self.transport is not None:
            self.transport.resume_reading()
            self._next()
        elif self.connections.stopping:
            self.close()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def _send(self, response: Response, keep_alive: bool) -> None:
        if self.transport is None:
            return
        self.transport.write(encode(response, keep_alive))
        if not keep_alive:
            self.transport.close()
            self.buffer.clear()


#: Bodies larger than this are written in pieces of this size as the socket takes them.
LARGE_BODY = 256 * 1024


async def write_large(transport: asyncio.Transport, writable: asyncio.Event, data: bytes) -> None:
    """Write ``data`` a piece at a time, each once the transport's buffer has drained.

    Python 3.11's socket transport keeps what the socket did not take in a bytearray that it
    deletes from the front after every send: 4 MiB written at once cost ~10 ms of CPU in
    those moves; piece by piece, the buffer stays small."""
    view = memoryview(data)
    for start in range(0, len(view), LARGE_BODY):
        await writable.wait()
        if transport.is_closing():  # the peer went away
            return
        transport.write(view[start : start + LARGE_BODY])
