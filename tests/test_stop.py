"""How the server ends: a model that cannot load, a stop while a model loads, and a graceful
stop that runs out of time."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from serving.cli import EXIT_STATUSES
from tests.server import launch, running_server

WORKER_BOOT_ERROR = 3


def model_dir_with_code(root: Path, linear_model: Path, source: str) -> Path:
    model_dir = root / "model"
    (model_dir / "code").mkdir(parents=True)
    shutil.copy(linear_model, model_dir / "model.onnx")
    (model_dir / "code" / "inference.py").write_text(source)
    return model_dir


def wait_for_file(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} not written within {timeout} s"
        time.sleep(0.05)


def exit_status_and_log(arguments: list[str], log: Path) -> tuple[int, str]:
    process, _ = launch(arguments, log)
    try:
        returncode = process.wait(timeout=60)
    finally:
        process.kill()
    return returncode, log.read_text()


@pytest.mark.parametrize("run", range(5))
def test_a_model_that_cannot_load_in_two_workers_ends_the_same_way(
    tmp_path: Path, run: int
) -> None:
    """Both workers fail at about the same time: the second failure, reaped while the server
    stops for the first, must not stop it again (a traceback and another exit status)."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.onnx").write_bytes(b"not a model")
    arguments = ["--model-dir", str(model_dir), "--workers", "2"]
    returncode, log = exit_status_and_log(arguments, tmp_path / "server.log")
    assert returncode == WORKER_BOOT_ERROR, log
    assert "could not load the model" in EXIT_STATUSES[returncode]  # as --help says
    assert "cannot load the model: onnxruntime cannot load" in log
    assert "Traceback" not in log


# One worker fails at once; the other fails a moment later, while the server is stopping.
FAILS_ONE_AFTER_THE_OTHER = """
import os
import time

def model_fn(model_dir):
    try:
        os.close(os.open(os.path.join(model_dir, "first"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        time.sleep(1.0)
    raise RuntimeError("weights.bin is missing")
"""


def test_a_worker_failing_while_the_server_stops_does_not_stop_it_again(
    tmp_path: Path, linear_model: Path
) -> None:
    model_dir = model_dir_with_code(tmp_path, linear_model, FAILS_ONE_AFTER_THE_OTHER)
    arguments = ["--model-dir", str(model_dir), "--workers", "2"]
    started = time.monotonic()
    returncode, log = exit_status_and_log(arguments, tmp_path / "server.log")
    assert returncode == WORKER_BOOT_ERROR, log
    assert "model_fn raised RuntimeError: weights.bin is missing" in log
    assert "Traceback" not in log
    assert time.monotonic() - started < 15


# One worker loads at once; the other takes a minute.
ONE_SLOW_TO_LOAD = """
import os
import time

def model_fn(model_dir):
    try:
        os.close(os.open(os.path.join(model_dir, "first"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        open(os.path.join(model_dir, "loading"), "w").close()
        time.sleep(60)
    return lambda data: data
"""


def test_a_stop_while_a_worker_loads_its_model_is_prompt(
    tmp_path: Path, linear_model: Path
) -> None:
    model_dir = model_dir_with_code(tmp_path, linear_model, ONE_SLOW_TO_LOAD)
    arguments = ["--model-dir", str(model_dir), "--workers", "2", "--graceful-timeout", "10"]
    with running_server(arguments, tmp_path / "server.log") as server:
        wait_for_file(model_dir / "loading")
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 3
    assert "ERROR" not in server.log()


SLOW_PREDICT = """
import os
import time

def predict_fn(data, model):
    open(os.path.join(os.path.dirname(__file__), "predicting"), "w").close()
    time.sleep(5)
    return data
"""


def test_a_graceful_stop_that_cuts_requests_says_how_many(
    tmp_path: Path, linear_model: Path
) -> None:
    model_dir = model_dir_with_code(tmp_path, linear_model, SLOW_PREDICT)
    arguments = ["--model-dir", str(model_dir), "--graceful-timeout", "1"]
    with running_server(arguments, tmp_path / "server.log") as server:
        failures: list[Exception] = []

        def slow_request() -> None:
            try:
                server.post("/invocations", b"[[1, 2, 3, 4]]", {"Content-Type": "application/json"})
            except requests.ConnectionError as exc:
                failures.append(exc)

        client = threading.Thread(target=slow_request)
        client.start()
        wait_for_file(model_dir / "code" / "predicting")
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=10) == 0
        assert time.monotonic() - started < 3
        client.join(timeout=10)
        assert len(failures) == 1  # the request was cut: no answer
    assert "ERROR [" in server.wait_for_log("graceful stop cut 1 request in flight")
