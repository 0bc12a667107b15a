"""Handlers by name, imported only when a worker asks for one.

A name is one of:

* a built-in short name: ``onnx`` (the ONNX handler) or ``inference_py`` (an AWS-toolkit style
  ``inference.py`` in the model's code directory);
* a name registered by an installed package under the entry-point group
  ``sagemaker_onnx_serving.handlers``;
* a path ``package.module:Class``.

:func:`check_handler_name` validates a name without importing the handler (the server's
master runs it); :func:`load_handler_class` imports it, in the worker, so a handler's heavy
dependencies stay out of the master.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing it would load numpy: the master only checks names
    from .base import Handler

HANDLER_GROUP = "sagemaker_onnx_serving.handlers"

BUILTIN_HANDLERS = {
    "onnx": "handlers.onnx_handler:OnnxHandler",
    "inference_py": "handlers.inference_py:InferencePyHandler",
}


class UnknownHandler(ValueError):
    pass


def _plugins() -> dict[str, EntryPoint]:
    return {entry.name: entry for entry in entry_points(group=HANDLER_GROUP)}


def known_handler_names() -> list[str]:
    return sorted({*BUILTIN_HANDLERS, *_plugins()})


def _unknown(message: str) -> UnknownHandler:
    known = ", ".join(known_handler_names())
    return UnknownHandler(f"{message}; known handlers: {known}, or a path package.module:Class")


def check_handler_name(name: str) -> None:
    """Raise :class:`UnknownHandler` (listing the known names) unless ``name`` can be loaded."""
    if name in BUILTIN_HANDLERS or name in _plugins():
        return
    module, _, attribute = name.partition(":")
    if not (module and attribute):
        raise _unknown(f"unknown handler {name!r}")
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise _unknown(f"handler {name!r}: module {module!r} not found")


def load_handler_class(name: str) -> type[Handler]:
    """Import and return the handler class called ``name``."""
    from .base import Handler

    try:
        if name in BUILTIN_HANDLERS or ":" in name:
            module_name, _, attribute = BUILTIN_HANDLERS.get(name, name).partition(":")
            handler_class = getattr(importlib.import_module(module_name), attribute)
        elif name in (plugins := _plugins()):
            handler_class = plugins[name].load()
        else:
            raise _unknown(f"unknown handler {name!r}")
    except (ImportError, AttributeError) as exc:
        raise UnknownHandler(f"handler {name!r} cannot be imported: {exc}") from exc
    if not (isinstance(handler_class, type) and issubclass(handler_class, Handler)):
        raise UnknownHandler(f"handler {name!r} is not a subclass of handlers.Handler")
    return handler_class
