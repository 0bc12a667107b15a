from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import models
from tests.server import ServerProcess, running_server


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def linear_model(model_root: Path) -> Path:
    return models.linear(model_root / "linear" / "model.onnx")


@pytest.fixture(scope="session")
def mixed_model(model_root: Path) -> Path:
    return models.mixed(model_root / "mixed" / "model.onnx")


@pytest.fixture(scope="session")
def failing_model(model_root: Path) -> Path:
    return models.failing(model_root / "failing" / "model.onnx")


@pytest.fixture(scope="session")
def linear_server(linear_model: Path, model_root: Path) -> Iterator[ServerProcess]:
    arguments = ["--model-dir", str(linear_model.parent), "--max-payload-mb", "1"]
    with running_server(arguments, model_root / "linear.log") as server:
        yield server


@pytest.fixture(scope="session")
def mixed_server(mixed_model: Path, model_root: Path) -> Iterator[ServerProcess]:
    with running_server(
        ["--model-dir", str(mixed_model.parent)], model_root / "mixed.log"
    ) as server:
        yield server


@pytest.fixture(scope="session")
def failing_server(failing_model: Path, model_root: Path) -> Iterator[ServerProcess]:
    arguments = ["--model-dir", str(failing_model.parent)]
    with running_server(arguments, model_root / "failing.log") as server:
        yield server


@pytest.fixture(autouse=True)
def _close_boto3_clients() -> Iterator[None]:
    """Close the boto3 clients a test made with ``tests.endpoint.client``: their connection
    pools would stay open into later tests."""
    yield
    endpoint = sys.modules.get("tests.endpoint")
    if endpoint is not None:
        endpoint.close_clients()
