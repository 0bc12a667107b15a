"""Codec contracts and the registry that serving negotiates against."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from ..tensors import Inputs, Outputs

#: Decoding or encoding expected to take longer than this (seconds) goes through the
#: handler's executor, to a thread off the event loop, as model runs of that length do
#: (serving's ``inline_limit``): the hop costs 15 to 100 µs, a tenth of it at most, and
#: ``/ping`` never waits longer behind one body. Shorter work is cheaper done in place.
INLINE_SECONDS = 0.001

#: What a codec that does not say how fast it is is taken to manage: about the slowest
#: built-in codec (RecordIO, read and written in Python record by record).
DEFAULT_DECODE_BYTES_PER_SECOND = 10e6
DEFAULT_ENCODE_VALUES_PER_SECOND = 1e6


@runtime_checkable
class Decoder(Protocol):
    """Turns a request body of ``media_type`` into model inputs.

    ``decode`` receives the raw body and returns one unnamed array (for a model with one
    input) or arrays by input name; the handler then casts and checks them against the
    model. Raise :class:`handlers.errors.InvalidInput` with a message that says what is
    wrong with the body; never unpickle anything. It may be called in any thread.

    Optional: ``decode_bytes_per_second``, the body bytes it decodes a second at worst
    (default 10 MB/s). Bodies it would take more than :data:`INLINE_SECONDS` over are
    decoded off the event loop; ``math.inf`` keeps every body on it (``.npy``, read in place).
    """

    @property
    def media_type(self) -> str: ...

    def decode(self, body: bytes) -> Inputs: ...


@runtime_checkable
class Encoder(Protocol):
    """Turns model outputs (arrays by output name, in model order) into a response body.

    Raise :class:`handlers.errors.NotAcceptable` when the outputs cannot be written in
    ``media_type`` (for instance several outputs as one ``.npy`` array). It may be called in
    any thread.

    Optional: ``encode_values_per_second``, the output values (array elements, all outputs
    together) it writes a second at worst (default a million); outputs it would take more
    than :data:`INLINE_SECONDS` over are encoded off the event loop.
    """

    @property
    def media_type(self) -> str: ...

    def encode(self, outputs: Outputs) -> bytes: ...


def decodes_inline(decoder: Decoder, body: bytes) -> bool:
    """Whether ``decoder`` should read ``body`` in place, being quick about it."""
    rate = getattr(decoder, "decode_bytes_per_second", DEFAULT_DECODE_BYTES_PER_SECOND)
    return len(body) <= rate * INLINE_SECONDS


def encodes_inline(encoder: Encoder, outputs: Outputs) -> bool:
    """Whether ``encoder`` should write ``outputs`` in place, being quick about it."""
    rate = getattr(encoder, "encode_values_per_second", DEFAULT_ENCODE_VALUES_PER_SECOND)
    return sum(output.size for output in outputs.values()) <= rate * INLINE_SECONDS


class DuplicateMediaType(ValueError):
    """A second codec was registered for a media type without ``override=True``."""


class CodecRegistry:
    """Decoders and encoders keyed by bare, lower-case media type.

    Registration order is kept: the first encoder registered is the one a client with a
    plain ``*/*`` would get if no default response type were configured.
    """

    def __init__(self, codecs: Iterable[Decoder | Encoder] = ()) -> None:
        self._decoders: dict[str, Decoder] = {}
        self._encoders: dict[str, Encoder] = {}
        for codec in codecs:
            self.register(codec)

    def register(self, codec: Decoder | Encoder, *, override: bool = False) -> None:
        """Register ``codec`` as a decoder, an encoder or both, by what it implements.

        A media type that already has a decoder (or encoder) is refused with
        :class:`DuplicateMediaType` unless ``override`` is true.
        """
        media_type = codec.media_type.lower()
        roles: list[tuple[str, dict[str, Decoder] | dict[str, Encoder]]] = []
        if isinstance(codec, Decoder):
            roles.append(("decoder", self._decoders))
        if isinstance(codec, Encoder):
            roles.append(("encoder", self._encoders))
        if not roles:
            raise TypeError(f"{codec!r} has neither decode() nor encode()")
        for role, table in roles:
            if media_type in table and not override:
                raise DuplicateMediaType(
                    f"a {role} for {media_type} is already registered "
                    f"({table[media_type]!r}); pass override=True to replace it"
                )
        if isinstance(codec, Decoder):
            self._decoders[media_type] = codec
        if isinstance(codec, Encoder):
            self._encoders[media_type] = codec

    def decoder(self, media_type: str) -> Decoder | None:
        return self._decoders.get(media_type.lower())

    def encoder(self, media_type: str) -> Encoder | None:
        return self._encoders.get(media_type.lower())

    @property
    def decodable(self) -> list[str]:
        return list(self._decoders)

    @property
    def encodable(self) -> list[str]:
        return list(self._encoders)
