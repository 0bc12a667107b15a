"""Clients and user code that would stop a worker: bodies that stop arriving, broken framing,
hooks that hang, headers no response can carry. Each against a real server, which must keep
serving others meanwhile and say the truth on /ping."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.server import ServerProcess, running_server
from tests.test_inference_py import model_dir_with_code

ROWS = json.dumps([[1.0, 2.0, 3.0, 4.0]]).encode()
JSON = {"Content-Type": "application/json"}
CUSTOM = "X-Amzn-SageMaker-Custom-Attributes"
BODY_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, linear_model: Path) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("hostile")
    arguments = ["--model-dir", str(linear_model.parent), "--body-timeout", str(BODY_TIMEOUT)]
    with running_server(arguments, root / "server.log") as running:
        yield running


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """The response head and body (Content-Length framed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head, body


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def timed_invocation(server: ServerProcess) -> float:
    started = time.monotonic()
    response = requests.post(server.url("/invocations"), data=ROWS, headers=JSON, timeout=10)
    assert response.status_code == 200
    return time.monotonic() - started


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Connections a test opens, closed at its end whatever happens."""
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def test_a_body_that_stops_arriving_holds_up_nobody_and_gets_a_408(
    server: ServerProcess, sockets: list[socket.socket]
) -> None:
    stalled = connect(server)
    sockets.append(stalled)
    stalled.sendall(
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 6000000\r\n\r\n["  # one byte of the 6 MB it declares, then nothing
    )
    started = time.monotonic()
    time.sleep(0.1)
    # While it stalls, others are answered at once (the admission gate once waited on it).
    assert max(timed_invocation(server) for _ in range(5)) < 0.5
    head, body = read_response(stalled)
    assert time.monotonic() - started == pytest.approx(BODY_TIMEOUT, abs=0.5)
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"\r\nConnection: close\r\n" in head
    assert b"SERVING_BODY_TIMEOUT" in body
    assert closed_by_server(stalled)


def test_stalled_chunked_bodies_hold_up_nobody(
    server: ServerProcess, sockets: list[socket.socket]
) -> None:
    stalled = [connect(server) for _ in range(5)]
    sockets.extend(stalled)
    for sock in stalled:
        sock.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n1\r\n[\r\n"
        )
    time.sleep(0.1)
    assert max(timed_invocation(server) for _ in range(5)) < 0.5
    for sock in stalled:
        head, _ = read_response(sock)
        assert head.startswith(b"HTTP/1.1 408 ")
        assert b"\r\nConnection: close\r\n" in head
        assert closed_by_server(sock)


def test_a_malformed_chunk_size_ends_the_connection_and_says_so(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n[1]\r\n0\r\n\r\n"
        )
        head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 400 ")
        assert b"\r\nConnection: close\r\n" in head
        assert b"malformed chunked request body" in body
        assert closed_by_server(sock)


HANGING = """
    import json
    import time

    def predict_fn(data, model):
        time.sleep(float(data["sleep"]))
        return [[data["sleep"]]]

    def input_fn(body, content_type):
        return json.loads(body)

    def output_fn(prediction, accept):
        return json.dumps(prediction)
"""


@pytest.fixture
def hanging_server(tmp_path: Path, linear_model: Path) -> Iterator[ServerProcess]:
    model_dir = model_dir_with_code(tmp_path, linear_model, HANGING)
    arguments = ["--model-dir", str(model_dir), "--timeout", "2"]
    with running_server(arguments, tmp_path / "server.log") as running:
        yield running


def sleep_request(server: ServerProcess, seconds: float) -> tuple[int, float]:
    started = time.monotonic()
    body = json.dumps({"sleep": seconds})
    response = requests.post(server.url("/invocations"), data=body, headers=JSON, timeout=30)
    return response.status_code, time.monotonic() - started


def test_the_timeout_covers_queueing_and_every_hook(hanging_server: ServerProcess) -> None:
    with ThreadPoolExecutor(3) as clients:
        # One inference at a time: the second and third wait for the first, within their time.
        answers = list(clients.map(lambda _: sleep_request(hanging_server, 1.5), range(3)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200, 504, 504]
    assert max(seconds for _, seconds in answers) < 2.8  # each at most its 2 s, not 1.5 x 3


def test_a_hung_hook_gives_its_slot_back(hanging_server: ServerProcess) -> None:
    status, seconds = sleep_request(hanging_server, 60)
    assert (status, round(seconds)) == (504, 2)
    # The hung call goes on in its thread; the next request runs in a new one at once.
    assert sleep_request(hanging_server, 0)[0] == 200
    assert hanging_server.get("/ping").status_code == 200


def test_a_worker_whose_runs_are_stuck_says_so_and_is_replaced(
    hanging_server: ServerProcess,
) -> None:
    (worker,) = hanging_server.worker_pids()
    for _ in range(3):  # each hangs for good in a thread of its own
        assert hanging_server.get("/ping").status_code == 200
        assert sleep_request(hanging_server, 60)[0] == 504
    # Right away: the worker says it cannot serve (until its replacement takes over).
    assert _ping_status(hanging_server) in (503, None)
    assert "cannot serve; replacing it" in hanging_server.wait_for_log("cannot serve")
    deadline = time.monotonic() + 15
    while hanging_server.worker_pids() in ([worker], []) or _ping_status(hanging_server) != 200:
        assert time.monotonic() < deadline, "the stuck worker was not replaced"
        time.sleep(0.1)
    assert sleep_request(hanging_server, 0)[0] == 200


def _ping_status(server: ServerProcess) -> int | None:
    try:
        return server.get("/ping").status_code
    except requests.ConnectionError:
        return None


ATTRIBUTES = """
    import json

    VALUES = {"nul": "a\\x00b", "esc": "\\x1b[31m", "del": "\\x7f", "number": 5, "ok": "fine=1"}

    def transform_fn(model, body, content_type, accept, context):
        context.custom_attributes = VALUES[context.custom_attributes]
        return b"[]", "application/json"
"""


@pytest.fixture(scope="module")
def attributes_server(
    tmp_path_factory: pytest.TempPathFactory, linear_model: Path
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("attributes")
    model_dir = model_dir_with_code(root, linear_model, ATTRIBUTES)
    with running_server(["--model-dir", str(model_dir)], root / "server.log") as running:
        yield running


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])  # the worker's loop; gunicorn's
@pytest.mark.parametrize("which", ["nul", "esc", "del", "number"])
def test_custom_attributes_no_header_can_carry_are_a_clear_500(
    attributes_server: ServerProcess, which: str, version: str
) -> None:
    with connect(attributes_server) as sock:
        sock.sendall(
            f"POST /invocations {version}\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"{CUSTOM}: {which}\r\nContent-Length: 2\r\n\r\n[]".encode()
        )
        head, body = read_response(sock)
    assert head.startswith(f"{version} 500 ".encode()), head
    assert CUSTOM.lower().encode() not in head.lower()
    message = json.loads(body)["error"]
    assert message.startswith("InferencePyHandler set custom attributes that a header cannot carry")
    response = requests.post(
        attributes_server.url("/invocations"),
        data=b"[]",
        headers={**JSON, CUSTOM: "ok"},
        timeout=10,
    )
    assert (response.status_code, response.headers[CUSTOM]) == (200, "fine=1")


def test_a_hostile_accept_is_refused_unparsed(server: ServerProcess) -> None:
    accept = ", ".join(f"application/x-{i};q=0.{i % 9 + 1}" for i in range(300))
    assert 7000 < len(accept) < 8190  # under gunicorn's own limit of a header's size
    response = requests.post(
        server.url("/invocations"), data=ROWS, headers={**JSON, "Accept": accept}, timeout=10
    )
    assert response.status_code == 400
    assert "Accept header is" in response.json()["error"]
