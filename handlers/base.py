"""The handler contract: what turns a request body into a response body.

A handler is a class; serving builds one instance per worker process from a
:class:`HandlerConfig` and calls :meth:`Handler.load` once, after the worker has forked and
before it reports ready. Right after ``load`` serving asks :meth:`Handler.content_types` and
:meth:`Handler.accept_types` which media types the handler takes and gives (once: the answers
must not change afterwards). For every ``POST /invocations`` it answers 415 or 406 from them
itself, before reading the body, then calls :meth:`Handler.invoke` with the body and an
:class:`InvocationContext`.

Implement at least :meth:`~Handler.load` and :meth:`~Handler.predict`; the other methods
default to the framework's behaviour: the codec registry decodes the body by Content-Type and
encodes the outputs by Accept. Override :meth:`~Handler.invoke` (and the two media-type
methods) to take over decoding and encoding. Handlers never import Flask.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from .codecs import CodecRegistry, default_codecs
from .codecs.registry import decodes_inline, encodes_inline
from .errors import NotAcceptable, UnsupportedMediaType
from .execution import Executor, InlineExecutor
from .tensors import MAX_EXPANDED_BYTES, MAX_ROWS, Inputs, Outputs, check_decoded

#: The request and response header SageMaker passes custom attributes in.
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


@dataclass(frozen=True)
class HandlerConfig:
    """What a handler is given at construction: the HTTP-free part of the settings."""

    model_dir: Path
    #: File to load inside ``model_dir``; ``None`` means "find the one model file".
    model_file: str | None = None
    #: onnxruntime execution providers, in order of preference; ``("auto",)`` is the best
    #: available (see :mod:`handlers.providers`).
    providers: tuple[str, ...] = ("auto",)
    #: Run on the CPU when a requested GPU provider cannot start, instead of failing.
    allow_cpu_fallback: bool = False
    #: This worker's number, to spread workers across GPUs.
    worker_index: int = 0
    #: Threads one inference may use (onnxruntime intra-op threads); 0 lets the runtime choose.
    threads: int = 1
    #: Folder of user code (``SAGEMAKER_SUBMIT_DIRECTORY``) and the module in it to load.
    code_dir: Path | None = None
    program: str = "inference.py"
    #: The codecs serving negotiates with: built-in ones plus installed plugins.
    codecs: CodecRegistry = field(default_factory=default_codecs)
    #: Runs blocking model calls; the server's runs them off the event loop, in batches.
    executor: Executor = field(default_factory=InlineExecutor)
    #: The most bytes of arrays, and rows (first dimension), one body may decode to
    #: (``SERVING_MAX_DECODED_MB``, ``SERVING_MAX_ROWS``); :meth:`Handler.decode` holds
    #: every decoder to them.
    max_decoded_bytes: int = MAX_EXPANDED_BYTES
    max_rows: int = MAX_ROWS


@dataclass
class InvocationContext:
    """What a handler knows about one request besides its body.

    ``content_type`` is the request's bare media type and ``accept`` the response type serving
    negotiated (the client's preferred concrete type, or the default, when the handler accepts
    any). ``custom_attributes`` holds the request's ``X-Amzn-SageMaker-Custom-Attributes`` (or
    ``None``); whatever it holds when the handler returns is sent back in the response's
    header, so a handler replaces the echoed value by assigning to it.

    ``request_headers`` are all the request's headers (a read-only mapping; serving gives one
    that looks names up case-insensitively). A handler that returns normally may also set
    ``response_status`` (200-599, not 204 or 304; ``None`` is 200) and ``response_headers``
    (name -> value): serving sends them with the body. A name or value a header cannot carry
    makes the response a 500; headers serving writes itself (Content-Type, Content-Length,
    Connection, Date, Server, Transfer-Encoding, and the custom attributes, which have their
    own field) are ignored, with a warning in the log.
    """

    content_type: str
    accept: str
    custom_attributes: str | None = None
    request_headers: Mapping[str, str] | None = None
    response_status: int | None = None
    response_headers: dict[str, str] | None = None


class Encoded(NamedTuple):
    """A response body and its bare media type."""

    body: bytes
    media_type: str


class Handler(abc.ABC):
    """Base class of handlers; see the module docstring for the life cycle."""

    #: Whether serving may answer a multi-record body (CSV or JSON Lines records, a CSV, JSON
    #: Lines or RecordIO response) in chunks of whole lines: one :meth:`invoke` per chunk, the
    #: answers joined. True only when each output row depends on its own input row alone;
    #: then memory follows the chunk, not the body (see :mod:`handlers.records`).
    splits_records: bool = False

    def __init__(self, config: HandlerConfig) -> None:
        self.config = config
        self.codecs = config.codecs

    @abc.abstractmethod
    def load(self) -> None:
        """Load the model from ``self.config.model_dir``. Required.

        Called once per worker, after fork and before the worker reports ready. Raise
        :class:`handlers.errors.ModelLoadError` with a message that says what is missing or
        wrong; the worker then exits non-zero and the server stops.
        """

    @abc.abstractmethod
    def predict(self, inputs: Inputs, context: InvocationContext) -> Outputs:
        """Run the model on decoded ``inputs``; return its outputs by name, in order. Required.

        ``inputs`` is one unnamed array or arrays by input name, as the decoder produced
        them: check and convert them against the model here, raising
        :class:`handlers.errors.InvalidInput` (400) for data that does not fit and
        :class:`handlers.errors.ModelFailed` (500) when the model itself fails. This runs
        for every request, possibly in several threads at once.
        """

    def content_types(self) -> Collection[str] | None:
        """Request media types this handler decodes; ``None`` takes any. Default: the codecs'."""
        return self.codecs.decodable

    def accept_types(self) -> Sequence[str] | None:
        """Response media types it can write; ``None`` writes any. Default: the codecs'."""
        return self.codecs.encodable

    def invoke(self, body: bytes, context: InvocationContext) -> Encoded:
        """Turn a request body into a response body. Default: decode, predict, encode."""
        inputs = self.decode(body, context.content_type)
        return self.encode(self.predict(inputs, context), context.accept)

    def decode(self, body: bytes, media_type: str) -> Inputs:
        """The registry's decoder for ``media_type`` applied to ``body``: in place when that
        is quick, else through the executor, off the event loop (see
        :class:`handlers.codecs.Decoder`). What it decodes to is refused with a 413 past
        ``config.max_rows`` rows or ``config.max_decoded_bytes`` bytes, before the model
        runs."""
        decoder = self.codecs.decoder(media_type)
        if decoder is None:
            raise UnsupportedMediaType(f"no decoder for {media_type}")
        if decodes_inline(decoder, body):
            inputs = decoder.decode(body)
        else:
            inputs = self.config.executor.call(decoder.decode, body)
        check_decoded(inputs, self.config.max_decoded_bytes, self.config.max_rows)
        return inputs

    def encode(self, outputs: Outputs, media_type: str) -> Encoded:
        """The registry's encoder for ``media_type`` applied to ``outputs``: in place when
        that is quick, else through the executor, off the event loop."""
        encoder = self.codecs.encoder(media_type)
        if encoder is None:
            raise NotAcceptable(f"no encoder for {media_type}")
        if encodes_inline(encoder, outputs):
            return Encoded(encoder.encode(outputs), encoder.media_type)
        return Encoded(self.config.executor.call(encoder.encode, outputs), encoder.media_type)
