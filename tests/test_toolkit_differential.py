"""``inference.py`` scripts in the AWS toolkit's idioms, each run under the real toolkit
(sagemaker-inference 1.10.1 with multi-model-server 1.1.11's Python worker, in an environment of
its own built with uv, driven by ``tests/toolkit_driver.py``) and under this server, comparing
status, Content-Type and body request by request.

Every difference is intended and listed in :data:`DIFFERENCES` (and in docs/handlers.md); a
request that names one must differ as described, every other must match exactly.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from uv import find_uv_bin

from tests.server import ServerProcess, launch
from tests.wire import run_onnxruntime

HERE = Path(__file__).parent
DRIVER = HERE / "toolkit_driver.py"
TOOLKIT = ["sagemaker-inference==1.10.1", "multi-model-server==1.1.11", "onnxruntime"]
X = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.5]], np.float32)
CSV_X = "".join(",".join(map(str, row)) + "\n" for row in X.tolist())
CUSTOM = "X-Amzn-SageMaker-Custom-Attributes"

#: What this server does differently from the toolkit, on purpose.
DIFFERENCES = {
    "traceback": "errors: the toolkit sends the traceback as the body (no Content-Type); here "
    'the same status with {"error": "<hook> raised <Exception>: <message>"}',
    "status_code": "an exception with a status_code that is not the toolkit's own class: the "
    "toolkit answers 500, here that status",
    "kwargs": "a hook taking **kwargs: the toolkit passes the context positionally and the call "
    "fails (500); here the hook is called without it",
    "numpy_output": "output_fn returning numpy values: MMS cannot write them (503); here they "
    "are written as JSON lists and numbers",
    "unknown_accept": "an Accept the default output_fn cannot write: the toolkit fails in "
    "output_fn (500); here a 406 before any hook runs",
    "media_type_parameters": "a Content-Type with parameters (charset): the toolkit passes "
    "it whole, so its UTF-8 check and decoders miss it (500); here hooks get the bare media "
    "type",
    "invalid_utf8": "a JSON or CSV body that is not UTF-8: a 500 from the toolkit's decode, a "
    "400 here",
    "pickled_npy": "a .npy body holding Python objects: the toolkit unpickles it; here it is "
    "refused with a 400",
    "header_case": "context.get_request_header: MMS looks names up as the client spelled "
    "them; here case-insensitively",
    "accept_list": "an Accept listing several types: the toolkit passes the whole header to "
    "output_fn and its default takes the first type it knows, ignoring q-values; here the "
    "negotiated type (q-values, then the server's order: JSON, CSV, .npy)",
}

ONNX_MODEL_FN = """
    import json
    import os

    import numpy as np
    import onnxruntime

    def model_fn(model_dir):
        path = os.path.join(model_dir, "model.onnx")
        return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
"""

SCRIPTS: dict[str, dict[str, str]] = {
    # The first report: a CSV body split as text.
    "split_csv": {
        "inference.py": ONNX_MODEL_FN
        + """
    def input_fn(request_body, request_content_type):
        if request_content_type == "text/csv":
            rows = [line.split(",") for line in request_body.strip().split("\\n")]
            return np.array(rows, dtype=np.float32)
        if request_content_type == "application/json":
            return np.array(json.loads(request_body)["instances"], dtype=np.float32)
        raise ValueError("unsupported content type " + request_content_type)

    def predict_fn(input_data, model):
        (y,) = model.run(None, {"x": input_data})
        return y
"""
    },
    # model_fn and predict_fn alone: the toolkit's decoder and encoder do the rest.
    "defaults": {
        "inference.py": ONNX_MODEL_FN
        + """
    def predict_fn(data, model):
        (y,) = model.run(None, {"x": np.asarray(data, dtype=np.float32)})
        return y
"""
    },
    # output_fn returning plain objects, chosen by the custom attributes.
    "outputs": {
        "inference.py": """
    import numpy as np

    def model_fn(model_dir):
        return "no model"

    def predict_fn(data, model):
        return data

    def output_fn(prediction, accept, context):
        kind = context.get_request_header(0, "X-Amzn-SageMaker-Custom-Attributes")
        return {
            "dict": {"a": 1, "b": [1, 2]},
            "list": [1, 2.5, "x"],
            "number": 3.5,
            "none": None,
            "str": "plain text",
            "bytes": b"raw bytes",
            "tuple": ("a,b\\n", "text/csv"),
            "numpy": {"y": np.arange(3), "mean": np.float32(0.5)},
        }[kind]
