"""Codec contracts and the registry that serving negotiates against."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from ..tensors import Inputs, Outputs


@runtime_checkable
class Decoder(Protocol):
    """Turns a request body of ``media_type`` into model inputs.

    ``decode`` receives the raw body and returns one unnamed array (for a model with one
    input) or arrays by input name; the handler then casts and checks them against the
    model. Raise :class:`handlers.errors.InvalidInput` with a message that says what is
    wrong with the body; never unpickle anything.
    """

    @property
    def media_type(self) -> str: ...

    def decode(self, body: bytes) -> Inputs: ...


@runtime_checkable
class Encoder(Protocol):
    """Turns model outputs (arrays by output name, in model order) into a response body.

    Raise :class:`handlers.errors.NotAcceptable` when the outputs cannot be written in
    ``media_type`` (for instance several outputs as one ``.npy`` array).
    """

    @property
    def media_type(self) -> str: ...

    def encode(self, outputs: Outputs) -> bytes: ...


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
