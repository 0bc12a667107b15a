"""Codecs from installed packages, through the entry-point group
``sagemaker_onnx_serving.codecs``.

Each entry point names a codec class (instantiated without arguments) or a codec instance.
It takes part in Content-Type dispatch and Accept negotiation exactly like a built-in codec.
A plugin whose media type is already registered is refused unless the codec says
``override = True``.

In a package's ``pyproject.toml``::

    [project.entry-points."sagemaker_onnx_serving.codecs"]
    png = "my_package.codecs:PngCodec"
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .registry import CodecRegistry, Decoder, DuplicateMediaType, Encoder

CODEC_GROUP = "sagemaker_onnx_serving.codecs"


class CodecPluginError(ValueError):
    """A codec plugin cannot be loaded or conflicts with another codec."""


def register_codec_plugins(
    registry: CodecRegistry, plugins: Iterable[EntryPoint] | None = None
) -> CodecRegistry:
    """Add every installed codec plugin (or those of ``plugins``) to ``registry``; return it."""
    for entry in entry_points(group=CODEC_GROUP) if plugins is None else plugins:
        where = f"codec plugin {entry.name!r} ({entry.value})"
        try:
            loaded: Any = entry.load()
        except (ImportError, AttributeError) as exc:
            raise CodecPluginError(f"{where} cannot be imported: {exc}") from exc
        try:
            codec: Decoder | Encoder = loaded() if isinstance(loaded, type) else loaded
            registry.register(codec, override=bool(getattr(codec, "override", False)))
        except DuplicateMediaType as exc:
            raise CodecPluginError(f"{where}: {exc}") from exc
        except Exception as exc:  # plugin code: whatever it raises, name the plugin
            raise CodecPluginError(f"{where} is not a usable codec: {exc!r}") from exc
    return registry
