"""Handlers by name, imported only when a worker asks for one.

A name is a built-in short name (``onnx``) or a dotted path ``package.module:Class``. The
import happens in the worker, so a handler's heavy dependencies (onnxruntime) stay out of
the server's master process.
"""

from __future__ import annotations

import importlib

from .base import Handler

BUILTIN_HANDLERS = {"onnx": "handlers.onnx_handler:OnnxHandler"}


class UnknownHandler(ValueError):
    pass


def handler_path(name: str) -> str:
    """The ``module:Class`` path for ``name``, or :class:`UnknownHandler` naming the choices."""
    if name in BUILTIN_HANDLERS:
        return BUILTIN_HANDLERS[name]
    module, _, attribute = name.partition(":")
    if module and attribute:
        return name
    known = ", ".join(sorted(BUILTIN_HANDLERS))
    raise UnknownHandler(
        f"unknown handler {name!r}: use one of {known} or a path such as package.module:Class"
    )


def load_handler_class(name: str) -> type[Handler]:
    """Import and return the handler class called ``name``."""
    module_name, _, attribute = handler_path(name).partition(":")
    try:
        handler_class = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise UnknownHandler(f"handler {name!r} cannot be imported: {exc}") from exc
    if not (isinstance(handler_class, type) and issubclass(handler_class, Handler)):
        raise UnknownHandler(f"handler {name!r} is not a subclass of handlers.Handler")
    return handler_class
