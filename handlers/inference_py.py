"""An AWS-toolkit-style ``inference.py``, served behind the handler contract.

The user module (``SAGEMAKER_PROGRAM``, default ``inference.py``, with or without ``.py``, in
``SAGEMAKER_SUBMIT_DIRECTORY``, default ``<model dir>/code``) may define any of these; each one
missing falls back to a default:

=============================================  ===============================================
hook                                           when missing
=============================================  ===============================================
``pre_model_fn(model_dir)``                    nothing; runs before ``model_fn``
``model_fn(model_dir)``                        the model directory's ONNX file is loaded; the
                                               model the other hooks get is its
                                               ``onnxruntime.InferenceSession``
``model_warmup_fn(model_dir, model)``          nothing; runs after ``model_fn``
``input_fn(input_data, content_type)``         the codec of the Content-Type decodes the body
                                               (the toolkit's decoder for JSON, CSV and
                                               ``.npy`` once ``model_fn`` or ``predict_fn`` is
                                               the user's)
``predict_fn(data, model)``                    the ONNX model runs with the usual input checks
                                               (or ``model(data)`` for a callable from
                                               ``model_fn``)
``output_fn(prediction, accept)``              the codec of the Accept type encodes the ONNX
                                               outputs; once ``model_fn`` or ``predict_fn`` is
                                               the user's, the toolkit's encoder (bare JSON,
                                               CSV, ``.npy``)
``transform_fn(model, input_data,              replaces the three above; defining it with any
content_type, accept)``                        of them is refused at load
=============================================  ===============================================

The toolkit's conventions (text bodies for JSON and CSV, return values, the ``context``
argument, errors' ``status_code``) are :mod:`handlers.toolkit`'s; the module and its helpers
are imported apart from other code folders (:mod:`handlers.toolkit_imports`).
Hooks run off the worker's event loop, a request's consecutive hooks in one call (one thread,
in order, as the AWS toolkit runs them), within the request's one timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from typing import Any, cast

import numpy as np

from . import toolkit
from .base import Encoded, Handler, InvocationContext
from .errors import ModelFailed, ModelLoadError, ServingError
from .execution import Executor
from .onnx_handler import OnnxHandler
from .providers import CPU, GPU_PROVIDERS, visible_gpus
from .tensors import Inputs, Outputs, as_numeric_array
from .toolkit import HOOK_ARITY, Hook, ToolkitContext, hook_error
from .toolkit_imports import UserCode, import_user_module

__all__ = ["InferencePyHandler", "ToolkitContext", "import_user_module"]

log = logging.getLogger(__name__)

#: What the toolkit's default ``input_fn`` decodes itself (other types go to the codecs).
TOOLKIT_DECODABLE = frozenset({toolkit.JSON, toolkit.CSV, toolkit.NPY})


class InferencePyHandler(Handler):
    """Serves a model through the user's ``inference.py`` hooks (see the module docstring)."""

    model: Any
    _hooks: dict[str, Hook]
    _onnx: OnnxHandler | None
    #: The toolkit's default input and output: the model or the prediction is the user's.
    _toolkit: bool
    _gpu_id: int | None

    def load(self) -> None:
        code = UserCode(self.config.code_dir or self.config.model_dir / "code")
        with code.active():  # the code's own modules, for its imports and model_fn's pickles
            module = code.import_module(self.config.program)
            self._hooks = {
                name: hook for name in HOOK_ARITY if (hook := Hook.find(module, name)) is not None
            }
            staged = sorted({"input_fn", "predict_fn", "output_fn"} & set(self._hooks))
            if "transform_fn" in self._hooks and staged:
                raise ModelLoadError(
                    f"{module.__file__} defines transform_fn and {', '.join(staged)}; "
                    "define transform_fn alone, or the others without it"
                )
            log.info("user module %s: %s", module.__file__, ", ".join(self._hooks) or "no hooks")
            self._load_model()
        self._toolkit = self._defines("model_fn", "predict_fn")

    def _load_model(self) -> None:
        model_dir = str(self.config.model_dir)
        gpus = visible_gpus() if tuple(self.config.providers) != (CPU,) else 0
        self._gpu_id = self.config.worker_index % gpus if gpus else None
        context = ToolkitContext(self.config.model_dir, gpu_id=self._gpu_id)
        try:
            if "pre_model_fn" in self._hooks:
                self._hooks["pre_model_fn"](context, model_dir)
            self._onnx = None
            if "model_fn" in self._hooks:
                self.model = self._hooks["model_fn"](context, model_dir)
            else:
                self._onnx = OnnxHandler(self.config)
                self._onnx.load()
                self.model = self._onnx.session
                if not set(self.model.get_providers()) & set(GPU_PROVIDERS):
                    self._gpu_id = None
            if "model_warmup_fn" in self._hooks:
                self._hooks["model_warmup_fn"](context, model_dir, self.model)
        except ModelLoadError:
            raise
        except ServingError as exc:
            raise ModelLoadError(exc.message) from exc

    def _defines(self, *names: str) -> bool:
        return any(name in self._hooks for name in names)

    def content_types(self) -> Collection[str] | None:
        return None if self._defines("input_fn", "transform_fn") else super().content_types()

    def accept_types(self) -> Sequence[str] | None:
        if self._defines("output_fn", "transform_fn"):
            return None
        if self._toolkit:
            return toolkit.ENCODABLE
        if self._onnx is not None:
            return self._onnx.accept_types()  # its outputs are the ONNX model's
        return super().accept_types()

    def invoke(self, body: bytes, context: InvocationContext) -> Encoded:
        hook_context = ToolkitContext(self.config.model_dir, context, self._gpu_id)
        hooks, content_type, accept = self._hooks, context.content_type, context.accept
        by_toolkit = self._toolkit and content_type in TOOLKIT_DECODABLE

        def transform(data: bytes) -> Encoded:
            text = toolkit.request_body(data, content_type)
            result = hooks["transform_fn"](hook_context, self.model, text, content_type, accept)
            return toolkit.reply("transform_fn", result, accept)

        def decode(data: bytes) -> Any:
            if "input_fn" in hooks:
                text = toolkit.request_body(data, content_type)
                return hooks["input_fn"](hook_context, text, content_type)
            if by_toolkit:
                return toolkit.decode(toolkit.request_body(data, content_type), content_type)
            return self.decode(data, content_type)

        def predict(data: Any) -> Any:
            if "predict_fn" in hooks:
                return hooks["predict_fn"](hook_context, data, self.model)
            if self._onnx is None:
                return self._call_model(data)
            return self.predict(data, context)

        def encode(prediction: Any) -> Encoded:
            if "output_fn" in hooks:
                result = hooks["output_fn"](hook_context, prediction, accept)
                return toolkit.reply("output_fn", result, accept)
            if self._toolkit:
                return Encoded(toolkit.encode(prediction, accept), accept)
            return self.encode(_as_outputs(prediction), accept)

        if "transform_fn" in hooks:
            return cast(Encoded, _run_stages(self.config.executor, [(transform, True)], body))
        stages = [
            (decode, "input_fn" in hooks or by_toolkit),
            (predict, "predict_fn" in hooks or self._onnx is None),
            (encode, "output_fn" in hooks or self._toolkit),
        ]
        return cast(Encoded, _run_stages(self.config.executor, stages, body))

    def _call_model(self, data: Any) -> Any:
        """No ``predict_fn``, and a model from ``model_fn``: call it, if it can be."""
        if not callable(self.model):
            raise ModelFailed("no predict_fn, and the model model_fn returned is not callable")
        try:
            return self.model(data)
        except ServingError:
            raise
        except Exception as exc:  # user code: any exception is the model's failure
            raise hook_error("the model from model_fn", exc) from exc

    def predict(self, inputs: Any, context: InvocationContext) -> Outputs:
        """What runs without a ``predict_fn``: the ONNX model, or a callable ``model_fn`` gave."""
        if self._onnx is not None:
            return self._onnx.predict(_as_inputs(inputs), context)
        return _as_outputs(self.config.executor.call(self._call_model, inputs))


