"""The inference.py example, served by the real server: every hook runs, context included."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.server import ServerProcess, running_server
from tests.wire import run_onnxruntime

HERE = Path(__file__).parent
MODEL_DIR = HERE / "model"
FLOWERS = [[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5]]


def test_committed_model_is_the_built_one() -> None:
    from build_scaled_model import build, scaler

    assert (MODEL_DIR / "model.onnx").read_bytes() == build().SerializeToString()
    assert json.loads((MODEL_DIR / "scaler.json").read_text()) == scaler()
    onnx.checker.check_model(onnx.load(MODEL_DIR / "model.onnx"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # No --handler: the server finds code/inference.py and picks the inference_py handler.
    log = tmp_path_factory.mktemp("inference_py") / "server.log"
    with running_server(["--model-dir", str(MODEL_DIR)], log) as server:
        yield server


def test_json_in_json_out(server: ServerProcess) -> None:
    response = server.post(
        "/invocations",
        json.dumps({"flowers": FLOWERS}).encode(),
        {"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Amzn-SageMaker-Custom-Attributes"] == "labels=iris-v1"
    document = response.json()
    assert document["species"] == ["setosa", "versicolor", "virginica"]
    scale = json.loads((MODEL_DIR / "scaler.json").read_text())
    standardized = (np.array(FLOWERS) - scale["mean"]) / scale["scale"]
    expected = run_onnxruntime(
        MODEL_DIR / "model.onnx", {"standardized": standardized.astype(np.float32)}
    )
    np.testing.assert_array_equal(
        np.array(document["probabilities"], np.float32), expected["probabilities"]
    )


def test_csv_in_csv_out(server: ServerProcess) -> None:
    body = "".join(",".join(map(str, row)) + "\n" for row in FLOWERS).encode()
    response = server.post("/invocations", body, {"Content-Type": "text/csv", "Accept": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "text/csv"
    assert response.text == "setosa\nversicolor\nvirginica\n"


def test_unreadable_type_gets_the_status_the_hook_chose(server: ServerProcess) -> None:
    response = server.post("/invocations", b"\x93NUMPY", {"Content-Type": "application/x-npy"})
    assert response.status_code == 415
    assert response.json() == {
        "error": "input_fn raised UnsupportedFormat: cannot read application/x-npy; "
        "send text/csv or application/json"
    }
    assert server.get("/ping").status_code == 200
