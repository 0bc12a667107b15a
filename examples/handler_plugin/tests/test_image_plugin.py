"""The plugin, installed into the test environment, discovered through its entry points."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper
from PIL import Image
from serving_image_plugin.codecs import JpegCodec, PngCodec
from serving_image_plugin.handler import fit_image
from werkzeug.test import Client

from handlers.codecs import (
    CODEC_GROUP,
    CodecPluginError,
    DuplicateMediaType,
    default_codecs,
    installed_codecs,
    register_codec_plugins,
)
from handlers.onnx_handler import TensorSpec
from handlers.registry import HANDLER_GROUP, known_handler_names
from serving import Settings
from serving.app import create_app, load_model
from tests.models import save_model
from tests.server import ServerProcess, running_server
from tests.wire import run_onnxruntime

SIZE = 8


def inverter(path: Path) -> Path:
    """image float32 [1, 3, 8, 8] -> inverted = 1 - image."""
    graph = helper.make_graph(
        [helper.make_node("Sub", ["one", "image"], ["inverted"])],
        "inverter",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("inverted", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )
    return save_model(graph, path)


def picture(width: int, height: int, image_format: str) -> bytes:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def test_entry_points_are_discovered() -> None:
    assert "image" in {entry.name for entry in entry_points(group=HANDLER_GROUP)}
    assert "image" in known_handler_names()
    registry = installed_codecs()
    assert isinstance(registry.decoder("image/png"), PngCodec)
    assert isinstance(registry.encoder("image/jpeg"), JpegCodec)
    assert default_codecs().decoder("image/png") is None  # plugins only through discovery


def test_duplicate_registration_is_refused() -> None:
    with pytest.raises(DuplicateMediaType, match="image/png is already registered"):
        installed_codecs().register(PngCodec())
    twice = [
        EntryPoint("png", "serving_image_plugin.codecs:PngCodec", CODEC_GROUP),
        EntryPoint("png-again", "serving_image_plugin.codecs:PngCodec", CODEC_GROUP),
    ]
    with pytest.raises(CodecPluginError, match=r"codec plugin 'png-again' \(serving_image_plugin"):
        register_codec_plugins(default_codecs(), twice)


class OverridingPng(PngCodec):
    override = True


def test_override_must_be_explicit() -> None:
    plugins = [
        EntryPoint("png", "serving_image_plugin.codecs:PngCodec", CODEC_GROUP),
        EntryPoint("better-png", f"{__name__}:OverridingPng", CODEC_GROUP),
    ]
    registry = register_codec_plugins(default_codecs(), plugins)
    assert isinstance(registry.decoder("image/png"), OverridingPng)


class NeedsArguments(PngCodec):
    def __init__(self, quality: int) -> None:
        self.quality = quality


def test_a_codec_that_cannot_be_built_is_named() -> None:
    broken = [EntryPoint("needy", f"{__name__}:NeedsArguments", CODEC_GROUP)]
    with pytest.raises(CodecPluginError, match=r"codec plugin 'needy' .* is not a usable codec"):
        register_codec_plugins(default_codecs(), broken)


def test_a_broken_plugin_stops_startup_with_its_name() -> None:
    broken = [EntryPoint("gif", "serving_image_plugin.nowhere:GifCodec", CODEC_GROUP)]
    with pytest.raises(CodecPluginError, match=r"codec plugin .gif. .* cannot be imported"):
        register_codec_plugins(default_codecs(), broken)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return inverter(tmp_path_factory.mktemp("inverter") / "model.onnx")


@pytest.fixture(scope="module")
def server(model: Path) -> Iterator[ServerProcess]:
    arguments = ["--model-dir", str(model.parent), "--handler", "image"]
    with running_server(arguments, model.parent / "server.log") as server:
        yield server


def expected_inversion(model: Path, body: bytes) -> np.ndarray:
    pixels = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))[np.newaxis]
    spec = TensorSpec("image", np.dtype(np.float32), (1, 3, SIZE, SIZE))
    return run_onnxruntime(model, {"image": fit_image(pixels, spec)})["inverted"]


@pytest.mark.parametrize(
    ("image_format", "media_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg")]
)
def test_images_in_json_out(
    server: ServerProcess, model: Path, image_format: str, media_type: str
) -> None:
    body = picture(20, 12, image_format)  # resized by the handler to 8 x 8
    response = server.post("/invocations", body, {"Content-Type": media_type})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    got = np.array(response.json()["predictions"], np.float32)
    np.testing.assert_array_equal(got, expected_inversion(model, body))


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        ("image/png", "image/png"),
        ("image/png, application/json;q=0.5", "image/png"),
        ("image/png;q=0.5, application/json", "application/json"),
        ("image/*;q=0.9, application/json;q=0.1", "image/"),  # either image type
        ("image/jpeg;q=0.9, image/png;q=0.8", "image/jpeg"),
    ],
)
def test_image_types_negotiate_like_builtin_ones(
    server: ServerProcess, model: Path, accept: str, chosen: str
) -> None:
    body = picture(SIZE, SIZE, "PNG")
    response = server.post("/invocations", body, {"Content-Type": "image/png", "Accept": accept})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith(chosen)
    if response.headers["Content-Type"] == "image/png":  # lossless: exactly the inverted pixels
        inverted = expected_inversion(model, body)[0].transpose(1, 2, 0)
        pixels = np.asarray(Image.open(io.BytesIO(response.content)))
        np.testing.assert_array_equal(pixels, (inverted * 255).round().astype(np.uint8))


def test_json_arrays_still_reach_the_model_unchanged(server: ServerProcess, model: Path) -> None:
    array = np.full((1, 3, SIZE, SIZE), 0.25, np.float32)
    response = server.post(
        "/invocations", json.dumps(array.tolist()).encode(), {"Content-Type": "application/json"}
    )
    assert response.status_code == 200
    np.testing.assert_array_equal(np.array(response.json()["predictions"]), 0.75)


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("image/png", b"not an image", "not a readable image/png image"),
        ("image/png", picture(4, 4, "JPEG"), "body is JPEG, not image/png"),
    ],
)
def test_bad_images_are_400(
    server: ServerProcess, content_type: str, body: bytes, message: str
) -> None:
    response = server.post("/invocations", body, {"Content-Type": content_type})
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_plugins_can_be_chosen_by_name() -> None:
    only_png = register_codec_plugins(default_codecs(), names=["png"])
    assert only_png.decoder("image/png") is not None
    assert only_png.decoder("image/jpeg") is None
    assert register_codec_plugins(default_codecs(), names=[]).decodable == (
        default_codecs().decodable
    )
    with pytest.raises(CodecPluginError, match=r"no codec plugin named gif \(installed: .*png"):
        register_codec_plugins(default_codecs(), names=["gif"])


def test_a_server_without_plugins_refuses_their_types() -> None:
    iris = Path(__file__).parents[2] / "iris" / "model"
    settings = Settings.from_sources(
        {"SERVING_CODEC_PLUGINS": "none"}, {"model_dir": str(iris)}, cpus=1
    )
    app = create_app(settings)
    load_model(app)
    response = Client(app).post(
        "/invocations", data=picture(4, 4, "PNG"), headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 415
