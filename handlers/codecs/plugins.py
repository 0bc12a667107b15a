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

from collections.abc import Collection, Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .registry import CodecRegistry, Decoder, DuplicateMediaType, Encoder

CODEC_GROUP = "sagemaker_onnx_serving.codecs"


class CodecPluginError(ValueError):
    """A codec plugin cannot be loaded or conflicts with another codec."""


def register_codec_plugins(
    registry: CodecRegistry,
    plugins: Iterable[EntryPoint] | None = None,
    names: Collection[str] | None = None,
) -> CodecRegistry:
    """Add the installed codec plugins (or those of ``plugins``) to ``registry``; return it.

    ``names`` keeps only the plugins of those entry-point names (``None``: all of them); a
    name no installed plugin has is refused, listing the installed ones.
    """
    available = list(entry_points(group=CODEC_GROUP) if plugins is None else plugins)
    if names is not None:
        unknown = sorted(set(names) - {entry.name for entry in available})
        if unknown:
            installed = ", ".join(sorted(entry.name for entry in available)) or "none"
            raise CodecPluginError(
                f"no codec plugin named {', '.join(unknown)} (installed: {installed})"
            )
        available = [entry for entry in available if entry.name in names]
    for entry in available:
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
