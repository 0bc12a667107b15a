"""The toolkit adapter's parts that the differential test (tests/test_toolkit_differential.py)
does not reach: code folders imported side by side, requirements.txt at startup, what the
server refuses of a handler's status and headers, the GPU-sized worker count and the
toolkit's timeout variable."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from handlers.inference_py import import_user_module
from serving.cpus import visible_gpus
from serving.settings import Settings
from serving.startup import handler_name
from tests.server import ServerProcess, launch, running_server
from tests.test_toolkit_differential import tiny_wheel

JSON = {"Content-Type": "application/json"}


def code_folder(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    for name, source in files.items():
        (root / name).write_text(textwrap.dedent(source))
    return root


@pytest.fixture
def clean_modules() -> Iterator[None]:
    before = set(sys.modules)
    path = list(sys.path)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]
    sys.path[:] = path


@pytest.mark.usefixtures("clean_modules")
def test_two_code_folders_import_side_by_side(tmp_path: Path) -> None:
    """Both have inference.py and utils.py: each gets its own, the server keeps its own
    handlers package, and nothing stays on sys.path."""
    modules = []
    for name in ("first", "second"):
        folder = code_folder(
            tmp_path / name,
            {
                "utils.py": f"WHO = {name!r}\n",
                "handlers.py": f"WHO = 'handlers of {name}'\n",
                "inference.py": """
                    import handlers
                    import utils

                    def who():
                        import utils as later  # a hook's own import, after loading
                        return utils.WHO, handlers.WHO, later.WHO
                """,
            },
        )
        modules.append(import_user_module(folder, "inference"))
    first, second = modules
    assert first.utils.WHO == "first"
    assert second.utils.WHO == "second"
    assert first.handlers.WHO == "handlers of first"
    assert sys.modules["handlers"].__file__ != first.handlers.__file__  # the server's, back
    assert "utils" not in sys.modules  # two folders claim it: nobody's plainly
    assert not any(str(tmp_path) in entry for entry in sys.path)


@pytest.mark.usefixtures("clean_modules")
def test_one_folder_keeps_its_helpers_importable_later(tmp_path: Path) -> None:
    folder = code_folder(
        tmp_path / "only",
        {
            "helpers_for_later.py": "VALUE = 42\n",
            "inference.py": """
                def later():
                    import helpers_for_later
                    return helpers_for_later.VALUE
            """,
        },
    )
    module = import_user_module(folder, "inference.py")
    assert module.later() == 42


def test_program_is_found_with_or_without_py(tmp_path: Path) -> None:
    code = code_folder(tmp_path / "model" / "code", {"serve.py": ""})
    for program in ("serve", "serve.py"):
        settings = Settings.from_sources(
            {}, {"model_dir": str(tmp_path / "model"), "program": program}, cpus=1
        )
        assert handler_name(settings) == "inference_py", program
    assert code.is_dir()


ECHO = """
    import tinypkg

    def model_fn(model_dir):
        return None

    def transform_fn(model, data, content_type, accept):
        return tinypkg.greet(data)
"""


def model_with_requirements(root: Path, linear_model: Path, requirements: str) -> Path:
    model_dir = root / "model"
    code_folder(model_dir / "code", {"inference.py": ECHO, "requirements.txt": requirements})
    tiny_wheel(model_dir / "code" / "wheels" / "tinypkg-1.0-py3-none-any.whl")
    shutil.copy(linear_model, model_dir / "model.onnx")
    return model_dir


def test_requirements_are_installed_once_in_the_master(tmp_path: Path, linear_model: Path) -> None:
    model_dir = model_with_requirements(
        tmp_path, linear_model, "./wheels/tinypkg-1.0-py3-none-any.whl\n"
    )
    arguments = ["--model-dir", str(model_dir), "--workers", "2"]
    environ = {"TMPDIR": str(tmp_path)}
    with running_server(arguments, tmp_path / "server.log", environ) as server:
        response = server.post("/invocations", b"you", {"Content-Type": "text/csv"})
        assert (response.status_code, response.text) == (200, "hello you")
        log = server.log()
        assert log.count("pip: Successfully installed tinypkg-1.0") == 1, log
        assert "installed " in log
        installed = list(tmp_path.glob("serving-requirements-*"))
        assert len(installed) == 1
    assert not installed[0].exists()  # removed when the server stops


@pytest.mark.parametrize(
    ("requirements", "reason"),
    [
        ("./wheels/missing-1.0-py3-none-any.whl\n", "missing-1.0-py3-none-any.whl"),
        ("numpy==1.0.0\n", "numpy"),  # would replace the server's own numpy: refused
    ],
)
def test_requirements_that_cannot_install_stop_the_server(
    tmp_path: Path, linear_model: Path, requirements: str, reason: str
) -> None:
    model_dir = model_with_requirements(tmp_path, linear_model, requirements)
    process, _ = launch(
        ["--model-dir", str(model_dir)], tmp_path / "server.log", {"TMPDIR": str(tmp_path)}
    )
    try:
        assert process.wait(timeout=120) == 3
    finally:
        process.kill()
    log = (tmp_path / "server.log").read_text()
    (line,) = [x for x in log.splitlines() if "cannot install the code's requirements" in x]
    assert "pip could not install" in line, log
    assert reason in line
    assert not list(tmp_path.glob("serving-requirements-*"))


def test_a_setting_turns_the_install_off(tmp_path: Path, linear_model: Path) -> None:
    model_dir = model_with_requirements(
        tmp_path, linear_model, "./wheels/tinypkg-1.0-py3-none-any.whl\n"
    )
    arguments = ["--model-dir", str(model_dir), "--no-install-requirements"]
    process, _ = launch(arguments, tmp_path / "server.log")
    try:
        assert process.wait(timeout=60) == 3
    finally:
        process.kill()
    log = (tmp_path / "server.log").read_text()
    assert "No module named 'tinypkg'" in log
    assert "pip:" not in log


STATUS_AND_HEADERS = """
    import json

    def model_fn(model_dir):
        return None

    def transform_fn(model, data, content_type, accept, context):
        request = json.loads(data)
        if "status" in request:
            context.set_response_status(request["status"], "phrase")
        for name, value in request.get("headers", {}).items():
            context.set_response_header(0, name, value)
        return "{}"
