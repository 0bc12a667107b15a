"""Bodies received straight from gunicorn's socket, checked against the installed gunicorn."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from gunicorn.http.body import Body, ChunkedReader, LengthReader
from gunicorn.http.unreader import SocketUnreader

from handlers.errors import InvalidInput
from serving.body import SocketBody, body_reader, read_whole

BODY = bytes(range(256)) * 4000  # 1 MB
NEXT = b"POST /invocations HTTP/1.1\r\n"


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    client, server = socket.socketpair()
    server.settimeout(5)  # a lost byte fails the test instead of hanging it
    with client, server:
        yield client, server


def send(client: socket.socket, data: bytes, then_close: bool = False) -> None:
    """Send from a thread: the pair's buffers hold less than a megabyte."""

    def sending() -> None:
        client.sendall(data)
        if then_close:
            client.shutdown(socket.SHUT_WR)

    threading.Thread(target=sending, daemon=True).start()


def gunicorn_body(server: socket.socket, length: int, received: bytes) -> Body:
    """A Content-Length body as gunicorn builds it, ``received`` already read with the headers."""
    unreader = SocketUnreader(server)
    unreader.unread(received)
    return Body(LengthReader(unreader, length))


def test_the_body_comes_whole_and_the_next_request_stays_for_gunicorn(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    client, server = sockets
    send(client, BODY[5000:] + NEXT)  # the rest of the body, then a pipelined request
    stream = gunicorn_body(server, len(BODY), BODY[:5000])
    socket_body = SocketBody.of(stream)
    assert socket_body is not None
    assert socket_body.read() == BODY
    assert stream.read() == b""  # gunicorn knows the body is over
    assert stream.reader.unreader.read(len(NEXT)) == NEXT


def test_what_gunicorn_received_past_the_body_goes_back_to_it(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    _client, server = sockets
    stream = gunicorn_body(server, 10, BODY[:10] + NEXT)  # all of it came with the headers
    assert read_whole(body_reader(stream, 10, None, "too large"), None) == BODY[:10]
    assert stream.reader.unreader.read(len(NEXT)) == NEXT


def test_a_body_left_half_read_is_drained_to_its_end_and_no_further(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    client, server = sockets
    send(client, BODY[60:100] + NEXT)
    stream = gunicorn_body(server, 100, BODY[:60])
    socket_body = SocketBody.of(stream)
    assert socket_body is not None
    assert socket_body.read(10) == BODY[:10]  # then the request failed: the rest is unread
    assert stream.read() == BODY[60:100]  # gunicorn drains the rest of the body it knows of
    assert stream.reader.unreader.read(len(NEXT)) == NEXT


def test_a_large_declared_length_is_not_allocated_at_once(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    client, server = sockets
    send(client, BODY[:1000], then_close=True)
    socket_body = SocketBody.of(gunicorn_body(server, 1 << 40, b""))  # a terabyte, it says
    assert socket_body is not None
    assert socket_body.read() == BODY[:1000]


def test_reads_in_pieces_add_up_to_the_body(sockets: tuple[socket.socket, socket.socket]) -> None:
    client, server = sockets
    send(client, BODY[100:])
    read = body_reader(gunicorn_body(server, len(BODY), BODY[:100]), len(BODY), None, "")
    pieces = [read(70_001) for _ in range(15)]
    assert b"".join(pieces) == BODY
    assert pieces[-1] == BODY[70_001 * 14 :]


def test_a_body_cut_short_is_refused(sockets: tuple[socket.socket, socket.socket]) -> None:
    client, server = sockets
    send(client, BODY[:1000], then_close=True)
    read = body_reader(gunicorn_body(server, len(BODY), b""), len(BODY), None, "")
    with pytest.raises(InvalidInput, match=f"ended after 1000 of its {len(BODY)} bytes"):
        read_whole(read, None)


def test_other_streams_are_read_through_gunicorn(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    _client, server = sockets
    assert SocketBody.of(Body(ChunkedReader(None, SocketUnreader(server)))) is None
    started = gunicorn_body(server, 10, BODY[:10])
    started.read(3)  # an application began reading through gunicorn: stay with it
    assert SocketBody.of(started) is None
