"""What runs the model: handlers, codecs and the errors they raise. Never imports Flask.

See ``handlers/README.md`` for the rule and :mod:`handlers.base` for the handler contract.
"""

from __future__ import annotations

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
