"""The server as a process: the CLI, startup failures, and a clean stop on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
import requests

from tests.server import clean_environ, launch, running_server


def run_cli(
    *arguments: str, environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serving", *arguments],
        capture_output=True,
        text=True,
        env=clean_environ(environ),
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("arguments", "environ", "message"),
    [
        ((), {"SAGEMAKER_BIND_TO_PORT": "eighty"}, "invalid SAGEMAKER_BIND_TO_PORT='eighty'"),
        (("--port", "99999"), {}, "invalid --port '99999'"),
        ((), {"SERVING_HANDLER": "nonsense"}, "unknown handler 'nonsense'; known handlers: "),
        (("--handler", "nowhere.at_all:Handler"), {}, "module 'nowhere.at_all' not found"),
        (("--timeout", "-5"), {}, "invalid --timeout '-5'"),
        (("--model-dir", "/nonexistent/model"), {}, "model directory /nonexistent/model does not"),
        (("--model-dir", str(Path(__file__))), {}, "test_process.py is a file, not a folder"),
        (
            ("--model-dir", str(Path(__file__).parent.parent / "examples" / "iris" / "model")),
            {"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "image/gif"},
            "invalid SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT='image/gif' (or --default-accept): "
            "no codec writes it; they write application/json,",
        ),
    ],
)
def test_invalid_settings_exit_non_zero_naming_them(
    arguments: tuple[str, ...], environ: dict[str, str], message: str
) -> None:
    result = run_cli("serve", *arguments, environ=environ)
    assert result.returncode == 2
    assert message in result.stderr


def test_help_lists_every_variable() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    assert "SAGEMAKER_MODEL_SERVER_WORKERS" in result.stdout
    assert "--log-pings" in result.stdout
    assert "--port PORT" in result.stdout  # values by name
    assert "VALUE" not in result.stdout


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"serving {version('sagemaker-onnx-serving')}"


def test_a_port_in_use_is_one_line_and_exit_status_1() -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = run_cli(
            "serve", "--host", "127.0.0.1", "--port", str(port), "--model-dir", str(IRIS.parent)
        )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"serving: error: port {port} is in use (127.0.0.1:{port}): another process listens "
        "on it; stop it or choose another port (--port, or SAGEMAKER_BIND_TO_PORT)"
    ]
    assert time.monotonic() - started < 5  # not gunicorn's five retries, a second apart


def test_access_lines_come_before_the_stop(tmp_path: Path) -> None:
    """A quiet worker writes a request's access line at once, so it precedes the master's
    SIGTERM line and the worker's own later lines."""
    with running_server(["--model-dir", str(IRIS.parent)], tmp_path / "server.log") as server:
        answered = server.post(
            "/invocations", b"[[1, 2, 3, 4]]", {"Content-Type": "application/json"}
        )
        assert answered.status_code == 200
        time.sleep(0.05)  # well under the 0.2 s at which pending lines are written anyway
        assert server.stop() == 0
    lines = server.log().splitlines()
    access = next(i for i, line in enumerate(lines) if '"POST /invocations HTTP/1.1" 200' in line)
    stop = next(i for i, line in enumerate(lines) if "Handling signal: term" in line)
    assert access < stop, "\n".join(lines)


def test_the_configuration_line_reads_as_a_user_writes_values(tmp_path: Path) -> None:
    with running_server(["--model-dir", str(IRIS.parent)], tmp_path / "server.log") as server:
        line = next(line for line in server.log().splitlines() if "configuration:" in line)
    for shown in ("providers=auto ", "codec_plugins=all ", "log_level=INFO ", "batch=false "):
        assert shown in line + " "
    assert "(" not in line.split("configuration:", 1)[1]  # no Python reprs


IRIS = Path(__file__).parent.parent / "examples" / "iris" / "model" / "model.onnx"