"""
    },
    # Every loading hook, with and without context, and the context's API.
    "hooks": {
        "inference.py": """
    import json
    import os

    CALLS = []

    def pre_model_fn(model_dir):
        CALLS.append("pre_model_fn")

    def model_fn(model_dir, context):
        same = context.system_properties["model_dir"] == model_dir
        CALLS.append(f"model_fn {os.path.basename(model_dir)} {same}")
        return {"scale": 2}

    def model_warmup_fn(model_dir, model, context=None):
        CALLS.append(f"model_warmup_fn {model['scale']} {context is not None}")

    def transform_fn(model, input_data, content_type, accept, context):
        properties = context.system_properties
        seen = {
            "calls": CALLS,
            "body": type(input_data).__name__,
            "content_type": content_type,
            "accept": accept,
            "gpu_id": properties["gpu_id"],
            "batch_size": properties["batch_size"],
            "custom": context.get_request_header(0, "X-Amzn-SageMaker-Custom-Attributes"),
            "Content-Type": context.get_request_header(0, "Content-Type"),
            "all": sorted(k for k in context.get_all_request_header(0) if k.startswith("X-My")),
            "request_id": isinstance(context.get_request_id(0), str),
        }
        return json.dumps(seen), "application/json"
"""
    },
    # The response's status and headers, set through the context.
    "status_headers": {
        "inference.py": """
    import json

    def model_fn(model_dir):
        return None

    def transform_fn(model, input_data, content_type, accept, context):
        request = json.loads(input_data)
        context.set_response_header(0, "X-Model-Version", "7")
        context.set_response_header(0, "X-Amzn-SageMaker-Custom-Attributes", "seen=1")
        if request.get("html"):
            context.set_response_header(0, "Content-Type", "text/html")
        if request.get("lower"):
            return json.dumps({"lower": context.get_request_header(0, "content-type")})
        if not request.get("ok", True):
            context.set_response_status(422, "Unprocessable")
            return json.dumps({"error": "not ok"})
        return json.dumps({"ok": True})
"""
    },
    # The toolkit's own modules and errors, installed from requirements.txt.
    "toolkit_imports": {
        "requirements.txt": "sagemaker-inference==1.10.1\n",
        "inference.py": """
    from sagemaker_inference import content_types, decoder, default_inference_handler
    from sagemaker_inference import encoder, errors

    class Teapot(Exception):
        status_code = 418

    def model_fn(model_dir):
        return default_inference_handler.DefaultInferenceHandler()

    def input_fn(input_data, content_type):
        if input_data == "generic":
            raise errors.GenericInferenceToolkitError(400, "bad request from the toolkit")
        if input_data == "teapot":
            raise Teapot("short and stout")
        if input_data == "plain":
            raise ValueError("plain failure")
        return decoder.decode(input_data, content_type)

    def predict_fn(data, model):
        return data * 2

    def output_fn(prediction, accept):
        return encoder.encode(prediction, content_types.CSV), content_types.CSV
""",
    },
    # SAGEMAKER_PROGRAM without .py; helpers, one named like the server's own package.
    "program_form": {
        "serve.py": """
    import handlers
    from utils import double

    def model_fn(model_dir):
        return handlers.NAME

    def transform_fn(model, input_data, content_type, accept):
        return double(input_data) + " " + model
""",
        "utils.py": """
    def double(text):
        return text + text
""",
        "handlers.py": """
    NAME = "the code's own handlers"
""",
    },
    "kwargs": {
        "inference.py": """
    def model_fn(model_dir):
        return 2

    def predict_fn(data, model, **kwargs):
        return data * model
