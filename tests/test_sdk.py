"""The SageMaker Python SDK's own serializers and deserializers against the real server.

v3 (``sagemaker-core`` 2.x) for CSV, JSON, JSON Lines and NumPy; v2 (``sagemaker<3``) for
RecordIO-protobuf, whose v3 classes are stubs. Each SDK gets its own environment, built
once per run with uv (seconds; pip takes half a minute each): the two cannot share one, and
both pin protobuf below 7, which this project's environment has.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from uv import find_uv_bin

from tests.server import ServerProcess
from tests.wire import run_onnxruntime

HERE = Path(__file__).parent
CLIENT = HERE / "sdk_client.py"
SDKS = {"v2": "sagemaker==2.257.7", "v3": "sagemaker-core==2.27.0"}
X = np.random.default_rng(17).normal(size=(6, 4)).astype(np.float32)


def build_sdk(root: Path, version: str) -> Path:
    uv = find_uv_bin()
    venv = root / f"sdk-{version}"
    python = venv / "bin" / "python"
    # uv's own TLS roots do not include this machine's CA; the system store does.
    environ = {**os.environ, "UV_NATIVE_TLS": "1"}
    subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(venv)], check=True, env=environ)
    install = [uv, "pip", "install", "-q", "-p", str(python), SDKS[version]]
    subprocess.run(install, check=True, env=environ, timeout=600)
    return python


@pytest.fixture(scope="module")
def sdk_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sdk")


def run_client(python: Path, server: ServerProcess, cases: list[dict[str, Any]]) -> list[Any]:
    result = subprocess.run(
        [str(python), str(CLIENT), server.url("/invocations")],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers: list[Any] = json.loads(result.stdout)
    return answers


def as_array(deserializer: str, value: Any) -> np.ndarray:
    """The SDK's deserialized value as the linear model's outputs, [rows, 3]."""
    if deserializer == "json":
        return np.array(value["predictions"], np.float32)
    if deserializer == "jsonlines":
        return np.array([line["predictions"] for line in value], np.float32)
    if deserializer == "csv":  # lists of strings
        return np.array(value, np.float64).astype(np.float32)
    if deserializer == "record":  # labels by output name, per row
        return np.array([record["y"] for record in value], np.float32)
    return np.array(value, np.float32)


V3_CASES = [
    ("csv", "list", "csv"),
    ("csv", "float32", "json"),
    ("json", "list", "json"),
    ("json", "float32", "npy"),
    ("jsonlines", "list", "jsonlines"),
    ("npy", "float32", "npy"),
    ("npy", "float64", "csv"),
]
V2_CASES = [
    ("record", "float32", "record"),
    ("record", "float64", "json"),
    ("csv", "list", "record"),
]


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("version", "cases"), [("v3", V3_CASES), ("v2", V2_CASES)])
def test_sdk_round_trips(
    sdk_root: Path,
    linear_server: ServerProcess,
    linear_model: Path,
    version: str,
    cases: list[tuple[str, str, str]],
) -> None:
    python = build_sdk(sdk_root, version)
    requests = [
        {"serializer": s, "dtype": dtype, "deserializer": d, "data": X.tolist()}
        for s, dtype, d in cases
    ]
    expected = run_onnxruntime(linear_model, {"x": X})["y"]
    for (serializer, dtype, deserializer), answer in zip(
        cases, run_client(python, linear_server, requests), strict=True
    ):
        case = f"{version} {serializer} ({dtype}) -> {deserializer}"
        assert answer["status"] == 200, case
        assert ";" not in answer["content_type"], case
        got = as_array(deserializer, answer["value"])
        np.testing.assert_array_equal(got, expected, err_msg=case)
