"""Execution provider selection, checked on the CPU (the GPU path needs a GPU machine)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from handlers import HandlerConfig
from handlers.errors import ModelLoadError
from handlers.onnx_handler import OnnxHandler
from handlers.providers import (
    check_session_providers,
    choose_providers,
    provider_options,
    visible_gpus,
)

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


@pytest.mark.parametrize(
    ("requested", "available", "chosen"),
    [
        (("auto",), [CPU], [CPU]),
        (("auto",), [CUDA, CPU], [CUDA, CPU]),
        (("auto",), ["TensorrtExecutionProvider", CUDA, CPU], [CUDA, CPU]),
        ((CPU,), [CUDA, CPU], [CPU]),
        ((CUDA, CPU), [CUDA, CPU], [CUDA, CPU]),
    ],
)
def test_choose(requested: tuple[str, ...], available: list[str], chosen: list[str]) -> None:
    assert choose_providers(requested, available) == chosen


def test_an_unavailable_provider_is_refused_naming_what_is_there() -> None:
    with pytest.raises(ModelLoadError, match=f"{CUDA} are not available .*available: {CPU}"):
        choose_providers((CUDA,), [CPU])


def test_gpu_providers_get_their_device() -> None:
    assert provider_options([CUDA, CPU], 3) == [(CUDA, {"device_id": "3"}), CPU]


def test_a_gpu_onnxruntime_dropped_is_refused_unless_allowed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(ModelLoadError, match="could not start CUDAExecutionProvider"):
        check_session_providers([CUDA, CPU], [CPU], allow_cpu_fallback=False)
    with caplog.at_level(logging.WARNING):
        check_session_providers([CUDA, CPU], [CPU], allow_cpu_fallback=True)
    assert "SERVING_ALLOW_CPU_FALLBACK allows" in caplog.text
    check_session_providers([CUDA, CPU], [CUDA, CPU], allow_cpu_fallback=False)
    check_session_providers([CPU], [CPU], allow_cpu_fallback=False)


def test_visible_gpus(tmp_path: Path) -> None:
    for name in ("0000:01:00.0", "0000:02:00.0", "0000:03:00.0"):
        (tmp_path / name).mkdir()
    assert visible_gpus({}, tmp_path) == 3
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,2"}, tmp_path) == 2
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, tmp_path) == 0
    assert visible_gpus({}, tmp_path / "no-driver") == 0


def test_auto_on_this_cpu_onnxruntime_runs_on_the_cpu(linear_model: Path) -> None:
    handler = OnnxHandler(HandlerConfig(model_dir=linear_model.parent, providers=("auto",)))
    handler.load()
    assert handler.session.get_providers() == [CPU]


def test_asking_for_cuda_here_stops_the_load(linear_model: Path) -> None:
    config = HandlerConfig(model_dir=linear_model.parent, providers=(CUDA, CPU))
    with pytest.raises(ModelLoadError, match="CUDAExecutionProvider are not available"):
        OnnxHandler(config).load()