def _run_stages(
    executor: Executor, stages: list[tuple[Callable[[Any], Any], bool]], value: Any
) -> Any:
    """Pass ``value`` through ``stages`` in order. Consecutive user hooks (``True``) run off
    the event loop in one call, as the AWS toolkit runs a request's hooks one after another
    in one thread: a hop each would let other requests' hooks in between, and a request
    whose ``predict_fn`` had ended would wait behind theirs for its ``output_fn``. The
    server's own stages (its codecs, its batched ONNX run) stay where they are."""
    index = 0
    while index < len(stages):
        function, is_hook = stages[index]
        if not is_hook:
            value = function(value)
            index += 1
            continue
        hooks = []
        while index < len(stages) and stages[index][1]:
            hooks.append(stages[index][0])
            index += 1
        value = executor.call(_through, hooks, value)
    return value


def _through(functions: list[Callable[[Any], Any]], value: Any) -> Any:
    for function in functions:
        value = function(value)
    return value


def _as_inputs(data: Any) -> Inputs:
    """What ``input_fn`` returned (arrays, nested lists, or a dict of them) as model inputs."""
    if isinstance(data, np.ndarray):
        return data
    if isinstance(data, dict):
        return {
            str(name): value
            if isinstance(value, np.ndarray)
            else as_numeric_array(value, f"input {name!r}")
            for name, value in data.items()
        }
    return as_numeric_array(data, "input_fn's result")


def _as_outputs(prediction: Any) -> Outputs:
    """A prediction as outputs by name, for the codecs: a dict keeps its names."""
    if isinstance(prediction, dict):
        return {str(name): np.asarray(value) for name, value in prediction.items()}
    return {"predictions": np.asarray(prediction)}
