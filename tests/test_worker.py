"""The worker's client socket (a response's head goes out with the first body bytes), and
the slot each worker is given."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from serving import Settings
from serving.server import ServingApplication
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


def test_a_head_without_a_body_goes_out_before_any_other_write() -> None:
    for then in ("send", "sendfile"):
        sock, underneath = tracked()
        sock.sendall(HEAD)
        if then == "send":
            sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        else:
            sock.sendfile(None, 0, 10)
        assert underneath.calls[0] == ("sendall", HEAD), then
        assert underneath.calls[1][0] == then


def test_a_head_without_a_body_goes_out_when_flushed() -> None:
    sock, underneath = tracked()
    sock.sendall(HEAD)  # a HEAD answer: gunicorn writes no body
    sock.flush()  # as the worker does when the request ends
    assert underneath.calls == [("sendall", HEAD)]
    sock.flush()
    assert underneath.calls == [("sendall", HEAD)]  # once


def test_other_writes_go_out_as_they_come() -> None:
    sock, underneath = tracked()
    error = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\n{}"  # head and body at once
    sock.sendall(error)
    sock.sendall(b"more")
    assert underneath.calls == [("sendall", error), ("sendall", b"more")]


def test_a_replacement_worker_takes_the_slot_of_the_one_it_replaces() -> None:
    application = ServingApplication(Settings.from_sources({}, cpus=1))
    arbiter = SimpleNamespace(WORKERS={})
    for pid in (101, 102, 103, 104):  # four workers start: slots 0 to 3
        worker = SimpleNamespace()
        application.pre_fork(arbiter, worker)
        arbiter.WORKERS[pid] = worker
    assert [w.slot for w in arbiter.WORKERS.values()] == [0, 1, 2, 3]
    del arbiter.WORKERS[102]  # slot 1 died
    replacement = SimpleNamespace()
    application.pre_fork(arbiter, replacement)
    assert replacement.slot == 1  # so worker n still uses GPU n mod the GPUs
    application.post_fork(arbiter, replacement)
    assert application.worker_index == 1
