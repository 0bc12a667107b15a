"""Bodies received straight from gunicorn's socket, checked against the installed gunicorn;
bodies that stop arriving; the memory bodies hold."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import gevent
import gevent.event
import pytest
from gunicorn.http.body import Body, ChunkedReader, LengthReader
from gunicorn.http.unreader import SocketUnreader

from handlers.errors import InvalidInput
from serving.admission import BodyMemory
from serving.body import MIN_PART_BYTES, BodyLimits, BodyTimeout, RequestBody, SocketBody

BODY = bytes(range(256)) * 4000  # 1 MB
NEXT = b"POST /invocations HTTP/1.1\r\n"
NO_LIMIT = BodyLimits(None)


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
    assert RequestBody(stream, 10, NO_LIMIT).whole() == BODY[:10]
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
    body = RequestBody(gunicorn_body(server, len(BODY), BODY[:100]), len(BODY), NO_LIMIT)
    pieces = [body.read(70_001) for _ in range(15)]
    assert b"".join(pieces) == BODY
    assert pieces[-1] == BODY[70_001 * 14 :]


def test_a_body_cut_short_is_refused(sockets: tuple[socket.socket, socket.socket]) -> None:
    client, server = sockets
    send(client, BODY[:1000], then_close=True)
    body = RequestBody(gunicorn_body(server, len(BODY), b""), len(BODY), NO_LIMIT)
    with pytest.raises(InvalidInput, match=f"ended after 1000 of its {len(BODY)} bytes"):
        body.whole()
    assert body.failed


def test_other_streams_are_read_through_gunicorn(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    _client, server = sockets
    assert SocketBody.of(Body(ChunkedReader(None, SocketUnreader(server)))) is None
    started = gunicorn_body(server, 10, BODY[:10])
    started.read(3)  # an application began reading through gunicorn: stay with it
    assert SocketBody.of(started) is None


def send_slowly(client: socket.socket, parts: list[bytes], pause: float) -> None:
    def sending() -> None:
        for part in parts:
            time.sleep(pause)
            client.sendall(part)

    threading.Thread(target=sending, daemon=True).start()


def test_a_body_that_stops_arriving_is_a_408(sockets: tuple[socket.socket, socket.socket]) -> None:
    client, server = sockets
    client.sendall(BODY[:1000])  # of the 1 MB it declares
    limits = BodyLimits(None, stall=0.2, stalled="stalled")
    body = RequestBody(gunicorn_body(server, len(BODY), b""), len(BODY), limits)
    started = time.monotonic()
    with pytest.raises(BodyTimeout, match="stalled") as raised:
        body.whole()
    assert 0.2 <= time.monotonic() - started < 1
    assert raised.value.status == 408
    assert body.failed
    assert server.gettimeout() == 5  # the socket's own timeout is back


def test_a_chunked_body_that_stops_arriving_is_a_408(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    client, server = sockets
    client.sendall(b"5\r\nhello\r\n")  # and no last chunk
    limits = BodyLimits(None, stall=0.2)
    stream = Body(ChunkedReader(None, SocketUnreader(server)))
    body = RequestBody(stream, None, limits, sock=server)
    with pytest.raises(BodyTimeout):
        body.whole()


def test_a_body_that_keeps_arriving_slowly_is_not_cut(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    client, server = sockets
    parts = [BODY[i : i + 1000] for i in range(0, 5000, 1000)]
    send_slowly(client, parts, pause=0.1)  # 0.5 s in all, 0.1 s between bytes
    limits = BodyLimits(None, stall=0.3)
    assert RequestBody(gunicorn_body(server, 5000, b""), 5000, limits).whole() == BODY[:5000]


def test_a_part_the_kernel_holds_is_one_recv_and_tiny_pieces_are_gathered(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    """A part already received by the kernel comes from one ``recv``, as the bytes it made;
    one sent in tiny pieces is gathered into one buffer, not held as a bytes per piece."""
    client, server = sockets
    client.sendall(BODY[:5000])
    whole = SocketBody(b"", server, 5000)._receive_part(5000)
    assert type(whole) is bytes
    assert whole == BODY[:5000]
    client.sendall(BODY[:100])  # the first piece is all the kernel holds when it is read
    send_slowly(client, [BODY[i : i + 100] for i in range(100, 5000, 100)], pause=0.002)
    gathered = SocketBody(b"", server, 5000)._receive_part(5000)
    assert isinstance(gathered, memoryview)
    assert gathered == BODY[:5000]


def test_a_body_holds_memory_for_what_arrived_not_what_it_declares(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    client, server = sockets
    client.sendall(BODY[:1000])
    memory = BodyMemory(1 << 20)
    with memory.holding() as holding:
        body = RequestBody(
            gunicorn_body(server, 6_000_000, b""), 6_000_000, BodyLimits(None, stall=0.1), holding
        )
        with pytest.raises(BodyTimeout):
            body.whole()
        assert holding.held <= MIN_PART_BYTES


def test_bodies_past_the_memory_wait_in_turn_and_one_may_go_past_it() -> None:
    memory = BodyMemory(100)
    taken: list[str] = []

    def take(name: str, sizes: list[int], then: gevent.event.Event) -> None:
        with memory.holding() as holding:
            for size in sizes:
                holding.take(size)
                taken.append(f"{name}{size}")
            then.wait()

    done = {name: gevent.event.Event() for name in "abc"}
    a = gevent.spawn(take, "a", [60, 60], done["a"])  # goes past the capacity: nobody else is
    gevent.sleep(0.01)
    b = gevent.spawn(take, "b", [10, 10], done["b"])  # waits: only one may be past it
    gevent.sleep(0.01)
    assert taken == ["a60", "a60"]
    done["a"].set()  # a ends and gives its 120 back
    gevent.sleep(0.01)
    assert taken == ["a60", "a60", "b10", "b10"]
    c = gevent.spawn(take, "c", [50, 50], done["c"])  # 20 + 100 > 100: c goes past it alone
    gevent.sleep(0.01)
    assert taken[-2:] == ["c50", "c50"]
    done["b"].set()
    done["c"].set()
    gevent.joinall([a, b, c], raise_error=True)
