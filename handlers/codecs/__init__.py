"""Codecs: request bodies to model inputs and model outputs to response bodies.

A codec is a small object with a ``media_type`` and ``decode`` and/or ``encode`` (see
:class:`Decoder` and :class:`Encoder`). :func:`default_codecs` builds the registry of the
built-in ones; serving negotiates Content-Type and Accept against that registry, so a codec
registered there behaves exactly like a built-in one; :func:`installed_codecs` adds the codecs
that installed packages register through entry points.
"""

from __future__ import annotations

from collections.abc import Collection

from ..tensors import MAX_EXPANDED_BYTES, MAX_ROWS
from .csv_codec import CsvCodec
from .json_codecs import JsonCodec, JsonLinesCodec
from .numpy_codecs import NpyCodec, NpzCodec
from .plugins import CODEC_GROUP, CodecPluginError, register_codec_plugins
from .recordio import RecordIOCodec
from .registry import CodecRegistry, Decoder, DuplicateMediaType, Encoder


def default_codecs(
    max_expanded_bytes: int = MAX_EXPANDED_BYTES, max_rows: int = MAX_ROWS
) -> CodecRegistry:
    """A new registry holding the built-in codecs, JSON first.

    ``max_expanded_bytes`` bounds what one body may expand to: a compressed ``.npz``
    unpacked, or RecordIO's sparse tensors made dense; ``max_rows`` the rows it may hold.
    The handler holds every decoder's result to both (:meth:`handlers.Handler.decode`); these
    codecs stop as soon as they see a body pass them, before they have decoded it.
    """
    return CodecRegistry(
        [
            JsonCodec(),
            JsonLinesCodec(),
            CsvCodec(max_rows),
            NpyCodec(),
            NpzCodec(max_expanded_bytes, max_rows),
            RecordIOCodec(max_expanded_bytes, max_rows),
        ]
    )


def installed_codecs(
    max_expanded_bytes: int = MAX_EXPANDED_BYTES,
    names: Collection[str] | None = None,
    max_rows: int = MAX_ROWS,
) -> CodecRegistry:
    """The built-in codecs plus those of installed plugins (all, or those ``names`` names;
    see :mod:`.plugins`)."""
    return register_codec_plugins(default_codecs(max_expanded_bytes, max_rows), names=names)


__all__ = [
    "CODEC_GROUP",
    "CodecPluginError",
    "CodecRegistry",
    "CsvCodec",
    "Decoder",
    "DuplicateMediaType",
    "Encoder",
    "JsonCodec",
    "JsonLinesCodec",
    "NpyCodec",
    "NpzCodec",
    "RecordIOCodec",
    "default_codecs",
    "installed_codecs",
    "register_codec_plugins",
]