"""
    },
    # requirements.txt naming a wheel shipped with the code.
    "requirements": {
        "requirements.txt": "./wheels/tinypkg-1.0-py3-none-any.whl\n",
        "inference.py": """
    import tinypkg

    def model_fn(model_dir):
        return None

    def transform_fn(model, input_data, content_type, accept):
        return tinypkg.greet(input_data), "text/plain"
""",
    },
}

ENVIRON = {"program_form": {"SAGEMAKER_PROGRAM": "serve"}}


@dataclass
class Case:
    script: str
    body: bytes
    headers: dict[str, str]
    #: The key in DIFFERENCES, or None: the answers must match exactly.
    difference: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def npy(array: Any) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def headers(content_type: str, accept: str | None = None, **more: str) -> dict[str, str]:
    result = {"Content-Type": content_type}
    if accept is not None:
        result["Accept"] = accept
    result.update({name.replace("_", "-"): value for name, value in more.items()})
    return result


JSON_X = json.dumps(X.tolist()).encode()
CASES = [
    Case("split_csv", CSV_X.encode(), headers("text/csv", "application/json")),
    Case("split_csv", CSV_X.encode(), headers("text/csv", "text/csv")),
    Case("split_csv", CSV_X.encode(), headers("text/csv", "application/x-npy")),
    Case("split_csv", json.dumps({"instances": X.tolist()}).encode(), headers("application/json")),
    Case("split_csv", CSV_X.encode(), headers("text/csv", "*/*")),
    Case("split_csv", b"1;2", headers("text/plain"), "traceback"),
    Case(
        "split_csv",
        CSV_X.encode(),
        headers("text/csv", "text/csv, application/json"),
        "accept_list",
    ),
    Case("split_csv", CSV_X.encode(), headers("text/csv", "image/png"), "unknown_accept"),
    Case("defaults", JSON_X, headers("application/json", "application/json")),
    Case("defaults", CSV_X.encode(), headers("text/csv", "text/csv")),
    Case("defaults", npy(X), headers("application/x-npy", "application/x-npy")),
    Case("defaults", npy(X.astype(object)), headers("application/x-npy"), "pickled_npy"),
    Case("defaults", JSON_X, headers("application/json; charset=utf-8"), "media_type_parameters"),
    Case("defaults", b"1,2,3,\xff\n", headers("text/csv"), "invalid_utf8"),
    Case("defaults", JSON_X, headers("application/json", "text/csv;q=0.5, application/json")),
    Case(
        "defaults", JSON_X, headers("application/json", "text/csv, application/json"), "accept_list"
    ),
    *[
        Case("outputs", b"[1]", headers("application/json", **{CUSTOM: kind}))
        for kind in ("dict", "list", "number", "none", "str", "bytes", "tuple")
    ],
    Case("outputs", b"[1]", headers("application/json", **{CUSTOM: "numpy"}), "numpy_output"),
    Case("hooks", b"[1]", headers("application/json", "text/csv", **{CUSTOM: "a=1"})),
    Case("hooks", b"1,2\n", headers("text/csv", X_My_Header="x")),
    Case("hooks", b"\x00\x01", headers("application/octet-stream", "application/json")),
    Case("status_headers", b"{}", headers("application/json"), extra={"X-Model-Version": "7"}),
    Case("status_headers", b'{"ok": false}', headers("application/json")),
    Case("status_headers", b'{"html": true}', headers("application/json")),
    Case("status_headers", b'{"lower": true}', headers("application/json"), "header_case"),
    Case("toolkit_imports", b"1,2\n3,4\n", headers("text/csv")),
    Case("toolkit_imports", b"generic", headers("text/csv"), "traceback"),
    Case("toolkit_imports", b"plain", headers("text/csv"), "traceback"),
    Case("toolkit_imports", b"teapot", headers("text/csv"), "status_code"),
    Case("program_form", b"ab", headers("application/json")),
    Case("kwargs", b"[1, 2]", headers("application/json"), "kwargs"),
    Case("requirements", b"world", headers("text/csv")),
]


def tiny_wheel(path: Path) -> Path:
    """A pure-Python wheel of ``tinypkg`` 1.0, built by hand (no network, no build step)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    files = {
        "tinypkg/__init__.py": "def greet(name):\n    return 'hello ' + name\n",
        "tinypkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
        "tinypkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + "tinypkg-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in {**files, "tinypkg-1.0.dist-info/RECORD": record}.items():
            wheel.writestr(name, text)
    return path


def model_dirs(root: Path, linear_model: Path) -> dict[str, Path]:
    dirs = {}
    for name, files in SCRIPTS.items():
        model_dir = root / name / "model"
        (model_dir / "code").mkdir(parents=True)
        shutil.copy(linear_model, model_dir / "model.onnx")
        for filename, source in files.items():
            (model_dir / "code" / filename).write_text(textwrap.dedent(source))
        if name == "requirements":
            tiny_wheel(model_dir / "code" / "wheels" / "tinypkg-1.0-py3-none-any.whl")
        dirs[name] = model_dir
    return dirs


def build_toolkit(root: Path) -> Path:
    uv = find_uv_bin()
    venv = root / "toolkit"
    python = venv / "bin" / "python"
    environ = {**os.environ, "UV_NATIVE_TLS": "1"}
    subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(venv)], check=True, env=environ)
    install = [uv, "pip", "install", "-q", "-p", str(python), *TOOLKIT]
    subprocess.run(install, check=True, env=environ, timeout=600)
    return python