@pytest.mark.parametrize(
    ("files", "environ", "message"),
    [
        ({}, {}, "no *.onnx file in"),
        ({"model.onnx": b"not a model"}, {}, "onnxruntime cannot load"),
        ({"a.onnx": b"", "b.onnx": b""}, {}, "2 *.onnx files"),
        (
            {"model.onnx": IRIS.read_bytes()},
            {"SERVING_PROVIDERS": "CUDAExecutionProvider"},
            "execution providers CUDAExecutionProvider are not available",
        ),
    ],
)
def test_a_model_that_cannot_load_stops_the_server(
    tmp_path: Path, files: dict[str, bytes], environ: dict[str, str], message: str
) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name, content in files.items():
        (model_dir / name).write_bytes(content)
    log = tmp_path / "server.log"
    process, _ = launch(["--model-dir", str(model_dir)], log, environ)
    try:
        returncode = process.wait(timeout=60)
    finally:
        process.kill()
    assert returncode != 0
    text = log.read_text()
    assert "cannot load the model" in text
    assert message in text
    assert "Traceback" not in text  # the reason, on one line, is enough


def test_sigterm_lets_in_flight_requests_finish(failing_model: Path, tmp_path: Path) -> None:
    """SIGTERM during a slow request: the request completes and the server exits 0 promptly,
    though the client keeps its connection open afterwards, as SageMaker's front end does."""
    arguments = ["--model-dir", str(failing_model.parent), "--graceful-timeout", "20"]
    with running_server(arguments, tmp_path / "server.log") as server, requests.Session() as kept:
        results: list[int] = []

        def slow_request() -> None:
            def body() -> Iterator[bytes]:
                yield b"[1, 2, "
                time.sleep(1.0)  # the request is in flight when SIGTERM arrives
                yield b"3, 4]"

            response = kept.post(
                server.url("/invocations"),
                data=body(),
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
            results.append(response.status_code)

        client = threading.Thread(target=slow_request)
        client.start()
        time.sleep(0.3)
        started = time.monotonic()
        returncode = server.stop()
        client.join(timeout=30)
        assert results == [200]
        assert returncode == 0
        assert time.monotonic() - started < 10


def test_idle_keep_alive_connections_do_not_delay_the_stop(tmp_path: Path) -> None:
    """SageMaker keeps connections open; a stop must not wait out their keep-alive."""
    arguments = ["--model-dir", str(IRIS.parent), "--graceful-timeout", "20"]
    with running_server(arguments, tmp_path / "server.log") as server:
        idle = requests.Session()
        response = idle.post(
            server.url("/invocations"),
            data=b"[[1, 2, 3, 4]]",
            headers={"Content-Type": "application/json"},
        )
        assert response.headers["Connection"] == "keep-alive"
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 5
        idle.close()
    assert "ERROR" not in server.log()  # closing it is not a socket error


def test_a_connection_gunicorn_served_is_idle_after_its_answer(tmp_path: Path) -> None:
    """A chunked request is gunicorn's to serve; its connection, kept open, does not delay the
    stop either."""
    arguments = ["--model-dir", str(IRIS.parent), "--graceful-timeout", "20"]
    with running_server(arguments, tmp_path / "server.log") as server, requests.Session() as idle:
        response = idle.post(
            server.url("/invocations"),
            data=iter([b"[[1, 2, 3, 4]]"]),  # no length: sent chunked
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 200
        assert response.headers["Connection"] == "keep-alive"
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 5


def test_a_request_arriving_as_the_stop_begins_is_answered(tmp_path: Path) -> None:
    arguments = ["--model-dir", str(IRIS.parent), "--graceful-timeout", "20"]
    with running_server(arguments, tmp_path / "server.log") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
            conn.sendall(
                b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            )
            time.sleep(0.2)  # the worker has read the first header lines
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)  # past the moment idle connections are closed
            conn.sendall(b"Content-Length: 14\r\n\r\n[[1, 2, 3, 4]]")
            reply = b"".join(iter(lambda: conn.recv(65536), b""))
        assert reply.startswith(b"HTTP/1.1 200"), reply
        assert server.process.wait(timeout=10) == 0
