"""Write the example's model and pictures, so that its README's commands run as written.

- ``model/model.onnx``: an image "negative" built with ``onnx.helper``: input ``image``
  float32 [1, 3, 64, 64] (channels first, values in [0, 1]), output ``negative`` = 1 - image,
  of the same shape, which the PNG codec writes back as a picture.
- ``photo.png`` and ``photo.jpg``: a 96 x 80 picture (a colour gradient and a disc), which the
  image handler resizes to 64 x 64.

Run: ``python examples/handler_plugin/build_example.py``. Needs ``onnx``, numpy and Pillow.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from PIL import Image

HERE = Path(__file__).parent
MODEL_PATH = HERE / "model" / "model.onnx"
PICTURES = {"PNG": HERE / "photo.png", "JPEG": HERE / "photo.jpg"}
SIZE = 64


def build_model() -> onnx.ModelProto:
    shape = [1, 3, SIZE, SIZE]
    graph = helper.make_graph(
        [helper.make_node("Sub", ["one", "image"], ["negative"])],
        "negative",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("negative", TensorProto.FLOAT, shape)],
        [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime 1.18, the oldest the project takes, reads
    onnx.checker.check_model(model)
    return model


def picture(image_format: str) -> bytes:
    """A 96 x 80 gradient with a disc, encoded as ``image_format``."""
    y, x = np.mgrid[0:80, 0:96]
    pixels = np.stack([x * 255 // 95, y * 255 // 79, np.full_like(x, 128)], axis=-1)
    pixels[(x - 48) ** 2 + (y - 40) ** 2 < 20**2] = (250, 220, 40)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format=image_format)
    return buffer.getvalue()


def main() -> None:
    MODEL_PATH.parent.mkdir(exist_ok=True)
    onnx.save(build_model(), MODEL_PATH)
    for image_format, path in PICTURES.items():
        path.write_bytes(picture(image_format))


if __name__ == "__main__":
    main()
