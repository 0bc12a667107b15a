"""The iris example: the committed model is what build_model.py builds, and it serves."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.server import ServerProcess, running_server
from tests.wire import assert_same_outputs, decode_response, npy_bytes, run_onnxruntime

HERE = Path(__file__).parent
MODEL = HERE / "model" / "model.onnx"
# one flower of each species, as in the README's curl calls
FLOWERS = np.array([[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5]], np.float32)


def test_committed_model_is_the_built_one() -> None:
    from build_model import build  # examples/iris is on sys.path: pytest's rootdir insertion

    assert onnx.load(MODEL).SerializeToString() == build().SerializeToString()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("iris") / "server.log"
    with running_server(["--model-dir", str(MODEL.parent)], log) as server:
        yield server


REQUESTS = {
    "text/csv": "".join(",".join(map(str, row)) + "\n" for row in FLOWERS.tolist()).encode(),
    "application/json": json.dumps({"instances": FLOWERS.tolist()}).encode(),
    "application/jsonlines": "".join(json.dumps(row) + "\n" for row in FLOWERS.tolist()).encode(),
    "application/x-npy": npy_bytes(FLOWERS),
}


@pytest.mark.parametrize("accept", ["application/json", "text/csv", "application/jsonlines"])
@pytest.mark.parametrize("content_type", REQUESTS)
def test_classifies_one_flower_of_each_species(
    server: ServerProcess, content_type: str, accept: str
) -> None:
    response = server.post(
        "/invocations", REQUESTS[content_type], {"Content-Type": content_type, "Accept": accept}
    )
    assert response.status_code == 200, response.text
    expected = run_onnxruntime(MODEL, {"features": FLOWERS})
    got = decode_response(accept, response.content, expected)
    assert_same_outputs(got, expected, same_kind=accept != "text/csv")
    assert got["label"].tolist() == [0, 1, 2]
