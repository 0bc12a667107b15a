"""The inference.py adapter against the real server: each hook, its fallback, its errors."""

from __future__ import annotations

import io
import json
import shutil
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.server import ServerProcess, launch, running_server
from tests.wire import run_onnxruntime

X = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.5]], np.float32)
JSON = {"Content-Type": "application/json"}
CUSTOM = "X-Amzn-SageMaker-Custom-Attributes"


def model_dir_with_code(root: Path, linear_model: Path, source: str) -> Path:
    model_dir = root / "model"
    (model_dir / "code").mkdir(parents=True)
    shutil.copy(linear_model, model_dir / "model.onnx")
    (model_dir / "code" / "inference.py").write_text(textwrap.dedent(source))
    return model_dir


ServeCode = Callable[[str], ServerProcess]


@pytest.fixture(scope="module")
def serve_code(tmp_path_factory: pytest.TempPathFactory, linear_model: Path) -> Iterator[ServeCode]:
    """Start real servers on model directories holding ``source`` as code/inference.py."""
    with ExitStack() as servers:

        def start(source: str) -> ServerProcess:
            root = tmp_path_factory.mktemp("code")
            model_dir = model_dir_with_code(root, linear_model, source)
            arguments = ["--model-dir", str(model_dir)]
            return servers.enter_context(running_server(arguments, root / "server.log"))

        yield start


TRANSFORM_ONLY = """
    import json
    import numpy as np

    def transform_fn(model, input_data, content_type, accept, context):
        rows = np.array(json.loads(input_data), dtype=np.float32)
        (y,) = model.run(None, {"x": rows})
        seen = context.get_request_header(0, "x-amzn-sagemaker-custom-attributes")
        context.custom_attributes = f"was={seen}"
        body = json.dumps({"y": y.tolist(), "content_type": content_type, "accept": accept})
        return body.encode(), "application/vnd.example+json"
"""


@pytest.fixture(scope="module")
def transform_server(serve_code: ServeCode) -> ServerProcess:
    return serve_code(TRANSFORM_ONLY)


