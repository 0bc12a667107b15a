"""The server without gunicorn_h1c (the ``fast`` extra not installed): gunicorn's own parser
serves every request, and ``serving.h1``'s Python parsers stand in for the C ones.

The C parser is hidden from a subprocess by a module of its name, first on ``PYTHONPATH``,
that refuses to import; the shared venv keeps it installed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gunicorn_h1c
import pytest
import requests

from serving import h1
from tests.server import clean_environ, running_server

IRIS = Path(__file__).parent.parent / "examples" / "iris" / "model"


@pytest.fixture
def without_c_parser(tmp_path: Path) -> dict[str, str]:
    """An environment whose Pythons cannot import gunicorn_h1c."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "gunicorn_h1c.py").write_text('raise ImportError("hidden by the test")\n')
    root = str(Path(__file__).parent.parent)
    return {"PYTHONPATH": f"{shim}:{root}"}


def c_parser_mapped(pid: int) -> bool:
    return "gunicorn_h1c" in Path(f"/proc/{pid}/maps").read_text()


def test_the_server_serves_without_the_c_parser(
    without_c_parser: dict[str, str], tmp_path: Path
) -> None:
    arguments = ["--model-dir", str(IRIS)]
    with running_server(arguments, tmp_path / "server.log", without_c_parser) as server:
        (worker,) = server.worker_pids()
        assert not c_parser_mapped(worker)
        rows = b"5.1,3.5,1.4,0.2\n6.3,3.3,6.0,2.5\n"
        for body in (rows, iter([rows])):  # a Content-Length body, then a chunked one
            response = requests.post(
                server.url("/invocations"),
                data=body,
                headers={"Content-Type": "text/csv", "Accept": "text/csv"},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            assert response.text.count("\n") == 2
        malformed = requests.get(server.url("/ping"), headers={"Bad Header": "x"}, timeout=5)
        assert malformed.status_code == 400
        assert malformed.headers["Content-Type"] == "application/json"
    assert "Traceback" not in server.log()


def test_the_c_parser_is_used_when_installed(tmp_path: Path) -> None:
    with running_server(["--model-dir", str(IRIS)], tmp_path / "server.log") as server:
        (worker,) = server.worker_pids()
        assert c_parser_mapped(worker)


def test_the_endpoint_modules_import_without_the_c_parser(
    without_c_parser: dict[str, str],
) -> None:
    code = (
        "import serving.h1, serving.endpoint.main, serving.cli;"
        "assert serving.h1.c_parser is None;"
        "assert serving.h1.parse_response is serving.h1._parse_response"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=clean_environ(without_c_parser),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


REQUESTS = [
    b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /invocations?a=1 HTTP/1.0\r\nContent-Length: 3\r\nX-Y:  spaced \r\n\r\nabc",
    b"GET / HTTP/1.1\r\n\r\n",
]
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 503 Service Unavailable\r\nA: 1\r\nA: 2\r\n\r\n",
    b"HTTP/1.1 204 \r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
]


@pytest.mark.parametrize("data", REQUESTS)
def test_the_python_request_parser_reads_as_the_c_one(data: bytes) -> None:
    assert h1._parse_request(data) == gunicorn_h1c.parse_request(data)


@pytest.mark.parametrize("data", RESPONSES)
def test_the_python_response_parser_reads_as_the_c_one(data: bytes) -> None:
    assert h1._parse_response(data) == gunicorn_h1c.parse_response(data)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"GET /ping HTTP/1.1\r\nHost: x\r\n", h1.IncompleteError),
        (b"GET /ping HTTP/2.0\r\n\r\n", h1.ParseError),
        (b"GET /ping HTTP/1.1\r\nBad Header: x\r\n\r\n", h1.ParseError),
        (b"GET /ping HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", h1.ParseError),
    ],
)
def test_the_python_request_parser_refuses_as_the_c_one(
    data: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        h1._parse_request(data)
    with pytest.raises(error):
        gunicorn_h1c.parse_request(data)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", h1.IncompleteError),
        (b"HTTP/1.1 2000 OK\r\n\r\n", h1.ParseError),
        (b"garbage\r\n\r\n", h1.ParseError),
    ],
)
def test_the_python_response_parser_refuses_as_the_c_one(
    data: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        h1._parse_response(data)
    with pytest.raises(error):
        gunicorn_h1c.parse_response(data)