"""


@pytest.mark.parametrize(
    ("request_", "status", "headers", "error"),
    [
        ({"status": 201, "headers": {"X-One": "1"}}, 201, {"X-One": "1"}, None),
        ({"status": 503}, 503, {}, None),
        ({"headers": {"Content-Type": "text/html", "Server": "me"}}, 200, {}, None),
        ({"status": 99}, 500, {}, "set the response status 99"),
        ({"status": 204}, 500, {}, "set the response status 204"),
        ({"headers": {"X-Bad": "a\r\nInjected: 1"}}, 500, {}, "cannot be sent"),
        ({"headers": {"Bad Name": "1"}}, 500, {}, "cannot be sent"),
    ],
)
def test_status_and_headers_a_hook_sets(
    serve_status_code: ServerProcess,
    request_: dict[str, object],
    status: int,
    headers: dict[str, str],
    error: str | None,
) -> None:
    server = serve_status_code
    response = server.post("/invocations", json.dumps(request_).encode(), JSON)
    assert response.status_code == status
    for name, value in headers.items():
        assert response.headers[name] == value
    if error is None:
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers.get("Server") != "me"
        assert response.content == b"{}"
    else:
        assert error in response.json()["error"]
        assert "Injected" not in response.headers


@pytest.fixture(scope="module")
def serve_status_code(
    tmp_path_factory: pytest.TempPathFactory, linear_model: Path
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("status")
    model_dir = root / "model"
    code_folder(model_dir / "code", {"inference.py": STATUS_AND_HEADERS})
    shutil.copy(linear_model, model_dir / "model.onnx")
    with running_server(["--model-dir", str(model_dir)], root / "server.log") as server:
        yield server
    assert server.log().count("which the server writes itself: ignored") == 2


@pytest.mark.parametrize(
    ("environ", "devices", "expected"),
    [
        ({}, [], 0),
        ({}, ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"], 2),
        ({"CUDA_VISIBLE_DEVICES": "0,2,3"}, ["nvidia0"], 3),
        ({"CUDA_VISIBLE_DEVICES": ""}, ["nvidia0"], 0),
        ({"CUDA_VISIBLE_DEVICES": "-1"}, ["nvidia0"], 0),
        ({"CUDA_VISIBLE_DEVICES": "1,-1,2"}, ["nvidia0"], 1),
    ],
)
def test_visible_gpus(
    tmp_path: Path, environ: dict[str, str], devices: list[str], expected: int
) -> None:
    for device in devices:
        (tmp_path / device).touch()
    assert visible_gpus(environ, tmp_path) == expected


@pytest.mark.parametrize(
    ("environ", "gpus", "workers"),
    [
        ({}, 0, 8),  # no GPU: one per CPU
        ({"SERVING_PROVIDERS": "CUDAExecutionProvider"}, 2, 2),  # one per GPU, as MMS
        ({"SERVING_PROVIDERS": "CPUExecutionProvider"}, 2, 8),  # told to use the CPU
        ({"SERVING_PROVIDERS": "CUDAExecutionProvider", "SAGEMAKER_MODEL_SERVER_WORKERS": "3"},
         2, 3),
    ],
)  # fmt: skip
def test_workers_default_to_one_per_gpu(environ: dict[str, str], gpus: int, workers: int) -> None:
    assert Settings.from_sources(environ, cpus=8, gpus=gpus).workers == workers


@pytest.mark.parametrize(
    ("environ", "flags", "timeout"),
    [
        ({"SAGEMAKER_MODEL_SERVER_TIMEOUT": "30"}, {}, 30),
        ({"SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "5"}, {}, 5),
        ({"SAGEMAKER_MODEL_SERVER_TIMEOUT": "30", "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "5"},
         {}, 5),
        ({"SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "5"}, {"timeout": "7"}, 7),
        ({"SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "5", "SAGEMAKER_BATCH": "true"}, {}, 5),
    ],
)  # fmt: skip
def test_the_toolkits_timeout_variable(
    environ: dict[str, str], flags: dict[str, str], timeout: int
) -> None:
    assert Settings.from_sources(environ, flags, cpus=1).timeout == timeout