def test_transform_fn_does_everything(transform_server: ServerProcess, linear_model: Path) -> None:
    response = transform_server.post(
        "/invocations",
        json.dumps(X.tolist()).encode(),
        {
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/x-anything",
            CUSTOM: "a=1",
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/vnd.example+json"
    assert response.headers[CUSTOM] == "was=a=1"
    document = response.json()
    assert (document["content_type"], document["accept"]) == (
        "application/json",
        "application/x-anything",
    )
    expected = run_onnxruntime(linear_model, {"x": X})["y"]
    np.testing.assert_array_equal(np.array(document["y"], np.float32), expected)


def test_with_transform_fn_any_type_is_taken_and_star_accept_gets_the_default(
    transform_server: ServerProcess,
) -> None:
    response = transform_server.post(
        "/invocations",
        json.dumps(X.tolist()).encode(),
        {"Content-Type": "text/x-custom", "Accept": "*/*"},
    )
    assert response.status_code == 200
    assert response.json()["accept"] == "application/json"


INPUT_FN_ONLY = """
    import json

    def input_fn(input_data, content_type):
        if content_type == "application/json":
            return json.loads(input_data)  # the toolkit habit: a dict of lists
        # "a;b;c;d" lines: a format no codec knows
        return [[float(v) for v in line.split(";")] for line in input_data.decode().splitlines()]
"""


def test_input_fn_alone_falls_back_to_onnx_and_the_codecs(
    serve_code: ServeCode, linear_model: Path
) -> None:
    server: ServerProcess = serve_code(INPUT_FN_ONLY)
    body = "\n".join(";".join(map(str, row)) for row in X.tolist()).encode()
    expected = run_onnxruntime(linear_model, {"x": X})["y"]
    response = server.post(
        "/invocations",
        body,
        {"Content-Type": "text/x-semicolons", "Accept": "text/csv;q=0.5, application/x-npy"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/x-npy"  # our encoder, by q-value
    np.testing.assert_array_equal(np.load(io.BytesIO(response.content)), expected)
    # the ONNX fallback still checks the input against the model
    response = server.post("/invocations", b"1;2;3", {"Content-Type": "text/x-semicolons"})
    assert response.status_code == 400
    assert "dimension 1 must be 4" in response.json()["error"]
    # what input_fn returns as plain JSON (a dict of lists) reaches the model too
    named = json.dumps({"x": X.tolist()}).encode()
    response = server.post("/invocations", named, {"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(np.array(response.json()["predictions"], np.float32), expected)
    # and our encoders still refuse what they cannot write
    response = server.post(
        "/invocations", body, {"Content-Type": "text/x-semicolons", "Accept": "image/gif"}
    )
    assert response.status_code == 406


PREDICT_AND_OUTPUT = """
    import json
    import numpy as np
    import onnxruntime

    def predict_fn(data, model, context):
        assert isinstance(model, onnxruntime.InferenceSession)  # no model_fn: the ONNX session
        assert context.system_properties["model_dir"].endswith("model")
        (y,) = model.run(None, {"x": data.astype(np.float32)})
        return y * 2

    def output_fn(prediction, accept):
        return json.dumps({"doubled": prediction.tolist(), "accept": accept})
"""


def test_predict_and_output_fn_with_the_default_model_and_decoders(
    serve_code: ServeCode, linear_model: Path
) -> None:
    server: ServerProcess = serve_code(PREDICT_AND_OUTPUT)
    body = "".join(",".join(map(str, row)) + "\n" for row in X.tolist()).encode()
    response = server.post(
        "/invocations",
        body,
        {"Content-Type": "text/csv", "Accept": "text/plain;q=0.9, application/x-thing;q=0.1"},
    )
    assert response.status_code == 200, response.text
    assert (
        response.headers["Content-Type"] == "text/plain"
    )  # output_fn returned no type: the accepted one
    expected = run_onnxruntime(linear_model, {"x": X})["y"] * 2
    np.testing.assert_array_equal(np.array(response.json()["doubled"], np.float32), expected)
    # without input_fn, an unknown Content-Type is refused before any hook runs
    response = server.post("/invocations", body, {"Content-Type": "text/plain"})
    assert response.status_code == 415


FAILING_HOOKS = """
    import json

    class Teapot(Exception):
        status_code = 418

        def __init__(self):
            self.message = "short and stout"

    def input_fn(input_data, content_type):  # a JSON body comes as str, as in the toolkit
        if input_data == "bad input":
            raise ValueError("cannot parse that")
        if input_data == "teapot":
            raise Teapot()
        return json.loads(input_data)

    def predict_fn(data, model):
        if data == "fail in predict":
            raise RuntimeError("predict broke")
        return {"echo": [len(str(data))]}

    def output_fn(prediction, accept):
        if accept == "application/x-fail":
            raise KeyError("no such format")
        if accept == "application/x-wrong":
            return {1, 2}  # neither bytes, str nor JSON
        return json.dumps(prediction)
"""


@pytest.fixture(scope="module")
def failing_hooks_server(serve_code: ServeCode) -> ServerProcess:
    return serve_code(FAILING_HOOKS)


@pytest.mark.parametrize(
    ("body", "accept", "status", "message"),
    [
        (b"bad input", "*/*", 500, "input_fn raised ValueError: cannot parse that"),
        (b"teapot", "*/*", 418, "input_fn raised Teapot: short and stout"),
        (b'"fail in predict"', "*/*", 500, "predict_fn raised RuntimeError: predict broke"),
        (b"[1]", "application/x-fail", 500, "output_fn raised KeyError: 'no such format'"),
        (
            b"[1]",
            "application/x-wrong",
            500,
            "output_fn returned set, which is neither bytes, str nor JSON: "
            "Object of type set is not JSON serializable",
        ),
    ],
)
def test_errors_raised_in_each_hook(
    failing_hooks_server: ServerProcess, body: bytes, accept: str, status: int, message: str
) -> None:
    server = failing_hooks_server
    headers = {"Content-Type": "application/json", "Accept": accept}
    response = server.post("/invocations", body, headers)
    assert response.status_code == status
    assert response.json() == {"error": message}
    assert server.post("/invocations", b"[1, 2]", JSON).json() == {"echo": [6]}


CALLABLE_MODEL = """
    import numpy as np

    def model_fn(model_dir):
        def model(data):
            if data.shape[1] != 2:
                raise ValueError(f"want 2 columns, got {data.shape[1]}")
            return {"sum": data.sum(axis=1)}
        return model
"""


def test_a_callable_model_without_predict_fn(serve_code: ServeCode) -> None:
    server = serve_code(CALLABLE_MODEL)
    response = server.post("/invocations", b"1,2\n3,4\n", {"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.json() == {"sum": [3.0, 7.0]}  # the toolkit's encoder: bare JSON
    response = server.post("/invocations", b"1,2,3\n4,5,6\n", {"Content-Type": "text/csv"})
    assert response.status_code == 500
    assert response.json() == {
        "error": "the model from model_fn raised ValueError: want 2 columns, got 3"
    }


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def model_fn(model_dir):\n    raise FileNotFoundError('weights.bin is missing')\n",
         "model_fn raised FileNotFoundError: weights.bin is missing"),
        ("import json\n\ndef input_fn(data, content_type)\n    return data\n",
         "failed to import (inference.py line 3): SyntaxError"),
        ("import not_installed_anywhere\n",
         "failed to import (inference.py line 1): ModuleNotFoundError"),
        ("def transform_fn(model, data, ct, accept):\n    return data\n\n"
         "def input_fn(data, ct):\n    return data\n",
         "defines transform_fn and input_fn"),
    ],
)  # fmt: skip
def test_user_code_that_cannot_load_stops_the_server(
    tmp_path: Path, linear_model: Path, source: str, message: str
) -> None:
    model_dir = model_dir_with_code(tmp_path, linear_model, source)
    process, _ = launch(["--model-dir", str(model_dir)], tmp_path / "server.log")
    try:
        returncode = process.wait(timeout=60)
    finally:
        process.kill()
    assert returncode != 0
    log = (tmp_path / "server.log").read_text()
    assert message in log, log


def test_explicit_onnx_handler_ignores_the_code(tmp_path: Path, linear_model: Path) -> None:
    model_dir = model_dir_with_code(tmp_path, linear_model, "raise SystemExit('never imported')\n")
    arguments = ["--model-dir", str(model_dir), "--handler", "onnx"]
    with running_server(arguments, tmp_path / "server.log") as server:
        response = server.post("/invocations", json.dumps(X.tolist()).encode(), JSON)
        assert response.status_code == 200


def test_program_and_code_dir_settings(tmp_path: Path, linear_model: Path) -> None:
    model_dir = model_dir_with_code(tmp_path, linear_model, "")
    code = tmp_path / "elsewhere"
    code.mkdir()
    (code / "helpers.py").write_text("SUFFIX = b'!'\n")
    (code / "serve_me.py").write_text(
        "from helpers import SUFFIX\n\n"
        "def transform_fn(model, data, content_type, accept):\n    return data + SUFFIX\n"
    )
    environ = {"SAGEMAKER_SUBMIT_DIRECTORY": str(code), "SAGEMAKER_PROGRAM": "serve_me.py"}
    with running_server(
        ["--model-dir", str(model_dir)], tmp_path / "server.log", environ
    ) as server:
        response = server.post("/invocations", b"hello", {"Content-Type": "text/plain"})
        assert response.content == b"hello!"


BUSY = """
    import json
    import time

    def busy():
        end = time.perf_counter() + 1.0
        while time.perf_counter() < end:  # pure Python, holding the GIL
            pass
"""
BUSY_HOOKS = {
    "predict_fn": "def predict_fn(data, model):\n    busy()\n    return data\n",
    "input_fn": "def input_fn(body, content_type):\n    busy()\n    return json.loads(body)\n",
    "output_fn": "def output_fn(prediction, accept):\n    busy()\n    return b'done', accept\n",
}


@pytest.mark.parametrize("hook", BUSY_HOOKS)
def test_slow_user_code_does_not_hold_up_ping(serve_code: ServeCode, hook: str) -> None:
    server = serve_code(textwrap.dedent(BUSY) + BUSY_HOOKS[hook])
    slow = threading.Thread(
        target=server.post, args=("/invocations", b"[[1, 2, 3, 4]]", JSON), daemon=True
    )
    slow.start()
    time.sleep(0.2)  # predict_fn is busy now
    started = time.monotonic()
    ping = requests.get(server.url("/ping"), timeout=5)
    assert ping.status_code == 200
    assert time.monotonic() - started < 0.3  # not the rest of the second predict_fn takes
    slow.join(timeout=5)
