"""The worker's client socket: a response's head goes out with the first body bytes."""

from __future__ import annotations

from typing import Any

from serving.worker import HEAD_WITH_BODY_BYTES, _TrackedSocket

HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"


class RecordingSocket:
    """What was done to the socket underneath, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def sendall(self, data: bytes) -> None:
        self.calls.append(("sendall", data))

    def send(self, data: bytes) -> int:
        self.calls.append(("send", data))
        return len(data)

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        self.calls.append(("sendfile", count))
        return count or 0

    def recv(self, size: int) -> bytes:
        self.calls.append(("recv", size))
        return b""

    def close(self) -> None:
        self.calls.append(("close", None))


def tracked() -> tuple[_TrackedSocket, RecordingSocket]:
    underneath = RecordingSocket()
    return _TrackedSocket(underneath), underneath  # type: ignore[arg-type]


def test_a_head_and_a_small_body_go_out_in_one_write() -> None:
    sock, underneath = tracked()
    sock.sendall(HEAD)
    assert underneath.calls == []
    sock.sendall(b"hello")
    assert underneath.calls == [("sendall", HEAD + b"hello")]


def test_a_large_body_follows_its_head_without_a_copy() -> None:
    sock, underneath = tracked()
    body = b"x" * (HEAD_WITH_BODY_BYTES + 1)
    sock.sendall(HEAD)
    sock.sendall(body)
    assert underneath.calls == [("sendall", HEAD), ("sendall", body)]


def test_a_head_without_a_body_goes_out_before_anything_else() -> None:
    for then in ("recv", "send", "sendfile", "close"):
        sock, underneath = tracked()
        sock.sendall(HEAD)
        if then == "recv":
            sock.recv(8192)  # the next request: this response is complete
        elif then == "send":
            sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        elif then == "sendfile":
            sock.sendfile(None, 0, 10)
        else:
            sock.close()
        assert underneath.calls[0] == ("sendall", HEAD), then
        assert underneath.calls[1][0] == then


def test_other_writes_go_out_as_they_come() -> None:
    sock, underneath = tracked()
    error = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\n{}"  # head and body at once
    sock.sendall(error)
    sock.sendall(b"more")
    assert underneath.calls == [("sendall", error), ("sendall", b"more")]
