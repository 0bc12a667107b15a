"""Handler names: built-in, entry point, dotted path; checked in the master, imported later."""

from __future__ import annotations

from pathlib import Path

import pytest

from handlers.inference_py import InferencePyHandler
from handlers.onnx_handler import OnnxHandler
from handlers.registry import UnknownHandler, check_handler_name, load_handler_class
from serving import Settings
from serving.startup import handler_name


@pytest.mark.parametrize(
    ("name", "handler_class"),
    [
        ("onnx", OnnxHandler),
        ("inference_py", InferencePyHandler),
        ("handlers.onnx_handler:OnnxHandler", OnnxHandler),
    ],
)
def test_names_load_their_class(name: str, handler_class: type) -> None:
    check_handler_name(name)
    assert load_handler_class(name) is handler_class


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("tensorflow", "unknown handler 'tensorflow'; known handlers: "),
        ("no_such_package.module:Handler", "module 'no_such_package.module' not found"),
    ],
)
def test_bad_names_fail_the_check_listing_known_ones(name: str, message: str) -> None:
    with pytest.raises(UnknownHandler, match=message) as raised:
        check_handler_name(name)
    assert "inference_py, onnx" in str(raised.value) or "onnx" in str(raised.value)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("handlers.onnx_handler:Missing", "cannot be imported"),
        ("handlers.tensors:describe", "is not a subclass of handlers.Handler"),
    ],
)
def test_names_that_pass_the_check_can_still_fail_to_load(name: str, message: str) -> None:
    check_handler_name(name)  # the module exists: the master lets it through
    with pytest.raises(UnknownHandler, match=message):
        load_handler_class(name)


def test_auto_picks_inference_py_only_when_the_program_exists(tmp_path: Path) -> None:
    settings = Settings.from_sources({}, {"model_dir": str(tmp_path)}, cpus=1)
    assert settings.code_dir == tmp_path / "code"
    assert handler_name(settings) == "onnx"
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "inference.py").write_text("")
    assert handler_name(settings) == "inference_py"
    custom = Settings.from_sources(
        {"SAGEMAKER_PROGRAM": "other.py"}, {"model_dir": str(tmp_path)}, cpus=1
    )
    assert handler_name(custom) == "onnx"
    explicit = Settings.from_sources(
        {"SERVING_HANDLER": "onnx"}, {"model_dir": str(tmp_path)}, cpus=1
    )
    assert handler_name(explicit) == "onnx"


def test_an_s3_submit_directory_means_the_model_code_folder(tmp_path: Path) -> None:
    environ = {"SAGEMAKER_SUBMIT_DIRECTORY": "s3://bucket/prefix/sourcedir.tar.gz"}
    settings = Settings.from_sources(environ, {"model_dir": str(tmp_path)}, cpus=1)
    assert settings.code_dir == tmp_path / "code"
    local = Settings.from_sources({"SAGEMAKER_SUBMIT_DIRECTORY": "/opt/code"}, cpus=1)
    assert local.code_dir == Path("/opt/code")