def toolkit_answers(python: Path, dirs: dict[str, Path]) -> dict[str, list[dict[str, Any]]]:
    models = [
        {
            "model_dir": str(dirs[name]),
            "environ": ENVIRON.get(name, {}),
            "requests": [
                {"headers": case.headers, "body": base64.b64encode(case.body).decode()}
                for case in CASES
                if case.script == name
            ],
        }
        for name in SCRIPTS
    ]
    result = subprocess.run(
        [str(python), str(DRIVER), find_uv_bin()],
        input=json.dumps(models),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("SAGEMAKER_")},
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return dict(zip(SCRIPTS, json.loads(result.stdout), strict=True))


def healthy(server: ServerProcess, timeout: float = 120) -> None:
    """Like ``tests.server.wait_until_healthy``, with time for pip and for nine servers
    starting at once on two CPUs."""
    deadline = time.monotonic() + timeout
    while server.process.poll() is None and time.monotonic() < deadline:
        try:
            if requests.get(server.url("/ping"), timeout=1).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or too busy starting
            pass
        time.sleep(0.1)
    raise AssertionError(f"server not healthy:\n{server.log()}")


@dataclass
class Answer:
    status: int
    content_type: str | None
    headers: dict[str, str]
    body: bytes


@pytest.fixture(scope="module")
def answers(
    tmp_path_factory: pytest.TempPathFactory, linear_model: Path
) -> dict[str, list[tuple[Answer, Answer]]]:
    root = tmp_path_factory.mktemp("toolkit")
    dirs = model_dirs(root / "models", linear_model)
    theirs = toolkit_answers(build_toolkit(root), dirs)
    ours: dict[str, list[Answer]] = {}
    with ExitStack() as stack:
        servers: dict[str, ServerProcess] = {}
        for name, model_dir in dirs.items():  # started together, then waited for
            log = root / f"{name}.log"
            environ = {**ENVIRON.get(name, {}), "TMPDIR": str(root)}
            process, port = launch(["--model-dir", str(model_dir)], log, environ)
            servers[name] = server = ServerProcess(process, port, log)
            stack.callback(server.stop)
        for name, server in servers.items():
            healthy(server)
            ours[name] = []
            for case in (c for c in CASES if c.script == name):
                response = server.post("/invocations", case.body, case.headers)
                ours[name].append(
                    Answer(
                        response.status_code,
                        response.headers.get("Content-Type"),
                        dict(response.headers),
                        response.content,
                    )
                )
    return {
        name: [
            (
                Answer(
                    answer["status"],
                    next(
                        (v for k, v in answer["headers"].items() if k.lower() == "content-type"),
                        None,
                    ),
                    answer["headers"],
                    base64.b64decode(answer["body"]),
                ),
                mine,
            )
            for answer, mine in zip(theirs[name], ours[name], strict=True)
        ]
        for name in SCRIPTS
    }


