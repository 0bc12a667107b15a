"""The worker's own HTTP/1.1 loop for plain requests, over gunicorn_h1c's C parser.

gunicorn's handling of a request in Python (its parser's Request, the WSGI environ, the
Response object, the hooks) cost about 0.15 ms of CPU, more than half of a small model's
whole request. This loop serves the requests SageMaker sends with far less: the C parser
builds the environ, the body is received straight into its buffer (:class:`SocketBody`), and
the response goes out in one write.

It serves only what is plain (:func:`_plain`): HTTP/1.1, a Content-Length body or none
(``Expect: 100-continue`` included), an ASCII path with no percent-escapes, no proxy scheme
headers. At the first request that is not, or that the C parser refuses, it stops and hands
the connection, with every byte it has received, to gunicorn's own handling, which serves the
rest of the connection: chunked bodies, HTTP/1.0, upgrades and gunicorn's answers to
malformed requests stay exactly gunicorn's. Without gunicorn_h1c (the ``fast`` extra is not
installed) the loop is off and gunicorn serves every request, with its pure-Python parser.

It answers as gunicorn does (``Server``, ``Date``, ``Connection``, keep-alive timeout,
``max_requests``), for the app this server runs (:class:`serving.app.ServingApp`), which
states each response's Content-Length and sets no hop-by-hop headers; it does not run
gunicorn's ``pre_request``/``post_request`` hooks, which this server does not set.
"""

from __future__ import annotations

import email.utils
import itertools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent
from gunicorn.http.message import MAX_HEADERS, MAX_REQUEST_LINE
from gunicorn.http.wsgi import SERVER

from .body import SocketBody
from .h1 import c_parser as gunicorn_h1c

log = logging.getLogger(__name__)

#: Bytes asked of the socket for a request's head (and whatever of its body came with it).
RECV_BYTES = 64 * 1024

#: A head still incomplete past this many bytes goes to gunicorn, which applies its limits.
MAX_HEAD_BYTES = 32 * 1024

#: Largest body part a response's head is joined to; larger ones are sent after it.
HEAD_WITH_BODY_BYTES = 64 * 1024

#: Requests with one of these headers go to gunicorn: they change the body's framing or the
#: connection (``Expect`` other than ``100-continue`` is answered there with a 417).
HANDED_OVER = ("HTTP_TRANSFER_ENCODING", "HTTP_UPGRADE", "HTTP_HTTP2_SETTINGS")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

#: The body of the 500 for an app that raised or whose headers cannot be sent.
INTERNAL_ERROR = b'{"error":"internal server error"}'


class HandOver(Exception):  # a signal, not an error
    """The connection is gunicorn's from here: ``received`` is every byte read and not served."""

    def __init__(self, received: bytes) -> None:
        super().__init__()
        self.received = received


class _Date:
    """The ``Date`` header's value, formatted once a second."""

    second = -1
    value = ""

    @classmethod
    def now(cls) -> str:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.value = second, email.utils.formatdate(second, usegmt=True)
        return cls.value


class _Response:
    __slots__ = ("headers", "status")

    def __init__(self) -> None:
        self.status = ""
        self.headers: list[tuple[str, str]] = []

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        self.status, self.headers = status, headers
        return _no_write


def _no_write(data: bytes) -> None:
    raise NotImplementedError("the app returns its body; it does not call write()")


