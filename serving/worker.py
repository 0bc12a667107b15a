"""gunicorn's gevent worker, serving plain requests with its own HTTP/1.1 loop
(:mod:`serving.http1`), made to stop promptly and to answer unparsable requests in JSON.

On SIGTERM the stock worker stops accepting and waits for every open connection, and an idle
keep-alive connection (which SageMaker's front end keeps open) only ends when its keep-alive
timeout does, so every stop took the whole graceful timeout. This worker closes idle
connections as soon as the stop begins: connections waiting for the first byte of their next
request. Requests in flight, or whose bytes have begun to arrive, finish, and their
connections close right after the response.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import socket
import sys
import termios
from typing import Any

import gevent
from gunicorn import util as gunicorn_util
from gunicorn.workers.ggevent import GeventWorker

from .http1 import HandOver, Http11Loop
from .logs import ACCESS_FLUSH_SECONDS, access_lines

STOP_POLL_SECONDS = 0.1


class _TrackedSocket:
    """A client socket that notes when bytes of a request have been read from it, and gives
    back first the bytes :meth:`unread` put back."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.reading_request = False
        self.closing = False
        self._unread = b""

    def unread(self, data: bytes) -> None:
        """Have the next reads return ``data`` before anything more from the socket."""
        self._unread = data + self._unread
        self.reading_request = self.reading_request or bool(data)

    def recv(self, size: int, *args: Any) -> bytes:
        if self._unread:
            data, self._unread = self._unread[:size], self._unread[size:]
            return data
        try:
            data = self._sock.recv(size, *args)
        except OSError:
            if self.closing:  # gevent cancels the wait with EBADF: the end, not an error
                return b""
            raise
        self.reading_request = self.reading_request or bool(data)
        return data

    def recv_into(self, buffer: Any, size: int = 0, *args: Any) -> int:
        if self._unread:
            size = min(size or len(buffer), len(self._unread))
            buffer[:size], self._unread = self._unread[:size], self._unread[size:]
            return size
        try:
            count: int = self._sock.recv_into(buffer, size, *args)
        except OSError:
            if self.closing:
                return 0
            raise
        self.reading_request = self.reading_request or count > 0
        return count

    def close_idle(self) -> None:
        """End the wait for a next request: its read returns nothing, as at a peer's close."""
        self.closing = True
        with contextlib.suppress(OSError):  # OSError: the peer closed it already
            self._sock.shutdown(socket.SHUT_RDWR)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def idle(self) -> bool:
        """No request begun: nothing read since the last response, nothing waiting unread."""
        if self.reading_request or self._unread:
            return False
        # FIONREAD counts the bytes waiting without reading them; a peek through gevent's
        # socket would wait for data instead of answering.
        try:
            waiting = fcntl.ioctl(self._sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return True  # the peer is gone
        return int.from_bytes(waiting, sys.byteorder) == 0


def write_json_error(sock: Any, status: int, reason: str, message: str) -> None:
    """gunicorn's answer to a request it cannot parse, as JSON like every other error."""
    text = f"{status} {reason}: {message}" if message else f"{status} {reason}"
    body = json.dumps({"error": text}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


class ServingGeventWorker(GeventWorker):  # type: ignore[misc]  # gunicorn is untyped
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connections: set[_TrackedSocket] = set()
        self._loop: Http11Loop | None = None

    def init_process(self) -> None:
        # gunicorn answers a request it cannot parse (bad request line, Content-Length,
        # header) with an HTML page written by gunicorn.util.write_error, and offers no hook:
        # in this worker process, that function writes our JSON instead.
        gunicorn_util.write_error = write_json_error
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        if Http11Loop.serves(self.cfg):
            self._loop = Http11Loop(self)

    def run(self) -> None:
        gevent.spawn(self._close_idle_connections_on_stop)
        gevent.spawn(self._write_access_log)
        try:
            super().run()
        finally:
            access_lines.flush()

    def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
        tracked = _TrackedSocket(client)
        self._connections.add(tracked)
        try:
            if self._loop is not None:
                try:
                    self._loop.serve(tracked, addr, listener.getsockname())
                    return
                except HandOver as hand_over:
                    tracked.unread(hand_over.received)
                except OSError as exc:
                    if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                        self.log.exception("Socket error processing request.")
                    return
                except Exception:  # e.g. a body that failed midway: the connection ends
                    self.log.exception("Error handling request")
                    return
            super().handle(listener, tracked, addr)
        finally:
            self._connections.discard(tracked)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        try:
            answered = super().handle_request(listener_name, req, sock, addr)
        finally:
            sock.reading_request = False  # answered: the next byte starts a new request
        if not self.alive:
            # The stop began while this request ran: gunicorn only says Connection: close to
            # requests that start after it, and would keep this connection for the next.
            raise StopIteration
        return answered

    def _write_access_log(self) -> None:
        while True:
            gevent.sleep(ACCESS_FLUSH_SECONDS)
            access_lines.flush()

    def _close_idle_connections_on_stop(self) -> None:
        while self.alive:
            gevent.sleep(STOP_POLL_SECONDS)
        for connection in [c for c in self._connections if c.idle()]:
            connection.close_idle()  # its keep-alive read ends at once
