"""The import rules, checked in fresh interpreters (imports are cached within one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

IRIS = str(Path(__file__).parent.parent / "examples" / "iris" / "model")


def modules_after_import(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(result.stdout.split())


@pytest.mark.parametrize(
    "statement", ["import handlers", "import handlers.onnx_handler", "import handlers.inference_py"]
)
def test_handlers_never_import_flask_or_onnxruntime(statement: str) -> None:
    loaded = modules_after_import(statement)
    assert "flask" not in loaded
    assert "werkzeug" not in loaded
    assert "gunicorn" not in loaded
    assert "onnxruntime" not in loaded  # only OnnxHandler.load imports it, in a worker


@pytest.mark.parametrize("statement", ["import serving.cli", "import serving.server"])
def test_the_server_side_never_imports_onnxruntime(statement: str) -> None:
    loaded = modules_after_import(statement)
    assert "onnxruntime" not in loaded
    assert "google.protobuf" not in loaded  # until a RecordIO request comes


def test_the_master_stays_small() -> None:
    """The master validates settings without Werkzeug, numpy or the model runtime (each worker
    imports those), so its memory stays that of gunicorn alone."""
    statement = (
        "import serving.cli, serving.server; from serving import Settings; "
        "from serving.startup import check_settings; "
        f"check_settings(Settings.from_sources({{}}, {{'model_dir': {IRIS!r}}}, cpus=1))"
    )
    loaded = modules_after_import(statement)
    assert not {"werkzeug", "numpy", "onnxruntime", "orjson"} & loaded


def test_the_master_is_not_monkey_patched() -> None:
    """gevent patches each worker after fork; the master must stay a plain process."""
    code = (
        "from serving import Settings; from serving.app import create_app; import serving.server; "
        f"create_app(Settings.from_sources({{}}, {{'model_dir': {IRIS!r}}}, cpus=1)); "
        "import gevent.monkey; "
        "print(gevent.monkey.is_anything_patched())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"


def test_creating_the_app_imports_no_model_runtime() -> None:
    statement = (
        "from serving import Settings; from serving.app import create_app; "
        f"create_app(Settings.from_sources({{}}, {{'model_dir': {IRIS!r}}}, cpus=1))"
    )
    loaded = modules_after_import(statement)
    assert "onnxruntime" not in loaded
    assert "google.protobuf" not in loaded  # until a RecordIO request comes


def test_the_endpoint_imports_no_worker_and_no_handler() -> None:
    """``serving endpoint`` is a proxy in front of containers: none of handlers/, the model
    runtime, numpy, or the worker's web stack."""
    statement = (
        "import serving.endpoint.main, serving.endpoint.service, serving.endpoint.config; "
        "from serving.endpoint import EndpointSettings; EndpointSettings.from_sources({})"
    )
    loaded = modules_after_import(statement)
    forbidden = {"handlers", "onnxruntime", "numpy", "werkzeug", "gunicorn", "gevent", "orjson"}
    assert not forbidden & {name.split(".")[0] for name in loaded}
    assert not {"serving.app", "serving.worker", "serving.http1", "serving.server"} & loaded
