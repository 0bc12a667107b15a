"""An inference pipeline: two servers in series, the first one's response fed to the second
with its response Content-Type verbatim, as SageMaker does, each on the port
``SAGEMAKER_BIND_TO_PORT`` names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests import models
from tests.server import ServerProcess, free_port, running_server
from tests.wire import decode_response, npy_bytes, run_onnxruntime

PIPELINE_ENVIRON = {"SAGEMAKER_SAFE_PORT_RANGE": "20000-20999"}


@pytest.fixture(scope="module")
def softmax_model(model_root: Path) -> Path:
    return models.softmax(model_root / "softmax" / "model.onnx")


def container(model: Path, log: Path, **environ: str) -> Iterator[ServerProcess]:
    environ = {**PIPELINE_ENVIRON, "SAGEMAKER_BIND_TO_PORT": str(free_port()), **environ}
    with running_server(["--model-dir", str(model.parent)], log, environ) as server:
        yield server


@pytest.fixture(
    scope="module",
    params=[
        "text/csv",
        "application/json",
        "application/jsonlines",
        "application/x-npy",
        "application/x-recordio-protobuf",
    ],
)
def first(
    request: pytest.FixtureRequest, linear_model: Path, model_root: Path
) -> Iterator[ServerProcess]:
    media_type: str = request.param
    log = model_root / f"first-{media_type.replace('/', '-')}.log"
    yield from container(linear_model, log, SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT=media_type)


@pytest.fixture(scope="module")
def second(softmax_model: Path, model_root: Path) -> Iterator[ServerProcess]:
    yield from container(softmax_model, model_root / "second.log")


def test_two_containers_in_series(
    first: ServerProcess, second: ServerProcess, linear_model: Path, softmax_model: Path
) -> None:
    x = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
    # The platform sends the client's request to the first container without an Accept of
    # its own: the container's default response type (set for the pipeline) applies.
    hop = first.post("/invocations", npy_bytes(x), {"Content-Type": "application/x-npy"})
    assert hop.status_code == 200, hop.text
    assert ";" not in hop.headers["Content-Type"]  # bare: it is the next Content-Type
    final = second.post(
        "/invocations",
        hop.content,
        {"Content-Type": hop.headers["Content-Type"], "Accept": "application/x-npy"},
    )
    assert final.status_code == 200, final.text
    middle = run_onnxruntime(linear_model, {"x": x})["y"]
    expected = run_onnxruntime(softmax_model, {"x": middle})
    got = decode_response("application/x-npy", final.content, expected)
    np.testing.assert_allclose(got["probabilities"], expected["probabilities"], rtol=1e-5)


def test_only_the_bind_port_is_opened(first: ServerProcess) -> None:
    """SAGEMAKER_SAFE_PORT_RANGE is where a second port would have to go: there is none."""
    assert listening_ports(first) == {first.port}


def listening_ports(server: ServerProcess) -> set[int]:
    """TCP ports the server's processes listen on (Linux /proc)."""
    inodes = {f[8:-1] for f in server.open_files() if f.startswith("socket:[")}
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
