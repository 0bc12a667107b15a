"""``image/png`` and ``image/jpeg``, decoded with Pillow.

Decoding gives one RGB image as ``uint8`` ``[1, height, width, 3]``; fitting it to the model
(size, layout, scaling) is the handler's work, since only it knows the model. Encoding writes
a model's single image-like output: one image, channels first or last, 1 or 3 channels,
``uint8`` or floats in ``[0, 1]``.
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from handlers.errors import InvalidInput, NotAcceptable
from handlers.tensors import Outputs

#: Largest image accepted, in pixels (Pillow's own guard against decompression bombs is a
#: warning; this makes it a 400).
MAX_PIXELS = 40_000_000


class _ImageCodec:
    media_type: ClassVar[str]
    pillow_format: ClassVar[str]

    def decode(self, body: bytes) -> npt.NDArray[np.uint8]:
        try:
            with Image.open(io.BytesIO(body)) as image:
                if image.format != self.pillow_format:
                    raise InvalidInput(f"body is {image.format}, not {self.media_type}")
                if image.width * image.height > MAX_PIXELS:
                    raise InvalidInput(f"image of {image.width}x{image.height} is too large")
                pixels = np.asarray(image.convert("RGB"))
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise InvalidInput(f"body is not a readable {self.media_type} image: {exc}") from exc
        return pixels[np.newaxis]

    def encode(self, outputs: Outputs) -> bytes:
        if len(outputs) != 1:
            raise NotAcceptable(
                f"{self.media_type} holds one image; the model has {len(outputs)} outputs"
            )
        image = Image.fromarray(_to_pixels(next(iter(outputs.values()))))
        buffer = io.BytesIO()
        image.save(buffer, format=self.pillow_format)
        return buffer.getvalue()


def _to_pixels(array: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """One image as ``uint8`` ``[height, width]`` or ``[height, width, 3]``."""
    image = array[0] if array.ndim == 4 and array.shape[0] == 1 else array
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = np.moveaxis(image, 0, -1)  # channels first -> last
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise NotAcceptable(f"an output of shape {list(array.shape)} is not one image")
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(image)


class PngCodec(_ImageCodec):
    media_type = "image/png"
    pillow_format = "PNG"


class JpegCodec(_ImageCodec):
    media_type = "image/jpeg"
    pillow_format = "JPEG"
