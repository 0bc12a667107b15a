"""The handler contract: what turns decoded request data into model outputs.

A handler is a class; serving builds one instance per worker process from a
:class:`HandlerConfig`, calls :meth:`Handler.load` once after the worker has forked, and then
calls :meth:`Handler.invoke` for every ``POST /invocations`` whose media types it has
already negotiated. Handlers never import Flask: everything about HTTP stays in ``serving``.

Implement at least :meth:`~Handler.load` and :meth:`~Handler.predict`. Override
:meth:`~Handler.invoke` only to take over decoding and encoding yourself.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

from .codecs import Decoder, Encoder
from .tensors import Inputs, Outputs


@dataclass(frozen=True)
class HandlerConfig:
    """What a handler is told at construction: the HTTP-free part of the settings."""

    model_dir: Path
    #: File to load inside ``model_dir``; ``None`` means "find the one model file".
    model_file: str | None = None
    #: onnxruntime execution providers, in order of preference.
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    #: Threads one inference may use (onnxruntime intra-op threads); 0 lets the runtime choose.
    threads: int = 1


@dataclass
class InvocationContext:
    """What a handler knows about one request besides its data.

    ``content_type`` and ``accept`` are the bare media types serving negotiated.
    ``custom_attributes`` holds the request's ``X-Amzn-SageMaker-Custom-Attributes`` (or
    ``None``); whatever it holds when the handler returns is sent back in the response's
    header, so a handler replaces the echoed value by assigning to it.
    """

    content_type: str
    accept: str
    custom_attributes: str | None = None


class Handler(abc.ABC):
    """Base class of handlers; see the module docstring for the life cycle."""

    def __init__(self, config: HandlerConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def load(self) -> None:
        """Load the model from ``self.config.model_dir``.

        Called once per worker, after fork and before the worker reports ready. Raise
        :class:`handlers.errors.ModelLoadError` with a message that says what is missing or
        wrong; the worker then exits non-zero and the server stops.
        """

    @abc.abstractmethod
    def predict(self, inputs: Inputs, context: InvocationContext) -> Outputs:
        """Run the model on decoded ``inputs`` and return its outputs by name, in order.

        ``inputs`` is one unnamed array or arrays by input name, as the decoder produced
        them: check and convert them against the model here, raising
        :class:`handlers.errors.InvalidInput` (400) for data that does not fit and
        :class:`handlers.errors.ModelFailed` (500) when the model itself fails. This runs
        for every request, possibly in several threads at once.
        """

    def invoke(
        self, body: bytes, decoder: Decoder, encoder: Encoder, context: InvocationContext
    ) -> bytes:
        """Decode ``body``, predict, and encode the outputs; the response body is returned."""
        return encoder.encode(self.predict(decoder.decode(body), context))