class Http11Loop:
    """Serves connections' plain requests with ``worker``'s app, as ``worker`` is set up.

    ``worker`` is a gunicorn worker (its ``cfg``, ``wsgi``, ``log``, ``alive``, ``nr`` and
    ``max_requests``) whose logger has :meth:`serving.logs.AccessLogger.served`.
    """

    def __init__(self, worker: Any) -> None:
        cfg = worker.cfg
        self._worker = worker
        self._app = worker.wsgi
        self._keepalive = cfg.keepalive
        self._limits = {
            "limit_request_line": cfg.limit_request_line,
            "limit_request_fields": cfg.limit_request_fields,
            "limit_request_field_size": cfg.limit_request_field_size,
        }
        # gunicorn decides the scheme from these (from trusted peers), and refuses requests
        # whose values disagree: it serves requests that carry them.
        self._handed_over = HANDED_OVER + tuple(
            "HTTP_" + name.upper().replace("-", "_") for name in cfg.secure_scheme_headers
        )
        self._environ = {
            "SCRIPT_NAME": "",
            "wsgi.version": (1, 0),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": cfg.workers > 1,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
        }

    @staticmethod
    def serves(cfg: Any) -> bool:
        """Whether gunicorn is set up as this loop answers: plain HTTP/1.1 over TCP, headers
        with ``_`` dropped, methods as sent, limits that mean what they say, no
        ``SCRIPT_NAME`` prefix."""
        return (
            gunicorn_h1c is not None  # without the C parser (the fast extra), gunicorn serves all
            and not cfg.is_ssl
            and cfg.proxy_protocol == "off"
            and cfg.http2_cleartext == "off"
            and cfg.header_map == "drop"
            and not cfg.casefold_http_method
            and not cfg.permit_unconventional_http_method
            and not cfg.permit_unconventional_http_version
            and cfg.protocol == "http"
            # gunicorn reads 0 or less, or more than its maximum, as other values
            and 0 < cfg.limit_request_line < MAX_REQUEST_LINE
            and 0 < cfg.limit_request_fields <= MAX_HEADERS
            and cfg.limit_request_field_size > 0
            and not os.environ.get("SCRIPT_NAME")
        )

    def serve(self, sock: Any, client: Any, server: Any) -> None:
        """Serve ``sock``'s requests until the connection should end; raises
        :class:`HandOver` at a request this loop does not serve."""
        received, body = b"", SocketBody(b"", sock, 0)
        while True:
            request = None
            # As gunicorn's keep-alive: what the last request left of its body is read and
            # dropped, and the next request's head received, within a bounded wait.
            with gevent.Timeout(self._keepalive or None, False):
                if body.drain():
                    request = self._read_head(sock, received, client, server)
            if request is None:
                return  # the peer closed, or kept the connection idle too long
            environ, received = request
            keep_open, received, body = self._answer(sock, environ, received)
            # Bytes of this request's body or of a next request still to come mean that the
            # connection is not idle.
            sock.reading_request = bool(received) or body.left > 0
            if not (keep_open and self._worker.alive):  # a stop may begin while sending
                return

    def _read_head(
        self, sock: Any, received: bytes, client: Any, server: Any
    ) -> tuple[dict[str, Any], bytes] | None:
        """The next request's environ and the bytes received from its head on."""
        while True:
            if received:
                try:
                    environ: dict[str, Any] = gunicorn_h1c.parse_to_wsgi_environ(
                        received, server, client, **self._limits
                    )
                except gunicorn_h1c.IncompleteError:
                    if len(received) > MAX_HEAD_BYTES:
                        raise HandOver(received) from None
                except gunicorn_h1c.ParseError:
                    raise HandOver(received) from None  # gunicorn says what is wrong with it
                else:
                    # gunicorn measures a request line that follows an empty line itself
                    if received.startswith(b"\r\n") or not _plain(environ, self._handed_over):
                        raise HandOver(received)
                    return environ, received
            chunk: bytes = sock.recv(RECV_BYTES)
            if not chunk:
                return None
            received += chunk

    def _answer(
        self, sock: Any, environ: dict[str, Any], received: bytes
    ) -> tuple[bool, bytes, SocketBody]:
        """Answer one request; whether to keep the connection open, the bytes received past
        its body, and its body (what the app left unread is dropped before the next)."""
        started = time.monotonic()
        head_length = environ.pop("_consumed")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body_received = received[head_length : head_length + length]
        received = received[head_length + length :]
        if len(body_received) < length and "HTTP_EXPECT" in environ:
            sock.sendall(CONTINUE)  # the client waits for it before sending the body
        body = SocketBody(body_received, sock, length)
        environ.update(self._environ)
        environ["wsgi.input"] = body

        worker = self._worker
        worker.nr += 1
        if worker.nr >= worker.max_requests and worker.alive:
            log.info("Autorestarting worker after current request.")
            worker.alive = False

        response, keep_open, sent = _Response(), False, 0
        result: Iterable[bytes] = ()
        try:
            try:
                result = self._app(environ, response.start_response)
                rest = iter(result)
                # PEP 3333: an app may call start_response as late as its first part.
                parts: Iterable[bytes] = itertools.chain((next(rest, b""),), rest)
                # A stop that began while the app ran ends the connection too, and so does an
                # app that says so (a body it could not read to its end).
                headers, app_closes = _without_connection(response.headers)
                keep_open = (
                    worker.alive
                    and bool(self._keepalive)
                    and not app_closes
                    and not _asks_close(environ)
                )
                head = _head(response.status, headers, keep_open)
            except Exception:
                log.exception(
                    "error answering %s %s", environ["REQUEST_METHOD"], environ["PATH_INFO"]
                )
                keep_open, parts = False, (INTERNAL_ERROR,)
                response.status = "500 Internal Server Error"
                response.headers = [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(INTERNAL_ERROR))),
                ]
                head = _head(response.status, response.headers, keep_open)
            sent = _send(sock, head, parts)
        finally:
            if hasattr(result, "close"):
                result.close()
            if response.status:  # not for a request cut before it had an answer (a stop)
                self._log(environ, response.status, sent, started)
        return keep_open, received, body

    def _log(self, environ: dict[str, Any], status: str, sent: int, started: float) -> None:
        path, query = environ["PATH_INFO"], environ["QUERY_STRING"]
        self._worker.log.served(
            environ.get("REMOTE_ADDR", "-"),
            f"{environ['REQUEST_METHOD']} {path}{'?' if query else ''}{query} HTTP/1.1",
            path,
            status,
            sent,
            time.monotonic() - started,
        )


