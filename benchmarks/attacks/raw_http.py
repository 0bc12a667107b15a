"""HTTP/1.1 over raw sockets: attacks send exactly the bytes they mean to, and see every byte
the server sends back and whether it closes the connection."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

JSON, NPZ = "application/json", "application/x-npz"
RECORDIO = "application/x-recordio-protobuf"
SMALL = b"[[5.1, 3.5, 1.4, 0.2]]"


@dataclass
class Reply:
    """One answer read off a raw socket. ``closed``: the server closed the connection after
    it (None: not looked at)."""

    status: int | None
    head: bytes
    body: bytes
    seconds: float
    closed: bool | None

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None

    def __str__(self) -> str:
        text = f"{self.status or 'no answer'} after {self.seconds:.1f} s"
        if self.status and self.status >= 400:
            text += f" ({self.body[:120].decode('latin-1')!r})"
        if self.closed is not None:
            text += ", connection closed" if self.closed else ", connection left open"
        return text


def request_bytes(
    method: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    version: str = "HTTP/1.1",
) -> bytes:
    headers = {"Host": "localhost", **(headers or {})}
    if method == "POST" and "Transfer-Encoding" not in headers:
        headers.setdefault("Content-Length", str(len(body)))
    head = [f"{method} {path} {version}", *(f"{key}: {value}" for key, value in headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def read_reply(
    sock: socket.socket, timeout: float, started: float, close_wait: float = 0.0
) -> Reply:
    """The next answer on ``sock``, within ``timeout`` seconds of ``started``; then, for
    ``close_wait`` seconds, whether the server closes the connection."""
    deadline = started + timeout

    def more() -> bytes:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        return sock.recv(1 << 16)

    data, ended = b"", False
    try:
        while b"\r\n\r\n" not in data and (chunk := more()):
            data += chunk
        if b"\r\n\r\n" not in data:
            return Reply(None, data, b"", time.monotonic() - started, True)
        head, _, body = data.partition(b"\r\n\r\n")
        reply = Reply(int(head.split()[1]), head, b"", 0.0, None)
        length = reply.header("Content-Length")
        if length is not None:
            while len(body) < int(length) and (chunk := more()):
                body += chunk
        elif "chunked" in (reply.header("Transfer-Encoding") or ""):
            while not body.endswith(b"0\r\n\r\n") and (chunk := more()):
                body += chunk
        else:  # HTTP/1.0: the body runs to the end of the connection
            while chunk := more():
                body += chunk
            ended = True
    except TimeoutError:
        return Reply(None, data, b"", time.monotonic() - started, False)
    except OSError:  # reset
        return Reply(None, data, b"", time.monotonic() - started, True)
    reply.body, reply.seconds = body, time.monotonic() - started
    if ended:
        reply.closed = True
    elif close_wait:
        reply.closed = closes_within(sock, close_wait)
    return reply


def closes_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1 << 16) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def exchange(port: int, data: bytes, timeout: float, close_wait: float = 0.0) -> Reply:
    """Send ``data`` on a new connection and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        started = time.monotonic()
        with contextlib.suppress(OSError):  # an early answer may cut a large body short
            sock.sendall(data)
        return read_reply(sock, timeout, started, close_wait)


def post(port: int, body: bytes, content_type: str, timeout: float, **headers: str) -> Reply:
    headers = {"Content-Type": content_type, **headers}
    return exchange(port, request_bytes("POST", "/invocations", headers, body), timeout)


def post_json(port: int, document: object, timeout: float) -> Reply:
    return post(port, json.dumps(document).encode(), JSON, timeout)


def summarize(replies: list[Reply]) -> str:
    statuses = Counter(str(r.status or "no answer") for r in replies)
    slowest = max((r.seconds for r in replies), default=0.0)
    text = ", ".join(f"{status} ×{n}" for status, n in statuses.items())
    return f"{text} (slowest after {slowest:.1f} s)"
