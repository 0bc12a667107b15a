"""The worker's client socket (bytes put back are read first), and the slot each worker is
given."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from serving import Settings
from serving.server import ServingApplication
from serving.worker import _TrackedSocket


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, _TrackedSocket]]:
    client, server = socket.socketpair()
    server.settimeout(5)
    with client, server:
        yield client, _TrackedSocket(server)


def test_bytes_put_back_are_read_before_the_socket_s(
    pair: tuple[socket.socket, _TrackedSocket],
) -> None:
    client, sock = pair
    assert sock.idle()  # nothing read, nothing waiting
    sock.unread(b"put back")
    assert not sock.idle()  # a request has begun
    sock.reading_request = False  # as when gunicorn has answered a request
    assert not sock.idle()  # the next one is here already
    client.sendall(b"from the socket")
    assert sock.recv(3) == b"put"
    buffer = bytearray(100)
    assert sock.recv_into(buffer) == 5
    assert buffer[:5] == b" back"
    assert sock.recv(100) == b"from the socket"


def test_bytes_waiting_in_the_socket_are_a_request_begun(
    pair: tuple[socket.socket, _TrackedSocket],
) -> None:
    client, sock = pair
    client.sendall(b"GET")  # arrived, not yet read: a stop must not close this connection
    assert not sock.idle()


def test_recv_into_fills_no_more_than_asked(pair: tuple[socket.socket, _TrackedSocket]) -> None:
    _, sock = pair
    sock.unread(b"abcdef")
    buffer = bytearray(10)
    assert sock.recv_into(buffer, 2) == 2
    assert sock.recv_into(memoryview(buffer)[2:]) == 4
    assert buffer[:6] == b"abcdef"


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