def _plain(environ: dict[str, Any], handed_over: tuple[str, ...]) -> bool:
    """Whether this loop serves the request, which has none of the ``handed_over`` environ
    keys: anything else goes to gunicorn."""
    path: str = environ["PATH_INFO"]
    query: str = environ["QUERY_STRING"]
    length: str | None = environ.get("CONTENT_LENGTH")
    expect: str | None = environ.get("HTTP_EXPECT")
    return (
        environ["SERVER_PROTOCOL"] == "HTTP/1.1"
        and path.startswith("/")
        # gunicorn refuses other bytes in the target, decodes percent-escapes in PATH_INFO
        # and splits off a fragment
        and path.isascii()
        and query.isascii()
        and "%" not in path
        and "#" not in path
        and "#" not in query
        and (length is None or (length.isascii() and length.isdigit()))
        and (expect is None or expect.lower() == "100-continue")
        and not any(name in environ for name in handed_over)
    )


def _head(status: str, headers: list[tuple[str, str]], keep_open: bool) -> bytes:
    """A response's head, as gunicorn writes it; raises ``ValueError`` for a header with a
    line break (it would end the head early) or a character Latin-1 lacks."""
    fields = "".join(f"{name}: {value}\r\n" for name, value in headers)
    if fields.count("\n") != len(headers) or fields.count("\r") != len(headers):
        raise ValueError(f"a line break in a response header: {headers!r}")
    return (
        f"HTTP/1.1 {status}\r\nServer: {SERVER}\r\nDate: {_Date.now()}\r\n"
        f"Connection: {'keep-alive' if keep_open else 'close'}\r\n{fields}\r\n"
    ).encode("latin-1")


def _without_connection(headers: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], bool]:
    """The app's headers less ``Connection``, which this loop writes, and whether the app
    asked to close the connection with it."""
    if not any(name.lower() == "connection" for name, _ in headers):
        return headers, False
    kept = [(name, value) for name, value in headers if name.lower() != "connection"]
    return kept, any(
        name.lower() == "connection" and value.lower() == "close" for name, value in headers
    )


def _asks_close(environ: dict[str, Any]) -> bool:
    connection: str | None = environ.get("HTTP_CONNECTION")
    if connection is None:
        return False
    return "close" in (option.strip(" \t") for option in connection.lower().split(","))


def _send(sock: Any, head: bytes, parts: Iterable[bytes]) -> int:
    """Send the head, joined to the body's first part if that is small, then the body; the
    body bytes sent."""
    sent = 0
    for part in parts:
        if not part:
            continue
        sent += len(part)
        if head and len(part) <= HEAD_WITH_BODY_BYTES:
            part, head = head + part, b""
        elif head:
            sock.sendall(head)
            head = b""
        sock.sendall(part)
    if head:
        sock.sendall(head)
    return sent
