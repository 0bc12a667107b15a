"""What runs the model: handlers, codecs and the errors they raise. Never imports Flask.

See ``handlers/README.md`` for the rule and :mod:`handlers.base` for the handler contract.
The names below are imported on first use, so that the server's master process can read
``handlers.registry`` without loading numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Handler as Handler
    from .base import HandlerConfig as HandlerConfig
    from .base import InvocationContext as InvocationContext
    from .codecs import CodecRegistry as CodecRegistry
    from .codecs import Decoder as Decoder
    from .codecs import Encoder as Encoder
    from .codecs import default_codecs as default_codecs
    from .errors import InvalidInput as InvalidInput
    from .errors import ModelFailed as ModelFailed
    from .errors import ModelLoadError as ModelLoadError
    from .errors import NotAcceptable as NotAcceptable
    from .errors import ServingError as ServingError
    from .registry import load_handler_class as load_handler_class
    from .tensors import Inputs as Inputs
    from .tensors import Outputs as Outputs

_EXPORTS = {
    "Handler": "base",
    "HandlerConfig": "base",
    "InvocationContext": "base",
    "CodecRegistry": "codecs",
    "Decoder": "codecs",
    "Encoder": "codecs",
    "default_codecs": "codecs",
    "InvalidInput": "errors",
    "ModelFailed": "errors",
    "ModelLoadError": "errors",
    "NotAcceptable": "errors",
    "ServingError": "errors",
    "load_handler_class": "registry",
    "Inputs": "tensors",
    "Outputs": "tensors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'handlers' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
