"""The Flask example, end to end: ``serving serve --flask-app predictor:app``, and the same
app under a gunicorn of its own (``wsgi.py``, ``gunicorn_conf.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.server import (
    ServerProcess,
    clean_environ,
    free_port,
    launch,
    running_server,
    wait_until_healthy,
)
from tests.wire import assert_same_outputs, decode_response, npy_bytes, run_onnxruntime

HERE = Path(__file__).parent
IRIS = HERE.parent / "iris"
MODEL = IRIS / "model" / "model.onnx"
FLOWERS = np.array([[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5]], np.float32)
REQUESTS = {
    "application/json": json.dumps({"instances": FLOWERS.tolist()}).encode(),
    "text/csv": "".join(",".join(map(str, row)) + "\n" for row in FLOWERS.tolist()).encode(),
    "application/x-npy": npy_bytes(FLOWERS),
}
FLASK_APP = {"PYTHONPATH": str(HERE)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("flask_byo") / "server.log"
    arguments = ["--model-dir", str(MODEL.parent), "--flask-app", "predictor:app"]
    with running_server(arguments, log, FLASK_APP) as server:
        yield server


def check_predictions(server: ServerProcess) -> None:
    expected = run_onnxruntime(MODEL, {"features": FLOWERS})
    for content_type, body in REQUESTS.items():
        for accept in ("application/json", "text/csv"):
            response = server.post(
                "/invocations", body, {"Content-Type": content_type, "Accept": accept}
            )
            assert response.status_code == 200, response.text
            assert response.headers["Content-Type"] == accept
            got = decode_response(accept, response.content, expected)
            assert_same_outputs(got, expected, same_kind=accept != "text/csv")


def test_the_server_answers_invocations(server: ServerProcess) -> None:
    check_predictions(server)
    refused = server.post("/invocations", b"5.1", {"Content-Type": "text/plain"})
    assert refused.status_code == 415
    assert "text/plain" in refused.json()["error"]
    two_outputs = server.post(
        "/invocations",
        REQUESTS["text/csv"],
        {
            "Content-Type": "text/csv",
            "Accept": "application/x-npy",
        },
    )
    assert two_outputs.status_code == 406


def test_ping_and_execution_parameters_are_the_servers(server: ServerProcess) -> None:
    ping = server.get("/ping")
    assert (ping.status_code, ping.content) == (200, b"")
    parameters = server.get("/execution-parameters").json()
    assert parameters["BatchStrategy"] == "MULTI_RECORD"


def test_the_apps_own_routes_are_flasks(server: ServerProcess) -> None:
    assert server.get("/metadata").json() == {
        "model": "iris",
        "version": "1",
        "classes": ["setosa", "versicolor", "virginica"],
    }
    accepted = server.post(
        "/feedback",
        b'{"id": 7, "label": "virginica"}',
        {
            "Content-Type": "application/json",
        },
    )
    assert (accepted.status_code, accepted.json()) == (202, {"received": "virginica"})
    assert server.post("/feedback", b'{"label": "rose"}', {}).status_code == 400
    missing = server.get("/nowhere")
    assert missing.status_code == 404
    assert missing.headers["Content-Type"].startswith("text/html")  # Flask's own page
    server.wait_for_log('feedback {"id": 7, "label": "virginica"}')


def test_a_model_that_cannot_load_still_stops_the_server(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.onnx").write_bytes(b"not an onnx model")
    log = tmp_path / "server.log"
    process, _ = launch(
        ["--model-dir", str(model_dir), "--flask-app", "predictor:app"], log, FLASK_APP
    )
    try:
        returncode = process.wait(timeout=60)
    finally:
        process.kill()
    assert returncode == 3
    assert "cannot load the model" in log.read_text()


def test_the_app_under_a_gunicorn_of_its_own(tmp_path: Path) -> None:
    port = free_port()
    environ = clean_environ(
        {
            "SAGEMAKER_BASE_DIR": str(IRIS),  # its model/ folder
            "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
            "SERVING_INFERENCE_THREADS": "1",
            "BIND": f"127.0.0.1:{port}",
        }
    )
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn_conf.py", "wsgi:application"]
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=HERE, env=environ, stdout=output, stderr=subprocess.STDOUT
        )
    server = ServerProcess(process, port, log)
    try:
        wait_until_healthy(server)
        check_predictions(server)
        assert server.get("/metadata").json()["model"] == "iris"
    finally:
        assert server.stop() == 0
