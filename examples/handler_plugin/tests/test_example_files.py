"""The example's own model and pictures: what build_example.py writes, served as its README
shows (the PNG's negative comes back, resized; the JPEG's answer is JSON)."""

from __future__ import annotations

import importlib.util
import io
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import pytest
from PIL import Image
from serving_image_plugin.codecs import PngCodec
from serving_image_plugin.handler import fit_image

from handlers.onnx_handler import TensorSpec
from tests.server import ServerProcess, running_server
from tests.wire import run_onnxruntime

HERE = Path(__file__).parent.parent


def builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_example", HERE / "build_example.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_files_are_the_built_ones() -> None:
    build = builder()
    assert (
        onnx.load(build.MODEL_PATH).SerializeToString() == build.build_model().SerializeToString()
    )
    committed, built = build.PICTURES["PNG"].read_bytes(), build.picture("PNG")
    assert np.array_equal(pixels(committed), pixels(built))
    assert pixels(build.PICTURES["JPEG"].read_bytes()).shape == (80, 96, 3)


def pixels(picture: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(picture)) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("image") / "server.log"
    arguments = ["--model-dir", str(HERE / "model"), "--handler", "image"]
    with running_server(arguments, log) as server:
        yield server


def expected_negative(picture: Path) -> np.ndarray:
    spec = TensorSpec("image", np.dtype("float32"), (1, 3, 64, 64))
    image = fit_image(pixels(picture.read_bytes())[np.newaxis], spec)
    outputs = run_onnxruntime(HERE / "model" / "model.onnx", {"image": image})
    return outputs["negative"]


def test_the_readme_png_call(server: ServerProcess) -> None:
    photo = HERE / "photo.png"
    headers = {"Content-Type": "image/png", "Accept": "image/png"}
    response = server.post("/invocations", photo.read_bytes(), headers)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "image/png"
    assert response.content == PngCodec().encode({"negative": expected_negative(photo)})
    assert pixels(response.content).shape == (64, 64, 3)


def test_the_readme_jpeg_call(server: ServerProcess) -> None:
    photo = HERE / "photo.jpg"
    response = server.post("/invocations", photo.read_bytes(), {"Content-Type": "image/jpeg"})
    assert response.status_code == 200, response.text
    predictions = np.array(json.loads(response.content)["predictions"], np.float32)
    np.testing.assert_allclose(predictions, expected_negative(photo), atol=1e-6)
