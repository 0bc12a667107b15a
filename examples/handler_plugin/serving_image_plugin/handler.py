"""A handler for ONNX models with one image input.

Images from the image codecs (``uint8`` ``[1, height, width, 3]``) are resized to the model's
fixed height and width, put in its layout (channels first when its second dimension is 3,
else last) and scaled to floats in ``[0, 1]``. Any other request data (a JSON array, a
``.npy``) goes to the model unchanged, with the usual checks.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import numpy as np
import numpy.typing as npt
from PIL import Image

from handlers import InvocationContext, ModelLoadError
from handlers.onnx_handler import OnnxHandler, TensorSpec
from handlers.tensors import Inputs, Outputs


class ImageHandler(OnnxHandler):
    def load(self) -> None:
        super().load()
        if len(self.inputs) != 1 or len(self.inputs[0].shape) != 4:
            raise ModelLoadError("ImageHandler serves models with one rank-4 image input")

    def predict(self, inputs: Inputs, context: InvocationContext) -> Outputs:
        if _is_decoded_image(inputs):
            inputs = fit_image(inputs, self.inputs[0])
        return super().predict(inputs, context)


def _is_decoded_image(inputs: Inputs) -> TypeGuard[npt.NDArray[np.uint8]]:
    return (
        isinstance(inputs, np.ndarray)
        and inputs.dtype == np.uint8
        and inputs.ndim == 4
        and inputs.shape[-1] == 3
    )


def fit_image(pixels: npt.NDArray[np.uint8], spec: TensorSpec) -> npt.NDArray[Any]:
    """``[1, h, w, 3]`` pixels as ``spec`` wants them: resized, laid out, scaled to [0, 1]."""
    channels_first = spec.shape[1] == 3
    height, width = spec.shape[2:] if channels_first else spec.shape[1:3]
    image = Image.fromarray(pixels[0])
    if isinstance(height, int) and isinstance(width, int) and (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32)[np.newaxis] / 255.0
    return np.moveaxis(array, -1, 1) if channels_first else array