def case_id(case: Case) -> str:
    return f"{case.script}-{case.headers.get('Content-Type')}-{case.body[:20]!r}"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_toolkit_and_this_server_answer_alike(
    answers: dict[str, list[tuple[Answer, Answer]]], case: Case
) -> None:
    index = [c for c in CASES if c.script == case.script].index(case)
    theirs, ours = answers[case.script][index]
    expected_difference = DIFFERENCES.get(case.difference or "", "")
    check = DIFFERS.get(case.difference) if case.difference else None
    if check is None:
        assert (ours.status, ours.content_type, ours.body) == (
            theirs.status,
            theirs.content_type,
            theirs.body,
        ), f"toolkit: {theirs}"
        for name, value in case.extra.items():
            assert ours.headers.get(name) == theirs.headers.get(name) == value
    else:
        check(theirs, ours)
        assert expected_difference


def short_error(ours: Answer) -> str:
    assert ours.content_type == "application/json"
    assert b"Traceback" not in ours.body
    message: str = json.loads(ours.body)["error"]
    return message


def _traceback(theirs: Answer, ours: Answer) -> None:
    assert theirs.status == ours.status >= 400
    assert b"Traceback (most recent call last)" in theirs.body
    assert " raised " in short_error(ours)


def _status_code(theirs: Answer, ours: Answer) -> None:
    assert (theirs.status, ours.status) == (500, 418)
    assert short_error(ours) == "input_fn raised Teapot: short and stout"


def _kwargs(theirs: Answer, ours: Answer) -> None:
    assert theirs.status == 500
    assert b"TypeError" in theirs.body
    assert (ours.status, ours.body) == (200, b"[2, 4]")


def _numpy_output(theirs: Answer, ours: Answer) -> None:
    assert theirs.status == 503
    assert ours.status == 200
    assert json.loads(ours.body) == {"y": [0, 1, 2], "mean": 0.5}


def _refused_before_hooks(status: int) -> Any:
    def check(theirs: Answer, ours: Answer) -> None:
        assert theirs.status == 500
        assert ours.status == status
        short_error(ours)

    return check


def _media_type_parameters(theirs: Answer, ours: Answer) -> None:
    assert theirs.status == 500
    assert b"is not supported by this framework" in theirs.body
    assert ours.status == 200
    assert len(json.loads(ours.body)) == len(X)


def _pickled_npy(theirs: Answer, ours: Answer) -> None:
    assert theirs.status == 200  # unpickled
    assert ours.status == 400
    assert "Object arrays cannot be loaded" in short_error(ours)


def _header_case(theirs: Answer, ours: Answer) -> None:
    assert json.loads(theirs.body) == {"lower": None}
    assert json.loads(ours.body) == {"lower": "application/json"}


def _accept_list(theirs: Answer, ours: Answer) -> None:
    assert (theirs.status, theirs.content_type) == (200, "text/csv")
    assert (ours.status, ours.content_type) == (200, "application/json")


DIFFERS = {
    "traceback": _traceback,
    "status_code": _status_code,
    "kwargs": _kwargs,
    "numpy_output": _numpy_output,
    "unknown_accept": _refused_before_hooks(406),
    "media_type_parameters": _media_type_parameters,
    "invalid_utf8": _refused_before_hooks(400),
    "pickled_npy": _pickled_npy,
    "header_case": _header_case,
    "accept_list": _accept_list,
}


def test_every_difference_is_checked_and_documented() -> None:
    assert set(DIFFERS) == set(DIFFERENCES)
    assert {c.difference for c in CASES if c.difference} == set(DIFFERENCES)
    documented = (HERE.parent / "docs" / "handlers.md").read_text()
    for key in DIFFERENCES:
        assert f"<!-- {key} -->" in documented, key


def test_numbers_are_onnxruntime_s(
    answers: dict[str, list[tuple[Answer, Answer]]], linear_model: Path
) -> None:
    expected = run_onnxruntime(linear_model, {"x": X})["y"]
    _, ours = answers["defaults"][0]
    np.testing.assert_array_equal(np.array(json.loads(ours.body), np.float32), expected)
    _, ours = answers["split_csv"][2]
    np.testing.assert_array_equal(np.load(io.BytesIO(ours.body)), expected)
